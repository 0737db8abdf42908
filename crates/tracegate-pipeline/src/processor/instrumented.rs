//! The collector's per-processor metrics, kept once for every processor the
//! registry builds (as the collector's `processorhelper` does for its
//! processors) rather than in each processor:
//! `processor_incoming_items`, `processor_outgoing_items` and
//! `processor_internal_duration`, labelled `processor` (the component id)
//! and `otel_signal="traces"`.
//!
//! [`ProcessorConfig::build`](super::ProcessorConfig::build) puts an
//! [`Instrumented`] in front of the processor and an [`Outgoing`] between
//! the processor and its `next`. Incoming items are counted where a batch
//! enters, outgoing items where the processor hands spans on. The internal
//! duration is the time `consume` took minus the time it waited on the
//! stages after it: the outgoing side adds what it waited to a task-local
//! the incoming side reads, so a processor that hands spans on inline is
//! not charged for the rest of the pipeline, and one that hands them on
//! from its own task (batch, tail sampling) is charged only for taking
//! them. The handles are registered once, at build; a batch costs three
//! atomic updates and two clock reads.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use metrics::{Counter, Histogram};
use tracegate_model::SpanBatch;

use super::Processor;
use crate::consumer::{ConsumeError, Consumer, NextConsumer};
use crate::telemetry::names;

/// The `otel_signal` label: tracegate's pipelines carry traces only.
const SIGNAL: &str = "traces";

tokio::task_local! {
    /// Time the current processor's `consume` spent waiting on the stages
    /// after it, added by [`Outgoing`] and read by [`Instrumented`].
    static DOWNSTREAM: Cell<Duration>;
}

/// One processor's handles.
#[derive(Clone)]
pub(crate) struct ProcessorMetrics {
    incoming: Counter,
    outgoing: Counter,
    duration: Histogram,
}

impl ProcessorMetrics {
    pub fn register(id: &str) -> ProcessorMetrics {
        let labels = [
            ("processor", id.to_string()),
            ("otel_signal", SIGNAL.into()),
        ];
        ProcessorMetrics {
            incoming: metrics::counter!(names::PROCESSOR_INCOMING_ITEMS, &labels),
            outgoing: metrics::counter!(names::PROCESSOR_OUTGOING_ITEMS, &labels),
            duration: metrics::histogram!(names::PROCESSOR_INTERNAL_DURATION, &labels),
        }
    }
}

/// Wraps `next` so that what the processor hands on is counted.
pub(crate) fn outgoing(next: NextConsumer, metrics: &ProcessorMetrics) -> NextConsumer {
    Arc::new(Outgoing {
        next,
        outgoing: metrics.outgoing.clone(),
    })
}

/// Between a processor and the stage after it.
struct Outgoing {
    next: NextConsumer,
    outgoing: Counter,
}

#[async_trait]
impl Consumer for Outgoing {
    fn reads_spans(&self) -> bool {
        self.next.reads_spans()
    }

    async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
        self.outgoing.increment(batch.len() as u64);
        let start = Instant::now();
        let result = self.next.consume(batch).await;
        // Outside a processor's `consume` (a processor's own task) there
        // is no scope, and nothing to subtract from.
        let _ = DOWNSTREAM.try_with(|waited| waited.set(waited.get() + start.elapsed()));
        result
    }
}

/// In front of a processor: what the pipeline holds.
pub(crate) struct Instrumented {
    inner: Arc<dyn Processor>,
    metrics: ProcessorMetrics,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn Processor>, metrics: ProcessorMetrics) -> Instrumented {
        Instrumented { inner, metrics }
    }
}

#[async_trait]
impl Consumer for Instrumented {
    fn reads_spans(&self) -> bool {
        self.inner.reads_spans()
    }

    async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
        self.metrics.incoming.increment(batch.len() as u64);
        let start = Instant::now();
        let (result, waited) = DOWNSTREAM
            .scope(Cell::new(Duration::ZERO), async {
                let result = self.inner.consume(batch).await;
                (result, DOWNSTREAM.with(Cell::get))
            })
            .await;
        self.metrics
            .duration
            .record(start.elapsed().saturating_sub(waited).as_secs_f64());
        result
    }
}

#[async_trait]
impl Processor for Instrumented {
    async fn flush(&self) {
        self.inner.flush().await
    }

    async fn ready(&self) -> Result<(), String> {
        self.inner.ready().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;
    use crate::context::BuildContext;
    use crate::processor::probabilistic_sampler::tests::traces as spans;
    use crate::processor::ProcessorConfig;

    /// Takes everything; waits `delay` first, as a slow exporter would.
    struct Slow {
        delay: Duration,
        got: Mutex<usize>,
    }

    #[async_trait]
    impl Consumer for Slow {
        async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
            tokio::time::sleep(self.delay).await;
            *self.got.lock().unwrap() += batch.len();
            Ok(())
        }
    }

