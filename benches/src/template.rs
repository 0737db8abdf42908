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
//! code serves protobuf and JSON. Jaeger requests are assembled from
//! per-span encodings instead (see `jaeger.rs`).

use bytes::BytesMut;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
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

fn int(v: i64) -> any_value::Value {
    any_value::Value::IntValue(v)
}

/// A weighted choice by `r`.
fn pick<T: Copy>(r: u64, choices: &[(T, u32)]) -> T {
    let total: u32 = choices.iter().map(|c| c.1).sum();
    let mut x = (r % total as u64) as u32;
    for &(v, w) in choices {
        if x < w {
            return v;
        }
        x -= w;
    }
    choices[choices.len() - 1].0
}

/// 8 resources × 5 forms: 40 routes, each with a numeric id.
const RESOURCES: [&str; 8] = [
    "items",
    "orders",
    "users",
    "carts",
    "payments",
    "shipments",
    "reviews",
    "coupons",
];
const ROUTE_FORMS: [&str; 5] = [
    "/api/v1/{r}/{id}",
    "/api/v1/{r}/{id}/history",
    "/api/v2/{r}/{id}",
    "/api/v1/{r}/{id}/status",
    "/{r}/{id}",
];
const METHODS: [(&str, u32); 4] = [("GET", 70), ("POST", 20), ("PUT", 5), ("DELETE", 5)];
const OK_CODES: [(i64, u32); 5] = [(200, 80), (201, 8), (204, 5), (404, 5), (304, 2)];
const ERROR_CODES: [(i64, u32); 3] = [(500, 50), (502, 20), (503, 30)];
const USER_AGENTS: [&str; 6] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "okhttp/4.12.0",
    "python-requests/2.32.3",
];
/// (statement, operation, table)
const STATEMENTS: [(&str, &str, &str); 12] = [
    (
        "SELECT id, name, price FROM items WHERE id = $1",
        "SELECT",
        "items",
    ),
    (
        "SELECT * FROM orders WHERE user_id = $1 ORDER BY created_at DESC LIMIT 20",
        "SELECT",
        "orders",
    ),
    (
        "INSERT INTO orders (user_id, total, currency) VALUES ($1, $2, $3) RETURNING id",
        "INSERT",
        "orders",
    ),
    (
        "UPDATE carts SET updated_at = now() WHERE id = $1",
        "UPDATE",
        "carts",
    ),
    (
        "SELECT quantity FROM stock WHERE item_id = $1 FOR UPDATE",
        "SELECT",
        "stock",
    ),
    (
        "DELETE FROM cart_items WHERE cart_id = $1 AND item_id = $2",
        "DELETE",
        "cart_items",
    ),
    (
        "SELECT u.id, u.email FROM users u WHERE u.id = $1",
        "SELECT",
        "users",
    ),
    (
        "INSERT INTO payments (order_id, amount, status) VALUES ($1, $2, 'pending')",
        "INSERT",
        "payments",
    ),
    (
        "UPDATE shipments SET status = $2 WHERE order_id = $1",
        "UPDATE",
        "shipments",
    ),
    (
        "SELECT rate FROM currency_rates WHERE base = $1 AND quote = $2",
        "SELECT",
        "currency_rates",
    ),
    (
        "SELECT r.score, r.body FROM reviews r WHERE r.item_id = $1 LIMIT 10",
        "SELECT",
        "reviews",
    ),
    (
        "UPDATE coupons SET used = used + 1 WHERE code = $1",
        "UPDATE",
        "coupons",
    ),
];
const RPC_METHODS: [&str; 8] = [
    "GetItem",
    "ListItems",
    "Reserve",
    "Charge",
    "Quote",
    "Convert",
    "Recommend",
    "Send",
];
const FUNCTIONS: [&str; 8] = [
    "render_page",
    "apply_discounts",
    "compute_tax",
    "validate_cart",
    "serialize_response",
    "load_feature_flags",
    "rank_candidates",
    "build_email",
];

