//! The `health_check` extension: answers 200 once every pipeline is up and
//! 503 before that and while shutting down.

use serde::Deserialize;

/// `extensions: health_check:` as the collector spells it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Listen address. Default `0.0.0.0:13133` (the collector's is
    /// `localhost:13133`); unset is `None`, so validate can say so.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Path answered besides `/healthz`. Default `/`.
    #[serde(default = "default_path")]
    pub path: String,
    /// Fixed bodies instead of the default JSON status: `healthy` and
    /// `unhealthy`, each optional.
    #[serde(default)]
    pub response_body: Option<ResponseBody>,
    /// Accepted for compatibility with collector configs and ignored, as
    /// the collector itself has ignored it since it was deprecated.
    #[serde(default)]
    pub check_collector_pipeline: Option<serde_json::Value>,
}

/// `response_body:` of `health_check`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResponseBody {
    /// Body served with 200.
    pub healthy: Option<String>,
    /// Body served with 503.
    pub unhealthy: Option<String>,
}

/// Where the endpoint listens when none is given.
const DEFAULT_ENDPOINT: &str = "0.0.0.0:13133";

fn default_path() -> String {
    "/".into()
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            endpoint: None,
            path: default_path(),
            response_body: None,
            check_collector_pipeline: None,
        }
    }
}

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Whether the process is ready to take data: set once every pipeline is
/// up, cleared when shutdown begins.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The running health endpoint.
pub struct HealthServer {
    pub address: SocketAddr,
}

impl HealthServer {
    /// Binds now and answers `GET <path>` and `GET /healthz` with 200 while
    /// `readiness` is set, 503 otherwise, with the collector's JSON body.
    pub async fn start(
        config: &HealthCheckConfig,
        readiness: Readiness,
        shutdown: CancellationToken,
    ) -> std::io::Result<HealthServer> {
        let listener = TcpListener::bind(config.endpoint()).await?;
        let address = listener.local_addr()?;
        let path: Arc<str> = config.path.as_str().into();
        let bodies = config.response_body.clone().unwrap_or_default();
        let (healthy, unhealthy): (Option<Arc<str>>, Option<Arc<str>>) = (
            bodies.healthy.map(Into::into),
            bodies.unhealthy.map(Into::into),
        );
        let up_since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        crate::http_server::serve_plain(listener, shutdown, move |req| {
            let readiness = readiness.clone();
            let path = path.clone();
            let (healthy, unhealthy) = (healthy.clone(), unhealthy.clone());
            async move {
                let p = req.uri().path();
                let (status, body) = if p != &*path && p != "/healthz" {
                    (
                        StatusCode::NOT_FOUND,
                        "{\"status\":\"Not found\"}".to_string(),
                    )
                } else if readiness.is_ready() {
                    let body = healthy.as_deref().map(str::to_string).unwrap_or_else(|| {
                        format!("{{\"status\":\"Server available\",\"upSince\":{up_since}}}")
                    });
                    (StatusCode::OK, body)
                } else {
                    let body = unhealthy
                        .as_deref()
                        .map(str::to_string)
                        .unwrap_or_else(|| "{\"status\":\"Server not available\"}".to_string());
                    (StatusCode::SERVICE_UNAVAILABLE, body)
                };
                Ok::<_, Infallible>(
                    Response::builder()
                        .status(status)
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(Full::new(Bytes::from(body)))
                        .expect("static response parts are valid"),
                )
            }
        });
        Ok(HealthServer { address })
    }
}

impl HealthCheckConfig {
    /// The listen address, the default applied.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT)
    }

    /// Nothing to check without binding the endpoint; warns where the
    /// collector would listen elsewhere.
    pub fn validate(&self) -> Result<Vec<String>, crate::config::ComponentError> {
        let mut warnings = Vec::new();
        if self.endpoint.is_none() {
            warnings.push(format!(
                "endpoint is not set: tracegate listens on {DEFAULT_ENDPOINT} (every interface, \
                 so a kubelet's probes reach it); the collector's default is localhost:13133"
            ));
        }
        Ok(warnings)
    }
}

#[async_trait::async_trait]
impl crate::extension::BuildExtension for HealthCheckConfig {
    async fn start(
        &self,
        _: &str,
        ctx: &crate::context::BuildContext,
    ) -> crate::extension::Started {
        let server = HealthServer::start(self, ctx.readiness.clone(), ctx.shutdown.clone())
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", self.endpoint()))?;
        Ok(crate::extension::RunningExtension {
            addresses: vec![("http", server.address)],
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without an endpoint tracegate listens where the collector would
    /// not; validate says so, and says nothing once one is given.
    #[test]
    fn an_unset_endpoint_warns_that_the_collector_listens_on_localhost() {
        let unset: HealthCheckConfig = crate::config::from_value(serde_json::Value::Null).unwrap();
        assert_eq!(unset.endpoint(), "0.0.0.0:13133");
        let warnings = unset.validate().unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("endpoint is not set: tracegate listens on 0.0.0.0:13133")
                && warnings[0].contains("localhost:13133"),
            "{warnings:?}"
        );
        let set: HealthCheckConfig =
            crate::config::from_value(serde_json::json!({"endpoint": "localhost:13133"})).unwrap();
        assert_eq!(set.endpoint(), "localhost:13133");
        assert!(set.validate().unwrap().is_empty());
    }
}
