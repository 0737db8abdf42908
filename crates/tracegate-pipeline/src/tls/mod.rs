//! TLS settings as the collector spells them (`configtls`), shared by
//! receivers (server side, `server.rs`) and exporters (client side,
//! `client.rs`). rustls with ring only; no OpenSSL.

mod client;
pub use client::TlsClientError;
mod server;
pub use server::{ServerTls, TlsServerError};

use std::path::PathBuf;

use serde::Deserialize;

/// `tls:` under a receiver's protocol. TLS is on when `cert_file` is set.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    /// PEM certificate chain the server presents.
    pub cert_file: Option<PathBuf>,
    /// PEM private key for `cert_file`.
    pub key_file: Option<PathBuf>,
    /// PEM CA bundle; when set, clients must present a certificate it signed (mTLS).
    pub client_ca_file: Option<PathBuf>,
    /// Accepted for compatibility and unused, as in the collector: on a
    /// server it does not make clients present certificates. Use
    /// `client_ca_file` for mTLS.
    pub ca_file: Option<PathBuf>,
    /// Lowest TLS version accepted: "1.2" (default) or "1.3".
    pub min_version: Option<String>,
    /// Highest TLS version accepted: "1.2" or "1.3" (default).
    pub max_version: Option<String>,
    /// Read `cert_file` and `key_file` again at the first handshake after
    /// this long since they were last read (as the collector does), and
    /// use them if they changed. Default: never.
    #[serde(default, deserialize_with = "crate::duration::deserialize_opt")]
    pub reload_interval: Option<std::time::Duration>,
    /// Read `client_ca_file` again at a handshake when it changed.
    /// Default false.
    #[serde(default)]
    pub client_ca_file_reload: bool,
}

/// `tls:` under an exporter. Defaults as the collector's: TLS on, the
/// system's trust store, verification on.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsClientConfig {
    /// Plaintext connection (for gRPC `http://` endpoints are plaintext too).
    #[serde(default)]
    pub insecure: bool,
    /// Use TLS but do not verify the server's certificate (testing only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// PEM CA bundle to verify the server with, instead of the system's
    /// trust store.
    pub ca_file: Option<PathBuf>,
    /// With `ca_file`, trust the system's store too. Default false.
    #[serde(default)]
    pub include_system_ca_certs_pool: bool,
    /// PEM client certificate for mTLS.
    pub cert_file: Option<PathBuf>,
    /// PEM private key for `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Server name to verify instead of the endpoint's host.
    pub server_name_override: Option<String>,
    /// Lowest TLS version offered: "1.2" (default) or "1.3".
    pub min_version: Option<String>,
    /// Highest TLS version offered.
    pub max_version: Option<String>,
}
