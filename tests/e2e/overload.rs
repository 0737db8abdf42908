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
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use support::gateway::{pipeline_to, Gateway, OTLP_GRPC_RECEIVER};
use support::load::{payload_request, sdk_clients, AtDeadline, Tally};
use support::raw::{counter_sum, wait_for_metrics};
use support::sink::Sink;
use tonic::transport::Channel;
use tracegate_model::otlp::ExportTraceServiceRequest;

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
    payload_request(n * TRACES..(n + 1) * TRACES, 2, 300)
}

/// `clients` SDK-like clients on one connection, each sending new requests
/// one after another until `until`; spans acknowledged after `until` are
/// not counted.
async fn load(
    channel: Channel,
    clients: usize,
    next: Arc<AtomicU64>,
    until: Instant,
) -> Arc<Tally> {
    sdk_clients(channel, clients, until, AtDeadline::Abandon, move || {
        (request(next.fetch_add(1, Ordering::Relaxed)), 2 * TRACES)
    })
    .await
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
        delays.extend(fill.delays());
        cancelled += fill.cancelled();
        // Filled once the limiter refuses, and once more than the limit was
        // sent: a slow machine reaches the first before the second.
        let sent_mib = (next.load(Ordering::Relaxed) * encoded as u64) >> 20;
        if fill.refusals() > 0 && sent_mib > LIMIT_MIB {
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
    let unloaded_rate = unloaded.acked_spans() as f64 / window.as_secs_f64();
    // Four times the clients.
    let overload = load(channel.clone(), 8, next.clone(), Instant::now() + window).await;
    let overload_rate = overload.acked_spans() as f64 / window.as_secs_f64();
    let refusals = overload.refusals();
    for tally in [&unloaded, &overload] {
        delays.extend(tally.delays());
    }
    delays.sort();
    let peak_kib = gw.memory_kib("VmHWM");
    let sent_mib = (next.load(Ordering::Relaxed) * encoded as u64) >> 20;
    let cancelled = cancelled + unloaded.cancelled() + overload.cancelled();
    eprintln!(
        "filled in {filled:?}; 2 clients {unloaded_rate:.0} spans/s ({} refusals); 8 clients \
         {overload_rate:.0} spans/s ({refusals} refusals); {} retry delays {:?} .. {:?}, \
         median {:?}; {sent_mib} MiB of requests sent; peak RSS {} MiB (idle {} MiB), limit \
         {LIMIT_MIB} MiB; {} calls reset with CANCEL",
        unloaded.refusals(),
        delays.len(),
        delays.first(),
        delays.last(),
        delays.get(delays.len() / 2),
        peak_kib / 1024,
        idle_kib / 1024,
        cancelled,
    );
    // Overload is answered with refusals, never with reset streams (the
    // resets once seen here were the memory limiter's counter wrapping).
    assert_eq!(cancelled, 0, "the gateway reset {cancelled} streams");

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
