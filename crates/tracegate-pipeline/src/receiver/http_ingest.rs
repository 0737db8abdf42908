//! The request side shared by the receivers that take spans over HTTP:
//! the hyper service in front of a receiver's handler, the media type of a
//! request, the body size limit's default, the body read with its size
//! capped before and after decompression, and Go's plain-text answers, as
//! the collector's receivers give them. Zipkin and Jaeger's `thrift_http`
//! take the whole of it through [`read_body`], which answers a body that
//! cannot be had in plain text; OTLP/HTTP answers in the request's own
//! encoding, so it calls the two steps ([`read_capped`],
//! [`decompress_capped`]) itself.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::counters::{RejectReason, TransportCounters};
use crate::auth::ServerAuth;
use crate::compression::{decompress, gunzip_members, ContentEncoding, DecompressError};
use crate::offload;

/// Default `max_request_body_size` of every HTTP protocol: 20 MiB, as
/// `confighttp`.
pub const DEFAULT_MAX_REQUEST_BODY_SIZE: u64 = 20 * 1024 * 1024;

/// A configured `max_request_body_size` in bytes, 0 meaning the default.
pub(crate) fn body_size_limit(configured: u64) -> usize {
    let size = match configured {
        0 => DEFAULT_MAX_REQUEST_BODY_SIZE,
        size => size,
    };
    usize::try_from(size).unwrap_or(usize::MAX)
}

pub(crate) type HttpResponse = Response<Full<Bytes>>;

/// A receiver's answer to one HTTP request.
pub(crate) trait HttpHandler: Send + Sync + 'static {
    fn handle(&self, request: Request<Incoming>) -> impl Future<Output = HttpResponse> + Send;

    /// Whether the request is answered without authentication (a CORS
    /// preflight, which the collector's CORS handler answers before its
    /// authenticator sees the request). Default: none is.
    fn before_auth(&self, _request: &Parts) -> bool {
        false
    }

    /// The answer to a request the protocol's `auth` refused, with the
    /// authenticator's `message`. Default: Go's `http.Error` with 401, as
    /// the collector's `confighttp` answers when the receiver has no error
    /// handler of its own.
    fn unauthenticated(&self, _request: &Parts, message: &str) -> HttpResponse {
        text_response(StatusCode::UNAUTHORIZED, message)
    }
}

/// A protocol's `auth`, and the counters its refusals are counted in.
pub(crate) struct AuthGate {
    pub auth: ServerAuth,
    pub counters: TransportCounters,
}

impl AuthGate {
    /// Checks a request's credentials; a refusal is counted
    /// (`reason="unauthenticated"`).
    pub async fn check(&self, headers: &HeaderMap, uri: &http::Uri) -> Result<(), String> {
        let checked = self.auth.check(headers, uri).await;
        if checked.is_err() {
            self.counters.rejected(RejectReason::Unauthenticated);
        }
        checked
    }
}

/// The hyper service of one HTTP listener: every request goes to `H`,
/// once its credentials passed the protocol's `auth` (if any).
pub(crate) struct HttpService<H> {
    handler: Arc<H>,
    auth: Option<Arc<AuthGate>>,
}

impl<H> HttpService<H> {
    pub fn new(handler: H, auth: Option<AuthGate>) -> Self {
        HttpService {
            handler: Arc::new(handler),
            auth: auth.map(Arc::new),
        }
    }
}

impl<H> Clone for HttpService<H> {
    fn clone(&self) -> Self {
        HttpService {
            handler: self.handler.clone(),
            auth: self.auth.clone(),
        }
    }
}

impl<H: HttpHandler> hyper::service::Service<Request<Incoming>> for HttpService<H> {
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let receiver = self.handler.clone();
        let auth = self.auth.clone();
        Box::pin(async move {
            if let Some(gate) = auth {
                let (parts, body) = request.into_parts();
                if !receiver.before_auth(&parts) {
                    if let Err(message) = gate.check(&parts.headers, &parts.uri).await {
                        if !body.is_end_stream() {
                            tokio::spawn(drain(body));
                        }
                        return Ok(receiver.unauthenticated(&parts, &message));
                    }
                }
                return Ok(receiver.handle(Request::from_parts(parts, body)).await);
            }
            Ok(receiver.handle(request).await)
        })
    }
}

/// After answering early (400, 401, 404, ...) the rest of the body is read
/// and discarded, up to this much and this long, so the client can finish
/// sending and read the answer instead of failing on a reset connection.
const DRAIN_LIMIT: usize = 256 * 1024 * 1024;
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads and drops what is left of a body the answer did not need.
pub(crate) async fn drain(mut body: Incoming) {
    let mut left = DRAIN_LIMIT;
    let deadline = tokio::time::sleep(DRAIN_TIMEOUT);
    tokio::pin!(deadline);
    loop {
        let frame = tokio::select! {
            _ = &mut deadline => return,
            frame = body.frame() => frame,
        };
        match frame {
            Some(Ok(frame)) => {
                let len = frame.data_ref().map_or(0, Bytes::len);
                if len >= left {
                    return;
                }
                left -= len;
            }
            _ => return,
        }
    }
}

/// The media type of `Content-Type`, lowercased, without parameters (as
/// Go's `mime.ParseMediaType`).
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let media = value.split(';').next()?.trim().to_ascii_lowercase();
    (!media.is_empty()).then_some(media)
}

