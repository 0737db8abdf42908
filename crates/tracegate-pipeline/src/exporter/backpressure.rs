//! Backpressure from the exporters' memory queues to the pipelines' entry.
//!
//! A memory sending queue is bounded in bytes, queued and in flight alike
//! (`DEFAULT_QUEUE_BYTES`, or `queue_size` with `sizer: bytes`). Stages
//! that hold data (`batch`, `tail_sampling`) acknowledge spans before they
//! reach the queue, so refusing at the queue would lose what clients were
//! told is taken. Instead [`Admission`], in front of a pipeline's first
//! stage, refuses new requests with a retryable error (gRPC UNAVAILABLE
//! with RetryInfo, HTTP 503 with Retry-After) once every exporter of the
//! pipeline holds half of its byte limit or more; the other half is room
//! for what the pipeline has already taken. The refused spans are counted
//! by the receiver (`receiver_refused_spans`) and, per exporter, in
//! `tracegate_backpressure_refused_spans`.
//!
//! The delay a refused client is given comes from the rate the exporter
//! has been finishing batches ([`DrainRate`]): the time to drain what is
//! above the threshold, and after the clients already told to come back,
//! so that they return spread out rather than all at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tracegate_model::SpanBatch;

use super::handle::ExporterHandle;
use crate::consumer::{ConsumeError, Consumer, NextConsumer};

/// The shortest and longest delay a refused client is given.
pub(crate) const MIN_RETRY_AFTER: Duration = Duration::from_millis(5);
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);
/// The delay while no drain rate is known yet.
const UNKNOWN_RATE_RETRY_AFTER: Duration = Duration::from_millis(100);
/// Completions closer together than this make no rate sample.
const SAMPLE_WINDOW: Duration = Duration::from_millis(100);
/// With no completion for this long, the exporter is taken to drain nothing.
const STALE: Duration = Duration::from_secs(2);

/// The bytes per second an exporter's consumers finish (send or drop), and
/// the latest time a refused client was told to come back.
pub(crate) struct DrainRate {
    state: Mutex<DrainState>,
}

struct DrainState {
    window_start: Instant,
    window_bytes: u64,
    last_done: Option<Instant>,
    /// Smoothed bytes per second.
    rate: Option<f64>,
    promised_until: Instant,
}

impl DrainRate {
    pub(crate) fn new() -> DrainRate {
        let now = Instant::now();
        DrainRate {
            state: Mutex::new(DrainState {
                window_start: now,
                window_bytes: 0,
                last_done: None,
                rate: None,
                promised_until: now,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DrainState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A consumer finished a batch of `bytes`.
    pub(crate) fn done(&self, bytes: usize) {
        let now = Instant::now();
        let mut state = self.lock();
        if state.last_done.is_none_or(|at| now - at > STALE) {
            // Idle until now: the window starts here, with this batch,
            // whose send began at an unknown time before, not in it.
            state.window_start = now;
            state.window_bytes = 0;
            state.last_done = Some(now);
            return;
        }
        state.last_done = Some(now);
        state.window_bytes += bytes as u64;
        let elapsed = now - state.window_start;
        if elapsed >= SAMPLE_WINDOW {
            let sample = state.window_bytes as f64 / elapsed.as_secs_f64();
            state.rate = Some(match state.rate {
                Some(rate) => 0.5 * rate + 0.5 * sample,
                None => sample,
            });
            state.window_start = now;
            state.window_bytes = 0;
        }
    }

    /// When a client refused with `cost` bytes should come back, `excess`
    /// bytes having to drain first.
    pub(crate) fn retry_after(&self, excess: usize, cost: usize) -> Duration {
        let now = Instant::now();
        let mut state = self.lock();
        let stale = state.last_done.is_none_or(|at| now - at > STALE);
        let rate = match state.rate {
            // Nothing finished lately (a backend outage): come back late.
            Some(_) if stale => return MAX_RETRY_AFTER,
            None if stale && state.last_done.is_some() => return MAX_RETRY_AFTER,
            None => return UNKNOWN_RATE_RETRY_AFTER,
            Some(rate) if rate < 1.0 => return MAX_RETRY_AFTER,
            Some(rate) => rate,
        };
        let time = |bytes: usize| Duration::from_secs_f64((bytes as f64 / rate).min(3600.0));
        let fits_at = now + time(excess);
        let slot = fits_at.max(state.promised_until.max(now) + time(cost));
        state.promised_until = slot;
        (slot - now).clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER)
    }
}

/// In front of a pipeline's first stage: refuses a batch, retryably, while
/// every exporter of the pipeline is past half of its queue's byte limit
/// (see the module docs). A pipeline whose exporters cannot push back (no
/// queue, or a persistent one) gets no `Admission`.
pub struct Admission {
    exporters: Vec<ExporterHandle>,
    next: NextConsumer,
}

impl Admission {
    /// `next` behind an admission check on `exporters`, or `next` itself
    /// when none of them can push back.
    pub fn wrap(exporters: Vec<ExporterHandle>, next: NextConsumer) -> NextConsumer {
        if exporters.is_empty() || !exporters.iter().all(ExporterHandle::can_push_back) {
            return next;
        }
        Arc::new(Admission { exporters, next })
    }
}

#[async_trait]
impl Consumer for Admission {
    fn reads_spans(&self) -> bool {
        self.next.reads_spans()
    }

    async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
        if batch.is_empty() || !self.exporters.iter().all(ExporterHandle::pushes_back) {
            return self.next.consume(batch).await;
        }
        let cost = batch.encoded_len();
        let spans = batch.len() as u64;
        let mut delay = MAX_RETRY_AFTER;
        let mut reasons = Vec::with_capacity(self.exporters.len());
        for exporter in &self.exporters {
            let (after, reason) = exporter.refuse_for_backpressure(cost, spans);
            delay = delay.min(after);
            reasons.push(reason);
        }
        Err(ConsumeError::Refused {
            reason: reasons.join("; "),
            retry_after: Some(delay),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn refused_clients_are_spread_over_the_drain() {
        let rate = DrainRate::new();
        assert_eq!(rate.retry_after(1000, 10), UNKNOWN_RATE_RETRY_AFTER);
        // 1 MB per 100 ms: 10 MB/s.
        rate.done(1_000_000);
        for _ in 0..5 {
            tokio::time::advance(Duration::from_millis(100)).await;
            rate.done(1_000_000);
        }
        let first = rate.retry_after(5_000_000, 1_000_000);
        assert!(
            (Duration::from_millis(450)..=Duration::from_millis(550)).contains(&first),
            "5 MB over at 10 MB/s: {first:?}"
        );
        let second = rate.retry_after(5_000_000, 1_000_000);
        assert!(
            second >= first + Duration::from_millis(90),
            "the next client comes after the first: {first:?} {second:?}"
        );
        // Nothing finished for long: the backend is down, come back late.
        tokio::time::advance(STALE + Duration::from_secs(1)).await;
        assert_eq!(rate.retry_after(1, 1), MAX_RETRY_AFTER);
    }
}
