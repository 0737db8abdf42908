//! The `batch` processor, as the collector's: spans are held until
//! `send_batch_size` of them are pending or the processor's repeating timer
//! fires, and no batch sent is larger than `send_batch_max_size`. The timer
//! fires every `timeout`, counted from the previous send (whether that send
//! was triggered by size or by the timer), and sends whatever is pending;
//! so a span waits at most `timeout`, and usually less. Batches are merged
//! by concatenating encoded requests (`SpanBatch::concat`), which keeps the
//! parts' buffers and joins them only if a later stage reads the request
//! whole. After the final flush (shutdown) batches are refused.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use metrics::{Counter, Histogram};
use serde::Deserialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracegate_model::SpanBatch;

use super::Processor;
use crate::config::ComponentError;
use crate::consumer::{ConsumeError, Consumer, NextConsumer};
use crate::telemetry::names;

/// `processors: batch:`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Period of the timer that sends whatever is pending, restarted by
    /// every send. `0s` sends every incoming batch at once (split by
    /// `send_batch_max_size`). Default `200ms`.
    #[serde(
        default = "default_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub timeout: Duration,
    /// Number of spans after which a batch is sent regardless of the timeout.
    /// `0` sends every incoming batch at once, as `timeout: 0s`. At most
    /// 2^32 − 1, as the collector's `uint32`. Default 8192.
    #[serde(default = "default_send_batch_size")]
    pub send_batch_size: u32,
    /// Upper bound on the spans of one sent batch; larger ones are split.
    /// 0 means no bound. Must be 0 or ≥ `send_batch_size`. At most
    /// 2^32 − 1. Default 0.
    #[serde(default)]
    pub send_batch_max_size: u32,
    /// The collector batches separately per value of these client-metadata
    /// keys. Request metadata does not reach tracegate's processors, so
    /// tracegate does not batch per metadata yet: only an empty list is
    /// accepted.
    #[serde(default)]
    pub metadata_keys: Vec<String>,
    /// Limit on distinct metadata combinations. As in the collector it
    /// matters only with `metadata_keys`, which must be empty. Default 1000.
    #[serde(default = "default_cardinality")]
    pub metadata_cardinality_limit: u32,
}

fn default_timeout() -> Duration {
    Duration::from_millis(200)
}
fn default_send_batch_size() -> u32 {
    8192
}
fn default_cardinality() -> u32 {
    1000
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timeout: default_timeout(),
            send_batch_size: default_send_batch_size(),
            send_batch_max_size: 0,
            metadata_keys: Vec::new(),
            metadata_cardinality_limit: default_cardinality(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        if self.send_batch_max_size > 0 && self.send_batch_max_size < self.send_batch_size {
            return Err(ComponentError {
                path: "send_batch_max_size".into(),
                message: format!(
                    "send_batch_max_size ({}) must be 0 or at least send_batch_size ({})",
                    self.send_batch_max_size, self.send_batch_size
                ),
            });
        }
        if !self.metadata_keys.is_empty() {
            return Err(ComponentError {
                path: "metadata_keys".into(),
                message: format!(
                    "tracegate does not batch per metadata yet: request metadata ({}) does not \
                     reach its processors, so batches cannot be kept apart by it; remove \
                     metadata_keys (all spans then share one batch)",
                    self.metadata_keys.join(", ")
                ),
            });
        }
        let mut warnings = Vec::new();
        if self.send_batch_max_size > 0 {
            warnings.push(format!(
                "send_batch_max_size is {}: at shutdown tracegate sends everything pending, in \
                 batches of at most that size; the collector sends only the first such batch \
                 and loses the rest",
                self.send_batch_max_size
            ));
        }
        Ok(warnings)
    }
}

/// What triggered a send, for the collector's trigger counters.
#[derive(Clone, Copy)]
enum Trigger {
    Size,
    Timeout,
}

