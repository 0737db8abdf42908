//! The `zipkin` receiver: Zipkin v2 JSON spans over HTTP, as the
//! collector's `zipkinreceiver` (default `localhost:9411`, any path but
//! `/api/v1/spans` read as v2, JSON or `application/x-protobuf` proto3,
//! 202 on success, 400 with the parse error).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::counters::{RejectReason, TransportCounters, INGEST_REASONS};
use super::listener::{self, ConnectionSettings};
use super::{RunningReceiver, StartError};
use crate::compression::{decompress, ContentEncoding};
use crate::config::{error, ComponentError};
use crate::consumer::NextConsumer;
use crate::receiver::split_host_port;
use crate::tls::TlsServerConfig;
use tracegate_model::SpanBatch;

#[cfg(test)]
mod tests;

/// Default endpoint, as the collector's.
pub const DEFAULT_ENDPOINT: &str = "localhost:9411";
/// Default `max_request_body_size`: 20 MiB, as `confighttp`.
pub const DEFAULT_MAX_REQUEST_BODY_SIZE: u64 = 20 * 1024 * 1024;

/// `receivers: zipkin:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `host:port` to listen on. Default `localhost:9411`; use
    /// `0.0.0.0:9411` to accept connections from other hosts, port 0 for
    /// any free port.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Server TLS (`cert_file`, `key_file`, optional `client_ca_file` for
    /// mTLS). Default: plaintext.
    #[serde(default)]
    pub tls: Option<TlsServerConfig>,
    /// Largest request body accepted, in bytes, both as sent and after
    /// decompression. Default 20 MiB (20971520); 0 means the default.
    /// Larger bodies get 413.
    #[serde(default)]
    pub max_request_body_size: u64,
    /// Turn tag values that read as integers, doubles or booleans
    /// (`"42"`, `"1.5"`, `"true"`) into typed attributes. Default false:
    /// every tag is a string attribute.
    #[serde(default)]
    pub parse_string_tags: bool,
    /// Propagate request headers to the pipeline. Accepted for
    /// compatibility; tracegate does not propagate request metadata yet.
    /// Default false.
    #[serde(default)]
    pub include_metadata: bool,
}

fn default_endpoint() -> String {
    DEFAULT_ENDPOINT.to_string()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            endpoint: default_endpoint(),
            tls: None,
            max_request_body_size: 0,
            parse_string_tags: false,
            include_metadata: false,
        }
    }
}

impl Config {
    /// The body limit in bytes, the default applied.
    pub fn max_request_body_size(&self) -> usize {
        let size = match self.max_request_body_size {
            0 => DEFAULT_MAX_REQUEST_BODY_SIZE,
            size => size,
        };
        usize::try_from(size).unwrap_or(usize::MAX)
    }

    /// Pure checks: `Err` for an invalid config, `Ok(warnings)` otherwise.
    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        let mut warnings = Vec::new();
        split_host_port(&self.endpoint).map_err(|e| error("endpoint", e))?;
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

pub(crate) type HttpResponse = Response<Full<Bytes>>;

/// Go's `http.Error`: the text and a newline, as plain text.
pub(crate) fn text_response(status: StatusCode, text: &str) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

pub(crate) fn empty_response(status: StatusCode) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// Why a body could not be had.
pub(crate) enum BodyError {
    TooLarge,
    Unsupported(String),
    Malformed(String),
}

/// Reads the body up to `limit` bytes and decompresses it per its
/// `Content-Encoding` (gzip, deflate/zlib, zstd), again up to `limit`.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let encoding = match headers.get(header::CONTENT_ENCODING) {
        None => ContentEncoding::Identity,
        Some(value) => {
            let text = String::from_utf8_lossy(value.as_bytes());
            ContentEncoding::from_header(&text)
                .ok_or_else(|| BodyError::Unsupported(text.into_owned()))?
        }
    };
    let raw = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(BodyError::TooLarge),
        Err(e) => {
            return Err(BodyError::Malformed(format!(
                "failed to read request body: {e}"
            )))
        }
    };
    decompress(encoding, raw, limit).map_err(|e| match e {
        crate::compression::DecompressError::TooLarge { .. } => BodyError::TooLarge,
        other => BodyError::Malformed(other.to_string()),
    })
}

