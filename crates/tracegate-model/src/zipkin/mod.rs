//! Zipkin v2 JSON (`POST /api/v2/spans`) to OTLP, as collector-contrib's
//! `pkg/translator/zipkin/zipkinv2` does it after zipkin-go has parsed the
//! body: spans grouped into one resource per `localEndpoint.serviceName` and
//! one scope per `otel.library.name` tag, resource-convention tags moved to
//! the resource, `kind`, status, links and events rebuilt from the tags and
//! annotations the collector's Zipkin exporter writes, endpoints as
//! `network.*`/`service.peer.name` attributes.
//!
//! The body is untrusted: every field is type-checked as zipkin-go's
//! `encoding/json` would, and the first offence is reported with its JSON
//! path so the client can be answered 400.

use std::cmp::Ordering;
use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::otlp::{
    any_value, span, status, AnyValue, ExportTraceServiceRequest, InstrumentationScope, KeyValue,
    Resource, ResourceSpans, ScopeSpans, Span, Status,
};

pub mod proto;
#[cfg(test)]
mod tests;

/// Why a Zipkin body was refused. The message is meant for the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ZipkinError {
    /// Not JSON at all.
    #[error("invalid Zipkin v2 JSON: {0}")]
    Syntax(String),
    /// JSON that is not a list of Zipkin v2 spans.
    #[error("invalid Zipkin v2 span at {path}: {message}")]
    Invalid { path: String, message: String },
}

/// What the collector's translator calls a span with no local service name;
/// it sorts and groups under this name and gets an empty resource.
const NO_SERVICE_NAME: &str = "OTLPResourceNoServiceName";
/// The tag naming the resource attribute that carries the local service
/// name, when it is not `service.name`.
const TAG_SERVICE_NAME_SOURCE: &str = "otlp.service.name.source";
const TAG_LIBRARY_NAME: &str = "otel.library.name";
const TAG_LIBRARY_VERSION: &str = "otel.library.version";
const TAG_STATUS_CODE: &str = "otel.status_code";
const TAG_STATUS_DESCRIPTION: &str = "otel.status_description";
const TAG_ERROR: &str = "error";
const TAG_SPAN_KIND: &str = "span.kind";
const TAG_TRACE_STATE: &str = "w3c.tracestate";
/// Set on JSON spans that arrived without a timestamp (start becomes the
/// epoch). zipkin-go reads a proto3 span's missing timestamp as the epoch
/// itself, a set time, so the collector marks none of those.
const START_TIME_ABSENT: &str = "otel.zipkin.absentField.startTime";
/// Endpoint attributes (see `to_span`).
const ATTR_LOCAL_ADDRESS: &str = "network.local.address";
const ATTR_LOCAL_PORT: &str = "net.host.port";
const ATTR_PEER_SERVICE: &str = "service.peer.name";
const ATTR_PEER_ADDRESS: &str = "network.peer.address";
const ATTR_PEER_PORT: &str = "net.peer.port";
/// The collector looks for links `otlp.link.0` up to this index.
const MAX_LINK_TAGS: usize = 128;

