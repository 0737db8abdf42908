//! The counting sink: an OTLP/gRPC, OTLP/HTTP and Jaeger api_v2 gRPC
//! receiver on one port (HTTP/1.1 and HTTP/2 without TLS) that validates and
//! counts the spans it gets (OTLP with tracegate's scanner, Jaeger by
//! reading each span's ids), optionally records (trace id, span id) of
//! every span, and can be told to refuse or delay requests.

use std::collections::HashSet;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use tracegate_model::SpanBatch;

use crate::rpc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// gRPC UNAVAILABLE / HTTP 503 with Retry-After.
    Unavailable,
    /// gRPC RESOURCE_EXHAUSTED with RetryInfo / HTTP 429 with Retry-After.
    ResourceExhausted,
}

pub struct Options {
    pub listen: SocketAddr,
    pub record: Option<PathBuf>,
    pub count_traces: bool,
    pub fault: Option<Fault>,
    /// Share of requests refused with `fault`, spread evenly.
    pub fault_share: f64,
    /// The retry delay the refusals ask for.
    pub retry_after: Duration,
    /// Every request is answered this much later.
    pub delay: Option<Duration>,
    pub report_every: Duration,
}

#[derive(Default, Serialize)]
pub struct Stats {
    pub spans: u64,
    pub requests: u64,
    /// Distinct trace ids, when counted.
    pub traces: Option<u64>,
    pub refused_requests: u64,
    pub bad_requests: u64,
    pub bytes: u64,
    #[serde(rename = "final")]
    pub is_final: bool,
}

struct State {
    opts: Options,
    spans: AtomicU64,
    requests: AtomicU64,
    refused: AtomicU64,
    bad: AtomicU64,
    bytes: AtomicU64,
    seq: AtomicU64,
    traces: Option<Mutex<HashSet<u128>>>,
    record: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
}

impl State {
    fn stats(&self, is_final: bool) -> Stats {
        Stats {
            spans: self.spans.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            traces: self.traces.as_ref().map(|t| t.lock().unwrap().len() as u64),
            refused_requests: self.refused.load(Ordering::Relaxed),
            bad_requests: self.bad.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            is_final,
        }
    }

    /// Whether request number `n` is refused: exactly `fault_share` of
    /// them, evenly spaced.
    fn refuses(&self, n: u64) -> Option<Fault> {
        let share = self.opts.fault_share;
        let fault = self.opts.fault?;
        ((((n + 1) as f64) * share).floor() > ((n as f64) * share).floor()).then_some(fault)
    }

    /// Counts a request of `spans` spans; `ids` are read only when trace
    /// ids are counted or recorded.
    fn count(&self, spans: usize, bytes: usize, ids: impl Iterator<Item = SpanKey> + Clone) {
        self.spans.fetch_add(spans as u64, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        if let Some(traces) = &self.traces {
            let mut traces = traces.lock().unwrap();
            for (trace_id, _) in ids.clone() {
                traces.insert(u128::from_be_bytes(trace_id));
            }
        }
        if let Some(record) = &self.record {
            let mut record = record.lock().unwrap();
            for (trace_id, span_id) in ids {
                // Cannot fail but for a full disk; the final flush reports that.
                let _ = record.write_all(&trace_id);
                let _ = record.write_all(&span_id);
            }
        }
    }
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    let record = match &opts.record {
        Some(p) => Some(Mutex::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(p)?,
        ))),
        None => None,
    };
    let state = Arc::new(State {
        traces: (opts.count_traces || record.is_some()).then(Default::default),
        record,
        opts,
        spans: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        bad: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        seq: AtomicU64::new(0),
    });
    println!("listening {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let reporter = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut last = (u64::MAX, u64::MAX);
            loop {
                tokio::time::sleep(state.opts.report_every).await;
                let s = state.stats(false);
                if (s.spans, s.refused_requests) != last {
                    last = (s.spans, s.refused_requests);
                    // Whoever reads the stats may be gone; counting goes on.
                    let _ = writeln!(
                        std::io::stdout(),
                        "{}",
                        serde_json::to_string(&s).expect("plain struct")
                    );
                }
            }
        })
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(32 << 20)
        .max_frame_size(1 << 20)
        .max_concurrent_streams(1024);
    let builder = Arc::new(builder);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                let (state, builder) = (state.clone(), builder.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                });
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    reporter.abort();
    if let Some(r) = &state.record {
        r.lock().unwrap().flush()?;
    }
    println!("{}", serde_json::to_string(&state.stats(true))?);
    std::io::stdout().flush()?;
    Ok(())
}

