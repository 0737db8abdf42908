//! What the generated traffic looks like: services, span roles, value draws
//! (routes, methods, status codes, statements, peers, user agents), the
//! resource of each service, and how a round's spans are laid out.

use super::*;

pub(super) const SERVICES: [&str; 10] = [
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

pub(super) use tracegate_model::otlp::kv;

pub(super) fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

pub(super) fn int(v: i64) -> any_value::Value {
    any_value::Value::IntValue(v)
}

/// A weighted choice by `r`.
pub(super) fn pick<T: Copy>(r: u64, choices: &[(T, u32)]) -> T {
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
pub(super) const RESOURCES: [&str; 8] = [
    "items",
    "orders",
    "users",
    "carts",
    "payments",
    "shipments",
    "reviews",
    "coupons",
];
pub(super) const ROUTE_FORMS: [&str; 5] = [
    "/api/v1/{r}/{id}",
    "/api/v1/{r}/{id}/history",
    "/api/v2/{r}/{id}",
    "/api/v1/{r}/{id}/status",
    "/{r}/{id}",
];
pub(super) const METHODS: [(&str, u32); 4] = [("GET", 70), ("POST", 20), ("PUT", 5), ("DELETE", 5)];
pub(super) const OK_CODES: [(i64, u32); 5] = [(200, 80), (201, 8), (204, 5), (404, 5), (304, 2)];
pub(super) const ERROR_CODES: [(i64, u32); 3] = [(500, 50), (502, 20), (503, 30)];
pub(super) const USER_AGENTS: [&str; 6] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "okhttp/4.12.0",
    "python-requests/2.32.3",
];
/// (statement, operation, table)
pub(super) const STATEMENTS: [(&str, &str, &str); 12] = [
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
pub(super) const RPC_METHODS: [&str; 8] = [
    "GetItem",
    "ListItems",
    "Reserve",
    "Charge",
    "Quote",
    "Convert",
    "Recommend",
    "Send",
];
pub(super) const FUNCTIONS: [&str; 8] = [
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
pub(super) enum Role {
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

pub(super) fn ip(r: u64) -> String {
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
pub(super) const USERS: u64 = 1_000_000;

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

pub(super) fn span_id(trace: usize, i: usize) -> Vec<u8> {
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
pub(super) fn describe(
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

pub(super) fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// Service `svc`'s resource in value draw `values`: one of three pods on
/// one of four nodes, one of two versions.
pub(super) fn resource(svc: usize, values: usize) -> Resource {
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
