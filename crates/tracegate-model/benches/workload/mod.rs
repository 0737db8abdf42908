//! The benchmark workload shared by the criterion bench and the callgrind
//! profile: 10-span traces, 8 attributes per span, 100 spans per request.

use tracegate_model::otlp::{
    any_value, ExportTraceServiceRequest, InstrumentationScope, KeyValue, Resource, ResourceSpans,
    ScopeSpans, Span, Status,
};
use tracegate_model::otlp::{kv, string_kv as string};

pub const TRACES_PER_REQUEST: usize = 10;
pub const SPANS_PER_TRACE: usize = 10;
pub const SPANS_PER_REQUEST: usize = TRACES_PER_REQUEST * SPANS_PER_TRACE;

fn int(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

/// One request of `TRACES_PER_REQUEST` traces whose ids start at `first`.
pub fn request(first: u64) -> ExportTraceServiceRequest {
    let mut spans = Vec::with_capacity(SPANS_PER_REQUEST);
    for t in 0..TRACES_PER_REQUEST as u64 {
        let trace = first + t;
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&(trace.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_be_bytes());
        trace_id[8..].copy_from_slice(&trace.to_be_bytes());
        let start = 1_718_000_000_000_000_000 + trace * 1_000_000;
        for s in 0..SPANS_PER_TRACE as u64 {
            let span_id = (trace << 8 | (s + 1)).to_be_bytes();
            let parent = if s == 0 {
                Vec::new()
            } else {
                (trace << 8 | 1).to_be_bytes().to_vec()
            };
            spans.push(Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                parent_span_id: parent,
                name: format!("GET /api/v1/orders/{{id}}/items/{s}"),
                kind: if s == 0 { 2 } else { 3 },
                start_time_unix_nano: start + s * 10_000,
                end_time_unix_nano: start + s * 10_000 + 250_000,
                flags: 0x101,
                attributes: vec![
                    string("http.request.method", "GET"),
                    string("http.route", "/api/v1/orders/{id}"),
                    int("http.response.status_code", 200),
                    string(
                        "url.full",
                        "https://shop.example.com/api/v1/orders/12345?expand=items",
                    ),
                    string("server.address", "orders-db.prod.svc.cluster.local"),
                    int("server.port", 5432),
                    string("db.query.text", "SELECT * FROM orders WHERE id = $1"),
                    string(
                        "user_agent.original",
                        "Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0",
                    ),
                ],
                status: Some(Status {
                    message: String::new(),
                    code: if s == 9 { 2 } else { 0 },
                }),
                ..Default::default()
            });
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    string("service.name", "checkout"),
                    string("service.version", "1.42.0"),
                    string("deployment.environment.name", "production"),
                    string("k8s.pod.name", "checkout-7d9f8c6b5-x2x9z"),
                    string("host.name", "gpu-node-17"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "io.opentelemetry.okhttp-3.0".into(),
                    version: "2.4.0".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// 1 trace of 10 survives: the last byte of the trace id is its number.
pub fn sampled(trace_id: &[u8]) -> bool {
    trace_id.last().is_some_and(|b| b % 10 == 0)
}
