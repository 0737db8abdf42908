//! Jaeger `api_v2` → OTLP, as the collector's `ProtoToTraces`: spans are
//! grouped into one ResourceSpans per distinct process (a span's own process
//! wins over its batch's) and into one ScopeSpans per `otel.scope.*` pair.

use prost_types::{Duration, Timestamp};

use super::proto::{self, SpanRefType, ValueType};
use super::tags;
use crate::otlp::{
    any_value, AnyValue, Event, ExportTraceServiceRequest, InstrumentationScope, KeyValue, Link,
    ProtoStatusCode, Resource, ResourceSpans, ScopeSpans, Span, SpanKind, Status,
};
use crate::SpanBatch;

/// A Jaeger message tracegate cannot map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JaegerError {
    #[error("trace id of {0} bytes (at most 16)")]
    TraceId(usize),
    #[error("span id of {0} bytes (at most 8)")]
    SpanId(usize),
}

/// The batches as a [`SpanBatch`] for the pipeline.
pub fn span_batch_from_batches(
    batches: impl IntoIterator<Item = proto::Batch>,
) -> Result<SpanBatch, JaegerError> {
    Ok(SpanBatch::from_request(&request_from_batches(batches)?))
}

/// The batches as one OTLP request.
pub fn request_from_batches(
    batches: impl IntoIterator<Item = proto::Batch>,
) -> Result<ExportTraceServiceRequest, JaegerError> {
    // (process, spans) in first-seen order; the collector groups in a map
    // keyed by a hash of the process, so equal processes share a resource.
    let mut groups: Vec<(Option<proto::Process>, Vec<proto::Span>)> = Vec::new();
    fn group_of(
        groups: &mut Vec<(Option<proto::Process>, Vec<proto::Span>)>,
        process: Option<proto::Process>,
    ) -> usize {
        match groups.iter().position(|(p, _)| *p == process) {
            Some(at) => at,
            None => {
                groups.push((process, Vec::new()));
                groups.len() - 1
            }
        }
    }
    for batch in batches {
        if batch.process.is_none() && batch.spans.is_empty() {
            continue;
        }
        // Looked up once per batch: spans without their own process (the
        // usual case) cost no comparison of processes.
        let batch_group = group_of(&mut groups, batch.process);
        for mut span in batch.spans {
            let at = match span.process.take() {
                None => batch_group,
                Some(own) => group_of(&mut groups, Some(own)),
            };
            groups[at].1.push(span);
        }
    }
    let mut resource_spans = Vec::with_capacity(groups.len());
    for (process, spans) in groups {
        resource_spans.push(ResourceSpans {
            resource: Some(resource(process)),
            scope_spans: scope_spans(spans)?,
            schema_url: String::new(),
        });
    }
    Ok(ExportTraceServiceRequest { resource_spans })
}

/// Attributes as the collector's `pcommon.Map` keeps them: putting a key
/// that exists replaces its value in place.
#[derive(Default)]
struct Attributes(Vec<KeyValue>);

impl Attributes {
    fn put(&mut self, key: &str, value: any_value::Value) {
        self.put_owned(key.into(), value)
    }
    /// [`Self::put`] with a key the caller owns: a tag's key moves in.
    fn put_owned(&mut self, key: String, value: any_value::Value) {
        let value = Some(AnyValue { value: Some(value) });
        match self.0.iter_mut().find(|kv| kv.key == key) {
            Some(kv) => kv.value = value,
            None => self.0.push(KeyValue {
                key,
                value,
                ..Default::default()
            }),
        }
    }
    fn get(&self, key: &str) -> Option<&any_value::Value> {
        self.0
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }
    /// `Value.Str()`: the string, or empty for another type.
    fn str(&self, key: &str) -> Option<String> {
        self.0.iter().find(|kv| kv.key == key).map(|kv| {
            match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                _ => String::new(),
            }
        })
    }
    fn remove(&mut self, key: &str) {
        self.0.retain(|kv| kv.key != key);
    }
    fn put_tags(&mut self, tags: Vec<proto::KeyValue>) {
        self.0.reserve(tags.len());
        for tag in tags {
            let value = match ValueType::try_from(tag.v_type) {
                Ok(ValueType::String) => any_value::Value::StringValue(tag.v_str),
                Ok(ValueType::Bool) => any_value::Value::BoolValue(tag.v_bool),
                Ok(ValueType::Int64) => any_value::Value::IntValue(tag.v_int64),
                Ok(ValueType::Float64) => any_value::Value::DoubleValue(tag.v_float64),
                Ok(ValueType::Binary) => any_value::Value::BytesValue(tag.v_binary),
                Err(_) => any_value::Value::StringValue(format!(
                    "<Unknown Jaeger TagType \"{}\">",
                    tag.v_type
                )),
            };
            self.put_owned(tag.key, value);
        }
    }
}

