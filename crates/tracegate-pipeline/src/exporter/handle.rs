//! The runtime around any [`Exporter`]: its bounded queue, the consumer
//! tasks that send from it with retry, its metrics, and an orderly shutdown.
//! Every span handed to an exporter is either sent or counted in
//! `tracegate_dropped_spans` with the reason it was not.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracegate_model::SpanBatch;

use super::backoff::Backoff;
use super::backpressure::DrainRate;
use super::delivery::{QueueConfig, RetryConfig};
use super::queue::PushError;
use super::sending_queue::{Leftover, SendingQueue};
use super::{Delivered, ExportError, Exporter, PartialFailure};
use crate::telemetry::names;

/// Why spans handed to an exporter were not exported; the `reason` label of
/// `tracegate_dropped_spans`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The exporter's queue was full while another exporter took the batch.
    QueueFull,
    /// Still queued or in flight when the shutdown grace period ended.
    Shutdown,
    /// The backend refused the data for good (e.g. gRPC INVALID_ARGUMENT, HTTP 400).
    PermanentError,
    /// Retryable failures lasted longer than `retry_on_failure.max_elapsed_time`.
    RetriesExhausted,
    /// A retryable failure with `retry_on_failure.enabled: false`.
    RetryDisabled,
    /// The backend accepted the request but rejected some spans (OTLP partial success).
    RejectedByBackend,
    /// A persistent queue's batch could not be read back from disk.
    Corrupt,
}

impl DropReason {
    const ALL: [DropReason; 7] = [
        DropReason::QueueFull,
        DropReason::Shutdown,
        DropReason::PermanentError,
        DropReason::RetriesExhausted,
        DropReason::RetryDisabled,
        DropReason::RejectedByBackend,
        DropReason::Corrupt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Shutdown => "shutdown",
            DropReason::PermanentError => "permanent_error",
            DropReason::RetriesExhausted => "retries_exhausted",
            DropReason::RetryDisabled => "retry_disabled",
            DropReason::RejectedByBackend => "rejected_by_backend",
            DropReason::Corrupt => "corrupt",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The exporter did not take a batch into its queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("exporter {exporter}: {}", if *shutting_down { "shutting down" } else { "sending queue is full" })]
pub struct QueueFull {
    pub exporter: String,
    /// The queue is closed for shutdown rather than full.
    pub shutting_down: bool,
}

/// Why an exporter did not take a batch, as [`ExporterHandle::send`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    QueueFull,
    ShuttingDown,
    /// A synchronous (queue-less) export failed after its retries.
    Failed {
        reason: DropReason,
        message: String,
        /// The backend's status when it refused the data for good.
        code: Option<tonic::Code>,
        /// Spans not delivered: fewer than the batch's when part of it was
        /// delivered before the rest failed.
        spans: u64,
    },
}

impl Refusal {
    /// The drop reason if the batch is acknowledged to the client anyway.
    pub fn drop_reason(&self) -> DropReason {
        match self {
            Refusal::QueueFull => DropReason::QueueFull,
            Refusal::ShuttingDown => DropReason::Shutdown,
            Refusal::Failed { reason, .. } => *reason,
        }
    }

    /// How many of the batch's `spans` were not delivered.
    pub fn undelivered(&self, spans: u64) -> u64 {
        match self {
            Refusal::Failed { spans: left, .. } => *left,
            _ => spans,
        }
    }
}

/// Metric handles, registered once per exporter (label `exporter` = id).
struct ExporterMetrics {
    sent: Counter,
    send_failed: Counter,
    enqueue_failed: Counter,
    queue_size: Gauge,
    dropped: [Counter; DropReason::ALL.len()],
    /// Spans a pipeline refused because this exporter's queue held half
    /// of its byte limit or more (`exporter/backpressure.rs`).
    backpressure_refused: Counter,
}