/// Tags that describe the resource, never the span: the resource semantic
/// conventions (v1.6.1, which the translator uses) and the translator's own
/// bookkeeping tags. On the first span of a resource they move to it; on
/// the others they are dropped, as in the collector.
const NON_SPAN_TAGS: &[&str] = &[
    TAG_SERVICE_NAME_SOURCE,
    TAG_LIBRARY_NAME,
    TAG_LIBRARY_VERSION,
    "opencensus.starttime",
    "opencensus.exporterversion",
    "opencensus.resourcetype",
    "aws.ecs.cluster.arn",
    "aws.ecs.container.arn",
    "aws.ecs.launchtype",
    "aws.ecs.task.arn",
    "aws.ecs.task.family",
    "aws.ecs.task.revision",
    "aws.eks.cluster.arn",
    "aws.log.group.arns",
    "aws.log.group.names",
    "aws.log.stream.arns",
    "aws.log.stream.names",
    "cloud.account.id",
    "cloud.availability_zone",
    "cloud.platform",
    "cloud.provider",
    "cloud.region",
    "container.id",
    "container.image.name",
    "container.image.tag",
    "container.name",
    "container.runtime",
    "deployment.environment",
    "device.id",
    "device.model.identifier",
    "device.model.name",
    "faas.id",
    "faas.instance",
    "faas.max_memory",
    "faas.name",
    "faas.version",
    "host.arch",
    "host.id",
    "host.image.id",
    "host.image.name",
    "host.image.version",
    "host.name",
    "host.type",
    "k8s.cluster.name",
    "k8s.container.name",
    "k8s.container.restart_count",
    "k8s.cronjob.name",
    "k8s.cronjob.uid",
    "k8s.daemonset.name",
    "k8s.daemonset.uid",
    "k8s.deployment.name",
    "k8s.deployment.uid",
    "k8s.job.name",
    "k8s.job.uid",
    "k8s.namespace.name",
    "k8s.node.name",
    "k8s.node.uid",
    "k8s.pod.name",
    "k8s.pod.uid",
    "k8s.replicaset.name",
    "k8s.replicaset.uid",
    "k8s.statefulset.name",
    "k8s.statefulset.uid",
    "os.description",
    "os.name",
    "os.type",
    "os.version",
    "process.command",
    "process.command_args",
    "process.command_line",
    "process.executable.name",
    "process.executable.path",
    "process.owner",
    "process.pid",
    "process.runtime.description",
    "process.runtime.name",
    "process.runtime.version",
    "service.instance.id",
    "service.name",
    "service.namespace",
    "service.version",
    "telemetry.auto.version",
    "telemetry.sdk.language",
    "telemetry.sdk.name",
    "telemetry.sdk.version",
    "webengine.description",
    "webengine.name",
    "webengine.version",
];

fn is_non_span_tag(key: &str) -> bool {
    NON_SPAN_TAGS.contains(&key)
}

/// One endpoint as zipkin-go keeps it.
#[derive(Debug, Default, Clone, PartialEq)]
struct Endpoint {
    service_name: String,
    ipv4: Option<IpAddr>,
    ipv6: Option<IpAddr>,
    port: u16,
}

impl Endpoint {
    fn is_empty(&self) -> bool {
        self.service_name.is_empty() && self.ipv4.is_none() && self.ipv6.is_none() && self.port == 0
    }
}

/// One Zipkin v2 span after parsing.
#[derive(Debug, Default)]
struct ZipkinSpan {
    trace_id: [u8; 16],
    id: u64,
    parent_id: Option<u64>,
    name: String,
    kind: String,
    timestamp_us: u64,
    /// The body gave no start time (JSON only; see [`START_TIME_ABSENT`]).
    start_absent: bool,
    duration_us: u64,
    local: Option<Endpoint>,
    remote: Option<Endpoint>,
    /// `(timestamp in µs, value)`.
    annotations: Vec<(u64, String)>,
    /// In the order serde_json's map keeps them (sorted by key).
    tags: Vec<(String, String)>,
}

impl ZipkinSpan {
    fn local_service_name(&self) -> &str {
        match &self.local {
            Some(e) if !e.service_name.is_empty() => &e.service_name,
            _ => NO_SERVICE_NAME,
        }
    }

    fn library_name(&self) -> &str {
        tag(&self.tags, TAG_LIBRARY_NAME).unwrap_or("")
    }
}

