//! The Jaeger remote sampling extension through the real binary: the
//! strategies of a file served over HTTP (`/sampling` and the legacy `/`)
//! and gRPC, a changed file picked up and a bad one ignored, and a real
//! client nobody here wrote (`@opentelemetry/sampler-jaeger-remote` under
//! Node) sampling as it is told.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use tracegate_model::jaeger::proto::sampling_manager_client::SamplingManagerClient;
use tracegate_model::jaeger::proto::{
    ProbabilisticSamplingStrategy, RateLimitingSamplingStrategy, SamplingStrategyParameters,
    SamplingStrategyResponse, SamplingStrategyType,
};

use crate::support::gateway::{validate, Gateway, OTLP_GRPC_RECEIVER, TELEMETRY};
use crate::support::raw;

/// A strategies file: `foo` at 0.8 with one operation of its own, `bar`
/// rate limited, everyone else at 0.5.
const STRATEGIES: &str = r#"{
  "service_strategies": [
    {"service": "foo", "type": "probabilistic", "param": 0.8,
     "operation_strategies": [{"operation": "op1", "type": "probabilistic", "param": 0.2}]},
    {"service": "bar", "type": "ratelimiting", "param": 5}
  ],
  "default_strategy": {"type": "probabilistic", "param": 0.5}
}"#;

const FOO_JSON: &str = r#"{"strategyType":"PROBABILISTIC","probabilisticSampling":{"samplingRate":0.8},"operationSampling":{"defaultSamplingProbability":0.8,"defaultLowerBoundTracesPerSecond":0,"perOperationStrategies":[{"operation":"op1","probabilisticSampling":{"samplingRate":0.2}}],"defaultUpperBoundTracesPerSecond":0}}"#;

/// A gateway with the extension, written as `section` (its settings,
/// indented by four spaces) under the name `name`, beside a pipeline that
/// has nothing to do with it.
fn start(name: &str, section: &str) -> Gateway {
    Gateway::start(&format!(
        "{OTLP_GRPC_RECEIVER}exporters:\n  debug:\nextensions:\n  {name}:\n{section}{SERVICE}  extensions: [{name}]\n{TELEMETRY}"
    ))
}

/// The `service:` section's pipeline, the extension listed after it.
const SERVICE: &str =
    "service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n";

/// Writes `contents` to `path` as a whole: a new file renamed over the
/// old, as config management does, so a reload never sees half of it.
fn replace(path: &Path, contents: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, contents).expect("write strategies");
    std::fs::rename(&next, path).expect("replace strategies");
}

async fn get(addr: SocketAddr, path: &str) -> raw::HttpReply {
    raw::http(addr, Method::GET, path, &[], "").await
}

/// The body `GET path` answers once it contains `needle` (within 5 s).
async fn wait_for_body(addr: SocketAddr, path: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let body = String::from_utf8_lossy(&get(addr, path).await.body).into_owned();
        if body.contains(needle) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never held {needle}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// tonic's generated client of the gRPC endpoint at `addr`.
async fn sampling_client(addr: SocketAddr) -> SamplingManagerClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    SamplingManagerClient::new(channel)
}

