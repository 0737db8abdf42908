//! Client-side TLS for exporters: turns a [`TlsClientConfig`] into a rustls
//! `ClientConfig` (ring provider, no OpenSSL), as the collector's `configtls`
//! does for its clients. `validate` is pure; `load` reads the PEM files, so a
//! missing file is a startup error.

use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::TlsClientConfig;

/// Why a client TLS setting cannot be used. Messages name the `tls.` key.
#[derive(Debug, thiserror::Error)]
pub enum TlsClientError {
    #[error("tls.{key}: cannot read {}: {source}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tls.{key}: {} holds no PEM {what}", path.display())]
    NoPem {
        key: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("tls.{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// A TLS version as configtls spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TlsVersion {
    V1_0,
    V1_1,
    V1_2,
    V1_3,
}

fn parse_version(key: &'static str, value: &str) -> Result<TlsVersion, TlsClientError> {
    match value {
        "1.0" => Ok(TlsVersion::V1_0),
        "1.1" => Ok(TlsVersion::V1_1),
        "1.2" => Ok(TlsVersion::V1_2),
        "1.3" => Ok(TlsVersion::V1_3),
        other => Err(TlsClientError::Invalid {
            key,
            message: format!("unsupported TLS version {other:?}; use \"1.2\" or \"1.3\""),
        }),
    }
}

impl TlsClientConfig {
    /// Whether the connection is plaintext: `insecure: true` without a
    /// `ca_file`, as configtls decides (a CA file keeps TLS on).
    pub fn is_plaintext(&self) -> bool {
        self.insecure && self.ca_file.is_none()
    }

    /// Pure checks (no file access). `Ok` carries warnings.
    pub fn validate(&self) -> Result<Vec<String>, TlsClientError> {
        let mut warnings = Vec::new();
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(TlsClientError::Invalid {
                key: if self.cert_file.is_some() {
                    "key_file"
                } else {
                    "cert_file"
                },
                message: "cert_file and key_file must be given together".into(),
            });
        }
        let (min, max) = self.versions()?;
        if let (Some(min), Some(max)) = (min, max) {
            if min > max {
                return Err(TlsClientError::Invalid {
                    key: "min_version",
                    message: "min_version cannot be greater than max_version".into(),
                });
            }
        }
        if matches!(max, Some(v) if v < TlsVersion::V1_2) {
            return Err(TlsClientError::Invalid {
                key: "max_version",
                message: "TLS below 1.2 is not supported (rustls); use \"1.2\" or \"1.3\"".into(),
            });
        }
        if matches!(min, Some(v) if v < TlsVersion::V1_2) {
            warnings.push(
                "tls.min_version below 1.2 is not offered (rustls supports 1.2 and 1.3)".into(),
            );
        }
        self.server_name()?;
        if self.insecure_skip_verify {
            warnings
                .push("tls.insecure_skip_verify: the server's certificate is not verified".into());
        }
        Ok(warnings)
    }

    /// `min_version` and `max_version`, each `None` when not set.
    fn versions(&self) -> Result<(Option<TlsVersion>, Option<TlsVersion>), TlsClientError> {
        let parse = |key, value: &Option<String>| {
            value.as_deref().map(|v| parse_version(key, v)).transpose()
        };
        Ok((
            parse("min_version", &self.min_version)?,
            parse("max_version", &self.max_version)?,
        ))
    }

    /// The server name to verify instead of the endpoint's host, if set.
    pub fn server_name(&self) -> Result<Option<ServerName<'static>>, TlsClientError> {
        self.server_name_override
            .as_deref()
            .map(|name| {
                ServerName::try_from(name.to_string()).map_err(|_| TlsClientError::Invalid {
                    key: "server_name_override",
                    message: format!("{name:?} is not a valid DNS name or IP address"),
                })
            })
            .transpose()
    }

    /// Reads the PEM files and builds the rustls client config, offering
    /// `alpn` (e.g. `h2` for gRPC). Roots are `ca_file` when given, else (or
    /// also, with `include_system_ca_certs_pool`) the system's trust store
    /// as the collector's Go runtime reads it (`SSL_CERT_FILE`,
    /// `SSL_CERT_DIR`, the distribution's bundle).
    pub fn load(&self, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, TlsClientError> {
        self.validate()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (min, max) = self.versions()?;
        let (min, max) = (
            min.unwrap_or(TlsVersion::V1_2),
            max.unwrap_or(TlsVersion::V1_3),
        );
        let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
        if min <= TlsVersion::V1_2 && max >= TlsVersion::V1_2 {
            versions.push(&rustls::version::TLS12);
        }
        if max >= TlsVersion::V1_3 {
            versions.push(&rustls::version::TLS13);
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| TlsClientError::Invalid {
                key: "min_version",
                message: e.to_string(),
            })?;

        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert { provider }))
        } else {
            let mut roots = RootCertStore::empty();
            match &self.ca_file {
                Some(path) => {
                    let certs = read_certs("ca_file", path)?;
                    let (added, _ignored) = roots.add_parsable_certificates(certs);
                    if added == 0 {
                        return Err(TlsClientError::NoPem {
                            key: "ca_file",
                            path: path.clone(),
                            what: "certificate that parses",
                        });
                    }
                }
                None => add_system_roots(&mut roots),
            }
            if self.ca_file.is_some() && self.include_system_ca_certs_pool {
                add_system_roots(&mut roots);
            }
            builder.with_root_certificates(roots)
        };

        let mut config = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let chain = read_certs("cert_file", cert)?;
                let key = read_key(key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsClientError::Invalid {
                        key: "key_file",
                        message: format!("does not match cert_file: {e}"),
                    })?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

