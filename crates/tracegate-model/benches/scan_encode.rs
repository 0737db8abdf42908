//! Scan + subset re-encode against prost decode + encode, on the requests the
//! performance budget is stated for: 10-span traces, 8 attributes per span,
//! 100 spans per request. Throughput is in spans.
//!
//! Quick run: cargo bench -p tracegate-model --bench scan_encode -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use tracegate_model::otlp::{
    any_value, AnyValue, ExportTraceServiceRequest, InstrumentationScope, KeyValue, Resource,
    ResourceSpans, ScopeSpans, Span, Status,
};
use tracegate_model::SpanBatch;

const TRACES_PER_REQUEST: usize = 10;
const SPANS_PER_TRACE: usize = 10;
const SPANS_PER_REQUEST: usize = TRACES_PER_REQUEST * SPANS_PER_TRACE;

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// One request of `TRACES_PER_REQUEST` traces whose ids start at `first`.
fn request(first: u64) -> ExportTraceServiceRequest {
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
fn sampled(trace_id: &[u8]) -> bool {
    trace_id.last().is_some_and(|b| b % 10 == 0)
}

fn bench(c: &mut Criterion) {
    let encoded = Bytes::from(request(0).encode_to_vec());
    let batch = SpanBatch::scan(encoded.clone()).unwrap();
    assert_eq!(batch.len(), SPANS_PER_REQUEST);
    assert_eq!(
        batch.filter(|s| sampled(&s.trace_id)).len(),
        SPANS_PER_TRACE
    );
    eprintln!(
        "request: {} bytes, {} spans ({} bytes per span)",
        encoded.len(),
        batch.len(),
        encoded.len() / batch.len()
    );

    let mut g = c.benchmark_group("scan_encode");
    g.throughput(Throughput::Elements(SPANS_PER_REQUEST as u64));

    g.bench_function("scan_only", |b| {
        b.iter(|| SpanBatch::scan(black_box(encoded.clone())).unwrap())
    });
    // (a) The pipeline's "keep everything" path shares the bytes ...
    g.bench_function("scan_keep_all_shared", |b| {
        b.iter(|| {
            let batch = SpanBatch::scan(black_box(encoded.clone())).unwrap();
            batch.filter(|_| true)
        })
    });
    // ... and this forces every span through the encoder into a new buffer.
    g.bench_function("scan_reencode_all", |b| {
        b.iter(|| {
            let batch = SpanBatch::scan(black_box(encoded.clone())).unwrap();
            batch.copied()
        })
    });
    // (b)
    g.bench_function("scan_reencode_10pct", |b| {
        b.iter(|| {
            let batch = SpanBatch::scan(black_box(encoded.clone())).unwrap();
            batch.filter(|s| sampled(&s.trace_id))
        })
    });
    // (c)
    g.bench_function("prost_decode_encode", |b| {
        b.iter(|| {
            let req = ExportTraceServiceRequest::decode(black_box(&encoded[..])).unwrap();
            req.encode_to_vec()
        })
    });
    // (d)
    g.bench_function("prost_decode_filter_10pct_encode", |b| {
        b.iter(|| {
            let mut req = ExportTraceServiceRequest::decode(black_box(&encoded[..])).unwrap();
            for rs in &mut req.resource_spans {
                for ss in &mut rs.scope_spans {
                    ss.spans.retain(|s| sampled(&s.trace_id));
                }
                rs.scope_spans.retain(|ss| !ss.spans.is_empty());
            }
            req.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
            req.encode_to_vec()
        })
    });
    // What a tail-sampling policy pays to read one attribute of every span.
    g.bench_function("span_attribute_lookup", |b| {
        b.iter(|| {
            let mut hits = 0;
            for i in 0..batch.len() {
                if batch
                    .span_attribute(i, black_box("http.response.status_code"))
                    .is_some()
                {
                    hits += 1;
                }
            }
            hits
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
