//! Tail sampling micro-benchmarks: buffer insert + decide per span, and
//! policy evaluation per trace. `cargo bench -p tracegate-sampling`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tracegate_model::otlp::{
    string_kv as kv, ExportTraceServiceRequest, Resource, ResourceSpans, ScopeSpans, Span, Status,
};
use tracegate_model::SpanBatch;
use tracegate_sampling::tail::{
    PolicyConfig, PolicySet, Released, TraceBufferSettings, TraceShard, TraceView,
};

const SPANS_PER_TRACE: usize = 10;
const TRACES_PER_REQUEST: usize = 50;

fn trace_id(n: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    id[8..].copy_from_slice(&n.wrapping_mul(0xC2B2_AE3D_27D4_EB4F).to_be_bytes());
    id
}

/// A request of 50 traces × 10 spans with 8 attributes each, 5 % errors.
fn request(first_trace: u64) -> SpanBatch {
    let mut spans = Vec::new();
    for t in 0..TRACES_PER_REQUEST as u64 {
        let id = trace_id(first_trace + t);
        for s in 0..SPANS_PER_TRACE as u8 {
            spans.push(Span {
                trace_id: id.to_vec(),
                span_id: vec![s + 1, 0, 0, 0, 0, 0, 0, 1],
                parent_span_id: if s == 0 {
                    vec![]
                } else {
                    vec![1, 0, 0, 0, 0, 0, 0, 1]
                },
                name: "GET /api/v1/items".into(),
                start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(s) * 1_000_000,
                end_time_unix_nano: 1_700_000_000_050_000_000,
                attributes: (0..8)
                    .map(|i| kv(&format!("attr.{i}"), "some-value"))
                    .collect(),
                status: Some(Status {
                    code: if (first_trace + t).is_multiple_of(20) {
                        2
                    } else {
                        0
                    },
                    message: String::new(),
                }),
                ..Default::default()
            });
        }
    }
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "checkout")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    SpanBatch::from_request(&request)
}

fn three_policies() -> PolicySet {
    let configs: Vec<PolicyConfig> = serde_json::from_value(serde_json::json!([
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "slow", "type": "latency", "latency": {"threshold_ms": 1000, "fraction_on_match": 0.25}},
        {"name": "baseline", "type": "string_attribute",
         "string_attribute": {"key": "service.name", "values": ["checkout"], "fraction_on_match": 0.05}}
    ]))
    .expect("bench config");
    PolicySet::build(&configs, false).expect("bench policies").0
}

fn insert_and_decide(c: &mut Criterion) {
    let requests: Vec<SpanBatch> = (0..20)
        .map(|i| request(i * TRACES_PER_REQUEST as u64))
        .collect();
    let spans: usize = requests.iter().map(SpanBatch::len).sum();
    let mut group = c.benchmark_group("tail_buffer");
    group.throughput(Throughput::Elements(spans as u64));
    group.bench_function("insert_then_decide_10_span_traces", |b| {
        b.iter_batched(
            || {
                (
                    TraceShard::new(TraceBufferSettings {
                        decision_wait: Duration::from_secs(2),
                        ..TraceBufferSettings::default()
                    }),
                    three_policies(),
                    Released::default(),
                )
            },
            |(mut shard, mut policies, mut out)| {
                let now = Duration::from_secs(1_700_000_000);
                for r in &requests {
                    shard.insert(r, now, &mut policies, &mut out);
                }
                shard.poll(now + Duration::from_secs(2), &mut policies, &mut out);
                out.sampled.len()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn policy_evaluation(c: &mut Criterion) {
    let request = request(1);
    let trace = request.select(&(0..SPANS_PER_TRACE as u32).collect::<Vec<_>>());
    let id = trace.spans()[0].trace_id;
    let batches = [trace];
    let view = TraceView::of_batches(&id, &batches);
    let mut policies = three_policies();
    c.bench_function("tail_policies/three_policies_10_span_trace", |b| {
        b.iter(|| policies.decide(&view, Duration::from_secs(1_700_000_000)))
    });
}

criterion_group!(benches, insert_and_decide, policy_evaluation);
criterion_main!(benches);
