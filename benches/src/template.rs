//! Pre-encoded request templates.
//!
//! A *round* is `traces` traces of `spans_per_trace` spans each (or, with a
//! range, a fixed draw from it per trace slot), sent as
//! `parts` requests: span `i` belongs to service `i % services`, and a
//! service's spans go to part `service % parts`, so every request holds the
//! spans of a few services for all traces of the round, as an agent or an
//! SDK batch would send them, and every trace is spread over all parts.
//!
//! Each part is encoded once (protobuf, optionally with the gRPC message
//! prefix, or OTLP/JSON). Per round only a few bytes change in place: the
//! trace ids, the status code of one span per trace (error class) and the
//! root's end time (slow class). Where those bytes are is found by encoding
//! the round again with every such value changed and comparing, so the same
//! code serves protobuf and JSON.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;

#[derive(Debug, Clone)]
pub struct Shape {
    /// Spans per trace: each trace slot of a round gets a fixed draw from
    /// `spans_per_trace..=max_spans_per_trace`.
    pub spans_per_trace: usize,
    pub max_spans_per_trace: usize,
    pub traces_per_round: usize,
    /// Requests one round (and so every trace) is spread over.
    pub parts: usize,
    pub services: usize,
    pub attributes: usize,
    /// Root span duration of normal and error traces, nanoseconds.
    pub normal_duration_ns: u64,
    /// Root span duration of slow traces, nanoseconds.
    pub slow_duration_ns: u64,
}

impl Shape {
    /// How many spans trace slot `t` has.
    pub fn spans_of(&self, t: usize) -> usize {
        let (lo, hi) = (
            self.spans_per_trace,
            self.max_spans_per_trace.max(self.spans_per_trace),
        );
        lo + (splitmix64(t as u64 ^ 0x5EED) % (hi - lo + 1) as u64) as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Protobuf with the 5-byte gRPC message prefix.
    Grpc,
    /// Protobuf, as OTLP/HTTP sends it.
    Proto,
    /// OTLP/JSON.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    Normal,
    Error,
    Slow,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Normal, Class::Error, Class::Slow];

    pub fn name(self) -> &'static str {
        match self {
            Class::Normal => "normal",
            Class::Error => "error",
            Class::Slow => "slow",
        }
    }

    pub fn parse(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// The class shares, and the seed that makes ids and classes reproducible.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub error_share: f64,
    pub slow_share: f64,
    pub seed: u64,
}

impl Mix {
    /// Trace number `seq`'s id: a pure function of the seed and `seq`, so a
    /// run can be repeated exactly.
    pub fn trace_id(&self, seq: u64) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&splitmix64(seq ^ self.seed).to_be_bytes());
        id[8..].copy_from_slice(&splitmix64(!seq ^ self.seed.rotate_left(17)).to_be_bytes());
        id
    }

    /// Trace number `seq`'s class, drawn independently of its id's bits
    /// (which samplers use as their randomness).
    pub fn class(&self, seq: u64) -> Class {
        let u = (splitmix64(seq.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ self.seed ^ 0x0C1A_55E5)
            >> 11) as f64
            / (1u64 << 53) as f64;
        if u < self.error_share {
            Class::Error
        } else if u < self.error_share + self.slow_share {
            Class::Slow
        } else {
            Class::Normal
        }
    }
}

/// Where a root's end time is: (offset, normal bytes, slow bytes).
type RootEnd = (u32, Vec<u8>, Vec<u8>);

/// One request of a round and where its per-round bytes are.
pub struct Part {
    pub bytes: Vec<u8>,
    pub spans: usize,
    /// Per trace slot: the offsets of its trace id (16 bytes, or 32 hex
    /// digits in JSON).
    ids: Vec<Vec<u32>>,
    /// Per trace slot: the status code digit or byte of its error-candidate
    /// span, if that span is in this part: (offset, unset value, error value).
    status: Vec<Option<(u32, u8, u8)>>,
    /// Per trace slot: the root's end time bytes, if the root is in this
    /// part: (offset, normal bytes, slow bytes).
    root_end: Vec<Option<RootEnd>>,
    /// Per trace slot: the 8 hex digits of its root's `enduser.id`.
    user: Vec<Option<u32>>,
}

