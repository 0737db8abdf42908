//! The OTLP receiver over real sockets on 127.0.0.1:0: every status code
//! on both protocols, compressed bodies and bombs, TLS, CORS, counters and
//! shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use tonic::Code;

use super::{PassthroughCodec, TRACE_EXPORT_PATH};
use crate::compression::test_encoders::{gzip, lz4, snappy_block, snappy_framed, zlib, zstd};
use crate::consumer::{ConsumeError, Consumer, NextConsumer};
use crate::grpc::rpc_status::{RetryInfo, RpcStatus};
use crate::receiver::test_support::Collect;
use crate::receiver::{ReceiverConfig, RunningReceiver, StartError};
use tracegate_model::otlp::{
    any_value, span, status, AnyValue, ExportTraceServiceRequest, InstrumentationScope, KeyValue,
    Resource, ResourceSpans, ScopeSpans, Span, Status,
};
use tracegate_model::SpanBatch;

// ---------------------------------------------------------------- fixtures

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// A request with `spans` spans of one trace (trace id bytes all `seed`).
fn request(spans: usize, seed: u8) -> ExportTraceServiceRequest {
    let span = |i: usize| Span {
        trace_id: vec![seed; 16],
        span_id: vec![i as u8 + 1; 8],
        parent_span_id: if i == 0 { vec![] } else { vec![1; 8] },
        name: format!("span-{i}"),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
        end_time_unix_nano: 1_700_000_000_000_000_500 + i as u64,
        attributes: vec![kv("http.method", "GET"), kv("http.route", "/checkout")],
        status: Some(Status {
            code: status::StatusCode::Error as i32,
            message: "boom".into(),
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "checkout")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "tracegate-test".into(),
                    ..Default::default()
                }),
                spans: (0..spans).map(span).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn protobuf(request: &ExportTraceServiceRequest) -> Bytes {
    Bytes::from(request.encode_to_vec())
}

fn json_body(request: &ExportTraceServiceRequest) -> Bytes {
    Bytes::from(serde_json::to_vec(request).unwrap())
}

const MIB: usize = 1 << 20;

/// One gzip member that inflates to `total` zeros (a multiple of 1 MiB):
/// a sync-flushed deflate run for 1 MiB of zeros, repeated (its back
/// references only ever reach zeros), closed by the final block and the
/// true CRC and size.
fn gzip_bomb(total: usize) -> Vec<u8> {
    let zeros = vec![0u8; MIB];
    let mut deflate = flate2::Compress::new(flate2::Compression::best(), false);
    let mut run = Vec::with_capacity(MIB);
    deflate
        .compress_vec(&zeros, &mut run, flate2::FlushCompress::Sync)
        .unwrap();
    assert_eq!(deflate.total_in(), MIB as u64);
    let mut last = Vec::with_capacity(64);
    deflate
        .compress_vec(&[], &mut last, flate2::FlushCompress::Finish)
        .unwrap();
    let mut crc = flate2::Crc::new();
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    for _ in 0..total / MIB {
        out.extend_from_slice(&run);
        crc.update(&zeros);
    }
    out.extend_from_slice(&last);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(crc.amount()).to_le_bytes());
    out
}

/// Concatenated zstd frames that inflate to `total` zeros.
fn zstd_bomb(total: usize) -> Vec<u8> {
    let frame = zstd::bulk::compress(&vec![0u8; MIB], 1).unwrap();
    frame.repeat(total / MIB)
}

/// The process's peak resident set, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

// --------------------------------------------------------------- consumers

struct Refuse(Option<Duration>);

#[async_trait]
impl Consumer for Refuse {
    async fn consume(&self, _: SpanBatch) -> Result<(), ConsumeError> {
        Err(ConsumeError::Refused {
            reason: "memory limit reached".into(),
            retry_after: self.0,
        })
    }
}

/// Fails every batch for good, with the backend code `code` if any.
struct Reject(Option<Code>);

#[async_trait]
impl Consumer for Reject {
    async fn consume(&self, _: SpanBatch) -> Result<(), ConsumeError> {
        Err(ConsumeError::Rejected {
            message: "span too old".into(),
            code: self.0,
        })
    }
}

/// Holds every batch until the test hands out a permit.
struct Gate {
    arrived: mpsc::UnboundedSender<()>,
    open: Arc<Semaphore>,
}

#[async_trait]
impl Consumer for Gate {
    async fn consume(&self, _: SpanBatch) -> Result<(), ConsumeError> {
        let _ = self.arrived.send(());
        self.open.acquire().await.unwrap().forget();
        Ok(())
    }
}

// ----------------------------------------------------------------- harness

struct Harness {
    running: Option<RunningReceiver>,
    shutdown: CancellationToken,
    grpc: Option<SocketAddr>,
    http: Option<SocketAddr>,
}

impl Harness {
    fn grpc(&self) -> SocketAddr {
        self.grpc.expect("grpc is configured")
    }

    fn http(&self) -> SocketAddr {
        self.http.expect("http is configured")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn otlp_config(protocols: serde_json::Value) -> ReceiverConfig {
    ReceiverConfig::from_value("otlp", json!({ "protocols": protocols }))
        .unwrap()
        .unwrap()
}

async fn try_start(
    protocols: serde_json::Value,
    next: NextConsumer,
) -> Result<Harness, StartError> {
    let shutdown = CancellationToken::new();
    let running = otlp_config(protocols)
        .start("otlp/test", next, shutdown.clone())
        .await?;
    let find = |p: &str| {
        running
            .addresses()
            .iter()
            .find(|(q, _)| *q == p)
            .map(|(_, a)| *a)
    };
    Ok(Harness {
        grpc: find("grpc"),
        http: find("http"),
        running: Some(running),
        shutdown,
    })
}

async fn start(protocols: serde_json::Value, next: NextConsumer) -> Harness {
    try_start(protocols, next).await.unwrap()
}

fn both() -> serde_json::Value {
    json!({"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"}})
}

async fn collecting(protocols: serde_json::Value) -> (Harness, mpsc::UnboundedReceiver<SpanBatch>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (start(protocols, Arc::new(Collect(tx))).await, rx)
}

// ------------------------------------------------------------- HTTP client

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn content_type(&self) -> &str {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .map_or("", |v| v.to_str().unwrap())
    }