/// One metrics line holding every one of `needles`, its value.
fn metric(text: &str, needles: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The collector's spelling, both protocols: each answers the file's
/// strategies as Jaeger's clients read them, bad requests get the right
/// status, a changed file is served and a bad one is not.
#[tokio::test]
async fn http_and_grpc_serve_the_file_and_follow_its_changes() {
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("strategies.json");
    std::fs::write(&path, STRATEGIES).unwrap();
    let gw = start(
        "jaegerremotesampling",
        &format!(
            "    source:\n      file: {}\n      reload_interval: 50ms\n    http:\n      endpoint: 127.0.0.1:0\n    grpc:\n      endpoint: 127.0.0.1:0\n",
            path.display()
        ),
    );
    let http_addr = gw.addr("jaegerremotesampling", "http");
    let grpc_addr = gw.addr("jaegerremotesampling", "grpc");

    // HTTP: the proto-JSON, on the path the SDKs use and the legacy one.
    let reply = get(http_addr, "/sampling?service=foo").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(String::from_utf8_lossy(&reply.body), FOO_JSON);
    let legacy = get(http_addr, "/?service=foo").await;
    assert_eq!(String::from_utf8_lossy(&legacy.body), FOO_JSON);
    assert_eq!(
        String::from_utf8_lossy(&get(http_addr, "/sampling?service=bar").await.body),
        r#"{"strategyType":"RATE_LIMITING","rateLimitingSampling":{"maxTracesPerSecond":5}}"#
    );
    assert_eq!(
        String::from_utf8_lossy(&get(http_addr, "/sampling?service=some%20one").await.body),
        r#"{"strategyType":"PROBABILISTIC","probabilisticSampling":{"samplingRate":0.5}}"#
    );
    // Bad requests.
    for (path, status) in [
        ("/sampling", StatusCode::BAD_REQUEST),
        ("/sampling?service=a&service=b", StatusCode::BAD_REQUEST),
        ("/sampling?service=%zz", StatusCode::BAD_REQUEST),
        ("/elsewhere?service=foo", StatusCode::NOT_FOUND),
    ] {
        assert_eq!(get(http_addr, path).await.status, status, "{path}");
    }
    let post = raw::http(http_addr, Method::POST, "/sampling?service=foo", &[], "").await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);

    // gRPC, with tonic's generated client.
    let mut client = sampling_client(grpc_addr).await;
    let ask = |service: &str| SamplingStrategyParameters {
        service_name: service.into(),
    };
    let bar = client
        .get_sampling_strategy(ask("bar"))
        .await
        .expect("GetSamplingStrategy")
        .into_inner();
    assert_eq!(
        bar,
        SamplingStrategyResponse {
            strategy_type: SamplingStrategyType::RateLimiting as i32,
            rate_limiting_sampling: Some(RateLimitingSamplingStrategy {
                max_traces_per_second: 5
            }),
            ..Default::default()
        }
    );
    let foo = client.get_sampling_strategy(ask("foo")).await.unwrap();
    let ops = foo.into_inner().operation_sampling.expect("per-operation");
    assert_eq!(ops.per_operation_strategies[0].operation, "op1");
    let unknown = raw::grpc(grpc_addr, "/jaeger.api_v2.SamplingManager/Other", &[], None).await;
    assert_eq!(unknown.code, 12, "UNIMPLEMENTED: {}", unknown.message);

    // A changed file is served, over both protocols.
    replace(
        &path,
        r#"{"default_strategy": {"type": "probabilistic", "param": 0.125}}"#,
    );
    wait_for_body(http_addr, "/sampling?service=poller", "0.125").await;
    let now = client.get_sampling_strategy(ask("bar")).await.unwrap();
    assert_eq!(
        now.into_inner().probabilistic_sampling,
        Some(ProbabilisticSamplingStrategy {
            sampling_rate: 0.125
        })
    );
    // A bad one is logged and not served.
    replace(
        &path,
        r#"{"default_strategy": {"type": "probabilistic", "param": 12.5}}"#,
    );
    gw.wait_for_log(
        &["does not read", "default_strategy.param"],
        Duration::from_secs(5),
    );
    assert!(String::from_utf8_lossy(&get(http_addr, "/?service=x").await.body).contains("0.125"));

    // What was served, counted.
    let metrics = gw.addr("telemetry", "metrics");
    let text = raw::wait_for_metrics(
        metrics,
        &["otelcol_tracegate_remote_sampling_requests_total"],
        Duration::from_secs(5),
    )
    .await;
    let served = |service: &str, transport: &str| {
        metric(
            &text,
            &[
                "otelcol_tracegate_remote_sampling_requests_total{",
                &format!("service=\"{service}\""),
                &format!("transport=\"{transport}\""),
            ],
        )
    };
    assert_eq!(served("foo", "http"), Some(2.0), "{text}");
    assert_eq!(served("bar", "grpc"), Some(2.0), "{text}");
    assert_eq!(
        metric(
            &text,
            &[
                "otelcol_tracegate_remote_sampling_probability{",
                "service=\"foo\"",
                "operation=\"op1\""
            ]
        ),
        Some(0.2),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &[
                "otelcol_tracegate_remote_sampling_reloads_total{",
                "outcome=\"failure\""
            ]
        ),
        Some(1.0),
        "{text}"
    );
}

