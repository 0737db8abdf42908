//! The persistent sending queue (`sending_queue.storage` on a
//! `file_storage` extension) with real processes: what tracegate
//! acknowledged survives SIGKILL and arrives once the backend is back; a
//! torn segment costs only the damaged record, counted; a second process
//! on the same directory is refused; SIGTERM under load with the backend
//! down leaves on disk what it cannot deliver. Each test prints sent /
//! acknowledged / delivered / duplicated / lost.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use crate::support::gateway::{Gateway, TELEMETRY};
use crate::support::raw::{self, TRACE_EXPORT};
use crate::support::sink::Sink;

/// One OTLP request of `spans` spans whose span ids are `first..first+spans`.
fn request(first: u64, spans: u64) -> Vec<u8> {
    request_message(first, spans).encode_to_vec()
}

/// [`request`], not yet encoded.
fn request_message(first: u64, spans: u64) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (first..first + spans)
                    .map(|id| Span {
                        trace_id: (id / 10 + 1).to_be_bytes().repeat(2),
                        span_id: (id + 1).to_be_bytes().to_vec(),
                        name: "op".into(),
                        start_time_unix_nano: 1,
                        end_time_unix_nano: 2,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The gateway's config: OTLP/gRPC in, `otlp` out to `sink` through a
/// persistent queue in `store`, retrying fast and forever.
fn config(sink: SocketAddr, store: &Path) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
exporters:
  otlp:
    endpoint: 127.0.0.1:{port}
    compression: none
    tls:
      insecure: true
    retry_on_failure:
      initial_interval: 10ms
      max_interval: 100ms
      max_elapsed_time: 0s
    sending_queue:
      storage: file_storage/queue
      queue_size: 100000
extensions:
  file_storage/queue:
    directory: {store}
service:
  extensions: [file_storage/queue]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
{TELEMETRY}"#,
        port = sink.port(),
        store = store.display(),
    )
}

/// Sends `requests` of `per_request` spans each, a few at a time; returns
/// the span ids the gateway acknowledged.
async fn send(gw: &Gateway, requests: u64, per_request: u64) -> HashSet<Vec<u8>> {
    let addr = gw.addr("otlp", "grpc");
    let mut acknowledged = HashSet::new();
    let ids: Vec<u64> = (0..requests).collect();
    for chunk in ids.chunks(8) {
        let replies = futures::future::join_all(chunk.iter().map(|&i| async move {
            let body = request(i * per_request, per_request);
            (i, raw::grpc(addr, TRACE_EXPORT, &body, None).await)
        }))
        .await;
        for (i, reply) in replies {
            if reply.code == 0 {
                acknowledged.extend(
                    (i * per_request..(i + 1) * per_request)
                        .map(|id| (id + 1).to_be_bytes().to_vec()),
                );
            }
        }
    }
    acknowledged
}

struct Tally {
    sent: usize,
    acknowledged: usize,
    delivered: usize,
    duplicated: usize,
    lost: usize,
}

impl Tally {
    fn of(sink: &Sink, sent: usize, acknowledged: &HashSet<Vec<u8>>) -> Tally {
        let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
        for span in sink.spans() {
            *seen.entry(span.span.span_id).or_default() += 1;
        }
        Tally {
            sent,
            acknowledged: acknowledged.len(),
            delivered: seen.len(),
            duplicated: seen.values().map(|n| n - 1).sum(),
            lost: acknowledged
                .iter()
                .filter(|id| !seen.contains_key(*id))
                .count(),
        }
    }

    fn print(&self, test: &str) {
        println!(
            "{test}: sent {} / acknowledged {} / delivered {} / duplicated {} / lost {}",
            self.sent, self.acknowledged, self.delivered, self.duplicated, self.lost
        );
    }
}

/// What [`store_then_kill`] left: the queue's directory, the backend (still
/// refusing), the config and the span ids the gateway acknowledged.
struct Stored {
    store: tempfile::TempDir,
    sink: Sink,
    yaml: String,
    acknowledged: HashSet<Vec<u8>>,
    /// How long sending and storing took.
    took: Duration,
}