    /// The `google.rpc.Status` of an error answer, in either encoding.
    fn rpc_status(&self) -> (i32, String) {
        if self.content_type() == "application/json" {
            let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
            (
                v["code"].as_i64().unwrap() as i32,
                v["message"].as_str().unwrap().to_string(),
            )
        } else {
            assert_eq!(self.content_type(), "application/x-protobuf");
            let s = RpcStatus::decode(self.body.clone()).unwrap();
            (s.code, s.message)
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send(client: &HttpClient, request: Request<Full<Bytes>>) -> Answer {
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

fn post(
    addr: SocketAddr,
    path: &str,
    content_type: Option<&str>,
    encoding: Option<&str>,
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut builder = Request::post(format!("http://{addr}{path}"));
    if let Some(ct) = content_type {
        builder = builder.header(http::header::CONTENT_TYPE, ct);
    }
    if let Some(enc) = encoding {
        builder = builder.header(http::header::CONTENT_ENCODING, enc);
    }
    builder.body(Full::new(body.into())).unwrap()
}

/// POSTs `body` to `/v1/traces` on `client`.
async fn send_traces(
    client: &HttpClient,
    addr: SocketAddr,
    content_type: &str,
    encoding: Option<&str>,
    body: impl Into<Bytes>,
) -> Answer {
    send(
        client,
        post(addr, "/v1/traces", Some(content_type), encoding, body),
    )
    .await
}

async fn post_traces(addr: SocketAddr, content_type: &str, body: impl Into<Bytes>) -> Answer {
    send_traces(&http_client(), addr, content_type, None, body).await
}

// ------------------------------------------------------------- gRPC client

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn grpc_call(
    channel: Channel,
    path: &'static str,
    message: Bytes,
    compression: Option<CompressionEncoding>,
) -> Result<Bytes, tonic::Status> {
    let mut client = tonic::client::Grpc::new(channel);
    if let Some(encoding) = compression {
        client = client.send_compressed(encoding);
    }
    client.ready().await.unwrap();
    client
        .unary(
            tonic::Request::new(message),
            http::uri::PathAndQuery::from_static(path),
            PassthroughCodec,
        )
        .await
        .map(tonic::Response::into_inner)
}

async fn grpc_export(addr: SocketAddr, message: Bytes) -> Result<Bytes, tonic::Status> {
    grpc_call(channel(addr).await, TRACE_EXPORT_PATH, message, None).await
}

/// Sends one already-compressed gRPC message with `grpc-encoding`, so a
/// bomb never has to exist uncompressed in the test.
async fn raw_grpc(addr: SocketAddr, encoding: &str, compressed: &[u8]) -> (Code, String) {
    let mut framed = Vec::with_capacity(5 + compressed.len());
    framed.push(1);
    framed.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
    framed.extend_from_slice(compressed);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let request = Request::post(format!("http://{addr}{TRACE_EXPORT_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-encoding", encoding)
        .body(Full::new(Bytes::from(framed)))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let trailers = body
        .collect()
        .await
        .unwrap()
        .trailers()
        .cloned()
        .unwrap_or_default();
    let status = tonic::Status::from_header_map(&parts.headers)
        .or_else(|| tonic::Status::from_header_map(&trailers))
        .expect("a grpc-status");
    (status.code(), status.message().to_string())
}

// =================================================================== tests

#[tokio::test]
async fn protobuf_and_json_bodies_arrive_as_the_same_spans() {
    let (h, mut rx) = collecting(both()).await;
    let sent = request(3, 0x11);

    let pb = post_traces(h.http(), "application/x-protobuf", protobuf(&sent)).await;
    assert_eq!(pb.status, StatusCode::OK);
    assert_eq!(pb.content_type(), "application/x-protobuf");
    assert!(pb.body.is_empty(), "an empty ExportTraceServiceResponse");

    let js = post_traces(
        h.http(),
        "application/json; charset=utf-8",
        json_body(&sent),
    )
    .await;
    assert_eq!(js.status, StatusCode::OK, "{}", js.text());
    assert_eq!(js.content_type(), "application/json");
    assert_eq!(js.body, "{}");

    grpc_export(h.grpc(), protobuf(&sent)).await.unwrap();

    for via in ["http protobuf", "http json", "grpc"] {
        let batch = rx.recv().await.unwrap();
        assert_eq!(batch.len(), 3, "{via}");
        let received = ExportTraceServiceRequest::decode(batch.bytes().clone()).unwrap();
        assert_eq!(received, sent, "{via}");
        assert_eq!(batch.spans()[0].trace_id, [0x11; 16], "{via}");
    }
}

#[tokio::test]
async fn the_seed_curl_json_is_accepted() {
    let (h, mut rx) = collecting(json!({"http": {"endpoint": "127.0.0.1:0"}})).await;
    let body = r#"{
      "resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "test-service"}}]},
        "scopeSpans": [{
          "spans": [{
            "traceId": "5b8aa5a2d2c872e8321cf37308d69df2",
            "spanId": "051e64f5b8c54c99",
            "name": "test-span",
            "startTimeUnixNano": "1700000000000000000",
            "endTimeUnixNano": "1700000000000000001"
          }]
        }]
      }]
    }"#;
    let answer = post_traces(h.http(), "application/json", body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let batch = rx.recv().await.unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(
        batch.spans()[0].trace_id.to_vec(),
        vec![
            0x5b, 0x8a, 0xa5, 0xa2, 0xd2, 0xc8, 0x72, 0xe8, 0x32, 0x1c, 0xf3, 0x73, 0x08, 0xd6,
            0x9d, 0xf2
        ]
    );
}

#[tokio::test]
async fn compressed_http_bodies_are_accepted() {
    let (h, mut rx) = collecting(json!({"http": {"endpoint": "127.0.0.1:0"}})).await;
    let sent = request(2, 0x22);
    let pb = protobuf(&sent);
    let js = json_body(&sent);
    let client = http_client();
    for (encoding, compress) in [
        ("gzip", gzip as fn(&[u8]) -> Vec<u8>),
        ("zstd", zstd),
        ("deflate", zlib),
        ("zlib", zlib),
        // The collector's `snappy` takes the block format and, detected by
        // its stream identifier, the framing format.
        ("snappy", snappy_block),
        ("snappy", snappy_framed),
        ("x-snappy-framed", snappy_framed),
        ("lz4", lz4),
    ] {
        for (ct, body) in [("application/x-protobuf", &pb), ("application/json", &js)] {
            let answer = send_traces(&client, h.http(), ct, Some(encoding), compress(body)).await;
            assert_eq!(
                answer.status,
                StatusCode::OK,
                "{encoding} {ct}: {}",
                answer.text()
            );
            let batch = rx.recv().await.unwrap();
            assert_eq!(
                ExportTraceServiceRequest::decode(batch.bytes().clone()).unwrap(),
                sent,
                "{encoding} {ct}"
            );
        }
    }
}

#[tokio::test]
async fn http2_cleartext_is_served() {
    let (h, mut rx) = collecting(json!({"http": {"endpoint": "127.0.0.1:0"}})).await;
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let answer = send_traces(
        &client,
        h.http(),
        "application/x-protobuf",
        None,
        protobuf(&request(1, 3)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(rx.recv().await.unwrap().len(), 1);
}

#[tokio::test]
async fn every_http_error_gets_its_status_and_the_server_keeps_serving() {
    let (h, mut rx) = collecting(json!({
        "http": {"endpoint": "127.0.0.1:0", "max_request_body_size": 4096}
    }))
    .await;
    let addr = h.http();
    // One client, so the bad requests share keep-alive connections with
    // the good one at the end.
    let client = http_client();
    let pb = protobuf(&request(1, 7));

    for path in [
        "/",
        "/v1/metrics",
        "/v1/logs",
        "/v1/traces/extra",
        "/v1/trace",
    ] {
        let answer = send(
            &client,
            post(addr, path, Some("application/x-protobuf"), None, pb.clone()),
        )
        .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        // Go's http.NotFound, as the collector's mux answers.
        assert_eq!(answer.text(), "404 page not found\n", "{path}");
        assert_eq!(
            answer.headers[http::header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert_eq!(answer.headers["x-content-type-options"], "nosniff");
    }

    for method in [Method::GET, Method::PUT, Method::DELETE, Method::OPTIONS] {
        let request = Request::builder()
            .method(method.clone())
            .uri(format!("http://{addr}/v1/traces"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let answer = send(&client, request).await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(answer.headers[http::header::ALLOW], "POST");
        assert_eq!(answer.text(), "405 method not allowed, supported: [POST]");
        assert_eq!(answer.headers[http::header::CONTENT_TYPE], "text/plain");
    }

    for ct in [
        Some("text/plain"),
        Some("application/grpc"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let answer = send(&client, post(addr, "/v1/traces", ct, None, pb.clone())).await;
        assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        assert!(answer.text().contains("application/x-protobuf"));
    }

    // Malformed protobuf: field 1 declares 100 bytes, 1 follows.
    let answer = send_traces(
        &client,
        addr,
        "application/x-protobuf",
        None,
        &b"\x0a\x64\x01"[..],
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let (code, message) = answer.rpc_status();
    assert_eq!(code, Code::InvalidArgument as i32);
    assert!(message.contains("malformed protobuf"), "{message}");

    // Malformed JSON, answered in JSON.
    let answer = send_traces(
        &client,
        addr,
        "application/json",
        None,
        "{\"resourceSpans\": [}",
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.content_type(), "application/json");
    let (code, message) = answer.rpc_status();
    assert_eq!(code, Code::InvalidArgument as i32);
    assert!(message.contains("JSON"), "{message}");

    // A compressed body that is not what it claims.
    let answer = send_traces(
        &client,
        addr,
        "application/x-protobuf",
        Some("gzip"),
        pb.clone(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.rpc_status().1.contains("gzip"));

    // Unsupported encodings are named.
    for encoding in ["br", "gzip, zstd", "snappy, lz4"] {
        let answer = send_traces(&client, addr, "application/json", Some(encoding), "{}").await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{encoding}");
        let (code, message) = answer.rpc_status();
        assert_eq!(code, Code::InvalidArgument as i32);
        assert_eq!(message, format!("unsupported Content-Encoding: {encoding}"));
    }

    // Too large as sent (refused on Content-Length), and after inflating:
    // 400 and INVALID_ARGUMENT, as the collector answers Go's MaxBytesReader
    // error.
    let big = vec![b' '; 5000];
    let answer = send_traces(&client, addr, "application/json", None, big.clone()).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.rpc_status().0, Code::InvalidArgument as i32);
    assert!(answer.rpc_status().1.contains("max_request_body_size"));
    let answer = send_traces(&client, addr, "application/json", Some("gzip"), gzip(&big)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.rpc_status().1.contains("decompressed"));

    // A JSON list is not a request, not even an empty one.
    for list in ["[]", "[{}]"] {
        let answer = send_traces(&client, addr, "application/json", None, list).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{list}");
        let (code, message) = answer.rpc_status();
        assert_eq!(code, Code::InvalidArgument as i32);
        assert!(message.contains("array"), "{message}");
    }

    // A bare `null` is an empty request to the collector: answered OK, in
    // JSON, with nothing to hand on.
    let answer = send_traces(&client, addr, "application/json", None, "null").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(&answer.body[..], b"{}");

    // None of it reached the pipeline, and the server still serves.
    assert!(rx.try_recv().is_err());
    let answer = send_traces(&client, addr, "application/x-protobuf", None, pb).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(rx.recv().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_answers_reach_clients_still_sending_a_large_body() {
    // Bodies far larger than socket buffers: the answer comes before the
    // body is read, and the client must still get it, not a reset.
    let (h, mut rx) = collecting(json!({
        "http": {"endpoint": "127.0.0.1:0", "max_request_body_size": 4096}
    }))
    .await;
    let big = Bytes::from(vec![0u8; 8 * MIB]);
    let client = http_client();
    for (path, content_type, want) in [
        (
            "/v1/traces",
            "application/x-protobuf",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/metrics",
            "application/x-protobuf",
            StatusCode::NOT_FOUND,
        ),
        (
            "/v1/traces",
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ] {
        let answer = send(
            &client,
            post(h.http(), path, Some(content_type), None, big.clone()),
        )
        .await;
        assert_eq!(answer.status, want, "{path} {content_type}");
    }
    let answer = send_traces(
        &client,
        h.http(),
        "application/x-protobuf",
        None,
        protobuf(&request(1, 1)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(rx.recv().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_body_without_content_length_is_capped_while_streaming() {
    let (h, _rx) = collecting(json!({
        "http": {"endpoint": "127.0.0.1:0", "max_request_body_size": 1000}
    }))
    .await;
    // A streamed (chunked) body in several frames, no Content-Length.
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = (0..10)
        .map(|_| Ok(http_body::Frame::data(Bytes::from(vec![b' '; 300]))))
        .collect();
    let body = http_body_util::StreamBody::new(futures::stream::iter(chunks));
    let client: Client<HttpConnector, _> = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::post(format!("http://{}/v1/traces", h.http()))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn refused_batches_get_503_with_retry_after_and_rejected_get_the_collectors_status() {
    let pb = protobuf(&request(2, 9));
    for (retry_after, header) in [(None, "5"), (Some(Duration::from_millis(1500)), "2")] {
        let h = start(
            json!({"http": {"endpoint": "127.0.0.1:0"}}),
            Arc::new(Refuse(retry_after)),
        )
        .await;
        let answer = post_traces(h.http(), "application/x-protobuf", pb.clone()).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.headers[http::header::RETRY_AFTER], header);
        let status = RpcStatus::decode(answer.body.clone()).unwrap();
        assert_eq!(status.code, Code::Unavailable as i32);
        assert_eq!(status.message, "memory limit reached");
        assert_eq!(
            status.details[0].type_url,
            "type.googleapis.com/google.rpc.RetryInfo"
        );

        let answer = post_traces(h.http(), "application/json", json_body(&request(1, 1))).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.rpc_status().0, Code::Unavailable as i32);
    }

    // A permanent failure with no backend status is the server's own
    // (500, INTERNAL); a backend's code is passed on, with the collector's
    // HTTP status for it.
    for (backend, code, status) in [
        (None, Code::Internal, StatusCode::INTERNAL_SERVER_ERROR),
        (
            Some(Code::InvalidArgument),
            Code::InvalidArgument,
            StatusCode::BAD_REQUEST,
        ),
        (
            Some(Code::PermissionDenied),
            Code::PermissionDenied,
            StatusCode::FORBIDDEN,
        ),
        (
            Some(Code::Unauthenticated),
            Code::Unauthenticated,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Some(Code::Unimplemented),
            Code::Unimplemented,
            StatusCode::NOT_FOUND,
        ),
        (
            Some(Code::ResourceExhausted),
            Code::ResourceExhausted,
            StatusCode::TOO_MANY_REQUESTS,
        ),
        (
            Some(Code::Unknown),
            Code::Unknown,
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
    ] {
        let h = start(
            json!({"http": {"endpoint": "127.0.0.1:0"}}),
            Arc::new(Reject(backend)),
        )
        .await;
        let answer = post_traces(h.http(), "application/x-protobuf", pb.clone()).await;
        assert_eq!(answer.status, status, "{backend:?}");
        assert!(answer.headers.get(http::header::RETRY_AFTER).is_none());
        assert_eq!(
            answer.rpc_status(),
            (code as i32, "span too old".to_string())
        );
        let answer = post_traces(h.http(), "application/json", json_body(&request(1, 1))).await;
        assert_eq!(answer.status, status, "{backend:?}");
        assert_eq!(answer.rpc_status().0, code as i32);
    }
}

#[tokio::test]
async fn an_empty_request_is_accepted_without_reaching_the_pipeline() {
    // Refusing consumer: if the empty batch reached it, the answer would be 503.
    let h = start(both(), Arc::new(Refuse(None))).await;
    let empty = protobuf(&ExportTraceServiceRequest::default());
    let answer = post_traces(h.http(), "application/x-protobuf", empty.clone()).await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = post_traces(h.http(), "application/json", "{}").await;
    assert_eq!(answer.status, StatusCode::OK);
    grpc_export(h.grpc(), empty).await.unwrap();
}

#[tokio::test]
async fn traces_url_path_is_configurable() {
    let (h, mut rx) = collecting(json!({
        "http": {"endpoint": "127.0.0.1:0", "traces_url_path": "ingest/traces"}
    }))
    .await;
    let pb = protobuf(&request(1, 5));
    let client = http_client();
    let answer = send_traces(
        &client,
        h.http(),
        "application/x-protobuf",
        None,
        pb.clone(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let answer = send(
        &client,
        post(
            h.http(),
            "/ingest/traces",
            Some("application/x-protobuf"),
            None,
            pb,
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(rx.recv().await.unwrap().len(), 1);
}

#[tokio::test]
async fn cors_preflight_and_actual_requests() {
    let (h, _rx) = collecting(json!({"http": {
        "endpoint": "127.0.0.1:0",
        "cors": {"allowed_origins": ["https://*.example.com"], "max_age": 600}
    }}))
    .await;
    let client = http_client();
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri(format!("http://{}/v1/traces", h.http()))
            .header(http::header::ORIGIN, origin)
            .header(http::header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(http::header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let allowed = send(&client, preflight("https://app.example.com")).await;
    assert_eq!(allowed.status, StatusCode::NO_CONTENT);
    let hdr = |a: &Answer, name: http::header::HeaderName| {
        a.headers.get(name).map(|v| v.to_str().unwrap().to_string())
    };
    use http::header::*;
    assert_eq!(
        hdr(&allowed, ACCESS_CONTROL_ALLOW_ORIGIN).as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        hdr(&allowed, ACCESS_CONTROL_ALLOW_METHODS).as_deref(),
        Some("POST")
    );
    assert_eq!(
        hdr(&allowed, ACCESS_CONTROL_ALLOW_HEADERS).as_deref(),
        Some("content-type")
    );
    assert_eq!(
        hdr(&allowed, ACCESS_CONTROL_MAX_AGE).as_deref(),
        Some("600")
    );

    let denied = send(&client, preflight("https://evil.test")).await;
    assert_eq!(denied.status, StatusCode::NO_CONTENT);
    assert_eq!(hdr(&denied, ACCESS_CONTROL_ALLOW_ORIGIN), None);

    let mut request = post(
        h.http(),
        "/v1/traces",
        Some("application/x-protobuf"),
        None,
        protobuf(&request(1, 1)),
    );
    request
        .headers_mut()
        .insert(ORIGIN, "https://app.example.com".parse().unwrap());
    let actual = send(&client, request).await;
    assert_eq!(actual.status, StatusCode::OK);
    assert_eq!(
        hdr(&actual, ACCESS_CONTROL_ALLOW_ORIGIN).as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        hdr(&actual, ACCESS_CONTROL_ALLOW_CREDENTIALS).as_deref(),
        Some("true")
    );
    assert_eq!(hdr(&actual, VARY).as_deref(), Some("Origin"));

    // Without CORS configured, a preflight is just a wrong method.
    let (plain, _rx) = collecting(json!({"http": {"endpoint": "127.0.0.1:0"}})).await;
    let request = Request::builder()
        .method(Method::OPTIONS)
        .uri(format!("http://{}/v1/traces", plain.http()))
        .header(ORIGIN, "https://app.example.com")
        .header(ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        send(&client, request).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn grpc_plain_and_compressed_exports_arrive() {
    let (h, mut rx) = collecting(json!({"grpc": {"endpoint": "127.0.0.1:0"}})).await;
    let sent = request(4, 0x33);
    let ch = channel(h.grpc()).await;
    for compression in [
        None,
        Some(CompressionEncoding::Gzip),
        Some(CompressionEncoding::Zstd),
    ] {
        let response = grpc_call(ch.clone(), TRACE_EXPORT_PATH, protobuf(&sent), compression)
            .await
            .unwrap();
        assert!(response.is_empty(), "an empty ExportTraceServiceResponse");
        let batch = rx.recv().await.unwrap();
        assert_eq!(
            ExportTraceServiceRequest::decode(batch.bytes().clone()).unwrap(),
            sent,
            "{compression:?}"
        );
    }
}

/// Two requests, each its own gzip member, in one body: a valid request
/// (their concatenation), which Go's readers take whole.
fn two_member_gzip_body() -> (ExportTraceServiceRequest, Vec<u8>) {
    let (a, b) = (request(3, 0x41), request(2, 0x42));
    let mut both = a.clone();
    both.resource_spans.extend(b.resource_spans.clone());
    let mut body = gzip(&protobuf(&a));
    body.extend(gzip(&protobuf(&b)));
    (both, body)
}

#[tokio::test]
async fn multi_member_gzip_is_read_whole_over_grpc_and_http() {
    let (h, mut rx) = collecting(json!({
        "grpc": {"endpoint": "127.0.0.1:0"},
        "http": {"endpoint": "127.0.0.1:0"}
    }))
    .await;
    let (sent, body) = two_member_gzip_body();
    let (code, message) = raw_grpc(h.grpc(), "gzip", &body).await;
    assert_eq!(code, Code::Ok, "{message}");
    let batch = rx.recv().await.unwrap();
    assert_eq!(
        ExportTraceServiceRequest::decode(batch.bytes().clone()).unwrap(),
        sent
    );
    // Both members are remembered, where their data lies, for the
    // exporter to send on as they came.
    let members = batch.gzip_members();
    assert_eq!(members.len(), 2);
    assert_eq!(members[0].at, 0);
    assert_eq!(members[1].at, members[0].member.len());
    assert_eq!(members[1].at + members[1].member.len(), batch.encoded_len());

    let client = http_client();
    let answer = send_traces(
        &client,
        h.http(),
        "application/x-protobuf",
        Some("gzip"),
        body,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let batch = rx.recv().await.unwrap();
    assert_eq!(
        ExportTraceServiceRequest::decode(batch.bytes().clone()).unwrap(),
        sent
    );
    // OTLP/HTTP protobuf keeps them too.
    let members = batch.gzip_members();
    assert_eq!(members.len(), 2);
    assert_eq!(members[0].at, 0);
    assert_eq!(members[1].at, members[0].member.len());
    assert_eq!(members[1].at + members[1].member.len(), batch.encoded_len());
    // JSON is re-encoded: no member describes its bytes.
    let json = json_body(&sent);
    let answer = send_traces(
        &client,
        h.http(),
        "application/json",
        Some("gzip"),
        gzip(&json),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let batch = rx.recv().await.unwrap();
    assert_eq!(batch.len(), 5);
    assert!(batch.gzip_members().is_empty());
}

/// A request of about 1.5 MiB whose attribute values are random hex, so
/// that gzip leaves well over 256 KiB of it.
fn large_request() -> ExportTraceServiceRequest {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut random_hex = |len: usize| -> String {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from_digit((state % 16) as u32, 16).unwrap()
            })
            .collect()
    };
    let mut sent = request(200, 0x44);
    for span in &mut sent.resource_spans[0].scope_spans[0].spans {
        span.attributes.push(kv("payload", &random_hex(7_000)));
    }
    sent
}

#[tokio::test]
async fn large_bodies_decoded_off_the_workers_arrive_whole() {
    let (h, mut rx) = collecting(both()).await;
    let sent = large_request();
    let body = protobuf(&sent);
    assert!(body.len() > MIB, "{} bytes", body.len());
    let gzipped = crate::compression::test_encoders::gzip(&body);
    assert!(
        gzipped.len() > 256 * 1024,
        "{} bytes gzipped",
        gzipped.len()
    );
    let json = json_body(&sent);
    let js = post_traces(h.http(), "application/json", json).await;
    assert_eq!(js.status, StatusCode::OK, "{}", js.text());
    let gz = post(
        h.http(),
        "/v1/traces",
        Some("application/x-protobuf"),
        Some("gzip"),
        gzipped,
    );
    let gz = send(&http_client(), gz).await;
    assert_eq!(gz.status, StatusCode::OK, "{}", gz.text());
    let ch = channel(h.grpc()).await;
    for compression in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        grpc_call(
            ch.clone(),
            TRACE_EXPORT_PATH,
            body.clone(),
            Some(compression),
        )
        .await
        .unwrap();
    }
    for via in ["http json", "http gzip", "grpc gzip", "grpc zstd"] {
        let batch = rx.recv().await.unwrap();
        let received = ExportTraceServiceRequest::decode(batch.bytes().clone()).unwrap();
        assert!(received == sent, "{via}: not the spans sent");
    }
}

#[tokio::test]
async fn the_generated_otlp_client_is_served() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let (h, mut rx) = collecting(json!({"grpc": {"endpoint": "127.0.0.1:0"}})).await;
    let mut client =
        TraceServiceClient::new(channel(h.grpc()).await).send_compressed(CompressionEncoding::Gzip);
    let sent = request(2, 0x44);
    let response = client.export(sent.clone()).await.unwrap().into_inner();
    assert_eq!(response.partial_success, None);
    let batch = rx.recv().await.unwrap();
    assert_eq!(
        ExportTraceServiceRequest::decode(batch.bytes().clone()).unwrap(),
        sent
    );
}

#[tokio::test]
async fn grpc_errors_get_their_codes_and_the_server_keeps_serving() {
    let (h, mut rx) = collecting(json!({"grpc": {"endpoint": "127.0.0.1:0"}})).await;
    let ch = channel(h.grpc()).await;

    let err = grpc_call(
        ch.clone(),
        TRACE_EXPORT_PATH,
        Bytes::from_static(b"\x0a\x64\x01"),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("malformed protobuf"),
        "{}",
        err.message()
    );

    // 4 MiB + 1 uncompressed: refused on the frame header.
    let too_big = Bytes::from(vec![0u8; 4 * MIB + 1]);
    let err = grpc_call(ch.clone(), TRACE_EXPORT_PATH, too_big, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());

    for path in [
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        "/opentelemetry.proto.collector.trace.v1.TraceService/Other",
    ] {
        let err = grpc_call(ch.clone(), path, Bytes::new(), None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented, "{path}");
    }

    // Unsupported grpc-encoding: tonic answers UNIMPLEMENTED, like grpc-go.
    let (code, _) = raw_grpc(h.grpc(), "snappy", b"whatever").await;
    assert_eq!(code, Code::Unimplemented);

    assert!(rx.try_recv().is_err());
    grpc_call(ch, TRACE_EXPORT_PATH, protobuf(&request(1, 1)), None)
        .await
        .unwrap();
    assert_eq!(rx.recv().await.unwrap().len(), 1);
}

#[tokio::test]
async fn grpc_refusals_are_unavailable_with_retry_info() {
    let h = start(
        json!({"grpc": {"endpoint": "127.0.0.1:0"}}),
        Arc::new(Refuse(Some(Duration::from_secs(7)))),
    )
    .await;
    let err = grpc_export(h.grpc(), protobuf(&request(1, 1)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(err.message(), "memory limit reached");
    let details = RpcStatus::decode(err.details()).unwrap();
    let retry = RetryInfo::decode(&details.details[0].value[..]).unwrap();
    assert_eq!(retry.retry_delay.unwrap().seconds, 7);

    for (backend, code) in [
        (None, Code::Internal),
        (Some(Code::InvalidArgument), Code::InvalidArgument),
        (Some(Code::PermissionDenied), Code::PermissionDenied),
    ] {
        let h = start(
            json!({"grpc": {"endpoint": "127.0.0.1:0"}}),
            Arc::new(Reject(backend)),
        )
        .await;
        let err = grpc_export(h.grpc(), protobuf(&request(1, 1)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{backend:?}");
        assert_eq!(err.message(), "span too old");
    }
}

#[test]
fn bomb_builders_make_valid_streams() {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&gzip_bomb(4 * MIB)[..])
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out.len(), 4 * MIB);
    assert!(out.iter().all(|b| *b == 0));
    let out = zstd::stream::decode_all(&zstd_bomb(3 * MIB)[..]).unwrap();
    assert_eq!(out.len(), 3 * MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_bombs_are_refused_without_growing_past_the_cap() {
    let (h, mut rx) = collecting(both()).await;
    let gzip = gzip_bomb(1 << 30);
    let zstd = zstd_bomb(1 << 30);
    // 64 MiB of zeros each, over three times the 20 MiB cap: snappy's
    // ratio is far lower, so its bombs are larger as sent, still under the
    // cap.
    let zeros = vec![0u8; 64 * MIB];
    let snappy_block_bomb = snappy_block(&zeros);
    let snappy_framed_bomb = snappy_framed(&zeros);
    let lz4_bomb = lz4(&zeros);
    drop(zeros);
    for bomb in [&snappy_block_bomb, &snappy_framed_bomb, &lz4_bomb] {
        assert!(bomb.len() < 20 * MIB, "{}", bomb.len());
    }
    // Small enough to pass the 4 MiB gRPC frame check as sent.
    assert!(gzip.len() < 2 * MIB, "{}", gzip.len());
    assert!(zstd.len() < 2 * MIB, "{}", zstd.len());
    // Start the peak-RSS window here (Linux: 5 resets VmHWM).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = peak_rss_kib();

    let client = http_client();
    for (encoding, body) in [("gzip", &gzip), ("zstd", &zstd)] {
        let answer = send_traces(
            &client,
            h.http(),
            "application/x-protobuf",
            Some(encoding),
            body.clone(),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "http {encoding}");
        assert_eq!(answer.rpc_status().0, Code::InvalidArgument as i32);

        let (code, message) = raw_grpc(h.grpc(), encoding, body).await;
        assert_eq!(code, Code::ResourceExhausted, "grpc {encoding}: {message}");
    }
    for (encoding, body) in [
        ("snappy", &snappy_block_bomb),
        ("snappy", &snappy_framed_bomb),
        ("x-snappy-framed", &snappy_framed_bomb),
        ("lz4", &lz4_bomb),
    ] {
        let answer = send_traces(
            &client,
            h.http(),
            "application/x-protobuf",
            Some(encoding),
            body.clone(),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "http {encoding}");
        let (code, message) = answer.rpc_status();
        assert_eq!(code, Code::InvalidArgument as i32);
        assert!(message.contains("exceeds"), "{encoding}: {message}");
    }

    // 1 GiB inflated would show here; the caps are 20 MiB (HTTP) and 4 MiB
    // (gRPC), and other tests share the process.
    let grown_mib = peak_rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 200, "peak RSS grew by {grown_mib} MiB");

    assert!(rx.try_recv().is_err());
    assert_eq!(
        post_traces(h.http(), "application/x-protobuf", protobuf(&request(1, 1)))
            .await
            .status,
        StatusCode::OK
    );
    grpc_export(h.grpc(), protobuf(&request(1, 1)))
        .await
        .unwrap();
}

// --------------------------------------------------------------------- TLS

struct Pki {
    _dir: tempfile::TempDir,
    ca_pem: String,
    ca_file: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert_pem: String,
    client_key_pem: String,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key_pem) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
    let (client_cert_pem, client_key_pem) = leaf(vec!["client".into()]);

    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        ca_file: write("ca.pem", &ca_cert.pem()),
        server_cert: write("server.pem", &server_pem),
        server_key: write("server.key", &server_key_pem),
        ca_pem: ca_cert.pem(),
        client_cert_pem,
        client_key_pem,
        _dir: dir,
    }
}

fn rustls_client(pki: &Pki, with_client_cert: bool) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pki.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    if with_client_cert {
        let chain = rustls_pemfile::certs(&mut pki.client_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut pki.client_key_pem.as_bytes())
            .unwrap()
            .unwrap();
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    }
}

async fn https_post(
    config: rustls::ClientConfig,
    addr: SocketAddr,
    body: Bytes,
) -> Result<StatusCode, hyper_util::client::legacy::Error> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let request = Request::post(format!("https://127.0.0.1:{}/v1/traces", addr.port()))
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(body))
        .unwrap();
    client.request(request).await.map(|r| r.status())
}

#[tokio::test]
async fn tls_on_both_protocols_with_a_self_signed_ca() {
    let pki = pki();
    let tls = json!({"cert_file": pki.server_cert, "key_file": pki.server_key});
    let (h, mut rx) = collecting(json!({
        "grpc": {"endpoint": "127.0.0.1:0", "tls": tls},
        "http": {"endpoint": "127.0.0.1:0", "tls": tls}
    }))
    .await;
    let sent = request(2, 0x55);

    let status = https_post(rustls_client(&pki, false), h.http(), protobuf(&sent))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rx.recv().await.unwrap().len(), 2);

    let tls_client = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    let ch = Channel::from_shared(format!("https://127.0.0.1:{}", h.grpc().port()))
        .unwrap()
        .tls_config(tls_client)
        .unwrap()
        .connect()
        .await
        .unwrap();
    grpc_call(
        ch,
        TRACE_EXPORT_PATH,
        protobuf(&sent),
        Some(CompressionEncoding::Gzip),
    )
    .await
    .unwrap();
    assert_eq!(rx.recv().await.unwrap().len(), 2);

    // Plaintext to a TLS port gets no answer.
    assert!(http_client()
        .request(post(
            h.http(),
            "/v1/traces",
            Some("application/x-protobuf"),
            None,
            protobuf(&sent)
        ))
        .await
        .is_err());
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_signed_by_the_client_ca() {
    let pki = pki();
    let (h, mut rx) = collecting(json!({"http": {
        "endpoint": "127.0.0.1:0",
        "tls": {
            "cert_file": pki.server_cert,
            "key_file": pki.server_key,
            "client_ca_file": pki.ca_file
        }
    }}))
    .await;
    let body = protobuf(&request(1, 1));
    assert!(
        https_post(rustls_client(&pki, false), h.http(), body.clone())
            .await
            .is_err()
    );
    let status = https_post(rustls_client(&pki, true), h.http(), body)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rx.recv().await.unwrap().len(), 1);
}

// --------------------------------------------------------------- lifecycle

#[tokio::test]
async fn both_protocols_report_their_bound_addresses() {
    let (h, _rx) = collecting(both()).await;
    let addresses = h.running.as_ref().unwrap().addresses().to_vec();
    assert_eq!(addresses.len(), 2);
    assert_eq!(addresses[0].0, "grpc");
    assert_eq!(addresses[1].0, "http");
    assert!(addresses
        .iter()
        .all(|(_, a)| a.port() != 0 && a.ip().is_loopback()));
    assert_ne!(addresses[0].1, addresses[1].1);
}

#[tokio::test]
async fn a_port_in_use_is_a_startup_error_naming_receiver_and_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = taken.local_addr().unwrap().to_string();
    let (tx, _rx) = mpsc::unbounded_channel();
    let err = try_start(
        json!({"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": endpoint}}),
        Arc::new(Collect(tx)),
    )
    .await
    .err()
    .expect("the port is taken");
    assert!(
        matches!(
            err,
            StartError::Bind {
                protocol: "http",
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("otlp/test"), "{message}");
    assert!(message.contains(&endpoint), "{message}");
}

#[tokio::test]
async fn missing_tls_files_are_a_startup_error() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let err = try_start(
        json!({"grpc": {"endpoint": "127.0.0.1:0", "tls": {
            "cert_file": "/nonexistent/cert.pem", "key_file": "/nonexistent/key.pem"
        }}}),
        Arc::new(Collect(tx)),
    )
    .await
    .err()
    .expect("no such file");
    assert!(
        matches!(
            err,
            StartError::Tls {
                protocol: "grpc",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("/nonexistent/cert.pem"));
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_then_stops_accepting() {
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let open = Arc::new(Semaphore::new(0));
    let mut h = start(
        both(),
        Arc::new(Gate {
            arrived: arrived_tx,
            open: open.clone(),
        }),
    )
    .await;
    let (grpc_addr, http_addr) = (h.grpc(), h.http());

    let http_request = tokio::spawn(post_traces(
        http_addr,
        "application/x-protobuf",
        protobuf(&request(1, 1)),
    ));
    let grpc_request = tokio::spawn(grpc_export(grpc_addr, protobuf(&request(1, 2))));
    arrived.recv().await.unwrap();
    arrived.recv().await.unwrap();

    h.shutdown.cancel();
    let mut stopped = tokio::spawn(h.running.take().unwrap().stopped());
    // Both requests are still inside the pipeline, so the servers wait.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut stopped)
            .await
            .is_err()
    );

    open.add_permits(2);
    assert_eq!(http_request.await.unwrap().status, StatusCode::OK);
    grpc_request.await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("stopped after in-flight requests")
        .unwrap();

    for addr in [grpc_addr, http_addr] {
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "{addr} still accepts"
        );
    }
}

#[tokio::test]
async fn counters_describe_what_happened() {
    use super::counters::TransportCounters;
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let counters = metrics::with_local_recorder(&recorder, || {
        TransportCounters::register("otlp/counted", "http", super::counters::OTLP_REASONS)
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    let receiver = crate::receiver::http_ingest::HttpService::new(
        super::http::HttpReceiver {
            next: Arc::new(Collect(tx)),
            indexing: tracegate_model::Indexing::Eager,
            counters,
            traces_path: "/v1/traces".into(),
            max_body_size: 1 << 20,
            encodings: vec![crate::compression::ContentEncoding::Identity],
            cors: None,
        },
        None,
    );
    let listener = crate::receiver::listener::bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let _cancel = shutdown.clone().drop_guard();
    let tasks = tokio_util::task::TaskTracker::new();
    crate::receiver::listener::spawn_accept_loop(
        listener,
        crate::receiver::listener::ConnectionSettings::new(
            crate::receiver::listener::hyper_builder(),
            None,
        ),
        receiver,
        shutdown,
        &tasks,
    );

    assert_eq!(
        post_traces(addr, "application/x-protobuf", protobuf(&request(3, 1)))
            .await
            .status,
        StatusCode::OK
    );
    rx.recv().await.unwrap();
    post_traces(addr, "application/x-protobuf", &b"\xff"[..]).await;
    post_traces(addr, "text/plain", "x").await;

    let text = handle.render();
    let value = |name: &str, labels: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l.contains(labels))
            .and_then(|l| l.rsplit(' ').next())
            .map(|v| v.to_string())
    };
    assert_eq!(
        value("receiver_accepted_spans", "receiver=\"otlp/counted\"").as_deref(),
        Some("3"),
        "{text}"
    );
    assert_eq!(
        value("receiver_rejected_requests", "reason=\"malformed\"").as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        value(
            "receiver_rejected_requests",
            "reason=\"unsupported_media_type\""
        )
        .as_deref(),
        Some("1"),
        "{text}"
    );
}

/// One raw HTTP/2 connection; the returned task ends when the server
/// closes the connection.
async fn h2_connection(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    (
        sender,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    )
}

fn framed_export(message: &[u8]) -> Request<Full<Bytes>> {
    let mut framed = vec![0];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    Request::post(format!("http://tracegate{TRACE_EXPORT_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(framed)))
        .unwrap()
}

#[tokio::test]
async fn idle_grpc_connections_are_closed_after_max_connection_idle() {
    let (h, mut rx) = collecting(json!({"grpc": {
        "endpoint": "127.0.0.1:0",
        "keepalive": {"server_parameters": {"max_connection_idle": "200ms"}}
    }}))
    .await;
    let (mut sender, closed) = h2_connection(h.grpc()).await;
    let response = sender
        .send_request(framed_export(&protobuf(&request(1, 1))))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.unwrap();
    assert_eq!(rx.recv().await.unwrap().len(), 1);
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("the idle connection is closed")
        .unwrap();
}

#[tokio::test]
async fn max_connection_age_closes_connections_and_its_grace_ends_stuck_requests() {
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let open = Arc::new(Semaphore::new(0));
    let h = start(
        json!({"grpc": {
            "endpoint": "127.0.0.1:0",
            "keepalive": {"server_parameters": {
                "max_connection_age": "100ms",
                "max_connection_age_grace": "200ms"
            }}
        }}),
        Arc::new(Gate {
            arrived: arrived_tx,
            open,
        }),
    )
    .await;
    let (mut sender, closed) = h2_connection(h.grpc()).await;
    // A request the pipeline never answers: only the grace period ends it.
    let stuck = tokio::spawn(sender.send_request(framed_export(&protobuf(&request(1, 1)))));
    arrived.recv().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("the aged connection is closed after its grace period")
        .unwrap();
    assert!(
        stuck.await.unwrap().is_err(),
        "the stuck request was cut off"
    );
}

// ------------------------------------------------------ connection keys

/// Sends `raw` on a fresh connection and reads until the server closes it
/// or `wait` passes; what arrived, and whether the server closed.
async fn raw_exchange(addr: SocketAddr, raw: &[u8], wait: Duration) -> (String, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(wait, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

fn raw_post(body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

#[tokio::test]
async fn response_headers_are_added_unless_the_answer_sets_them() {
    let (h, mut rx) = collecting(json!({"http": {
        "endpoint": "127.0.0.1:0",
        "response_headers": {"X-Served-By": "tracegate", "Content-Type": "text/html"}
    }}))
    .await;
    let answer = post_traces(h.http(), "application/x-protobuf", protobuf(&request(1, 1))).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["x-served-by"], "tracegate");
    // The receiver's own Content-Type wins, as the collector's handler
    // overwrites what was set before it.
    assert_eq!(answer.content_type(), "application/x-protobuf");
    rx.recv().await.unwrap();
    // Error answers carry them too.
    let client = http_client();
    let answer = send(&client, post(h.http(), "/nope", None, None, "")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.headers["x-served-by"], "tracegate");

    // The collector's list form.
    let (h, _rx) = collecting(json!({"http": {
        "endpoint": "127.0.0.1:0",
        "response_headers": [{"name": "X-A", "value": "1"}, {"name": "X-B", "value": "2"}]
    }}))
    .await;
    let answer = send(&client, post(h.http(), "/nope", None, None, "")).await;
    assert_eq!(answer.headers["x-a"], "1");
    assert_eq!(answer.headers["x-b"], "2");
}

#[tokio::test]
async fn keep_alives_enabled_false_closes_each_connection_after_one_answer() {
    let body = protobuf(&request(1, 2));
    let (h, mut rx) = collecting(json!({"http": {"endpoint": "127.0.0.1:0"}})).await;
    // Default: the connection stays open after the answer.
    let (text, closed) = raw_exchange(h.http(), &raw_post(&body), Duration::from_millis(300)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!closed, "kept alive by default");
    rx.recv().await.unwrap();

    let (h, mut rx) = collecting(json!({"http": {
        "endpoint": "127.0.0.1:0", "keep_alives_enabled": false
    }}))
    .await;
    let (text, closed) = raw_exchange(h.http(), &raw_post(&body), Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(closed, "closed after one answer");
    rx.recv().await.unwrap();
}

#[tokio::test]
async fn idle_timeout_closes_idle_connections() {
    let (h, mut rx) = collecting(json!({"http": {
        "endpoint": "127.0.0.1:0", "idle_timeout": "200ms"
    }}))
    .await;
    let started = std::time::Instant::now();
    let (text, closed) = raw_exchange(
        h.http(),
        &raw_post(&protobuf(&request(1, 3))),
        Duration::from_secs(5),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(closed, "an idle connection is closed");
    assert!(started.elapsed() >= Duration::from_millis(200));
    rx.recv().await.unwrap();
}

#[tokio::test]
async fn read_header_timeout_closes_connections_that_send_headers_slowly() {
    let (h, _rx) = collecting(json!({"http": {
        "endpoint": "127.0.0.1:0", "read_header_timeout": "200ms"
    }}))
    .await;
    let started = std::time::Instant::now();
    let (_, closed) = raw_exchange(
        h.http(),
        b"POST /v1/traces HTTP/1.1\r\nhost: x\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(closed, "an incomplete header is not waited for");
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[test]
fn invalid_response_headers_are_config_errors() {
    for (headers, message) in [
        (json!({"bad name": "x"}), "not a valid HTTP header name"),
        (
            json!({"X-A": "line\nbreak"}),
            "not a valid HTTP header value",
        ),
        (
            json!([{"name": "X-A", "value": "1"}, {"name": "x-a", "value": "2"}]),
            "listed twice",
        ),
    ] {
        let config = otlp_config(json!({"http": {"response_headers": headers}}));
        let err = config.validate().unwrap_err();
        assert_eq!(err.path, "protocols.http.response_headers", "{err}");
        assert!(err.message.contains(message), "{err}");
    }
}

/// With `auth`, every request is checked before anything else, as the
/// collector's confighttp does (an unknown path too); the refusal is a
/// Status in the request's encoding, JSON without a `Content-Type`, and
/// the collector's 500 for any other media type; a CORS preflight needs
/// no credentials; `request_params` take a query parameter as the header.
#[tokio::test]
async fn http_auth_answers_as_the_collector_and_lets_preflights_through() {
    use crate::auth::{bearer, Authenticator, Authenticators};
    use crate::extension::BuildExtension;
    let shutdown = CancellationToken::new();
    let _cancel = shutdown.clone().drop_guard();
    let bearer: bearer::Config = crate::config::from_value(json!({"token": "s3cret"})).unwrap();
    let started = bearer
        .start("bearertokenauth", &crate::context::BuildContext::default())
        .await
        .unwrap();
    let auth: Authenticator = started.authenticator.unwrap();
    let ctx = crate::context::BuildContext {
        shutdown: shutdown.clone(),
        authenticators: Authenticators::new([("bearertokenauth".to_string(), auth)]),
        ..Default::default()
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let running = otlp_config(json!({"http": {
        "endpoint": "127.0.0.1:0",
        "cors": {"allowed_origins": ["https://app.example.com"]},
        "auth": {"authenticator": "bearertokenauth", "request_params": ["authorization"]},
    }}))
    .start("otlp/auth", Arc::new(Collect(tx)), ctx)
    .await
    .unwrap();
    let addr = running.addresses()[0].1;
    let client = http_client();
    let body = protobuf(&request(1, 1));

    let unknown_type = send_traces(&client, addr, "text/plain", None, body.clone()).await;
    assert_eq!(unknown_type.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        &unknown_type.body[..],
        br#"{"code": 13, "message": "failed to marshal error message"}"#
    );
    let untyped = send(&client, post(addr, "/v1/traces", None, None, body.clone())).await;
    assert_eq!(untyped.status, StatusCode::UNAUTHORIZED);
    assert_eq!(untyped.content_type(), "application/json");
    let elsewhere = send_traces(&client, addr, "application/json", None, "{}").await;
    assert_eq!(elsewhere.status, StatusCode::UNAUTHORIZED);
    let not_found = send(
        &client,
        post(addr, "/v1/metrics", Some("application/json"), None, "{}"),
    )
    .await;
    assert_eq!(
        not_found.status,
        StatusCode::UNAUTHORIZED,
        "auth comes first"
    );

    let preflight = Request::builder()
        .method(Method::OPTIONS)
        .uri(format!("http://{addr}/v1/traces"))
        .header(http::header::ORIGIN, "https://app.example.com")
        .header(http::header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        send(&client, preflight).await.status,
        StatusCode::NO_CONTENT
    );
    let mut refused = post(
        addr,
        "/v1/traces",
        Some("application/x-protobuf"),
        None,
        body.clone(),
    );
    refused.headers_mut().insert(
        http::header::ORIGIN,
        "https://app.example.com".parse().unwrap(),
    );
    let refused = send(&client, refused).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.headers[http::header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.com",
        "a browser can read the refusal"
    );
    let status = RpcStatus::decode(refused.body).unwrap();
    assert_eq!(status.code, Code::Unauthenticated as i32);
    assert!(
        rx.try_recv().is_err(),
        "nothing refused reached the pipeline"
    );

    let by_param = send(
        &client,
        post(
            addr,
            "/v1/traces?authorization=Bearer%20s3cret",
            Some("application/x-protobuf"),
            None,
            body,
        ),
    )
    .await;
    assert_eq!(by_param.status, StatusCode::OK);
    assert_eq!(rx.recv().await.unwrap().len(), 1);
}

/// A pipeline that reads no spans gets batches that are validated and
/// counted but indexed only on first use, on both protocols; the index is
/// then the eager one, and bad input gets the same answer either way.
#[tokio::test]
async fn a_pipeline_that_reads_no_spans_gets_batches_indexed_on_first_use() {
    use crate::receiver::test_support::CollectSaying;
    let sent = request(3, 0x5a);
    let bytes = Bytes::from(sent.encode_to_vec());
    let eager = SpanBatch::scan(bytes.clone()).unwrap();
    let malformed = Bytes::from_static(b"\x0a\x05\x12\x03\x12\x01\xff");
    let mut answers = Vec::new();
    for reads_spans in [false, true] {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let next = Arc::new(CollectSaying {
            batches: tx,
            reads_spans,
        });
        let h = start(both(), next).await;
        grpc_export(h.grpc(), bytes.clone()).await.unwrap();
        let answer = post_traces(h.http(), "application/x-protobuf", bytes.clone()).await;
        assert_eq!(answer.status, StatusCode::OK);
        for _ in 0..2 {
            let batch = rx.recv().await.unwrap();
            assert_eq!(batch.is_indexed(), reads_spans);
            assert_eq!(batch.len(), 3);
            assert_eq!(batch.spans(), eager.spans());
            assert_eq!(batch.scopes(), eager.scopes());
            assert_eq!(batch.resources(), eager.resources());
            assert_eq!(batch.service_name(2), Some("checkout"));
        }
        let err = grpc_export(h.grpc(), malformed.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let answer = post_traces(h.http(), "application/x-protobuf", malformed.clone()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        answers.push((err.message().to_string(), answer.rpc_status()));
        assert!(rx.try_recv().is_err(), "a malformed request was handed on");
    }
    assert!(
        answers[0].0.contains("malformed protobuf"),
        "{}",
        answers[0].0
    );
    assert_eq!(answers[0], answers[1]);
}