/// A response body: one data frame, then optional trailers (gRPC status).
pub struct SinkBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for SinkBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

fn grpc_response(code: u32, message: &str, details: Option<String>) -> Response<SinkBody> {
    let mut status = HeaderMap::new();
    status.insert("grpc-status", HeaderValue::from(code));
    if !message.is_empty() {
        if let Ok(v) = HeaderValue::from_str(message) {
            status.insert("grpc-message", v);
        }
    }
    if let Some(d) = details.and_then(|d| HeaderValue::from_str(&d).ok()) {
        status.insert("grpc-status-details-bin", d);
    }
    if code == 0 {
        // An empty ExportTraceServiceResponse, then the status in trailers.
        let mut response = Response::new(SinkBody {
            data: Some(Bytes::from_static(&[0, 0, 0, 0, 0])),
            trailers: Some(status),
        });
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        response
    } else {
        // Trailers-only: the status travels in the headers.
        let mut response = Response::new(SinkBody {
            data: None,
            trailers: None,
        });
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers.extend(status);
        response
    }
}

fn http_response(status: StatusCode, body: &'static [u8], json: bool) -> Response<SinkBody> {
    let mut response = Response::new(SinkBody {
        data: (!body.is_empty()).then(|| Bytes::from_static(body)),
        trailers: None,
    });
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static(if json {
            "application/json"
        } else {
            "application/x-protobuf"
        }),
    );
    response
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<SinkBody>, Infallible> {
    let headers = req.headers().clone();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let grpc = content_type.starts_with("application/grpc");
    let json = content_type.starts_with("application/json");
    let jaeger = grpc && req.uri().path() == JAEGER_POST_SPANS;
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(http_response(StatusCode::BAD_REQUEST, b"", json)),
    };
    if let Some(d) = state.opts.delay {
        tokio::time::sleep(d).await;
    }
    let n = state.seq.fetch_add(1, Ordering::Relaxed);
    if let Some(fault) = state.refuses(n) {
        state.refused.fetch_add(1, Ordering::Relaxed);
        let after = state.opts.retry_after;
        return Ok(match (grpc, fault) {
            (true, Fault::Unavailable) => {
                grpc_response(rpc::UNAVAILABLE, "sink refuses (fault mode)", None)
            }
            (true, Fault::ResourceExhausted) => grpc_response(
                rpc::RESOURCE_EXHAUSTED,
                "sink refuses (fault mode)",
                Some(rpc::status_details_with_retry(
                    rpc::RESOURCE_EXHAUSTED,
                    "sink refuses (fault mode)",
                    after,
                )),
            ),
            (false, fault) => {
                let status = match fault {
                    Fault::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                    Fault::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
                };
                let mut r = http_response(status, b"", json);
                r.headers_mut().insert(
                    "retry-after",
                    HeaderValue::from(after.as_secs_f64().ceil() as u64),
                );
                r
            }
        });
    }
    let parsed = if grpc {
        let encoding = headers.get("grpc-encoding").and_then(|v| v.to_str().ok());
        grpc_message(&body, encoding).and_then(|m| {
            if jaeger {
                jaeger_span_ids(&m).map(Spans::Jaeger)
            } else {
                SpanBatch::scan(m)
                    .map(Spans::Otlp)
                    .map_err(|e| e.to_string())
            }
        })
    } else {
        let encoding = headers
            .get("content-encoding")
            .and_then(|v| v.to_str().ok());
        decompress(body.clone(), encoding)
            .and_then(|raw| {
                if json {
                    SpanBatch::from_json(&raw).map_err(|e| e.to_string())
                } else {
                    SpanBatch::scan(raw).map_err(|e| e.to_string())
                }
            })
            .map(Spans::Otlp)
    };
    Ok(match parsed {
        Ok(spans) => {
            match &spans {
                Spans::Otlp(batch) => state.count(
                    batch.len(),
                    body.len(),
                    batch.spans().iter().map(|s| (s.trace_id, s.span_id)),
                ),
                Spans::Jaeger(ids) => state.count(ids.len(), body.len(), ids.iter().copied()),
            }
            if grpc {
                grpc_response(0, "", None)
            } else if json {
                http_response(StatusCode::OK, b"{}", true)
            } else {
                http_response(StatusCode::OK, b"", false)
            }
        }
        Err(e) => {
            state.bad.fetch_add(1, Ordering::Relaxed);
            if grpc {
                grpc_response(3, &e, None)
            } else {
                http_response(StatusCode::BAD_REQUEST, b"", json)
            }
        }
    })
}

