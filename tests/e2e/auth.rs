//! End to end through the real binary: authentication with the
//! collector's `bearertokenauth` and `basicauth` extensions. Receivers
//! (OTLP gRPC and HTTP, Jaeger gRPC, Zipkin) refuse requests without or
//! with wrong credentials as the collector does (UNAUTHENTICATED, 401) and
//! count them; a token file replaced at run time is used from then on;
//! exporters send their credentials to a receiver that requires them; and
//! a receiver's certificate replaced on disk is served to new connections
//! without a restart.

use crate::support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::{Method, StatusCode};
use prost::Message;
use support::gateway::{otlp_exporter_to, Gateway, TELEMETRY};
use support::raw;
use support::sink::Sink;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tracegate_model::jaeger::proto::collector_service_client::CollectorServiceClient;
use tracegate_model::jaeger::proto::{self, PostSpansRequest};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

const WAIT: Duration = Duration::from_secs(10);

/// `google.rpc.Status`, as the OTLP/HTTP receiver answers a refusal.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.to_str().unwrap().to_string()
}

/// Replaces a file as Kubernetes and certificate managers do: a new file
/// renamed over the old one.
fn replace(path: &str, content: &str) {
    let next = format!("{path}.next");
    std::fs::write(&next, content).unwrap();
    std::fs::rename(&next, path).unwrap();
}

fn export_request() -> ExportTraceServiceRequest {
    ExportTraceServiceRequest::decode(support::one_span_request("authenticated").as_slice())
        .unwrap()
}

/// A plaintext channel to `addr`, and a request carrying `authorization`
/// metadata if given.
async fn call<T>(
    addr: SocketAddr,
    message: T,
    authorization: Option<&str>,
) -> (tonic::transport::Channel, tonic::Request<T>) {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut request = tonic::Request::new(message);
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    (channel, request)
}

/// One OTLP/gRPC export through the real tonic client.
async fn otlp_grpc(addr: SocketAddr, authorization: Option<&str>) -> Result<(), tonic::Status> {
    let (channel, request) = call(addr, export_request(), authorization).await;
    TraceServiceClient::new(channel)
        .export(request)
        .await
        .map(drop)
}

async fn otlp_http(
    addr: SocketAddr,
    content_type: &str,
    authorization: Option<&str>,
) -> raw::HttpReply {
    let mut headers = vec![("content-type", content_type)];
    if let Some(value) = authorization {
        headers.push(("authorization", value));
    }
    let body = if content_type == "application/json" {
        br#"{"resourceSpans":[]}"#.to_vec()
    } else {
        support::one_span_request("over-http")
    };
    raw::http(addr, Method::POST, "/v1/traces", &headers, body).await
}

async fn jaeger_grpc(addr: SocketAddr, authorization: Option<&str>) -> Result<(), tonic::Status> {
    let batch = proto::Batch {
        spans: vec![proto::Span {
            trace_id: vec![0x11; 16],
            span_id: vec![0x22; 8],
            operation_name: "GET /cart".into(),
            ..Default::default()
        }],
        process: Some(proto::Process {
            service_name: "cart".into(),
            ..Default::default()
        }),
    };
    let (channel, request) =
        call(addr, PostSpansRequest { batch: Some(batch) }, authorization).await;
    CollectorServiceClient::new(channel)
        .post_spans(request)
        .await
        .map(drop)
}