/// A plain-text answer with `content_type` (`text/plain`, with or without
/// a charset).
pub(crate) fn plain_response(
    status: StatusCode,
    content_type: &'static str,
    text: impl Into<Bytes>,
) -> HttpResponse {
    let mut response = Response::new(Full::new(text.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Go's `http.Error` (and so `http.NotFound`): the text and a newline, as
/// plain text with a charset, not to be sniffed.
pub(crate) fn text_response(status: StatusCode, text: &str) -> HttpResponse {
    let mut response = plain_response(status, "text/plain; charset=utf-8", format!("{text}\n"));
    response.headers_mut().insert(
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

/// Why a body could not be read.
pub(crate) enum BodyError {
    /// Its `Content-Length`, or what arrived, passed the limit.
    TooLarge,
    Read(hyper::Error),
}

/// Reads the raw body, refusing it once it passes `limit` bytes, or at
/// once when its `Content-Length` says it will. The buffer grows by exact
/// reservations (the `Content-Length` first), so it never holds more than
/// `limit`; a body that arrives in one frame is kept as is, without a
/// copy. The body is borrowed, so that what a refused request still
/// sends can be drained.
pub(crate) async fn read_capped(
    body: &mut Incoming,
    limit: usize,
    headers: &HeaderMap,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut first: Option<Bytes> = None;
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let held = first.as_ref().map_or(buf.len(), Bytes::len);
        if held + data.len() > limit {
            return Err(BodyError::TooLarge);
        }
        if first.is_none() && buf.is_empty() {
            first = Some(data);
            continue;
        }
        if let Some(first) = first.take() {
            let expected = declared.map_or(0, |h| usize::try_from(h).unwrap_or(usize::MAX));
            buf.reserve_exact(expected.clamp(first.len() + data.len(), limit));
            buf.extend_from_slice(&first);
        }
        if buf.capacity() - buf.len() < data.len() {
            let wanted = (buf.capacity() * 2).clamp(buf.len() + data.len(), limit);
            buf.reserve_exact(wanted - buf.len());
        }
        buf.extend_from_slice(&data);
    }
    Ok(first.unwrap_or_else(|| Bytes::from(buf)))
}

/// Decompresses a raw body per `encoding`, capped at `limit` bytes; a
/// large body is decompressed on the blocking pool ([`offload`]).
pub(crate) async fn decompress_capped(
    encoding: ContentEncoding,
    raw: Bytes,
    limit: usize,
) -> Result<Bytes, DecompressError> {
    if encoding == ContentEncoding::Identity {
        return decompress(encoding, raw, limit);
    }
    offload::by_size(raw.len(), offload::COMPRESSED_BYTES, move || {
        decompress(encoding, raw, limit)
    })
    .await
    .unwrap_or_else(|message| {
        Err(DecompressError::Corrupt {
            encoding: encoding.name(),
            message,
        })
    })
}

/// A raw body decompressed as [`decompress_capped`] does it, with the gzip
/// members it was made of (each with the offset of its data) when it came
/// gzip-compressed, for a batch that holds the body as it is
/// (`SpanBatch::set_gzip_members`), so an exporter can send it on
/// compressed as it came.
pub(crate) async fn decompress_capped_members(
    encoding: ContentEncoding,
    raw: Bytes,
    limit: usize,
) -> Result<(Bytes, Vec<(usize, tracegate_gzip::Member)>), DecompressError> {
    if encoding != ContentEncoding::Gzip {
        return decompress_capped(encoding, raw, limit)
            .await
            .map(|body| (body, Vec::new()));
    }
    offload::by_size(raw.len(), offload::COMPRESSED_BYTES, move || {
        gunzip_members(&raw, limit)
    })
    .await
    .unwrap_or_else(|message| {
        Err(DecompressError::Corrupt {
            encoding: encoding.name(),
            message,
        })
    })
}

/// Reads the body up to `limit` bytes and decompresses it per its
/// `Content-Encoding` (see [`ContentEncoding`]), again up to `limit`. A
/// body that cannot be had is counted in `counters` and answered:
/// `too_large` (the receiver's answer to Go's `MaxBytesReader` error) when
/// too large, 400 for an unknown encoding, and 400 with
/// `{malformed_prefix}{what is wrong}` for one that does not read or
/// decompress.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    mut body: Incoming,
    limit: usize,
    counters: &TransportCounters,
    malformed_prefix: &str,
    too_large: StatusCode,
) -> Result<Bytes, HttpResponse> {
    let reject = |reason, status, text: &str| {
        counters.rejected(reason);
        text_response(status, text)
    };
    let too_large = || {
        reject(
            RejectReason::TooLarge,
            too_large,
            &format!(
                "{malformed_prefix}request body exceeds max_request_body_size of {limit} bytes"
            ),
        )
    };
    let malformed = |message: String| {
        reject(
            RejectReason::Malformed,
            StatusCode::BAD_REQUEST,
            &format!("{malformed_prefix}{message}"),
        )
    };
    let encoding = match headers.get(header::CONTENT_ENCODING) {
        None => ContentEncoding::Identity,
        Some(value) => {
            let text = String::from_utf8_lossy(value.as_bytes());
            ContentEncoding::from_header(&text).ok_or_else(|| {
                reject(
                    RejectReason::UnsupportedEncoding,
                    StatusCode::BAD_REQUEST,
                    &format!("unsupported Content-Encoding: {text}"),
                )
            })?
        }
    };
    let raw = match read_capped(&mut body, limit, headers).await {
        Ok(raw) => raw,
        Err(BodyError::TooLarge) => return Err(too_large()),
        Err(BodyError::Read(e)) => {
            return Err(malformed(format!("failed to read request body: {e}")))
        }
    };
    decompress_capped(encoding, raw, limit)
        .await
        .map_err(|e| match e {
            DecompressError::TooLarge { .. } => too_large(),
            other => malformed(other.to_string()),
        })
}
