//! Jaeger's HTTP thrift endpoint: `POST /api/traces` with a binary-protocol
//! `Batch` body (`application/x-thrift` or
//! `application/vnd.apache.thrift.binary`), as jaeger-client HTTP senders
//! post it and the collector's jaeger receiver answers: 202 on success,
//! 400 with the reason for a body it cannot read, 500 when the pipeline
//! refuses.

use std::net::SocketAddr;

use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracegate_model::Indexing;

use crate::auth::Authenticators;
use crate::config::{error, ComponentError};
use crate::consumer::NextConsumer;
use crate::offload;
use crate::receiver::counters::{RejectReason, TransportCounters, INGEST_REASONS};
use crate::receiver::http_ingest::{
    empty_response, media_type, read_body, text_response, AuthGate, HttpHandler, HttpResponse,
    HttpService,
};
use crate::receiver::listener::{self, ConnectionSettings};
use crate::receiver::server_keys::http_server_config;
use crate::receiver::split_host_port;
use crate::receiver::StartError;

/// Default `thrift_http` endpoint, as the collector's.
pub const DEFAULT_ENDPOINT: &str = "localhost:14268";
pub use crate::receiver::http_ingest::DEFAULT_MAX_REQUEST_BODY_SIZE;
/// The one path served.
pub const TRACES_PATH: &str = "/api/traces";
const THRIFT_MEDIA_TYPES: [&str; 2] = [
    "application/x-thrift",
    "application/vnd.apache.thrift.binary",
];
const PROTOCOL: &str = "thrift_http";
/// Jaeger's collector's words before what is wrong with a body.
const UNREADABLE_BODY: &str = "Unable to process request body: ";

http_server_config! {
    /// `protocols: thrift_http:`.
    pub struct ThriftHttpConfig {
        /// `host:port` to listen on. Default `localhost:14268`; use
        /// `0.0.0.0:14268` to accept connections from other hosts, port 0 for
        /// any free port.
        #[serde(default = "default_endpoint")]
        pub endpoint: String = default_endpoint(),
    }
}

fn default_endpoint() -> String {
    DEFAULT_ENDPOINT.to_string()
}

impl ThriftHttpConfig {
    /// Pure checks; `path` is the config key (`protocols.thrift_http`).
    pub fn validate(&self, path: &str) -> Result<Vec<String>, ComponentError> {
        split_host_port(&self.endpoint).map_err(|e| error(&format!("{path}.endpoint"), e))?;
        let warnings = self.server_keys().validate(path)?;
        if let Some(tls) = &self.tls {
            tls.validate()
                .map_err(|e| error(&format!("{path}.tls"), e.to_string()))?;
        }
        Ok(warnings)
    }
}

/// A bound listener with its TLS loaded, not yet serving.
pub struct BoundHttp {
    listener: TcpListener,
    addr: SocketAddr,
    settings: ConnectionSettings,
    max_body_size: usize,
    counters: TransportCounters,
    auth: Option<AuthGate>,
}

