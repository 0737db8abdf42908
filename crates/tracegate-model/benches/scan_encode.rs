//! Scan + subset re-encode against prost decode + encode, on the requests the
//! performance budget is stated for: 10-span traces, 8 attributes per span,
//! 100 spans per request. Throughput is in spans.
//!
//! Quick run: cargo bench -p tracegate-model --bench scan_encode -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use tracegate_model::otlp::ExportTraceServiceRequest;
use tracegate_model::{Indexing, SpanBatch};

mod workload;
use workload::{request, sampled, SPANS_PER_REQUEST, SPANS_PER_TRACE};

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
    // What the OTLP receiver does when nothing after it reads spans
    // (receiver → batch → otlp): validate and count, no index. Timed in
    // the thread's CPU time, so that other processes on a shared machine
    // do not count.
    g.bench_function("scan_validate_only_cpu", |b| {
        b.iter_custom(|iters| {
            let start = thread_cpu_time();
            for _ in 0..iters {
                black_box(
                    SpanBatch::scan_with(black_box(encoded.clone()), Indexing::Lazy).unwrap(),
                );
            }
            thread_cpu_time() - start
        })
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

/// CPU time of the calling thread.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

criterion_group!(benches, bench);
criterion_main!(benches);