/// What a span does, by its place in the trace: the root serves an HTTP
/// request, the error-candidate (last) span calls another service over
/// HTTP, the others query a database, call over gRPC, do internal work or
/// serve an HTTP call from a parent.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    HttpServer,
    HttpClient,
    Db,
    Rpc,
    Internal,
}

impl Role {
    fn of(i: usize, n: usize) -> Role {
        if i == 0 {
            Role::HttpServer
        } else if i == n - 1 {
            Role::HttpClient
        } else {
            [Role::HttpServer, Role::Db, Role::Rpc, Role::Internal][i % 4]
        }
    }

    fn kind(self) -> span::SpanKind {
        match self {
            Role::HttpServer => span::SpanKind::Server,
            Role::HttpClient | Role::Db | Role::Rpc => span::SpanKind::Client,
            Role::Internal => span::SpanKind::Internal,
        }
    }
}

fn ip(r: u64) -> String {
    format!(
        "10.{}.{}.{}",
        (r >> 8) % 8,
        (r >> 16) % 256,
        1 + (r >> 24) % 254
    )
}

/// The values that vary per round, for building variants of a template.
#[derive(Clone, Copy)]
pub(crate) struct Variant<'a> {
    pub ids: &'a dyn Fn(usize) -> [u8; 16],
    /// The status of each trace's error-candidate span.
    pub error_code: status::StatusCode,
    /// Whether that span's HTTP status code is a 5xx (error traces).
    pub http_error: bool,
    pub slow: bool,
    /// The character the root's `enduser.id` placeholder is written with.
    pub user_digit: char,
    /// The character the id in the root's `url.path` is written with.
    pub path_digit: char,
    /// Which value draw, `0..VARIANTS`.
    pub values: usize,
}

impl Variant<'static> {
    /// The draw `values` as the templates encode it: placeholder ids, an
    /// OK status where ERROR may go.
    pub fn base(values: usize) -> Variant<'static> {
        Variant {
            ids: &placeholder,
            error_code: status::StatusCode::Ok,
            http_error: false,
            slow: false,
            user_digit: '0',
            path_digit: '0',
            values,
        }
    }
}

/// Distinct `enduser.id` values on root spans: a high-cardinality
/// attribute that changes every round, as user ids do.
const USERS: u64 = 1_000_000;

/// The trace slot span `i` of slot `t` links to, if it has a link.
pub(crate) fn link_target(t: usize, i: usize, traces: usize) -> Option<usize> {
    (i % 5 == 4).then_some((t + 1) % traces)
}

/// A distinctive placeholder id per trace slot.
pub(crate) fn placeholder(trace: usize) -> [u8; 16] {
    let mut id = [0x5A; 16];
    id[..8].copy_from_slice(&(trace as u64 | 0x3C00_0000_0000_0000).to_be_bytes());
    id
}

fn span_id(trace: usize, i: usize) -> Vec<u8> {
    (((trace as u64) << 24) | (i as u64 + 1) | 0x0100_0000_0000_0000)
        .to_be_bytes()
        .to_vec()
}

/// How a round's spans are laid out over services and parts.
pub(crate) struct Layout<'a> {
    pub shape: &'a Shape,
    pub services: usize,
    pub parts: usize,
    pub base_time_ns: u64,
}

