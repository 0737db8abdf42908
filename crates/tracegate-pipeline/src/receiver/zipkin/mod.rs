//! The `zipkin` receiver: Zipkin v2 JSON spans over HTTP, as the
//! collector's `zipkinreceiver` (default `localhost:9411`, any path but
//! `/api/v1/spans` read as v2, JSON or `application/x-protobuf` proto3,
//! 202 on success, 400 with the parse error).

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio_util::task::TaskTracker;

use super::counters::{RejectReason, TransportCounters, INGEST_REASONS};
use super::http_ingest::{
    empty_response, media_type, read_body, text_response, HttpHandler, HttpResponse, HttpService,
};
use super::listener;
use super::{RunningReceiver, StartError};
use crate::config::{error, ComponentError};
use crate::consumer::NextConsumer;
use crate::offload;
use crate::receiver::server_keys::http_server_config;
use crate::receiver::split_host_port;
use tracegate_model::SpanBatch;

#[cfg(test)]
mod tests;

/// Default endpoint, as the collector's.
pub const DEFAULT_ENDPOINT: &str = "localhost:9411";
pub use crate::receiver::http_ingest::DEFAULT_MAX_REQUEST_BODY_SIZE;

http_server_config! {
    /// `receivers: zipkin:`.
    pub struct Config {
        /// `host:port` to listen on. Default `localhost:9411`; use
        /// `0.0.0.0:9411` to accept connections from other hosts, port 0 for
        /// any free port.
        #[serde(default = "default_endpoint")]
        pub endpoint: String = default_endpoint(),
        /// Turn tag values that read as integers, doubles or booleans
        /// (`"42"`, `"1.5"`, `"true"`) into typed attributes. Default false:
        /// every tag is a string attribute.
        #[serde(default)]
        pub parse_string_tags: bool = false,
        /// Propagate request headers to the pipeline. Accepted for
        /// compatibility; tracegate does not propagate request metadata yet.
        /// Default false.
        #[serde(default)]
        pub include_metadata: bool = false,
    }
}

fn default_endpoint() -> String {
    DEFAULT_ENDPOINT.to_string()
}

impl Config {
    /// Pure checks: `Err` for an invalid config, `Ok(warnings)` otherwise.
    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        split_host_port(&self.endpoint).map_err(|e| error("endpoint", e))?;
        let mut warnings = self.server_keys().validate("")?;
        if let Some(tls) = &self.tls {
            tls.validate().map_err(|e| error("tls", e.to_string()))?;
        }
        if self.include_metadata {
            warnings.push(
                "include_metadata has no effect: tracegate does not propagate request metadata yet"
                    .into(),
            );
        }
        Ok(warnings)
    }
}

struct ZipkinHttp {
    next: NextConsumer,
    counters: TransportCounters,
    max_body_size: usize,
    parse_string_tags: bool,
}

impl HttpHandler for ZipkinHttp {
    async fn handle(&self, request: Request<Incoming>) -> HttpResponse {
        let (parts, body) = request.into_parts();
        if parts.uri.path().contains("api/v1/spans") {
            self.counters.rejected(RejectReason::UnsupportedMediaType);
            return text_response(
                StatusCode::BAD_REQUEST,
                "Zipkin v1 spans are not supported by tracegate; send Zipkin v2 to /api/v2/spans",
            );
        }
        // The collector reads every body that is not protobuf as JSON.
        let protobuf = media_type(&parts.headers).as_deref() == Some("application/x-protobuf");
        let body = match read_body(
            &parts.headers,
            body,
            self.max_body_size,
            &self.counters,
            "",
            // The collector's Zipkin receiver ignores the read error and
            // fails on the cut-off body instead.
            StatusCode::BAD_REQUEST,
        )
        .await
        {
            Ok(body) => body,
            Err(answer) => return answer,
        };
        // Owned messages are built on the way: a large body is decoded on
        // the blocking pool.
        let parse_string_tags = self.parse_string_tags;
        let decoded = offload::by_size(body.len(), offload::DECODE_BYTES, move || {
            let parsed = if protobuf {
                tracegate_model::zipkin::v2_proto_to_request(&body, parse_string_tags)
            } else {
                tracegate_model::zipkin::v2_json_to_request(&body, parse_string_tags)
            };
            parsed
                .map(|request| SpanBatch::from_request(&request))
                .map_err(|e| e.to_string())
        })
        .await
        .and_then(|decoded| decoded);
        let batch = match decoded {
            Ok(batch) => batch,
            Err(e) => {
                self.counters.rejected(RejectReason::Malformed);
                return text_response(StatusCode::BAD_REQUEST, &e);
            }
        };
        match self.counters.export(&self.next, batch).await {
            // "Accepted", as https://zipkin.io/zipkin-api/#/default/post_spans
            Ok(()) => empty_response(StatusCode::ACCEPTED),
            Err(_) => {
                let mut response =
                    Response::new(Full::new(Bytes::from_static(b"\"Internal Server Error\"")));
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                response
            }
        }
    }
}

/// Starts the receiver on a validated config; see
/// [`super::ReceiverConfig::start`].
pub(crate) async fn start(
    config: &Config,
    id: &str,
    next: NextConsumer,
    ctx: &super::BuildContext,
) -> Result<RunningReceiver, StartError> {
    let shutdown = ctx.shutdown.clone();
    let counters =
        TransportCounters::register_with_auth(id, "http", INGEST_REASONS, config.auth.is_some());
    let gate = config
        .server_keys()
        .auth_gate(&ctx.authenticators, &counters, id, "http")?;
    let tls = listener::tls_acceptor(config.tls.as_ref(), &[b"h2", b"http/1.1"], id, "http")?;
    let (tcp, addr) = listener::bind_endpoint(id, "http", &config.endpoint).await?;
    let service = HttpService::new(
        ZipkinHttp {
            next,
            counters,
            max_body_size: config.max_request_body_size(),
            parse_string_tags: config.parse_string_tags,
        },
        gate,
    );
    let tasks = TaskTracker::new();
    let settings = config.server_keys().connection_settings(tls);
    listener::spawn_accept_loop(tcp, settings, service, shutdown, &tasks);
    Ok(RunningReceiver {
        addresses: vec![("http", addr)],
        tasks,
    })
}

#[async_trait::async_trait]
impl super::BuildReceiver for Config {
    async fn start(
        &self,
        id: &str,
        next: NextConsumer,
        cx: &super::BuildContext,
    ) -> super::Started {
        start(self, id, next, cx).await
    }
}
