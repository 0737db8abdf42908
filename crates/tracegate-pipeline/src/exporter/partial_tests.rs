//! Partial failures in the retry loop: an export that goes out as several
//! requests, of which only some fail, retries only those, keeps what was
//! delivered and counts every span once, against a scripted exporter.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tonic::Code;
use tracegate_model::SpanBatch;

use super::test_support::*;
use super::*;
use crate::consumer::{ConsumeError, Consumer};

const GRACE: Duration = Duration::from_secs(10);

/// How the scripted exporter answers one attempt: it fails the resources at
/// these positions of the batch it is handed, with `error`, and delivers
/// the others.
struct Step {
    fail: Vec<usize>,
    error: ExportError,
}

impl Step {
    /// These resources fail retryably.
    fn retry(fail: &[usize]) -> Step {
        Step {
            fail: fail.to_vec(),
            error: retryable(),
        }
    }

    /// These resources are refused for good (INVALID_ARGUMENT).
    fn refuse(fail: &[usize]) -> Step {
        Step {
            fail: fail.to_vec(),
            error: ExportError::Rejected {
                code: Code::InvalidArgument,
                message: "bad span".into(),
            },
        }
    }
}

fn retryable() -> ExportError {
    ExportError::Retryable {
        message: "backend busy".into(),
        retry_after: None,
    }
}

/// An exporter that sends each resource of a batch as a request of its own
/// and answers as its script says, reporting the failed resources as the
/// remainder.
#[derive(Default)]
struct Scripted {
    script: Mutex<VecDeque<Step>>,
    /// After the script: every resource fails with this (or none fails).
    otherwise: Mutex<Option<ExportError>>,
    /// Names of the spans delivered, in the order they were.
    delivered: Mutex<Vec<String>>,
    /// Spans handed over in each attempt.
    attempts: Mutex<Vec<usize>>,
}

impl Scripted {
    fn new(script: impl IntoIterator<Item = Step>, otherwise: Option<ExportError>) -> Arc<Self> {
        Arc::new(Scripted {
            script: Mutex::new(script.into_iter().collect()),
            otherwise: Mutex::new(otherwise),
            ..Default::default()
        })
    }

    fn attempts(&self) -> Vec<usize> {
        self.attempts.lock().unwrap().clone()
    }

    /// The names delivered, sorted, and whether any was delivered twice.
    fn delivered(&self) -> (Vec<String>, bool) {
        let mut names = self.delivered.lock().unwrap().clone();
        names.sort();
        let delivered = names.len();
        names.dedup();
        let duplicated = names.len() != delivered;
        (names, duplicated)
    }

    /// Starts it behind an [`ExporterHandle`] with the given
    /// `sending_queue` and `retry_on_failure` settings.
    fn start(
        self: &Arc<Self>,
        id: &str,
        queue: serde_json::Value,
        retry: serde_json::Value,
    ) -> (ExporterHandle, Arc<TestRecorder>) {
        let recorder = Arc::new(TestRecorder::default());
        let exporter: Arc<dyn Exporter> = self.clone();
        let handle = metrics::with_local_recorder(recorder.as_ref(), || {
            ExporterHandle::start(id, exporter, &valid_config(queue), &valid_config(retry))
        });
        (handle, recorder)
    }
}

#[async_trait]
impl Exporter for Scripted {
    async fn export(&self, batch: &SpanBatch) -> Result<Delivered, ExportError> {
        self.attempts.lock().unwrap().push(batch.len());
        let resources = batch.resources().len();
        let step = self.script.lock().unwrap().pop_front().or_else(|| {
            self.otherwise.lock().unwrap().clone().map(|error| Step {
                fail: (0..resources).collect(),
                error,
            })
        });
        // Past the script, with no `otherwise`: nothing fails.
        let Step { fail, error } = step.unwrap_or(Step::retry(&[]));
        let kept: Vec<usize> = (0..resources).filter(|r| !fail.contains(r)).collect();
        let sent = batch.select_resources(&kept);
        self.delivered
            .lock()
            .unwrap()
            .extend((0..sent.len()).map(|i| sent.span_name(i).to_string()));
        match (kept.len(), fail.is_empty()) {
            (_, true) => Ok(Delivered::default()),
            (0, false) => Err(error),
            _ => Err(ExportError::partial(
                Delivered::default(),
                batch.select_resources(&fail),
                error,
            )),
        }
    }
}

/// Retries that wait milliseconds, and give up after `max_elapsed`.
pub(super) fn fast_retry(max_elapsed: &str) -> serde_json::Value {
    serde_json::json!({
        "initial_interval": "5ms", "max_interval": "20ms", "max_elapsed_time": max_elapsed,
        "randomization_factor": 0.0
    })
}

