//! Pre-encoded request templates.
//!
//! A *round* is `traces` traces of `spans_per_trace` spans each (or, with a
//! range, a fixed draw from it per trace slot), sent as
//! `parts` requests: span `i` belongs to service `i % services`, and a
//! service's spans go to part `service % parts`, so every request holds the
//! spans of a few services for all traces of the round, as an agent or an
//! SDK batch would send them, and every trace is spread over all parts.
//!
//! Values vary as in real traffic without encoding anything in the timed
//! part: each part is encoded in [`VARIANTS`] value draws (routes, methods,
//! HTTP status codes, SQL statements, peers, user agents, span names per
//! route, child span timings, pods), and a round uses the draw its number
//! picks. Per trace, fixed-width bytes are patched in place: the trace ids,
//! the class's bytes (the error span's status code and 5xx HTTP status, the
//! slow root's end time), the root's `enduser.id` (a million users) and the
//! numeric id in its `url.path`. Where those bytes are is found by encoding
//! a draw again with every such value changed and comparing, so the same
//! code serves protobuf and JSON. Jaeger requests (api_v2 and thrift) are
//! assembled from per-span encodings instead (see `jaeger.rs` and
//! `jaeger_thrift.rs`).

use bytes::BytesMut;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;

/// Value draws each part is encoded in.
pub const VARIANTS: usize = 8;

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
    /// Typical root span duration of normal and error traces (each root
    /// lasts 0.5–1.5 × this), nanoseconds.
    pub normal_duration_ns: u64,
    /// Shortest root span duration of slow traces (each lasts 1–1.5 ×
    /// this), nanoseconds.
    pub slow_duration_ns: u64,
}

impl Shape {
    /// The root durations of trace slot `t` in value draw `values`, if its
    /// trace is normal (or error) and if it is slow: 0.5–1.5 × the normal
    /// duration, 1–1.5 × the slow one.
    pub fn root_durations(&self, values: usize, t: usize) -> (u64, u64) {
        let r = splitmix64(((values as u64) << 40) ^ t as u64 ^ 0xD0_4A7E);
        let normal = self.normal_duration_ns / 2 + r % (self.normal_duration_ns + 1);
        let slow = self.slow_duration_ns + (r >> 17) % (self.slow_duration_ns / 2 + 1);
        (normal, slow)
    }

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
    /// Jaeger api_v2 `PostSpansRequest` with the gRPC message prefix, one
    /// service per request.
    Jaeger,
    /// A `jaeger.thrift` `Batch` in the binary protocol, as `POST
    /// /api/traces` carries it, one service per request.
    ThriftBinary,
    /// An agent `emitBatch` call in the compact protocol, as a UDP packet
    /// to port 6831 carries it, one service per request.
    ThriftCompact,
}

impl Encoding {
    /// Jaeger's encodings, whose requests are written per span, one
    /// service (process) per request.
    pub fn is_jaeger(self) -> bool {
        matches!(
            self,
            Encoding::Jaeger | Encoding::ThriftBinary | Encoding::ThriftCompact
        )
    }
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

/// Bytes that depend on the trace's class: `on` for traces of `class`,
/// `off` for the others.
struct ClassPatch {
    offset: u32,
    class: Class,
    off: Vec<u8>,
    on: Vec<u8>,
}

/// An 8-character field holding a per-trace value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Digits {
    /// The root's `enduser.id`: 8 hex digits, one of [`USERS`].
    User,
    /// The numeric id in the root's `url.path`: 8 decimal digits.
    PathId,
}

impl Digits {
    pub fn write(self, seq: u64, out: &mut [u8]) {
        match self {
            Digits::User => {
                let user = (splitmix64(seq ^ 0x05E5) % USERS) as u32;
                hex_encode(&user.to_be_bytes(), out);
            }
            Digits::PathId => {
                let mut id = splitmix64(seq ^ 0x9A7B) % 100_000_000;
                for d in out[..8].iter_mut().rev() {
                    *d = b'0' + (id % 10) as u8;
                    id /= 10;
                }
            }
        }
    }
}

