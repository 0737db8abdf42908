//! Head sampling cost per span: deciding every span of a request and
//! encoding the kept ones (with their new tracestate). Requests of 50
//! traces × 10 spans with 8 attributes, as the performance budget assumes
//! (docs/architecture.md, "Performance budget").
//! The `head_and_merge` group adds what issue 4 budgets together with it:
//! the resource detection processor's merge of a GCE host's 9 attributes
//! into what head sampling passes on, and, for the worst case, into the
//! whole request (everything kept). All figures are per input span.
//! `cargo bench -p tracegate-sampling --bench head`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tracegate_model::otlp::{
    string_kv as kv, ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans, ScopeSpans,
    Span, Status,
};
use tracegate_model::{ResourceAttributes, SpanBatch};
use tracegate_sampling::head::{
    sample_batch, HeadSampler, ProbabilisticSampler, ProbabilisticSamplerConfig, SamplerMode,
    SamplingConfig,
};

const TRACES: u64 = 50;
const SPANS_PER_TRACE: u8 = 10;

/// Status OK (so the seed's UNSET policy does not keep everything), one
/// span in five slow, `trace_state` on one span in four when asked.
fn request(with_trace_state: bool) -> SpanBatch {
    request_with_resource(with_trace_state, vec![kv("service.name", "bench")], 1)
}

/// The request with this resource and every span's status `code`.
fn request_with_resource(with_trace_state: bool, resource: Vec<KeyValue>, code: i32) -> SpanBatch {
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
                    code,
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    SpanBatch::from_request(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
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

/// What an application's SDK and the Kubernetes downward API put on the
/// resource (the model crate's benchmark workload's resource).
fn app_resource() -> Vec<KeyValue> {
    vec![
        kv("service.name", "checkout"),
        kv("service.version", "1.42.0"),
        kv("deployment.environment.name", "production"),
        kv("k8s.pod.name", "checkout-7d9f8c6b5-x2x9z"),
        kv("host.name", "gpu-node-17"),
    ]
}

/// The attributes a GCE host detects (as the model crate's resource_merge
/// bench): with override on, `host.name` replaces the app's, 8 are added.
fn detected() -> ResourceAttributes {
    ResourceAttributes::new([
        kv("cloud.provider", "gcp"),
        kv("cloud.platform", "gcp_compute_engine"),
        kv("cloud.account.id", "my-project"),
        kv("cloud.region", "us-central1"),
        kv("cloud.availability_zone", "us-central1-a"),
        kv("host.id", "4520031799277581759"),
        kv("host.name", "vm-1"),
        kv("host.type", "e2-medium"),
        kv("os.type", "linux"),
    ])
}

/// The `sampling` processor then `resource_detection`, as issue 4's
/// pipeline runs them on one request. Not inlined, so callgrind can count
/// it alone (`--toggle-collect='*head_then_merge*'`).
#[inline(never)]
fn head_then_merge(
    sampler: &dyn HeadSampler,
    labels: usize,
    batch: &SpanBatch,
    attributes: &ResourceAttributes,
) -> SpanBatch {
    let sampled = sample_batch(sampler, labels, batch);
    sampled.kept.merge_resource_attributes(attributes, true)
}

/// The merge alone on a batch the caller hands over (the processor owns
/// it). Not inlined, for callgrind (`--toggle-collect='*merge_only*'`).
#[inline(never)]
fn merge_only(
    batch: SpanBatch,
    attributes: &ResourceAttributes,
    override_existing: bool,
) -> SpanBatch {
    batch.merge_resource_attributes(attributes, override_existing)
}

fn bench_head_and_merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("head_and_merge");
    let spans = u64::from(SPANS_PER_TRACE) * TRACES;
    group.throughput(Throughput::Elements(spans));
    let sampler = seed_sampler();
    let labels = sampler.labels().len();
    let attributes = detected();
    // The headline: head sampling per input span plus the merge of what
    // it keeps (about 12 % of spans with the seed config, status OK). Then
    // the worst case: status UNSET, which the seed's first policy keeps
    // whole, so every span gets `ot=th:0` and the merge copies the whole
    // request (spans that set no status, the most common kind, do this).
    let cases = [
        ("no_tracestate", false, 1),
        ("some_tracestate", true, 1),
        ("all_kept_status_unset", false, 0),
    ];
    for (case, with_trace_state, code) in cases {
        let batch = request_with_resource(with_trace_state, app_resource(), code);
        group.bench_function(format!("sampling_then_merge/{case}"), |b| {
            b.iter(|| {
                head_then_merge(
                    sampler.as_ref(),
                    labels,
                    std::hint::black_box(&batch),
                    &attributes,
                )
            })
        });
    }
    // The merge alone on a whole request (every span kept). Only the
    // merge is timed: the input is cloned before and the output dropped
    // after, as the processor receives a batch it owns and passes the
    // result on.
    let batch = request_with_resource(false, app_resource(), 1);
    for (name, override_existing) in [
        ("merge_all_kept/override", true),
        ("merge_all_kept/keep_existing", false),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let input = batch.clone();
                    let start = Instant::now();
                    let out = merge_only(input, &attributes, override_existing);
                    timed += start.elapsed();
                    drop(std::hint::black_box(out));
                }
                timed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench, bench_head_and_merge);
criterion_main!(benches);
