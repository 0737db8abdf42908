//! The `jaeger` exporter against Jaeger collectors on real sockets that
//! refuse a share of the `PostSpans` calls: only the refused calls are
//! retried, so every span arrives once. Each test prints sent /
//! acknowledged / delivered / duplicated / lost.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};
use tracegate_model::jaeger::proto::collector_service_server::{
    CollectorService, CollectorServiceServer,
};
use tracegate_model::jaeger::proto::{PostSpansRequest, PostSpansResponse};
use tracegate_model::SpanBatch;

use super::partial_tests::fast_retry;
use super::test_support::*;
use super::*;
use crate::consumer::{ConsumeError, Consumer};
use crate::grpc::rpc_status;

const GRACE: Duration = Duration::from_secs(10);

/// `batches` batches of `resources` resources with `spans` spans each; every
/// span's (trace id, span id) is unique across all of them.
fn numbered_batches(batches: usize, resources: usize, spans: usize) -> Vec<SpanBatch> {
    numbered_batches_of(batches, resources, resources, spans)
}

/// [`numbered_batches`] whose resources are of `services` services, taken
/// in turn: resources of one service have the same attributes.
fn numbered_batches_of(
    batches: usize,
    resources: usize,
    services: usize,
    spans: usize,
) -> Vec<SpanBatch> {
    (0..batches)
        .map(|b| {
            let mut request = sample_request(resources, spans);
            for (r, resource) in request.resource_spans.iter_mut().enumerate() {
                let attributes = &mut resource.resource.as_mut().expect("a resource").attributes;
                *attributes = vec![tracegate_model::otlp::string_kv(
                    "service.name",
                    &format!("svc-{}", r % services),
                )];
            }
            for span in request
                .resource_spans
                .iter_mut()
                .flat_map(|r| &mut r.scope_spans)
                .flat_map(|s| &mut s.spans)
            {
                span.trace_id[8..12].copy_from_slice(&(b as u32).to_be_bytes());
            }
            SpanBatch::from_request(&request)
        })
        .collect()
}

/// A span's trace id and span id.
type SpanId = (Vec<u8>, Vec<u8>);

/// Each span id and how often it arrived.
#[derive(Default)]
struct Arrivals(Mutex<BTreeMap<SpanId, u64>>);

impl Arrivals {
    fn add(&self, ids: impl IntoIterator<Item = SpanId>) {
        let mut seen = self.0.lock().unwrap();
        for id in ids {
            *seen.entry(id).or_default() += 1;
        }
    }

    /// Checks every span of `sent` arrived exactly once, and prints the
    /// tally: sent / acknowledged / delivered / duplicated / lost.
    #[track_caller]
    fn assert_each_once(&self, what: &str, sent: &[SpanBatch], acknowledged: u64) {
        let seen = self.0.lock().unwrap();
        let ids: Vec<SpanId> = sent
            .iter()
            .flat_map(|b| b.spans().iter())
            .map(|s| (s.trace_id.to_vec(), s.span_id.to_vec()))
            .collect();
        let lost = ids.iter().filter(|id| !seen.contains_key(*id)).count();
        let delivered = seen.len();
        let duplicated: u64 = seen.values().map(|n| n - 1).sum();
        println!(
            "{what}: sent {} / acknowledged {acknowledged} / delivered {delivered} / duplicated {duplicated} / lost {lost}",
            ids.len()
        );
        assert_eq!(acknowledged, ids.len() as u64, "{what}: acknowledged");
        assert_eq!(
            (delivered, duplicated, lost),
            (ids.len(), 0, 0),
            "{what}: delivered, duplicated, lost"
        );
    }
}

/// A Jaeger collector that refuses `percent` % of `PostSpans` calls, chosen
/// by a hash of the call's number: half UNAVAILABLE, half
/// RESOURCE_EXHAUSTED with RetryInfo.
struct FlakyJaeger {
    percent: u64,
    calls: AtomicU64,
    refused: AtomicU64,
    arrivals: Arc<Arrivals>,
}

struct FlakyService(Arc<FlakyJaeger>);

#[async_trait]
impl CollectorService for FlakyService {
    async fn post_spans(
        &self,
        request: tonic::Request<PostSpansRequest>,
    ) -> Result<tonic::Response<PostSpansResponse>, Status> {
        let jaeger = &self.0;
        let call = jaeger.calls.fetch_add(1, Ordering::SeqCst);
        let hash = call.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        if hash % 100 < jaeger.percent {
            jaeger.refused.fetch_add(1, Ordering::SeqCst);
            return Err(if hash.is_multiple_of(2) {
                Status::unavailable("collector busy")
            } else {
                Status::with_details(
                    Code::ResourceExhausted,
                    "queue full",
                    rpc_status::encode_retry_info(Duration::from_millis(2)).into(),
                )
            });
        }
        let batch = request.into_inner().batch.unwrap_or_default();
        jaeger
            .arrivals
            .add(batch.spans.into_iter().map(|s| (s.trace_id, s.span_id)));
        Ok(tonic::Response::new(PostSpansResponse {}))
    }
}

async fn start_flaky_jaeger(percent: u64) -> (std::net::SocketAddr, Arc<FlakyJaeger>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let jaeger = Arc::new(FlakyJaeger {
        percent,
        calls: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        arrivals: Arc::default(),
    });
    let router = tonic::transport::Server::builder()
        .add_service(CollectorServiceServer::new(FlakyService(jaeger.clone())));
    tokio::spawn(
        router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, jaeger)
}

