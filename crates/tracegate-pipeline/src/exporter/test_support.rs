//! Test helpers: sample batches, a metrics recorder that can be read back,
//! and in-test OTLP sinks (gRPC with optional TLS, HTTP) that record what
//! arrives and answer as a test scripts them.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tracegate_model::otlp::{
    any_value, string_kv as string_attribute, AnyValue, ExportTracePartialSuccess,
    ExportTraceServiceRequest, ExportTraceServiceResponse, InstrumentationScope, KeyValue,
    Resource, ResourceSpans, ScopeSpans, Span,
};
use tracegate_model::SpanBatch;

use super::{ExporterConfig, ExporterHandle};

/// A request with `resources` resources of `spans_per_resource` spans each,
/// named `span-<resource>-<n>`, every span with a few attributes.
pub(crate) fn sample_request(
    resources: usize,
    spans_per_resource: usize,
) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: (0..resources)
            .map(|r| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string_attribute("service.name", &format!("svc-{r}"))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "tracegate-test".into(),
                        version: "1.0".into(),
                        ..Default::default()
                    }),
                    spans: (0..spans_per_resource)
                        .map(|s| {
                            let mut trace_id = [0u8; 16];
                            trace_id[..8].copy_from_slice(&(r as u64 + 1).to_be_bytes());
                            let mut span_id = [0u8; 8];
                            span_id[..4].copy_from_slice(&(s as u32 + 1).to_be_bytes());
                            Span {
                                trace_id: trace_id.to_vec(),
                                span_id: span_id.to_vec(),
                                name: format!("span-{r}-{s}"),
                                kind: 2,
                                start_time_unix_nano: 1_700_000_000_000_000_000 + s as u64,
                                end_time_unix_nano: 1_700_000_000_000_001_000 + s as u64,
                                attributes: vec![
                                    string_attribute("http.route", &format!("/api/{r}")),
                                    string_attribute("http.method", "GET"),
                                    KeyValue {
                                        key: "http.status_code".into(),
                                        value: Some(AnyValue {
                                            value: Some(any_value::Value::IntValue(200)),
                                        }),
                                        ..Default::default()
                                    },
                                ],
                                ..Default::default()
                            }
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

/// A deterministic generator (splitmix64), so a test sends the same trace
/// ids on every run.
pub(crate) struct TestRng(pub u64);

impl TestRng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn trace_id(&mut self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.next().to_be_bytes());
        id[8..].copy_from_slice(&self.next().to_be_bytes());
        id
    }
}

/// A component's config from JSON, which the test expects to be valid.
pub(crate) fn valid_config<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    crate::config::from_value(value).expect("valid config")
}

pub(crate) fn sample_batch(resources: usize, spans_per_resource: usize) -> SpanBatch {
    SpanBatch::from_request(&sample_request(resources, spans_per_resource))
}

pub(crate) fn span_names(request: &ExportTraceServiceRequest) -> Vec<String> {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.name.clone())
        .collect()
}

/// A metrics recorder whose values tests can read.
#[derive(Default)]
pub(crate) struct TestRecorder {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    gauges: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
}

