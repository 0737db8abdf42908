//! The one place that names `opentelemetry-proto`, so it can be swapped for
//! code generated into the repository later (docs/architecture.md, "Crates
//! and what they may depend on").

pub use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
pub use opentelemetry_proto::tonic::common::v1::EntityRef;
pub use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
pub use opentelemetry_proto::tonic::resource::v1::Resource;
pub use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
pub use opentelemetry_proto::tonic::trace::v1::status::StatusCode as ProtoStatusCode;
pub use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};

/// The attribute `key` holding `value`.
pub fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// The attribute `key` holding the string `value`.
pub fn string_kv(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

/// How many `AnyValue`s may nest inside one attribute before
/// [`sanitize`] empties the innermost: each level costs the scanner at most
/// 3 message levels (AnyValue → KeyValueList → KeyValue), and the deepest
/// attribute starts at depth 6 (a span event's), so 6 + 3 × 19 stays within
/// [`crate::wire::MAX_DEPTH`].
const MAX_VALUE_NESTING: u32 = 19;

/// Makes an owned request acceptable to the scanner: ids of the wrong length
/// become empty (invalid) ids, values nested past the limit become empty.
pub(crate) fn sanitize(request: &mut ExportTraceServiceRequest) {
    fn id(bytes: &mut Vec<u8>, len: usize) {
        if bytes.len() != len {
            bytes.clear();
        }
    }
    fn attributes(kvs: &mut [KeyValue]) {
        for kv in kvs {
            if let Some(v) = kv.value.as_mut() {
                value(v, 1);
            }
        }
    }
    fn value(v: &mut AnyValue, level: u32) {
        if level > MAX_VALUE_NESTING {
            v.value = None;
            return;
        }
        match v.value.as_mut() {
            Some(any_value::Value::ArrayValue(a)) => {
                for v in &mut a.values {
                    value(v, level + 1);
                }
            }
            Some(any_value::Value::KvlistValue(l)) => {
                for kv in &mut l.values {
                    if let Some(v) = kv.value.as_mut() {
                        value(v, level + 1);
                    }
                }
            }
            _ => {}
        }
    }
    for rs in &mut request.resource_spans {
        if let Some(r) = rs.resource.as_mut() {
            attributes(&mut r.attributes);
        }
        for ss in &mut rs.scope_spans {
            if let Some(s) = ss.scope.as_mut() {
                attributes(&mut s.attributes);
            }
            for span in &mut ss.spans {
                id(&mut span.trace_id, 16);
                id(&mut span.span_id, 8);
                id(&mut span.parent_span_id, 8);
                attributes(&mut span.attributes);
                for e in &mut span.events {
                    attributes(&mut e.attributes);
                }
                for l in &mut span.links {
                    id(&mut l.trace_id, 16);
                    id(&mut l.span_id, 8);
                    attributes(&mut l.attributes);
                }
            }
        }
    }
}
