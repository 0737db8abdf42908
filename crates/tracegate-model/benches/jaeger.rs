//! Jaeger api_v2 costs per span on the budget's workload (10-span traces,
//! 8 attributes per span, 100 spans per request):
//! - export: a batch of kept spans as PostSpansRequest bytes (the `jaeger`
//!   exporter's CPU work), written straight from the OTLP bytes, and the
//!   owned path it replaced (prost decode, map, prost encode) beside it;
//! - ingest: a PostSpansRequest read and written as OTLP and indexed as a
//!   SpanBatch (the Jaeger gRPC receiver's CPU work), and the owned path
//!   (prost decode, map, encode, scan) it replaced;
//! - thrift ingest: the same spans as a jaeger.thrift `Batch` (an agent's
//!   compact UDP packet, an HTTP binary body) written as OTLP directly, and
//!   through the owned model and owned OTLP messages (the reference).
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
    batches_from_span_batch, post_spans_requests, proto, proto::PostSpansRequest,
    span_batch_from_batches, span_batch_from_post_spans,
};
use tracegate_model::thrift;
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

/// The api_v2 batch as a jaeger-client would have sent it in thrift.
fn thrift_batch(batch: &proto::Batch) -> thrift::Batch {
    fn id(bytes: &[u8]) -> i64 {
        let mut id = [0u8; 8];
        id[8 - bytes.len()..].copy_from_slice(bytes);
        i64::from_be_bytes(id)
    }
    fn micros(t: Option<(i64, i32)>) -> i64 {
        t.map_or(0, |(s, n)| s * 1_000_000 + i64::from(n) / 1000)
    }
    fn tag(kv: &proto::KeyValue) -> thrift::Tag {
        match kv.v_type {
            0 => thrift::Tag::string(&kv.key, &kv.v_str),
            1 => thrift::Tag::bool(&kv.key, kv.v_bool),
            2 => thrift::Tag::long(&kv.key, kv.v_int64),
            3 => thrift::Tag::double(&kv.key, kv.v_float64),
            _ => thrift::Tag::binary(&kv.key, &kv.v_binary),
        }
    }
    let process = batch.process.clone().unwrap_or_default();
    thrift::Batch {
        process: thrift::Process {
            service_name: process.service_name,
            tags: Some(process.tags.iter().map(tag).collect()),
        },
        spans: batch
            .spans
            .iter()
            .map(|s| thrift::Span {
                trace_id_low: id(&s.trace_id[8..]),
                trace_id_high: id(&s.trace_id[..8]),
                span_id: id(&s.span_id),
                parent_span_id: s.references.first().map_or(0, |r| id(&r.span_id)),
                operation_name: s.operation_name.clone(),
                references: None,
                flags: s.flags as i32,
                start_time: micros(s.start_time.map(|t| (t.seconds, t.nanos))),
                duration: micros(s.duration.map(|d| (d.seconds, d.nanos))),
                tags: Some(s.tags.iter().map(tag).collect()),
                logs: Some(
                    s.logs
                        .iter()
                        .map(|l| thrift::Log {
                            timestamp: micros(l.timestamp.map(|t| (t.seconds, t.nanos))),
                            fields: l.fields.iter().map(tag).collect(),
                        })
                        .collect(),
                ),
            })
            .collect(),
        seq_no: None,
    }
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
            spans += span_batch_from_post_spans(black_box(post)).unwrap().len();
        }
        spans
    };
    let ingest_owned = || {
        let mut spans = 0;
        for post in &posts {
            let request = PostSpansRequest::decode(black_box(post.clone())).unwrap();
            spans += span_batch_from_batches(request.batch).unwrap().len();
        }
        spans
    };
    let thrift_batches: Vec<thrift::Batch> = posts
        .iter()
        .map(|p| thrift_batch(&PostSpansRequest::decode(&p[..]).unwrap().batch.unwrap()))
        .collect();
    let compact: Vec<Vec<u8>> = thrift_batches
        .iter()
        .map(thrift::encode_agent_compact)
        .collect();
    let binary: Vec<Vec<u8>> = thrift_batches
        .iter()
        .map(thrift::encode_batch_binary)
        .collect();
    for (c, b) in compact.iter().zip(&binary) {
        let direct = thrift::agent_compact_to_span_batch(c).unwrap();
        let owned = SpanBatch::from_request(&thrift::agent_compact_to_request(c).unwrap());
        assert_eq!(direct.bytes(), owned.bytes());
        assert_eq!(
            direct.bytes(),
            thrift::batch_binary_to_span_batch(b).unwrap().bytes()
        );
    }
    eprintln!(
        "thrift: compact {} bytes, binary {} bytes for {} spans",
        compact.iter().map(Vec::len).sum::<usize>(),
        binary.iter().map(Vec::len).sum::<usize>(),
        SPANS_PER_REQUEST
    );
    let thrift_direct =
        |packets: &[Vec<u8>], decode: fn(&[u8]) -> Result<SpanBatch, thrift::ThriftError>| {
            packets
                .iter()
                .map(|p| decode(black_box(p)).unwrap().len())
                .sum::<usize>()
        };
    let thrift_owned = |packets: &[Vec<u8>],
                        decode: fn(
        &[u8],
    ) -> Result<
        tracegate_model::otlp::ExportTraceServiceRequest,
        thrift::ThriftError,
    >| {
        packets
            .iter()
            .map(|p| SpanBatch::from_request(&decode(black_box(p)).unwrap()).len())
            .sum::<usize>()
    };
    cpu_per_span("export (OTLP SpanBatch -> PostSpansRequest bytes)", || {
        export(black_box(&batch))
    });
    cpu_per_span(
        "export, owned path (prost decode, map, prost encode)",
        || export_owned(black_box(&batch)),
    );
    cpu_per_span("ingest (PostSpansRequest bytes -> SpanBatch)", ingest);
    cpu_per_span(
        "ingest, owned path (prost decode, map, encode, scan)",
        ingest_owned,
    );
    cpu_per_span("thrift compact agent packet -> SpanBatch, direct", || {
        thrift_direct(&compact, thrift::agent_compact_to_span_batch)
    });
    cpu_per_span("thrift compact agent packet -> SpanBatch, owned", || {
        thrift_owned(&compact, thrift::agent_compact_to_request)
    });
    cpu_per_span("thrift HTTP binary body -> SpanBatch, direct", || {
        thrift_direct(&binary, thrift::batch_binary_to_span_batch)
    });
    cpu_per_span("thrift HTTP binary body -> SpanBatch, owned", || {
        thrift_owned(&binary, thrift::batch_binary_to_request)
    });

    let mut g = c.benchmark_group("jaeger");
    g.throughput(Throughput::Elements(SPANS_PER_REQUEST as u64));
    g.bench_function("export_otlp_to_postspans", |b| {
        b.iter(|| export(black_box(&batch)))
    });
    g.bench_function("export_otlp_to_postspans_owned", |b| {
        b.iter(|| export_owned(black_box(&batch)))
    });
    g.bench_function("ingest_postspans_to_spanbatch", |b| b.iter(ingest));
    g.bench_function("ingest_postspans_to_spanbatch_owned", |b| {
        b.iter(ingest_owned)
    });
    g.bench_function("ingest_thrift_compact_to_spanbatch", |b| {
        b.iter(|| thrift_direct(&compact, thrift::agent_compact_to_span_batch))
    });
    g.bench_function("ingest_thrift_compact_to_spanbatch_owned", |b| {
        b.iter(|| thrift_owned(&compact, thrift::agent_compact_to_request))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