/// The media type of `Content-Type`, lowercased, without parameters.
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let media = value.split(';').next()?.trim().to_ascii_lowercase();
    (!media.is_empty()).then_some(media)
}

struct ZipkinHttp {
    next: NextConsumer,
    counters: TransportCounters,
    max_body_size: usize,
    parse_string_tags: bool,
}

#[derive(Clone)]
struct ZipkinService(Arc<ZipkinHttp>);

impl hyper::service::Service<Request<Incoming>> for ZipkinService {
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let receiver = self.0.clone();
        Box::pin(async move { Ok(receiver.handle(request).await) })
    }
}

impl ZipkinHttp {
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
        let body = match read_body(&parts.headers, body, self.max_body_size).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                self.counters.rejected(RejectReason::TooLarge);
                return text_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!(
                        "request body exceeds max_request_body_size of {} bytes",
                        self.max_body_size
                    ),
                );
            }
            Err(BodyError::Unsupported(encoding)) => {
                self.counters.rejected(RejectReason::UnsupportedEncoding);
                return text_response(
                    StatusCode::BAD_REQUEST,
                    &format!("unsupported Content-Encoding: {encoding}"),
                );
            }
            Err(BodyError::Malformed(message)) => {
                self.counters.rejected(RejectReason::Malformed);
                return text_response(StatusCode::BAD_REQUEST, &message);
            }
        };
        let parsed = if protobuf {
            tracegate_model::zipkin::v2_proto_to_request(&body, self.parse_string_tags)
        } else {
            tracegate_model::zipkin::v2_json_to_request(&body, self.parse_string_tags)
        };
        let request = match parsed {
            Ok(request) => request,
            Err(e) => {
                self.counters.rejected(RejectReason::Malformed);
                return text_response(StatusCode::BAD_REQUEST, &e.to_string());
            }
        };
        let batch = SpanBatch::from_request(&request);
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

pub(crate) fn tls_acceptor(
    tls: Option<&TlsServerConfig>,
    id: &str,
    protocol: &'static str,
) -> Result<Option<TlsAcceptor>, StartError> {
    match tls.filter(|t| t.is_enabled()) {
        None => Ok(None),
        Some(tls) => tls
            .load_rustls(&[b"h2", b"http/1.1"])
            .map(|config| Some(TlsAcceptor::from(config)))
            .map_err(|source| StartError::Tls {
                receiver: id.to_string(),
                protocol,
                source,
            }),
    }
}

pub(crate) async fn bind_tcp(
    id: &str,
    protocol: &'static str,
    endpoint: &str,
) -> Result<(tokio::net::TcpListener, std::net::SocketAddr), StartError> {
    let bind_error = |source| StartError::Bind {
        receiver: id.to_string(),
        protocol,
        endpoint: endpoint.to_string(),
        source,
    };
    let listener = listener::bind(endpoint).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, addr))
}

/// Starts the receiver; see [`super::ReceiverConfig::start`].
pub(crate) async fn start(
    config: &Config,
    id: &str,
    next: NextConsumer,
    shutdown: CancellationToken,
) -> Result<RunningReceiver, StartError> {
    config.validate().map_err(|source| StartError::Config {
        receiver: id.to_string(),
        source,
    })?;
    let tls = tls_acceptor(config.tls.as_ref(), id, "http")?;
    let (tcp, addr) = bind_tcp(id, "http", &config.endpoint).await?;
    let service = ZipkinService(Arc::new(ZipkinHttp {
        next,
        counters: TransportCounters::register(id, "http", INGEST_REASONS),
        max_body_size: config.max_request_body_size(),
        parse_string_tags: config.parse_string_tags,
    }));
    let tasks = TaskTracker::new();
    let settings = ConnectionSettings::new(listener::hyper_builder(), tls);
    listener::spawn_accept_loop(tcp, settings, service, shutdown, &tasks);
    Ok(RunningReceiver {
        addresses: vec![("http", addr)],
        tasks,
    })
}
