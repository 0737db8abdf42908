//! The resource detection processor's merge of detected attributes into
//! every resource, on the bytes, per span of the benchmark workload (100
//! spans per request, one resource): the attributes a GCE host detects, with
//! override on (values replace some the client set) and off, and the
//! decode-modify-encode path it replaces, for comparison.
//!
//! Quick run: cargo bench -p tracegate-model --bench resource_merge -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use tracegate_model::otlp::{string_kv as string, Resource};
use tracegate_model::{ResourceAttributes, SpanBatch};

// Shared with the other benches; not every helper is used here.
#[allow(dead_code)]
mod workload;
use workload::{request, SPANS_PER_REQUEST};

fn detected() -> ResourceAttributes {
    ResourceAttributes::new([
        string("cloud.provider", "gcp"),
        string("cloud.platform", "gcp_compute_engine"),
        string("cloud.account.id", "my-project"),
        string("cloud.region", "us-central1"),
        string("cloud.availability_zone", "us-central1-a"),
        string("host.id", "4520031799277581759"),
        string("host.name", "vm-1"),
        string("host.type", "e2-medium"),
        string("os.type", "linux"),
    ])
}

fn bench(c: &mut Criterion) {
    let encoded = Bytes::from(request(0).encode_to_vec());
    let batch = SpanBatch::scan(encoded).unwrap();
    assert_eq!(batch.len(), SPANS_PER_REQUEST);
    let attributes = detected();

    let mut g = c.benchmark_group("resource_merge");
    g.throughput(Throughput::Elements(SPANS_PER_REQUEST as u64));
    // The merge takes the batch it edits by value (the processor owns
    // it): each iteration is handed a clone made outside the timing, and
    // the result is dropped outside it too.
    let timed = |b: &mut criterion::Bencher, input: &SpanBatch, override_existing: bool| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let input = input.clone();
                let start = Instant::now();
                let out = input.merge_resource_attributes(&attributes, override_existing);
                total += start.elapsed();
                drop(black_box(out));
            }
            total
        })
    };
    g.bench_function("bytes_override", |b| timed(b, &batch, true));
    g.bench_function("bytes_keep_existing", |b| timed(b, &batch, false));
    // Already carrying every detected value (an upstream agent detected the
    // same): nothing is copied.
    let merged = batch.clone().merge_resource_attributes(&attributes, true);
    g.bench_function("bytes_already_merged", |b| timed(b, &merged, true));
    g.bench_function("prost_decode_merge_encode", |b| {
        b.iter(|| {
            let mut request = black_box(&batch).to_request();
            for rs in &mut request.resource_spans {
                attributes.merge_into(rs.resource.get_or_insert_with(Resource::default), true);
            }
            SpanBatch::from_request(&request)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
