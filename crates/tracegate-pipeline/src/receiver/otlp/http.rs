//! OTLP/HTTP: `POST /v1/traces` with protobuf or JSON bodies, optionally
//! compressed, answered in the request's encoding with the collector's
//! status codes (docs/architecture.md, "Answers to clients").

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::Full;
use hyper::body::Incoming;
use tonic::Code;

use super::cors::CorsPolicy;
use super::status::{http_status, ExportFailure};
use crate::compression::{ContentEncoding, DecompressError};
use crate::consumer::NextConsumer;
use crate::offload;
use crate::receiver::counters::{RejectReason, TransportCounters};
use crate::receiver::http_ingest::{
    decompress_capped, decompress_capped_members, drain, media_type, plain_response, read_capped,
    text_response, BodyError, HttpHandler, HttpResponse,
};
use tracegate_model::{Indexing, SpanBatch};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// The two OTLP/HTTP body encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFormat {
    Protobuf,
    Json,
}

impl BodyFormat {
    fn content_type(self) -> &'static str {
        match self {
            BodyFormat::Protobuf => PROTOBUF,
            BodyFormat::Json => JSON,
        }
    }

    /// An empty `ExportTraceServiceResponse`.
    fn success_body(self) -> Bytes {
        match self {
            BodyFormat::Protobuf => Bytes::new(),
            BodyFormat::Json => Bytes::from_static(b"{}"),
        }
    }

    /// The body's spans. A protobuf body is scanned where it is; a large
    /// JSON body, several times the work per byte, is parsed on the
    /// blocking pool ([`offload`]).
    async fn decode(self, body: Bytes, indexing: Indexing) -> Result<SpanBatch, String> {
        match self {
            BodyFormat::Protobuf => SpanBatch::scan_with(body, indexing).map_err(|e| e.to_string()),
            BodyFormat::Json => offload::by_size(body.len(), offload::DECODE_BYTES, move || {
                SpanBatch::from_json(&body).map_err(|e| e.to_string())
            })
            .await
            .and_then(|decoded| decoded),
        }
    }
}

/// State shared by every connection of one HTTP listener.
pub(crate) struct HttpReceiver {
    pub next: NextConsumer,
    /// How protobuf bodies are indexed (`super::super::indexing_for`);
    /// JSON bodies are indexed as they are parsed.
    pub indexing: Indexing,
    pub counters: TransportCounters,
    pub traces_path: String,
    pub max_body_size: usize,
    pub encodings: Vec<ContentEncoding>,
    pub cors: Option<CorsPolicy>,
}

fn body_response(status: StatusCode, format: BodyFormat, body: Bytes) -> HttpResponse {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    response
}