fn tag<'a>(tags: &'a [(String, String)], key: &str) -> Option<&'a str> {
    tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn take_tag(tags: &mut Vec<(String, String)>, key: &str) -> Option<String> {
    let at = tags.iter().position(|(k, _)| k == key)?;
    Some(tags.remove(at).1)
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> ZipkinError {
    ZipkinError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

/// Parses a Zipkin v2 JSON body (a list of spans) into an OTLP request.
/// `parse_string_tags` turns tag values that match the collector's integer,
/// decimal or boolean pattern into typed attributes, as the receiver's
/// option of that name.
pub fn v2_json_to_request(
    json: &[u8],
    parse_string_tags: bool,
) -> Result<ExportTraceServiceRequest, ZipkinError> {
    let value: Value =
        serde_json::from_slice(json).map_err(|e| ZipkinError::Syntax(e.to_string()))?;
    let items = match value {
        Value::Null => Vec::new(),
        Value::Array(items) => items,
        other => {
            return Err(invalid(
                "$",
                format!("expected a list of spans, found {}", type_name(&other)),
            ))
        }
    };
    let mut spans = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if item.is_null() {
            continue;
        }
        spans.push(parse_span(item, &format!("$[{i}]"))?);
    }
    to_request(spans, parse_string_tags)
}

/// Parses a Zipkin proto3 body (`ListOfSpans`, `application/x-protobuf`)
/// into an OTLP request, mapped as [`v2_json_to_request`] does.
pub fn v2_proto_to_request(
    body: &[u8],
    parse_string_tags: bool,
) -> Result<ExportTraceServiceRequest, ZipkinError> {
    to_request(proto::parse(body)?, parse_string_tags)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn expect_object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, ZipkinError> {
    value.as_object().ok_or_else(|| {
        invalid(
            path,
            format!("expected an object, found {}", type_name(value)),
        )
    })
}

/// A string field; JSON `null` or a missing key is Go's zero value.
fn opt_str<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, ZipkinError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid(
            format!("{path}.{key}"),
            format!("expected a string, found {}", type_name(other)),
        )),
    }
}

/// An unsigned integer field (Go's `uint64`: no fraction, no exponent).
fn opt_u64(object: &Map<String, Value>, key: &str, path: &str) -> Result<u64, ZipkinError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v.as_u64().ok_or_else(|| {
            invalid(
                format!("{path}.{key}"),
                format!("expected an unsigned integer, found {v}"),
            )
        }),
    }
}

fn opt_bool(object: &Map<String, Value>, key: &str, path: &str) -> Result<bool, ZipkinError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(invalid(
            format!("{path}.{key}"),
            format!("expected a boolean, found {}", type_name(other)),
        )),
    }
}

/// Hex digits only (Go's `strconv.ParseUint` takes no sign), at most 16.
fn parse_hex_u64(hex: &str) -> Option<u64> {
    if hex.is_empty() || hex.len() > 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// zipkin-go's `TraceIDFromHex`: up to 32 hex digits, the last 16 the low
/// half, the ones before them the high half.
fn parse_trace_id(hex: &str) -> Option<[u8; 16]> {
    // ASCII only, so the split below falls on a character boundary.
    if hex.is_empty() || hex.len() > 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let (high, low) = if hex.len() > 16 {
        let split = hex.len() - 16;
        (parse_hex_u64(&hex[..split])?, parse_hex_u64(&hex[split..])?)
    } else {
        (0, parse_hex_u64(hex)?)
    };
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&high.to_be_bytes());
    id[8..].copy_from_slice(&low.to_be_bytes());
    Some(id)
}