/// The spans of one request.
enum Spans {
    Otlp(SpanBatch),
    /// (trace id, span id) of each span of a Jaeger `PostSpansRequest`.
    Jaeger(Vec<SpanKey>),
}

/// (trace id, span id).
type SpanKey = ([u8; 16], [u8; 8]);

const JAEGER_POST_SPANS: &str = "/jaeger.api_v2.CollectorService/PostSpans";

/// `PostSpansRequest` with only what the sink reads: the spans' ids (prost
/// skips the other fields, checking their framing).
#[derive(Clone, PartialEq, prost::Message)]
struct PostSpansIds {
    #[prost(message, optional, tag = "1")]
    batch: Option<BatchIds>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct BatchIds {
    #[prost(message, repeated, tag = "1")]
    spans: Vec<SpanIds>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SpanIds {
    #[prost(bytes = "bytes", tag = "1")]
    trace_id: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    span_id: Bytes,
}

fn jaeger_span_ids(message: &Bytes) -> Result<Vec<SpanKey>, String> {
    let request = <PostSpansIds as prost::Message>::decode(message.clone())
        .map_err(|e| format!("PostSpansRequest: {e}"))?;
    request
        .batch
        .map(|b| b.spans)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            // Jaeger ids are fixed-size big-endian; tracegate writes them whole.
            let trace_id = s.trace_id[..].try_into();
            let span_id = s.span_id[..].try_into();
            match (trace_id, span_id) {
                (Ok(t), Ok(s)) => Ok((t, s)),
                _ => Err(format!(
                    "span with a trace id of {} bytes and a span id of {}",
                    s.trace_id.len(),
                    s.span_id.len()
                )),
            }
        })
        .collect()
}

/// The one message of a unary gRPC request body, decompressed.
pub(crate) fn grpc_message(body: &Bytes, encoding: Option<&str>) -> Result<Bytes, String> {
    if body.len() < 5 {
        return Err("short gRPC message".into());
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() != 5 + len {
        return Err(format!("gRPC message length {len}, body {}", body.len()));
    }
    let message = body.slice(5..);
    match body[0] {
        0 => Ok(message),
        1 => decompress(message, encoding),
        f => Err(format!("gRPC compressed flag {f}")),
    }
}

pub(crate) fn decompress(raw: Bytes, encoding: Option<&str>) -> Result<Bytes, String> {
    let mut out = Vec::new();
    match encoding {
        None | Some("identity") => return Ok(raw),
        Some("gzip") => flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| e.to_string())?,
        Some("zstd") => zstd::stream::read::Decoder::new(&raw[..])
            .and_then(|mut d| d.read_to_end(&mut out))
            .map_err(|e| e.to_string())?,
        Some(other) => return Err(format!("unsupported encoding {other}")),
    };
    Ok(Bytes::from(out))
}
