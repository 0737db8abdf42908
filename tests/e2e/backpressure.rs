//! Export memory that stays flat (issue 14, goal 5): a backend slower than
//! the clients, behind a `batch` processor that acknowledges spans before
//! they reach the exporter's queue. The queue is bounded in bytes, queued
//! and in flight; from half of that the pipeline refuses new requests with
//! UNAVAILABLE and RetryInfo, so clients that retry as the OpenTelemetry
//! SDKs do lose nothing, and nothing the batch processor acknowledged is
//! dropped at a full queue. Before, a queue counted in batches took
//! whatever the batch processor handed it (or, bounded in bytes, refused
//! it after the clients had been told it was taken: dropped spans).

use crate::support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::gateway::{Gateway, OTLP_GRPC_RECEIVER, TELEMETRY};
use support::load::{payload_request, sdk_clients, AtDeadline};
use support::raw::{counter_sum, wait_until_accounted};
use support::sink::Sink;
use tonic::transport::Channel;

/// The exporter's byte bound: refusals start at half of it.
const QUEUE_BYTES: u64 = 2 << 20;
/// Spans per request (about 50 KB encoded).
const SPANS: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_makes_the_pipeline_refuse_and_nothing_taken_is_lost() {
    // One request at a time, each taking 100 ms: about 10 batches a second.
    let sink = Sink::start_delayed(Duration::from_millis(100)).await;
    let yaml = format!(
        r#"{OTLP_GRPC_RECEIVER}processors:
  batch:
    send_batch_size: 1000
    timeout: 50ms
exporters:
  otlp:
    endpoint: 127.0.0.1:{port}
    compression: none
    tls:
      insecure: true
    sending_queue:
      num_consumers: 1
      sizer: bytes
      queue_size: {QUEUE_BYTES}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp]
{TELEMETRY}"#,
        port = sink.addr.port()
    );
    let gw = Gateway::start(&yaml);
    let channel = Channel::from_shared(format!("http://{}", gw.addr("otlp", "grpc")))
        .unwrap()
        .connect()
        .await
        .unwrap();

    // Four SDK-like clients for two seconds: far more than the backend
    // takes. A refused request is sent again after the delay RetryInfo
    // gives; every request is eventually acknowledged.
    let next = AtomicU64::new(0);
    let tally = sdk_clients(
        channel,
        4,
        Instant::now() + Duration::from_secs(2),
        AtDeadline::Finish,
        move || {
            let n = next.fetch_add(1, Ordering::Relaxed);
            (payload_request(n..n + 1, SPANS, 200), SPANS)
        },
    )
    .await;
    let (acked, refusals) = (tally.acked_spans(), tally.refusals());
    for delay in tally.delays() {
        assert!(delay <= Duration::from_secs(5), "{delay:?}");
    }
    assert_eq!(tally.cancelled(), 0, "the gateway reset streams");

    // Everything acknowledged reaches the backend; nothing is dropped.
    let text = wait_until_accounted(
        gw.addr("telemetry", "metrics"),
        acked as usize,
        Duration::from_secs(30),
    )
    .await;
    let dropped = counter_sum(&text, "otelcol_tracegate_dropped_spans_total");
    let refused = counter_sum(&text, "otelcol_receiver_refused_spans_total");
    let pushed_back = counter_sum(&text, "otelcol_tracegate_backpressure_refused_spans_total");
    eprintln!(
        "{acked} spans acknowledged, {refusals} refusals ({refused} spans), {} spans at the backend",
        sink.span_count()
    );
    assert_eq!(dropped, 0, "{text}");
    assert!(refusals > 0, "a backend this slow must push back");
    assert_eq!(refused, refusals * SPANS, "every refusal counted: {text}");
    assert_eq!(pushed_back, refused, "with its reason: {text}");
    assert!(
        sink.wait_for_spans(acked as usize, Duration::from_secs(10))
            .await
    );
    assert_eq!(sink.span_count() as u64, acked);
}
