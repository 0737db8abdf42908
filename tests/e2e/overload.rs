//! Overload that holds (issue 15), at a scale a debug build runs in a few
//! seconds: a `memory_limiter` in front of a tail sampler that would hold
//! ten seconds of traces, far more than the limit allows, fed by clients
//! that retry as the OpenTelemetry SDKs do (after the delay `RetryInfo`
//! gives). The benchmark (`benches/scenarios/overload-tail.yaml`, release
//! build) measures the same with the issue's figures; here the test
//! asserts what holds in any build:
//!
//! - peak resident memory stays within 1.1 × `limit_mib` (a debug binary
//!   alone is a third of this test's 64 MiB, so what the data may take is
//!   smaller than in a release build, but the bound is the same);
//! - with four times the clients, the gateway acknowledges at least half as
//!   many spans per second as with the clients it serves without refusing
//!   (the release benchmark reaches the issue's 80 %: a debug build on a
//!   shared machine is too noisy to hold that line);
//! - refusals say when to come back, sooner than the 5 s tracegate said
//!   before it measured the drain (with the tail sampler making room ahead
//!   of the limit, four times the clients may see none), and the tail
//!   sampler made room by deciding old traces early.

use crate::support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use support::gateway::{pipeline_to, Gateway, OTLP_GRPC_RECEIVER};
use support::raw::{counter_sum, wait_for_metrics};
use support::sink::Sink;
use tonic::transport::Channel;
use tracegate_model::otlp::{
    string_kv, ExportTraceServiceRequest, Resource, ResourceSpans, ScopeSpans, Span,
};
use tracegate_pipeline::grpc::retry_info;

const LIMIT_MIB: u64 = 64;
/// Traces per request, two spans each.
const TRACES: u64 = 100;

fn config(sink: std::net::SocketAddr) -> String {
    let sections = format!(
        r#"{OTLP_GRPC_RECEIVER}processors:
  memory_limiter:
    check_interval: 100ms
    limit_mib: {LIMIT_MIB}
  tail_sampling:
    decision_wait: 10s
    num_traces: 1000000
    policies:
      - name: baseline
        type: probabilistic
        probabilistic:
          sampling_percentage: 5
"#
    );
    pipeline_to(sink, &sections, "otlp", "memory_limiter, tail_sampling")
}