/// Where one trace's per-round bytes are in an encoded request (or span).
#[derive(Default)]
pub(crate) struct TracePatches {
    /// The trace id (16 bytes, or 32 hex digits in JSON).
    pub ids: Vec<u32>,
    class: Vec<ClassPatch>,
    pub digits: Vec<(u32, Digits)>,
}

impl TracePatches {
    /// Writes trace `seq` (id `id`, class `class`) into `out[at..]`.
    pub fn apply(
        &self,
        out: &mut [u8],
        at: usize,
        seq: u64,
        id: &[u8; 16],
        class: Class,
        json: bool,
    ) {
        if json {
            let mut hex = [0u8; 32];
            hex_encode(id, &mut hex);
            for &o in &self.ids {
                out[at + o as usize..][..32].copy_from_slice(&hex);
            }
        } else {
            for &o in &self.ids {
                out[at + o as usize..][..16].copy_from_slice(id);
            }
        }
        for c in &self.class {
            let v = if class == c.class { &c.on } else { &c.off };
            out[at + c.offset as usize..][..v.len()].copy_from_slice(v);
        }
        for &(o, d) in &self.digits {
            d.write(seq, &mut out[at + o as usize..][..8]);
        }
    }
}

/// One value draw of a part, encoded once, with where to patch it.
struct Patched {
    bytes: Vec<u8>,
    traces: Vec<TracePatches>,
}

enum Body {
    Patched(Patched),
    Jaeger(crate::jaeger::Chunks),
    Thrift(crate::jaeger_thrift::ThriftChunks),
}

/// One request of a round, in every value draw.
pub struct Part {
    pub spans: usize,
    bodies: Vec<Body>,
}

pub struct Template {
    pub parts: Vec<Part>,
    pub encoding: Encoding,
    /// Spans of each trace slot.
    pub trace_spans: Vec<usize>,
    pub traces_per_round: usize,
    pub mix: Mix,
}

#[cfg(test)]
mod tests;
mod traffic;

pub(crate) use traffic::*;

impl Template {
    pub fn new(shape: &Shape, mix: Mix, encoding: Encoding, base_time_ns: u64) -> Template {
        assert!(shape.spans_per_trace >= 1 && shape.traces_per_round >= 1);
        let services = shape.services.clamp(1, SERVICES.len());
        let max_spans = shape.max_spans_per_trace.max(shape.spans_per_trace);
        let parts = match encoding {
            // Jaeger sends one process per batch: one request per service.
            e if e.is_jaeger() => services.min(max_spans),
            _ => shape.parts.clamp(1, services.min(max_spans)),
        };
        let layout = Layout {
            shape,
            services,
            parts,
            base_time_ns,
        };
        let mut out = Vec::new();
        for p in 0..parts {
            let order = layout.order(p);
            if order.is_empty() {
                // No trace slot reaches this part's services.
                continue;
            }
            let bodies = (0..VARIANTS)
                .map(|v| match encoding {
                    Encoding::Jaeger => {
                        Body::Jaeger(crate::jaeger::Chunks::new(&layout, p, v, &order))
                    }
                    Encoding::ThriftBinary | Encoding::ThriftCompact => {
                        let wire = if encoding == Encoding::ThriftBinary {
                            crate::jaeger_thrift::Wire::Binary
                        } else {
                            crate::jaeger_thrift::Wire::Compact
                        };
                        Body::Thrift(crate::jaeger_thrift::ThriftChunks::new(
                            wire, &layout, p, v, &order,
                        ))
                    }
                    _ => Body::Patched(patched(&layout, p, v, encoding, &order)),
                })
                .collect();
            out.push(Part {
                spans: order.len(),
                bodies,
            });
        }
        Template {
            parts: out,
            encoding,
            trace_spans: (0..shape.traces_per_round)
                .map(|t| shape.spans_of(t))
                .collect(),
            traces_per_round: shape.traces_per_round,
            mix,
        }
    }

