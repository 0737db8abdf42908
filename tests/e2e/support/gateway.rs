//! Starts the real `tracegate` binary on a config and finds its listeners
//! from its JSON logs, so no test needs a fixed port.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Gateway {
    child: Child,
    pub listening: Vec<(String, String, SocketAddr)>,
    pub dir: tempfile::TempDir,
    logs: Arc<Mutex<Vec<String>>>,
}

/// The logs and telemetry settings every test config appends: JSON logs so
/// the listeners can be read back, metrics on an ephemeral port.
pub const TELEMETRY: &str = r#"
  telemetry:
    logs:
      level: info
      encoding: json
    metrics:
      address: 127.0.0.1:0
"#;

/// A config's `receivers:` section: one `otlp` receiver taking gRPC on an
/// ephemeral port.
pub const OTLP_GRPC_RECEIVER: &str =
    "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:0\n";

/// A config's `exporters:` section: one `otlp` exporter sending over
/// plaintext gRPC to the in-test backend at `sink`.
pub fn otlp_exporter_to(sink: SocketAddr) -> String {
    format!(
        "exporters:\n  otlp:\n    endpoint: 127.0.0.1:{}\n    tls:\n      insecure: true\n",
        sink.port()
    )
}

/// A whole test config: `sections` (the `receivers:` and, if any,
/// `processors:` sections), [`otlp_exporter_to`] `sink`, and one traces
/// pipeline from `receivers` through `processors` (comma-separated names;
/// empty for none) to that exporter, with [`TELEMETRY`].
pub fn pipeline_to(sink: SocketAddr, sections: &str, receivers: &str, processors: &str) -> String {
    let processors = if processors.is_empty() {
        String::new()
    } else {
        format!("      processors: [{processors}]\n")
    };
    format!(
        "{sections}{exporters}service:\n  pipelines:\n    traces:\n      receivers: [{receivers}]\n{processors}      exporters: [otlp]\n{TELEMETRY}",
        exporters = otlp_exporter_to(sink),
    )
}