fn parse_span(value: &Value, path: &str) -> Result<ZipkinSpan, ZipkinError> {
    let object = expect_object(value, path)?;
    let mut span = ZipkinSpan::default();

    let trace_id = opt_str(object, "traceId", path)?.unwrap_or("");
    if trace_id.is_empty() {
        return Err(invalid(format!("{path}.traceId"), "valid traceId required"));
    }
    span.trace_id = parse_trace_id(trace_id).ok_or_else(|| {
        invalid(
            format!("{path}.traceId"),
            format!("invalid trace id {trace_id:?}: expected up to 32 hex digits"),
        )
    })?;
    // zipkin-go reads an empty id as 0, then refuses a span id of 0.
    span.id = match opt_str(object, "id", path)?.unwrap_or("") {
        "" => 0,
        id => parse_hex_u64(id).ok_or_else(|| {
            invalid(
                format!("{path}.id"),
                format!("invalid span id {id:?}: expected up to 16 hex digits"),
            )
        })?,
    };
    if span.id == 0 {
        return Err(invalid(format!("{path}.id"), "valid span id required"));
    }
    if let Some(parent) = opt_str(object, "parentId", path)? {
        span.parent_id = Some(match parent {
            "" => 0,
            id => parse_hex_u64(id).ok_or_else(|| {
                invalid(
                    format!("{path}.parentId"),
                    format!("invalid span id {id:?}: expected up to 16 hex digits"),
                )
            })?,
        });
    }
    span.name = opt_str(object, "name", path)?.unwrap_or("").to_string();
    span.kind = opt_str(object, "kind", path)?.unwrap_or("").to_string();
    span.timestamp_us = opt_u64(object, "timestamp", path)?;
    span.start_absent = span.timestamp_us == 0;
    span.duration_us = opt_u64(object, "duration", path)?;
    // Parsed for their types only: the translator does not map them.
    opt_bool(object, "debug", path)?;
    opt_bool(object, "shared", path)?;
    span.local = parse_endpoint(object, "localEndpoint", path)?;
    span.remote = parse_endpoint(object, "remoteEndpoint", path)?;

    match object.get("annotations") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (i, a) in list.iter().enumerate() {
                let at = format!("{path}.annotations[{i}]");
                if a.is_null() {
                    // Go's zero Annotation fails its own timestamp check.
                    return Err(invalid(at, "valid annotation timestamp required"));
                }
                let a = expect_object(a, &at)?;
                let ts = opt_u64(a, "timestamp", &at)?;
                if ts == 0 {
                    return Err(invalid(at, "valid annotation timestamp required"));
                }
                let value = opt_str(a, "value", &at)?.unwrap_or("").to_string();
                span.annotations.push((ts, value));
            }
        }
        Some(other) => {
            return Err(invalid(
                format!("{path}.annotations"),
                format!("expected a list, found {}", type_name(other)),
            ))
        }
    }

    match object.get("tags") {
        None | Some(Value::Null) => {}
        Some(Value::Object(tags)) => {
            for (key, value) in tags {
                match value {
                    Value::String(s) => span.tags.push((key.clone(), s.clone())),
                    // Go stores the zero value for a null map element.
                    Value::Null => span.tags.push((key.clone(), String::new())),
                    other => {
                        return Err(invalid(
                            format!("{path}.tags.{key}"),
                            format!("tag values must be strings, found {}", type_name(other)),
                        ))
                    }
                }
            }
        }
        Some(other) => {
            return Err(invalid(
                format!("{path}.tags"),
                format!("expected an object, found {}", type_name(other)),
            ))
        }
    }
    Ok(span)
}

fn parse_endpoint(
    span: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<Endpoint>, ZipkinError> {
    let at = format!("{path}.{key}");
    let object = match span.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => expect_object(v, &at)?,
    };
    let ip = |field: &str| -> Result<Option<IpAddr>, ZipkinError> {
        match opt_str(object, field, &at)? {
            None | Some("") => Ok(None),
            Some(text) => text.parse::<IpAddr>().map(Some).map_err(|_| {
                invalid(
                    format!("{at}.{field}"),
                    format!("invalid IP address {text:?}"),
                )
            }),
        }
    };
    let port = match object.get("port") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| invalid(format!("{at}.port"), format!("invalid port {v}")))?,
    };
    let endpoint = Endpoint {
        service_name: opt_str(object, "serviceName", &at)?
            .unwrap_or("")
            .to_string(),
        ipv4: ip("ipv4")?,
        ipv6: ip("ipv6")?,
        port,
    };
    Ok((!endpoint.is_empty()).then_some(endpoint))
}

