//! The request side shared by the receivers that take spans over HTTP:
//! the hyper service in front of a receiver's handler, the media type of a
//! request, the body size limit's default, and for Zipkin and Jaeger's
//! `thrift_http` a body read with its size capped before and after
//! decompression and Go's plain-text answers, as the collector's receivers
//! give them. (OTLP/HTTP answers in the request's own encoding and reads
//! its body its own way.)

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::counters::{RejectReason, TransportCounters};
use crate::compression::{decompress, ContentEncoding, DecompressError};

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
}

/// The hyper service of one HTTP listener: every request goes to `H`.
pub(crate) struct HttpService<H>(pub Arc<H>);

impl<H> Clone for HttpService<H> {
    fn clone(&self) -> Self {
        HttpService(self.0.clone())
    }
}

impl<H: HttpHandler> hyper::service::Service<Request<Incoming>> for HttpService<H> {
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let receiver = self.0.clone();
        Box::pin(async move { Ok(receiver.handle(request).await) })
    }
}

/// The media type of `Content-Type`, lowercased, without parameters (as
/// Go's `mime.ParseMediaType`).
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let media = value.split(';').next()?.trim().to_ascii_lowercase();
    (!media.is_empty()).then_some(media)
}

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

/// Reads the body up to `limit` bytes and decompresses it per its
/// `Content-Encoding` (gzip, deflate/zlib, zstd), again up to `limit`. A
/// body that cannot be had is counted in `counters` and answered: 413 when
/// too large, 400 for an unknown encoding, and 400 with
/// `{malformed_prefix}{what is wrong}` for one that does not read or
/// decompress.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
    counters: &TransportCounters,
    malformed_prefix: &str,
) -> Result<Bytes, HttpResponse> {
    let reject = |reason, status, text: &str| {
        counters.rejected(reason);
        text_response(status, text)
    };
    let too_large = || {
        reject(
            RejectReason::TooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body exceeds max_request_body_size of {limit} bytes"),
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
    let raw = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => return Err(malformed(format!("failed to read request body: {e}"))),
    };
    decompress(encoding, raw, limit).map_err(|e| match e {
        DecompressError::TooLarge { .. } => too_large(),
        other => malformed(other.to_string()),
    })
}