async fn zipkin(addr: SocketAddr, authorization: Option<&str>) -> raw::HttpReply {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(value) = authorization {
        headers.push(("authorization", value));
    }
    let span = r#"[{"traceId":"5af7183fb1d4cf5f","id":"352bff9a74ca9ad2","name":"get","timestamp":1556604172355737,"duration":10,"localEndpoint":{"serviceName":"zipkin-client"}}]"#;
    raw::http(addr, Method::POST, "/api/v2/spans", &headers, span).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_refuse_missing_or_wrong_credentials_count_them_and_take_the_right_ones() {
    let files = tempfile::tempdir().unwrap();
    let token = write(files.path(), "token", "s3cret\n");
    let htpasswd = write(
        files.path(),
        "htpasswd",
        &format!("zed:{}\n", bcrypt::hash("zipkin-pw", 4).unwrap()),
    );
    let sink = Sink::start().await;
    let yaml = format!(
        r#"
extensions:
  bearertokenauth:
    filename: {token}
  basicauth/inline:
    htpasswd:
      inline: |
        jay:{{SHA}}W6ph5Mm5Pz8GgiULbPgzG37mj9g=
  basicauth/file:
    htpasswd:
      file: {htpasswd}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
        auth:
          authenticator: bearertokenauth
      http:
        endpoint: 127.0.0.1:0
        auth:
          authenticator: bearertokenauth
  jaeger:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
        auth:
          authenticator: basicauth/inline
  zipkin:
    endpoint: 127.0.0.1:0
    auth:
      authenticator: basicauth/file
{exporters}service:
  extensions: [bearertokenauth, basicauth/inline, basicauth/file]
  pipelines:
    traces:
      receivers: [otlp, jaeger, zipkin]
      exporters: [otlp]
{TELEMETRY}"#,
        exporters = otlp_exporter_to(sink.addr),
    );
    let gw = Gateway::start(&yaml);
    let (grpc, http) = (gw.addr("otlp", "grpc"), gw.addr("otlp", "http"));

    // OTLP/gRPC, through the real client: UNAUTHENTICATED with the
    // collector's messages.
    let missing = otlp_grpc(grpc, None).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::Unauthenticated, "{missing:?}");
    assert_eq!(
        missing.message(),
        "missing or empty authorization header: authorization"
    );
    let wrong = otlp_grpc(grpc, Some("Bearer guess")).await.unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    assert_eq!(wrong.message(), "scheme or token does not match");
    let no_scheme = otlp_grpc(grpc, Some("s3cret")).await.unwrap_err();
    assert_eq!(no_scheme.code(), tonic::Code::Unauthenticated);
    otlp_grpc(grpc, Some("Bearer s3cret")).await.unwrap();

    // OTLP/HTTP: 401 with a Status in the request's encoding.
    let missing = otlp_http(http, "application/x-protobuf", None).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.headers["content-type"], "application/x-protobuf");
    let status = RpcStatus::decode(missing.body).unwrap();
    assert_eq!(status.code, tonic::Code::Unauthenticated as i32);
    let wrong = otlp_http(http, "application/json", Some("Bearer guess")).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let json: serde_json::Value = serde_json::from_slice(&wrong.body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"code": 16, "message": "scheme or token does not match"})
    );
    let ok = otlp_http(http, "application/x-protobuf", Some("Bearer s3cret")).await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);

    // Jaeger gRPC, basicauth with an inline {SHA} entry.
    let jaeger = gw.addr("jaeger", "grpc");
    let missing = jaeger_grpc(jaeger, None).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::Unauthenticated);
    assert_eq!(missing.message(), "no basic auth provided");
    let wrong = jaeger_grpc(jaeger, Some(&basic("jay", "guess")))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    assert_eq!(wrong.message(), "invalid credentials");
    jaeger_grpc(jaeger, Some(&basic("jay", "password")))
        .await
        .unwrap();

    // Zipkin, basicauth from an htpasswd file with a bcrypt entry: Go's
    // plain-text 401.
    let zipkin_addr = gw.addr("zipkin", "http");
    let missing = zipkin(zipkin_addr, None).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(&missing.body[..], b"no basic auth provided\n");
    let wrong = zipkin(zipkin_addr, Some(&basic("zed", "guess"))).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(&wrong.body[..], b"invalid credentials\n");
    let ok = zipkin(zipkin_addr, Some(&basic("zed", "zipkin-pw"))).await;
    assert_eq!(ok.status, StatusCode::ACCEPTED);

    // What was refused never reached the pipeline; what was let in did.
    assert!(sink.wait_for_spans(4, WAIT).await, "{}", sink.span_count());
    let metrics = gw.addr("telemetry", "metrics");
    let text = raw::wait_for_metrics(
        metrics,
        &[
            r#"otelcol_receiver_rejected_requests_total{receiver="otlp",transport="grpc",reason="unauthenticated"} 3"#,
            r#"otelcol_receiver_rejected_requests_total{receiver="otlp",transport="http",reason="unauthenticated"} 2"#,
            r#"otelcol_receiver_rejected_requests_total{receiver="jaeger",transport="grpc",reason="unauthenticated"} 2"#,
            r#"otelcol_receiver_rejected_requests_total{receiver="zipkin",transport="http",reason="unauthenticated"} 2"#,
        ],
        WAIT,
    )
    .await;
    assert_eq!(
        raw::counter_sum(&text, "otelcol_receiver_accepted_spans_total"),
        4,
        "{text}"
    );
    assert_eq!(sink.span_count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_replaced_at_run_time_is_the_one_checked() {
    let files = tempfile::tempdir().unwrap();
    let token = write(files.path(), "token", "first\n");
    let sink = Sink::start().await;
    let yaml = format!(
        r#"
extensions:
  bearertokenauth/file:
    filename: {token}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
        auth:
          authenticator: bearertokenauth/file
{exporters}service:
  extensions: [bearertokenauth/file]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
{TELEMETRY}"#,
        exporters = otlp_exporter_to(sink.addr),
    );
    let gw = Gateway::start(&yaml);
    let grpc = gw.addr("otlp", "grpc");
    otlp_grpc(grpc, Some("Bearer first")).await.unwrap();
    replace(&token, "second\n");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while otlp_grpc(grpc, Some("Bearer second")).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replaced token file was never read"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old = otlp_grpc(grpc, Some("Bearer first")).await.unwrap_err();
    assert_eq!(old.code(), tonic::Code::Unauthenticated);
    gw.wait_for_log(&["token file changed: tokens reloaded"], WAIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporters_send_credentials_that_a_receiver_requiring_them_accepts() {
    let files = tempfile::tempdir().unwrap();
    let pki = support::tls::make(files.path());
    let token = write(files.path(), "token", "exporter-token");
    let sink = Sink::start().await;
    // The backend: a tracegate whose receivers require credentials, gRPC
    // over TLS (gRPC clients send credentials only over TLS).
    let backend = Gateway::start(&format!(
        r#"
extensions:
  bearertokenauth:
    token: exporter-token
  basicauth/server:
    htpasswd:
      inline: |
        agent:{hash}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
        tls:
          cert_file: {cert}
          key_file: {key}
        auth:
          authenticator: bearertokenauth
      http:
        endpoint: 127.0.0.1:0
        auth:
          authenticator: basicauth/server
{exporters}service:
  extensions: [bearertokenauth, basicauth/server]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
{TELEMETRY}"#,
        hash = bcrypt::hash("agent-pw", 4).unwrap(),
        cert = pki.cert_file.display(),
        key = pki.key_file.display(),
        exporters = otlp_exporter_to(sink.addr),
    ));
    let grpc_port = backend.addr("otlp", "grpc").port();
    let http_port = backend.addr("otlp", "http").port();
    // The agent: one span in, one copy out through each exporter.
    let agent = Gateway::start(&format!(
        r#"
extensions:
  bearertokenauth/client:
    filename: {token}
  basicauth/client:
    client_auth:
      username: agent
      password: agent-pw
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
exporters:
  otlp/backend:
    endpoint: localhost:{grpc_port}
    tls:
      ca_file: {ca}
    auth:
      authenticator: bearertokenauth/client
  otlphttp/backend:
    endpoint: http://127.0.0.1:{http_port}
    auth:
      authenticator: basicauth/client
service:
  extensions: [bearertokenauth/client, basicauth/client]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp/backend, otlphttp/backend]
{TELEMETRY}"#,
        ca = pki.ca_file.display(),
    ));
    otlp_grpc(agent.addr("otlp", "grpc"), None).await.unwrap();
    assert!(
        sink.wait_for_spans(2, WAIT).await,
        "{} spans reached the backend's sink",
        sink.span_count()
    );
    let text = raw::wait_for_metrics(
        backend.addr("telemetry", "metrics"),
        &[
            r#"otelcol_receiver_accepted_spans_total{receiver="otlp",transport="grpc"} 1"#,
            r#"otelcol_receiver_accepted_spans_total{receiver="otlp",transport="http"} 1"#,
        ],
        WAIT,
    )
    .await;
    assert_eq!(
        raw::counter_sum(&text, "otelcol_receiver_rejected_requests_total"),
        0,
        "{text}"
    );
}

/// A fresh TLS connection's Export to `addr`, trusting only `ca_pem`.
async fn export_over_tls(addr: SocketAddr, ca_pem: &[u8]) -> Result<(), String> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    TraceServiceClient::new(channel)
        .export(export_request())
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_on_disk_is_served_to_new_connections() {
    let first_dir = tempfile::tempdir().unwrap();
    let second_dir = tempfile::tempdir().unwrap();
    let first = support::tls::make(first_dir.path());
    let second = support::tls::make(second_dir.path());
    let sink = Sink::start().await;
    let gw = Gateway::start(&format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
        tls:
          cert_file: {cert}
          key_file: {key}
          reload_interval: 100ms
{exporters}service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
{TELEMETRY}"#,
        cert = first.cert_file.display(),
        key = first.key_file.display(),
        exporters = otlp_exporter_to(sink.addr),
    ));
    let addr = gw.addr("otlp", "grpc");
    let first_ca = std::fs::read(&first.ca_file).unwrap();
    let second_ca = std::fs::read(&second.ca_file).unwrap();
    export_over_tls(addr, &first_ca).await.unwrap();
    assert!(export_over_tls(addr, &second_ca).await.is_err());

    // The second pair replaces the first on disk: key first, so that for a
    // moment the files do not match and the old pair stays in use.
    replace(first.key_file.to_str().unwrap(), &second.key_pem);
    replace(first.cert_file.to_str().unwrap(), &second.cert_pem);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Err(e) = export_over_tls(addr, &second_ca).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served: {e}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        export_over_tls(addr, &first_ca).await.is_err(),
        "new connections see only the new certificate"
    );
}