    pub fn spans_per_round(&self) -> usize {
        self.trace_spans.iter().sum()
    }

    /// The value draw round `round` uses.
    fn variant(&self, round: u64) -> usize {
        (splitmix64(round ^ self.mix.seed ^ 0x7A51_D0E5) % VARIANTS as u64) as usize
    }

    /// How many buffers a sender keeps: one per distinct OTLP request body,
    /// so a buffer is reused without copying its template again; one for
    /// Jaeger, whose requests are written whole (a buffer that stays in
    /// cache).
    pub fn slots(&self) -> usize {
        match self.encoding {
            e if e.is_jaeger() => 1,
            _ => self.parts.len() * VARIANTS,
        }
    }

    /// The buffer slot of part `part` of round `round`.
    pub fn slot(&self, round: u64, part: usize) -> usize {
        match self.encoding {
            e if e.is_jaeger() => 0,
            _ => part * VARIANTS + self.variant(round),
        }
    }

    /// Trace slot `t` of round `round`: (sequence number, id, class).
    pub(crate) fn trace(&self, round: u64, t: usize) -> (u64, [u8; 16], Class) {
        let seq = round * self.traces_per_round as u64 + t as u64;
        (seq, self.mix.trace_id(seq), self.mix.class(seq))
    }

    /// Part `part` of round `round`, written into `buf`: the buffer of
    /// its slot (for OTLP only the per-round bytes are written again), or
    /// `None` for a fresh one.
    pub fn fill(&self, round: u64, part: usize, buf: Option<BytesMut>) -> BytesMut {
        match &self.parts[part].bodies[self.variant(round)] {
            Body::Patched(p) => {
                let mut buf = buf.unwrap_or_else(|| BytesMut::from(&p.bytes[..]));
                let json = self.encoding == Encoding::Json;
                for (t, patches) in p.traces.iter().enumerate() {
                    let (seq, id, class) = self.trace(round, t);
                    patches.apply(&mut buf, 0, seq, &id, class, json);
                }
                buf
            }
            Body::Jaeger(chunks) => {
                let mut buf = buf.unwrap_or_default();
                buf.clear();
                chunks.write(self, round, &mut buf);
                buf
            }
            Body::Thrift(chunks) => {
                let mut buf = buf.unwrap_or_default();
                buf.clear();
                chunks.write(self, round, &mut buf);
                buf
            }
        }
    }

    /// Writes part `part` of round `round` into `out` (cleared first).
    #[cfg(test)]
    pub fn write_request(&self, round: u64, part: usize, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.fill(round, part, None));
    }

    /// Encoded bytes per trace (uncompressed, with its share of resources
    /// and scopes), averaged over the value draws.
    pub fn bytes_per_trace(&self) -> u64 {
        let total: usize = self
            .parts
            .iter()
            .flat_map(|p| &p.bodies)
            .map(|b| match b {
                Body::Patched(p) => p.bytes.len(),
                Body::Jaeger(c) => c.len(),
                Body::Thrift(c) => c.len(),
            })
            .sum();
        (total / VARIANTS / self.traces_per_round) as u64
    }

    /// The traces of round `round`: (trace id, class, spans).
    pub fn round_traces(&self, round: u64) -> impl Iterator<Item = ([u8; 16], Class, usize)> + '_ {
        (0..self.traces_per_round).map(move |t| {
            let (_, id, class) = self.trace(round, t);
            (id, class, self.trace_spans[t])
        })
    }
}