/// Jaeger v2's spelling: only the protocols written are served, and a bad
/// `adaptive` setting is refused with a clear error.
#[tokio::test]
async fn jaegers_form_serves_only_what_it_names_and_refuses_a_bad_adaptive_setting() {
    let gw = start(
        "remote_sampling",
        "    file:\n      path:\n      default_sampling_probability: 0.2\n    grpc:\n      endpoint: 127.0.0.1:0\n",
    );
    assert!(
        !gw.listening
            .iter()
            .any(|(c, p, _)| c == "remote_sampling" && p == "http"),
        "{:?}",
        gw.listening
    );
    let grpc_addr = gw.addr("remote_sampling", "grpc");
    let mut client = sampling_client(grpc_addr).await;
    let answer = client
        .get_sampling_strategy(SamplingStrategyParameters {
            service_name: "any".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.probabilistic_sampling.map(|p| p.sampling_rate),
        Some(0.2)
    );

    let (ok, stdout, stderr) = validate(
        &format!(
            "{OTLP_GRPC_RECEIVER}exporters:\n  debug:\nextensions:\n  remote_sampling:\n    adaptive:\n      sampling_store: s\n      target_samples_per_second: 0\n    http:\n{SERVICE}  extensions: [remote_sampling]\n"
        ),
    );
    assert!(!ok, "{stdout}{stderr}");
    let said = format!("{stdout}{stderr}");
    assert!(
        said.contains("target_samples_per_second: must be a number above 0"),
        "{said}"
    );
}

/// `auth` on both endpoints, with the authenticator listed after the
/// extension: requests without the token are refused (401, gRPC
/// UNAUTHENTICATED) and counted, requests with it are answered.
#[tokio::test]
async fn auth_guards_both_endpoints() {
    let gw = Gateway::start(&format!(
        "{OTLP_GRPC_RECEIVER}exporters:\n  debug:\nextensions:\n  bearertokenauth:\n    token: s3cret\n  remote_sampling:\n    file:\n      path:\n      default_sampling_probability: 0.2\n    http:\n      endpoint: 127.0.0.1:0\n      auth:\n        authenticator: bearertokenauth\n    grpc:\n      endpoint: 127.0.0.1:0\n      auth:\n        authenticator: bearertokenauth\n{SERVICE}  extensions: [remote_sampling, bearertokenauth]\n{TELEMETRY}"
    ));
    let http_addr = gw.addr("remote_sampling", "http");
    let path = "/sampling?service=any";
    assert_eq!(get(http_addr, path).await.status, StatusCode::UNAUTHORIZED);
    let wrong = [("authorization", "Bearer nope")];
    let refused = raw::http(http_addr, Method::GET, path, &wrong, "").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let right = [("authorization", "Bearer s3cret")];
    let answered = raw::http(http_addr, Method::GET, path, &right, "").await;
    assert_eq!(answered.status, StatusCode::OK);
    assert!(
        String::from_utf8_lossy(&answered.body).contains("0.2"),
        "{:?}",
        answered.body
    );

    let grpc_addr = gw.addr("remote_sampling", "grpc");
    let ask = || SamplingStrategyParameters {
        service_name: "any".into(),
    };
    let status = sampling_client(grpc_addr)
        .await
        .get_sampling_strategy(ask())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc_addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    let mut client =
        SamplingManagerClient::with_interceptor(channel, |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", "Bearer s3cret".parse().unwrap());
            Ok(request)
        });
    let answer = client
        .get_sampling_strategy(ask())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.probabilistic_sampling.map(|p| p.sampling_rate),
        Some(0.2)
    );

    let text = raw::wait_for_metrics(
        gw.addr("telemetry", "metrics"),
        &["otelcol_tracegate_remote_sampling_unauthenticated_requests_total"],
        Duration::from_secs(5),
    )
    .await;
    for (transport, refused) in [("http", 2.0), ("grpc", 1.0)] {
        assert_eq!(
            metric(
                &text,
                &[
                    "otelcol_tracegate_remote_sampling_unauthenticated_requests_total{",
                    &format!("transport=\"{transport}\"")
                ]
            ),
            Some(refused),
            "{text}"
        );
    }

    // An authenticator that is not there is a config error, before start.
    let (ok, stdout, stderr) = validate(&format!(
        "{OTLP_GRPC_RECEIVER}exporters:\n  debug:\nextensions:\n  remote_sampling:\n    file:\n      path:\n    http:\n      auth:\n        authenticator: bearertokenauth\n{SERVICE}  extensions: [remote_sampling]\n"
    ));
    let said = format!("{stdout}{stderr}");
    assert!(!ok, "{said}");
    assert!(
        said.contains("remote_sampling::http::auth::authenticator") && said.contains("not defined"),
        "{said}"
    );
}