    fn value(text: &str, prefix: &str, labels: &[&str]) -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix) && labels.iter().all(|lab| l.contains(lab)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Two processors from the registry, a sampler keeping a share in front
    /// of a batch processor: each counts what came in and what it handed
    /// on, with the collector's labels, and neither is charged for the slow
    /// stage after the pipeline: the sampler hands on inline, the batch
    /// processor from its own task.
    #[tokio::test]
    async fn every_registry_processor_counts_items_and_its_own_time() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let sink = Arc::new(Slow {
            delay: Duration::from_millis(300),
            got: Mutex::new(0),
        });
        let ctx = BuildContext::default();
        let batch = ProcessorConfig::from_value(
            "batch",
            serde_json::json!({"send_batch_size": 100_000, "timeout": "1h"}),
        )
        .unwrap()
        .unwrap();
        let keep_some = ProcessorConfig::from_value(
            "probabilistic_sampler",
            serde_json::json!({"sampling_percentage": 30, "hash_seed": 7}),
        )
        .unwrap()
        .unwrap();
        let (first, second) = metrics::with_local_recorder(&recorder, || {
            let second = batch.build("batch", sink.clone(), &ctx).unwrap();
            let first = keep_some
                .build("probabilistic_sampler", second.clone(), &ctx)
                .unwrap();
            (first, second)
        });
        first.consume(spans(1000)).await.unwrap();
        assert_eq!(
            *sink.got.lock().unwrap(),
            0,
            "the batch processor holds them"
        );
        second.flush().await;
        let kept = *sink.got.lock().unwrap() as f64;
        assert!(kept > 100.0 && kept < 600.0, "{kept}");

        let text = handle.render();
        let some = "processor=\"probabilistic_sampler\"";
        let all = "processor=\"batch\"";
        let traces = "otel_signal=\"traces\"";
        let incoming = "processor_incoming_items";
        let outgoing = "processor_outgoing_items";
        assert_eq!(value(&text, incoming, &[some, traces]), 1000.0, "{text}");
        assert_eq!(value(&text, outgoing, &[some, traces]), kept);
        assert_eq!(value(&text, incoming, &[all, traces]), kept);
        assert_eq!(value(&text, outgoing, &[all, traces]), kept);
        let duration = "processor_internal_duration";
        for id in [some, all] {
            assert_eq!(
                value(&text, &format!("{duration}_count"), &[id, traces]),
                1.0
            );
            // The 300 ms the sink took belong to neither processor.
            let own = value(&text, &format!("{duration}_sum"), &[id, traces]);
            assert!(own > 0.0 && own < 0.2, "{id}: {own} s");
        }
    }

    /// A processor that hands spans on inline is not charged for the time
    /// the stages after it take.
    #[tokio::test]
    async fn time_waiting_downstream_is_not_the_processors() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let sink = Arc::new(Slow {
            delay: Duration::from_millis(300),
            got: Mutex::new(0),
        });
        let config = ProcessorConfig::from_value(
            "probabilistic_sampler",
            serde_json::json!({"sampling_percentage": 50}),
        )
        .unwrap()
        .unwrap();
        let stage = metrics::with_local_recorder(&recorder, || {
            config
                .build(
                    "probabilistic_sampler",
                    sink.clone(),
                    &BuildContext::default(),
                )
                .unwrap()
        });
        let start = Instant::now();
        stage.consume(spans(100)).await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert!(*sink.got.lock().unwrap() > 0);
        let text = handle.render();
        let own = value(&text, "processor_internal_duration_sum", &[]);
        assert!(own > 0.0 && own < 0.2, "{own} s");
    }

    /// A processor that refuses a batch took it in and handed nothing on.
    #[tokio::test]
    async fn a_refused_batch_is_incoming_only() {
        struct Refuse;
        #[async_trait]
        impl Consumer for Refuse {
            async fn consume(&self, _: SpanBatch) -> Result<(), ConsumeError> {
                Err(ConsumeError::refused("full"))
            }
        }
        #[async_trait]
        impl Processor for Refuse {
            async fn flush(&self) {}
        }
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let stage = metrics::with_local_recorder(&recorder, || {
            let metrics = ProcessorMetrics::register("memory_limiter");
            Instrumented::new(Arc::new(Refuse), metrics)
        });
        assert!(stage.consume(spans(7)).await.is_err());
        let text = handle.render();
        let id = "processor=\"memory_limiter\"";
        assert_eq!(value(&text, "processor_incoming_items", &[id]), 7.0);
        assert_eq!(value(&text, "processor_outgoing_items", &[id]), 0.0);
        assert_eq!(
            value(&text, "processor_internal_duration_count", &[id]),
            1.0
        );
    }
}