fn resource(process: Option<proto::Process>) -> Resource {
    let mut attributes = Attributes::default();
    if let Some(process) = process.filter(|p| p.service_name != tags::NO_SERVICE_NAME) {
        if !process.service_name.is_empty() {
            attributes.put(
                "service.name",
                any_value::Value::StringValue(process.service_name),
            );
        }
        attributes.put_tags(process.tags);
        // Jaeger clients' own names for what OTel has conventions for.
        if attributes.get("host.name").is_none() {
            if let Some(hostname) = attributes.get("hostname").cloned() {
                attributes.remove("hostname");
                attributes.put("host.name", hostname);
            }
        }
        if attributes.get("opencensus.exporterversion").is_none() {
            if let Some(version) = attributes.str("jaeger.version") {
                attributes.remove("jaeger.version");
                attributes.put(
                    "opencensus.exporterversion",
                    any_value::Value::StringValue(format!("Jaeger-{version}")),
                );
            }
        }
    }
    Resource {
        attributes: attributes.0,
        ..Default::default()
    }
}

fn scope_spans(spans: Vec<proto::Span>) -> Result<Vec<ScopeSpans>, JaegerError> {
    let mut scopes: Vec<ScopeSpans> = Vec::new();
    for mut span in spans {
        if span == proto::Span::default() {
            continue;
        }
        let (name, version) = match take_tag(&mut span.tags, tags::SCOPE_NAME) {
            Some(name) => (
                name,
                take_tag(&mut span.tags, tags::SCOPE_VERSION).unwrap_or_default(),
            ),
            None => (String::new(), String::new()),
        };
        let span = otlp_span(span)?;
        let at = scopes.iter().position(|ss| {
            ss.scope
                .as_ref()
                .is_some_and(|s| s.name == name && s.version == version)
        });
        match at {
            Some(at) => scopes[at].spans.push(span),
            None => scopes.push(ScopeSpans {
                scope: Some(InstrumentationScope {
                    name,
                    version,
                    ..Default::default()
                }),
                spans: vec![span],
                schema_url: String::new(),
            }),
        }
    }
    Ok(scopes)
}

/// Removes the first tag named `key` and returns its string value.
fn take_tag(span_tags: &mut Vec<proto::KeyValue>, key: &str) -> Option<String> {
    let at = span_tags.iter().position(|t| t.key == key)?;
    Some(span_tags.remove(at).v_str)
}

fn trace_id(bytes: &[u8]) -> Result<Vec<u8>, JaegerError> {
    pad(bytes, 16).ok_or(JaegerError::TraceId(bytes.len()))
}

fn span_id(bytes: &[u8]) -> Result<Vec<u8>, JaegerError> {
    pad(bytes, 8).ok_or(JaegerError::SpanId(bytes.len()))
}

/// A big-endian id shorter than its size is the same number with leading
/// zeros (an absent id is zero).
fn pad(bytes: &[u8], len: usize) -> Option<Vec<u8>> {
    if bytes.len() > len {
        return None;
    }
    let mut id = vec![0; len - bytes.len()];
    id.extend_from_slice(bytes);
    Some(id)
}

fn unix_nanos(t: Option<&Timestamp>) -> i128 {
    t.map_or(0, |t| {
        i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
    })
}

fn nanos(d: Option<&Duration>) -> i128 {
    d.map_or(0, |d| {
        i128::from(d.seconds) * 1_000_000_000 + i128::from(d.nanos)
    })
}

fn clamp(nanos: i128) -> u64 {
    nanos.clamp(0, i128::from(u64::MAX)) as u64
}

