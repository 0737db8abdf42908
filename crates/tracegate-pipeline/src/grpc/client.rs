//! A unary gRPC call whose request message tracegate frames itself, so the
//! exporters choose the encoder and level of a compressed request (tonic
//! compresses gzip at level 6 with a streaming encoder, which made gzip
//! export the dearest step of the default path; benches/RESULTS.md, "The
//! gzip path"). The response is read as tonic's client reads it: the
//! status from the trailers (or a trailers-only answer), else from the
//! HTTP status; then the one message, decompressed when the server
//! compressed it.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::header::{HeaderValue, CONTENT_TYPE, TE};
use http_body_util::BodyExt;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tower::{Service, ServiceExt};

use crate::compression::{self, ContentEncoding};

/// The gRPC message header: a compressed flag and a 4-byte length.
pub(crate) const MESSAGE_HEADER: usize = 5;

/// The largest response message accepted, as tonic's default decoding
/// limit.
const MAX_RESPONSE: usize = 4 << 20;

/// Headers a caller's metadata may not set, as tonic removes them.
const RESERVED: [&str; 6] = [
    "te",
    "user-agent",
    "content-type",
    "grpc-message",
    "grpc-message-type",
    "grpc-status",
];

/// Writes the message header in front of a message laid out after
/// [`MESSAGE_HEADER`] reserved bytes at the start of `frame`.
pub(crate) fn finish_frame(mut frame: Vec<u8>, compressed: bool) -> Result<Bytes, Status> {
    let len = frame.len() - MESSAGE_HEADER;
    let len = u32::try_from(len)
        .map_err(|_| Status::out_of_range(format!("message of {len} bytes is too large")))?;
    frame[0] = u8::from(compressed);
    frame[1..MESSAGE_HEADER].copy_from_slice(&len.to_be_bytes());
    Ok(Bytes::from(frame))
}

/// `grpc-timeout` as grpc-go and tonic write it: at most 8 digits.
fn grpc_timeout(timeout: Duration) -> HeaderValue {
    let micros = timeout.as_micros();
    let value = if micros < 100_000_000 {
        format!("{micros}u")
    } else if timeout.as_millis() < 100_000_000 {
        format!("{}m", timeout.as_millis())
    } else {
        format!("{}S", timeout.as_secs().min(99_999_999))
    };
    HeaderValue::from_str(&value).expect("digits and a unit are a valid header value")
}

/// Calls `path` on `channel` with `frame` (a whole gRPC message, header
/// included) sent as it is; `encoding` names the compression of a
/// compressed message (`grpc-encoding`). Returns the response message.
pub(crate) async fn unary(
    channel: &Channel,
    path: &'static str,
    frame: Bytes,
    encoding: Option<&'static str>,
    metadata: &MetadataMap,
    timeout: Option<Duration>,
) -> Result<Bytes, Status> {
    let mut headers = metadata.clone().into_headers();
    for name in RESERVED {
        headers.remove(name);
    }
    headers.insert(TE, HeaderValue::from_static("trailers"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    if let Some(encoding) = encoding {
        headers.insert("grpc-encoding", HeaderValue::from_static(encoding));
    }
    if let Some(timeout) = timeout {
        headers.insert("grpc-timeout", grpc_timeout(timeout));
    }
    let mut request = http::Request::new(tonic::body::Body::new(http_body_util::Full::new(frame)));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = http::Uri::from_static(path);
    *request.version_mut() = http::Version::HTTP_2;
    *request.headers_mut() = headers;

    let mut channel = channel.clone();
    channel.ready().await.map_err(|e| {
        let mut status = Status::unavailable(format!("connection not ready: {e}"));
        status.set_source(std::sync::Arc::new(e));
        status
    })?;
    let response = channel
        .call(request)
        .await
        .map_err(|e| Status::from_error(Box::new(e)))?;
    let (parts, body) = response.into_parts();
    if let Some(status) = Status::from_header_map(&parts.headers) {
        // A trailers-only answer.
        if status.code() != Code::Ok {
            return Err(status);
        }
        return Err(Status::internal("Missing response message."));
    }
    let collected = body.collect().await?;
    let status = match collected.trailers().and_then(Status::from_header_map) {
        Some(status) => status,
        None => status_of_http(parts.status),
    };
    if status.code() != Code::Ok {
        return Err(status);
    }
    let mut data = collected.to_bytes();
    if data.len() < MESSAGE_HEADER {
        return Err(Status::internal("Missing response message."));
    }
    let compressed = data.get_u8();
    let len = data.get_u32() as usize;
    if len > MAX_RESPONSE {
        return Err(Status::out_of_range(format!(
            "response message of {len} bytes exceeds the limit of {MAX_RESPONSE}"
        )));
    }
    if data.len() < len {
        return Err(Status::internal("response message cut short"));
    }
    let message = data.split_to(len);
    match compressed {
        0 => Ok(message),
        1 => {
            let encoding = parts
                .headers
                .get("grpc-encoding")
                .and_then(|v| v.to_str().ok())
                .and_then(ContentEncoding::from_header)
                .filter(|e| matches!(e, ContentEncoding::Gzip | ContentEncoding::Zstd))
                .ok_or_else(|| {
                    Status::internal("compressed response without a supported grpc-encoding")
                })?;
            compression::decompress(encoding, message, MAX_RESPONSE)
                .map_err(|e| Status::internal(format!("Error decompressing: {e}")))
        }
        flag => Err(Status::internal(format!(
            "invalid compression flag {flag} in the response"
        ))),
    }
}

/// The gRPC code of an answer without `grpc-status`, per gRPC's HTTP to
/// gRPC status mapping (as tonic infers it).
fn status_of_http(status: http::StatusCode) -> Status {
    let code = match status {
        http::StatusCode::BAD_REQUEST => Code::Internal,
        http::StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        http::StatusCode::FORBIDDEN => Code::PermissionDenied,
        http::StatusCode::NOT_FOUND => Code::Unimplemented,
        http::StatusCode::TOO_MANY_REQUESTS
        | http::StatusCode::BAD_GATEWAY
        | http::StatusCode::SERVICE_UNAVAILABLE
        | http::StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        http::StatusCode::OK => {
            return Status::unknown("protocol error: missing grpc-status trailer");
        }
        _ => Code::Unknown,
    };
    Status::new(code, format!("HTTP status {status} without grpc-status"))
}

/// Reserves the message header in a buffer the message is then written
/// after.
pub(crate) fn frame_buffer(capacity: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(MESSAGE_HEADER + capacity);
    frame.put_bytes(0, MESSAGE_HEADER);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_written_in_at_most_eight_digits() {
        assert_eq!(grpc_timeout(Duration::from_secs(5)), "5000000u");
        assert_eq!(grpc_timeout(Duration::from_secs(1000)), "1000000m");
        assert_eq!(grpc_timeout(Duration::from_secs(200_000)), "200000S");
    }

    #[test]
    fn the_frame_header_states_the_flag_and_length() {
        let mut frame = frame_buffer(3);
        frame.extend_from_slice(b"abc");
        let frame = finish_frame(frame, true).unwrap();
        assert_eq!(&frame[..], b"\x01\x00\x00\x00\x03abc");
    }
}