pub struct Template {
    pub parts: Vec<Part>,
    pub encoding: Encoding,
    /// Spans of each trace slot.
    pub trace_spans: Vec<usize>,
    pub traces_per_round: usize,
    pub mix: Mix,
}

const SERVICES: [&str; 10] = [
    "frontend",
    "checkout",
    "cart",
    "payment",
    "inventory",
    "auth",
    "shipping",
    "recommendation",
    "currency",
    "email",
];

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

fn attributes(n: usize, trace: usize, span: usize) -> Vec<KeyValue> {
    let pool = [
        kv("http.request.method", s(["GET", "POST", "PUT"][span % 3])),
        kv("http.route", s(&format!("/api/v1/items/{}", span % 7))),
        kv(
            "http.response.status_code",
            any_value::Value::IntValue([200, 201, 404, 200][(span + trace) % 4]),
        ),
        kv("server.address", s("checkout.prod.svc.cluster.local")),
        kv("url.scheme", s("https")),
        kv(
            "user_agent.original",
            s("Mozilla/5.0 (X11; Linux x86_64) loadgen/1.0"),
        ),
        kv("db.system", s("postgresql")),
        kv(
            "db.statement",
            s("SELECT id, name FROM items WHERE id = $1"),
        ),
        kv("rpc.method", s("GetItem")),
        kv("server.port", any_value::Value::IntValue(5432)),
        kv("customer.tier", s(["gold", "silver", "bronze"][trace % 3])),
        kv("retry", any_value::Value::BoolValue(span.is_multiple_of(5))),
    ];
    pool.into_iter().cycle().take(n).collect()
}

/// The values that vary per round, for building variants of a template.
struct Variant<'a> {
    ids: &'a dyn Fn(usize) -> [u8; 16],
    error_code: status::StatusCode,
    slow: bool,
    /// The digit the root's `enduser.id` placeholder is written with.
    user_digit: char,
}

/// Distinct `enduser.id` values on root spans: a high-cardinality
/// attribute that changes every round, as user ids do.
const USERS: u64 = 1_000_000;

/// The trace slot span `i` of slot `t` links to, if it has a link.
fn link_target(t: usize, i: usize, traces: usize) -> Option<usize> {
    (i % 5 == 4).then_some((t + 1) % traces)
}

/// A distinctive placeholder id per trace slot.
fn placeholder(trace: usize) -> [u8; 16] {
    let mut id = [0x5A; 16];
    id[..8].copy_from_slice(&(trace as u64 | 0x3C00_0000_0000_0000).to_be_bytes());
    id
}

fn span_id(trace: usize, i: usize) -> Vec<u8> {
    (((trace as u64) << 24) | (i as u64 + 1) | 0x0100_0000_0000_0000)
        .to_be_bytes()
        .to_vec()
}

