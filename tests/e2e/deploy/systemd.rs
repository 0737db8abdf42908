//! The GPU node: `deploy/systemd/tracegate.service` runs
//! `config/gpu-node.yaml` with a bounded runtime. `systemd-analyze verify`
//! checks the unit, its command line is run as written, and the profile
//! delivers with the one worker thread the unit gives it.

use std::process::Command;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value::Value;

use super::{read, repo, run, tool};
use crate::support::gateway::Gateway;
use crate::support::sink::Sink;

const UNIT: &str = "deploy/systemd/tracegate.service";

/// The unit's `[Service]` settings, in order (a key may repeat).
fn service_settings(unit: &str) -> Vec<(String, String)> {
    let mut section = "";
    let mut settings = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section == "[Service]" {
            let (key, value) = line.split_once('=').expect("key=value");
            settings.push((key.to_string(), value.to_string()));
        }
    }
    settings
}

fn setting<'a>(settings: &'a [(String, String)], key: &str) -> Option<&'a str> {
    settings
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `MemoryMax=160M` in MiB.
fn mib(size: &str) -> u64 {
    let (number, unit) = size.split_at(size.len() - 1);
    let number: u64 = number.parse().expect("a size");
    match unit {
        "M" => number,
        "G" => number * 1024,
        _ => panic!("{size}: expected M or G"),
    }
}

#[test]
fn the_unit_verifies_and_runs_its_command_line_as_written() {
    let unit = read(UNIT);
    let settings = service_settings(&unit);
    let exec = setting(&settings, "ExecStart").expect("ExecStart");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(words[0], "/usr/local/bin/tracegate");

    // Hardening and limits the unit promises.
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("StateDirectory", "tracegate"),
        ("NoNewPrivileges", "yes"),
        ("PrivateDevices", "yes"),
    ] {
        assert_eq!(setting(&settings, key), Some(value), "{key}");
    }
    for key in ["CPUQuota", "MemoryMax", "Nice"] {
        assert!(setting(&settings, key).is_some(), "{key} is not set");
    }
    // tracegate does not reload its config while running.
    assert!(setting(&settings, "ExecReload").is_none());
    assert!(
        unit.contains("CPUAffinity="),
        "a documented CPUAffinity example"
    );

    // Its command line as written, on the repository's profile: the flags
    // exist and the profile is valid.
    let profile = repo().join("config/gpu-node.yaml");
    let args: Vec<String> = words[1..]
        .iter()
        .map(|w| match w.strip_prefix("--config=") {
            Some(path) => {
                assert_eq!(path, "/etc/tracegate/gpu-node.yaml");
                format!("--config={}", profile.display())
            }
            None => w.to_string(),
        })
        .collect();
    let mut validate: Vec<&str> = args.iter().map(String::as_str).collect();
    validate.push("validate");
    let out = super::tracegate(&validate);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && stdout.trim_end().ends_with(": valid")
            && stdout
                .lines()
                .filter(|l| l.starts_with("warning:"))
                .all(|l| super::EXPECTED_WARNINGS.iter().any(|w| l.starts_with(w))),
        "{exec}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The memory limiter refuses before systemd's MemoryMax kills, and the
    // stop timeout leaves room for the shutdown grace.
    let config = super::yaml(&read("config/gpu-node.yaml"), "config/gpu-node.yaml");
    let limit = config["processors"]["memory_limiter"]["limit_mib"]
        .as_u64()
        .expect("limit_mib");
    let max = mib(setting(&settings, "MemoryMax").unwrap());
    assert!(
        limit < max,
        "limit_mib {limit} must sit below MemoryMax {max}M"
    );
    let grace: u64 = args
        .iter()
        .find_map(|a| {
            a.strip_prefix("--shutdown-grace=")?
                .strip_suffix('s')?
                .parse()
                .ok()
        })
        .unwrap_or(30);
    let stop: u64 = setting(&settings, "TimeoutStopSec")
        .and_then(|t| t.strip_suffix('s')?.parse().ok())
        .expect("TimeoutStopSec in seconds");
    assert!(
        grace < stop,
        "--shutdown-grace {grace}s within TimeoutStopSec {stop}s"
    );

    let Some(analyze) = tool(
        "SYSTEMD_ANALYZE",
        "systemd-analyze",
        "systemd-analyze verify of the unit",
    ) else {
        return;
    };
    // systemd-analyze checks that ExecStart's program exists: the unit as
    // written, its program pointed at the binary under test.
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("tracegate.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/tracegate", env!("CARGO_BIN_EXE_tracegate")),
    )
    .expect("write the unit");
    let out = run(Command::new(analyze).arg("verify").arg(&copy));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // It reports unknown keys and bad values without failing: any line is
    // a finding.
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {}\n{said}",
        out.status
    );
}

/// Threads of the runtime: tokio names its workers and its blocking pool's
/// threads alike (`tokio-rt-worker`, `tokio-runtime-worker` before 1.48).
fn runtime_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| matches!(comm.trim_end(), "tokio-rt-worker" | "tokio-runtime-w"))
        .count()
}

