//! OTLP → Jaeger `api_v2`, as the collector's `ProtoFromTraces`: one `Batch`
//! per ResourceSpans, spans of every scope flattened into it.

use prost_types::{Duration, Timestamp};

use super::proto::{self, SpanRefType, ValueType};
use super::tags;
use crate::otlp::{
    any_value, AnyValue, ExportTraceServiceRequest, InstrumentationScope, KeyValue,
    ProtoStatusCode, Resource, ResourceSpans, Span, SpanKind,
};
use crate::SpanBatch;

/// The batch's spans as Jaeger batches. Decodes the batch (its kept spans
/// only: a subset's bytes hold nothing else).
pub fn batches_from_span_batch(batch: &SpanBatch) -> Vec<proto::Batch> {
    batches_from_request(batch.to_request())
}

/// One Jaeger `Batch` per ResourceSpans that has attributes or scopes. Takes
/// the request by value: its strings and bytes move into the tags.
pub fn batches_from_request(request: ExportTraceServiceRequest) -> Vec<proto::Batch> {
    request
        .resource_spans
        .into_iter()
        .filter_map(batch_from_resource_spans)
        .collect()
}

fn batch_from_resource_spans(rs: ResourceSpans) -> Option<proto::Batch> {
    let no_attributes = rs.resource.as_ref().is_none_or(|r| r.attributes.is_empty());
    if no_attributes && rs.scope_spans.is_empty() {
        return None;
    }
    let mut spans = Vec::with_capacity(rs.scope_spans.iter().map(|ss| ss.spans.len()).sum());
    for ss in rs.scope_spans {
        let scope = ss.scope;
        spans.extend(ss.spans.into_iter().map(|s| span(s, scope.as_ref())));
    }
    Some(proto::Batch {
        spans,
        process: Some(process(rs.resource)),
    })
}

fn process(resource: Option<Resource>) -> proto::Process {
    let attributes = resource.map(|r| r.attributes).unwrap_or_default();
    if attributes.is_empty() {
        return proto::Process {
            service_name: tags::NO_SERVICE_NAME.to_string(),
            tags: Vec::new(),
        };
    }
    let mut service_name = String::new();
    let mut process_tags = Vec::with_capacity(attributes.len());
    for kv in attributes {
        if kv.key == "service.name" {
            service_name = value_as_string(kv.value.as_ref());
        } else {
            process_tags.push(tag(kv));
        }
    }
    proto::Process {
        service_name,
        tags: process_tags,
    }
}

/// What the collector's `Value.Str()` gives for service.name: the string, or
/// empty for any other type.
pub(super) fn value_as_string(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        _ => String::new(),
    }
}

fn string_tag(key: &str, value: &str) -> proto::KeyValue {
    proto::KeyValue {
        key: key.to_string(),
        v_type: ValueType::String as i32,
        v_str: value.to_string(),
        ..Default::default()
    }
}

/// An attribute as a tag: maps and arrays become their JSON text.
pub(super) fn tag(kv: KeyValue) -> proto::KeyValue {
    let mut tag = proto::KeyValue {
        key: kv.key,
        ..Default::default()
    };
    match kv.value.and_then(|v| v.value) {
        None => {}
        Some(any_value::Value::StringValue(s)) => tag.v_str = s,
        Some(any_value::Value::BoolValue(b)) => {
            tag.v_type = ValueType::Bool as i32;
            tag.v_bool = b;
        }
        Some(any_value::Value::IntValue(i)) => {
            tag.v_type = ValueType::Int64 as i32;
            tag.v_int64 = i;
        }
        Some(any_value::Value::DoubleValue(d)) => {
            tag.v_type = ValueType::Float64 as i32;
            tag.v_float64 = d;
        }
        Some(any_value::Value::BytesValue(b)) => {
            tag.v_type = ValueType::Binary as i32;
            tag.v_binary = b;
        }
        Some(v @ (any_value::Value::ArrayValue(_) | any_value::Value::KvlistValue(_))) => {
            tag.v_str = json_text(&v);
        }
        // A string-valued reference into a profile dictionary; spans carry none.
        #[allow(unreachable_patterns)]
        Some(_) => {}
    }
    tag
}