impl Template {
    pub fn new(shape: &Shape, mix: Mix, encoding: Encoding, base_time_ns: u64) -> Template {
        assert!(shape.spans_per_trace >= 1 && shape.traces_per_round >= 1);
        let services = shape.services.clamp(1, SERVICES.len());
        let max_spans = shape.max_spans_per_trace.max(shape.spans_per_trace);
        let parts = shape.parts.clamp(1, services.min(max_spans));
        let encode = |v: &Variant| -> Vec<Vec<u8>> {
            (0..parts)
                .map(|p| encode_part(shape, services, parts, p, v, base_time_ns, encoding))
                .collect()
        };
        let base = encode(&Variant {
            ids: &placeholder,
            error_code: status::StatusCode::Ok,
            slow: false,
            user_digit: '0',
        });
        let flipped_ids = encode(&Variant {
            ids: &|t| placeholder(t).map(|b| !b),
            error_code: status::StatusCode::Ok,
            slow: false,
            user_digit: '0',
        });
        let errors = encode(&Variant {
            ids: &placeholder,
            error_code: status::StatusCode::Error,
            slow: false,
            user_digit: '0',
        });
        let slow = encode(&Variant {
            ids: &placeholder,
            error_code: status::StatusCode::Ok,
            slow: true,
            user_digit: '0',
        });
        let users = encode(&Variant {
            ids: &placeholder,
            error_code: status::StatusCode::Ok,
            slow: false,
            user_digit: 'f',
        });
        let id_len = if encoding == Encoding::Json { 32 } else { 16 };
        let traces = shape.traces_per_round;
        // The span that carries an error trace's ERROR status: its last.
        let candidate = |t: usize| shape.spans_of(t) - 1;
        let part_of = |i: usize| (i % services) % parts;
        let mut out = Vec::new();
        for p in 0..parts {
            // The order spans are written in: by service, then trace, then
            // index; and the trace ids in them: the span's own, then its
            // link's (Span.links comes after Span.trace_id in both encodings).
            let mut order = Vec::new();
            let mut id_order = Vec::new();
            for svc in (0..services).filter(|svc| svc % parts == p) {
                for t in 0..traces {
                    for i in (0..shape.spans_of(t)).filter(|i| i % services == svc) {
                        order.push((t, i));
                        id_order.push(t);
                        id_order.extend(link_target(t, i, traces));
                    }
                }
            }
            let id_runs = runs(&base[p], &flipped_ids[p], 0);
            assert_eq!(
                id_runs.len(),
                id_order.len(),
                "one trace id per span and link"
            );
            let mut ids = vec![Vec::new(); traces];
            for (&t, &(lo, hi)) in id_order.iter().zip(&id_runs) {
                assert_eq!(hi - lo, id_len, "whole trace ids differ");
                ids[t].push(lo as u32);
            }
            let mut status = vec![None; traces];
            let slots: Vec<usize> = order
                .iter()
                .filter(|(t, i)| *i == candidate(*t))
                .map(|(t, _)| *t)
                .collect();
            if !slots.is_empty() {
                let diffs = runs(&base[p], &errors[p], 0);
                assert_eq!(diffs.len(), slots.len(), "one status code per trace");
                for (t, (lo, hi)) in slots.into_iter().zip(diffs) {
                    assert_eq!(hi - lo, 1);
                    // OK (1) was encoded; UNSET (0) and ERROR (2) are one
                    // below and above, as a byte or as a JSON digit.
                    let ok = base[p][lo];
                    status[t] = Some((lo as u32, ok - 1, ok + 1));
                }
            }
            let mut root_end = vec![None; traces];
            if part_of(0) == p {
                let field_len = if encoding == Encoding::Json { 19 } else { 8 };
                let diffs = runs(&base[p], &slow[p], field_len);
                assert_eq!(diffs.len(), traces, "one root end time per trace");
                for (t, (lo, hi)) in diffs.into_iter().enumerate() {
                    root_end[t] = Some((
                        lo as u32,
                        base[p][lo..hi].to_vec(),
                        slow[p][lo..hi].to_vec(),
                    ));
                }
            }
            let mut user = vec![None; traces];
            if part_of(0) == p {
                let diffs = runs(&base[p], &users[p], 0);
                assert_eq!(diffs.len(), traces, "one enduser.id per trace");
                for (t, (lo, hi)) in diffs.into_iter().enumerate() {
                    assert_eq!(hi - lo, 8);
                    user[t] = Some(lo as u32);
                }
            }
            let spans = order.len();
            if spans == 0 {
                // No trace slot reaches this part's services.
                continue;
            }
            out.push(Part {
                bytes: base[p].clone(),
                spans,
                ids,
                status,
                root_end,
                user,
            });
        }
        Template {
            parts: out,
            encoding,
            trace_spans: (0..traces).map(|t| shape.spans_of(t)).collect(),
            traces_per_round: traces,
            mix,
        }
    }

    pub fn spans_per_round(&self) -> usize {
        self.trace_spans.iter().sum()
    }