fn key_text(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

fn metric_key_text(key: &Key) -> String {
    let labels: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
    key_text(key.name(), &labels)
}

impl TestRecorder {
    pub(crate) fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(&key_text(name, labels))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    pub(crate) fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.gauges
            .lock()
            .unwrap()
            .get(&key_text(name, labels))
            .map_or(f64::NAN, |g| f64::from_bits(g.load(Ordering::Relaxed)))
    }

    /// `tracegate_dropped_spans{component=id, reason}`.
    pub(crate) fn dropped(&self, id: &str, reason: &str) -> u64 {
        self.counter(
            crate::telemetry::names::DROPPED_SPANS,
            &[("component", id), ("reason", reason)],
        )
    }

    pub(crate) fn exporter_counter(&self, name: &str, id: &str) -> u64 {
        self.counter(name, &[("exporter", id)])
    }

    /// Asserts how many spans the exporter `id` counted as sent and as
    /// failed to send.
    #[track_caller]
    pub(crate) fn assert_sent_and_failed(&self, id: &str, sent: u64, failed: u64) {
        use crate::telemetry::names::{EXPORTER_SEND_FAILED_SPANS, EXPORTER_SENT_SPANS};
        assert_eq!(
            (
                self.exporter_counter(EXPORTER_SENT_SPANS, id),
                self.exporter_counter(EXPORTER_SEND_FAILED_SPANS, id),
            ),
            (sent, failed),
            "{id}: spans sent, spans failed"
        );
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let cell = self
            .counters
            .lock()
            .unwrap()
            .entry(metric_key_text(key))
            .or_default()
            .clone();
        Counter::from_arc(cell)
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let cell = self
            .gauges
            .lock()
            .unwrap()
            .entry(metric_key_text(key))
            .or_default()
            .clone();
        Gauge::from_arc(cell)
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// Starts an exporter with its metrics registered in a fresh recorder.
pub(crate) fn start_recorded(
    config: &ExporterConfig,
    id: &str,
) -> (ExporterHandle, Arc<TestRecorder>) {
    let recorder = Arc::new(TestRecorder::default());
    let handle = metrics::with_local_recorder(recorder.as_ref(), || {
        config.start(id, &crate::context::BuildContext::default())
    })
    .expect("exporter starts");
    (handle, recorder)
}

/// Polls `condition` until it holds; panics after 10 s. For values (like
/// counters) that have no event to await.
pub(crate) async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How a sink answers one request.
#[derive(Clone, Debug)]
pub(crate) enum GrpcReply {
    Ok,
    Partial {
        rejected: i64,
        message: String,
    },
    Fail(tonic::Status),
    /// Never answer (a stalled backend).
    Stall,
}

/// What a gRPC sink received in one request.
#[derive(Clone, Debug)]
pub(crate) struct GrpcReceived {
    pub request: ExportTraceServiceRequest,
    pub metadata: tonic::metadata::MetadataMap,
}

#[derive(Default)]
pub(crate) struct GrpcSinkState {
    received: Mutex<Vec<GrpcReceived>>,
    /// Answers for the next requests, in order; then `otherwise`.
    script: Mutex<VecDeque<GrpcReply>>,
    otherwise: Mutex<Option<GrpcReply>>,
    arrived: Notify,
    attempts: AtomicU64,
}

impl GrpcSinkState {
    pub(crate) fn script(&self, replies: impl IntoIterator<Item = GrpcReply>) {
        self.script.lock().unwrap().extend(replies);
    }

    pub(crate) fn otherwise(&self, reply: GrpcReply) {
        *self.otherwise.lock().unwrap() = Some(reply);
    }

    pub(crate) fn received(&self) -> Vec<GrpcReceived> {
        self.received.lock().unwrap().clone()
    }

    /// Requests that reached the service, answered or not.
    pub(crate) fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::SeqCst)
    }

    pub(crate) fn span_names(&self) -> Vec<String> {
        self.received()
            .iter()
            .flat_map(|r| span_names(&r.request))
            .collect()
    }

    /// Waits until `spans` spans were accepted (answered Ok).
    pub(crate) async fn wait_for_spans(&self, spans: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let notified = self.arrived.notified();
                if self.span_names().len() >= spans {
                    return;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("sink got {} of {spans} spans", self.span_names().len()));
    }

    /// Waits until `n` requests reached the service.
    pub(crate) async fn wait_for_attempts(&self, n: u64) {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let notified = self.arrived.notified();
                if self.attempts() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("sink saw {} of {n} requests", self.attempts()));
    }
}

struct GrpcSinkService(Arc<GrpcSinkState>);

#[async_trait]
impl TraceService for GrpcSinkService {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let state = &self.0;
        let reply = state
            .script
            .lock()
            .unwrap()
            .pop_front()
            .or_else(|| state.otherwise.lock().unwrap().clone())
            .unwrap_or(GrpcReply::Ok);
        state.attempts.fetch_add(1, Ordering::SeqCst);
        let received = GrpcReceived {
            metadata: request.metadata().clone(),
            request: request.into_inner(),
        };
        let response = match reply {
            GrpcReply::Ok => ExportTraceServiceResponse::default(),
            GrpcReply::Partial { rejected, message } => ExportTraceServiceResponse {
                partial_success: Some(ExportTracePartialSuccess {
                    rejected_spans: rejected,
                    error_message: message,
                }),
            },
            GrpcReply::Fail(status) => {
                state.arrived.notify_waiters();
                return Err(status);
            }
            GrpcReply::Stall => {
                state.arrived.notify_waiters();
                std::future::pending::<()>().await;
                unreachable!()
            }
        };
        state.received.lock().unwrap().push(received);
        state.arrived.notify_waiters();
        Ok(tonic::Response::new(response))
    }
}

pub(crate) struct GrpcSink {
    pub addr: SocketAddr,
    pub state: Arc<GrpcSinkState>,
}

impl GrpcSink {
    /// A plaintext sink on 127.0.0.1:0 accepting gzip and zstd.
    pub(crate) async fn start() -> GrpcSink {
        GrpcSink::start_with(None).await
    }

    /// A sink serving TLS with the PKI's `localhost` certificate; with
    /// `require_client_cert` clients must present one the CA signed.
    pub(crate) async fn start_tls(pki: &TestPki, require_client_cert: bool) -> GrpcSink {
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(
            &pki.server_cert_pem,
            &pki.server_key_pem,
        ));
        if require_client_cert {
            tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(&pki.ca_pem));
        }
        GrpcSink::start_with(Some(tls)).await
    }

    /// A plaintext sink on `addr` (e.g. another loopback address).
    pub(crate) async fn start_on(addr: SocketAddr) -> GrpcSink {
        GrpcSink::serve(TcpListener::bind(addr).await.unwrap(), None)
    }

    async fn start_with(tls: Option<ServerTlsConfig>) -> GrpcSink {
        GrpcSink::serve(TcpListener::bind("127.0.0.1:0").await.unwrap(), tls)
    }

    fn serve(listener: TcpListener, tls: Option<ServerTlsConfig>) -> GrpcSink {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(GrpcSinkState::default());
        let service = TraceServiceServer::new(GrpcSinkService(state.clone()))
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd);
        let mut server = Server::builder();
        if let Some(tls) = tls {
            server = server.tls_config(tls).unwrap();
        }
        let router = server.add_service(service);
        tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
        GrpcSink { addr, state }
    }
}