/// The collector's `Value.AsString()` of a map or array: JSON with map keys
/// sorted (Go's encoding of a map) and bytes as base64.
fn json_text(value: &any_value::Value) -> String {
    let mut out = String::new();
    // Go's json.Marshal fails on NaN and infinities, and AsString then
    // gives the empty string.
    match write_json(&mut out, Some(value)) {
        Ok(()) => out,
        Err(NotFinite) => String::new(),
    }
}

struct NotFinite;

/// Writes `value` as Go's encoding/json writes the `AsRaw()` form: map keys
/// sorted (a repeated key keeps its last value), bytes as base64, HTML
/// characters escaped, floats in Go's shortest form.
fn write_json(out: &mut String, value: Option<&any_value::Value>) -> Result<(), NotFinite> {
    use std::fmt::Write;
    match value {
        None => out.push_str("null"),
        Some(any_value::Value::StringValue(s)) => write_json_string(out, s),
        Some(any_value::Value::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(any_value::Value::IntValue(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(any_value::Value::DoubleValue(d)) => write_go_float(out, *d)?,
        Some(any_value::Value::BytesValue(b)) => {
            out.push('"');
            out.push_str(&base64(b));
            out.push('"');
        }
        Some(any_value::Value::ArrayValue(a)) => {
            out.push('[');
            for (i, v) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, v.value.as_ref())?;
            }
            out.push(']');
        }
        Some(any_value::Value::KvlistValue(l)) => {
            let map: std::collections::BTreeMap<&str, Option<&any_value::Value>> = l
                .values
                .iter()
                .map(|kv| {
                    (
                        kv.key.as_str(),
                        kv.value.as_ref().and_then(|v| v.value.as_ref()),
                    )
                })
                .collect();
            out.push('{');
            for (i, (key, v)) in map.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(out, key);
                out.push(':');
                write_json(out, v)?;
            }
            out.push('}');
        }
        #[allow(unreachable_patterns)]
        Some(_) => out.push_str("null"),
    }
    Ok(())
}