/// Value draw `values` of part `p`, encoded, with where its per-trace
/// bytes are.
fn patched(
    layout: &Layout,
    p: usize,
    values: usize,
    encoding: Encoding,
    order: &[(usize, usize)],
) -> Patched {
    let encode = |v: Variant| encode(layout.request(p, &v), encoding);
    let base_variant = Variant::base(values);
    let base = encode(base_variant);
    let flipped_ids = encode(Variant {
        ids: &|t| placeholder(t).map(|b| !b),
        ..base_variant
    });
    let errors = encode(Variant {
        error_code: status::StatusCode::Error,
        ..base_variant
    });
    let http_errors = encode(Variant {
        http_error: true,
        ..base_variant
    });
    let slow = encode(Variant {
        slow: true,
        ..base_variant
    });
    let users = encode(Variant {
        user_digit: 'f',
        ..base_variant
    });
    let paths = encode(Variant {
        path_digit: '9',
        ..base_variant
    });
    let json = encoding == Encoding::Json;
    let id_len = if json { 32 } else { 16 };
    let shape = layout.shape;
    let traces = shape.traces_per_round;
    let mut out = Patched {
        bytes: base.clone(),
        traces: (0..traces).map(|_| TracePatches::default()).collect(),
    };
    // The trace ids in the order they are written: the span's own, then
    // its link's (Span.links comes after Span.trace_id in both encodings).
    let id_order: Vec<usize> = order
        .iter()
        .flat_map(|&(t, i)| std::iter::once(t).chain(link_target(t, i, traces)))
        .collect();
    let id_runs = runs(&base, &flipped_ids, 0);
    assert_eq!(
        id_runs.len(),
        id_order.len(),
        "one trace id per span and link"
    );
    for (&t, &(lo, hi)) in id_order.iter().zip(&id_runs) {
        assert_eq!(hi - lo, id_len, "whole trace ids differ");
        out.traces[t].ids.push(lo as u32);
    }
    // The span that carries an error trace's ERROR status: its last.
    let candidates: Vec<usize> = order
        .iter()
        .filter(|&&(t, i)| i == shape.spans_of(t) - 1)
        .map(|&(t, _)| t)
        .collect();
    let roots: Vec<usize> = order
        .iter()
        .filter(|&&(_, i)| i == 0)
        .map(|&(t, _)| t)
        .collect();
    let diffs = runs(&base, &errors, 0);
    assert_eq!(diffs.len(), candidates.len(), "one status code per trace");
    for (&t, (lo, hi)) in candidates.iter().zip(diffs) {
        assert_eq!(hi - lo, 1);
        // OK (1) was encoded; UNSET (0) and ERROR (2) are one below and
        // above, as a byte or as a JSON digit.
        let ok = base[lo];
        out.traces[t].class.push(ClassPatch {
            offset: lo as u32,
            class: Class::Error,
            off: vec![ok - 1],
            on: vec![ok + 1],
        });
    }
    let mut class_bytes = |other: &[u8], join: usize, class: Class, slots: &[usize]| {
        let diffs = runs(&base, other, join);
        assert!(
            diffs.is_empty() || diffs.len() == slots.len(),
            "{class:?}: {} changes for {} traces",
            diffs.len(),
            slots.len()
        );
        for (&t, (lo, hi)) in slots.iter().zip(diffs) {
            out.traces[t].class.push(ClassPatch {
                offset: lo as u32,
                class,
                off: base[lo..hi].to_vec(),
                on: other[lo..hi].to_vec(),
            });
        }
    };
    // A 5xx: a varint of two bytes or three JSON digits.
    class_bytes(&http_errors, 3, Class::Error, &candidates);
    // A fixed64, or up to 19 JSON digits.
    let time_len = if json { 19 } else { 8 };
    class_bytes(&slow, time_len, Class::Slow, &roots);
    for (other, digits) in [(&users, Digits::User), (&paths, Digits::PathId)] {
        let diffs = runs(&base, other, 0);
        assert!(diffs.is_empty() || diffs.len() == roots.len(), "{digits:?}");
        for (&t, (lo, hi)) in roots.iter().zip(diffs) {
            assert_eq!(hi - lo, 8);
            out.traces[t].digits.push((lo as u32, digits));
        }
    }
    out
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

fn encode(request: ExportTraceServiceRequest, encoding: Encoding) -> Vec<u8> {
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
        Encoding::Jaeger | Encoding::ThriftBinary | Encoding::ThriftCompact => {
            unreachable!("Jaeger requests are assembled per span")
        }
    }
}

pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