    /// Writes part `part` of round `round` into `out` (cleared first).
    #[cfg(test)]
    pub fn write_request(&self, round: u64, part: usize, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.parts[part].bytes);
        self.patch(round, part, out);
    }

    /// Turns a copy of part `part`'s template bytes into round `round`'s request.
    pub fn patch(&self, round: u64, part: usize, out: &mut [u8]) {
        let p = &self.parts[part];
        let mut hex = [0u8; 32];
        for t in 0..self.traces_per_round {
            let seq = round * self.traces_per_round as u64 + t as u64;
            let id = self.mix.trace_id(seq);
            let class = self.mix.class(seq);
            if self.encoding == Encoding::Json {
                hex_encode(&id, &mut hex);
                for &o in &p.ids[t] {
                    out[o as usize..o as usize + 32].copy_from_slice(&hex);
                }
            } else {
                for &o in &p.ids[t] {
                    out[o as usize..o as usize + 16].copy_from_slice(&id);
                }
            }
            if let Some((o, unset, error)) = p.status[t] {
                out[o as usize] = if class == Class::Error { error } else { unset };
            }
            if let Some((o, normal, slow)) = &p.root_end[t] {
                let v = if class == Class::Slow { slow } else { normal };
                out[*o as usize..*o as usize + v.len()].copy_from_slice(v);
            }
            if let Some(o) = p.user[t] {
                let user = (splitmix64(seq ^ 0x05E5) % USERS) as u32;
                hex_encode(&user.to_be_bytes(), &mut hex[..8]);
                out[o as usize..o as usize + 8].copy_from_slice(&hex[..8]);
            }
        }
    }

    /// The traces of round `round`: (trace id, class, spans).
    pub fn round_traces(&self, round: u64) -> impl Iterator<Item = ([u8; 16], Class, usize)> + '_ {
        (0..self.traces_per_round).map(move |t| {
            let seq = round * self.traces_per_round as u64 + t as u64;
            (
                self.mix.trace_id(seq),
                self.mix.class(seq),
                self.trace_spans[t],
            )
        })
    }
}

/// Maximal ranges where `a` and `b` differ; differences closer than `join`
/// bytes to the range's start are one range (a fixed-width field whose
/// middle bytes happen to agree).
fn runs(a: &[u8], b: &[u8], join: usize) -> Vec<(usize, usize)> {
    assert_eq!(a.len(), b.len(), "variants must encode to the same length");
    let mut out: Vec<(usize, usize)> = Vec::new();
    for i in (0..a.len()).filter(|&i| a[i] != b[i]) {
        match out.last_mut() {
            Some((lo, hi)) if *hi == i || i < *lo + join => *hi = i + 1,
            _ => out.push((i, i + 1)),
        }
    }
    out
}

pub fn hex_encode(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[(b >> 4) as usize];
        out[2 * i + 1] = DIGITS[(b & 15) as usize];
    }
}

