//! OTLP/JSON in and out, through `opentelemetry-proto`'s serde types.
//!
//! What that crate accepts is what we accept: lowerCamelCase keys only,
//! trace/span ids as hex strings (either case), 64-bit integers as strings
//! or numbers, enums as numbers only (names are refused, as the OTLP spec
//! demands), unknown keys ignored.
//!
//! Output is canonical OTLP/JSON: lowerCamelCase keys, ids as lowercase hex,
//! enums as numbers, 64-bit integers as strings, and fields that hold their
//! default value (empty strings, zeros, `false`, empty lists, unset or empty
//! messages) left out rather than written as `""`, `0` or `null`. The one
//! exception is `AnyValue`'s oneof, whose set field is written even when it
//! holds a default (`{"stringValue": ""}` is not an empty value), with an
//! empty array or key-value list as `{"values": []}`, since the reader
//! requires that field. A NaN or
//! infinite double attribute comes out as `null` (serde_json has no other
//! spelling, and that crate's parser takes no "NaN" string), so it reads
//! back as an empty value.

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
    // The collector's reader (jsoniter's ReadObject) takes a bare `null` as
    // an object with no fields: an empty request, answered as one.
    if json.trim_ascii() == b"null" {
        return Ok(SpanBatch::from_request(
            &ExportTraceServiceRequest::default(),
        ));
    }
    // serde reads a struct from a list too (fields by position), so `[]`
    // would be an empty request; protobuf's JSON mapping, and so the
    // collector, takes a message only as an object.
    // (Other non-objects are refused by serde itself.)
    if json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(JsonError::Invalid {
            path: ".".into(),
            message: "invalid type: array, expected an ExportTraceServiceRequest object".into(),
        });
    }
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
    let mut value = serde_json::to_value(request).unwrap_or_default();
    omit_defaults(&mut value);
    serde_json::to_vec(&value).unwrap_or_default()
}

/// The fields of `AnyValue`'s oneof: set, they are written whatever they
/// hold.
const ONEOF_FIELDS: &[&str] = &[
    "stringValue",
    "boolValue",
    "intValue",
    "doubleValue",
    "arrayValue",
    "kvlistValue",
    "bytesValue",
    "stringValueStrindex",
];

/// Removes, at every depth, the object fields that hold their default
/// value, and says whether `value` itself is one. List items are kept (a
/// list's length is data), though their fields are pruned too.
fn omit_defaults(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Null => true,
        Value::Bool(b) => !*b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(items) => {
            for item in items.iter_mut() {
                omit_defaults(item);
            }
            items.is_empty()
        }
        Value::Object(fields) => {
            let is_list_value = |key: &str| key == "arrayValue" || key == "kvlistValue";
            fields.retain(|key, field| {
                let default = omit_defaults(field)
                    // fixed64 times are strings, "0" their default.
                    || (key.ends_with("UnixNano") && field.as_str() == Some("0"));
                if is_list_value(key) {
                    // opentelemetry-proto's reader (and so tracegate's)
                    // wants an empty list's `values` written.
                    if let Value::Object(list) = field {
                        list.entry("values").or_insert(Value::Array(Vec::new()));
                    }
                }
                !default || ONEOF_FIELDS.contains(&key.as_str())
            });
            fields.is_empty()
        }
    }
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
