//! Clients that send as the OpenTelemetry SDKs' OTLP/gRPC exporters do:
//! one request after another, a refused request (UNAVAILABLE) sent again
//! after the delay its `RetryInfo` gives, CANCELLED retried (a retryable
//! code in the OTLP specification). What each client saw is tallied, so a
//! test asserts on goodput, refusals and their delays.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tonic::transport::Channel;
use tracegate_model::otlp::{string_kv, Resource, ResourceSpans, ScopeSpans, Span};
use tracegate_pipeline::grpc::retry_info;

/// What a client does with the request it holds when the time is up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AtDeadline {
    /// Retry it until it is acknowledged, and count it: nothing a client
    /// started is given up, so every span it sent must reach the backend.
    Finish,
    /// Give it up if its next retry would fall after the deadline, and
    /// count only acknowledgements that came before: goodput in a window.
    Abandon,
}

/// What a group of clients saw.
#[derive(Default, Debug)]
pub struct Tally {
    pub acked_spans: AtomicU64,
    /// Answers UNAVAILABLE, each with its retry delay in `delays`.
    pub refusals: AtomicU64,
    /// Calls the gateway ended with CANCELLED (a reset stream).
    pub cancelled: AtomicU64,
    pub delays: Mutex<Vec<Duration>>,
}

impl Tally {
    pub fn acked_spans(&self) -> u64 {
        self.acked_spans.load(Ordering::Relaxed)
    }

    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::Relaxed)
    }

    pub fn delays(&self) -> Vec<Duration> {
        self.delays.lock().unwrap().clone()
    }
}

/// `clients` SDK-like clients on `channel`, each sending the requests
/// `request` makes (a request and its span count) one after another until
/// `until`. Any answer other than OK, UNAVAILABLE with `RetryInfo` or
/// CANCELLED fails the test.
pub async fn sdk_clients<F>(
    channel: Channel,
    clients: usize,
    until: Instant,
    at_deadline: AtDeadline,
    request: F,
) -> Arc<Tally>
where
    F: Fn() -> (ExportTraceServiceRequest, u64) + Send + Sync + 'static,
{
    let tally = Arc::new(Tally::default());
    let request = Arc::new(request);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let mut client = TraceServiceClient::new(channel.clone());
            let (tally, request) = (tally.clone(), request.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let (req, spans) = request();
                    loop {
                        match client.export(req.clone()).await {
                            Ok(_) => {
                                if at_deadline == AtDeadline::Finish || Instant::now() < until {
                                    tally.acked_spans.fetch_add(spans, Ordering::Relaxed);
                                }
                                break;
                            }
                            Err(status) if status.code() == tonic::Code::Unavailable => {
                                let delay = retry_info(status.details()).unwrap_or_else(|| {
                                    panic!("a refusal without RetryInfo: {status:?}")
                                });
                                tally.refusals.fetch_add(1, Ordering::Relaxed);
                                tally.delays.lock().unwrap().push(delay);
                                if at_deadline == AtDeadline::Abandon
                                    && Instant::now() + delay >= until
                                {
                                    return;
                                }
                                tokio::time::sleep(delay).await;
                            }
                            Err(status) if status.code() == tonic::Code::Cancelled => {
                                tally.cancelled.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            Err(status) => panic!("unexpected answer: {status:?}"),
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    tally
}

/// Load of a known size: one request of the traces numbered `traces`
/// (trace id: the number, then `0xfeed`), each of `spans_per_trace` spans
/// (span ids 1 and up), every span carrying a `payload`-byte attribute.
pub fn payload_request(
    traces: Range<u64>,
    spans_per_trace: u64,
    payload: usize,
) -> ExportTraceServiceRequest {
    let payload = "p".repeat(payload);
    let spans = traces
        .flat_map(|t| {
            let trace_id = [t.to_be_bytes(), 0xfeedu64.to_be_bytes()].concat();
            let payload = payload.clone();
            (1..=spans_per_trace).map(move |s| Span {
                trace_id: trace_id.clone(),
                span_id: s.to_be_bytes().to_vec(),
                name: "op".into(),
                start_time_unix_nano: 1,
                end_time_unix_nano: 2,
                attributes: vec![string_kv("payload", &payload)],
                ..Default::default()
            })
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource::default()),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
