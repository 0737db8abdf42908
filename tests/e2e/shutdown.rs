//! Shutdown as a Kubernetes rollout sees it (issue 15): on SIGTERM the
//! health check reports 503 at once while the receivers still take data for
//! the drain delay, then the listeners close, and the process exits within
//! the grace period even when what it holds cannot be delivered.

use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Method;
use support::gateway::{otlp_exporter_to, Gateway, TELEMETRY};
use support::raw::http;
use support::sink::Sink;

/// An OTLP/HTTP receiver, the health check, `processors` (a whole
/// `processors:` section, or nothing) and `exporters` to one pipeline.
fn config(processors: &str, pipeline_processors: &str, exporters: &str) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:0
{processors}{exporters}extensions:
  health_check:
    endpoint: 127.0.0.1:0
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [{pipeline_processors}]
      exporters: [otlp]
{TELEMETRY}"#
    )
}

async fn post_span(addr: SocketAddr, name: &str) -> http::StatusCode {
    http(
        addr,
        Method::POST,
        "/v1/traces",
        &[("content-type", "application/x-protobuf")],
        support::one_span_request(name),
    )
    .await
    .status
}

/// Polls the health check until it answers `status`; the time that took.
async fn health_turns(addr: SocketAddr, status: u16, since: Instant, within: Duration) -> Duration {
    loop {
        let reply = http(addr, Method::GET, "/", &[], "").await;
        if reply.status == status {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < within,
            "health still {} after {within:?}",
            reply.status
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The drain delay in a real process with a real HTTP client: 503 from the
/// health check at once, data still taken and delivered during the delay,
/// the listener closed only once the delay is over, and the exit within
/// the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_reports_unhealthy_at_once_and_closes_listeners_after_the_drain_delay() {
    const DRAIN: Duration = Duration::from_secs(2);
    const GRACE: Duration = Duration::from_secs(6);
    let sink = Sink::start().await;
    let mut gw = Gateway::start_with_args(
        &config("", "", &otlp_exporter_to(sink.addr)),
        &["--shutdown-drain-delay=2s", "--shutdown-grace=6s"],
    );
    let (health, otlp) = (gw.addr("health_check", "http"), gw.addr("otlp", "http"));
    assert_eq!(http(health, Method::GET, "/", &[], "").await.status, 200);

    let signalled = Instant::now();
    gw.signal("TERM");
    let unhealthy_after = health_turns(health, 503, signalled, Duration::from_secs(1)).await;
    // Kubernetes still routes here until it sees the pod go: data is taken.
    assert_eq!(post_span(otlp, "while-draining").await, 200);
    let posted_after = signalled.elapsed();
    assert!(
        posted_after < DRAIN,
        "the test was too slow to post within the drain delay ({posted_after:?})"
    );
    // The listener closes once the drain delay is over, not before.
    let closed_after = loop {
        if tokio::net::TcpStream::connect(otlp).await.is_err() {
            break signalled.elapsed();
        }
        assert!(
            signalled.elapsed() < DRAIN + Duration::from_secs(2),
            "the OTLP listener still accepts {:?} after SIGTERM",
            signalled.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let status = tokio::task::block_in_place(|| gw.wait_for_exit(GRACE));
    let exited_after = signalled.elapsed();
    eprintln!(
        "503 after {unhealthy_after:?}, posted at {posted_after:?}, listener closed after \
         {closed_after:?}, exited after {exited_after:?}"
    );
    assert!(status.success(), "exit status {status}");
    assert!(
        closed_after >= DRAIN,
        "the listener closed after {closed_after:?}, before the drain delay of {DRAIN:?}"
    );
    assert!(unhealthy_after < closed_after);
    assert!(exited_after < GRACE, "exited after {exited_after:?}");
    // What was taken during the drain delay was delivered.
    assert_eq!(sink.span_count(), 1);
    assert_eq!(sink.spans()[0].span.name, "while-draining");
}

/// A flush that cannot finish (the batch processor's send to a backend
/// that never answers, with no queue in between) is cut off so that the
/// process still exits within the grace period, saying which processor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_within_the_grace_period_when_a_flush_cannot_finish() {
    const GRACE: Duration = Duration::from_secs(2);
    let stalled = Sink::start_stalled().await;
    let exporter = format!(
        "exporters:\n  otlp:\n    endpoint: 127.0.0.1:{}\n    timeout: 60s\n    tls:\n      insecure: true\n    sending_queue:\n      enabled: false\n",
        stalled.addr.port()
    );
    let batch = "processors:\n  batch:\n    timeout: 1h\n    send_batch_size: 100000\n";
    let mut gw =
        Gateway::start_with_args(&config(batch, "batch", &exporter), &["--shutdown-grace=2s"]);
    assert_eq!(post_span(gw.addr("otlp", "http"), "held").await, 200);
    let signalled = Instant::now();
    gw.signal("TERM");
    let status = tokio::task::block_in_place(|| gw.wait_for_exit(GRACE * 3));
    let exited_after = signalled.elapsed();
    eprintln!("exited {exited_after:?} after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(
        exited_after < GRACE,
        "exited {exited_after:?} after SIGTERM, grace period {GRACE:?}"
    );
    // The flush had the period, less the reserve for exiting (a tenth).
    assert!(exited_after >= GRACE * 8 / 10, "{exited_after:?}");
    gw.wait_for_log(
        &["did not pass on what it holds", "batch"],
        Duration::from_secs(1),
    );
}

/// An interactive Ctrl-C (SIGINT) has no load balancer to wait for, and a
/// second signal during the drain delay means "now": neither waits it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_and_a_second_signal_skip_the_drain_delay() {
    let sink = Sink::start().await;
    let yaml = config("", "", &otlp_exporter_to(sink.addr));
    let args = ["--shutdown-drain-delay=30s", "--shutdown-grace=60s"];

    let mut twice = Gateway::start_with_args(&yaml, &args);
    let health = twice.addr("health_check", "http");
    let signalled = Instant::now();
    twice.signal("TERM");
    health_turns(health, 503, signalled, Duration::from_secs(1)).await;
    twice.signal("TERM");
    let status = tokio::task::block_in_place(|| twice.wait_for_exit(Duration::from_secs(5)));
    assert!(status.success(), "exit status {status}");
    twice.wait_for_log(&["a second signal"], Duration::from_secs(1));

    let mut interrupted = Gateway::start_with_args(&yaml, &args);
    interrupted.signal("INT");
    let status = tokio::task::block_in_place(|| interrupted.wait_for_exit(Duration::from_secs(5)));
    assert!(status.success(), "exit status {status}");
}