/// Go's `net.IP.String()`: an IPv4-mapped IPv6 address prints as IPv4.
fn ip_string(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// Sets `key`, replacing the value of an existing key in place, as
/// pdata's `Map.Put*`.
fn put(attrs: &mut Vec<KeyValue>, key: &str, value: any_value::Value) {
    let value = Some(AnyValue { value: Some(value) });
    match attrs.iter_mut().find(|kv| kv.key == key) {
        Some(kv) => kv.value = value,
        None => attrs.push(KeyValue {
            key: key.to_string(),
            value,
            ..Default::default()
        }),
    }
}

fn to_request(
    mut spans: Vec<ZipkinSpan>,
    parse_string_tags: bool,
) -> Result<ExportTraceServiceRequest, ZipkinError> {
    // The collector sorts by (service, library) and starts a new resource
    // or scope whenever either changes; a stable sort keeps the client's
    // order inside each group.
    spans.sort_by(
        |a, b| match a.local_service_name().cmp(b.local_service_name()) {
            Ordering::Equal => a.library_name().cmp(b.library_name()),
            other => other,
        },
    );
    let mut request = ExportTraceServiceRequest::default();
    let mut prev_service: Option<String> = None;
    let mut prev_library: Option<String> = None;
    for (i, zspan) in spans.into_iter().enumerate() {
        let mut tags = zspan.tags.clone();
        let service = zspan.local_service_name().to_string();
        if prev_service.as_deref() != Some(service.as_str()) {
            let mut resource = Resource::default();
            populate_resource(&mut tags, &service, &mut resource.attributes);
            request.resource_spans.push(ResourceSpans {
                resource: Some(resource),
                ..Default::default()
            });
            prev_service = Some(service);
            prev_library = None;
        }
        let library = zspan.library_name().to_string();
        let resource_spans = request
            .resource_spans
            .last_mut()
            .expect("a resource was pushed above");
        if prev_library.as_deref() != Some(library.as_str()) {
            let mut scope = InstrumentationScope::default();
            if !library.is_empty() {
                if let Some(name) = take_tag(&mut tags, TAG_LIBRARY_NAME) {
                    scope.name = name;
                }
                if let Some(version) = take_tag(&mut tags, TAG_LIBRARY_VERSION) {
                    scope.version = version;
                }
            }
            resource_spans.scope_spans.push(ScopeSpans {
                scope: Some(scope),
                ..Default::default()
            });
            prev_library = Some(library);
        }
        let span = to_span(zspan, tags, parse_string_tags)
            .map_err(|message| invalid(format!("span {i}"), message))?;
        resource_spans
            .scope_spans
            .last_mut()
            .expect("a scope was pushed above")
            .spans
            .push(span);
    }
    Ok(request)
}

fn populate_resource(tags: &mut Vec<(String, String)>, service: &str, attrs: &mut Vec<KeyValue>) {
    if service == NO_SERVICE_NAME {
        return;
    }
    let source = take_tag(tags, TAG_SERVICE_NAME_SOURCE).filter(|s| !s.is_empty());
    put(
        attrs,
        source.as_deref().unwrap_or("service.name"),
        any_value::Value::StringValue(service.to_string()),
    );
    tags.retain(|(key, value)| {
        if key != TAG_LIBRARY_NAME && key != TAG_LIBRARY_VERSION && is_non_span_tag(key) {
            put(attrs, key, any_value::Value::StringValue(value.clone()));
            false
        } else {
            true
        }
    });
}

fn span_kind(kind: &str, tags: &mut Vec<(String, String)>) -> span::SpanKind {
    match kind {
        "CLIENT" => span::SpanKind::Client,
        "SERVER" => span::SpanKind::Server,
        "PRODUCER" => span::SpanKind::Producer,
        "CONSUMER" => span::SpanKind::Consumer,
        _ => match take_tag(tags, TAG_SPAN_KIND).as_deref() {
            Some("internal") => span::SpanKind::Internal,
            _ => span::SpanKind::Unspecified,
        },
    }
}

fn span_id_bytes(id: u64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

fn to_span(
    zspan: ZipkinSpan,
    mut tags: Vec<(String, String)>,
    parse_string_tags: bool,
) -> Result<Span, String> {
    let mut span = Span {
        trace_id: zspan.trace_id.to_vec(),
        span_id: span_id_bytes(zspan.id),
        name: zspan.name.clone(),
        ..Default::default()
    };
    if let Some(state) = take_tag(&mut tags, TAG_TRACE_STATE) {
        span.trace_state = state;
    }
    // A shared span (the server half of an RPC reusing the client's id)
    // may name itself as parent; that is no parent.
    if let Some(parent) = zspan.parent_id.filter(|p| *p != zspan.id) {
        if parent != 0 {
            span.parent_span_id = span_id_bytes(parent);
        }
    }
    span.kind = span_kind(&zspan.kind, &mut tags) as i32;
    span.status = status_from_tags(&mut tags);
    span.links = links_from_tags(&mut tags)?;

    let attrs = &mut span.attributes;
    for (key, value) in tags {
        if is_non_span_tag(&key) {
            continue;
        }
        let value = if parse_string_tags {
            typed_tag_value(value)
        } else {
            any_value::Value::StringValue(value)
        };
        put(attrs, &key, value);
    }
    // Endpoints, under the names the collector's translator writes with
    // its default feature gates since the network conventions moved to
    // semconv 1.40 (`EmitV1NetworkConventions` and
    // `DontEmitV0NetworkConventions`, beta): the addresses and the peer's
    // service name; the ports keep their `net.*` names. IPv6 wins over
    // IPv4 when an endpoint has both (it is written second).
    if let Some(local) = &zspan.local {
        for ip in [local.ipv4, local.ipv6].into_iter().flatten() {
            put(
                attrs,
                ATTR_LOCAL_ADDRESS,
                any_value::Value::StringValue(ip_string(ip)),
            );
        }
        if local.port > 0 {
            put(
                attrs,
                ATTR_LOCAL_PORT,
                any_value::Value::IntValue(local.port.into()),
            );
        }
    }
    if let Some(remote) = &zspan.remote {
        if !remote.service_name.is_empty() {
            put(
                attrs,
                ATTR_PEER_SERVICE,
                any_value::Value::StringValue(remote.service_name.clone()),
            );
        }
        for ip in [remote.ipv4, remote.ipv6].into_iter().flatten() {
            put(
                attrs,
                ATTR_PEER_ADDRESS,
                any_value::Value::StringValue(ip_string(ip)),
            );
        }
        if remote.port > 0 {
            put(
                attrs,
                ATTR_PEER_PORT,
                any_value::Value::IntValue(remote.port.into()),
            );
        }
    }

    // Microseconds to nanoseconds with Go's wrapping arithmetic; a span
    // without a timestamp starts at the epoch.
    let duration_ns = zspan.duration_us.wrapping_mul(1000);
    let start = zspan.timestamp_us.wrapping_mul(1000);
    span.start_time_unix_nano = start;
    span.end_time_unix_nano = start.wrapping_add(duration_ns);
    if zspan.start_absent {
        put(attrs, START_TIME_ABSENT, any_value::Value::BoolValue(true));
    }

    for (timestamp_us, value) in &zspan.annotations {
        span.events
            .push(event_from_annotation(*timestamp_us, value)?);
    }
    Ok(span)
}

fn status_from_tags(tags: &mut Vec<(String, String)>) -> Option<Status> {
    let mut result = Status::default();
    if let Some(code) = take_tag(tags, TAG_STATUS_CODE) {
        // The proto enum names, and the spellings older versions of the
        // collector's own Zipkin exporter wrote (`Ok`, `Error`, `Unset`);
        // anything else is Unset (and still consumes the description).
        result.code = match code.as_str() {
            "STATUS_CODE_OK" | "Ok" => status::StatusCode::Ok as i32,
            "STATUS_CODE_ERROR" | "Error" => status::StatusCode::Error as i32,
            _ => status::StatusCode::Unset as i32,
        };
        if let Some(message) = take_tag(tags, TAG_STATUS_DESCRIPTION) {
            result.message = message;
        }
    }
    // Zipkin clients (Brave, zipkin-go, py_zipkin) tag a failed span
    // `error=<message>`: any `error` tag, whatever its value (even empty
    // or "false"), is an error, as in the collector since 2023. Only the
    // bare `"true"` marker says nothing more and is dropped; a message
    // stays an attribute and does not become the status message.
    if let Some(value) = tag(tags, TAG_ERROR) {
        result.code = status::StatusCode::Error as i32;
        if value == "true" {
            take_tag(tags, TAG_ERROR);
        }
    }
    (result != Status::default()).then_some(result)
}

/// The collector's `DetermineValueType` and what it then stores: a value
/// matching `^-?\d+$` (ASCII digits, no `+`) is an integer, saturating at
/// the `i64` bounds as Go's `strconv.ParseInt` does on overflow (its error
/// is ignored); one matching `^-?\d+\.\d+$` is a double (`ParseFloat`,
/// infinite when out of range); `true` / `false` exactly are booleans.
/// Everything else, including exponents, `+1`, `True`, `1.` and JSON-like
/// values, stays the string as sent.
fn typed_tag_value(value: String) -> any_value::Value {
    let (negative, unsigned) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value.as_str()),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(unsigned) {
        let i = value
            .parse::<i64>()
            .unwrap_or(if negative { i64::MIN } else { i64::MAX });
        return any_value::Value::IntValue(i);
    }
    if let Some((whole, fraction)) = unsigned.split_once('.') {
        if digits(whole) && digits(fraction) {
            // Rust's parser rounds as Go's does and gives ±infinity where
            // Go returns ±Inf with a range error.
            if let Ok(d) = value.parse::<f64>() {
                return any_value::Value::DoubleValue(d);
            }
        }
    }
    match value.as_str() {
        "true" => any_value::Value::BoolValue(true),
        "false" => any_value::Value::BoolValue(false),
        _ => any_value::Value::StringValue(value),
    }
}

/// `name|{json attributes}|dropped count`, which the collector's Zipkin
/// exporter writes for events with attributes; a plain annotation is just
/// a name.
fn event_from_annotation(timestamp_us: u64, value: &str) -> Result<span::Event, String> {
    let parts: Vec<&str> = value.split('|').collect();
    let mut event = span::Event {
        time_unix_nano: timestamp_us.wrapping_mul(1000),
        name: parts[0].to_string(),
        ..Default::default()
    };
    if parts.len() < 3 {
        return Ok(event);
    }
    let json = parts[1..parts.len() - 1].join("|");
    event.attributes = json_attributes(&json)?;
    event.dropped_attributes_count = parse_dropped(parts[parts.len() - 1])?;
    Ok(event)
}

fn parse_dropped(text: &str) -> Result<u32, String> {
    text.parse::<u32>()
        .map_err(|_| format!("invalid dropped attributes count {text:?}"))
}

fn json_attributes(json: &str) -> Result<Vec<KeyValue>, String> {
    let map: Map<String, Value> =
        serde_json::from_str(json).map_err(|e| format!("invalid attributes JSON: {e}"))?;
    let mut attrs = Vec::with_capacity(map.len());
    for (key, value) in map {
        let value = match value {
            Value::String(s) => any_value::Value::StringValue(s),
            Value::Bool(b) => any_value::Value::BoolValue(b),
            Value::Number(n) => {
                let d = n.as_f64().unwrap_or(0.0);
                if d.fract() == 0.0 && d.is_finite() {
                    any_value::Value::IntValue(d as i64)
                } else {
                    any_value::Value::DoubleValue(d)
                }
            }
            // The collector keeps strings, numbers and booleans only.
            _ => continue,
        };
        attrs.push(KeyValue {
            key,
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        });
    }
    Ok(attrs)
}

/// `otlp.link.<i>` tags: `traceId|spanId|traceState|{json}|dropped`.
fn links_from_tags(tags: &mut Vec<(String, String)>) -> Result<Vec<span::Link>, String> {
    let mut links = Vec::new();
    for i in 0..MAX_LINK_TAGS {
        let Some(value) = take_tag(tags, &format!("otlp.link.{i}")) else {
            break;
        };
        let parts: Vec<&str> = value.split('|').collect();
        if parts.len() < 5 {
            continue;
        }
        let mut link = span::Link {
            trace_id: link_id(parts[0], 16)?,
            span_id: link_id(parts[1], 8)?,
            trace_state: parts[2].to_string(),
            ..Default::default()
        };
        link.attributes = json_attributes(&parts[3..parts.len() - 1].join("|"))?;
        link.dropped_attributes_count = parse_dropped(parts[parts.len() - 1])?;
        links.push(link);
    }
    Ok(links)
}

/// A link id in hex, possibly quoted; empty is an all-zero id.
fn link_id(text: &str, len: usize) -> Result<Vec<u8>, String> {
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    if text.is_empty() {
        return Ok(vec![0; len]);
    }
    if text.len() != len * 2 {
        return Err("invalid length for ID".into());
    }
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("cannot unmarshal ID from string '{text}'"));
    }
    (0..len)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| format!("cannot unmarshal ID from string '{text}'"))
}