/// The GPU-node profile as the tests run it: every listener on a free
/// loopback port, JSON logs (the harness reads the ports from them), and
/// only the `env` detector (see below).
const GPU_NODE_ON_LOOPBACK: [&str; 6] = [
    "--set=receivers.otlp.protocols.grpc.endpoint=127.0.0.1:0",
    "--set=receivers.otlp.protocols.http.endpoint=127.0.0.1:0",
    "--set=extensions.health_check.endpoint=127.0.0.1:0",
    "--set=service.telemetry.metrics.address=127.0.0.1:0",
    "--set=service.telemetry.logs.encoding=json",
    "--set=processors.resource_detection.detectors=[env]",
];

/// The GPU-node profile as the unit runs it (one worker thread), its
/// listeners moved to ephemeral ports and its gateway tier to one in-test
/// backend: spans from a local job arrive at the gateway with the
/// resource detected, and the runtime has the one thread asked for. The
/// `system` detector is left out here: its name lookup runs on tokio's
/// blocking pool, whose thread carries the workers' name and lingers for
/// 10 s, so the count would not be the workers'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gpu_node_profile_forwards_with_one_worker_thread() {
    let sink = Sink::start().await;
    let port = sink.addr.port().to_string();
    let profile = read("config/gpu-node.yaml");
    // What systemd hands the unit for its StateDirectory.
    let state = tempfile::tempdir().expect("temp dir");
    let state_dir = state.path().to_str().expect("utf-8 temp path");
    let args = [&["--worker-threads=1"][..], &GPU_NODE_ON_LOOPBACK].concat();
    let envs = [
        // The gateway tier's members as the dns resolver finds them: here
        // one, the in-test backend.
        ("TRACEGATE_GATEWAY_HOSTNAME", "127.0.0.1"),
        ("TRACEGATE_GATEWAY_PORT", port.as_str()),
        // Every trace, so the test knows what must arrive.
        ("TRACEGATE_HEAD_SAMPLING_PERCENTAGE", "100"),
        ("OTEL_RESOURCE_ATTRIBUTES", "host.name=gpu-17"),
        ("STATE_DIRECTORY", state_dir),
    ];
    let gw = Gateway::start_with(&profile, &args, &envs);
    let ready = gw.wait_for_log(&["tracegate is ready"], Duration::from_secs(1));
    assert!(
        ready
            .iter()
            .any(|l| l.contains("tracegate is ready") && l.contains(r#""worker_threads":1"#)),
        "{ready:#?}"
    );
    assert_eq!(runtime_threads(gw.pid()), 1);

    super::send_one_span(&gw, "training-step").await;
    assert!(sink.wait_for_spans(1, Duration::from_secs(10)).await);
    let spans = sink.spans();
    assert_eq!(spans[0].span.name, "training-step");
    assert_eq!(
        spans[0].resource_attr("host.name"),
        Some(&Value::StringValue("gpu-17".into()))
    );
    // Still one: serving requests started no thread.
    assert_eq!(runtime_threads(gw.pid()), 1);
    // The persistent queue lives in the state directory, created for it.
    assert!(
        state.path().join("queue").is_dir(),
        "no queue directory under STATE_DIRECTORY"
    );
}

/// The GPU node's backlog survives a restart: spans taken while the
/// gateway tier refuses them stay in the queue under the unit's state
/// directory when the service stops, and the next start sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gpu_node_backlog_survives_a_restart() {
    let sink = Sink::start().await;
    sink.set_refusing(true);
    let port = sink.addr.port().to_string();
    let profile = read("config/gpu-node.yaml");
    let state = tempfile::tempdir().expect("temp dir");
    let state_dir = state.path().to_str().expect("utf-8 temp path");
    let args = [
        &["--worker-threads=1", "--shutdown-grace=1s"][..],
        &GPU_NODE_ON_LOOPBACK,
    ]
    .concat();
    let envs = [
        ("TRACEGATE_GATEWAY_HOSTNAME", "127.0.0.1"),
        ("TRACEGATE_GATEWAY_PORT", port.as_str()),
        ("TRACEGATE_HEAD_SAMPLING_PERCENTAGE", "100"),
        ("STATE_DIRECTORY", state_dir),
    ];
    let mut gw = Gateway::start_with(&profile, &args, &envs);
    super::send_one_span(&gw, "before-restart").await;
    assert!(gw.terminate(Duration::from_secs(10)).success());
    let logs = gw.logs().join("\n");
    assert!(
        logs.contains("Queued spans stay in storage for the next start."),
        "{logs}"
    );
    assert_eq!(sink.span_count(), 0);

    sink.set_refusing(false);
    let _gw = Gateway::start_with(&profile, &args, &envs);
    assert!(sink.wait_for_spans(1, Duration::from_secs(10)).await);
    assert_eq!(sink.spans()[0].span.name, "before-restart");
}