/// `@opentelemetry/sampler-jaeger-remote` under Node
/// (`remote_sampling_client/client.js`), polling a sampling endpoint for
/// one service and driven by one JSON command per line on its input, each
/// answered by one JSON line.
pub(crate) struct NodeClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl NodeClient {
    /// Starts the client against `endpoint` (`http://host:port`) for
    /// `service`; fails clearly when its packages are not installed.
    pub(crate) fn start(endpoint: &str, service: &str) -> NodeClient {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/remote_sampling_client");
        let package = dir.join("node_modules/@opentelemetry/sampler-jaeger-remote/package.json");
        assert!(
            package.exists(),
            "the Node remote sampling client is not installed: run `npm ci` in \
             tests/e2e/remote_sampling_client (CI's .ci/run does)"
        );
        let node = std::env::var("NODE").unwrap_or_else(|_| "node".into());
        let mut child = Command::new(&node)
            .arg(dir.join("client.js"))
            .args([endpoint, service])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {node} (Node 18.19 or later): {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        NodeClient {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one command and reads its answer.
    pub(crate) fn ask(&mut self, command: serde_json::Value) -> serde_json::Value {
        writeln!(self.stdin, "{command}").expect("write to the client");
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read the client");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("client said {line:?}: {e}"))
    }

    /// Closes its input and checks that it exited cleanly.
    pub(crate) fn finish(self) {
        let NodeClient {
            mut child, stdin, ..
        } = self;
        drop(stdin);
        let status = child.wait().expect("client exit");
        assert!(status.success(), "the client failed: {status}");
    }
}

/// Whether `sampled` of `n` is within 3σ of `n·p`.
pub(crate) fn within_three_sigma(sampled: u64, n: u64, p: f64) -> bool {
    let mean = n as f64 * p;
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    (sampled as f64 - mean).abs() <= 3.0 * sigma
}

/// `@opentelemetry/sampler-jaeger-remote`, under Node, polls tracegate and
/// samples root spans at the probability served; after the file changes
/// it follows the new strategy, per-operation probabilities included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_client_samples_as_it_is_told_and_follows_a_reload() {
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("strategies.json");
    let service = "node-client";
    std::fs::write(
        &path,
        format!(r#"{{"service_strategies": [{{"service": "{service}", "type": "probabilistic", "param": 0.25}}]}}"#),
    )
    .unwrap();
    let gw = start(
        "jaegerremotesampling",
        &format!(
            "    source:\n      file: {}\n      reload_interval: 50ms\n    http:\n      endpoint: 127.0.0.1:0\n    grpc:\n      endpoint: 127.0.0.1:0\n",
            path.display()
        ),
    );
    let endpoint = format!("http://{}", gw.addr("jaegerremotesampling", "http"));
    let mut client = NodeClient::start(&endpoint, service);
    let sampled =
        |answer: &serde_json::Value, name: &str| answer["sampled"][name].as_u64().unwrap();

    // The served probability, applied to root spans.
    let n = 4000;
    let first = tokio::task::block_in_place(|| {
        client.ask(
            serde_json::json!({"expect": "root=TraceIdRatioBased{0.25}", "spans": {"work": n}}),
        )
    });
    let work = sampled(&first, "work");
    assert!(
        within_three_sigma(work, n, 0.25),
        "{work} of {n} sampled at 0.25: {first}"
    );

    // The file changes: a new probability and an operation never sampled.
    replace(
        &path,
        &format!(
            r#"{{"service_strategies": [{{"service": "{service}", "type": "probabilistic", "param": 0.75,
                "operation_strategies": [{{"operation": "health", "type": "probabilistic", "param": 0}}]}}]}}"#
        ),
    );
    let second = tokio::task::block_in_place(|| {
        client.ask(serde_json::json!({
            "expect": "PerOperationSampler{default=TraceIdRatioBased{0.75}",
            "spans": {"work": n, "health": 1000}
        }))
    });
    let work = sampled(&second, "work");
    assert!(
        within_three_sigma(work, n, 0.75),
        "{work} of {n} sampled at 0.75: {second}"
    );
    assert_eq!(sampled(&second, "health"), 0, "{second}");

    let text = raw::wait_for_metrics(
        gw.addr("telemetry", "metrics"),
        &["otelcol_tracegate_remote_sampling_probability"],
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        metric(
            &text,
            &[
                "otelcol_tracegate_remote_sampling_probability{",
                &format!("service=\"{service}\""),
                "operation=\"*\""
            ]
        ),
        Some(0.75),
        "{text}"
    );
    client.finish();
}