fn jaeger_config(addr: std::net::SocketAddr) -> ExporterConfig {
    ExporterConfig::from_value(
        "jaeger",
        serde_json::json!({
            "endpoint": addr.to_string(),
            "tls": {"insecure": true},
            "sending_queue": {"num_consumers": 4},
            "retry_on_failure": fast_retry("30s"),
        }),
    )
    .expect("known kind")
    .expect("valid config")
}

/// Hands every batch to the exporter; returns the spans it took.
fn enqueue_all(handle: &ExporterHandle, batches: &[SpanBatch]) -> u64 {
    batches
        .iter()
        .map(|b| {
            handle.try_enqueue(Arc::new(b.clone())).unwrap();
            b.len() as u64
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_retries_only_the_calls_a_flaky_collector_refused() {
    let (addr, jaeger) = start_flaky_jaeger(30).await;
    let (handle, recorder) = start_recorded(&jaeger_config(addr), "jaeger");
    // 20 batches of 50 resources: 1 000 PostSpans calls, 10 000 spans.
    let batches = numbered_batches(20, 50, 10);
    let acknowledged = enqueue_all(&handle, &batches);
    handle.shutdown(GRACE).await;
    jaeger
        .arrivals
        .assert_each_once("flaky collector (30 % refused)", &batches, acknowledged);
    let (calls, refused) = (
        jaeger.calls.load(Ordering::SeqCst),
        jaeger.refused.load(Ordering::SeqCst),
    );
    assert!(
        refused >= 200,
        "the collector refused {refused} of {calls} calls"
    );
    assert_eq!(calls - refused, 1_000, "every call accepted once");
    recorder.assert_sent_and_failed("jaeger", 10_000, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_of_one_service_go_in_one_call_and_are_retried_together() {
    let (addr, jaeger) = start_flaky_jaeger(30).await;
    let (handle, recorder) = start_recorded(&jaeger_config(addr), "jaeger");
    // 20 batches of 50 resources of 10 services: 200 PostSpans calls.
    let batches = numbered_batches_of(20, 50, 10, 10);
    let acknowledged = enqueue_all(&handle, &batches);
    handle.shutdown(GRACE).await;
    jaeger.arrivals.assert_each_once(
        "flaky collector (30 % refused), 5 resources per process",
        &batches,
        acknowledged,
    );
    let (calls, refused) = (
        jaeger.calls.load(Ordering::SeqCst),
        jaeger.refused.load(Ordering::SeqCst),
    );
    assert!(
        refused >= 30,
        "the collector refused {refused} of {calls} calls"
    );
    assert_eq!(calls - refused, 200, "one call per process, accepted once");
    recorder.assert_sent_and_failed("jaeger", 10_000, 0);
}

/// A pipeline behind tracegate's own Jaeger receiver whose queue holds
/// `capacity` batches: a batch that finds it full is refused (the receiver
/// answers UNAVAILABLE with RetryInfo), and the backend then empties the queue, as a
/// consumer catching up does.
struct FillingQueue {
    capacity: usize,
    queue: Mutex<Vec<SpanBatch>>,
    refused: AtomicU64,
    arrivals: Arc<Arrivals>,
}

impl FillingQueue {
    fn drain(&self) {
        let drained = std::mem::take(&mut *self.queue.lock().unwrap());
        self.arrivals.add(
            drained
                .iter()
                .flat_map(|b| b.spans().iter())
                .map(|s| (s.trace_id.to_vec(), s.span_id.to_vec())),
        );
    }
}

#[async_trait]
impl Consumer for Arc<FillingQueue> {
    async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
        let full = {
            let mut queue = self.queue.lock().unwrap();
            let full = queue.len() >= self.capacity;
            if !full {
                queue.push(batch);
            }
            full
        };
        if full {
            self.refused.fetch_add(1, Ordering::SeqCst);
            self.drain();
            // A short delay hint, as a backend that drains fast sends it.
            return Err(ConsumeError::Refused {
                reason: "queue is full".into(),
                retry_after: Some(Duration::from_millis(2)),
            });
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_into_a_tracegate_whose_queue_fills_delivers_each_span_once() {
    let backend = Arc::new(FillingQueue {
        capacity: 4,
        queue: Mutex::default(),
        refused: AtomicU64::new(0),
        arrivals: Arc::default(),
    });
    let receiver: crate::receiver::jaeger::Config = valid_config(serde_json::json!({
        "protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}
    }));
    let stop = CancellationToken::new();
    let running = crate::receiver::jaeger::start(
        &receiver,
        "jaeger",
        Arc::new(backend.clone()),
        &crate::context::BuildContext::from(stop.clone()),
    )
    .await
    .unwrap();
    let (handle, recorder) = start_recorded(&jaeger_config(running.addresses()[0].1), "jaeger");
    let batches = numbered_batches(10, 40, 5);
    let acknowledged = enqueue_all(&handle, &batches);
    handle.shutdown(GRACE).await;
    backend.drain();
    stop.cancel();
    backend.arrivals.assert_each_once(
        "tracegate backend with a queue of 4",
        &batches,
        acknowledged,
    );
    let refused = backend.refused.load(Ordering::SeqCst);
    assert!(refused >= 50, "the backend refused {refused} calls");
    recorder.assert_sent_and_failed("jaeger", 2_000, 0);
}