fn open(key: &'static str, path: &Path) -> Result<BufReader<File>, TlsClientError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| TlsClientError::Read {
            key,
            path: path.to_path_buf(),
            source,
        })
}

fn read_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsClientError> {
    let mut reader = open(key, path)?;
    let certs = rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsClientError::Read {
            key,
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsClientError::NoPem {
            key,
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsClientError> {
    let mut reader = open("key_file", path)?;
    rustls_pemfile::private_key(&mut reader)
        .map_err(|source| TlsClientError::Read {
            key: "key_file",
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| TlsClientError::NoPem {
            key: "key_file",
            path: path.to_path_buf(),
            what: "private key",
        })
}

/// `insecure_skip_verify`: any certificate is accepted, but the handshake
/// signatures are still checked so the session keys belong to whoever
/// presented the certificate.
struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for AcceptAnyServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AcceptAnyServerCert")
    }
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The system's trust store; where it has no certificate at all (a minimal
/// container without a CA bundle) the webpki (Mozilla) roots stand in, so
/// public backends still verify.
fn add_system_roots(roots: &mut RootCertStore) {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!(error = %e, "reading the system trust store");
    }
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::info!("no certificate in the system trust store; using the webpki roots");
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: serde_json::Value) -> TlsClientConfig {
        serde_json::from_value(yaml).expect("valid tls config")
    }

    #[test]
    fn plaintext_only_when_insecure_without_ca() {
        assert!(config(serde_json::json!({"insecure": true})).is_plaintext());
        assert!(!config(serde_json::json!({})).is_plaintext());
        assert!(
            !config(serde_json::json!({"insecure": true, "ca_file": "/ca.pem"})).is_plaintext()
        );
    }

    #[test]
    fn validate_rejects_half_a_key_pair_and_bad_versions() {
        let half = config(serde_json::json!({"cert_file": "/c.pem"}));
        assert!(half
            .validate()
            .unwrap_err()
            .to_string()
            .contains("key_file"));
        let bad = config(serde_json::json!({"min_version": "1.4"}));
        assert!(bad.validate().is_err());
        let inverted = config(serde_json::json!({"min_version": "1.3", "max_version": "1.2"}));
        assert!(inverted.validate().is_err());
        let old = config(serde_json::json!({"max_version": "1.1"}));
        assert!(old.validate().is_err());
        let name = config(serde_json::json!({"server_name_override": "not a name"}));
        assert!(name.validate().is_err());
    }

    #[test]
    fn validate_touches_no_files() {
        let missing = config(serde_json::json!({"ca_file": "/nonexistent/ca.pem"}));
        assert!(missing.validate().is_ok());
    }

    #[test]
    fn load_names_the_missing_file() {
        let missing = config(serde_json::json!({"ca_file": "/nonexistent/ca.pem"}));
        let err = missing.load(&[b"h2"]).unwrap_err().to_string();
        assert!(
            err.contains("tls.ca_file") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn load_uses_system_roots_and_alpn() {
        let config = config(serde_json::json!({})).load(&[b"h2"]).expect("loads");
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
    }

    #[test]
    fn load_reads_ca_and_client_identity() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let ca_path = dir.path().join("ca.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&ca_path, ca.cert.pem()).unwrap();
        std::fs::write(&key_path, ca.signing_key.serialize_pem()).unwrap();
        let tls = config(serde_json::json!({
            "ca_file": ca_path, "cert_file": ca_path, "key_file": key_path,
            "min_version": "1.3"
        }));
        let loaded = tls.load(&[]).expect("loads");
        assert!(loaded.client_auth_cert_resolver.has_certs());

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = config(serde_json::json!({"ca_file": empty}))
            .load(&[])
            .unwrap_err();
        assert!(
            matches!(err, TlsClientError::NoPem { key: "ca_file", .. }),
            "{err}"
        );
    }
}
