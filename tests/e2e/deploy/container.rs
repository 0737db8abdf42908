//! The container image: `deploy/Dockerfile` runs the release binary on
//! `config/container.yaml` as uid 65532 with `/` as its working directory.
//! No Docker engine runs where the tests run, so the image's promises are
//! checked on its parts: the Dockerfile (hadolint lints it in `.ci/run`),
//! its build context, and the binary run as the image runs it.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use http::Method;

use super::{read, repo, yaml};
use crate::support::gateway::Gateway;
use crate::support::raw;

/// The unprivileged user the image runs as.
const IMAGE_UID: &str = "65532";

/// The Dockerfile's final stage: what the image is.
fn final_stage(dockerfile: &str) -> &str {
    dockerfile
        .rsplit_once("\nFROM ")
        .map(|(_, stage)| stage)
        .expect("a multi-stage Dockerfile")
}

#[test]
fn the_image_listens_everywhere_exposes_every_port_and_writes_nothing() {
    let dockerfile = read("deploy/Dockerfile");
    let image = final_stage(&dockerfile);
    let instruction = |name: &str| -> Vec<&str> {
        image
            .lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .collect()
    };
    assert_eq!(
        instruction("COPY"),
        [
            "--from=build /tracegate /usr/local/bin/tracegate",
            "config/container.yaml /etc/tracegate/config.yaml"
        ]
    );
    assert_eq!(
        instruction("CMD"),
        [r#"["--config=/etc/tracegate/config.yaml"]"#]
    );
    assert_eq!(instruction("USER"), [format!("{IMAGE_UID}:{IMAGE_UID}")]);
    let exposed: BTreeSet<String> = instruction("EXPOSE")
        .iter()
        .flat_map(|l| l.split_whitespace())
        .map(str::to_string)
        .collect();

    let config = yaml(&read("config/container.yaml"), "config/container.yaml");
    let mut listened = BTreeSet::new();
    for (path, endpoint, transport) in super::listeners(&config) {
        let port = endpoint
            .strip_prefix("0.0.0.0:")
            .unwrap_or_else(|| panic!("{path}: {endpoint} is not reachable from outside"));
        listened.insert(match transport {
            "udp" => format!("{port}/udp"),
            _ => port.to_string(),
        });
    }
    assert_eq!(exposed, listened, "EXPOSE and the config's listeners");

    // Nothing written to disk: no file exporter, logs to stderr only.
    for id in config["exporters"].as_object().expect("exporters").keys() {
        assert_ne!(id.split('/').next(), Some("file"), "exporter {id}");
    }
    assert!(config["service"]["telemetry"]["logs"]["output_paths"].is_null());
    let path = repo().join("config/container.yaml");
    super::assert_validates_cleanly(&["--config", path.to_str().expect("utf-8 path")]);
}

/// The build context `.dockerignore` leaves holds what `cargo build -p
/// tracegate` reads: the workspace's manifests and members, the configs
/// the binary embeds and the image copies, and not `target/`.
#[test]
fn the_build_context_holds_the_workspace_and_no_build_output() {
    let ignore = read(".dockerignore");
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(patterns.first(), Some(&"*"), "everything out, then back in");
    assert!(patterns.contains(&"**/target"), "{patterns:?}");
    let workspace = read("Cargo.toml");
    let members: Vec<&str> = workspace
        .split("members = [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("workspace members")
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
        .collect();
    assert!(!members.is_empty());
    let mut needed: BTreeSet<String> = members
        .iter()
        .map(|m| format!("{}/", m.split('/').next().unwrap()))
        .collect();
    // Embedded (`include_str!`) and copied into the image; the e2e target
    // of the tracegate crate, which cargo resolves with the manifest.
    needed.extend(["config/", "tests/", "proto/"].map(String::from));
    needed.extend(["Cargo.toml", "Cargo.lock"].map(String::from));
    for path in &needed {
        assert!(
            patterns.contains(&format!("!{path}").as_str()),
            ".dockerignore leaves out {path}: {patterns:?}"
        );
    }
}

/// The uid this test process runs as.
fn own_uid() -> String {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .expect("Uid line")
        .to_string()
}

/// The real and effective uid of process `pid`.
fn uids_of(pid: u32) -> Vec<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("Uid line")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// `program` as the image runs it: as root this test switches to the
/// image's uid and group with `setpriv` (which execs, so the process is
/// tracegate itself); otherwise it already runs unprivileged.
fn as_image_user(program: &str) -> Command {
    if own_uid() == "0" {
        let mut command = Command::new("setpriv");
        command.args([
            &format!("--reuid={IMAGE_UID}"),
            &format!("--regid={IMAGE_UID}"),
            "--clear-groups",
            "--no-new-privs",
            program,
        ]);
        command
    } else {
        Command::new(program)
    }
}

/// The binary, run as the image runs it: `config/container.yaml` as it is
/// (only its listen addresses moved to ephemeral loopback ports and its
/// logs to JSON, so the test can find them), an unprivileged uid, and a
/// working directory and temp directory it cannot write. It takes spans
/// over OTLP/gRPC, OTLP/HTTP and Zipkin and exports them (to the log:
/// the debug exporter), and leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_config_runs_unprivileged_in_a_directory_it_cannot_write() {
    let workdir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(workdir.path(), std::fs::Permissions::from_mode(0o555))
        .expect("chmod");
    let config = repo().join("config/container.yaml");
    let mut command = as_image_user(env!("CARGO_BIN_EXE_tracegate"));
    command
        .current_dir(workdir.path())
        .env("TMPDIR", workdir.path())
        .arg(format!("--config={}", config.display()));
    for key in [
        "receivers.otlp.protocols.grpc.endpoint",
        "receivers.otlp.protocols.http.endpoint",
        "receivers.jaeger.protocols.grpc.endpoint",
        "receivers.jaeger.protocols.thrift_http.endpoint",
        "receivers.jaeger.protocols.thrift_compact.endpoint",
        "receivers.jaeger.protocols.thrift_binary.endpoint",
        "receivers.zipkin.endpoint",
        "extensions.health_check.endpoint",
        "service.telemetry.metrics.address",
    ] {
        command.arg(format!("--set={key}=127.0.0.1:0"));
    }
    command.arg("--set=service.telemetry.logs.encoding=json");
    let gw = Gateway::spawn(command, tempfile::tempdir().expect("temp dir"));

    // The setup is what it claims: tracegate runs unprivileged, and as
    // that user the working directory cannot be written.
    let uids = uids_of(gw.pid());
    assert!(
        uids.iter().all(|u| u != "0"),
        "tracegate runs as root: {uids:?}"
    );
    let probe = workdir.path().join("probe");
    let wrote = run_status(
        as_image_user("sh")
            .arg("-c")
            .arg(format!("echo > '{}'", probe.display())),
    );
    assert!(!wrote, "the working directory is writable");

    super::send_one_span(&gw, "over-grpc").await;
    let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8aa5a2d2c872e8321cf37308d69df2","spanId":"051e64f5b8c54c99","name":"over-http"}]}]}]}"#;
    assert_eq!(
        super::post_json(gw.addr("otlp", "http"), "/v1/traces", json).await,
        200
    );
    let zipkin = r#"[{"traceId":"5b8aa5a2d2c872e8321cf37308d69df3","id":"051e64f5b8c54c9a","name":"over-zipkin","timestamp":1700000000000000,"duration":10,"localEndpoint":{"serviceName":"shop"}}]"#;
    assert_eq!(
        super::post_json(gw.addr("zipkin", "http"), "/api/v2/spans", zipkin).await,
        202
    );

    let metrics = gw.addr("telemetry", "metrics");
    raw::wait_for_metrics(
        metrics,
        &[r#"otelcol_exporter_sent_spans_total{exporter="debug"} 3"#],
        Duration::from_secs(10),
    )
    .await;
    let health = raw::http(
        gw.addr("health_check", "http"),
        Method::GET,
        "/healthz",
        &[],
        "",
    )
    .await;
    assert_eq!(health.status, 200);

    let mut gw = gw;
    let status = gw.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    let left: Vec<_> = std::fs::read_dir(workdir.path())
        .expect("read workdir")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // Let the temp dir be removed.
    std::fs::set_permissions(workdir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
}

fn run_status(command: &mut Command) -> bool {
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run")
        .success()
}
