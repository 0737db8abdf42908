//! What users deploy: the container image (`deploy/Dockerfile` and
//! `config/container.yaml`), the Kubernetes manifests
//! (`deploy/kubernetes`), the GPU node's systemd unit and profile
//! (`deploy/systemd`, `config/gpu-node.yaml`), and the dashboard and alerts
//! (`deploy/grafana`, `deploy/prometheus`), and the gateway tier they make:
//! the shipped agent and gateway configs run together (`gateway_tier.rs`).
//!
//! Some checks need outside tools: `kubectl` (its built-in kustomize),
//! `kubernetes-validate` and `systemd-analyze`. Each is taken from the
//! environment variable named after it (`KUBECTL`, `KUBERNETES_VALIDATE`,
//! `SYSTEMD_ANALYZE`), which then must work, else from `PATH`; a test whose
//! tool is missing says so and checks only what it can without it.
//! `.ci/run` installs all three and sets the variables.

mod container;
mod dashboards;
mod gateway_tier;
mod kubernetes;
mod systemd;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::gateway::Gateway;
use crate::support::raw;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A file of the repository, as text.
pub fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A YAML document as JSON values.
pub fn yaml(text: &str, what: &str) -> serde_json::Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// An outside tool: `$VAR` if set (it must then exist), else `name` on
/// `PATH`, else `None` after saying which test skips what.
pub fn tool(var: &str, name: &str, skipping: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{var}={} does not exist", path.display());
        return Some(path);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!("skipped: {skipping} ({name} not found; set {var})");
    }
    found
}

/// Every `host:port` a collector config listens on, with its path in the
/// config and its transport (`tcp` or `udp`); `${env:VAR:-default}` is
/// read as its default.
pub fn listeners(config: &serde_json::Value) -> Vec<(String, String, &'static str)> {
    let mut found = Vec::new();
    for (id, receiver) in config["receivers"].as_object().expect("receivers") {
        if let Some(endpoint) = receiver["endpoint"].as_str() {
            found.push((format!("receivers.{id}"), env_default(endpoint), "tcp"));
        }
        for (protocol, settings) in receiver["protocols"].as_object().into_iter().flatten() {
            let transport = if protocol.starts_with("thrift_") && protocol != "thrift_http" {
                "udp"
            } else {
                "tcp"
            };
            let endpoint = settings["endpoint"]
                .as_str()
                .unwrap_or_else(|| panic!("receivers.{id}.protocols.{protocol}: no endpoint"));
            found.push((
                format!("receivers.{id}.protocols.{protocol}"),
                env_default(endpoint),
                transport,
            ));
        }
    }
    for (id, extension) in config["extensions"].as_object().into_iter().flatten() {
        if let Some(endpoint) = extension["endpoint"].as_str() {
            found.push((format!("extensions.{id}"), env_default(endpoint), "tcp"));
        }
    }
    let metrics = config["service"]["telemetry"]["metrics"]["address"]
        .as_str()
        .expect("service.telemetry.metrics.address");
    found.push((
        "service.telemetry.metrics".into(),
        env_default(metrics),
        "tcp",
    ));
    found
}

/// A config value as tracegate reads it when its `${env:VAR:-default}`
/// variable is unset.
pub fn env_default(value: &str) -> String {
    match value
        .strip_prefix("${env:")
        .and_then(|rest| rest.strip_suffix('}'))
        .and_then(|rest| rest.split_once(":-"))
    {
        Some((_, default)) => default.to_string(),
        None => value.to_string(),
    }
}

/// Sends one span named `name` to the gateway's `otlp` receiver over
/// gRPC; it must be accepted.
pub async fn send_one_span(gw: &Gateway, name: &str) {
    let reply = raw::grpc(
        gw.addr("otlp", "grpc"),
        raw::TRACE_EXPORT,
        &crate::support::one_span_request(name),
        None,
    )
    .await;
    assert_eq!(reply.code, 0, "{}", reply.message);
}

/// Posts a JSON body to `path` on `addr`; the answer's status.
pub async fn post_json(addr: std::net::SocketAddr, path: &str, body: &'static str) -> u16 {
    let reply = raw::http(
        addr,
        http::Method::POST,
        path,
        &[("content-type", "application/json")],
        body,
    )
    .await;
    reply.status.as_u16()
}

/// Runs `command`, returning its output; panics if it cannot start.
pub fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// Runs the tracegate binary under test with `args`.
pub fn tracegate(args: &[&str]) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_tracegate")).args(args))
}

/// Warnings a shipped config may give, each for a reason: the `k8s_api`
/// detector's note that tracegate starts where the collector refuses (the
/// node agent uses that detector on purpose), and the retry delay that a
/// refusal of a `memory_limiter` first in the pipeline carries (issue 15's
/// goodput hint; the collector sends none).
pub const EXPECTED_WARNINGS: &[&str] = &[
    "warning: processors::resource_detection: k8s_api: ",
    "warning: receivers::otlp: when pipeline traces refuses spans (its memory_limiter refuses data)",
];

/// `tracegate validate` with `args` (its `--config` and, for a manifest,
/// `--from-configmap`) must say the config is valid, with no warning but
/// the [`EXPECTED_WARNINGS`].
#[track_caller]
pub fn assert_validates_cleanly(args: &[&str]) {
    let mut all = vec!["validate"];
    all.extend_from_slice(args);
    let out = tracegate(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim_end().ends_with(": valid"),
        "tracegate {all:?}: {}\n{stdout}{stderr}",
        out.status
    );
    let unexpected: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .filter(|l| !EXPECTED_WARNINGS.iter().any(|w| l.starts_with(w)))
        .collect();
    assert!(unexpected.is_empty(), "tracegate {all:?} warns:\n{stdout}");
}
