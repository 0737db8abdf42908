//! Head sampling cost per span: deciding every span of a request and
//! encoding the kept ones (with their new tracestate). Requests of 50
//! traces × 10 spans with 8 attributes, as DESIGN.md's budget assumes.
//! `cargo bench -p tracegate-sampling --bench head`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tracegate_model::otlp::{
    any_value, AnyValue, ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans, ScopeSpans,
    Span, Status,
};
use tracegate_model::SpanBatch;
use tracegate_sampling::head::{
    sample_batch, HeadSampler, ProbabilisticSampler, ProbabilisticSamplerConfig, SamplerMode,
    SamplingConfig,
};

const TRACES: u64 = 50;
const SPANS_PER_TRACE: u8 = 10;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// Status OK (so the seed's UNSET policy does not keep everything), one
/// span in five slow, `trace_state` on one span in four when asked.
fn request(with_trace_state: bool) -> SpanBatch {
    let mut spans = Vec::new();
    for t in 0..TRACES {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&t.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
        id[8..].copy_from_slice(&t.wrapping_mul(0xC2B2_AE3D_27D4_EB4F).to_be_bytes());
        for s in 0..SPANS_PER_TRACE {
            spans.push(Span {
                trace_id: id.to_vec(),
                span_id: vec![s + 1, 0, 0, 0, 0, 0, 0, 1],
                parent_span_id: if s == 0 {
                    vec![]
                } else {
                    vec![1, 0, 0, 0, 0, 0, 0, 1]
                },
                trace_state: if with_trace_state && s % 4 == 0 {
                    "vendor=abc".into()
                } else {
                    String::new()
                },
                name: "GET /api/v1/items".into(),
                start_time_unix_nano: 1_700_000_000_000_000_000,
                end_time_unix_nano: 1_700_000_000_000_000_000
                    + if s % 5 == 0 {
                        1_500_000_000
                    } else {
                        50_000_000
                    },
                attributes: (0..8)
                    .map(|i| kv(&format!("attr.{i}"), "some-value"))
                    .collect(),
                status: Some(Status {
                    code: 1,
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    SpanBatch::from_request(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "bench")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn seed_sampler() -> Box<dyn HeadSampler> {
    let config: SamplingConfig = serde_json::from_value(serde_json::json!({
        "sampling_percentage": 5,
        "policies": [
            {"name": "error-traces", "type": "status_code",
             "status_code": {"status_codes": ["ERROR", "UNSET"], "fraction_on_match": 1.0}},
            {"name": "high-latency", "type": "latency",
             "latency": {"threshold_ms": 1000, "fraction_on_match": 0.25}},
            {"name": "default", "type": "probabilistic",
             "probabilistic": {"sampling_percentage": 5}},
        ]
    }))
    .expect("seed config");
    Box::new(config.build().expect("valid").0)
}

fn probabilistic(mode: SamplerMode) -> Box<dyn HeadSampler> {
    Box::new(ProbabilisticSampler::new(&ProbabilisticSamplerConfig {
        sampling_percentage: 5.0,
        mode: Some(mode),
        hash_seed: 22,
        ..Default::default()
    }))
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("head_sampling");
    let spans = u64::from(SPANS_PER_TRACE) * TRACES;
    group.throughput(Throughput::Elements(spans));
    let samplers: [(&str, Box<dyn HeadSampler>); 3] = [
        ("sampling_seed_config", seed_sampler()),
        (
            "probabilistic_hash_seed",
            probabilistic(SamplerMode::HashSeed),
        ),
        (
            "probabilistic_proportional",
            probabilistic(SamplerMode::Proportional),
        ),
    ];
    for with_trace_state in [false, true] {
        let batch = request(with_trace_state);
        for (name, sampler) in &samplers {
            let labels = sampler.labels().len();
            let id = format!(
                "{name}/{}",
                if with_trace_state {
                    "some_tracestate"
                } else {
                    "no_tracestate"
                }
            );
            group.bench_function(id, |b| {
                b.iter(|| sample_batch(sampler.as_ref(), labels, std::hint::black_box(&batch)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
