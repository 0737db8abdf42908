//! Jaeger api_v2 costs per span on the budget's workload (10-span traces,
//! 8 attributes per span, 100 spans per request):
//! - export: a batch of kept spans as PostSpansRequest bytes (the `jaeger`
//!   exporter's CPU work), written straight from the OTLP bytes, and the
//!   owned path it replaced (prost decode, map, prost encode) beside it;
//! - ingest: a PostSpansRequest decoded, mapped to OTLP and indexed as a
//!   SpanBatch (the Jaeger gRPC receiver's CPU work).
//!
//! Run: cargo bench -p tracegate-model --bench jaeger -- --warm-up-time 1 --measurement-time 3
//! Instructions per span (the `--test` run calls each routine once, on 100 spans):
//! valgrind --tool=callgrind --toggle-collect='jaeger::export' \
//!   target/release/deps/jaeger-<hash> --bench --test 'jaeger/export_otlp_to_postspans$'

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use tracegate_model::jaeger::{
    batches_from_span_batch, post_spans_requests, proto::PostSpansRequest, span_batch_from_batches,
};
use tracegate_model::SpanBatch;

#[allow(dead_code)]
mod workload;
use workload::{request, SPANS_PER_REQUEST};

// Not inlined, so callgrind can count each alone (`--toggle-collect`).
#[inline(never)]
fn export(batch: &SpanBatch) -> usize {
    post_spans_requests(batch).iter().map(|r| r.len()).sum()
}

#[inline(never)]
fn export_owned(batch: &SpanBatch) -> usize {
    batches_from_span_batch(batch)
        .into_iter()
        .map(|b| PostSpansRequest { batch: Some(b) }.encode_to_vec().len())
        .sum()
}

/// CPU time this thread has run, in ns (the scheduler's own account), so a
/// busy shared machine inflates wall time but not this.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Runs `f` (which handles `SPANS_PER_REQUEST` spans) for about a second of
/// CPU and prints its CPU cost per span and spans per CPU-second.
fn cpu_per_span(name: &str, mut f: impl FnMut() -> usize) {
    // Criterion's `--test` runs each routine once: for counting instructions.
    if std::env::args().any(|a| a == "--test") {
        return;
    }
    let start = thread_cpu_ns();
    let mut rounds = 0u64;
    while thread_cpu_ns() - start < 1_000_000_000 {
        for _ in 0..100 {
            black_box(f());
        }
        rounds += 100;
    }
    let per_span = (thread_cpu_ns() - start) as f64 / (rounds * SPANS_PER_REQUEST as u64) as f64;
    eprintln!(
        "{name}: {per_span:.0} ns CPU per span, {:.0} k spans per CPU-second",
        1e6 / per_span
    );
}

fn bench(c: &mut Criterion) {
    let batch = SpanBatch::scan(Bytes::from(request(0).encode_to_vec())).unwrap();
    assert_eq!(batch.len(), SPANS_PER_REQUEST);
    let posts: Vec<Bytes> = batches_from_span_batch(&batch)
        .into_iter()
        .map(|b| Bytes::from(PostSpansRequest { batch: Some(b) }.encode_to_vec()))
        .collect();
    let spans_in_posts: usize = posts
        .iter()
        .map(|p| {
            PostSpansRequest::decode(&p[..])
                .unwrap()
                .batch
                .unwrap()
                .spans
                .len()
        })
        .sum();
    assert_eq!(spans_in_posts, SPANS_PER_REQUEST);
    assert_eq!(post_spans_requests(&batch), posts);
    eprintln!(
        "OTLP {} bytes, Jaeger {} bytes in {} PostSpans for {} spans",
        batch.encoded_len(),
        posts.iter().map(|p| p.len()).sum::<usize>(),
        posts.len(),
        SPANS_PER_REQUEST
    );

    let ingest = || {
        let mut spans = 0;
        for post in &posts {
            let request = PostSpansRequest::decode(black_box(post.clone())).unwrap();
            spans += span_batch_from_batches(request.batch).unwrap().len();
        }
        spans
    };
    cpu_per_span("export (OTLP SpanBatch -> PostSpansRequest bytes)", || {
        export(black_box(&batch))
    });
    cpu_per_span(
        "export, owned path (prost decode, map, prost encode)",
        || export_owned(black_box(&batch)),
    );
    cpu_per_span("ingest (PostSpansRequest bytes -> SpanBatch)", ingest);

    let mut g = c.benchmark_group("jaeger");
    g.throughput(Throughput::Elements(SPANS_PER_REQUEST as u64));
    g.bench_function("export_otlp_to_postspans", |b| {
        b.iter(|| export(black_box(&batch)))
    });
    g.bench_function("export_otlp_to_postspans_owned", |b| {
        b.iter(|| export_owned(black_box(&batch)))
    });
    g.bench_function("ingest_postspans_to_spanbatch", |b| b.iter(ingest));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
