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

    /// An HTTPS server with `pki`'s `localhost` certificate.
    pub async fn start_tls(
        pki: &crate::exporter::test_support::TestPki,
        handler: impl Fn(&FakeRequest) -> FakeAnswer + Send + Sync + 'static,
    ) -> FakeServer {
        let config = pki.server_config();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let handler: Arc<dyn Fn(&FakeRequest) -> FakeAnswer + Send + Sync> = Arc::new(handler);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let handler = handler.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(stream).await {
                        serve(TokioIo::new(tls), handler);
                    }
                });
            }
        });
        FakeServer {
            address: Some(address),
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
    let detected = detect_all("t", &aws_first, &ctx).await.unwrap();
    let got = as_pairs(detected.attributes());
    assert!(got.contains(&("cloud.provider", "aws")));
    assert!(got.contains(&("host.name", "ip-10-158-112-84.us-west-2.compute.internal")));
    // Azure's attributes that EC2 does not set still come in.
    assert!(got.contains(&("azure.vm.name", "vm-7")));

    let azure_first = config(serde_json::json!({
        "detectors": ["azure", "ec2"],
        "azure": {"resource_attributes": {"host.name": {"enabled": false}}},
    }));
    let detected = detect_all("t", &azure_first, &ctx).await.unwrap();
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
    let detected = detect_all("t", &config, &ctx).await.unwrap();
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
    // Where the outcome can differ from the collector's, validate says so.
    let warnings = c.validate().unwrap();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(warnings
        .iter()
        .any(|w| w.contains("deprecated name for k8s_api")));
    assert!(warnings.iter().any(|w| w.starts_with("docker:")));
    assert!(warnings.iter().any(|w| w.starts_with("k8s_api:")));
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
    // host.ip is off by default; switched on, its source differs.
    let ip: Config = crate::config::from_value(serde_json::json!({
        "detectors": ["system"],
        "system": {"resource_attributes": {"host.ip": {"enabled": true}}}
    }))
    .unwrap();
    let warnings = ip.validate().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("system.resource_attributes.host.ip:")
            && warnings[0].contains("interfaces that are up"),
        "{warnings:?}"
    );
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

/// A GCE metadata server whose `instance/zone` answers 500 for the first
/// `failures` requests: on Google Cloud, but failing.
async fn flaky_gce(failures: usize) -> (FakeServer, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let zone_calls = Arc::new(AtomicUsize::new(0));
    let calls = zone_calls.clone();
    let server = FakeServer::start(move |req| {
        let flavor = vec![("Metadata-Flavor", "Google".to_string())];
        let body = match req.path.as_str() {
            "/computeMetadata/v1/project/project-id" => "my-project",
            "/computeMetadata/v1/instance/zone" => {
                if calls.fetch_add(1, Ordering::SeqCst) < failures {
                    return (500, flavor, "internal error".into());
                }
                "projects/1/zones/europe-west1-b"
            }
            "/computeMetadata/v1/instance/machine-type" => "projects/1/machineTypes/e2-small",
            "/computeMetadata/v1/instance/id" => "42",
            "/computeMetadata/v1/instance/name" => "vm-9",
            "/computeMetadata/v1/instance/hostname" => "vm-9.internal",
            _ => return (404, flavor, String::new()),
        };
        (200, flavor, body.into())
    })
    .await;
    (server, zone_calls)
}

/// A detector on its platform that keeps failing is retried within
/// `timeout`, then detection fails naming it (and startup stops).
#[tokio::test]
async fn a_real_failure_is_retried_within_timeout_then_fails() {
    use std::sync::atomic::Ordering;
    let (server, zone_calls) = flaky_gce(usize::MAX).await;
    let ctx = DetectContext::for_test(&[("GCE_METADATA_HOST", &server.authority())]);
    let config = config(serde_json::json!({"detectors": ["gcp", "env"], "timeout": "1500ms"}));
    let started = std::time::Instant::now();
    let e = detect_all("t", &config, &ctx).await.unwrap_err();
    assert!(e.contains("detector gcp") && e.contains("500"), "{e}");
    assert_eq!(
        zone_calls.load(Ordering::SeqCst),
        2,
        "one try and one retry"
    );
    assert!(started.elapsed() >= FIRST_RETRY);

    // The processor refuses to report ready, with the reason.
    let sink = Arc::new(Collect::default());
    let processor = ResourceDetector::start_with("resource_detection", config, sink, ctx);
    let e = processor.ready().await.unwrap_err();
    assert!(e.contains("detector gcp"), "{e}");
}

/// A failure that clears before the timeout costs one retry, not startup.
#[tokio::test]
async fn a_failure_that_clears_within_timeout_is_retried() {
    let (server, _) = flaky_gce(1).await;
    let ctx = DetectContext::for_test(&[("GCE_METADATA_HOST", &server.authority())]);
    let config = config(serde_json::json!({"detectors": ["gcp"], "timeout": "3s"}));
    let detected = detect_all("t", &config, &ctx).await.unwrap();
    assert!(
        as_pairs(detected.attributes()).contains(&("cloud.availability_zone", "europe-west1-b"))
    );
}