fn otlp_span(span: proto::Span) -> Result<Span, JaegerError> {
    let own_trace_id = trace_id(&span.trace_id)?;
    let start = unix_nanos(span.start_time.as_ref());
    let end = start + nanos(span.duration.as_ref());

    // Jaeger's ParentSpanID(), which the collector uses: the first CHILD_OF
    // reference within the same trace, else the first FOLLOWS_FROM one
    // (as the thrift path does). Either way the reference also stays a
    // link unless it is a CHILD_OF to that id.
    let mut child_of = None;
    let mut follows_from = None;
    for reference in &span.references {
        if trace_id(&reference.trace_id)? != own_trace_id {
            continue;
        }
        if reference.ref_type == SpanRefType::ChildOf as i32 {
            child_of = Some(span_id(&reference.span_id)?);
            break;
        }
        if follows_from.is_none() && reference.ref_type == SpanRefType::FollowsFrom as i32 {
            follows_from = Some(span_id(&reference.span_id)?);
        }
    }
    let parent = child_of.or(follows_from).unwrap_or_else(|| vec![0u8; 8]);
    let has_parent = parent.iter().any(|b| *b != 0);

    let mut attributes = Attributes::default();
    attributes.put_tags(span.tags);
    let mut kind = SpanKind::Unspecified;
    if let Some(tag) = attributes.str(tags::SPAN_KIND) {
        kind = match tag.as_str() {
            "client" => SpanKind::Client,
            "server" => SpanKind::Server,
            "producer" => SpanKind::Producer,
            "consumer" => SpanKind::Consumer,
            "internal" => SpanKind::Internal,
            _ => SpanKind::Unspecified,
        };
        attributes.remove(tags::SPAN_KIND);
    }
    let status = status(&mut attributes, kind);
    let trace_state = attributes.str(tags::TRACE_STATE).unwrap_or_default();
    attributes.remove(tags::TRACE_STATE);

    let events = span
        .logs
        .into_iter()
        .map(|log| {
            let mut fields = Attributes::default();
            fields.put_tags(log.fields);
            let name = fields.str(tags::EVENT).unwrap_or_default();
            fields.remove(tags::EVENT);
            Event {
                time_unix_nano: clamp(unix_nanos(log.timestamp.as_ref())),
                name,
                attributes: fields.0,
                dropped_attributes_count: 0,
            }
        })
        .collect();

    let mut links = Vec::new();
    for reference in span.references {
        let ref_span_id = span_id(&reference.span_id)?;
        let child_of = reference.ref_type == SpanRefType::ChildOf as i32;
        if child_of && ref_span_id == parent {
            continue;
        }
        links.push(Link {
            trace_id: trace_id(&reference.trace_id)?,
            span_id: ref_span_id,
            attributes: vec![KeyValue {
                key: tags::REF_TYPE.to_string(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(
                        if child_of { "child_of" } else { "follows_from" }.to_string(),
                    )),
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
    }

    Ok(Span {
        trace_id: own_trace_id,
        span_id: span_id(&span.span_id)?,
        trace_state,
        parent_span_id: if has_parent { parent } else { Vec::new() },
        name: span.operation_name,
        kind: kind as i32,
        start_time_unix_nano: clamp(start),
        end_time_unix_nano: clamp(end),
        attributes: attributes.0,
        events,
        links,
        status,
        ..Default::default()
    })
}

/// The collector's `setInternalSpanStatus`: `error=true` is the final word,
/// then `otel.status_code`, then an HTTP status code.
fn status(attributes: &mut Attributes, kind: SpanKind) -> Option<Status> {
    let mut code = ProtoStatusCode::Unset;
    let mut message = String::new();
    let mut exists = false;
    let take_description = |attributes: &mut Attributes| {
        let description = attributes.str(tags::STATUS_DESCRIPTION);
        if description.is_some() {
            attributes.remove(tags::STATUS_DESCRIPTION);
        }
        description
    };
    if let Some(any_value::Value::BoolValue(true)) = attributes.get(tags::ERROR) {
        code = ProtoStatusCode::Error;
        attributes.remove(tags::ERROR);
        exists = true;
        message = match take_description(attributes) {
            Some(description) => description,
            None => attributes
                .str(tags::HTTP_STATUS_MESSAGE)
                .unwrap_or_default(),
        };
    }
    if let Some(status_code) = attributes.str(tags::STATUS_CODE) {
        if !exists {
            exists = true;
            match status_code.to_ascii_uppercase().as_str() {
                "OK" => code = ProtoStatusCode::Ok,
                "ERROR" => code = ProtoStatusCode::Error,
                _ => {}
            }
            if let Some(description) = take_description(attributes) {
                message = description;
            }
        }
        attributes.remove(tags::STATUS_CODE);
    } else if !exists {
        let http_code = match attributes.get(tags::HTTP_STATUS_CODE) {
            Some(any_value::Value::IntValue(i)) => Some(*i),
            Some(any_value::Value::StringValue(s)) => s.parse::<i64>().ok(),
            _ => None,
        };
        if let Some(http_code) = http_code {
            let from_http = if (400..500).contains(&http_code) && kind == SpanKind::Client {
                ProtoStatusCode::Error
            } else if (400..500).contains(&http_code) && kind == SpanKind::Server {
                ProtoStatusCode::Unset
            } else if (100..399).contains(&http_code) {
                // The collector's bound: 399 itself is an error there too.
                ProtoStatusCode::Unset
            } else {
                ProtoStatusCode::Error
            };
            if from_http != ProtoStatusCode::Unset {
                exists = true;
                code = from_http;
            }
            if let Some(m) = attributes.str(tags::HTTP_STATUS_MESSAGE) {
                message = m;
            }
        }
    }
    exists.then_some(Status {
        code: code as i32,
        message,
    })
}