impl BoundHttp {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Loads TLS and binds, so a bad file or a port in use fails the start
/// before anything serves.
pub async fn bind(
    config: &ThriftHttpConfig,
    id: &str,
    authenticators: &Authenticators,
) -> Result<BoundHttp, StartError> {
    let counters =
        TransportCounters::register_with_auth(id, PROTOCOL, INGEST_REASONS, config.auth.is_some());
    let auth = config
        .server_keys()
        .auth_gate(authenticators, &counters, id, PROTOCOL)?;
    let tls = listener::tls_acceptor(config.tls.as_ref(), &[b"h2", b"http/1.1"], id, PROTOCOL)?;
    let (listener, addr) = listener::bind_endpoint(id, PROTOCOL, &config.endpoint).await?;
    Ok(BoundHttp {
        listener,
        addr,
        settings: config.server_keys().connection_settings(tls),
        max_body_size: config.max_request_body_size(),
        counters,
        auth,
    })
}

/// Serves a bound listener until `shutdown`.
pub fn serve(
    bound: BoundHttp,
    next: NextConsumer,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) {
    let service = HttpService::new(
        ThriftHttp {
            indexing: crate::receiver::indexing_for(next.as_ref()),
            next,
            counters: bound.counters,
            max_body_size: bound.max_body_size,
        },
        bound.auth,
    );
    listener::spawn_accept_loop(bound.listener, bound.settings, service, shutdown, tasks);
}

struct ThriftHttp {
    next: NextConsumer,
    /// Lazy when nothing after the receiver reads spans: the written
    /// request is then not scanned.
    indexing: Indexing,
    counters: TransportCounters,
    max_body_size: usize,
}

impl ThriftHttp {
    fn reject(&self, reason: RejectReason, status: StatusCode, text: &str) -> HttpResponse {
        self.counters.rejected(reason);
        text_response(status, text)
    }
}

impl HttpHandler for ThriftHttp {
    async fn handle(&self, request: Request<Incoming>) -> HttpResponse {
        let (parts, body) = request.into_parts();
        if parts.uri.path() != TRACES_PATH {
            return text_response(StatusCode::NOT_FOUND, "404 page not found");
        }
        if parts.method != Method::POST {
            let mut response =
                text_response(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        let media = media_type(&parts.headers).unwrap_or_default();
        if !THRIFT_MEDIA_TYPES.contains(&media.as_str()) {
            return self.reject(
                RejectReason::UnsupportedMediaType,
                StatusCode::BAD_REQUEST,
                &format!("Unsupported content type: {media}"),
            );
        }
        let body = match read_body(
            &parts.headers,
            body,
            self.max_body_size,
            &self.counters,
            UNREADABLE_BODY,
            // The collector's Jaeger receiver answers a body it cannot read
            // with 500.
            StatusCode::INTERNAL_SERVER_ERROR,
        )
        .await
        {
            Ok(body) => body,
            Err(answer) => return answer,
        };
        // A large body is decoded on the blocking pool.
        let indexing = self.indexing;
        let decoded = offload::by_size(body.len(), offload::DECODE_BYTES, move || {
            tracegate_model::thrift::batch_binary_to_span_batch_with(&body, indexing)
                .map_err(|e| e.to_string())
        })
        .await
        .and_then(|decoded| decoded);
        let batch = match decoded {
            Ok(batch) => batch,
            Err(e) => {
                return self.reject(
                    RejectReason::Malformed,
                    StatusCode::BAD_REQUEST,
                    &format!("{UNREADABLE_BODY}{e}"),
                )
            }
        };
        match self.counters.export(&self.next, batch).await {
            Ok(()) => empty_response(StatusCode::ACCEPTED),
            Err(e) => text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("Cannot submit Jaeger batch: {e}"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::mpsc;

    use super::*;
    use crate::receiver::test_support::{http_request, Collect, Refuse};
    use tracegate_model::thrift::{self, Batch, Process, Span, Tag};

    async fn serve_on(next: NextConsumer) -> (SocketAddr, CancellationToken) {
        serve_with(next, 0).await
    }

    async fn serve_with(
        next: NextConsumer,
        max_request_body_size: u64,
    ) -> (SocketAddr, CancellationToken) {
        let config = ThriftHttpConfig {
            endpoint: "127.0.0.1:0".into(),
            max_request_body_size,
            ..Default::default()
        };
        let bound = bind(&config, "jaeger", &Authenticators::default())
            .await
            .unwrap();
        let addr = bound.local_addr();
        let shutdown = CancellationToken::new();
        serve(bound, next, shutdown.clone(), &TaskTracker::new());
        (addr, shutdown)
    }

    async fn send(
        addr: SocketAddr,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, String) {
        http_request(addr, method, path, &[("content-type", content_type)], body).await
    }

    fn body() -> Vec<u8> {
        thrift::encode_batch_binary(&Batch {
            process: Process {
                service_name: "http-service".into(),
                tags: None,
            },
            spans: vec![Span {
                trace_id_low: 1,
                span_id: 2,
                operation_name: "op".into(),
                start_time: 1,
                tags: Some(vec![Tag::string("k", "v")]),
                ..Default::default()
            }],
            seq_no: None,
        })
    }

    #[tokio::test]
    async fn thrift_bodies_are_accepted() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (addr, shutdown) = serve_on(Arc::new(Collect(tx))).await;
        for content_type in [
            "application/x-thrift",
            "application/vnd.apache.thrift.binary",
        ] {
            let (status, text) = send(addr, Method::POST, TRACES_PATH, content_type, body()).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{text}");
            let batch = rx.recv().await.unwrap();
            assert_eq!(batch.service_name(0), Some("http-service"));
            assert_eq!(batch.span_name(0), "op");
        }
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_large_body_is_decoded_whole() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (addr, shutdown) = serve_on(Arc::new(Collect(tx))).await;
        // 2 000 spans, over 200 KiB: decoded on the blocking pool.
        let body = thrift::encode_batch_binary(&Batch {
            process: Process {
                service_name: "http-service".into(),
                tags: None,
            },
            spans: (0..2_000)
                .map(|i| Span {
                    trace_id_low: 1,
                    span_id: i + 1,
                    operation_name: format!("op-{i}"),
                    start_time: 1,
                    tags: Some(vec![Tag::string("payload", &"x".repeat(100))]),
                    ..Default::default()
                })
                .collect(),
            seq_no: None,
        });
        assert!(body.len() > 200 * 1024, "{} bytes", body.len());
        let (status, text) = send(
            addr,
            Method::POST,
            TRACES_PATH,
            "application/x-thrift",
            body,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{text}");
        let batch = rx.recv().await.unwrap();
        assert_eq!(batch.len(), 2_000);
        assert_eq!(batch.span_name(1_999), "op-1999");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn an_oversized_body_gets_500_as_from_the_collector() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (addr, shutdown) = serve_with(Arc::new(Collect(tx)), 16).await;
        let (status, text) = send(
            addr,
            Method::POST,
            TRACES_PATH,
            "application/x-thrift",
            body(),
        )
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            text.starts_with("Unable to process request body: ")
                && text.contains("max_request_body_size"),
            "{text}"
        );
        assert!(rx.try_recv().is_err());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn bad_requests_get_the_collectors_answers() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (addr, shutdown) = serve_on(Arc::new(Collect(tx))).await;
        let (status, text) =
            send(addr, Method::POST, TRACES_PATH, "application/json", body()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(text, "Unsupported content type: application/json\n");
        let mut truncated = body();
        truncated.truncate(10);
        let (status, text) = send(
            addr,
            Method::POST,
            TRACES_PATH,
            "application/x-thrift",
            truncated,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            text.starts_with("Unable to process request body: thrift"),
            "{text}"
        );
        let (status, _) = send(
            addr,
            Method::GET,
            TRACES_PATH,
            "application/x-thrift",
            vec![],
        )
        .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let (status, _) = send(
            addr,
            Method::POST,
            "/api/other",
            "application/x-thrift",
            body(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(rx.try_recv().is_err());
        shutdown.cancel();

        let (addr, shutdown) = serve_on(Arc::new(Refuse)).await;
        let (status, text) = send(
            addr,
            Method::POST,
            TRACES_PATH,
            "application/x-thrift",
            body(),
        )
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(text.starts_with("Cannot submit Jaeger batch"), "{text}");
        shutdown.cancel();
    }
}