fn encode_part(
    shape: &Shape,
    services: usize,
    parts: usize,
    part: usize,
    v: &Variant,
    base: u64,
    encoding: Encoding,
) -> Vec<u8> {
    let mut resource_spans = Vec::new();
    for svc in (0..services).filter(|svc| svc % parts == part) {
        let name = SERVICES[svc];
        let mut spans = Vec::new();
        for t in 0..shape.traces_per_round {
            let n = shape.spans_of(t);
            let step = shape.normal_duration_ns / (2 * n as u64).max(1);
            for i in (0..n).filter(|i| i % services == svc) {
                let start = base + i as u64 * step;
                let end = if i == 0 {
                    base + if v.slow {
                        shape.slow_duration_ns
                    } else {
                        shape.normal_duration_ns
                    }
                } else {
                    start + step
                };
                let status = if i == n - 1 {
                    Some(Status {
                        code: v.error_code as i32,
                        message: String::new(),
                    })
                } else {
                    None
                };
                let events = if i % 4 == 3 {
                    vec![span::Event {
                        time_unix_nano: start + step / 2,
                        name: "cache.miss".into(),
                        attributes: vec![kv("cache.key", s(&format!("item:{}", i * 31 % 97)))],
                        dropped_attributes_count: 0,
                    }]
                } else {
                    Vec::new()
                };
                // Some spans follow from another trace of the round (a
                // consumer linking to its producer).
                let links = link_target(t, i, shape.traces_per_round)
                    .map(|other| span::Link {
                        trace_id: (v.ids)(other).to_vec(),
                        span_id: span_id(other, 0),
                        attributes: vec![kv("messaging.operation.type", s("process"))],
                        ..Default::default()
                    })
                    .into_iter()
                    .collect();
                spans.push(Span {
                    trace_id: (v.ids)(t).to_vec(),
                    span_id: span_id(t, i),
                    parent_span_id: if i == 0 {
                        Vec::new()
                    } else {
                        span_id(t, (i - 1) / 2)
                    },
                    name: format!("{name} {}", ["GET /api", "query", "call", "render"][i % 4]),
                    kind: if i == 0 {
                        span::SpanKind::Server
                    } else {
                        [
                            span::SpanKind::Client,
                            span::SpanKind::Server,
                            span::SpanKind::Internal,
                        ][i % 3]
                    } as i32,
                    start_time_unix_nano: start,
                    end_time_unix_nano: end,
                    attributes: {
                        let mut a = attributes(shape.attributes, t, i);
                        if i == 0 {
                            let digits: String = std::iter::repeat_n(v.user_digit, 8).collect();
                            a.push(kv("enduser.id", s(&format!("user-{digits}"))));
                        }
                        a
                    },
                    events,
                    links,
                    status,
                    ..Default::default()
                });
            }
        }
        if spans.is_empty() {
            continue;
        }
        resource_spans.push(ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s(name)),
                    kv("service.version", s("1.4.2")),
                    kv("deployment.environment.name", s("prod")),
                    kv("k8s.namespace.name", s("shop")),
                    kv("k8s.pod.name", s(&format!("{name}-7d9f8c6b5-x2k4p"))),
                    kv("k8s.node.name", s("node-3")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "io.opentelemetry.loadgen".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    let request = ExportTraceServiceRequest { resource_spans };
    match encoding {
        Encoding::Grpc => {
            let body = request.encode_to_vec();
            let mut out = Vec::with_capacity(body.len() + 5);
            out.push(0);
            out.extend_from_slice(&(body.len() as u32).to_be_bytes());
            out.extend_from_slice(&body);
            out
        }
        Encoding::Proto => request.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&request).expect("OTLP/JSON serializes"),
    }
}

pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tracegate_model::{SpanBatch, StatusCode};

    fn shape() -> Shape {
        Shape {
            spans_per_trace: 10,
            max_spans_per_trace: 10,
            traces_per_round: 20,
            parts: 3,
            services: 10,
            attributes: 8,
            normal_duration_ns: 100_000_000,
            slow_duration_ns: 2_000_000_000,
        }
    }

    const MIX: Mix = Mix {
        error_share: 0.2,
        slow_share: 0.3,
        seed: 7,
    };

    /// Every span of a round, by trace: (root duration, has an error span, spans).
    fn decode_round(t: &Template, round: u64) -> HashMap<[u8; 16], (u64, bool, usize)> {
        let mut traces: HashMap<[u8; 16], (u64, bool, usize)> = HashMap::new();
        let mut buf = Vec::new();
        for p in 0..t.parts.len() {
            t.write_request(round, p, &mut buf);
            let batch = match t.encoding {
                Encoding::Grpc => {
                    assert_eq!(&buf[1..5], &((buf.len() - 5) as u32).to_be_bytes());
                    SpanBatch::scan(bytes::Bytes::copy_from_slice(&buf[5..])).unwrap()
                }
                Encoding::Proto => SpanBatch::scan(bytes::Bytes::copy_from_slice(&buf)).unwrap(),
                Encoding::Json => SpanBatch::from_json(&buf).unwrap(),
            };
            for s in batch.spans() {
                let e = traces.entry(s.trace_id).or_default();
                e.2 += 1;
                e.1 |= s.status == StatusCode::Error;
                assert_ne!(s.status, StatusCode::Ok);
                if s.is_root() {
                    e.0 = s.end_time_unix_nano - s.start_time_unix_nano;
                }
            }
        }
        traces
    }

    #[test]
    fn rounds_carry_their_ids_and_classes_in_every_encoding() {
        for encoding in [Encoding::Grpc, Encoding::Proto, Encoding::Json] {
            let t = Template::new(&shape(), MIX, encoding, 1_763_000_000_000_000_000);
            assert_eq!(t.parts.len(), 3);
            assert_eq!(t.parts.iter().map(|p| p.spans).sum::<usize>(), 200);
            let mut seen_classes = HashMap::new();
            for round in [0, 1, 77] {
                let traces = decode_round(&t, round);
                assert_eq!(traces.len(), 20, "{encoding:?}");
                for (id, class, n) in t.round_traces(round) {
                    let (root, error, spans) = traces[&id];
                    assert_eq!((spans, n), (10, 10));
                    assert_eq!(error, class == Class::Error, "{encoding:?}");
                    let slow = root == 2_000_000_000;
                    assert_eq!(slow, class == Class::Slow, "{encoding:?}");
                    assert!(slow || root == 100_000_000);
                    *seen_classes.entry(class).or_insert(0) += 1;
                }
            }
            assert_eq!(seen_classes.len(), 3, "all classes drawn: {seen_classes:?}");
        }
    }

    #[test]
    fn root_spans_carry_a_user_id_that_changes_per_trace() {
        for encoding in [Encoding::Proto, Encoding::Json] {
            let t = Template::new(&shape(), MIX, encoding, 1_763_000_000_000_000_000);
            let mut users = std::collections::HashSet::new();
            let mut buf = Vec::new();
            for round in [0, 1] {
                for p in 0..t.parts.len() {
                    t.write_request(round, p, &mut buf);
                    let batch = match encoding {
                        Encoding::Json => SpanBatch::from_json(&buf).unwrap(),
                        _ => SpanBatch::scan(bytes::Bytes::copy_from_slice(&buf)).unwrap(),
                    };
                    for (i, span) in batch.spans().iter().enumerate() {
                        let user = batch.span_attribute(i, "enduser.id");
                        if span.is_root() {
                            let user = user.and_then(|u| u.as_str()).unwrap().to_string();
                            assert!(user.starts_with("user-000") && user.len() == 13, "{user}");
                            users.insert(user);
                        } else {
                            assert!(user.is_none());
                        }
                    }
                }
            }
            assert!(users.len() > 35, "{} distinct of 40", users.len());
        }
    }

    #[test]
    fn links_point_at_other_traces_of_the_same_round() {
        let t = Template::new(&shape(), MIX, Encoding::Proto, 1_763_000_000_000_000_000);
        let round: std::collections::HashSet<[u8; 16]> =
            t.round_traces(5).map(|(id, _, _)| id).collect();
        let mut links = 0;
        let mut buf = Vec::new();
        for p in 0..t.parts.len() {
            t.write_request(5, p, &mut buf);
            let request = ExportTraceServiceRequest::decode(buf.as_slice()).unwrap();
            for span in request
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
            {
                for link in &span.links {
                    assert!(round.contains(&link.trace_id[..]), "link to the round");
                    assert_ne!(link.trace_id, span.trace_id);
                    links += 1;
                }
            }
        }
        // Spans 4 and 9 of each of 20 traces.
        assert_eq!(links, 40);
    }

    #[test]
    fn span_counts_vary_per_trace_within_the_range() {
        for encoding in [Encoding::Grpc, Encoding::Json] {
            let shape = Shape {
                spans_per_trace: 1,
                max_spans_per_trace: 20,
                parts: 4,
                ..shape()
            };
            let t = Template::new(&shape, MIX, encoding, 1_763_000_000_000_000_000);
            let counts: std::collections::HashSet<usize> = t.trace_spans.iter().copied().collect();
            assert!(counts.len() > 5, "{counts:?}");
            assert!(counts.iter().all(|n| (1..=20).contains(n)));
            assert_eq!(
                t.parts.iter().map(|p| p.spans).sum::<usize>(),
                t.spans_per_round()
            );
            let traces = decode_round(&t, 3);
            for (id, class, n) in t.round_traces(3) {
                let (root, error, spans) = traces[&id];
                assert_eq!(spans, n);
                assert_eq!(error, class == Class::Error);
                assert_eq!(root == 2_000_000_000, class == Class::Slow);
            }
        }
    }

    #[test]
    fn rounds_have_distinct_ids_and_shares_follow_the_mix() {
        let n = 200_000u64;
        let mut counts = HashMap::new();
        for seq in 0..n {
            *counts.entry(MIX.class(seq)).or_insert(0u64) += 1;
        }
        let share = |c| counts[&c] as f64 / n as f64;
        assert!((share(Class::Error) - 0.2).abs() < 0.005);
        assert!((share(Class::Slow) - 0.3).abs() < 0.005);
        let ids: std::collections::HashSet<_> = (0..n).map(|s| MIX.trace_id(s)).collect();
        assert_eq!(ids.len(), n as usize);
    }
}