fn all_names(batch: &SpanBatch) -> Vec<String> {
    let mut names: Vec<String> = (0..batch.len())
        .map(|i| batch.span_name(i).to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_partial_failure_retries_only_what_failed_and_keeps_what_was_delivered() {
    let batch = sample_batch(4, 3);
    // Resources 1 and 3 fail; on the retry, the first of those two (1)
    // fails again; the third attempt delivers it.
    let exporter = Scripted::new([Step::retry(&[1, 3]), Step::retry(&[0])], None);
    let (handle, recorder) = exporter.start("scripted", serde_json::json!({}), fast_retry("5s"));
    handle.try_enqueue(Arc::new(batch.clone())).unwrap();
    handle.shutdown(GRACE).await;
    assert_eq!(exporter.attempts(), vec![12, 6, 3], "only the rest retried");
    let (delivered, duplicated) = exporter.delivered();
    assert!(!duplicated, "a span delivered twice");
    assert_eq!(delivered, all_names(&batch));
    recorder.assert_sent_and_failed("scripted", 12, 0);
    for reason in [
        "queue_full",
        "shutdown",
        "permanent_error",
        "retries_exhausted",
        "retry_disabled",
        "rejected_by_backend",
    ] {
        assert_eq!(recorder.dropped("scripted", reason), 0, "{reason}");
    }
}

#[tokio::test]
async fn the_rest_refused_for_good_or_out_of_retries_is_dropped_alone() {
    // Refused for good: dropped at once, the delivered part counted as sent.
    let refused = Scripted::new([Step::refuse(&[2])], None);
    let (handle, recorder) = refused.start("refused", serde_json::json!({}), fast_retry("5s"));
    handle.try_enqueue(Arc::new(sample_batch(4, 3))).unwrap();
    handle.shutdown(GRACE).await;
    assert_eq!(refused.attempts(), vec![12]);
    recorder.assert_sent_and_failed("refused", 9, 3);
    assert_eq!(recorder.dropped("refused", "permanent_error"), 3);

    // Retryable but failing until the retries run out: only the rest.
    let down = Scripted::new([Step::retry(&[0, 1])], Some(retryable()));
    let (handle, recorder) = down.start("down", serde_json::json!({}), fast_retry("100ms"));
    handle.try_enqueue(Arc::new(sample_batch(4, 3))).unwrap();
    handle.shutdown(GRACE).await;
    let attempts = down.attempts();
    assert!(attempts.len() >= 3, "{attempts:?}");
    assert!(
        attempts[1..].iter().all(|&spans| spans == 6),
        "{attempts:?}"
    );
    recorder.assert_sent_and_failed("down", 6, 6);
    assert_eq!(recorder.dropped("down", "retries_exhausted"), 6);

    // With retries off, the rest is dropped after the first attempt.
    let once = Scripted::new([Step::retry(&[3])], None);
    let (handle, recorder) = once.start(
        "once",
        serde_json::json!({}),
        serde_json::json!({"enabled": false}),
    );
    handle.try_enqueue(Arc::new(sample_batch(4, 3))).unwrap();
    handle.shutdown(GRACE).await;
    assert_eq!(once.attempts(), vec![12]);
    recorder.assert_sent_and_failed("once", 9, 3);
    assert_eq!(recorder.dropped("once", "retry_disabled"), 3);
}

#[tokio::test]
async fn without_a_queue_only_the_rest_is_refused_or_counted() {
    let no_queue = serde_json::json!({"enabled": false});
    // Alone: the client hears the backend's code; the delivered part stays
    // sent and only the rest counts as failed.
    let alone = Scripted::new([Step::refuse(&[1])], None);
    let (handle, recorder) = alone.start("alone", no_queue.clone(), fast_retry("5s"));
    let err = Fanout::new(vec![handle.clone()])
        .consume(sample_batch(4, 3))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ConsumeError::Rejected {
                code: Some(Code::InvalidArgument),
                ..
            }
        ),
        "{err:?}"
    );
    recorder.assert_sent_and_failed("alone", 9, 3);
    assert_eq!(
        recorder.dropped("alone", "permanent_error"),
        0,
        "the client was told"
    );
    handle.shutdown(GRACE).await;

    // Beside an exporter that takes the batch, only the rest is dropped.
    let beside = Scripted::new([Step::refuse(&[1])], None);
    let (handle, recorder) = beside.start("beside", no_queue, fast_retry("5s"));
    let healthy = Scripted::new([], None);
    let (other, _) = healthy.start("healthy", serde_json::json!({}), fast_retry("5s"));
    Fanout::new(vec![handle.clone(), other.clone()])
        .consume(sample_batch(4, 3))
        .await
        .unwrap();
    assert_eq!(recorder.dropped("beside", "permanent_error"), 3);
    handle.shutdown(GRACE).await;
    other.shutdown(GRACE).await;
}

#[tokio::test]
async fn shutdown_while_the_rest_waits_to_be_retried_drops_only_the_rest() {
    // A first backoff of a minute: the rest is waiting when shutdown comes.
    let slow_retry = serde_json::json!({"initial_interval": "60s", "max_elapsed_time": "0s"});
    let queued = Scripted::new([Step::retry(&[0])], Some(retryable()));
    let (handle, recorder) = queued.start("queued", serde_json::json!({}), slow_retry.clone());
    handle.try_enqueue(Arc::new(sample_batch(4, 3))).unwrap();
    eventually("the first attempt", || queued.attempts().len() == 1).await;
    handle.shutdown(Duration::from_millis(50)).await;
    recorder.assert_sent_and_failed("queued", 9, 0);
    assert_eq!(recorder.dropped("queued", "shutdown"), 3);

    // Without a queue, beside an exporter that took the batch.
    let sync = Scripted::new([Step::retry(&[0])], Some(retryable()));
    let (handle, recorder) = sync.start("sync", serde_json::json!({"enabled": false}), slow_retry);
    let healthy = Scripted::new([], None);
    let (other, _) = healthy.start("healthy", serde_json::json!({}), fast_retry("5s"));
    let fanout = Fanout::new(vec![handle.clone(), other.clone()]);
    let consuming = tokio::spawn(async move { fanout.consume(sample_batch(4, 3)).await });
    eventually("the first attempt", || sync.attempts().len() == 1).await;
    handle.shutdown(Duration::from_millis(50)).await;
    consuming.await.unwrap().unwrap();
    recorder.assert_sent_and_failed("sync", 9, 0);
    assert_eq!(recorder.dropped("sync", "shutdown"), 3);
    other.shutdown(GRACE).await;
}