struct Pending {
    parts: Vec<SpanBatch>,
    spans: usize,
    /// When the ticker next sends whatever is pending. Pushed back by
    /// `timeout` after every send, whatever triggered it.
    next_tick: Instant,
    /// Set by the final flush: from then on batches are refused.
    closed: bool,
}

/// The running batch processor.
pub struct Batcher {
    id: String,
    config: Config,
    pending: Mutex<Pending>,
    /// Tells the ticker that `next_tick` moved.
    reset: Notify,
    next: NextConsumer,
    stop: CancellationToken,
    send_size: Histogram,
    send_size_bytes: Histogram,
    size_trigger: Counter,
    timeout_trigger: Counter,
    dropped_refused: Counter,
}

impl Batcher {
    /// Starts the batcher and its ticker task. Must run inside a tokio runtime.
    pub fn start(id: &str, config: Config, next: NextConsumer) -> Arc<Batcher> {
        let label = [("processor", id.to_string())];
        let batcher = Arc::new(Batcher {
            id: id.to_string(),
            pending: Mutex::new(Pending {
                parts: Vec::new(),
                spans: 0,
                next_tick: Instant::now() + config.timeout,
                closed: false,
            }),
            config,
            reset: Notify::new(),
            next,
            stop: CancellationToken::new(),
            send_size: metrics::histogram!(names::PROCESSOR_BATCH_BATCH_SEND_SIZE, &label),
            send_size_bytes: metrics::histogram!(
                names::PROCESSOR_BATCH_BATCH_SEND_SIZE_BYTES,
                &label
            ),
            size_trigger: metrics::counter!(names::PROCESSOR_BATCH_BATCH_SIZE_TRIGGER_SEND, &label),
            timeout_trigger: metrics::counter!(names::PROCESSOR_BATCH_TIMEOUT_TRIGGER_SEND, &label),
            dropped_refused: metrics::counter!(
                names::DROPPED_SPANS,
                "component" => id.to_string(),
                "reason" => "refused_downstream"
            ),
        });
        // Without metadata_keys every span shares one batching key.
        metrics::gauge!(names::PROCESSOR_BATCH_METADATA_CARDINALITY, &label).set(1.0);
        if !batcher.immediate() {
            tokio::spawn(batcher.clone().run_ticker());
        }
        batcher
    }

    /// As the collector: with `timeout: 0` or `send_batch_size: 0` there is
    /// no timer and every batch is sent on at once, split by
    /// `send_batch_max_size`.
    fn immediate(&self) -> bool {
        self.config.timeout.is_zero() || self.config.send_batch_size == 0
    }

    /// `send_batch_size` in spans.
    fn trigger_spans(&self) -> usize {
        self.config.send_batch_size as usize
    }