impl ExporterMetrics {
    fn register(id: &str) -> ExporterMetrics {
        let label = [("exporter", id.to_string())];
        ExporterMetrics {
            sent: metrics::counter!(names::EXPORTER_SENT_SPANS, &label),
            send_failed: metrics::counter!(names::EXPORTER_SEND_FAILED_SPANS, &label),
            enqueue_failed: metrics::counter!(names::EXPORTER_ENQUEUE_FAILED_SPANS, &label),
            queue_size: metrics::gauge!(names::EXPORTER_QUEUE_SIZE, &label),
            dropped: DropReason::ALL.map(|reason| {
                metrics::counter!(
                    names::DROPPED_SPANS,
                    "component" => id.to_string(),
                    "reason" => reason.as_str()
                )
            }),
            backpressure_refused: metrics::counter!(names::BACKPRESSURE_REFUSED_SPANS, &label),
        }
    }
}

struct Shared {
    id: String,
    exporter: Arc<dyn Exporter>,
    retry: RetryConfig,
    /// `None` when `sending_queue.enabled: false`: export runs in the caller.
    queue: Option<SendingQueue>,
    metrics: ExporterMetrics,
    /// Queue consumers and in-flight synchronous sends.
    tasks: TaskTracker,
    /// Cancelled when the shutdown grace period is over.
    stop: CancellationToken,
    closed: AtomicBool,
    /// How fast the consumers finish batches, for the delay a client
    /// refused by backpressure is given.
    drain: DrainRate,
}

/// A running exporter as pipelines hold it. Cheap to clone; all clones share
/// one queue.
#[derive(Clone)]
pub struct ExporterHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for ExporterHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExporterHandle")
            .field("id", &self.shared.id)
            .field("queued", &self.shared.queue.is_some())
            .finish()
    }
}

impl ExporterHandle {
    /// Registers the exporter's metrics and spawns its queue consumers,
    /// with the queue in memory (see [`with_queue`](Self::with_queue)).
    /// Must run inside a tokio runtime.
    pub fn start(
        id: &str,
        exporter: Arc<dyn Exporter>,
        queue: &QueueConfig,
        retry: &RetryConfig,
    ) -> ExporterHandle {
        let sending_queue = queue.enabled.then(|| SendingQueue::memory(queue));
        Self::with_queue(id, exporter, sending_queue, queue.num_consumers, retry)
    }

    /// [`start`](Self::start) with a queue already made (in memory or
    /// persistent), or none.
    pub(crate) fn with_queue(
        id: &str,
        exporter: Arc<dyn Exporter>,
        queue: Option<SendingQueue>,
        num_consumers: usize,
        retry: &RetryConfig,
    ) -> ExporterHandle {
        let metrics = ExporterMetrics::register(id);
        let shared = Arc::new(Shared {
            id: id.to_string(),
            exporter,
            retry: retry.clone(),
            queue,
            metrics,
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            closed: AtomicBool::new(false),
            drain: DrainRate::new(),
        });
        if let Some(q) = &shared.queue {
            metrics::gauge!(names::EXPORTER_QUEUE_CAPACITY, "exporter" => id.to_string())
                .set(q.capacity() as f64);
            shared.metrics.queue_size.set(q.size() as f64);
            for _ in 0..num_consumers.max(1) {
                shared.tasks.spawn(consume_queue(shared.clone()));
            }
        }
        ExporterHandle { shared }
    }

    /// The component id, e.g. `otlp/tempo`.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Waits until the exporter is ready to export (see
    /// [`Exporter::ready`]); startup awaits it before receivers listen.
    pub async fn ready(&self) -> Result<(), String> {
        self.shared.exporter.ready().await
    }

    /// Whether the exporter reads the span index ([`Exporter::reads_spans`]).
    pub fn reads_spans(&self) -> bool {
        self.shared.exporter.reads_spans()
    }

    /// Whether batches go through a queue (else [`send`](Self::send) exports
    /// in the caller).
    pub fn is_queued(&self) -> bool {
        self.shared.queue.is_some()
    }

    /// Whether this exporter's queue is bounded in bytes in memory, so that
    /// it can ask the pipelines to refuse new data
    /// ([`Admission`](super::Admission)).
    pub fn can_push_back(&self) -> bool {
        self.bytes_held().is_some()
    }