/// What `tracegate validate` said of `yaml`: whether it passed, and its
/// stdout (the warnings and the verdict) and stderr.
pub fn validate(yaml: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_tracegate"))
        .args(["validate", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .output()
        .expect("run tracegate validate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An agent's config: OTLP/gRPC in on an ephemeral port, the
/// `loadbalancing` exporter out, routing by trace id to the gateways
/// `resolver` finds (its value in YAML flow style, e.g.
/// `{static: {hostnames: [a, b]}}`) and retrying every 100 to 500 ms for as
/// long as it takes.
pub fn agent_config(resolver: &str) -> String {
    format!(
        r#"receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
exporters:
  load_balancing:
    routing_key: traceID
    protocol:
      otlp:
        tls:
          insecure: true
        retry_on_failure:
          initial_interval: 100ms
          max_interval: 500ms
          max_elapsed_time: 0
    resolver: {resolver}
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [load_balancing]
{TELEMETRY}"#
    )
}

impl Gateway {
    /// Writes `yaml` to a temp dir (`{dir}` in it is replaced by that dir's
    /// path) and starts tracegate on it; returns once it reports ready.
    pub fn start(yaml: &str) -> Gateway {
        Self::start_with_args(yaml, &[])
    }

    pub fn start_with_args(yaml: &str, args: &[&str]) -> Gateway {
        Self::start_with(yaml, args, &[])
    }

    /// Starts with extra arguments and environment variables. Shutdown has
    /// no drain delay unless `args` set one (`--shutdown-drain-delay`).
    pub fn start_with(yaml: &str, args: &[&str], envs: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let yaml = yaml.replace("{dir}", dir.path().to_str().expect("utf-8 temp path"));
        let path = dir.path().join("config.yaml");
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(yaml.as_bytes()))
            .expect("write config");
        let drain_delay = if args.iter().any(|a| a.starts_with("--shutdown-drain-delay")) {
            None
        } else {
            Some("--shutdown-drain-delay=0s")
        };
        let mut command = Command::new(env!("CARGO_BIN_EXE_tracegate"));
        command
            .arg("--config")
            .arg(&path)
            .args(drain_delay)
            .args(args)
            .envs(envs.iter().copied());
        Self::spawn(command, dir)
    }

    /// Starts `command` (tracegate, or a program that execs it, with its
    /// arguments), its detectors kept off the network, and returns once it
    /// reports ready. `dir` is kept as the gateway's own temp dir.
    pub fn spawn(mut command: Command, dir: tempfile::TempDir) -> Gateway {
        let no_cloud = NoCloud::new();
        // The test's own variables (already on `command`) win.
        let set: Vec<_> = command.get_envs().map(|(k, _)| k.to_owned()).collect();
        for (key, value) in no_cloud_environment(&no_cloud) {
            if !set.iter().any(|k| k == key) {
                command.env(key, value);
            }
        }
        let mut child = command
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tracegate");
        let stderr = child.stderr.take().expect("stderr piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let reader = {
            let logs = logs.clone();
            std::thread::spawn(move || {
                let mut ready_tx = Some(ready_tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("tracegate is ready") {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    logs.lock().unwrap().push(line);
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                // The reader ends at the end of the exited process's stderr.
                let _ = reader.join();
                panic!(
                    "tracegate exited with {status} before ready:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "tracegate not ready in 30s:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        }
        let listening = logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == "listening")
            .map(|v| {
                (
                    v["component"].as_str().unwrap_or_default().to_string(),
                    v["protocol"].as_str().unwrap_or_default().to_string(),
                    v["address"]
                        .as_str()
                        .unwrap_or_default()
                        .parse()
                        .expect("address"),
                )
            })
            .collect();
        Gateway {
            child,
            listening,
            dir,
            logs,
        }
    }

    /// The address `component` listens on for `protocol` (`grpc`, `http`, `metrics`).
    pub fn addr(&self, component: &str, protocol: &str) -> SocketAddr {
        self.listening
            .iter()
            .find(|(c, p, _)| c == component && p == protocol)
            .map(|(_, _, a)| *a)
            .unwrap_or_else(|| panic!("{component}/{protocol} not listening: {:?}", self.listening))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits (up to `within`) until a log line holds every one of `needles`,
    /// for lines logged before what the test just saw: the reader thread
    /// may not have passed them on yet. Returns all lines; panics with them
    /// on timeout.
    pub fn wait_for_log(&self, needles: &[&str], within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let logs = self.logs();
            if logs.iter().any(|l| needles.iter().all(|n| l.contains(n))) {
                return logs;
            }
            if Instant::now() > deadline {
                panic!("no log line holds {needles:?}:\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} not in /proc status"))
    }

    /// Sends SIGKILL and waits until the process is gone: a crash, with
    /// no chance to flush or clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits (up to `within`) for the process to exit.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal("TERM");
        self.wait_for_exit(within)
    }

    /// Sends the signal `name` (`TERM`, `INT`) without waiting.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits (up to `within`) for the process to exit; kills it and panics
    /// with its logs if it does not.
    pub fn wait_for_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "tracegate did not exit within {within:?} of the signal:\n{}",
                    self.logs().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where resource detectors would look for clouds, Docker and Kubernetes:
/// a local port nothing listens on and a socket path that does not exist,
/// so a config with every detector (the seed's) never reaches the network
/// from a test. A test's own variables override these.
struct NoCloud {
    refusing: String,
    _dir: tempfile::TempDir,
    docker_host: String,
}

impl NoCloud {
    fn new() -> NoCloud {
        // Bound and dropped: nothing listens there while the test runs.
        let refusing = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free local port")
            .to_string();
        let dir = tempfile::tempdir().expect("temp dir");
        let docker_host = format!("unix://{}", dir.path().join("docker.sock").display());
        NoCloud {
            refusing,
            _dir: dir,
            docker_host,
        }
    }
}

fn no_cloud_environment(no_cloud: &NoCloud) -> Vec<(&'static str, String)> {
    let url = format!("http://{}", no_cloud.refusing);
    vec![
        ("GCE_METADATA_HOST", no_cloud.refusing.clone()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", url.clone()),
        ("TRACEGATE_AZURE_METADATA_ENDPOINT", url),
        ("DOCKER_HOST", no_cloud.docker_host.clone()),
        ("KUBERNETES_SERVICE_HOST", String::new()),
        ("KUBERNETES_SERVICE_PORT", String::new()),
    ]
}