    /// The collector's repeating timer: every `timeout`, counted from the
    /// previous send (by size or by time) or the previous empty tick, it
    /// sends whatever is pending.
    async fn run_ticker(self: Arc<Self>) {
        loop {
            let tick = self.lock().next_tick;
            tokio::select! {
                _ = self.stop.cancelled() => return,
                // A size-triggered send moved the tick: read it again.
                _ = self.reset.notified() => continue,
                _ = tokio::time::sleep_until(tick) => {}
            }
            let due = {
                let mut pending = self.lock();
                if pending.closed {
                    return;
                }
                if pending.next_tick > Instant::now() {
                    continue;
                }
                pending.spans = 0;
                std::mem::take(&mut pending.parts)
            };
            self.send(due, Trigger::Timeout).await;
            let mut pending = self.lock();
            pending.next_tick = pending.next_tick.max(Instant::now() + self.config.timeout);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic while holding the lock cannot leave `Pending` inconsistent
        // in a way that matters more than losing the process, so recover.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Merges `parts`, splits by `send_batch_max_size` and passes them on.
    async fn send(&self, parts: Vec<SpanBatch>, trigger: Trigger) {
        if parts.is_empty() {
            return;
        }
        for chunk in self.merge_and_split(parts) {
            self.emit(chunk, trigger).await;
        }
    }

    fn merge_and_split(&self, parts: Vec<SpanBatch>) -> Vec<SpanBatch> {
        let merged = if parts.len() == 1 {
            parts.into_iter().next().expect("one part")
        } else {
            SpanBatch::concat(&parts)
        };
        let max = self.config.send_batch_max_size as usize;
        if max > 0 && merged.len() > max {
            merged.split(max)
        } else {
            vec![merged]
        }
    }

    /// Passes one batch on. As the collector, a batch counts in the send
    /// metrics (spans, encoded bytes, trigger) only once the next stage
    /// took it.
    async fn emit(&self, batch: SpanBatch, trigger: Trigger) {
        let spans = batch.len();
        let bytes = batch.encoded_len();
        if let Err(e) = self.next.consume(batch).await {
            // The batch was acknowledged upstream already: count the loss.
            self.dropped_refused.increment(spans as u64);
            tracing::warn!(processor = %self.id, spans, error = %e, "next stage refused a batch; spans dropped");
            return;
        }
        self.send_size.record(spans as f64);
        self.send_size_bytes.record(bytes as f64);
        match trigger {
            Trigger::Size => self.size_trigger.increment(1),
            Trigger::Timeout => self.timeout_trigger.increment(1),
        }
    }

    fn shut_down(&self) -> ConsumeError {
        ConsumeError::refused(format!(
            "batch processor {} has shut down and takes no more spans",
            self.id
        ))
    }
}

#[async_trait]
impl Consumer for Batcher {
    /// Concatenating batches needs only their bytes; splitting by
    /// `send_batch_max_size` reads the index.
    fn reads_spans(&self) -> bool {
        self.config.send_batch_max_size > 0 || self.next.reads_spans()
    }

    async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
        if batch.is_empty() {
            return Ok(());
        }
        if self.immediate() {
            if self.lock().closed {
                return Err(self.shut_down());
            }
            self.send(vec![batch], Trigger::Size).await;
            return Ok(());
        }
        let ready = {
            let mut pending = self.lock();
            if pending.closed {
                // Refused, not held: the caller counts the spans with its
                // own reason (a receiver as refused, a stage that already
                // acknowledged them as dropped).
                return Err(self.shut_down());
            }
            pending.spans += batch.len();
            pending.parts.push(batch);
            if pending.spans < self.trigger_spans() {
                return Ok(());
            }
            // As the collector: a send by size restarts the timer.
            pending.spans = 0;
            pending.next_tick = Instant::now() + self.config.timeout;
            self.reset.notify_one();
            std::mem::take(&mut pending.parts)
        };
        let mut chunks = self.merge_and_split(ready);
        // As the collector: full chunks go while at least send_batch_size
        // spans remain; a smaller remainder waits for more.
        let remainder = match chunks.last() {
            Some(last) if chunks.len() > 1 && last.len() < self.trigger_spans() => chunks.pop(),
            _ => None,
        };
        for chunk in chunks {
            self.emit(chunk, Trigger::Size).await;
        }
        if let Some(rest) = remainder {
            let late = {
                let mut pending = self.lock();
                if pending.closed {
                    // The final flush ran while this call was sending: the
                    // remainder is already acknowledged, so send it now.
                    Some(rest)
                } else {
                    pending.spans += rest.len();
                    pending.parts.insert(0, rest);
                    None
                }
            };
            if let Some(rest) = late {
                self.emit(rest, Trigger::Timeout).await;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Processor for Batcher {
    /// The final flush: sends everything pending (every chunk, where the
    /// collector sends only the first `send_batch_max_size`), counted as a
    /// timeout send as the collector counts its shutdown send, and refuses
    /// every batch after it.
    async fn flush(&self) {
        self.stop.cancel();
        let parts = {
            let mut pending = self.lock();
            pending.closed = true;
            pending.spans = 0;
            std::mem::take(&mut pending.parts)
        };
        self.send(parts, Trigger::Timeout).await;
    }
}

impl super::BuildProcessor for Config {
    fn build(&self, id: &str, next: NextConsumer, _: &super::BuildContext) -> super::Building {
        Ok(Batcher::start(id, self.clone(), next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracegate_model::otlp::{ExportTraceServiceRequest, ResourceSpans, ScopeSpans, Span};

    #[derive(Default)]
    struct Collect(Mutex<Vec<SpanBatch>>);

    #[async_trait]
    impl Consumer for Collect {
        async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
            self.0.lock().unwrap().push(batch);
            Ok(())
        }
    }

    impl Collect {
        fn sizes(&self) -> Vec<usize> {
            self.0.lock().unwrap().iter().map(SpanBatch::len).collect()
        }
    }

    fn spans(n: usize, first: usize) -> SpanBatch {
        let spans = (first..first + n)
            .map(|i| Span {
                trace_id: vec![1; 16],
                span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                name: format!("s{i}"),
                ..Default::default()
            })
            .collect();
        SpanBatch::from_request(&ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    fn names(batches: &[SpanBatch]) -> Vec<String> {
        batches
            .iter()
            .flat_map(|b| (0..b.len()).map(|i| b.span_name(i).to_string()))
            .collect()
    }

    fn start(config: Config) -> (Arc<Batcher>, Arc<Collect>) {
        let sink = Arc::new(Collect::default());
        (Batcher::start("batch", config, sink.clone()), sink)
    }

    #[tokio::test(start_paused = true)]
    async fn sends_once_send_batch_size_spans_are_pending() {
        let (batcher, sink) = start(Config {
            send_batch_size: 10,
            timeout: Duration::from_secs(3600),
            ..Config::default()
        });
        for i in 0..3 {
            batcher.consume(spans(3, i * 3)).await.unwrap();
        }
        assert!(sink.sizes().is_empty(), "9 < 10 spans: nothing sent yet");
        batcher.consume(spans(3, 9)).await.unwrap();
        assert_eq!(sink.sizes(), vec![12], "no max size: all pending spans go");
        let sent = sink.0.lock().unwrap().clone();
        assert_eq!(
            names(&sent),
            (0..12).map(|i| format!("s{i}")).collect::<Vec<_>>()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn splits_by_max_size_and_keeps_the_remainder_pending() {
        let (batcher, sink) = start(Config {
            send_batch_size: 10,
            send_batch_max_size: 10,
            timeout: Duration::from_secs(3600),
            ..Config::default()
        });
        batcher.consume(spans(25, 0)).await.unwrap();
        assert_eq!(
            sink.sizes(),
            vec![10, 10],
            "5 < send_batch_size stay pending"
        );
        batcher.flush().await;
        assert_eq!(sink.sizes(), vec![10, 10, 5]);
        let sent = sink.0.lock().unwrap().clone();
        assert_eq!(
            names(&sent),
            (0..25).map(|i| format!("s{i}")).collect::<Vec<_>>()
        );
    }

    /// The timer repeats from the processor's start, as the collector's: a
    /// span that arrives 150ms into a 200ms period goes 50ms later, not
    /// 200ms later.
    #[tokio::test(start_paused = true)]
    async fn the_repeating_timer_sends_what_is_pending_at_each_tick() {
        let (batcher, sink) = start(Config {
            send_batch_size: 1000,
            timeout: Duration::from_millis(200),
            ..Config::default()
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        batcher.consume(spans(3, 0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        batcher.consume(spans(2, 3)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(19)).await;
        assert!(sink.sizes().is_empty(), "199ms: before the first tick");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(sink.sizes(), vec![5], "the tick at 200ms sends all pending");
        // An empty tick sends nothing; the period goes on from the last tick.
        tokio::time::sleep(Duration::from_millis(250)).await; // 451ms
        assert_eq!(sink.sizes(), vec![5]);
        batcher.consume(spans(1, 5)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(148)).await; // 599ms
        assert_eq!(sink.sizes(), vec![5], "next tick is at 600ms");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(sink.sizes(), vec![5, 1], "sent at the 600ms tick");
        let sent = sink.0.lock().unwrap().clone();
        assert_eq!(
            names(&sent),
            (0..6).map(|i| format!("s{i}")).collect::<Vec<_>>()
        );
    }

    /// The collector stops and restarts its timer after a send triggered by
    /// size, so what is left waits a whole `timeout` from that send.
    #[tokio::test(start_paused = true)]
    async fn a_send_by_size_restarts_the_timer() {
        let (batcher, sink) = start(Config {
            send_batch_size: 10,
            send_batch_max_size: 10,
            timeout: Duration::from_millis(200),
            ..Config::default()
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        batcher.consume(spans(13, 0)).await.unwrap();
        assert_eq!(sink.sizes(), vec![10], "3 < send_batch_size stay pending");
        tokio::time::sleep(Duration::from_millis(100)).await; // 250ms
        assert_eq!(
            sink.sizes(),
            vec![10],
            "no tick at 200ms: it was restarted at 150ms"
        );
        tokio::time::sleep(Duration::from_millis(99)).await; // 349ms
        assert_eq!(sink.sizes(), vec![10]);
        tokio::time::sleep(Duration::from_millis(2)).await; // 351ms
        assert_eq!(sink.sizes(), vec![10, 3], "200ms after the send by size");
        let sent = sink.0.lock().unwrap().clone();
        assert_eq!(
            names(&sent),
            (0..13).map(|i| format!("s{i}")).collect::<Vec<_>>()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_final_flush_batches_are_refused_not_held() {
        let (batcher, sink) = start(Config {
            send_batch_size: 100,
            timeout: Duration::from_millis(200),
            ..Config::default()
        });
        batcher.consume(spans(3, 0)).await.unwrap();
        batcher.flush().await;
        assert_eq!(sink.sizes(), vec![3], "the flush sends what is pending");
        let err = batcher.consume(spans(2, 3)).await.unwrap_err();
        assert!(
            matches!(&err, ConsumeError::Refused { reason, .. } if reason.contains("shut down")),
            "{err:?}"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(sink.sizes(), vec![3], "nothing was held to be sent later");
        assert!(batcher.lock().parts.is_empty());
        // The same with no timer.
        let (batcher, sink) = start(Config {
            timeout: Duration::ZERO,
            ..Config::default()
        });
        batcher.flush().await;
        assert!(batcher.consume(spans(2, 0)).await.is_err());
        assert!(sink.sizes().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn zero_timeout_sends_at_once_split_by_max() {
        let (batcher, sink) = start(Config {
            send_batch_size: 4,
            send_batch_max_size: 4,
            timeout: Duration::ZERO,
            ..Config::default()
        });
        batcher.consume(spans(9, 0)).await.unwrap();
        assert_eq!(sink.sizes(), vec![4, 4, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_send_batch_size_sends_at_once_as_the_collector() {
        let (batcher, sink) = start(Config {
            send_batch_size: 0,
            send_batch_max_size: 5,
            timeout: Duration::from_secs(3600),
            ..Config::default()
        });
        batcher.consume(spans(7, 0)).await.unwrap();
        assert_eq!(sink.sizes(), vec![5, 2]);
    }

    #[test]
    fn validate_rejects_max_below_size_and_metadata_keys() {
        let bad = Config {
            send_batch_size: 100,
            send_batch_max_size: 50,
            ..Config::default()
        };
        assert_eq!(bad.validate().unwrap_err().path, "send_batch_max_size");
        let meta = Config {
            metadata_keys: vec!["tenant".into()],
            ..Config::default()
        };
        let err = meta.validate().unwrap_err();
        assert_eq!(err.path, "metadata_keys");
        assert!(
            err.message
                .contains("tracegate does not batch per metadata yet"),
            "{}",
            err.message
        );
        assert!(Config::default().validate().unwrap().is_empty());
    }

    /// With a max size, the collector's shutdown loses what is pending
    /// beyond the first batch; tracegate's does not, and validate says so.
    #[test]
    fn validate_warns_that_shutdown_with_a_max_size_differs() {
        let capped = Config {
            send_batch_size: 100,
            send_batch_max_size: 200,
            ..Config::default()
        };
        let warnings = capped.validate().unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("send_batch_max_size is 200: at shutdown")
                && warnings[0].contains("the collector sends only the first"),
            "{warnings:?}"
        );
    }

    #[test]
    fn config_defaults_match_the_collector() {
        let c: Config = crate::config::from_value(serde_json::Value::Null).unwrap();
        assert_eq!(c.timeout, Duration::from_millis(200));
        assert_eq!(c.send_batch_size, 8192);
        assert_eq!(c.send_batch_max_size, 0);
        let c: Config = crate::config::from_value(
            serde_json::json!({"timeout": "10s", "send_batch_size": 1024}),
        )
        .unwrap();
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert!(crate::config::from_value::<Config>(serde_json::json!({"timout": "1s"})).is_err());
    }

    /// The collector's sizes are `uint32`: a larger one is a config error
    /// naming the key, not a silently different bound.
    #[test]
    fn sizes_beyond_u32_are_refused() {
        for key in ["send_batch_size", "send_batch_max_size"] {
            let e =
                crate::config::from_value::<Config>(serde_json::json!({ key: 4_294_967_296u64 }))
                    .unwrap_err();
            assert_eq!(e.path, key, "{e}");
        }
        let max: Config =
            crate::config::from_value(serde_json::json!({"send_batch_size": u32::MAX})).unwrap();
        assert_eq!(max.send_batch_size, u32::MAX);
    }

    /// A next stage that refuses its first batch.
    #[derive(Default)]
    struct RefuseFirst(Mutex<bool>, Collect);

    #[async_trait]
    impl Consumer for RefuseFirst {
        async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
            let first = !std::mem::replace(&mut *self.0.lock().unwrap(), true);
            if first {
                return Err(ConsumeError::refused("full"));
            }
            self.1.consume(batch).await
        }
    }

    /// As the collector: a batch the next stage refuses is not counted as
    /// sent (spans, bytes or trigger); one it takes is, with its encoded
    /// size in `batch_send_size_bytes`.
    #[tokio::test]
    async fn only_batches_passed_on_count_as_sent() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let next = Arc::new(RefuseFirst::default());
        let config = Config {
            timeout: Duration::ZERO,
            ..Config::default()
        };
        let batcher = metrics::with_local_recorder(&recorder, || {
            Batcher::start("batch", config, next.clone())
        });
        let (refused, taken) = (spans(3, 0), spans(2, 3));
        let bytes = taken.bytes().len();
        batcher.consume(refused).await.unwrap();
        batcher.consume(taken).await.unwrap();
        assert_eq!(next.1.sizes(), vec![2]);
        let text = handle.render();
        let value = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name) && l.contains("processor=\"batch\""))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        };
        assert_eq!(value("processor_batch_batch_send_size_count"), 1.0);
        assert_eq!(value("processor_batch_batch_send_size_sum"), 2.0);
        assert_eq!(value("processor_batch_batch_send_size_bytes_count"), 1.0);
        assert_eq!(
            value("processor_batch_batch_send_size_bytes_sum"),
            bytes as f64
        );
        assert_eq!(value("processor_batch_batch_size_trigger_send"), 1.0);
        batcher.flush().await;
    }
}
