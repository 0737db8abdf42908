//! The memory limiter in the real binary: with a small limit and a backend
//! that holds every export, a flood of data makes tracegate refuse with
//! retryable answers while its memory stays under the hard limit, and once
//! the backend drains what was queued it accepts again. Above the hard
//! limit a tail sampler in the same process decides its traces early. Also
//! the seed DaemonSet config, unchanged but for its addresses, against a
//! local sink.

use crate::support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    status, ResourceSpans, ScopeSpans, Span, Status as SpanStatus,
};
use prost::Message;
use support::gateway::{otlp_exporter_to, Gateway, TELEMETRY};
use support::raw::{grpc, http, wait_for_metrics, TRACE_EXPORT};
use support::sink::Sink;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// An OTLP backend that holds every export until its gate opens.
struct GatedSink {
    addr: SocketAddr,
    gate: watch::Sender<bool>,
    spans: Arc<AtomicU64>,
}

struct GatedService {
    gate: watch::Receiver<bool>,
    spans: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for GatedService {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut gate = self.gate.clone();
        let _ = gate.wait_for(|open| *open).await;
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum();
        self.spans.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

impl GatedSink {
    async fn start() -> GatedSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (gate, rx) = watch::channel(false);
        let spans = Arc::new(AtomicU64::new(0));
        let service = GatedService {
            gate: rx,
            spans: spans.clone(),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(
                    TraceServiceServer::new(service)
                        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                        .max_decoding_message_size(64 << 20),
                )
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        GatedSink { addr, gate, spans }
    }
}

/// One request of `spans` spans, each with a 400-byte attribute.
fn request(spans: usize, tag: u8) -> Vec<u8> {
    let filler = "x".repeat(400);
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("flood".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..spans)
                    .map(|i| Span {
                        trace_id: [&[tag][..], &(i as u64).to_le_bytes(), &[7; 7]].concat(),
                        span_id: (i as u64 + 1).to_le_bytes().to_vec(),
                        name: "flood".into(),
                        attributes: vec![KeyValue {
                            key: "payload".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::StringValue(filler.clone())),
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

const LIMIT_MIB: u64 = 128;

fn limiter_config(sink: SocketAddr) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
      http:
        endpoint: 127.0.0.1:0
processors:
  memory_limiter:
    check_interval: 10ms
    limit_mib: {LIMIT_MIB}
    spike_limit_mib: 64
    min_gc_interval_when_soft_limited: 0s
exporters:
  otlp:
    endpoint: 127.0.0.1:{port}
    timeout: 120s
    tls:
      insecure: true
    sending_queue:
      num_consumers: 2
      queue_size: 100000
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter]
      exporters: [otlp]
{TELEMETRY}"#,
        port = sink.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_refused_under_the_hard_limit_and_accepted_after() {
    let sink = GatedSink::start().await;
    let gw = Gateway::start(&limiter_config(sink.addr));
    let http_addr = gw.addr("otlp", "http");
    let grpc_addr = gw.addr("otlp", "grpc");
    let baseline_kib = gw.memory_kib("VmRSS");
    assert!(
        baseline_kib < 48 * 1024,
        "tracegate starts at {baseline_kib} KiB, too close to the test's soft limit"
    );

    // ~0.5 MiB requests from two HTTP senders and one gRPC sender until a
    // good share is refused on both protocols.
    let body = bytes::Bytes::from(request(1200, 1));
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let grpc_refused = Arc::new(AtomicU64::new(0));
    let enough = {
        let (refused, grpc_refused) = (refused.clone(), grpc_refused.clone());
        move || refused.load(Ordering::Relaxed) >= 100 && grpc_refused.load(Ordering::Relaxed) >= 5
    };
    let mut senders = Vec::new();
    for _ in 0..2 {
        let (body, accepted, refused, enough) = (
            body.clone(),
            accepted.clone(),
            refused.clone(),
            enough.clone(),
        );
        senders.push(tokio::spawn(async move {
            for _ in 0..600 {
                let reply = http(
                    http_addr,
                    Method::POST,
                    "/v1/traces",
                    &[("content-type", "application/x-protobuf")],
                    body.clone(),
                )
                .await;
                match reply.status.as_u16() {
                    200 => accepted.fetch_add(1, Ordering::Relaxed),
                    503 => {
                        assert!(
                            reply.headers.contains_key("retry-after"),
                            "a 503 must say when to retry"
                        );
                        refused.fetch_add(1, Ordering::Relaxed)
                    }
                    other => panic!("unexpected HTTP {other}: {:?}", reply.body),
                };
                if enough() {
                    return;
                }
            }
        }));
    }
    {
        let (body, accepted, refused, grpc_refused, enough) = (
            body.clone(),
            accepted.clone(),
            refused.clone(),
            grpc_refused.clone(),
            enough.clone(),
        );
        senders.push(tokio::spawn(async move {
            for _ in 0..600 {
                let reply = grpc(grpc_addr, TRACE_EXPORT, &body, None).await;
                match reply.code {
                    0 => accepted.fetch_add(1, Ordering::Relaxed),
                    // UNAVAILABLE: retryable.
                    14 => {
                        grpc_refused.fetch_add(1, Ordering::Relaxed);
                        refused.fetch_add(1, Ordering::Relaxed)
                    }
                    other => panic!("unexpected gRPC status {other}: {}", reply.message),
                };
                if enough() {
                    return;
                }
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let (ok, no) = (
        accepted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    eprintln!(
        "flood: {ok} requests accepted, {no} refused ({} over gRPC)",
        grpc_refused.load(Ordering::Relaxed)
    );
    assert!(ok > 0, "nothing was accepted before the limit");
    assert!(
        no >= 100,
        "a flood beyond the limit was refused only {no} times ({ok} accepted)"
    );
    assert!(
        grpc_refused.load(Ordering::Relaxed) >= 5,
        "gRPC clients were never told UNAVAILABLE"
    );

    let peak_kib = gw.memory_kib("VmHWM");
    eprintln!("peak resident memory {peak_kib} KiB");
    assert!(
        peak_kib < LIMIT_MIB * 1024,
        "peak resident memory {peak_kib} KiB passed the hard limit of {LIMIT_MIB} MiB \
         ({ok} requests accepted, {no} refused)"
    );

    // The backend drains the queue; memory is released and data accepted again.
    sink.gate.send_replace(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reply = http(
            http_addr,
            Method::POST,
            "/v1/traces",
            &[("content-type", "application/x-protobuf")],
            request(10, 3),
        )
        .await;
        if reply.status == 200 {
            break;
        }
        assert_eq!(reply.status, 503);
        assert!(
            tokio::time::Instant::now() < deadline,
            "still refusing 20 s after the backend drained ({} spans delivered)",
            sink.spans.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = gw.logs().join("\n");
    assert!(
        logs.contains("above the soft limit; releasing freed memory"),
        "the limiter released memory when it started refusing:\n{logs}"
    );
    assert!(!logs.contains("jemalloc refused to purge"), "{logs}");

    // Everything accepted reaches the backend once it drains.
    let expected = ok * 1200 + 10;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sink.spans.load(Ordering::Relaxed) < expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {expected} accepted spans delivered; logs:\n{}",
            sink.spans.load(Ordering::Relaxed),
            gw.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sink.spans.load(Ordering::Relaxed), expected);
    let text = wait_for_metrics(
        gw.addr("telemetry", "metrics"),
        &[
            "otelcol_processor_memory_limiter_refused_spans_total",
            "otelcol_receiver_refused_spans_total",
        ],
        Duration::from_secs(5),
    )
    .await;
    let refused_spans: f64 = text
        .lines()
        .filter(|l| l.starts_with("otelcol_processor_memory_limiter_refused_spans_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        refused_spans >= (no * 1200) as f64,
        "refused spans counted {refused_spans}, refused requests {no}"
    );
}

/// The seed DaemonSet config (memory_limiter + batch → `tempo`) runs as
/// written, only its addresses pointed at this machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_daemonset_config_runs_against_a_local_sink() {
    let sink = Sink::start().await;
    let seed = support::fixture("otel-collector-daemonset.yaml");
    let yaml = seed
        .replace("0.0.0.0:4317", "127.0.0.1:0")
        .replace("0.0.0.0:4318", "127.0.0.1:0")
        .replace("0.0.0.0:8889", "127.0.0.1:0")
        .replace("tempo:4317", &format!("127.0.0.1:{}", sink.addr.port()));
    assert_ne!(yaml, seed);
    // JSON logs, so the launcher can read the listeners back; `service:` is
    // the seed's last section.
    let yaml = format!("{yaml}{TELEMETRY}");
    let gw = Gateway::start(&yaml);
    let reply = grpc(gw.addr("otlp", "grpc"), TRACE_EXPORT, &request(25, 4), None).await;
    assert_eq!(reply.code, 0, "{}", reply.message);
    // batch's 1 s timeout sends it on.
    assert!(
        sink.wait_for_spans(25, Duration::from_secs(10)).await,
        "got {} of 25 spans",
        sink.span_count()
    );
}

/// Pipelines side by side in one process: a memory limiter whose hard
/// limit (1 MiB) the process passes from its first check, and a tail
/// sampler waiting 60 s for its traces, keeping those with an error.
fn hard_limit_beside_tail_config(sink: SocketAddr) -> String {
    format!(
        r#"
receivers:
  otlp/limited:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
  otlp/tail:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
processors:
  memory_limiter:
    check_interval: 50ms
    limit_mib: 1
  tail_sampling:
    decision_wait: 60s
    shards: 1
    policies:
      - name: errors
        type: status_code
        status_code:
          status_codes: [ERROR]
{exporters}service:
  pipelines:
    traces/limited:
      receivers: [otlp/limited]
      processors: [memory_limiter]
      exporters: [otlp]
    traces/tail:
      receivers: [otlp/tail]
      processors: [tail_sampling]
      exporters: [otlp]
{TELEMETRY}"#,
        exporters = otlp_exporter_to(sink)
    )
}

/// The value of the series `name{labels}` (labels in any order) in a
/// Prometheus text page.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    text.lines().find_map(|line| {
        let (head, value) = line.rsplit_once(' ')?;
        let (metric, label_text) = head.split_once('{').unwrap_or((head, "}"));
        let mut have: Vec<String> = label_text
            .strip_suffix('}')?
            .split(',')
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        have.sort();
        (metric == name && have == want).then(|| value.parse().ok())?
    })
}

/// Issue 4: above a memory limiter's hard limit the tail sampler decides
/// its pending traces early rather than holding them for decision_wait.
/// Each check (one a second) decides the oldest half by memory, so two
/// traces are both decided within about two seconds, by their policies:
/// the one with an error is exported, the other counted as not sampled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_the_hard_limit_the_tail_sampler_decides_early() {
    let sink = Sink::start().await;
    let gw = Gateway::start(&hard_limit_beside_tail_config(sink.addr));
    let hard_limit_seen = || {
        gw.logs()
            .iter()
            .any(|l| l.contains("memory use is above the hard limit"))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !hard_limit_seen() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the limiter never found the process above 1 MiB:\n{}",
            gw.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Trace 1 has an error in its second span, trace 2 none.
    let spans = [(1u8, false), (1, true), (2, false), (2, false)]
        .iter()
        .enumerate()
        .map(|(i, &(trace, error))| Span {
            trace_id: [trace; 16].to_vec(),
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: "op".into(),
            status: error.then(|| SpanStatus {
                code: status::StatusCode::Error as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let body = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let sent = tokio::time::Instant::now();
    let reply = grpc(gw.addr("otlp/tail", "grpc"), TRACE_EXPORT, &body, None).await;
    assert_eq!(reply.code, 0, "{}", reply.message);

    // Two checks a second apart decide both; a tenth of decision_wait is
    // ample on a loaded machine and still unmistakably early.
    let early = "otelcol_tracegate_tail_sampling_early_decisions_total";
    let labels = [("processor", "tail_sampling"), ("reason", "memory_limit")];
    let metrics = gw.addr("telemetry", "metrics");
    let text = loop {
        let text = wait_for_metrics(metrics, &[early], Duration::from_secs(6)).await;
        if series(&text, early, &labels) == Some(2.0) {
            break text;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(6),
            "both traces not decided early within 6 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "both traces decided {:?} after they were sent",
        sent.elapsed()
    );
    let pending = "otelcol_tracegate_tail_sampling_pending_traces";
    assert_eq!(
        series(&text, pending, &[("processor", "tail_sampling")]),
        Some(0.0),
        "{text}"
    );
    let dropped = "otelcol_tracegate_dropped_spans_total";
    let not_sampled = [("component", "tail_sampling"), ("reason", "not_sampled")];
    assert_eq!(series(&text, dropped, &not_sampled), Some(2.0), "{text}");

    // The error trace reaches the backend whole; the other never does.
    assert!(
        sink.wait_for_spans(2, Duration::from_secs(5)).await,
        "got {} of 2 spans",
        sink.span_count()
    );
    let mut exported: Vec<(Vec<u8>, Vec<u8>)> = sink
        .requests()
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| (s.trace_id.clone(), s.span_id.clone()))
        .collect();
    exported.sort();
    assert_eq!(
        exported,
        vec![
            (vec![1; 16], 1u64.to_be_bytes().to_vec()),
            (vec![1; 16], 2u64.to_be_bytes().to_vec()),
        ]
    );
}
