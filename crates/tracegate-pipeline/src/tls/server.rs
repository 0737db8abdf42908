//! Server-side TLS for receivers: validating `tls:` without touching disk,
//! and loading the PEM files into a rustls `ServerConfig` (ring provider,
//! TLS 1.2/1.3, optional client-certificate verification).

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::time::Instant;

use super::TlsServerConfig;
use crate::file_watch::{self, Identity};

/// A TLS protocol version rustls can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TlsVersion {
    V1_2,
    V1_3,
}

/// Why TLS settings are invalid or could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsServerError {
    #[error("for TLS provide both cert_file and key_file, or neither")]
    CertWithoutKey,
    #[error("client_ca_file needs cert_file and key_file: mTLS is only possible with TLS on")]
    ClientCaWithoutCert,
    #[error("invalid TLS version {0:?}: expected \"1.2\" or \"1.3\"")]
    InvalidVersion(String),
    #[error("TLS version {0} is not supported: tracegate speaks TLS 1.2 and 1.3 only")]
    UnsupportedVersion(String),
    #[error("min_version {min} is greater than max_version {max}")]
    MinAboveMax { min: String, max: String },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} contains no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} contains no PEM private key", path.display())]
    NoPrivateKey { path: PathBuf },
    #[error("invalid client CA in {}: {message}", path.display())]
    ClientCa { path: PathBuf, message: String },
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

fn parse_version(value: &str) -> Result<TlsVersion, TlsServerError> {
    match value.trim() {
        "1.2" => Ok(TlsVersion::V1_2),
        "1.3" => Ok(TlsVersion::V1_3),
        v @ ("1.0" | "1.1") => Err(TlsServerError::UnsupportedVersion(v.to_string())),
        other => Err(TlsServerError::InvalidVersion(other.to_string())),
    }
}

