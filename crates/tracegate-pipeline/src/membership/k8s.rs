//! The `k8s` resolver: the ready endpoints of a Kubernetes Service.
//!
//! Not built yet: its settings are read, and starting it fails with a
//! clear message, so a config naming it loads and then says why nothing
//! is routed.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// `resolver: k8s:`, the collector's keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sResolverConfig {
    /// The Service, `name.namespace`.
    #[serde(default)]
    pub service: String,
    /// The ports to send to on every endpoint. Default `[4317]`.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Time limit of a call to the Kubernetes API. Default `1s`.
    #[serde(
        default = "default_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub timeout: Duration,
    /// Members as the pods' hostnames instead of their addresses.
    #[serde(default)]
    pub return_hostnames: bool,
}

fn default_timeout() -> Duration {
    Duration::from_secs(1)
}

/// Always fails for now.
pub async fn start(
    cfg: &K8sResolverConfig,
    _shutdown: CancellationToken,
) -> Result<watch::Receiver<Arc<[String]>>, String> {
    Err(format!(
        "the k8s resolver (service {:?}) is not implemented yet; use the static or dns resolver",
        cfg.service
    ))
}
