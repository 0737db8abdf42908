//! `jaeger.thrift` → OTLP, following collector-contrib's
//! `jaegerthrift_to_traces.go`: one resource per batch (`service.name` and
//! the process tags, `hostname` → `host.name`, `jaeger.version` →
//! `opencensus.exporterversion`), one scope, the span's `span.kind`,
//! `error`, `otel.status_*` and `http.status_code` tags turned into kind
//! and status, logs into events named by their `event` field, references
//! other than the parent into links.

use std::collections::HashMap;

use crate::otlp::{
    any_value, span, status, AnyValue, ExportTraceServiceRequest, KeyValue, Resource,
    ResourceSpans, ScopeSpans, Status,
};

use super::model::{Batch, Log, Span, SpanRef, Tag, TagType};

const REF_CHILD_OF: i32 = 0;
const REF_FOLLOWS_FROM: i32 = 1;

/// An attribute list with pdata's map semantics: putting an existing key
/// replaces its value in place, removing keeps the others' order. The index
/// keeps a span with many tags linear.
#[derive(Default)]
struct AttrMap {
    entries: Vec<KeyValue>,
    index: HashMap<String, usize>,
}

impl AttrMap {
    fn with_capacity(n: usize) -> Self {
        AttrMap {
            entries: Vec::with_capacity(n),
            index: HashMap::with_capacity(n),
        }
    }

    fn put(&mut self, key: &str, value: any_value::Value) {
        let value = Some(AnyValue { value: Some(value) });
        match self.index.get(key) {
            Some(&at) => self.entries[at].value = value,
            None => {
                self.index.insert(key.to_string(), self.entries.len());
                self.entries.push(KeyValue {
                    key: key.to_string(),
                    value,
                    ..Default::default()
                });
            }
        }
    }

    fn get(&self, key: &str) -> Option<&any_value::Value> {
        let at = *self.index.get(key)?;
        self.entries[at].value.as_ref()?.value.as_ref()
    }

    /// pdata's `Value.Str()`: the string, or "" for any other type.
    fn get_str(&self, key: &str) -> Option<String> {
        self.get(key).map(|v| match v {
            any_value::Value::StringValue(s) => s.clone(),
            _ => String::new(),
        })
    }

    fn remove(&mut self, key: &str) -> Option<any_value::Value> {
        let at = self.index.remove(key)?;
        let kv = self.entries.remove(at);
        for i in self.index.values_mut() {
            if *i > at {
                *i -= 1;
            }
        }
        kv.value.and_then(|v| v.value)
    }

    fn into_vec(self) -> Vec<KeyValue> {
        self.entries
    }
}

fn put_tags(tags: &[Tag], attrs: &mut AttrMap) {
    for tag in tags {
        let v = &tag.value;
        let value = match tag.v_type {
            TagType::String => any_value::Value::StringValue(v.v_str.clone().unwrap_or_default()),
            TagType::Bool => any_value::Value::BoolValue(v.v_bool.unwrap_or_default()),
            TagType::Long => any_value::Value::IntValue(v.v_long.unwrap_or_default()),
            TagType::Double => any_value::Value::DoubleValue(v.v_double.unwrap_or_default()),
            TagType::Binary => any_value::Value::BytesValue(v.v_binary.clone().unwrap_or_default()),
            // What Go prints for an out-of-range TagType with %q.
            TagType::Unknown(_) => {
                any_value::Value::StringValue("<Unknown Jaeger TagType \"<UNSET>\">".into())
            }
        };
        attrs.put(&tag.key, value);
    }
}

fn trace_id(high: i64, low: i64) -> Vec<u8> {
    let mut id = Vec::with_capacity(16);
    id.extend_from_slice(&high.to_be_bytes());
    id.extend_from_slice(&low.to_be_bytes());
    id
}

