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
        let listener = TcpListener::bind(&config.endpoint).await?;
        let address = listener.local_addr()?;
        let path: Arc<str> = config.path.as_str().into();
        let up_since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        crate::http_server::serve_plain(listener, shutdown, move |req| {
            let readiness = readiness.clone();
            let path = path.clone();
            async move {
                let p = req.uri().path();
                let (status, body) = if p != &*path && p != "/healthz" {
                    (
                        StatusCode::NOT_FOUND,
                        "{\"status\":\"Not found\"}".to_string(),
                    )
                } else if readiness.is_ready() {
                    (
                        StatusCode::OK,
                        format!("{{\"status\":\"Server available\",\"upSince\":{up_since}}}"),
                    )
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "{\"status\":\"Server not available\"}".to_string(),
                    )
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