impl TlsServerConfig {
    /// TLS is on when a certificate is configured.
    pub fn is_enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    /// Pure checks (no disk): cert and key come together, versions are
    /// known and ordered.
    pub fn validate(&self) -> Result<(), TlsServerError> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(TlsServerError::CertWithoutKey);
        }
        if self.client_ca_file.is_some() && self.cert_file.is_none() {
            return Err(TlsServerError::ClientCaWithoutCert);
        }
        self.versions().map(|_| ())
    }

    /// The accepted versions, lowest first (default 1.2 ..= 1.3).
    pub(crate) fn versions(&self) -> Result<Vec<TlsVersion>, TlsServerError> {
        let min = self
            .min_version
            .as_deref()
            .map(parse_version)
            .transpose()?
            .unwrap_or(TlsVersion::V1_2);
        let max = self
            .max_version
            .as_deref()
            .map(parse_version)
            .transpose()?
            .unwrap_or(TlsVersion::V1_3);
        if min > max {
            return Err(TlsServerError::MinAboveMax {
                min: self.min_version.clone().unwrap_or_else(|| "1.2".into()),
                max: self.max_version.clone().unwrap_or_else(|| "1.3".into()),
            });
        }
        Ok([TlsVersion::V1_2, TlsVersion::V1_3]
            .into_iter()
            .filter(|v| (min..=max).contains(v))
            .collect())
    }

    /// Reads the PEM files and builds the rustls server config, offering
    /// `alpn` protocols in order. Call only when [`is_enabled`](Self::is_enabled).
    pub fn load_rustls(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, TlsServerError> {
        self.validate()?;
        let (Some(cert_path), Some(key_path)) = (&self.cert_file, &self.key_file) else {
            return Err(TlsServerError::CertWithoutKey);
        };
        let certs = read_certs(cert_path)?;
        let key = read_key(key_path)?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: Vec<&'static rustls::SupportedProtocolVersion> = self
            .versions()?
            .into_iter()
            .map(|v| match v {
                TlsVersion::V1_2 => &rustls::version::TLS12,
                TlsVersion::V1_3 => &rustls::version::TLS13,
            })
            .collect();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)?;
        let builder = match &self.client_ca_file {
            Some(ca_path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certs(ca_path)? {
                    roots.add(cert).map_err(|e| TlsServerError::ClientCa {
                        path: ca_path.clone(),
                        message: e.to_string(),
                    })?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| TlsServerError::ClientCa {
                    path: ca_path.clone(),
                    message: e.to_string(),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// A receiver's TLS, loaded, that keeps itself current: with
/// `reload_interval`, the first handshake after the interval looks at
/// `cert_file` and `key_file` and, if either changed (see
/// [`crate::file_watch`]), builds the TLS settings anew from the files;
/// with `client_ca_file_reload`, every handshake does so for
/// `client_ca_file`. Connections already open keep what they were set up
/// with. Files that do not load (a key that does not match the new
/// certificate yet) are logged and the settings in use are kept; they are
/// tried again at the next check.
pub struct ServerTls {
    config: TlsServerConfig,
    alpn: Vec<Vec<u8>>,
    state: std::sync::Mutex<TlsState>,
}

struct TlsState {
    acceptor: tokio_rustls::TlsAcceptor,
    /// Identities of `cert_file`, `key_file` and `client_ca_file` when
    /// last loaded.
    files: [Option<Identity>; 3],
    next_check: Instant,
}

impl ServerTls {
    /// Loads the files; an error names the file. Call only when
    /// [`TlsServerConfig::is_enabled`].
    pub fn load(config: &TlsServerConfig, alpn: &[&[u8]]) -> Result<ServerTls, TlsServerError> {
        let files = Self::identities(config);
        let rustls = config.load_rustls(alpn)?;
        Ok(ServerTls {
            config: config.clone(),
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
            state: std::sync::Mutex::new(TlsState {
                acceptor: tokio_rustls::TlsAcceptor::from(rustls),
                files,
                next_check: Instant::now() + config.reload_interval.unwrap_or_default(),
            }),
        })
    }

    fn identities(config: &TlsServerConfig) -> [Option<Identity>; 3] {
        let of = |path: &Option<PathBuf>| path.as_deref().and_then(file_watch::identity);
        [
            of(&config.cert_file),
            of(&config.key_file),
            of(&config.client_ca_file),
        ]
    }

    /// The settings for the next handshake, read again from the files
    /// first when a check is due and they changed.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let interval = self.config.reload_interval.filter(|d| !d.is_zero());
        let cert_due = interval.is_some() && now >= state.next_check;
        if cert_due || self.config.client_ca_file_reload {
            let files = Self::identities(&self.config);
            let changed = if cert_due {
                files != state.files
            } else {
                files[2] != state.files[2]
            };
            if cert_due {
                state.next_check = now + interval.unwrap_or_default();
            }
            if changed {
                let alpn: Vec<&[u8]> = self.alpn.iter().map(Vec::as_slice).collect();
                match self.config.load_rustls(&alpn) {
                    Ok(rustls) => {
                        tracing::info!("TLS files changed: new handshakes use them");
                        state.acceptor = tokio_rustls::TlsAcceptor::from(rustls);
                        state.files = files;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS files changed but do not load; keeping the ones in use");
                    }
                }
            }
        }
        state.acceptor.clone()
    }
}

fn open(path: &Path) -> Result<BufReader<std::fs::File>, TlsServerError> {
    std::fs::File::open(path)
        .map(BufReader::new)
        .map_err(|source| TlsServerError::Read {
            path: path.to_path_buf(),
            source,
        })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsServerError> {
    let certs = rustls_pemfile::certs(&mut open(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsServerError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsServerError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsServerError> {
    rustls_pemfile::private_key(&mut open(path)?)
        .map_err(|source| TlsServerError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| TlsServerError::NoPrivateKey {
            path: path.to_path_buf(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(cert: Option<&str>, key: Option<&str>) -> TlsServerConfig {
        TlsServerConfig {
            cert_file: cert.map(PathBuf::from),
            key_file: key.map(PathBuf::from),
            ..Default::default()
        }
    }

    #[test]
    fn cert_and_key_come_together() {
        assert!(config(None, None).validate().is_ok());
        assert!(config(Some("c.pem"), Some("k.pem")).validate().is_ok());
        assert!(matches!(
            config(Some("c.pem"), None).validate(),
            Err(TlsServerError::CertWithoutKey)
        ));
        assert!(matches!(
            config(None, Some("k.pem")).validate(),
            Err(TlsServerError::CertWithoutKey)
        ));
        let mtls_without_tls = TlsServerConfig {
            client_ca_file: Some("ca.pem".into()),
            ..Default::default()
        };
        assert!(matches!(
            mtls_without_tls.validate(),
            Err(TlsServerError::ClientCaWithoutCert)
        ));
    }

    #[test]
    fn versions_are_checked() {
        let with = |min: Option<&str>, max: Option<&str>| TlsServerConfig {
            min_version: min.map(String::from),
            max_version: max.map(String::from),
            ..Default::default()
        };
        assert_eq!(
            with(None, None).versions().unwrap(),
            vec![TlsVersion::V1_2, TlsVersion::V1_3]
        );
        assert_eq!(
            with(Some("1.3"), None).versions().unwrap(),
            vec![TlsVersion::V1_3]
        );
        assert_eq!(
            with(None, Some("1.2")).versions().unwrap(),
            vec![TlsVersion::V1_2]
        );
        assert!(matches!(
            with(Some("1.3"), Some("1.2")).versions(),
            Err(TlsServerError::MinAboveMax { .. })
        ));
        assert!(matches!(
            with(Some("1.0"), None).versions(),
            Err(TlsServerError::UnsupportedVersion(_))
        ));
        assert!(matches!(
            with(Some("tls13"), None).versions(),
            Err(TlsServerError::InvalidVersion(_))
        ));
    }

    #[test]
    fn loads_an_rcgen_certificate_and_names_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();

        let tls = TlsServerConfig {
            cert_file: Some(cert_path.clone()),
            key_file: Some(key_path.clone()),
            client_ca_file: Some(cert_path.clone()),
            ..Default::default()
        };
        let loaded = tls.load_rustls(&[b"h2"]).unwrap();
        assert_eq!(loaded.alpn_protocols, vec![b"h2".to_vec()]);

        let missing = TlsServerConfig {
            cert_file: Some(dir.path().join("nope.pem")),
            key_file: Some(key_path.clone()),
            ..Default::default()
        };
        let err = missing.load_rustls(&[]).unwrap_err();
        assert!(err.to_string().contains("nope.pem"), "{err}");

        // A key file where the certificate should be.
        let swapped = TlsServerConfig {
            cert_file: Some(key_path.clone()),
            key_file: Some(key_path),
            ..Default::default()
        };
        assert!(matches!(
            swapped.load_rustls(&[]),
            Err(TlsServerError::NoCertificate { .. })
        ));
    }

    /// The certificate a client sees in a handshake with `tls`.
    async fn served_certificate(tls: &ServerTls) -> Vec<u8> {
        let client = crate::tls::TlsClientConfig {
            insecure_skip_verify: true,
            ..Default::default()
        }
        .load(&[])
        .unwrap();
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let acceptor = tls.acceptor();
        let server = tokio::spawn(async move { acceptor.accept(server_io).await.map(drop) });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = connector.connect(name, client_io).await.unwrap();
        server.await.unwrap().unwrap();
        stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }

    fn write_pair(dir: &Path, name: &str) -> Vec<u8> {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        // Written beside the files, then renamed over them, as a
        // certificate manager replaces them.
        let (cert_new, key_new) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_new, cert.cert.pem()).unwrap();
        std::fs::write(&key_new, cert.signing_key.serialize_pem()).unwrap();
        std::fs::rename(&cert_new, dir.join("tls.crt")).unwrap();
        std::fs::rename(&key_new, dir.join("tls.key")).unwrap();
        cert.cert.der().to_vec()
    }

    #[tokio::test(start_paused = true)]
    async fn replaced_files_are_served_after_the_reload_interval() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_pair(dir.path(), "a");
        let config = TlsServerConfig {
            cert_file: Some(dir.path().join("tls.crt")),
            key_file: Some(dir.path().join("tls.key")),
            reload_interval: Some(std::time::Duration::from_secs(60)),
            ..Default::default()
        };
        let tls = ServerTls::load(&config, &[]).unwrap();
        assert_eq!(served_certificate(&tls).await, first);
        let second = write_pair(dir.path(), "b");
        // Not before the interval, as in the collector.
        assert_eq!(served_certificate(&tls).await, first);
        tokio::time::advance(std::time::Duration::from_secs(61)).await;
        assert_eq!(served_certificate(&tls).await, second);
        // A key that does not go with the certificate is not taken.
        let third = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.path().join("tls.crt"), third.cert.pem()).unwrap();
        tokio::time::advance(std::time::Duration::from_secs(61)).await;
        assert_eq!(served_certificate(&tls).await, second);

        // Without reload_interval the files are read once.
        let once = ServerTls::load(
            &TlsServerConfig {
                reload_interval: None,
                ..config
            },
            &[],
        );
        assert!(
            once.is_err(),
            "the mismatched pair does not load at start either"
        );
    }
}
