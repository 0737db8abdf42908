//! Resource detection in the real binary, against fake cloud metadata
//! servers that answer as the real ones do (GCE's `Metadata-Flavor: Google`,
//! EC2's IMDSv2 token dance with 401 without a token) and one that never
//! answers (Azure's address black-holed): the detected attributes reach the
//! backend on every resource, the first listed detector wins, `override`
//! decides over existing attributes, and the silent endpoint costs one
//! timeout, once.

use crate::support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use support::gateway::{pipeline_to, Gateway};
use support::raw::{grpc, TRACE_EXPORT};
use support::sink::Sink;
use tracegate_model::otlp::string_kv;

type Handler = dyn Fn(&http::Request<hyper::body::Incoming>) -> (u16, Vec<(&'static str, String)>, String)
    + Send
    + Sync;

/// An HTTP/1.1 server on 127.0.0.1:0 answering with `handler`.
async fn fake_server(handler: Arc<Handler>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let (status, headers, body) = handler(&req);
                    let mut response = http::Response::builder().status(status);
                    for (k, v) in headers {
                        response = response.header(k, v);
                    }
                    let response = response.body(Full::new(Bytes::from(body))).unwrap();
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Accepts connections and never answers.
async fn silent_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

fn header<'a>(req: &'a http::Request<hyper::body::Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn fake_gce() -> SocketAddr {
    fake_server(Arc::new(|req| {
        let flavor = vec![("Metadata-Flavor", "Google".to_string())];
        if header(req, "metadata-flavor") != Some("Google") {
            return (403, flavor, "Missing Metadata-Flavor:Google header.".into());
        }
        let body = match req.uri().path() {
            "/computeMetadata/v1/project/project-id" => "my-project",
            "/computeMetadata/v1/instance/id" => "4520031799277581759",
            "/computeMetadata/v1/instance/zone" => "projects/123456/zones/us-central1-a",
            "/computeMetadata/v1/instance/machine-type" => "projects/123456/machineTypes/e2-medium",
            "/computeMetadata/v1/instance/name" => "vm-1",
            "/computeMetadata/v1/instance/hostname" => "vm-1.c.my-project.internal",
            _ => return (404, flavor, "not found".into()),
        };
        (200, flavor, body.into())
    }))
    .await
}

pub(crate) async fn fake_imds() -> SocketAddr {
    const TOKEN: &str = "AQAEAFakeToken==";
    fake_server(Arc::new(|req| {
        if req.uri().path() == "/latest/api/token" {
            if req.method() != http::Method::PUT
                || header(req, "x-aws-ec2-metadata-token-ttl-seconds").is_none()
            {
                return (400, vec![], String::new());
            }
            return (200, vec![], TOKEN.into());
        }
        if header(req, "x-aws-ec2-metadata-token") != Some(TOKEN) {
            return (401, vec![], String::new());
        }
        match req.uri().path() {
            "/latest/dynamic/instance-identity/document" => (
                200,
                vec![],
                r#"{"accountId":"123456789012","availabilityZone":"us-west-2b","imageId":"ami-5fb8c835",
                    "instanceId":"i-1234567890abcdef0","instanceType":"t2.micro","region":"us-west-2"}"#
                    .into(),
            ),
            "/latest/meta-data/instance-id" => (200, vec![], "i-1234567890abcdef0".into()),
            "/latest/meta-data/hostname" => (200, vec![], "ip-10-0-0-1.ec2.internal".into()),
            _ => (404, vec![], String::new()),
        }
    }))
    .await
}

/// A request of two resources: one with the string `attributes` over the
/// spans numbered `first`, and one with no resource at all over the spans
/// `bare`. Span `n` is named `{name}-{n}`.
pub(crate) fn two_resources(
    name: &str,
    attributes: &[(&str, &str)],
    first: &[u8],
    bare: &[u8],
) -> Vec<u8> {
    let spans = |ns: &[u8]| ScopeSpans {
        spans: ns
            .iter()
            .map(|&n| Span {
                trace_id: vec![n; 16],
                span_id: vec![n; 8],
                name: format!("{name}-{n}"),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(Resource {
                    attributes: attributes.iter().map(|(k, v)| string_kv(k, v)).collect(),
                    ..Default::default()
                }),
                scope_spans: vec![spans(first)],
                ..Default::default()
            },
            ResourceSpans {
                resource: None,
                scope_spans: vec![spans(bare)],
                ..Default::default()
            },
        ],
    }
    .encode_to_vec()
}

/// Two resources, one with attributes the detectors also set, one bare.
fn request() -> Vec<u8> {
    two_resources(
        "span",
        &[
            ("service.name", "checkout"),
            ("host.name", "client-host"),
            ("cloud.provider", "on-prem"),
        ],
        &[1, 2],
        &[3],
    )
}

fn config(sink: SocketAddr, override_existing: bool) -> String {
    pipeline_to(
        sink,
        &format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
processors:
  resourcedetection:
    detectors: [gcp, ec2, azure, env, system]
    timeout: 1s
    override: {override_existing}
"#
        ),
        "otlp",
        "resourcedetection",
    )
}

pub(crate) fn str_attr(resource: &Option<Resource>, key: &str) -> Option<String> {
    resource
        .as_ref()?
        .attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

/// Asserts that `resource` has each string attribute `(key, value)` of
/// `want`.
#[track_caller]
fn assert_strs(resource: &Option<Resource>, want: &[(&str, &str)]) {
    for (key, value) in want {
        assert_eq!(str_attr(resource, key).as_deref(), Some(*value), "{key}");
    }
}

/// Sends the request, returns the resources as the backend got them (one
/// per span) and how long the export call took.
async fn roundtrip(gw: &Gateway, sink: &Sink) -> (Vec<Option<Resource>>, Duration) {
    let started = Instant::now();
    let reply = grpc(gw.addr("otlp", "grpc"), TRACE_EXPORT, &request(), None).await;
    let took = started.elapsed();
    assert_eq!(reply.code, 0, "{}", reply.message);
    assert!(sink.wait_for_spans(3, Duration::from_secs(10)).await);
    (sink.spans().into_iter().map(|s| s.resource).collect(), took)
}

// The detectors' endpoints go to these gateways alone: the other
// end-to-end tests share this process and its environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detected_attributes_reach_the_backend_first_detector_wins_override_both_ways() {
    let gce = fake_gce().await;
    let imds = fake_imds().await;
    let azure = silent_server().await;
    let (gce, imds, azure) = (
        gce.to_string(),
        format!("http://{imds}"),
        format!("http://{azure}"),
    );
    let envs = [
        ("GCE_METADATA_HOST", gce.as_str()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.as_str()),
        ("TRACEGATE_AZURE_METADATA_ENDPOINT", azure.as_str()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=e2e%20run,host.name=from-env",
        ),
    ];

    // override: true — detected values replace the client's.
    let sink = Sink::start().await;
    let started = Instant::now();
    let gw = Gateway::start_with(&config(sink.addr, true), &[], &envs);
    let ready_after = started.elapsed();
    let (resources, first_call) = roundtrip(&gw, &sink).await;
    assert_eq!(resources.len(), 3);
    for resource in &resources {
        // GCE is listed first: its host.name and cloud.provider win over
        // EC2's and env's.
        assert_strs(
            resource,
            &[
                ("cloud.provider", "gcp"),
                ("host.name", "vm-1"),
                ("cloud.platform", "gcp_compute_engine"),
                ("cloud.account.id", "my-project"),
                ("cloud.region", "us-central1"),
                // What only EC2 sets still comes from EC2 (IMDSv2 with its
                // token).
                ("host.image.id", "ami-5fb8c835"),
                ("deployment.environment", "e2e run"),
                ("os.type", "linux"),
            ],
        );
        // Azure never answered: nothing of it.
        assert_eq!(str_attr(resource, "azure.vm.name"), None);
    }
    assert_eq!(
        str_attr(&resources[0], "service.name").as_deref(),
        Some("checkout")
    );
    // Detection runs beside startup, so the first export waits at most
    // the one timeout (1 s) the silent endpoint costs, plus its own time.
    assert!(
        first_call < Duration::from_secs(3),
        "ready after {ready_after:?}, first export took {first_call:?}"
    );
    // The silent detector's failure is logged.
    let logs = gw
        .wait_for_log(
            &["resource detector timed out", "\"detector\":\"azure\""],
            Duration::from_secs(5),
        )
        .join("\n");
    assert!(!logs.contains("\"level\":\"ERROR\""), "{logs}");

    // override: false — the client's attributes stay, missing ones are added.
    let sink = Sink::start().await;
    let gw = Gateway::start_with(&config(sink.addr, false), &[], &envs);
    let (resources, _) = roundtrip(&gw, &sink).await;
    let client = &resources[0];
    assert_strs(
        client,
        &[
            ("host.name", "client-host"),
            ("cloud.provider", "on-prem"),
            ("cloud.account.id", "my-project"),
        ],
    );
    let bare = &resources[2];
    assert_eq!(str_attr(bare, "host.name").as_deref(), Some("vm-1"));
}

/// An address where nothing listens: a metadata endpoint that refuses the
/// connection, as on a machine on no cloud.
fn refusing_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// An application's spans: its own identity on one resource, and a second
/// resource with no attributes at all.
fn app_request() -> Vec<u8> {
    two_resources(
        "app-span",
        &[
            ("service.name", "checkout"),
            ("k8s.pod.name", "checkout-7d9f8-x2x4q"),
            ("k8s.namespace.name", "shop"),
        ],
        &[1],
        &[2],
    )
}

/// The seed Jaeger v2 config's `resource_detection` block, unchanged:
/// every detector, `override: true`.
fn seed_detection_config(sink: SocketAddr) -> String {
    pipeline_to(
        sink,
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
processors:
  resource_detection:
    detectors: [gcp, aws, azure, system, docker, kubernetes, env]
    timeout: 2s
    override: true
"#,
        "otlp",
        "resource_detection",
    )
}

/// The gateway runs as a DaemonSet pod with its own downward-API variables
/// and its own service name. None of them may reach the applications'
/// spans: their service.name, k8s.pod.name and k8s.namespace.name arrive
/// as sent, and only the node's identity is added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_pod_and_service_name_never_replace_the_applications() {
    let sink = Sink::start().await;
    let nowhere = refusing_address();
    let no_docker = tempfile::tempdir().unwrap();
    let docker_host = format!("unix://{}", no_docker.path().join("docker.sock").display());
    let metadata_url = format!("http://{nowhere}");
    let nowhere = nowhere.to_string();
    let gw = Gateway::start_with(
        &seed_detection_config(sink.addr),
        &[],
        &[
            // The gateway's own identity, as tracegate's DaemonSet sets it.
            ("K8S_NODE_NAME", "node-17"),
            ("K8S_POD_NAME", "tracegate-agent-5xk2p"),
            ("K8S_NAMESPACE", "monitoring"),
            ("OTEL_SERVICE_NAME", "tracegate-gateway"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod"),
            // No cloud, no Docker, no Kubernetes API: every such endpoint
            // refuses locally; nothing reaches the network.
            ("GCE_METADATA_HOST", &nowhere),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &metadata_url),
            ("TRACEGATE_AZURE_METADATA_ENDPOINT", &metadata_url),
            ("DOCKER_HOST", &docker_host),
            ("KUBERNETES_SERVICE_HOST", ""),
            ("KUBERNETES_SERVICE_PORT", ""),
        ],
    );
    let reply = grpc(gw.addr("otlp", "grpc"), TRACE_EXPORT, &app_request(), None).await;
    assert_eq!(reply.code, 0, "{}", reply.message);
    assert!(sink.wait_for_spans(2, Duration::from_secs(10)).await);
    let spans = sink.spans();
    let app = spans
        .iter()
        .find(|s| s.span.name == "app-span-1")
        .expect("the application's span");
    let bare = spans
        .iter()
        .find(|s| s.span.name == "app-span-2")
        .expect("the bare resource's span");

    // The application's identity, unchanged under override: true.
    assert_strs(
        &app.resource,
        &[
            ("service.name", "checkout"),
            ("k8s.pod.name", "checkout-7d9f8-x2x4q"),
            ("k8s.namespace.name", "shop"),
        ],
    );
    for resource in [&app.resource, &bare.resource] {
        // The node's identity is added...
        assert_strs(
            resource,
            &[
                ("k8s.node.name", "node-17"),
                ("deployment.environment", "prod"),
            ],
        );
        // ...and nothing of the gateway's own pod or service, anywhere.
        let attributes = &resource.as_ref().expect("a resource").attributes;
        for kv in attributes {
            let value = format!("{:?}", kv.value);
            for own in ["tracegate-agent-5xk2p", "monitoring", "tracegate-gateway"] {
                assert!(
                    !value.contains(own),
                    "{} = {value} is the gateway's",
                    kv.key
                );
            }
        }
    }
    // A resource that names no pod gets none of the gateway's.
    assert_eq!(str_attr(&bare.resource, "k8s.pod.name"), None);
    assert_eq!(str_attr(&bare.resource, "k8s.namespace.name"), None);
    assert_eq!(str_attr(&bare.resource, "service.name"), None);
    // No cloud attributes: the metadata endpoints refused.
    assert_eq!(str_attr(&app.resource, "cloud.provider"), None);
}

/// A detector that fails for real (here `env` with a malformed
/// OTEL_RESOURCE_ATTRIBUTES) is retried within `timeout`, then tracegate
/// refuses to start, naming the processor, the detector and the reason —
/// before any receiver listens.
#[test]
fn a_detector_that_keeps_failing_stops_startup_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    // The exporter's address is never reached: startup fails first.
    let nowhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let yaml = pipeline_to(
        nowhere,
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
processors:
  resource_detection:
    detectors: [env, kubernetes]
    timeout: 1500ms
"#,
        "otlp",
        "resource_detection",
    );
    std::fs::write(&path, yaml).unwrap();
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracegate"))
        .arg("--config")
        .arg(&path)
        .env("OTEL_RESOURCE_ATTRIBUTES", "team=payments,not-a-pair")
        .env("K8S_NODE_NAME", "node-1")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("processors::resource_detection")
            && stderr.contains("detector env")
            && stderr.contains("not-a-pair"),
        "{stderr}"
    );
    assert!(!stderr.contains("tracegate is ready"), "{stderr}");
    assert!(!stderr.contains("\"listening\""), "{stderr}");
    // Retried within the timeout, not given up at once nor waited forever.
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}