    /// Whether the queue holds (queued or in flight) half of its byte limit
    /// or more: from there the pipelines should refuse new data.
    pub fn pushes_back(&self) -> bool {
        self.bytes_held()
            .is_some_and(|(held, limit)| held >= limit / 2)
    }

    /// (bytes held, byte limit) of a memory queue.
    fn bytes_held(&self) -> Option<(usize, usize)> {
        self.shared.queue.as_ref().and_then(|q| q.bytes_held())
    }

    /// A pipeline refuses a batch of `cost` bytes and `spans` spans because
    /// of this exporter's queue: counts the spans, and returns when the
    /// client should come back and why it was refused.
    pub(crate) fn refuse_for_backpressure(&self, cost: usize, spans: u64) -> (Duration, String) {
        let shared = &self.shared;
        shared.metrics.backpressure_refused.increment(spans);
        let (held, limit) = self.bytes_held().unwrap_or((0, 0));
        let threshold = limit / 2;
        let excess = held.saturating_add(cost).saturating_sub(threshold);
        let delay = shared.drain.retry_after(excess, cost);
        let reason = format!(
            "exporter {}: sending queue holds {} KiB, at or past half of its {} KiB; retry later",
            shared.id,
            held >> 10,
            limit >> 10
        );
        (delay, reason)
    }

    /// Batches waiting in the queue.
    pub fn queue_len(&self) -> usize {
        self.shared.queue.as_ref().map_or(0, |q| q.len())
    }

    /// Queues `batch` in a memory queue without waiting. Refused (and
    /// counted in `exporter_enqueue_failed_spans`) when the queue is full,
    /// closed for shutdown, persistent (its write must be waited for: use
    /// [`send`](Self::send)) or absent (`sending_queue.enabled: false`).
    pub fn try_enqueue(&self, batch: Arc<SpanBatch>) -> Result<(), QueueFull> {
        let spans = batch.len() as u64;
        let pushed = match &self.shared.queue {
            Some(queue) => queue.try_push(batch),
            None if self.shared.closed.load(Ordering::Acquire) => Err(PushError::Closed),
            None => Err(PushError::Full),
        };
        self.enqueued(pushed, spans)
    }

    /// Counts the outcome of a push.
    fn enqueued(&self, pushed: Result<usize, PushError>, spans: u64) -> Result<(), QueueFull> {
        let shared = &self.shared;
        match pushed {
            Ok(len) => {
                shared.metrics.queue_size.set(len as f64);
                Ok(())
            }
            Err(e) => {
                shared.metrics.enqueue_failed.increment(spans);
                Err(QueueFull {
                    exporter: shared.id.clone(),
                    shutting_down: e == PushError::Closed,
                })
            }
        }
    }

    /// Hands `batch` to the exporter: queues it, or with no queue exports it
    /// now (with retries) and reports the outcome. `Ok` means the exporter
    /// took responsibility for the spans. A refusal is not counted as a drop
    /// here: the caller knows whether the batch is acknowledged anyway and
    /// then calls [`record_dropped`](Self::record_dropped).
    pub async fn send(&self, batch: Arc<SpanBatch>) -> Result<(), Refusal> {
        let shared = &self.shared;
        if let Some(queue) = &shared.queue {
            let spans = batch.len() as u64;
            let pushed = queue.push(batch).await;
            return self.enqueued(pushed, spans).map_err(|e| {
                if e.shutting_down {
                    Refusal::ShuttingDown
                } else {
                    Refusal::QueueFull
                }
            });
        }
        if shared.closed.load(Ordering::Acquire) {
            return Err(Refusal::ShuttingDown);
        }
        let batch_spans = batch.len() as u64;
        let shared2 = shared.clone();
        let (outcome, spans) = shared
            .tasks
            .track_future(async move {
                let mut owed = batch;
                let outcome = tokio::select! {
                    biased;
                    _ = shared2.stop.cancelled() => None,
                    outcome = deliver(&shared2, &mut owed, None) => Some(outcome),
                };
                (outcome, owed.len() as u64)
            })
            .await;
        match outcome {
            None if spans == batch_spans => Err(Refusal::ShuttingDown),
            None => Err(Refusal::Failed {
                reason: DropReason::Shutdown,
                message: "shutting down".into(),
                code: None,
                spans,
            }),
            Some(Ok(delivered)) => {
                record_delivered(shared, spans, &delivered);
                Ok(())
            }
            Some(Err(Undelivered {
                reason,
                message,
                code,
            })) => {
                shared.metrics.send_failed.increment(spans);
                tracing::warn!(
                    exporter = %shared.id, spans, %reason, error = %message,
                    "Exporting failed."
                );
                Err(Refusal::Failed {
                    reason,
                    message,
                    code,
                    spans,
                })
            }
        }
    }

