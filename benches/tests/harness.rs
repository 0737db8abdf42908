//! The harness tests itself: loader → sink accounts for every span in every
//! protocol (OTLP and Jaeger gRPC) and compression, refusals are retried and
//! counted on both sides, and short scenarios run through the real
//! tracegate binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const LOADGEN: &str = env!("CARGO_BIN_EXE_tracegate-loadgen");

struct Sink {
    child: Child,
    addr: String,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Sink {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn start(args: &[&str]) -> Sink {
        let mut child = Command::new(LOADGEN)
            .args(["sink", "--report-every", "50ms"])
            .args(args)
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("start sink");
        let (tx, lines) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("sink says where it listens");
        let addr = first.strip_prefix("listening ").unwrap().to_string();
        Sink { child, addr, lines }
    }

    /// Stops the sink (SIGTERM) and returns its final stats.
    fn stop(mut self) -> Value {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_secs(1)) {
                Ok(line) => {
                    let v: Value = serde_json::from_str(&line).unwrap();
                    if v["final"] == true {
                        self.child.wait().unwrap();
                        return v;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(e) => panic!("sink ended without final stats: {e}"),
            }
        }
        panic!("sink did not stop");
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn send(endpoint: &str, args: &[&str]) -> Value {
    let out = Command::new(LOADGEN)
        .args(["send", "--endpoint", endpoint])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run loader");
    assert!(
        out.status.success(),
        "loader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("loader's JSON report")
}

fn check(manifest: &Path, record: &Path, expect: &[&str]) -> (bool, Value) {
    let mut cmd = Command::new(LOADGEN);
    cmd.arg("check")
        .arg("--manifest")
        .arg(manifest)
        .arg("--record")
        .arg(record);
    for e in expect {
        cmd.args(["--expect", e]);
    }
    let out = cmd.output().expect("run checker");
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).expect("checker's JSON"),
    )
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// A load sent with a manifest to a sink that records every span.
struct Recorded {
    dir: tempfile::TempDir,
    /// The loader's report.
    report: Value,
    /// The sink's final stats.
    stats: Value,
}

impl Recorded {
    fn new(sink_args: &[&str], send_args: &[&str]) -> Recorded {
        let dir = temp_dir();
        let record = dir.path().join("record.bin");
        let manifest = dir.path().join("manifest.txt");
        let mut sink_all = vec!["--record", record.to_str().unwrap()];
        sink_all.extend_from_slice(sink_args);
        let sink = Sink::start(&sink_all);
        let mut send_all = send_args.to_vec();
        send_all.extend_from_slice(&["--manifest", manifest.to_str().unwrap()]);
        let report = send(&sink.url(), &send_all);
        let stats = sink.stop();
        Recorded { dir, report, stats }
    }

    fn manifest(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("manifest.txt")).unwrap()
    }

    /// The checker's verdict on manifest and record, which must be clean.
    fn check(&self, expect: &[&str]) -> Value {
        let (ok, summary) = check(
            &self.dir.path().join("manifest.txt"),
            &self.dir.path().join("record.bin"),
            expect,
        );
        assert!(ok, "{summary}");
        assert_eq!(summary["duplicate_spans"], 0, "{summary}");
        assert_eq!(summary["unknown_spans"], 0, "{summary}");
        summary
    }
}

/// (traces, complete traces) over every class of a checker summary.
fn traces_and_complete(summary: &Value) -> (u64, u64) {
    let classes = summary["classes"].as_object().unwrap();
    let sum = |key| -> u64 { classes.values().map(|c| c[key].as_u64().unwrap()).sum() };
    (sum("traces"), sum("complete"))
}

#[test]
fn every_span_sent_arrives_once_in_every_protocol() {
    for (protocol, compression) in [
        ("grpc", "none"),
        ("grpc", "gzip"),
        ("grpc", "zstd"),
        ("http-proto", "none"),
        ("http-proto", "zstd"),
        ("http-json", "gzip"),
        ("jaeger-grpc", "none"),
        ("jaeger-grpc", "gzip"),
    ] {
        let run = Recorded::new(
            &[],
            &[
                "--protocol",
                protocol,
                "--compression",
                compression,
                "--spans",
                "3000",
                "--spans-per-trace",
                "7",
                "--traces-per-round",
                "25",
                "--requests-per-trace",
                "3",
                "--connections",
                "2",
                "--error-share",
                "0.2",
                "--slow-share",
                "0.2",
            ],
        );
        let (report, stats) = (&run.report, &run.stats);
        let what = format!("{protocol}/{compression}");
        // 3000 spans in rounds of 25 × 7 = 175 spans: 18 rounds, each in
        // 3 requests, or for Jaeger one per service (7 of 10 have spans).
        let parts = if protocol == "jaeger-grpc" { 7 } else { 3 };
        assert_eq!(report["spans_acked"], 18 * 175, "{what}: {report}");
        assert_eq!(report["spans_failed"], 0, "{what}");
        assert_eq!(report["requests"], 18 * parts, "{what}");
        assert_eq!(stats["spans"], 18 * 175, "{what}: {stats}");
        assert_eq!(stats["traces"], 18 * 25, "{what}");
        assert_eq!(stats["bad_requests"], 0, "{what}");
        let summary = run.check(&["error=1", "slow=1", "normal=1"]);
        assert_eq!(traces_and_complete(&summary), (450, 450), "{what}");
        assert!(summary["classes"]["error"]["traces"].as_u64().unwrap() > 0);
        assert!(summary["classes"]["slow"]["traces"].as_u64().unwrap() > 0);
    }
}

#[test]
fn refusals_are_retried_and_counted_on_both_sides() {
    for (protocol, fault) in [
        ("grpc", "unavailable"),
        ("grpc", "resource-exhausted"),
        ("http-proto", "unavailable"),
        ("http-proto", "resource-exhausted"),
        ("jaeger-grpc", "unavailable"),
        ("jaeger-grpc", "resource-exhausted"),
    ] {
        let run = Recorded::new(
            &[
                "--fault",
                fault,
                "--fault-share",
                "0.5",
                "--retry-after",
                "0s",
            ],
            &[
                "--protocol",
                protocol,
                "--spans",
                "2000",
                "--traces-per-round",
                "20",
                "--retry-initial",
                "1ms",
                "--retry-max",
                "5ms",
            ],
        );
        let (report, stats) = (&run.report, &run.stats);
        let what = format!("{protocol}/{fault}");
        assert_eq!(report["spans_acked"], 2000, "{what}: {report}");
        assert_eq!(report["spans_failed"], 0, "{what}: {report}");
        let refusals = report["refusals"].as_u64().unwrap();
        assert!(refusals > 0, "{what}: {report}");
        assert_eq!(report["retries"], refusals, "{what}");
        assert_eq!(stats["refused_requests"], refusals, "{what}: {stats}");
        assert_eq!(stats["spans"], 2000, "{what}: {stats}");
        // Refused requests were not counted, so nothing arrives twice.
        run.check(&["normal=1"]);
    }
}

#[test]
fn refusals_give_up_after_max_elapsed() {
    let sink = Sink::start(&["--fault", "unavailable", "--retry-after", "0s"]);
    let report = send(
        &sink.url(),
        &[
            "--spans",
            "100",
            "--traces-per-round",
            "10",
            "--requests-per-trace",
            "1",
            "--connections",
            "1",
            "--in-flight",
            "1",
            "--retry-initial",
            "5ms",
            "--retry-max",
            "10ms",
            "--retry-max-elapsed",
            "50ms",
        ],
    );
    assert_eq!(report["spans_acked"], 0, "{report}");
    assert_eq!(report["spans_failed"], 100, "{report}");
    assert!(report["refusals"].as_u64().unwrap() >= 2, "{report}");
    assert_eq!(sink.stop()["spans"], 0);
}

/// tracegate's binary beside the loader's in the same target directory;
/// `cargo test --workspace` builds it.
fn tracegate_binary() -> PathBuf {
    let bin = Path::new(LOADGEN).with_file_name("tracegate");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p tracegate` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// Runs `benches/scenarios/NAME.yaml` through the real tracegate and checks
/// what every scenario run must give: all `spans` acknowledged, delivered
/// and accounted for by the checker, tracegate's own receiver counters
/// agreeing, the JSON result and the Markdown row written.
fn run_small_scenario(name: &str, spans: u64) -> Value {
    let bin = tracegate_binary();
    run_scenario(
        name,
        spans,
        &["--tracegate", bin.to_str().unwrap()],
        "tracegate",
    )
}

fn scenario_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("scenarios/{name}.yaml"))
}

/// [`run_small_scenario`] with the runner's target given by `target_args`,
/// the result naming it `label`.
fn run_scenario(name: &str, spans: u64, target_args: &[&str], label: &str) -> Value {
    let out_dir = temp_dir();
    let out = Command::new(LOADGEN)
        .arg("run")
        .arg("--scenario")
        .arg(scenario_path(name))
        .arg("--out")
        .arg(out_dir.path())
        // Last: they may end with `-- <send arguments>`.
        .args(target_args)
        .stdin(Stdio::null())
        .output()
        .expect("run scenario");
    assert!(
        out.status.success(),
        "runner failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One JSON result per line; with --also-tracegate tracegate's comes
    // first, the target's last.
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    let results: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("runner's JSON"))
        .collect();
    let result = results.last().expect("a result").clone();
    if let [ours, _] = &results[..] {
        // --also-tracegate: tracegate's run of the same load came first.
        assert_eq!(ours["target"], "tracegate");
        assert_eq!(ours["load"]["spans_acked"], spans, "{ours}");
        assert_eq!(ours["sink"]["spans"], spans, "{ours}");
    }
    assert_eq!(result["scenario"], name);
    assert_eq!(result["load"]["spans_acked"], spans, "{result}");
    assert_eq!(result["sink"]["spans"], spans, "{result}");
    assert_eq!(result["delivered_share"], 1.0);
    assert_eq!(result["accuracy"]["ok"], true, "{result}");
    assert!(result["target_cpu_seconds"].as_f64().is_some());
    assert!(result["target_peak_rss_bytes"].as_u64().unwrap() > 0);
    // tracegate's own counters agree with the load.
    let accepted: f64 = result["target_metrics"]
        .as_object()
        .expect("tracegate's metrics were read")
        .iter()
        .filter(|(k, _)| k.starts_with("otelcol_receiver_accepted_spans"))
        .map(|(_, v)| v.as_f64().unwrap())
        .sum();
    assert_eq!(accepted, spans as f64, "{}", result["target_metrics"]);
    // The JSON result and the Markdown row are written.
    let table = std::fs::read_to_string(out_dir.path().join("results.md")).unwrap();
    assert_eq!(result["target"], label);
    let row = format!("| {name} | {label} | {spans} |");
    assert!(table.lines().last().unwrap().contains(&row), "{table}");
    assert_eq!(table.lines().count(), 2 + results.len(), "{table}");
    let jsons = std::fs::read_dir(out_dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(jsons, results.len());
    result
}

#[test]
fn a_short_scenario_runs_through_tracegate() {
    run_small_scenario("ci-smoke", 6000);
}

/// The loadbalancing scenario reaches its three backends (one sink on
/// three loopback addresses) and delivers everything; its baseline runs
/// too.
#[test]
fn the_loadbalancing_scenarios_run_shortened() {
    let bin = tracegate_binary();
    let args = [
        "--tracegate",
        bin.to_str().unwrap(),
        "--",
        "--spans",
        "6000",
    ];
    let result = run_scenario("loadbalancing", 6000, &args, "tracegate");
    let metrics = result["target_metrics"].as_object().expect("metrics");
    let backends: Vec<(&String, f64)> = metrics
        .iter()
        .filter(|(k, _)| {
            k.starts_with("otelcol_exporter_sent_spans_total{exporter=\"loadbalancing/127.0.0.")
        })
        .map(|(k, v)| (k, v.as_f64().unwrap()))
        .collect();
    assert_eq!(backends.len(), 3, "{metrics:?}");
    assert!(backends.iter().all(|(_, sent)| *sent > 0.0), "{backends:?}");
    assert_eq!(backends.iter().map(|(_, sent)| sent).sum::<f64>(), 6000.0);
    run_scenario("loadbalancing-baseline", 6000, &args, "tracegate");
}

/// The body of `GET path` from `addr` over HTTP/1.0.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    body.to_string()
}

/// Comparison mode (issue 3): the same scenario against an OTLP endpoint
/// given on the command line. The endpoint here is a tracegate the test
/// starts itself, as a user would start an OpenTelemetry Collector, with
/// its exporter pointed at the address the runner's sink is told to use.
#[test]
fn comparison_mode_runs_a_scenario_against_an_endpoint_given() {
    // A free port for the sink: bound here, released, bound by the runner.
    let sink_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut target = Command::new(tracegate_binary())
        .arg("--config")
        .arg(scenario_path("ci-smoke"))
        .env("TG_GRPC_ENDPOINT", "127.0.0.1:0")
        .env("TG_HTTP_ENDPOINT", "127.0.0.1:0")
        .env("SINK_ENDPOINT", &sink_addr)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tracegate");
    let (mut grpc, mut metrics) = (None, None);
    let mut log = BufReader::new(target.stderr.take().unwrap()).lines();
    for line in log.by_ref() {
        let line = line.expect("tracegate's log");
        if line.contains("tracegate is ready") {
            break;
        }
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let address = v["address"].as_str().map(String::from);
        match (v["message"].as_str(), v["protocol"].as_str()) {
            (Some("listening"), Some("grpc")) => grpc = address,
            (Some("listening"), Some("metrics")) => metrics = address,
            _ => {}
        }
    }
    // Keep draining the log so tracegate never blocks on a full pipe.
    let drain = std::thread::spawn(move || log.for_each(drop));
    let (grpc, metrics) = (grpc.expect("grpc listener"), metrics.expect("metrics"));
    let url = format!("http://{grpc}");
    let pid = target.id().to_string();
    let args = [
        "--target",
        &url,
        "--target-pid",
        &pid,
        "--target-metrics",
        &metrics,
        "--sink-listen",
        &sink_addr,
        "--label",
        "endpoint-under-test",
        "--also-tracegate",
    ];
    let result = run_scenario("ci-smoke", 6000, &args, "endpoint-under-test");
    // The load went to the process started here, not to one the runner
    // started: its own receiver counted every span.
    let page = http_get(&metrics, "/metrics");
    let accepted: f64 = page
        .lines()
        .filter(|l| l.starts_with("otelcol_receiver_accepted_spans"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(accepted, 6000.0, "{page}");
    target.kill().ok();
    target.wait().ok();
    drain.join().ok();
    assert!(
        result["target_cpu_seconds"].as_f64().unwrap() > 0.0,
        "{result}"
    );
}

/// Jaeger thrift as jaeger-clients send it, over HTTP (`/api/traces`,
/// binary) and over UDP (compact `emitBatch`), reaches the sink whole.
/// On loopback at a low rate no packet is lost, so UDP is held to the same
/// account as HTTP.
#[test]
fn short_jaeger_thrift_scenarios_run_through_tracegate() {
    let bin = tracegate_binary();
    let bin = bin.to_str().unwrap();
    for (protocol, extra) in [
        ("jaeger-thrift-http", &[][..]),
        // UDP has no backpressure: at 2 000 spans/s (about 20 packets a
        // second) the receiver may be kept off the CPU for a few hundred
        // ms by the other tests before the socket's default buffer
        // overflows, so every span is still expected to arrive.
        (
            "jaeger-thrift-udp",
            &["--", "--protocol", "jaeger-thrift-udp", "--rate", "2000"][..],
        ),
    ] {
        let args: Vec<&str> = ["--tracegate", bin].iter().chain(extra).copied().collect();
        let result = run_scenario("ci-jaeger-thrift", 3000, &args, "tracegate");
        assert_eq!(result["load"]["protocol"], protocol);
        let metrics = result["target_metrics"].as_object().unwrap();
        let transport = if protocol.ends_with("http") {
            "thrift_http"
        } else {
            "thrift_compact"
        };
        assert!(
            metrics
                .iter()
                .any(|(k, v)| k.starts_with("otelcol_receiver_accepted_spans")
                    && k.contains(transport)
                    && v.as_f64() == Some(3000.0)),
            "the {transport} port took the load: {metrics:?}"
        );
    }
}

#[test]
fn a_short_jaeger_scenario_runs_through_tracegate() {
    let result = run_small_scenario("ci-jaeger", 3000);
    assert_eq!(result["load"]["protocol"], "jaeger-grpc");
    let metrics = result["target_metrics"].as_object().unwrap();
    assert!(
        metrics
            .keys()
            .any(|k| k.starts_with("otelcol_receiver_accepted_spans") && k.contains("jaeger")),
        "the jaeger receiver took the load: {metrics:?}"
    );
}

#[test]
fn duration_runs_end_on_whole_rounds_and_late_parts_still_arrive() {
    let run = Recorded::new(
        &[],
        &[
            "--duration",
            "300ms",
            "--rate",
            "20000",
            "--traces-per-round",
            "10",
            "--requests-per-trace",
            "3",
            "--late-delay",
            "150ms",
        ],
    );
    let report = &run.report;
    let acked = report["spans_acked"].as_u64().unwrap();
    // 20 000 spans/s for 0.3 s, rounds of 100 spans: at most 61 rounds
    // (fewer when the machine is busy).
    assert!((500..=6_100).contains(&acked), "{report}");
    assert_eq!(acked % 100, 0, "whole rounds only: {report}");
    assert_eq!(report["rounds"].as_u64().unwrap() * 100, acked);
    // The last round's late part went out 150 ms after the rest.
    assert!(report["wall_seconds"].as_f64().unwrap() >= 0.4, "{report}");
    assert_eq!(run.stats["spans"], acked);
    let summary = run.check(&["normal=1"]);
    assert_eq!(summary["classes"]["normal"]["incomplete"], 0);
}

#[test]
fn traces_of_varying_size_arrive_whole() {
    let run = Recorded::new(
        &[],
        &[
            "--spans",
            "5000",
            "--spans-per-trace",
            "3-12",
            "--traces-per-round",
            "30",
            "--requests-per-trace",
            "4",
            "--error-share",
            "0.3",
        ],
    );
    let acked = run.report["spans_acked"].as_u64().unwrap();
    assert!(acked >= 5000, "{}", run.report);
    assert_eq!(run.stats["spans"], acked);
    let sizes: Vec<u64> = run
        .manifest()
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    let distinct: std::collections::HashSet<u64> = sizes.iter().copied().collect();
    assert!(
        distinct.len() > 3 && distinct.iter().all(|n| (3..=12).contains(n)),
        "{distinct:?}"
    );
    run.check(&["error=1", "normal=1"]);
    assert_eq!(sizes.iter().sum::<u64>(), acked);
}