/// With the backend down, has a gateway store `requests` requests of
/// `per_request` spans in its persistent queue, checks that it
/// acknowledged every one, then SIGKILLs it: a crash, no shutdown, no
/// flush.
async fn store_then_kill(requests: u64, per_request: u64) -> Stored {
    let store = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    sink.set_refusing(true);
    let yaml = config(sink.addr, store.path());
    let mut gw = Gateway::start(&yaml);
    let started = Instant::now();
    let acknowledged = send(&gw, requests, per_request).await;
    let took = started.elapsed();
    assert_eq!(
        acknowledged.len() as u64,
        requests * per_request,
        "the queue takes everything while the backend is down"
    );
    gw.kill();
    assert!(sink.spans().is_empty(), "the backend took nothing yet");
    Stored {
        store,
        sink,
        yaml,
        acknowledged,
        took,
    }
}

/// The queue's segment files, oldest first.
fn segments(store: &Path) -> Vec<PathBuf> {
    let client = store.join("exporter_otlp__traces");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&client)
        .unwrap_or_else(|e| panic!("{}: {e}", client.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// The value of the first sample of `name` whose labels hold every one of
/// `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_span_arrives_after_sigkill_and_restart() {
    const REQUESTS: u64 = 200;
    const PER_REQUEST: u64 = 1000;
    let Stored {
        store,
        sink,
        yaml,
        acknowledged,
        took: sending,
    } = store_then_kill(REQUESTS, PER_REQUEST).await;
    let restarted = Instant::now();

    sink.set_refusing(false);
    let gw = Gateway::start(&yaml);
    gw.wait_for_log(&["Resuming the persistent queue"], Duration::from_secs(5));
    let arrived = sink
        .wait_for_spans(acknowledged.len(), Duration::from_secs(60))
        .await;
    let tally = Tally::of(&sink, (REQUESTS * PER_REQUEST) as usize, &acknowledged);
    tally.print("persistent queue across SIGKILL");
    println!(
        "  ({} spans sent and stored in {sending:?}; restarted and all delivered in {:?})",
        acknowledged.len(),
        restarted.elapsed()
    );
    assert!(arrived, "not every span arrived");
    assert_eq!(tally.lost, 0, "acknowledged spans lost");
    // The backend refused everything before the crash and nothing was in
    // flight after the restart, so at-least-once gives no duplicate here.
    assert_eq!(tally.duplicated, 0);
    assert_eq!(tally.delivered, acknowledged.len());
    // Delivered batches leave the disk: one segment (the one being
    // appended to) is left.
    let metrics = gw.addr("telemetry", "metrics");
    let deadline = Instant::now() + Duration::from_secs(10);
    while segments(store.path()).len() > 1 {
        assert!(Instant::now() < deadline, "{:?}", segments(store.path()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = raw::wait_for_metrics(
        metrics,
        &["otelcol_exporter_sent_spans_total"],
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        metric(&text, "otelcol_exporter_sent_spans_total", &[]),
        Some(acknowledged.len() as f64)
    );
}

/// Stores 20 requests of 100 spans with the backend down, kills the
/// gateway, damages the last segment with `damage`, restarts with the
/// backend up and waits for `expect` spans to arrive. Returns the tally,
/// the requests delivered (by index) and the count of lost records the
/// gateway reported.
async fn after_damage(
    expect: u64,
    damage: impl FnOnce(&Path),
) -> (Tally, Vec<u64>, HashSet<Vec<u8>>, f64) {
    const REQUESTS: u64 = 20;
    const PER_REQUEST: u64 = 100;
    let Stored {
        store,
        sink,
        yaml,
        acknowledged,
        ..
    } = store_then_kill(REQUESTS, PER_REQUEST).await;
    let last = segments(store.path()).pop().expect("a segment");
    damage(&last);

    sink.set_refusing(false);
    let gw = Gateway::start(&yaml);
    let metrics = gw.addr("telemetry", "metrics");
    let text = raw::wait_for_metrics(
        metrics,
        &["otelcol_tracegate_storage_lost_records_total"],
        Duration::from_secs(5),
    )
    .await;
    let lost_records = metric(
        &text,
        "otelcol_tracegate_storage_lost_records_total",
        &["reason=\"corrupt\"", "client=\"exporter_otlp__traces\""],
    )
    .expect("lost records counted");
    // Everything before the damage arrives, and the exporter has counted
    // it sent: nothing is left in flight to arrive later.
    assert!(
        sink.wait_for_spans(expect as usize, Duration::from_secs(20))
            .await,
        "the records before the damage arrive"
    );
    raw::wait_for_metrics(
        metrics,
        &[&format!(
            "otelcol_exporter_sent_spans_total{{exporter=\"otlp\"}} {expect}"
        )],
        Duration::from_secs(10),
    )
    .await;
    let tally = Tally::of(&sink, (REQUESTS * PER_REQUEST) as usize, &acknowledged);
    let delivered_requests: Vec<u64> = {
        let mut firsts: Vec<u64> = sink
            .spans()
            .iter()
            .map(|s| u64::from_be_bytes(s.span.span_id.clone().try_into().unwrap()) - 1)
            .filter(|id| id % PER_REQUEST == 0)
            .map(|id| id / PER_REQUEST)
            .collect();
        firsts.sort();
        firsts
    };
    (tally, delivered_requests, acknowledged, lost_records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_segment_loses_only_its_last_record_and_counts_it() {
    let (tally, delivered, _, lost_records) = after_damage(1900, |segment| {
        // Cut into the last record (each request is a few KiB).
        let len = std::fs::metadata(segment).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(segment)
            .unwrap()
            .set_len(len - 100)
            .unwrap();
    })
    .await;
    tally.print("truncated segment");
    assert_eq!(lost_records, 1.0);
    // Every request but the one written last (requests are sent a few at a
    // time, so which one that is varies), once each, in full.
    assert_eq!(delivered.len(), 19, "{delivered:?}");
    assert_eq!(tally.delivered, 1900, "whole requests");
    assert_eq!(tally.duplicated, 0);
    assert_eq!(tally.lost, 100, "only the damaged record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_cut_mid_record_keeps_everything_before_it() {
    let (tally, delivered, acknowledged, lost_records) = after_damage(2000, |segment| {
        // What a crash in the middle of an append leaves: the start of a
        // record that was never acknowledged (a header promising 4 KiB,
        // then a few bytes), written where each append begins, over the
        // end marker that follows the records (8 bytes).
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(segment)
            .unwrap();
        file.seek(SeekFrom::End(-8)).unwrap();
        file.write_all(&4096u32.to_le_bytes()).unwrap();
        file.write_all(&[0xAB; 40]).unwrap();
    })
    .await;
    tally.print("write cut mid-record");
    assert_eq!(lost_records, 1.0);
    assert_eq!(delivered, (0..20).collect::<Vec<u64>>());
    assert_eq!(tally.lost, 0, "nothing acknowledged was lost");
    assert_eq!(tally.duplicated, 0);
    assert_eq!(tally.delivered, acknowledged.len());
}

#[test]
fn a_second_process_on_the_same_directory_is_refused_naming_it_and_the_holder() {
    let store = tempfile::tempdir().unwrap();
    // The backend is never reached.
    let nowhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let yaml = config(nowhere, store.path())
        .replace("    directory:", "    timeout: 200ms\n    directory:");
    let first = Gateway::start(&yaml);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracegate"))
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("extensions::file_storage/queue"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&store.path().display().to_string()),
        "names the directory: {stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {}", first.pid())),
        "names the holder: {stderr}"
    );
    assert!(stderr.contains("in use by another process"), "{stderr}");
    assert!(!stderr.contains("tracegate is ready"), "{stderr}");
    // The first one is untouched by the attempt.
    let mut first = first;
    assert!(first.is_running());
}

/// The fields of the first JSON log line holding `message`.
fn log_fields(gw: &Gateway, message: &str) -> serde_json::Value {
    let logs = gw.wait_for_log(&[message], Duration::from_secs(5));
    let line = logs.iter().find(|l| l.contains(message)).unwrap();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Issue 15's test "SIGTERM under load with a dead backend and storage
/// on", and item 4's promise: with storage, what cannot be delivered in
/// time stays on disk instead of being counted as lost. Clients send
/// while the backend refuses everything; SIGTERM comes in the middle. The
/// process exits within the grace period, says that it keeps on disk
/// every span it acknowledged (queued or in flight at the end), drops
/// nothing, and the next start, with the backend up, delivers all of it
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_with_the_backend_down_keeps_everything_for_the_next_start() {
    const GRACE: Duration = Duration::from_secs(3);
    const PER_REQUEST: u64 = 200;
    const MAX_REQUESTS: u64 = 5000;
    let store = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    sink.set_refusing(true);
    let yaml = config(sink.addr, store.path());
    let mut gw = Gateway::start_with_args(
        &yaml,
        &["--shutdown-drain-delay=300ms", "--shutdown-grace=3s"],
    );
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", gw.addr("otlp", "grpc")))
            .unwrap()
            .connect()
            .await
            .unwrap();
    // Four clients send one request after another until the gateway stops
    // answering (its listener closes after the drain delay).
    let next = Arc::new(AtomicU64::new(0));
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (mut client, next, acknowledged) = (
                TraceServiceClient::new(channel.clone()),
                next.clone(),
                acknowledged.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= MAX_REQUESTS {
                        return;
                    }
                    let first = i * PER_REQUEST;
                    if client
                        .export(request_message(first, PER_REQUEST))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    acknowledged.lock().unwrap().extend(
                        (first..first + PER_REQUEST).map(|id| (id + 1).to_be_bytes().to_vec()),
                    );
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while acknowledged.lock().unwrap().len() < 20_000 {
        assert!(Instant::now() < deadline, "the load did not get going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let signalled = Instant::now();
    gw.signal("TERM");
    for client in clients {
        client.await.unwrap();
    }
    let load_ended = signalled.elapsed();
    let status = tokio::task::block_in_place(|| gw.wait_for_exit(GRACE * 2));
    let exited_after = signalled.elapsed();
    let sent = (next.load(Ordering::SeqCst).min(MAX_REQUESTS) * PER_REQUEST) as usize;
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(status.success(), "exit status {status}");
    assert!(
        exited_after < GRACE,
        "exited {exited_after:?} after SIGTERM"
    );
    assert!(
        load_ended >= Duration::from_millis(300),
        "the load ended {load_ended:?} after SIGTERM, before the drain delay was over"
    );
    assert!(sink.spans().is_empty(), "the backend took nothing");
    // Nothing counted as lost; everything said to stay on disk.
    for dropped in ["dropping queued spans", "Dropping data"] {
        assert!(
            !gw.logs().iter().any(|l| l.contains(dropped)),
            "{dropped}: {:#?}",
            gw.logs()
        );
    }
    let kept = log_fields(&gw, "Queued spans stay in storage for the next start.");
    let kept_spans = kept["spans"].as_u64().unwrap();
    assert!(
        kept_spans >= acknowledged.len() as u64,
        "kept {kept_spans} of {} acknowledged spans",
        acknowledged.len()
    );

    sink.set_refusing(false);
    let gw = Gateway::start(&yaml);
    let resumed = log_fields(&gw, "Resuming the persistent queue");
    assert_eq!(resumed["spans"].as_u64(), Some(kept_spans));
    let arrived = sink
        .wait_for_spans(kept_spans as usize, Duration::from_secs(30))
        .await;
    let tally = Tally::of(&sink, sent, &acknowledged);
    tally.print("SIGTERM under load, backend down");
    println!(
        "  (load ended {load_ended:?} and the process exited {exited_after:?} after SIGTERM, \
         grace {GRACE:?}; {kept_spans} spans kept on disk)"
    );
    assert!(arrived, "not every kept span arrived");
    assert_eq!(tally.lost, 0, "acknowledged spans lost");
    // Nothing was delivered before the restart, so nothing is twice.
    assert_eq!(tally.duplicated, 0);
    assert_eq!(tally.delivered as u64, kept_spans);
}