    /// Counts spans this exporter will never send, with the reason.
    pub fn record_dropped(&self, reason: DropReason, spans: u64) {
        if spans > 0 {
            self.shared.metrics.dropped[reason.index()].increment(spans);
        }
    }

    /// Stops taking batches, lets the consumers drain the queue and finish
    /// in-flight sends (retries included) for at most `grace`, then stops
    /// them and counts whatever is left as dropped with reason `shutdown`
    /// (a persistent queue keeps it on disk for the next start instead).
    /// Later calls wait for the first one's work.
    pub async fn shutdown(&self, grace: Duration) {
        let started = Instant::now();
        let shared = &self.shared;
        let first = !shared.closed.swap(true, Ordering::AcqRel);
        if let Some(queue) = &shared.queue {
            queue.close();
        }
        shared.tasks.close();
        if tokio::time::timeout(grace, shared.tasks.wait())
            .await
            .is_err()
        {
            shared.stop.cancel();
            shared.tasks.wait().await;
        }
        if !first {
            return;
        }
        if let Some(queue) = &shared.queue {
            match queue.finish().await {
                Leftover::Dropped(left) => {
                    shared.metrics.queue_size.set(0.0);
                    if left > 0 {
                        self.record_dropped(DropReason::Shutdown, left);
                        tracing::warn!(
                            exporter = %shared.id, spans = left,
                            "shutdown grace period over; dropping queued spans"
                        );
                    }
                }
                Leftover::Stored(batches, spans) if batches > 0 => tracing::info!(
                    exporter = %shared.id, batches, spans,
                    "Queued spans stay in storage for the next start."
                ),
                Leftover::Stored(..) => {}
            }
        }
        shared
            .exporter
            .shutdown_within(grace.saturating_sub(started.elapsed()))
            .await;
    }
}

/// One queue consumer: takes batches and sends them until the queue is
/// closed and empty, or the grace period is over.
async fn consume_queue(shared: Arc<Shared>) {
    let Some(queue) = &shared.queue else { return };
    loop {
        let next = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => break,
            next = queue.pop() => next,
        };
        let Some((mut item, left)) = next else { break };
        shared.metrics.queue_size.set(left as f64);
        // What is still owed of the batch: `deliver` shrinks it to what was
        // not delivered, and has the queue store that in place of the
        // batch before it waits to retry (see `SendingQueue::replace`).
        let mut owed = item.batch.clone();
        let outcome = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => {
                // A persistent queue still holds it (or what is owed of
                // it): sent after a restart.
                if !queue.is_persistent() {
                    shared.metrics.dropped[DropReason::Shutdown.index()].increment(owed.len() as u64);
                }
                break;
            }
            outcome = deliver(&shared, &mut owed, Some(&mut item)) => outcome,
        };
        let spans = owed.len() as u64;
        match outcome {
            Ok(delivered) => record_delivered(&shared, spans, &delivered),
            Err(Undelivered {
                reason, message, ..
            }) => {
                shared.metrics.send_failed.increment(spans);
                shared.metrics.dropped[reason.index()].increment(spans);
                tracing::error!(
                    exporter = %shared.id, spans, %reason, error = %message,
                    "Exporting failed. Dropping data."
                );
            }
        }
        queue.done(&item);
        shared.drain.done(item.held);
    }
}