/// No metadata service is "not on that cloud" unless
/// fail_on_missing_metadata says otherwise.
#[tokio::test]
async fn fail_on_missing_metadata_turns_absence_into_failure() {
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{refused}");
    let ctx = DetectContext::for_test(&[
        ("GCE_METADATA_HOST", &refused.to_string()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &url),
        ("TRACEGATE_AZURE_METADATA_ENDPOINT", &url),
    ]);
    let lenient =
        config(serde_json::json!({"detectors": ["gcp", "ec2", "azure"], "timeout": "1s"}));
    assert!(detect_all("t", &lenient, &ctx)
        .await
        .unwrap()
        .attributes()
        .is_empty());
    let strict = config(serde_json::json!({
        "detectors": ["azure"], "timeout": "1s", "fail_on_missing_metadata": true
    }));
    let e = detect_all("t", &strict, &ctx).await.unwrap_err();
    assert!(
        e.contains("detector azure") && e.contains("fail_on_missing_metadata"),
        "{e}"
    );
    let per_detector = config(serde_json::json!({
        "detectors": ["ec2"], "timeout": "1s", "ec2": {"fail_on_missing_metadata": true}
    }));
    assert!(detect_all("t", &per_detector, &ctx).await.is_err());
}

/// With refresh_interval, detection runs again and later batches carry
/// the new values.
#[tokio::test]
async fn refresh_interval_redetects() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let azure = FakeServer::start(move |_| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let name = if n == 0 { "vm-1" } else { "vm-2" };
        (
            200,
            vec![],
            format!(r#"{{"location":"westeurope","name":"{name}"}}"#),
        )
    })
    .await;
    let ctx = DetectContext::for_test(&[("TRACEGATE_AZURE_METADATA_ENDPOINT", &azure.url())]);
    let config = config(serde_json::json!({
        "detectors": ["azure"], "refresh_interval": "100ms", "override": true
    }));
    let sink = Arc::new(Collect::default());
    let processor = ResourceDetector::start_with("resource_detection", config, sink.clone(), ctx);
    processor.ready().await.unwrap();
    let host = |batch: &SpanBatch| {
        resource_of(batch)
            .into_iter()
            .find(|(k, _)| k == "azure.vm.name")
            .map(|(_, v)| v)
    };
    processor.consume(batch_with_host("app")).await.unwrap();
    assert_eq!(host(&sink.0.lock().unwrap()[0]).as_deref(), Some("vm-1"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        processor.consume(batch_with_host("app")).await.unwrap();
        let last = sink.0.lock().unwrap().last().map(host);
        if last == Some(Some("vm-2".to_string())) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never refreshed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn collector_keys_work_or_are_refused_by_name() {
    let parse = |v: serde_json::Value| crate::config::from_value::<Config>(v).unwrap();
    let refused = |v: serde_json::Value| parse(v).validate().unwrap_err();
    let e = refused(serde_json::json!({"gcp": {"gke_host_type": true}}));
    assert_eq!(e.path, "gcp.gke_host_type");
    let e = refused(serde_json::json!({"ec2": {"tags": ["^team$"]}}));
    assert!(
        e.path == "ec2.tags" && e.message.contains("tags_from_imds"),
        "{e}"
    );
    let e = refused(serde_json::json!({"ec2": {"max_attempts": 3}}));
    assert_eq!(e.path, "ec2.max_attempts");
    let e = refused(serde_json::json!({"azure": {"tags": ["(unclosed"]}}));
    assert_eq!(e.path, "azure.tags");
    let e = refused(serde_json::json!({
        "system": {"resource_attributes": {"os.description": {"enabled": true}}}
    }));
    assert!(e.message.contains("os.description"), "{e}");

    let c = parse(serde_json::json!({
        "refresh_interval": "5m",
        "fail_on_missing_metadata": true,
        "env": {"allow_list": ["team"]},
        "system": {
            "hostname_sources": ["lookup", "cname", "dns", "os"],
            "resource_attributes": {
                "host.ip": {"enabled": true}, "host.mac": {"enabled": true},
                "host.cpu.model.name": {"enabled": true},
                "os.description": {"enabled": false}
            }
        },
        "ec2": {"tags": ["^team$"], "tags_from_imds": true},
        "gcp": {"labels": ["^env$"]},
        "azure": {"tags": ["^team$"]},
        "k8s_api": {"auth_type": "none"},
    }));
    let warnings = c.validate().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("gcp.labels:"));
    assert_eq!(c.refresh_interval, Duration::from_secs(300));
    // The collector leaves Azure's availability zone off by default.
    assert!(!c.enabled(DetectorKind::Azure, "cloud.availability_zone"));
    assert!(c.enabled(DetectorKind::Azure, "azure.tag.team"));
    assert!(c.enabled(DetectorKind::System, "host.ip"));
    assert!(!c.enabled(DetectorKind::System, "host.interface"));
}