fn failure_response(
    status: StatusCode,
    format: BodyFormat,
    failure: &ExportFailure,
) -> HttpResponse {
    let body = match format {
        BodyFormat::Protobuf => failure.to_protobuf(),
        BodyFormat::Json => failure.to_json(),
    };
    let mut response = body_response(status, format, body);
    if let Some(seconds) = failure.retry_after_header() {
        if let Ok(value) = HeaderValue::from_str(&seconds) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

impl HttpHandler for HttpReceiver {
    async fn handle(&self, request: Request<Incoming>) -> HttpResponse {
        let (parts, mut body) = request.into_parts();
        let response = match &self.cors {
            Some(cors) if CorsPolicy::is_preflight(&parts.method, &parts.headers) => {
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = StatusCode::NO_CONTENT;
                *response.headers_mut() = cors.preflight(&parts.headers);
                response
            }
            Some(cors) => {
                let mut response = self.route(&parts, &mut body).await;
                let origin = parts.headers.get(header::ORIGIN);
                cors.decorate(&parts.method, origin, response.headers_mut());
                response
            }
            None => self.route(&parts, &mut body).await,
        };
        if !body.is_end_stream() {
            tokio::spawn(drain(body));
        }
        response
    }

    fn before_auth(&self, request: &Parts) -> bool {
        self.cors
            .as_ref()
            .is_some_and(|_| CorsPolicy::is_preflight(&request.method, &request.headers))
    }

    /// The collector's OTLP receiver answers a refused request with a
    /// `Status` (UNAUTHENTICATED) in the request's encoding, JSON when it
    /// names none; for any other `Content-Type` its error handler cannot
    /// pick an encoding and answers 500 with a fixed JSON message.
    fn unauthenticated(&self, request: &Parts, message: &str) -> HttpResponse {
        let format = match media_type(&request.headers).as_deref() {
            None | Some(JSON) => Some(BodyFormat::Json),
            Some(PROTOBUF) => Some(BodyFormat::Protobuf),
            Some(_) => None,
        };
        let mut response = match format {
            Some(format) => failure_response(
                StatusCode::UNAUTHORIZED,
                format,
                &ExportFailure::new(Code::Unauthenticated, message),
            ),
            None => body_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                BodyFormat::Json,
                Bytes::from_static(
                    br#"{"code": 13, "message": "failed to marshal error message"}"#,
                ),
            ),
        };
        if let Some(cors) = &self.cors {
            let origin = request.headers.get(header::ORIGIN);
            cors.decorate(&request.method, origin, response.headers_mut());
        }
        response
    }
}

impl HttpReceiver {
    /// The collector's own plain-text answers (405, 415): `text/plain`
    /// without a charset or newline, unlike Go's `http.Error`.
    fn reject_plain(&self, reason: RejectReason, status: StatusCode, text: String) -> HttpResponse {
        self.counters.rejected(reason);
        plain_response(status, "text/plain", text)
    }

    fn reject(
        &self,
        reason: RejectReason,
        status: StatusCode,
        format: BodyFormat,
        code: Code,
        message: String,
    ) -> HttpResponse {
        self.counters.rejected(reason);
        failure_response(status, format, &ExportFailure::new(code, message))
    }

    async fn route(&self, request: &Parts, body: &mut Incoming) -> HttpResponse {
        if request.uri.path() != self.traces_path {
            // tracegate has no metrics or logs pipelines, so their paths are
            // as unknown as any other (Go's ServeMux answer).
            self.counters.rejected(RejectReason::NotFound);
            return text_response(StatusCode::NOT_FOUND, "404 page not found");
        }
        if request.method != Method::POST {
            let mut response = self.reject_plain(
                RejectReason::MethodNotAllowed,
                StatusCode::METHOD_NOT_ALLOWED,
                "405 method not allowed, supported: [POST]".into(),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        let format = match media_type(&request.headers) {
            Some(m) if m == PROTOBUF => BodyFormat::Protobuf,
            Some(m) if m == JSON => BodyFormat::Json,
            _ => {
                return self.reject_plain(
                    RejectReason::UnsupportedMediaType,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("415 unsupported media type, supported: [{JSON}, {PROTOBUF}]"),
                )
            }
        };
        let encoding = match self.content_encoding(&request.headers) {
            Ok(encoding) => encoding,
            Err(unsupported) => {
                return self.reject(
                    RejectReason::UnsupportedEncoding,
                    StatusCode::BAD_REQUEST,
                    format,
                    Code::InvalidArgument,
                    format!("unsupported Content-Encoding: {unsupported}"),
                )
            }
        };
        // The collector reads the body through Go's MaxBytesReader, whose
        // error is answered like any unreadable body: 400, INVALID_ARGUMENT.
        let too_large = |what: &str| {
            self.reject(
                RejectReason::TooLarge,
                StatusCode::BAD_REQUEST,
                format,
                Code::InvalidArgument,
                format!(
                    "{what} exceeds max_request_body_size of {} bytes",
                    self.max_body_size
                ),
            )
        };
        let raw = match read_capped(body, self.max_body_size, &request.headers).await {
            Ok(raw) => raw,
            Err(BodyError::TooLarge) => return too_large("request body"),
            Err(BodyError::Read(e)) => {
                return self.reject(
                    RejectReason::Malformed,
                    StatusCode::BAD_REQUEST,
                    format,
                    Code::InvalidArgument,
                    format!("failed to read request body: {e}"),
                )
            }
        };
        // A protobuf body is scanned where it is, so the gzip members it
        // arrived in can go with its batch; JSON is re-encoded.
        let decompressed = match format {
            BodyFormat::Protobuf => {
                decompress_capped_members(encoding, raw, self.max_body_size).await
            }
            BodyFormat::Json => decompress_capped(encoding, raw, self.max_body_size)
                .await
                .map(|body| (body, Vec::new())),
        };
        let (body, gzip) = match decompressed {
            Ok(decompressed) => decompressed,
            Err(DecompressError::TooLarge { .. }) => return too_large("decompressed request body"),
            Err(e @ DecompressError::Corrupt { .. }) => {
                return self.reject(
                    RejectReason::Malformed,
                    StatusCode::BAD_REQUEST,
                    format,
                    Code::InvalidArgument,
                    e.to_string(),
                )
            }
        };
        let batch = match format.decode(body.clone(), self.indexing).await {
            Ok(mut batch) => {
                if !gzip.is_empty() {
                    batch.set_gzip_members(&body, gzip);
                }
                batch
            }
            Err(message) => {
                return self.reject(
                    RejectReason::Malformed,
                    StatusCode::BAD_REQUEST,
                    format,
                    Code::InvalidArgument,
                    message,
                )
            }
        };
        match self.counters.export(&self.next, batch).await {
            Ok(()) => body_response(StatusCode::OK, format, format.success_body()),
            Err(e) => {
                let failure = ExportFailure::from(e);
                failure_response(http_status(failure.code), format, &failure)
            }
        }
    }

    /// The request's `Content-Encoding` if this receiver accepts it, else
    /// the header's text for the error message.
    fn content_encoding(&self, headers: &HeaderMap) -> Result<ContentEncoding, String> {
        let Some(value) = headers.get(header::CONTENT_ENCODING) else {
            return if self.encodings.contains(&ContentEncoding::Identity) {
                Ok(ContentEncoding::Identity)
            } else {
                Err(String::new())
            };
        };
        let text = String::from_utf8_lossy(value.as_bytes());
        ContentEncoding::from_header(&text)
            .filter(|e| self.encodings.contains(e))
            .ok_or_else(|| text.into_owned())
    }
}
