//! Raw requests no SDK would send: any bytes, headers, method and path over
//! HTTP/1.1, and hand-framed gRPC over h2c, reading back status codes.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub struct HttpReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One HTTP/1.1 request to `addr`.
pub async fn http(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> HttpReply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(body.into())).unwrap())
        .await
        .expect("http request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    HttpReply {
        status,
        headers,
        body,
    }
}

pub struct GrpcReply {
    /// `grpc-status` (0 = OK).
    pub code: i32,
    pub message: String,
}

/// One unary gRPC call over h2c with `message` as the (already encoded,
/// possibly compressed) payload; `encoding` sets `grpc-encoding` and the
/// frame's compressed flag.
pub async fn grpc(
    addr: SocketAddr,
    path: &str,
    message: &[u8],
    encoding: Option<&str>,
) -> GrpcReply {
    let mut frame = Vec::with_capacity(message.len() + 5);
    frame.push(u8::from(encoding.is_some()));
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(enc) = encoding {
        req = req.header("grpc-encoding", enc);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(frame))).unwrap())
        .await
        .expect("grpc request");
    // Trailers-only responses carry the status in the headers.
    let headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.expect("grpc body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let pick = |name: &str| {
        trailers
            .get(name)
            .or_else(|| headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    GrpcReply {
        code: pick("grpc-status")
            .and_then(|s| s.parse().ok())
            .expect("grpc-status present"),
        message: pick("grpc-message").unwrap_or_default(),
    }
}

pub const TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Polls `/metrics` until every needle appears (counters settle a moment
/// after the data they count: an exporter counts a batch once its backend
/// has answered). Returns the last text; panics with it on timeout.
pub async fn wait_for_metrics(
    addr: SocketAddr,
    needles: &[&str],
    within: std::time::Duration,
) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let reply = http(addr, Method::GET, "/metrics", &[], "").await;
        let text = String::from_utf8_lossy(&reply.body).into_owned();
        let missing: Vec<&&str> = needles.iter().filter(|n| !text.contains(**n)).collect();
        if missing.is_empty() {
            return text;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("metrics lack {missing:?}:\n{text}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The sum of every series of the counter `name` in a `/metrics` text.
pub fn counter_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Waits until the gateway has taken in `spans` spans and accounted for
/// every one: acknowledged by a backend or dropped with a reason. Nothing
/// more of them can reach a backend after that, so a test can then check
/// that nothing else arrived. For pipelines with one exporter; `otelcol`
/// namespace. Returns the last text; panics with it on timeout.
pub async fn wait_until_accounted(
    addr: SocketAddr,
    spans: usize,
    within: std::time::Duration,
) -> String {
    let spans = spans as u64;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let reply = http(addr, Method::GET, "/metrics", &[], "").await;
        let text = String::from_utf8_lossy(&reply.body).into_owned();
        let accepted = counter_sum(&text, "otelcol_receiver_accepted_spans_total");
        let sent = counter_sum(&text, "otelcol_exporter_sent_spans_total");
        let dropped = counter_sum(&text, "otelcol_tracegate_dropped_spans_total");
        if accepted >= spans && sent + dropped >= accepted {
            return text;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{accepted} of {spans} spans taken in, {sent} sent and {dropped} dropped:\n{text}"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