fn span_id(id: i64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

/// Epoch microseconds as Go converts them: `uint64(µs) * 1000`, wrapping.
fn micros_to_nanos(us: i64) -> u64 {
    (us as u64).wrapping_mul(1000)
}

/// Converts one batch; a batch with no spans is an empty request.
pub fn batch_to_request(batch: &Batch) -> ExportTraceServiceRequest {
    let spans: Vec<crate::otlp::Span> = batch
        .spans
        .iter()
        .filter(|s| **s != Span::default())
        .map(to_span)
        .collect();
    if spans.is_empty() {
        // The collector makes a resource with no spans, which counts as
        // nothing and is dropped by every exporter.
        return ExportTraceServiceRequest::default();
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: process_attributes(batch),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn process_attributes(batch: &Batch) -> Vec<KeyValue> {
    let process = &batch.process;
    if process.service_name.is_empty() && process.tags.is_none() {
        return Vec::new();
    }
    let tags = process.tags.as_deref().unwrap_or_default();
    let mut attrs = AttrMap::with_capacity(tags.len() + 1);
    if !process.service_name.is_empty() {
        attrs.put(
            "service.name",
            any_value::Value::StringValue(process.service_name.clone()),
        );
    }
    put_tags(tags, &mut attrs);
    if let Some(hostname) = attrs.get_str("hostname") {
        if attrs.get("host.name").is_none() {
            attrs.put("host.name", any_value::Value::StringValue(hostname));
            attrs.remove("hostname");
        }
    }
    if let Some(version) = attrs.get_str("jaeger.version") {
        if attrs.get("opencensus.exporterversion").is_none() {
            attrs.put(
                "opencensus.exporterversion",
                any_value::Value::StringValue(format!("Jaeger-{version}")),
            );
            attrs.remove("jaeger.version");
        }
    }
    attrs.into_vec()
}

/// The parent: `parentSpanId`, else the first CHILD_OF reference into the
/// same trace, else the first FOLLOWS_FROM one (Jaeger's own rule).
fn parent_span_id(span: &Span) -> i64 {
    if span.parent_span_id != 0 {
        return span.parent_span_id;
    }
    let same_trace =
        |r: &&SpanRef| r.trace_id_high == span.trace_id_high && r.trace_id_low == span.trace_id_low;
    let refs = span.references.as_deref().unwrap_or_default();
    if let Some(r) = refs
        .iter()
        .filter(same_trace)
        .find(|r| r.ref_type == REF_CHILD_OF)
    {
        return r.span_id;
    }
    refs.iter()
        .filter(same_trace)
        .find(|r| r.ref_type == REF_FOLLOWS_FROM)
        .map_or(0, |r| r.span_id)
}

fn span_kind(kind: &str) -> span::SpanKind {
    match kind {
        "client" => span::SpanKind::Client,
        "server" => span::SpanKind::Server,
        "producer" => span::SpanKind::Producer,
        "consumer" => span::SpanKind::Consumer,
        "internal" => span::SpanKind::Internal,
        _ => span::SpanKind::Unspecified,
    }
}

fn to_span(span: &Span) -> crate::otlp::Span {
    let parent = parent_span_id(span);
    let mut out = crate::otlp::Span {
        trace_id: trace_id(span.trace_id_high, span.trace_id_low),
        span_id: span_id(span.span_id),
        name: span.operation_name.clone(),
        start_time_unix_nano: micros_to_nanos(span.start_time),
        end_time_unix_nano: micros_to_nanos(span.start_time.wrapping_add(span.duration)),
        ..Default::default()
    };
    if parent != 0 {
        out.parent_span_id = span_id(parent);
    }
    let tags = span.tags.as_deref().unwrap_or_default();
    let mut attrs = AttrMap::with_capacity(tags.len());
    put_tags(tags, &mut attrs);
    if let Some(kind) = attrs.get_str("span.kind") {
        out.kind = span_kind(&kind) as i32;
        attrs.remove("span.kind");
    }
    out.status = span_status(&mut attrs, out.kind);
    out.attributes = attrs.into_vec();
    out.events = span
        .logs
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(to_event)
        .collect();
    out.links = links(span.references.as_deref().unwrap_or_default(), parent);
    out
}

fn to_event(log: &Log) -> span::Event {
    let mut event = span::Event {
        time_unix_nano: micros_to_nanos(log.timestamp),
        ..Default::default()
    };
    if log.fields.is_empty() {
        return event;
    }
    let mut attrs = AttrMap::with_capacity(log.fields.len());
    put_tags(&log.fields, &mut attrs);
    if let Some(name) = attrs.get_str("event") {
        event.name = name;
        attrs.remove("event");
    }
    event.attributes = attrs.into_vec();
    event
}

fn links(refs: &[SpanRef], parent: i64) -> Vec<span::Link> {
    let is_parent = |r: &SpanRef| r.span_id == parent && r.ref_type == REF_CHILD_OF;
    refs.iter()
        .filter(|r| !is_parent(r))
        .map(|r| span::Link {
            trace_id: trace_id(r.trace_id_high, r.trace_id_low),
            span_id: span_id(r.span_id),
            attributes: vec![KeyValue {
                key: "opentracing.ref_type".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(
                        if r.ref_type == REF_CHILD_OF {
                            "child_of"
                        } else {
                            "follows_from"
                        }
                        .into(),
                    )),
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect()
}

/// The collector's `setInternalSpanStatus`: `error=true` wins, then
/// `otel.status_code`, then an HTTP status code (4xx is an error for
/// clients only, 5xx and out-of-range codes always).
fn span_status(attrs: &mut AttrMap, kind: i32) -> Option<Status> {
    let mut code = status::StatusCode::Unset;
    let mut message = String::new();
    let mut exists = false;

    if let Some(any_value::Value::BoolValue(true)) = attrs.get("error") {
        code = status::StatusCode::Error;
        attrs.remove("error");
        exists = true;
        if let Some(desc) = attrs.get_str("otel.status_description") {
            message = desc;
            attrs.remove("otel.status_description");
        } else if let Some(msg) = attrs.get_str("http.status_message") {
            message = msg;
        }
    }

    if let Some(status_code) = attrs.get_str("otel.status_code") {
        if !exists {
            exists = true;
            match status_code.to_ascii_uppercase().as_str() {
                "OK" => code = status::StatusCode::Ok,
                "ERROR" => code = status::StatusCode::Error,
                _ => {}
            }
            if let Some(desc) = attrs.get_str("otel.status_description") {
                message = desc;
                attrs.remove("otel.status_description");
            }
        }
        attrs.remove("otel.status_code");
    } else if !exists {
        if let Some(http_code) = attrs.get("http.status_code").and_then(http_code) {
            let from_http = status_from_http(http_code, kind);
            if from_http != status::StatusCode::Unset {
                exists = true;
                code = from_http;
            }
            if let Some(msg) = attrs.get_str("http.status_message") {
                message = msg;
            }
        }
    }
    exists.then_some(Status {
        code: code as i32,
        message,
    })
}

fn http_code(value: &any_value::Value) -> Option<i64> {
    match value {
        any_value::Value::IntValue(i) => Some(*i),
        any_value::Value::StringValue(s) => s.parse().ok(),
        _ => None,
    }
}

fn status_from_http(code: i64, kind: i32) -> status::StatusCode {
    if (400..500).contains(&code) {
        if kind == span::SpanKind::Client as i32 {
            return status::StatusCode::Error;
        }
        if kind == span::SpanKind::Server as i32 {
            return status::StatusCode::Unset;
        }
    }
    // 399 is an error too: the collector checks `< 399`.
    if (100..399).contains(&code) {
        status::StatusCode::Unset
    } else {
        status::StatusCode::Error
    }
}