fn record_delivered(shared: &Shared, spans: u64, delivered: &Delivered) {
    // As the collector: a request the backend accepted counts as sent even
    // when it rejected some spans; those are also counted as dropped.
    shared.metrics.sent.increment(spans);
    if delivered.rejected_spans > 0 {
        shared.metrics.dropped[DropReason::RejectedByBackend.index()]
            .increment(delivered.rejected_spans);
    }
    // Logged also when only a message is set (a warning from the backend),
    // as the collector's exporters log it.
    if delivered.is_partial() {
        tracing::warn!(
            exporter = %shared.id,
            rejected_spans = delivered.rejected_spans,
            message = %delivered.message,
            "Partial success response"
        );
    }
}

/// Why [`deliver`] gave up on a batch.
struct Undelivered {
    reason: DropReason,
    message: String,
    code: Option<tonic::Code>,
}

/// One batch with retries, as exporterhelper's retry sender: permanent
/// errors end at once; retryable ones wait the backoff (or the server's
/// longer delay) until the next attempt would start after
/// `max_elapsed_time`. After a partial failure only the part not delivered
/// is retried: the delivered part is counted as sent at once, and `owed`
/// shrinks to the rest, so that when this returns (or is cancelled) `owed`
/// holds what the outcome is about. `queued` is the queue item `owed` came
/// from: before waiting to retry a smaller `owed`, the queue stores it in
/// place of the item, so that a persistent queue holds only what is owed.
async fn deliver(
    shared: &Shared,
    owed: &mut Arc<SpanBatch>,
    mut queued: Option<&mut super::sending_queue::Item>,
) -> Result<Delivered, Undelivered> {
    let started = Instant::now();
    let mut backoff: Option<Backoff> = None;
    let failed = |reason, message, code| Undelivered {
        reason,
        message,
        code,
    };
    loop {
        let mut result = shared.exporter.export(owed).await;
        while let Err(ExportError::Partial(partial)) = result {
            let PartialFailure {
                delivered,
                remaining,
                error,
            } = *partial;
            let sent = owed.len().saturating_sub(remaining.len());
            record_delivered(shared, sent as u64, &delivered);
            *owed = Arc::new(remaining);
            result = if owed.is_empty() {
                Ok(Delivered::default())
            } else {
                Err(error)
            };
        }
        let (message, server_delay) = match result {
            Ok(delivered) => return Ok(delivered),
            Err(ExportError::Permanent(message)) => {
                return Err(failed(DropReason::PermanentError, message, None))
            }
            Err(ExportError::Rejected { code, message }) => {
                return Err(failed(DropReason::PermanentError, message, Some(code)))
            }
            Err(ExportError::Retryable {
                message,
                retry_after,
            }) => (message, retry_after),
            // Not reached: unwrapped above.
            Err(error @ ExportError::Partial(_)) => {
                return Err(failed(DropReason::PermanentError, error.to_string(), None))
            }
        };
        if !shared.retry.enabled {
            return Err(failed(DropReason::RetryDisabled, message, None));
        }
        let mut delay = backoff
            .get_or_insert_with(|| Backoff::new(&shared.retry))
            .next_delay();
        if let Some(server_delay) = server_delay {
            delay = delay.max(server_delay);
        }
        let max_elapsed = shared.retry.max_elapsed_time;
        if !max_elapsed.is_zero() && started.elapsed().saturating_add(delay) > max_elapsed {
            return Err(failed(DropReason::RetriesExhausted, message, None));
        }
        if let (Some(item), Some(queue)) = (queued.as_deref_mut(), &shared.queue) {
            if !Arc::ptr_eq(&item.batch, owed) {
                queue.replace(item, owed.clone()).await;
            }
        }
        tracing::info!(
            exporter = %shared.id, spans = owed.len(), error = %message, interval = ?delay,
            "Exporting failed. Will retry the request after interval."
        );
        tokio::time::sleep(delay).await;
    }
}