impl Layout<'_> {
    /// Part `p`'s spans as (trace slot, span index), in the order they are
    /// written: by service, then trace, then index.
    pub fn order(&self, p: usize) -> Vec<(usize, usize)> {
        let mut order = Vec::new();
        for svc in (0..self.services).filter(|svc| svc % self.parts == p) {
            for t in 0..self.shape.traces_per_round {
                for i in (0..self.shape.spans_of(t)).filter(|i| i % self.services == svc) {
                    order.push((t, i));
                }
            }
        }
        order
    }

    /// Part `p` of a round with the values of `v`.
    pub fn request(&self, part: usize, v: &Variant) -> ExportTraceServiceRequest {
        let mut resource_spans = Vec::new();
        for svc in (0..self.services).filter(|svc| svc % self.parts == part) {
            let mut spans = Vec::new();
            for t in 0..self.shape.traces_per_round {
                let n = self.shape.spans_of(t);
                for i in (0..n).filter(|i| i % self.services == svc) {
                    spans.push(self.span(v, t, i, n));
                }
            }
            if spans.is_empty() {
                continue;
            }
            resource_spans.push(ResourceSpans {
                resource: Some(resource(svc, v.values)),
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
        ExportTraceServiceRequest { resource_spans }
    }

    fn span(&self, v: &Variant, t: usize, i: usize, n: usize) -> Span {
        let shape = self.shape;
        let base = self.base_time_ns;
        let draw = |k: u64| {
            splitmix64(((v.values as u64) << 48) ^ ((t as u64) << 24) ^ ((i as u64) << 8) ^ k)
        };
        // The trace's root lasts 0.5–1.5 × the normal duration, or 1–1.5 ×
        // the slow one; children start and last differently in every draw,
        // always inside the normal root's time.
        let (normal, slow) = shape.root_durations(v.values, t);
        let step = normal / (2 * n as u64).max(1);
        let start = if i == 0 {
            base
        } else {
            base + i as u64 * step + draw(1) % (step / 2 + 1)
        };
        let end = if i == 0 {
            base + if v.slow { slow } else { normal }
        } else {
            start + step / 4 + draw(2) % (step + 1)
        };
        let candidate = i == n - 1;
        let status = candidate.then(|| Status {
            code: v.error_code as i32,
            message: String::new(),
        });
        let role = Role::of(i, n);
        let (name, mut attributes) = describe(role, v, &draw, i == 0, candidate);
        attributes.truncate(shape.attributes);
        // More than a role has: application attributes of a few values each.
        for k in attributes.len()..shape.attributes {
            let value = format!("value-{}", draw(100 + k as u64) % 20);
            attributes.push(kv(&format!("app.attribute_{k}"), s(&value)));
        }
        if i == 0 {
            let digits: String = std::iter::repeat_n(v.user_digit, 8).collect();
            attributes.push(kv("enduser.id", s(&format!("user-{digits}"))));
        }
        let events = if role == Role::Internal {
            vec![span::Event {
                time_unix_nano: start + (end - start) / 2,
                name: "cache.miss".into(),
                attributes: vec![kv("cache.key", s(&format!("item:{}", draw(3) % 10_000)))],
                dropped_attributes_count: 0,
            }]
        } else {
            Vec::new()
        };
        // Some spans follow from another trace of the round (a consumer
        // linking to its producer).
        let links = link_target(t, i, shape.traces_per_round)
            .map(|other| span::Link {
                trace_id: (v.ids)(other).to_vec(),
                span_id: span_id(other, 0),
                attributes: vec![kv("messaging.operation.type", s("process"))],
                ..Default::default()
            })
            .into_iter()
            .collect();
        Span {
            trace_id: (v.ids)(t).to_vec(),
            span_id: span_id(t, i),
            parent_span_id: if i == 0 {
                Vec::new()
            } else {
                span_id(t, (i - 1) / 2)
            },
            name,
            kind: role.kind() as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            events,
            links,
            status,
            ..Default::default()
        }
    }
}

/// A span's name and attributes (8 to 10; the caller keeps the first
/// `--attributes` or adds application attributes). The HTTP status code is third in both
/// HTTP roles, so the error span's 5xx is there whenever it has three.
fn describe(
    role: Role,
    v: &Variant,
    draw: &dyn Fn(u64) -> u64,
    root: bool,
    candidate: bool,
) -> (String, Vec<KeyValue>) {
    let method = pick(draw(10), &METHODS);
    let code = if candidate && v.http_error {
        pick(draw(11), &ERROR_CODES)
    } else {
        pick(draw(12), &OK_CODES)
    };
    let route =
        ROUTE_FORMS[(draw(13) % 5) as usize].replace("{r}", RESOURCES[(draw(14) % 8) as usize]);
    let digits = if root {
        std::iter::repeat_n(v.path_digit, 8).collect()
    } else {
        format!("{:08}", draw(15) % 100_000_000)
    };
    let path = route.replace("{id}", &digits);
    let peer = SERVICES[(draw(16) % SERVICES.len() as u64) as usize];
    let peer_host = format!("{peer}.shop.svc.cluster.local");
    match role {
        Role::HttpServer => (
            format!("{method} {route}"),
            vec![
                kv("http.request.method", s(method)),
                kv("http.route", s(&route)),
                kv("http.response.status_code", int(code)),
                kv("url.path", s(&path)),
                kv(
                    "url.scheme",
                    s(pick(draw(17), &[("https", 9), ("http", 1)])),
                ),
                kv("server.address", s(&peer_host)),
                kv(
                    "user_agent.original",
                    s(USER_AGENTS[(draw(18) % USER_AGENTS.len() as u64) as usize]),
                ),
                kv("client.address", s(&ip(draw(19)))),
                kv(
                    "network.protocol.version",
                    s(pick(draw(20), &[("1.1", 3), ("2", 7)])),
                ),
                kv("server.port", int(8080)),
            ],
        ),
        Role::HttpClient => (
            method.to_string(),
            vec![
                kv("http.request.method", s(method)),
                kv("server.address", s(&peer_host)),
                kv("http.response.status_code", int(code)),
                kv("url.full", s(&format!("http://{peer_host}:8080{path}"))),
                kv("server.port", int(8080)),
                kv("network.peer.address", s(&ip(draw(21)))),
                kv("http.request.resend_count", int((draw(22) % 3) as i64)),
                kv("network.protocol.version", s("1.1")),
                kv("url.scheme", s("http")),
            ],
        ),
        Role::Db => {
            let (statement, op, table) = STATEMENTS[(draw(23) % STATEMENTS.len() as u64) as usize];
            (
                format!("{op} shop.{table}"),
                vec![
                    kv("db.system", s("postgresql")),
                    kv("db.statement", s(statement)),
                    kv("db.operation.name", s(op)),
                    kv("db.collection.name", s(table)),
                    kv("db.namespace", s("shop")),
                    kv(
                        "server.address",
                        s(&format!("pg-{}.shop.svc.cluster.local", draw(24) % 3)),
                    ),
                    kv("server.port", int(5432)),
                    kv("network.peer.address", s(&ip(draw(25)))),
                    kv("db.response.returned_rows", int((draw(26) % 50) as i64)),
                ],
            )
        }
        Role::Rpc => {
            let service = format!("shop.{peer}.v1.{}Service", capitalized(peer));
            let rpc_method = RPC_METHODS[(draw(27) % RPC_METHODS.len() as u64) as usize];
            (
                format!("{service}/{rpc_method}"),
                vec![
                    kv("rpc.system", s("grpc")),
                    kv("rpc.service", s(&service)),
                    kv("rpc.method", s(rpc_method)),
                    kv("server.address", s(&peer_host)),
                    kv("server.port", int(50051)),
                    kv("rpc.grpc.status_code", int(0)),
                    kv("network.peer.address", s(&ip(draw(28)))),
                    kv("network.transport", s("tcp")),
                    kv(
                        "retry",
                        any_value::Value::BoolValue(draw(29).is_multiple_of(10)),
                    ),
                ],
            )
        }
        Role::Internal => {
            let function = FUNCTIONS[(draw(30) % FUNCTIONS.len() as u64) as usize];
            (
                function.to_string(),
                vec![
                    kv("code.function.name", s(function)),
                    kv("code.namespace", s("shop.core")),
                    kv(
                        "customer.tier",
                        s(pick(draw(31), &[("bronze", 6), ("silver", 3), ("gold", 1)])),
                    ),
                    kv(
                        "cache.hit",
                        any_value::Value::BoolValue(!draw(32).is_multiple_of(4)),
                    ),
                    kv("items.count", int((1 + draw(33) % 20) as i64)),
                    kv(
                        "feature_flag.key",
                        s(["new-checkout", "fast-search", "recs-v2"][(draw(34) % 3) as usize]),
                    ),
                    kv("thread.name", s(&format!("worker-{}", draw(35) % 16))),
                    kv(
                        "retry",
                        any_value::Value::BoolValue(draw(36).is_multiple_of(10)),
                    ),
                ],
            )
        }
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// Service `svc`'s resource in value draw `values`: one of three pods on
/// one of four nodes, one of two versions.
fn resource(svc: usize, values: usize) -> Resource {
    let name = SERVICES[svc];
    let r = splitmix64(((values as u64) << 32) ^ svc as u64 ^ 0x9E50);
    Resource {
        attributes: vec![
            kv("service.name", s(name)),
            kv("service.version", s(["1.4.2", "1.5.0"][(r % 2) as usize])),
            kv("deployment.environment.name", s("prod")),
            kv("k8s.namespace.name", s("shop")),
            kv(
                "k8s.pod.name",
                s(&format!(
                    "{name}-7d9f8c6b5-{}",
                    ["x2k4p", "q8m3z", "h7t2w"][((r >> 8) % 3) as usize]
                )),
            ),
            kv("k8s.node.name", s(&format!("node-{}", 1 + (r >> 16) % 4))),
        ],
        ..Default::default()
    }
}

impl Template {
    pub fn new(shape: &Shape, mix: Mix, encoding: Encoding, base_time_ns: u64) -> Template {
        assert!(shape.spans_per_trace >= 1 && shape.traces_per_round >= 1);
        let services = shape.services.clamp(1, SERVICES.len());
        let max_spans = shape.max_spans_per_trace.max(shape.spans_per_trace);
        let parts = match encoding {
            // Jaeger sends one process per batch: one request per service.
            Encoding::Jaeger => services.min(max_spans),
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
            Encoding::Jaeger => 1,
            _ => self.parts.len() * VARIANTS,
        }
    }

    /// The buffer slot of part `part` of round `round`.
    pub fn slot(&self, round: u64, part: usize) -> usize {
        match self.encoding {
            Encoding::Jaeger => 0,
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
        Encoding::Jaeger => unreachable!("Jaeger requests are assembled per span"),
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
    use std::collections::{HashMap, HashSet};
    use tracegate_model::{AnyValueRef, SpanBatch, StatusCode};

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

    const ALL: [Encoding; 4] = [
        Encoding::Grpc,
        Encoding::Proto,
        Encoding::Json,
        Encoding::Jaeger,
    ];

    /// A request as tracegate reads it; Jaeger through the model's mapping,
    /// as tracegate's Jaeger receiver does.
    fn decode(encoding: Encoding, buf: &[u8]) -> SpanBatch {
        let framed = || {
            assert_eq!(&buf[1..5], &((buf.len() - 5) as u32).to_be_bytes());
            &buf[5..]
        };
        match encoding {
            Encoding::Grpc => SpanBatch::scan(bytes::Bytes::copy_from_slice(framed())).unwrap(),
            Encoding::Proto => SpanBatch::scan(bytes::Bytes::copy_from_slice(buf)).unwrap(),
            Encoding::Json => SpanBatch::from_json(buf).unwrap(),
            Encoding::Jaeger => {
                let request =
                    tracegate_model::jaeger::proto::PostSpansRequest::decode(framed()).unwrap();
                tracegate_model::jaeger::span_batch_from_batches(request.batch).unwrap()
            }
        }
    }

    /// Every request of a round, decoded.
    fn round_batches(t: &Template, round: u64) -> Vec<SpanBatch> {
        let mut buf = Vec::new();
        (0..t.parts.len())
            .map(|p| {
                t.write_request(round, p, &mut buf);
                decode(t.encoding, &buf)
            })
            .collect()
    }

    fn status_code(batch: &SpanBatch, i: usize) -> Option<i64> {
        match batch.span_attribute(i, "http.response.status_code") {
            Some(AnyValueRef::Int(c)) => Some(c),
            _ => None,
        }
    }

    /// Every span of a round, by trace: (root duration, has an error span,
    /// spans). Checks that HTTP status codes are 5xx on error spans only.
    fn decode_round(t: &Template, round: u64) -> HashMap<[u8; 16], (u64, bool, usize)> {
        let mut traces: HashMap<[u8; 16], (u64, bool, usize)> = HashMap::new();
        for batch in round_batches(t, round) {
            for (i, s) in batch.spans().iter().enumerate() {
                let e = traces.entry(s.trace_id).or_default();
                e.2 += 1;
                let error = s.status == StatusCode::Error;
                e.1 |= error;
                assert_ne!(s.status, StatusCode::Ok);
                if let Some(code) = status_code(&batch, i) {
                    assert_eq!(code >= 500, error, "{:?}: {code}", t.encoding);
                }
                if s.is_root() {
                    e.0 = s.end_time_unix_nano - s.start_time_unix_nano;
                }
            }
        }
        traces
    }

    #[test]
    fn rounds_carry_their_ids_and_classes_in_every_encoding() {
        for encoding in ALL {
            let t = Template::new(&shape(), MIX, encoding, 1_763_000_000_000_000_000);
            let parts = if encoding == Encoding::Jaeger { 10 } else { 3 };
            assert_eq!(t.parts.len(), parts);
            assert_eq!(t.parts.iter().map(|p| p.spans).sum::<usize>(), 200);
            let mut seen_classes = HashMap::new();
            let mut roots = HashSet::new();
            let rounds = [0, 1, 77].into_iter().chain(100..120);
            let variants: HashSet<usize> = rounds.clone().map(|r| t.variant(r)).collect();
            assert!(variants.len() > VARIANTS / 2, "{variants:?}");
            for round in rounds {
                let traces = decode_round(&t, round);
                assert_eq!(traces.len(), 20, "{encoding:?}");
                for (id, class, n) in t.round_traces(round) {
                    let (root, error, spans) = traces[&id];
                    assert_eq!((spans, n), (10, 10));
                    assert_eq!(error, class == Class::Error, "{encoding:?}");
                    let slow = (2_000_000_000..=3_000_000_000).contains(&root);
                    assert_eq!(slow, class == Class::Slow, "{encoding:?}");
                    assert!(slow || (50_000_000..=150_000_000).contains(&root));
                    roots.insert(root);
                    *seen_classes.entry(class).or_insert(0) += 1;
                }
            }
            assert_eq!(seen_classes.len(), 3, "all classes drawn: {seen_classes:?}");
            assert!(roots.len() > 60, "root durations vary: {}", roots.len());
        }
    }

    #[test]
    fn a_buffer_reused_for_its_slot_is_the_fresh_request() {
        for encoding in ALL {
            let t = Template::new(&shape(), MIX, encoding, 1_763_000_000_000_000_000);
            let mut bufs: Vec<Option<BytesMut>> = vec![None; t.slots()];
            for round in 0..40 {
                for p in 0..t.parts.len() {
                    let slot = t.slot(round, p);
                    let reused = t.fill(round, p, bufs[slot].take());
                    assert_eq!(reused, t.fill(round, p, None), "{encoding:?} {round} {p}");
                    bufs[slot] = Some(reused);
                }
            }
        }
    }

    #[test]
    fn root_spans_carry_a_user_id_and_a_path_id_that_change_per_trace() {
        for encoding in ALL {
            let t = Template::new(&shape(), MIX, encoding, 1_763_000_000_000_000_000);
            let mut users = HashSet::new();
            let mut paths = HashSet::new();
            for round in [0, 1] {
                for batch in round_batches(&t, round) {
                    for (i, span) in batch.spans().iter().enumerate() {
                        let user = batch.span_attribute(i, "enduser.id");
                        let path = batch.span_attribute(i, "url.path");
                        if span.is_root() {
                            let user = user.and_then(|u| u.as_str()).unwrap().to_string();
                            assert!(user.starts_with("user-000") && user.len() == 13, "{user}");
                            users.insert(user);
                            let path = path.and_then(|u| u.as_str()).unwrap().to_string();
                            let id = path.rsplit('/').find(|s| s.len() == 8).unwrap();
                            assert!(id.bytes().all(|b| b.is_ascii_digit()), "{path}");
                            paths.insert(path);
                        } else {
                            assert!(user.is_none());
                        }
                    }
                }
            }
            assert!(
                users.len() > 35,
                "{encoding:?}: {} distinct of 40",
                users.len()
            );
            assert!(
                paths.len() > 35,
                "{encoding:?}: {} distinct of 40",
                paths.len()
            );
        }
    }

    /// Distinct values of some keys over a run exceed a bound, so a
    /// compressor or a dictionary sees realistic variety.
    #[test]
    fn attribute_values_vary_as_in_real_traffic() {
        let shape = Shape {
            traces_per_round: 50,
            parts: 2,
            ..shape()
        };
        for encoding in [Encoding::Proto, Encoding::Jaeger] {
            let t = Template::new(&shape, MIX, encoding, 1_763_000_000_000_000_000);
            let mut values: HashMap<&str, HashSet<String>> = HashMap::new();
            let mut codes: HashMap<i64, usize> = HashMap::new();
            let mut names = HashSet::new();
            let mut durations = HashSet::new();
            for round in 0..24 {
                for batch in round_batches(&t, round) {
                    for (i, span) in batch.spans().iter().enumerate() {
                        names.insert(batch.span_name(i).to_string());
                        durations.insert(span.end_time_unix_nano - span.start_time_unix_nano);
                        if let Some(c) = status_code(&batch, i) {
                            *codes.entry(c).or_default() += 1;
                        }
                        for key in [
                            "http.route",
                            "url.path",
                            "db.statement",
                            "user_agent.original",
                            "server.address",
                            "client.address",
                        ] {
                            if let Some(v) = batch.span_attribute(i, key).and_then(|v| v.as_str()) {
                                values.entry(key).or_default().insert(v.to_string());
                            }
                        }
                        let pod = batch.resource_attribute(i, "k8s.pod.name");
                        let pod = pod.and_then(|v| v.as_str()).unwrap().to_string();
                        values.entry("k8s.pod.name").or_default().insert(pod);
                    }
                }
            }
            let distinct = |k| values.get(k).map_or(0, |v| v.len());
            assert!(distinct("http.route") >= 30, "{encoding:?}: {values:?}");
            // Every root's path has its trace's id: 1 200 roots.
            assert!(distinct("url.path") >= 1_200, "{encoding:?}");
            assert!(distinct("db.statement") >= 10, "{encoding:?}");
            assert_eq!(
                distinct("user_agent.original"),
                USER_AGENTS.len(),
                "{encoding:?}"
            );
            assert!(distinct("server.address") >= 10, "{encoding:?}");
            assert!(distinct("client.address") >= 200, "{encoding:?}");
            assert!(distinct("k8s.pod.name") >= 20, "{encoding:?}");
            assert!(
                names.len() >= 60,
                "{encoding:?}: {} span names",
                names.len()
            );
            assert!(durations.len() >= 500, "{encoding:?}");
            // Mostly 200, some 201/204/404, 5xx on error traces.
            let total: usize = codes.values().sum();
            assert!(codes[&200] * 10 > total * 6, "{codes:?}");
            for c in [201, 204, 404, 500, 503] {
                assert!(codes.get(&c).is_some_and(|&n| n > 0), "{c}: {codes:?}");
            }
        }
    }

    #[test]
    fn spans_carry_the_attributes_asked_for() {
        for (attributes, encoding) in [(3, Encoding::Proto), (14, Encoding::Jaeger)] {
            let shape = Shape {
                attributes,
                ..shape()
            };
            let t = Template::new(&shape, MIX, encoding, 1_763_000_000_000_000_000);
            for batch in round_batches(&t, 0) {
                for (i, span) in batch.spans().iter().enumerate() {
                    let n = batch.span_attributes(i).count();
                    // Roots add enduser.id; the Jaeger mapping's own tags
                    // (span kind, status, scope) map back to fields.
                    assert_eq!(n, attributes + span.is_root() as usize, "{encoding:?}");
                }
            }
        }
    }

    #[test]
    fn links_point_at_other_traces_of_the_same_round() {
        let t = Template::new(&shape(), MIX, Encoding::Proto, 1_763_000_000_000_000_000);
        let round: HashSet<[u8; 16]> = t.round_traces(5).map(|(id, _, _)| id).collect();
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
    fn jaeger_requests_carry_one_process_and_error_tags_only_on_error_spans() {
        let t = Template::new(&shape(), MIX, Encoding::Jaeger, 1_763_000_000_000_000_000);
        let classes: HashMap<[u8; 16], Class> = t
            .round_traces(3)
            .map(|(id, class, _)| (id, class))
            .collect();
        let mut buf = Vec::new();
        let mut error_spans = 0;
        for p in 0..t.parts.len() {
            t.write_request(3, p, &mut buf);
            let request =
                tracegate_model::jaeger::proto::PostSpansRequest::decode(&buf[5..]).unwrap();
            let batch = request.batch.unwrap();
            assert!(!batch.process.unwrap().service_name.is_empty());
            for span in &batch.spans {
                let class = classes[&span.trace_id[..]];
                let error = span.tags.iter().any(|t| t.key == "error" && t.v_bool);
                error_spans += error as usize;
                if error {
                    assert_eq!(class, Class::Error);
                }
                // References carry the parent's and the linked trace's ids.
                for r in &span.references {
                    assert!(classes.contains_key(&r.trace_id[..]));
                }
            }
        }
        let errors = classes.values().filter(|&&c| c == Class::Error).count();
        assert_eq!(error_spans, errors);
    }

    #[test]
    fn span_counts_vary_per_trace_within_the_range() {
        for encoding in [Encoding::Grpc, Encoding::Json, Encoding::Jaeger] {
            let shape = Shape {
                spans_per_trace: 1,
                max_spans_per_trace: 20,
                parts: 4,
                ..shape()
            };
            let t = Template::new(&shape, MIX, encoding, 1_763_000_000_000_000_000);
            let counts: HashSet<usize> = t.trace_spans.iter().copied().collect();
            assert!(counts.len() > 5, "{counts:?}");
            assert!(counts.iter().all(|n| (1..=20).contains(n)));
            assert_eq!(
                t.parts.iter().map(|p| p.spans).sum::<usize>(),
                t.spans_per_round()
            );
            for round in [3, 4, 5] {
                let traces = decode_round(&t, round);
                for (id, class, n) in t.round_traces(round) {
                    let (root, error, spans) = traces[&id];
                    assert_eq!(spans, n);
                    assert_eq!(error, class == Class::Error);
                    assert_eq!(root >= 2_000_000_000, class == Class::Slow);
                }
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
        let ids: HashSet<_> = (0..n).map(|s| MIX.trace_id(s)).collect();
        assert_eq!(ids.len(), n as usize);
    }
}