/// Request `n`: `TRACES` new traces of two spans, each span with a
/// 300-byte attribute (about 70 KB encoded).
fn request(n: u64) -> ExportTraceServiceRequest {
    let payload = "p".repeat(300);
    let spans = (0..TRACES)
        .flat_map(|t| {
            let trace_id = [(n * TRACES + t).to_be_bytes(), 0xfeedu64.to_be_bytes()].concat();
            let payload = payload.clone();
            (1..=2u64).map(move |s| Span {
                trace_id: trace_id.clone(),
                span_id: s.to_be_bytes().to_vec(),
                name: "op".into(),
                start_time_unix_nano: 1,
                end_time_unix_nano: 2,
                attributes: vec![string_kv("payload", &payload)],
                ..Default::default()
            })
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource::default()),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[derive(Default)]
struct Tally {
    acked_spans: AtomicU64,
    refusals: AtomicU64,
    /// Calls that ended in CANCELLED: the stream reset by the gateway
    /// (seen under this load, cause not yet found; see the note where
    /// they are retried).
    cancelled: AtomicU64,
    delays: Mutex<Vec<Duration>>,
}

/// `clients` SDK-like clients on one connection, each sending new requests
/// one after another until `until`; a refused request is sent again after
/// the delay the refusal gives. Spans acknowledged after `until` are not
/// counted.
async fn load(
    channel: Channel,
    clients: usize,
    next: Arc<AtomicU64>,
    until: Instant,
) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (mut client, next, tally) = (
                TraceServiceClient::new(channel.clone()),
                next.clone(),
                tally.clone(),
            );
            tokio::spawn(async move {
                while Instant::now() < until {
                    let req = request(next.fetch_add(1, Ordering::Relaxed));
                    loop {
                        match client.export(req.clone()).await {
                            Ok(_) => {
                                if Instant::now() < until {
                                    tally.acked_spans.fetch_add(2 * TRACES, Ordering::Relaxed);
                                }
                                break;
                            }
                            Err(status) if status.code() == tonic::Code::Unavailable => {
                                let delay = retry_info(status.details()).unwrap_or_else(|| {
                                    panic!("a refusal without RetryInfo: {status:?}")
                                });
                                tally.refusals.fetch_add(1, Ordering::Relaxed);
                                tally.delays.lock().unwrap().push(delay);
                                if Instant::now() + delay >= until {
                                    return;
                                }
                                tokio::time::sleep(delay).await;
                            }
                            // OTLP exporters retry CANCELLED (a retryable code
                            // in the OTLP spec), so an SDK-like client does.
                            // The gateway resets a few streams with CANCEL
                            // under this load, cause not yet found: they are
                            // counted and printed, not taken as acknowledged.
                            Err(status) if status.code() == tonic::Code::Cancelled => {
                                tally.cancelled.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            Err(status) => panic!("unexpected answer: {status:?}"),
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_times_the_clients_keep_goodput_and_memory_stays_under_the_limit() {
    let sink = Sink::start().await;
    let gw = Gateway::start(&config(sink.addr));
    let channel = Channel::from_shared(format!("http://{}", gw.addr("otlp", "grpc")))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let encoded = request(0).encoded_len();
    // Before any data: the binary and its threads (about 20 MiB in a debug
    // build, a little over 10 in a release build).
    let idle_kib = gw.memory_kib("VmRSS");

    // Two clients until memory is at the limit and more than the limit was
    // sent: the tail sampler, holding
    // every trace for 10 s, fills it within a second or two, and from then
    // on makes room by deciding its oldest traces early.
    let filled = Instant::now();
    let mut delays = Vec::new();
    let mut cancelled = 0;
    loop {
        let fill = load(
            channel.clone(),
            2,
            next.clone(),
            Instant::now() + Duration::from_millis(200),
        )
        .await;
        delays.extend(fill.delays.lock().unwrap().iter().copied());
        cancelled += fill.cancelled.load(Ordering::Relaxed);
        // Filled once the limiter refuses, and once more than the limit was
        // sent: a slow machine reaches the first before the second.
        let sent_mib = (next.load(Ordering::Relaxed) * encoded as u64) >> 20;
        if fill.refusals.load(Ordering::Relaxed) > 0 && sent_mib > LIMIT_MIB {
            break;
        }
        assert!(
            filled.elapsed() < Duration::from_secs(10),
            "in 10 s, memory never reached the limit or no more than the limit was sent"
        );
    }
    let filled = filled.elapsed();
    // What two clients get at the limit: the gateway's own pace.
    let window = Duration::from_millis(1500);
    let unloaded = load(channel.clone(), 2, next.clone(), Instant::now() + window).await;
    let unloaded_rate = unloaded.acked_spans.load(Ordering::Relaxed) as f64 / window.as_secs_f64();
    // Four times the clients.
    let overload = load(channel.clone(), 8, next.clone(), Instant::now() + window).await;
    let overload_rate = overload.acked_spans.load(Ordering::Relaxed) as f64 / window.as_secs_f64();
    let refusals = overload.refusals.load(Ordering::Relaxed);
    for tally in [&unloaded, &overload] {
        delays.extend(tally.delays.lock().unwrap().iter().copied());
    }
    delays.sort();
    let peak_kib = gw.memory_kib("VmHWM");
    let sent_mib = (next.load(Ordering::Relaxed) * encoded as u64) >> 20;
    eprintln!(
        "filled in {filled:?}; 2 clients {unloaded_rate:.0} spans/s ({} refusals); 8 clients \
         {overload_rate:.0} spans/s ({refusals} refusals); {} retry delays {:?} .. {:?}, \
         median {:?}; {sent_mib} MiB of requests sent; peak RSS {} MiB (idle {} MiB), limit \
         {LIMIT_MIB} MiB; {} calls reset with CANCEL",
        unloaded.refusals.load(Ordering::Relaxed),
        delays.len(),
        delays.first(),
        delays.last(),
        delays.get(delays.len() / 2),
        peak_kib / 1024,
        idle_kib / 1024,
        cancelled
            + unloaded.cancelled.load(Ordering::Relaxed)
            + overload.cancelled.load(Ordering::Relaxed),
    );

    // Bounded memory: the tail sampler would hold all of it for 10 s.
    assert!(
        sent_mib > LIMIT_MIB,
        "only {sent_mib} MiB sent: not more than a {LIMIT_MIB} MiB limit holds"
    );
    assert!(
        peak_kib * 10 <= LIMIT_MIB * 1024 * 11,
        "peak RSS {peak_kib} KiB over 1.1 x {LIMIT_MIB} MiB (idle {idle_kib} KiB)"
    );
    // Refusals (at least the one that ended the fill) said when to come
    // back, sooner than the 5 s every refusal got before.
    let median = delays[delays.len() / 2];
    assert!(
        median < Duration::from_secs(1),
        "median retry delay {median:?}: not sized from the drain"
    );
    // Goodput.
    assert!(
        overload_rate >= 0.5 * unloaded_rate,
        "acknowledged {overload_rate:.0} spans/s overloaded against {unloaded_rate:.0} unloaded"
    );
    // Room was made by deciding the oldest traces early.
    let text = wait_for_metrics(
        gw.addr("telemetry", "metrics"),
        &["otelcol_tracegate_tail_sampling_early_decisions_total"],
        Duration::from_secs(5),
    )
    .await;
    assert!(
        counter_sum(
            &text,
            "otelcol_tracegate_tail_sampling_early_decisions_total"
        ) > 0,
        "{text}"
    );
}
