//! OTLP/JSON in and out, through `opentelemetry-proto`'s serde types.
//!
//! What that crate accepts is what we accept: lowerCamelCase keys only,
//! trace/span ids as hex strings (either case), 64-bit integers as strings
//! or numbers, enums as numbers only (names are refused, as the OTLP spec
//! demands), unknown keys ignored. On output 64-bit integers are strings and
//! ids lowercase hex. A NaN or infinite double attribute comes out as `null`
//! (serde_json has no other spelling, and that crate's parser takes no
//! "NaN" string), so it reads back as an empty value.

use bytes::Bytes;
use prost::Message;

use crate::batch::SpanBatch;
use crate::otlp::ExportTraceServiceRequest;
use crate::scan::ScanError;

/// Why an OTLP/JSON request was refused. The message is meant for the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JsonError {
    /// Not JSON, or JSON that does not have the shape of the request.
    #[error("invalid OTLP/JSON at {path}: {message}")]
    Invalid { path: String, message: String },
    /// A field has a value OTLP does not allow.
    #[error("invalid OTLP/JSON at {path}: {what}")]
    Value { path: String, what: &'static str },
    /// Valid JSON whose protobuf form the scanner refuses (nesting too deep).
    #[error("invalid OTLP/JSON: {0}")]
    Scan(#[from] ScanError),
}

pub(crate) fn from_json(json: &[u8]) -> Result<SpanBatch, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let request: ExportTraceServiceRequest =
        serde_path_to_error::deserialize(&mut de).map_err(|e| JsonError::Invalid {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
    de.end().map_err(|e| JsonError::Invalid {
        path: ".".into(),
        message: e.to_string(),
    })?;
    check_ids(&request)?;
    Ok(SpanBatch::scan(Bytes::from(request.encode_to_vec()))?)
}

pub(crate) fn to_json(request: &ExportTraceServiceRequest) -> Vec<u8> {
    // Serializing these types cannot fail: every map key is a string.
    serde_json::to_vec(request).unwrap_or_default()
}

/// The scanner would refuse ids of the wrong length too, but with a byte
/// offset into the protobuf form; a JSON client needs the JSON path.
fn check_ids(request: &ExportTraceServiceRequest) -> Result<(), JsonError> {
    fn check(
        bytes: &[u8],
        len: usize,
        what: &'static str,
        path: impl FnOnce() -> String,
    ) -> Result<(), JsonError> {
        if bytes.is_empty() || bytes.len() == len {
            Ok(())
        } else {
            Err(JsonError::Value { path: path(), what })
        }
    }
    const TRACE_ID: &str = "a trace id must be 32 hex digits (16 bytes) or empty";
    const SPAN_ID: &str = "a span id must be 16 hex digits (8 bytes) or empty";
    for (r, rs) in request.resource_spans.iter().enumerate() {
        for (s, ss) in rs.scope_spans.iter().enumerate() {
            for (p, span) in ss.spans.iter().enumerate() {
                let at = || format!("resourceSpans[{r}].scopeSpans[{s}].spans[{p}]");
                check(&span.trace_id, 16, TRACE_ID, || at() + ".traceId")?;
                check(&span.span_id, 8, SPAN_ID, || at() + ".spanId")?;
                check(&span.parent_span_id, 8, SPAN_ID, || at() + ".parentSpanId")?;
                for (l, link) in span.links.iter().enumerate() {
                    check(&link.trace_id, 16, TRACE_ID, || {
                        format!("{}.links[{l}].traceId", at())
                    })?;
                    check(&link.span_id, 8, SPAN_ID, || {
                        format!("{}.links[{l}].spanId", at())
                    })?;
                }
            }
        }
    }
    Ok(())
}
