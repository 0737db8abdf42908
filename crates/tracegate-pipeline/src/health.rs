//! The `health_check` extension: answers 200 once every pipeline is up and
//! 503 before that and while shutting down.

use serde::Deserialize;

/// `extensions: health_check:` as the collector spells it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Listen address. Default `0.0.0.0:13133`.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Path answered besides `/healthz`. Default `/`.
    #[serde(default = "default_path")]
    pub path: String,
}

fn default_endpoint() -> String {
    "0.0.0.0:13133".into()
}

fn default_path() -> String {
    "/".into()
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            endpoint: default_endpoint(),
            path: default_path(),
        }
    }
}
