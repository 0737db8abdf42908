//! Fake metadata servers and the processor's own tests; each detector's
//! tests sit beside it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, UnixListener};
use tracegate_model::otlp::{
    ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans, ScopeSpans, Span,
};

use super::*;

/// What a fake server's handler sees of a request.
pub(crate) struct FakeRequest {
    pub method: String,
    /// Path and query.
    pub path: String,
    headers: http::HeaderMap,
}

impl FakeRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub(crate) type FakeAnswer = (u16, Vec<(&'static str, String)>, String);

/// An HTTP/1.1 server on 127.0.0.1:0 (or a Unix socket) answering with
/// `handler`; it stops when dropped.
pub(crate) struct FakeServer {
    address: Option<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn respond(
    handler: &(dyn Fn(&FakeRequest) -> FakeAnswer + Send + Sync),
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<Full<Bytes>> {
    let fake = FakeRequest {
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: req.headers().clone(),
    };
    let (status, headers, body) = handler(&fake);
    let mut response = http::Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(name, value);
    }
    response.body(Full::new(Bytes::from(body))).unwrap()
}

impl FakeServer {
    pub async fn start(
        handler: impl Fn(&FakeRequest) -> FakeAnswer + Send + Sync + 'static,
    ) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let handler: Arc<dyn Fn(&FakeRequest) -> FakeAnswer + Send + Sync> = Arc::new(handler);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                serve(TokioIo::new(stream), handler.clone());
            }
        });
        FakeServer {
            address: Some(address),
            task,
        }
    }

    pub async fn start_unix(
        socket: &Path,
        handler: impl Fn(&FakeRequest) -> FakeAnswer + Send + Sync + 'static,
    ) -> FakeServer {
        let listener = UnixListener::bind(socket).unwrap();
        let handler: Arc<dyn Fn(&FakeRequest) -> FakeAnswer + Send + Sync> = Arc::new(handler);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                serve(TokioIo::new(stream), handler.clone());
            }
        });
        FakeServer {
            address: None,
            task,
        }
    }

    /// A server that accepts connections and never answers: a metadata
    /// address that black-holes requests.
    pub async fn start_silent() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        FakeServer {
            address: Some(address),
            task,
        }
    }

    /// `127.0.0.1:port`
    pub fn authority(&self) -> String {
        self.address.expect("a TCP server").to_string()
    }

    /// `http://127.0.0.1:port`
    pub fn url(&self) -> String {
        format!("http://{}", self.authority())
    }
}

fn serve<S>(io: TokioIo<S>, handler: Arc<dyn Fn(&FakeRequest) -> FakeAnswer + Send + Sync>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    tokio::spawn(async move {
        let service = service_fn(move |req| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(respond(handler.as_ref(), req)) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
    });
}

pub(crate) fn as_pair(kv: &KeyValue) -> (String, String) {
    let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    };
    (kv.key.clone(), value)
}

pub(crate) fn as_pairs(kvs: &[KeyValue]) -> Vec<(&str, &str)> {
    kvs.iter()
        .map(
            |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => (kv.key.as_str(), s.as_str()),
                _ => (kv.key.as_str(), "<not a string>"),
            },
        )
        .collect()
}

/// Keeps what it is given.
#[derive(Default)]
struct Collect(Mutex<Vec<SpanBatch>>);

#[async_trait]
impl Consumer for Collect {
    async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
        self.0.lock().unwrap().push(batch);
        Ok(())
    }
}