/// A CA, a `localhost` server certificate and a client certificate it
/// signed; the CA and the client's certificate and key written as PEM files.
pub(crate) struct TestPki {
    pub ca_file: PathBuf,
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_file: PathBuf,
    pub client_key_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestPki {
    pub(crate) fn new() -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tracegate test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let server_key = rcgen::KeyPair::generate().unwrap();
        let server_params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
        let client_key = rcgen::KeyPair::generate().unwrap();
        let mut client_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        client_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tracegate exporter");
        client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();
        let ca_file = dir.path().join("ca.pem");
        let client_cert_file = dir.path().join("client.pem");
        let client_key_file = dir.path().join("client-key.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        std::fs::write(&client_cert_file, client_cert.pem()).unwrap();
        std::fs::write(&client_key_file, client_key.serialize_pem()).unwrap();
        TestPki {
            ca_file,
            ca_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_file,
            client_key_file,
            _dir: dir,
        }
    }

    /// A rustls server config with the `localhost` certificate, no client
    /// authentication, no ALPN.
    pub(crate) fn server_config(&self) -> rustls::ServerConfig {
        let certs = rustls_pemfile::certs(&mut self.server_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut self.server_key_pem.as_bytes())
            .unwrap()
            .unwrap();
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap()
    }
}

/// How the HTTP sink answers one request.
#[derive(Clone, Debug)]
pub(crate) struct HttpReply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub(crate) fn ok() -> HttpReply {
        HttpReply {
            status: 200,
            headers: vec![("content-type", "application/x-protobuf".into())],
            body: ExportTraceServiceResponse::default().encode_to_vec(),
        }
    }

    pub(crate) fn status(status: u16) -> HttpReply {
        HttpReply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: &str) -> HttpReply {
        self.headers.push((name, value.into()));
        self
    }
}

/// One request as the HTTP sink saw it, body decompressed.
#[derive(Clone, Debug)]
pub(crate) struct HttpReceived {
    pub version: http::Version,
    pub method: http::Method,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    /// The body's length as sent (compressed).
    pub wire_len: usize,
}

#[derive(Default)]
pub(crate) struct HttpSinkState {
    received: Mutex<Vec<HttpReceived>>,
    script: Mutex<VecDeque<HttpReply>>,
    arrived: Notify,
}

impl HttpSinkState {
    pub(crate) fn script(&self, replies: impl IntoIterator<Item = HttpReply>) {
        self.script.lock().unwrap().extend(replies);
    }

    pub(crate) fn received(&self) -> Vec<HttpReceived> {
        self.received.lock().unwrap().clone()
    }

    pub(crate) async fn wait_for_requests(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let notified = self.arrived.notified();
                if self.received.lock().unwrap().len() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("HTTP sink got {} of {n} requests", self.received().len()));
    }
}

pub(crate) struct HttpSink {
    pub addr: SocketAddr,
    pub state: Arc<HttpSinkState>,
}

impl HttpSink {
    /// An HTTP/1.1 and h2 sink on 127.0.0.1:0; answers 200 unless scripted.
    pub(crate) async fn start() -> HttpSink {
        HttpSink::start_with(None).await
    }

    /// The same over TLS with the PKI's `localhost` certificate (ALPN h2, http/1.1).
    pub(crate) async fn start_tls(pki: &TestPki) -> HttpSink {
        let mut config = pki.server_config();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        HttpSink::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> HttpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(HttpSinkState::default());
        let accept_state = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = accept_state.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(http_sink_answer(&state, req).await) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    match tls {
                        None => {
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = builder.serve_connection(io, service).await;
                        }
                        Some(tls) => {
                            let Ok(stream) = tls.accept(stream).await else {
                                return;
                            };
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = builder.serve_connection(io, service).await;
                        }
                    }
                });
            }
        });
        HttpSink { addr, state }
    }
}

async fn http_sink_answer(
    state: &HttpSinkState,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let raw = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body = match parts
        .headers
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
    {
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .expect("valid gzip");
            out
        }
        Some("zstd") => zstd::decode_all(&raw[..]).expect("valid zstd"),
        _ => raw.to_vec(),
    };
    let reply = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(HttpReply::ok);
    state.received.lock().unwrap().push(HttpReceived {
        version: parts.version,
        method: parts.method,
        path: parts.uri.path().to_string(),
        headers: parts.headers,
        body,
        wire_len: raw.len(),
    });
    state.arrived.notify_waiters();
    let mut response = http::Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(*name, value);
    }
    response.body(Full::new(Bytes::from(reply.body))).unwrap()
}