/// Go's JSON string escaping with HTML escaping on (json.Marshal's).
fn write_json_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 || c == '<' || c == '>' || c == '&' => {
                let b = c as u32 as usize;
                out.push_str("\\u00");
                out.push(HEX[b >> 4] as char);
                out.push(HEX[b & 15] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Go's `float64` JSON form: shortest digits, plain notation unless the
/// magnitude is below 1e-6 or at least 1e21, exponents as `e+21`, `e-7`.
fn write_go_float(out: &mut String, f: f64) -> Result<(), NotFinite> {
    use std::fmt::Write;
    if !f.is_finite() {
        return Err(NotFinite);
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let text = format!("{f:e}");
        match text.split_once('e') {
            Some((mantissa, exponent)) if !exponent.starts_with('-') => {
                let _ = write!(out, "{mantissa}e+{exponent}");
            }
            _ => out.push_str(&text),
        }
    } else {
        let _ = write!(out, "{f}");
    }
    Ok(())
}

/// Standard base64 with padding, as Go's encoding/json writes `[]byte`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Nanoseconds since the epoch as a protobuf Timestamp.
pub(super) fn timestamp(unix_nanos: u64) -> Timestamp {
    Timestamp {
        seconds: (unix_nanos / 1_000_000_000) as i64,
        nanos: (unix_nanos % 1_000_000_000) as i32,
    }
}

/// `end - start` exactly; seconds and nanos share a sign, as protobuf wants.
pub(super) fn duration(start: u64, end: u64) -> Duration {
    let nanos = i128::from(end) - i128::from(start);
    Duration {
        seconds: (nanos / 1_000_000_000) as i64,
        nanos: (nanos % 1_000_000_000) as i32,
    }
}

fn span(span: Span, scope: Option<&InstrumentationScope>) -> proto::Span {
    let mut references = Vec::with_capacity(span.links.len() + 1);
    let has_parent = span.parent_span_id.iter().any(|b| *b != 0);
    if has_parent {
        // First, because backends take the first CHILD_OF as the parent.
        references.push(proto::SpanRef {
            trace_id: id(&span.trace_id, 16),
            span_id: id(&span.parent_span_id, 8),
            ref_type: SpanRefType::ChildOf as i32,
        });
    }
    for link in &span.links {
        let ref_type = link_ref_type(&link.attributes);
        if has_parent && link.trace_id == span.trace_id && link.span_id == span.parent_span_id {
            // The parent again: the link's type wins, no second reference.
            references[0].ref_type = ref_type as i32;
            continue;
        }
        references.push(proto::SpanRef {
            trace_id: id(&link.trace_id, 16),
            span_id: id(&link.span_id, 8),
            ref_type: ref_type as i32,
        });
    }

    let mut span_tags = Vec::with_capacity(span.attributes.len() + 6);
    if let Some(scope) = scope {
        if !scope.name.is_empty() {
            span_tags.push(string_tag(tags::SCOPE_NAME, &scope.name));
        }
        if !scope.version.is_empty() {
            span_tags.push(string_tag(tags::SCOPE_VERSION, &scope.version));
        }
    }
    span_tags.extend(span.attributes.into_iter().map(tag));
    let kind = match SpanKind::try_from(span.kind) {
        Ok(SpanKind::Client) => Some("client"),
        Ok(SpanKind::Server) => Some("server"),
        Ok(SpanKind::Producer) => Some("producer"),
        Ok(SpanKind::Consumer) => Some("consumer"),
        Ok(SpanKind::Internal) => Some("internal"),
        _ => None,
    };
    if let Some(kind) = kind {
        span_tags.push(string_tag(tags::SPAN_KIND, kind));
    }
    let status = span.status.as_ref();
    let code = status.map(|s| s.code).unwrap_or_default();
    if code == ProtoStatusCode::Error as i32 {
        span_tags.push(string_tag(tags::STATUS_CODE, "ERROR"));
        span_tags.push(proto::KeyValue {
            key: tags::ERROR.to_string(),
            v_type: ValueType::Bool as i32,
            v_bool: true,
            ..Default::default()
        });
    } else if code == ProtoStatusCode::Ok as i32 {
        span_tags.push(string_tag(tags::STATUS_CODE, "OK"));
    }
    if let Some(message) = status.map(|s| s.message.as_str()).filter(|m| !m.is_empty()) {
        span_tags.push(string_tag(tags::STATUS_DESCRIPTION, message));
    }
    if !span.trace_state.is_empty() {
        span_tags.push(string_tag(tags::TRACE_STATE, &span.trace_state));
    }

    let logs = span
        .events
        .into_iter()
        .map(|event| {
            let mut fields = Vec::with_capacity(event.attributes.len() + 1);
            // An `event` attribute says the name already.
            if !event.name.is_empty() && !event.attributes.iter().any(|a| a.key == tags::EVENT) {
                fields.push(string_tag(tags::EVENT, &event.name));
            }
            fields.extend(event.attributes.into_iter().map(tag));
            proto::Log {
                timestamp: Some(timestamp(event.time_unix_nano)),
                fields,
            }
        })
        .collect();

    proto::Span {
        trace_id: id(&span.trace_id, 16),
        span_id: id(&span.span_id, 8),
        operation_name: span.name,
        references,
        flags: 0,
        start_time: Some(timestamp(span.start_time_unix_nano)),
        duration: Some(duration(span.start_time_unix_nano, span.end_time_unix_nano)),
        tags: span_tags,
        logs,
        process: None,
        process_id: String::new(),
        warnings: Vec::new(),
    }
}

/// An OTLP id as Jaeger's fixed-size big-endian id: a missing (empty) id
/// is all zeros, as the collector's `[16]byte` and `[8]byte` ids are.
fn id(bytes: &[u8], len: usize) -> Vec<u8> {
    if bytes.len() == len {
        bytes.to_vec()
    } else {
        vec![0; len]
    }
}

/// A link's `opentracing.ref_type` says CHILD_OF or FOLLOWS_FROM; links
/// without one are FOLLOWS_FROM.
fn link_ref_type(attributes: &[KeyValue]) -> SpanRefType {
    match attributes.iter().find(|a| a.key == tags::REF_TYPE) {
        Some(kv) if value_as_string(kv.value.as_ref()) == "child_of" => SpanRefType::ChildOf,
        _ => SpanRefType::FollowsFrom,
    }
}

#[cfg(test)]
pub(super) fn base64_for_tests(bytes: &[u8]) -> String {
    base64(bytes)
}