fn batch_with_host(host: &str) -> SpanBatch {
    SpanBatch::from_request(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    string_kv("service.name", "cart"),
                    string_kv("host.name", host),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    name: "GET /cart".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn config(yaml_like: serde_json::Value) -> Config {
    let config: Config = crate::config::from_value(yaml_like).unwrap();
    config.validate().unwrap();
    config
}

fn resource_of(batch: &SpanBatch) -> Vec<(String, String)> {
    batch
        .resource_attributes(0)
        .map(|(k, v)| {
            (
                k.to_string(),
                v.and_then(|v| v.as_str()).unwrap_or("").to_string(),
            )
        })
        .collect()
}

async fn process(config: Config, ctx: DetectContext, batch: SpanBatch) -> SpanBatch {
    let sink = Arc::new(Collect::default());
    let processor = ResourceDetector::start_with("resource_detection", config, sink.clone(), ctx);
    processor.consume(batch).await.unwrap();
    let mut got = sink.0.lock().unwrap();
    assert_eq!(got.len(), 1);
    got.pop().unwrap()
}

#[tokio::test]
async fn override_true_replaces_and_false_keeps() {
    let ctx = DetectContext::for_test(&[(
        "OTEL_RESOURCE_ATTRIBUTES",
        "host.name=detected,deployment.environment=prod",
    )]);
    let on = process(
        config(serde_json::json!({"detectors": ["env"]})),
        ctx.clone(),
        batch_with_host("app"),
    )
    .await;
    assert_eq!(
        resource_of(&on),
        [
            ("service.name".to_string(), "cart".to_string()),
            ("host.name".into(), "detected".into()),
            ("deployment.environment".into(), "prod".into()),
        ]
    );
    let off = process(
        config(serde_json::json!({"detectors": ["env"], "override": false})),
        ctx,
        batch_with_host("app"),
    )
    .await;
    assert_eq!(
        resource_of(&off),
        [
            ("service.name".to_string(), "cart".to_string()),
            ("host.name".into(), "app".into()),
            ("deployment.environment".into(), "prod".into()),
        ]
    );
}

#[tokio::test]
async fn the_first_listed_detector_wins_and_switches_apply() {
    let imds = ec2::tests::fake_imds().await;
    let azure = FakeServer::start(|req| {
        if req.header("metadata") != Some("true") {
            return (400, vec![], String::new());
        }
        (
            200,
            vec![],
            r#"{"location":"westeurope","name":"vm-7","vmId":"vm-id"}"#.into(),
        )
    })
    .await;
    let ctx = DetectContext::for_test(&[
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.url()),
        ("TRACEGATE_AZURE_METADATA_ENDPOINT", &azure.url()),
    ]);
    let aws_first = config(serde_json::json!({"detectors": ["aws", "azure"]}));
    let detected = detect_all("t", &aws_first, &ctx).await;
    let got = as_pairs(detected.attributes());
    assert!(got.contains(&("cloud.provider", "aws")));
    assert!(got.contains(&("host.name", "ip-10-158-112-84.us-west-2.compute.internal")));
    // Azure's attributes that EC2 does not set still come in.
    assert!(got.contains(&("azure.vm.name", "vm-7")));

    let azure_first = config(serde_json::json!({
        "detectors": ["azure", "ec2"],
        "azure": {"resource_attributes": {"host.name": {"enabled": false}}},
    }));
    let detected = detect_all("t", &azure_first, &ctx).await;
    let got = as_pairs(detected.attributes());
    assert!(got.contains(&("cloud.provider", "azure")));
    // Azure's host.name is switched off, so EC2's comes through.
    assert!(got.contains(&("host.name", "ip-10-158-112-84.us-west-2.compute.internal")));
}

/// Three cloud detectors against endpoints that never answer: detection
/// ends after one timeout, not three, and the local detectors still count.
#[tokio::test(start_paused = true)]
async fn silent_endpoints_cost_one_timeout_in_total() {
    let silent = FakeServer::start_silent().await;
    let ctx = DetectContext::for_test(&[
        ("GCE_METADATA_HOST", &silent.authority()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &silent.url()),
        ("TRACEGATE_AZURE_METADATA_ENDPOINT", &silent.url()),
        ("OTEL_RESOURCE_ATTRIBUTES", "team=payments"),
    ]);
    let config = config(serde_json::json!({
        "detectors": ["gcp", "aws", "azure", "env"],
        "timeout": "2s",
    }));
    let started = tokio::time::Instant::now();
    let detected = detect_all("t", &config, &ctx).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    assert_eq!(as_pairs(detected.attributes()), [("team", "payments")]);
}

/// A batch that arrives while a detector is still waiting on its endpoint
/// is held until detection ends, then carries what was detected.
#[tokio::test(start_paused = true)]
async fn batches_wait_for_detection() {
    let silent = FakeServer::start_silent().await;
    let ctx = DetectContext::for_test(&[
        ("GCE_METADATA_HOST", &silent.authority()),
        ("K8S_NODE_NAME", "node-9"),
    ]);
    let started = tokio::time::Instant::now();
    let out = process(
        config(serde_json::json!({"detectors": ["gcp", "kubernetes"], "timeout": "1s"})),
        ctx,
        batch_with_host("app"),
    )
    .await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(resource_of(&out).contains(&("k8s.node.name".to_string(), "node-9".to_string())));
}

/// The gateway's own pod, namespace and service name (its environment)
/// never replace the application's, even with `override: true`.
#[tokio::test]
async fn the_gateways_own_identity_never_reaches_the_spans() {
    let ctx = DetectContext::for_test(&[
        ("K8S_NODE_NAME", "node-3"),
        ("K8S_POD_NAME", "tracegate-agent-abcde"),
        ("K8S_NAMESPACE", "monitoring"),
        ("OTEL_SERVICE_NAME", "tracegate"),
    ]);
    for detectors in [
        serde_json::json!(["env", "kubernetes"]),
        serde_json::json!(["k8snode", "env"]),
        serde_json::json!(["k8s_api"]),
    ] {
        let out = process(
            config(serde_json::json!({"detectors": detectors, "override": true})),
            ctx.clone(),
            batch_with_host("app"),
        )
        .await;
        assert_eq!(
            resource_of(&out),
            [
                ("service.name".to_string(), "cart".to_string()),
                ("host.name".into(), "app".into()),
                ("k8s.node.name".into(), "node-3".into()),
            ],
            "{detectors}"
        );
    }
}

#[test]
fn config_keys_and_validation() {
    let c: Config = crate::config::from_value(serde_json::json!({
        "detectors": ["gcp", "aws", "azure", "system", "docker", "kubernetes", "env", "k8snode", "k8s_api", "ec2", "eks"],
        "timeout": "2s",
        "override": true,
    }))
    .unwrap();
    assert!(c.validate().unwrap().is_empty());
    assert_eq!(c.detectors[1], DetectorKind::Ec2);
    assert_eq!(
        Config::default(),
        crate::config::from_value(serde_json::Value::Null).unwrap()
    );

    let unknown = crate::config::from_value::<Config>(serde_json::json!({"detectors": ["gce"]}));
    assert!(unknown.is_err());
    let bad_switch: Config = crate::config::from_value(serde_json::json!({
        "system": {"resource_attributes": {"host.idd": {"enabled": true}}}
    }))
    .unwrap();
    let e = bad_switch.validate().unwrap_err();
    assert_eq!(e.path, "system.resource_attributes");
    assert!(e.message.contains("host.id"), "{e}");
    let bad_source: Config =
        crate::config::from_value(serde_json::json!({"system": {"hostname_sources": ["dsn"]}}))
            .unwrap();
    assert!(bad_source
        .validate()
        .unwrap_err()
        .message
        .contains("\"dns\""));
    // host.id is off by default and can be switched on.
    let c: Config = crate::config::from_value(serde_json::json!({
        "system": {"resource_attributes": {"host.id": {"enabled": true}, "os.type": {"enabled": false}}}
    }))
    .unwrap();
    assert!(c.enabled(DetectorKind::System, "host.id"));
    assert!(!c.enabled(DetectorKind::System, "os.type"));
    assert!(c.enabled(DetectorKind::System, "host.name"));
    assert!(!c.enabled(DetectorKind::System, "host.arch"));
}
