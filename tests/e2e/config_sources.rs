//! The real binary on configs from several sources: two `--config` files
//! merged in order, a `--set` applied last, and a secret read from a file
//! with `${file:...}`; all of it arriving at the backend.

use crate::support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::gateway::{Gateway, TELEMETRY};
use support::one_span_request;

const WAIT: Duration = Duration::from_secs(10);

/// An OTLP/HTTP backend that records each request's headers.
struct HeaderSink {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<http::HeaderMap>>>,
}

impl HeaderSink {
    async fn start() -> HeaderSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let recorded = recorded.clone();
                        async move {
                            let headers = req.headers().clone();
                            let _ = req.into_body().collect().await;
                            recorded.lock().unwrap().push(headers);
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .header("content-type", "application/x-protobuf")
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        HeaderSink { addr, seen }
    }

    async fn first_request(&self) -> Option<http::HeaderMap> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            if let Some(h) = self.seen.lock().unwrap().first() {
                return Some(h.clone());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_configs_a_set_and_a_file_secret_reach_the_backend() {
    let backend = HeaderSink::start().await;
    let extra = tempfile::tempdir().unwrap();
    let token = extra.path().join("token");
    std::fs::write(&token, "s3cr3t").unwrap();
    // The second file adds the exporter (with the secret) and replaces the
    // pipeline's exporter list.
    let overlay = extra.path().join("overlay.yaml");
    std::fs::write(
        &overlay,
        format!(
            r#"
exporters:
  otlphttp:
    endpoint: http://127.0.0.1:{}
    headers:
      authorization: "Bearer ${{file:{}}}"
service:
  pipelines:
    traces:
      exporters: [otlphttp]
"#,
            backend.addr.port(),
            token.display()
        ),
    )
    .unwrap();
    // The first file: receiver, a debug exporter the overlay drops, and a
    // batch timeout the --set shortens.
    let base = format!(
        r#"
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:0
processors:
  batch:
    timeout: 1h
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug]
{TELEMETRY}"#
    );
    let gw = Gateway::start_with_args(
        &base,
        &[
            "--config",
            &format!("file:{}", overlay.display()),
            "--set",
            "processors.batch.timeout=10ms",
            "--set",
            "exporters::otlphttp::headers::x-tenant=acme",
        ],
    );

    let reply = support::raw::http(
        gw.addr("otlp", "http"),
        Method::POST,
        "/v1/traces",
        &[("content-type", "application/x-protobuf")],
        one_span_request("merged"),
    )
    .await;
    assert_eq!(reply.status, 200);
    // Within seconds, not the base file's hour: the --set won.
    let headers = backend
        .first_request()
        .await
        .expect("the merged exporter sent the batch");
    assert_eq!(headers["authorization"], "Bearer s3cr3t");
    assert_eq!(headers["x-tenant"], "acme");
    // The overlay's list replaced the base file's: debug is left unused.
    assert!(
        gw.logs()
            .iter()
            .any(|l| l.contains("exporters::debug") && l.contains("not used by any pipeline")),
        "{:?}",
        gw.logs()
    );
}

fn tracegate(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tracegate"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run tracegate")
}

#[test]
fn print_config_shows_the_merged_config_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cr3t").unwrap();
    let base = dir.path().join("base.yaml");
    std::fs::write(
        &base,
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:4317\nexporters:\n  otlp:\n    endpoint: tempo:4317\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [otlp]\n",
    )
    .unwrap();
    let secret = format!(
        "yaml:exporters::otlp::headers::authorization: Bearer ${{file:{}}}",
        token.display()
    );
    let args = [
        "print-config",
        "--config",
        base.to_str().unwrap(),
        "--config",
        &secret,
        "--set",
        "exporters.otlp.compression=none",
    ];
    let out = tracegate(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(text.contains("authorization: \"[REDACTED]\""), "{text}");
    assert!(text.contains("compression: none"), "{text}");
    assert!(text.contains("endpoint: tempo:4317"), "{text}");

    let mut unredacted = args.to_vec();
    unredacted.extend(["--mode", "unredacted", "--format", "json"]);
    let out = tracegate(&unredacted);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["exporters"]["otlp"]["headers"]["authorization"],
        "Bearer s3cr3t"
    );

    // An invalid config is refused unless --validate=false.
    let bad = [
        "print-config",
        "--config",
        base.to_str().unwrap(),
        "--set",
        "exporters.otlp.endpont=x",
    ];
    let out = tracegate(&bad);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("endpont"));
    let mut lenient = bad.to_vec();
    lenient.push("--validate=false");
    let out = tracegate(&lenient);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("endpont: x"));
}

#[test]
fn components_lists_what_this_build_implements() {
    let out = tracegate(&["components"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for line in [
        "buildinfo:",
        "  command: tracegate",
        "receivers:",
        "- name: otlp",
        "- name: tail_sampling",
        "connectors: []",
        "- name: health_check",
        "- scheme: file",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
    }
}

/// As the collector: readers written without a pull reader open no
/// metrics endpoint; a pull reader opens one where it says.
#[test]
fn self_metrics_open_only_for_a_pull_reader() {
    let config = |readers: &str| {
        format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:0\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n  telemetry:\n    logs:\n      encoding: json\n    metrics:\n      readers:\n{readers}"
        )
    };
    let gw = Gateway::start(&config(
        "        - periodic:\n            exporter:\n              otlp:\n                endpoint: http://127.0.0.1:1\n",
    ));
    assert!(
        !gw.listening.iter().any(|(c, _, _)| c == "telemetry"),
        "{:?}",
        gw.listening
    );
    let gw = Gateway::start(&config(
        "        - pull:\n            exporter:\n              prometheus:\n                host: 127.0.0.1\n                port: 0\n",
    ));
    assert!(gw.addr("telemetry", "metrics").ip().is_loopback());
}

/// `service.telemetry.logs.output_paths` as zap takes it: every line to
/// each destination, here stderr (which the harness reads) and a file.
#[test]
fn logs_go_to_every_output_path() {
    let gw = Gateway::start(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:0\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n  telemetry:\n    logs:\n      encoding: json\n      output_paths: [stderr, \"{dir}/tracegate.log\"]\n    metrics:\n      level: none\n",
    );
    let text = std::fs::read_to_string(gw.dir.path().join("tracegate.log")).unwrap();
    let ready: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("tracegate is ready"))
        .collect();
    assert_eq!(ready.len(), 1, "{text}");
    let line: serde_json::Value = serde_json::from_str(ready[0]).unwrap();
    assert_eq!(line["level"], "INFO");
}
