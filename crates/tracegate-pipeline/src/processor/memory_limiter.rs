//! The `memory_limiter` processor, as the collector's: every
//! `check_interval` the process's memory is measured; at or above the soft
//! limit (`limit - spike_limit`) new data is refused with a retryable error
//! until it falls below again, and at or above the hard limit (`limit`) the
//! allocator is asked to return freed memory (the collector forces a GC).
//! Memory is the process's resident set, so the limits mean what a
//! container's limit means.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use metrics::{Counter, Gauge};
use serde::Deserialize;
use tokio::time::{Instant, MissedTickBehavior};
use tracegate_model::SpanBatch;

use super::Processor;
use crate::config::ComponentError;
use crate::consumer::{ConsumeError, Consumer, NextConsumer};
use crate::context::BuildContext;
use crate::memory::{HardLimitFlag, MemoryPressure};
use crate::telemetry::names;

const MIB: u64 = 1024 * 1024;

/// `processors: memory_limiter:`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Time between measurements of memory use. Must be above 0 (the
    /// collector's default of 0 is refused the same way). Default `0s`.
    #[serde(default, deserialize_with = "crate::duration::deserialize")]
    pub check_interval: Duration,
    /// The hard limit in MiB. Takes precedence over `limit_percentage`.
    /// Default 0 (unset).
    #[serde(default)]
    pub limit_mib: u32,
    /// How far below the hard limit the soft limit sits, in MiB: the spike
    /// expected between two measurements. Must be below `limit_mib`.
    /// Default 0, meaning 20 % of the limit.
    #[serde(default)]
    pub spike_limit_mib: u32,
    /// The hard limit as a percentage of the memory available to the
    /// process (its cgroup's limit, else the host's total), used when
    /// `limit_mib` is 0. Default 0 (unset).
    #[serde(default)]
    pub limit_percentage: u32,
    /// The spike allowance as a percentage of that memory. Must be below
    /// `limit_percentage`. Default 0, meaning 20 % of the limit.
    #[serde(default)]
    pub spike_limit_percentage: u32,
    /// Least time between two releases of freed memory while above the
    /// soft limit (the collector's forced GCs; tracegate repeats them while
    /// refusing, see docs/configuration.md). Default `10s`.
    #[serde(
        default = "default_min_release_soft",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub min_gc_interval_when_soft_limited: Duration,
    /// Least time between two releases of memory while above the hard
    /// limit. Default `0s`.
    #[serde(default, deserialize_with = "crate::duration::deserialize")]
    pub min_gc_interval_when_hard_limited: Duration,
}

fn default_min_release_soft() -> Duration {
    Duration::from_secs(10)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            check_interval: Duration::ZERO,
            limit_mib: 0,
            spike_limit_mib: 0,
            limit_percentage: 0,
            spike_limit_percentage: 0,
            min_gc_interval_when_soft_limited: default_min_release_soft(),
            min_gc_interval_when_hard_limited: Duration::ZERO,
        }
    }
}

fn invalid(path: &str, message: &str) -> ComponentError {
    ComponentError {
        path: path.into(),
        message: message.into(),
    }
}

impl Config {
    /// The collector's checks, in its order and with its messages.
    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        if self.check_interval.is_zero() {
            return Err(invalid(
                "check_interval",
                "'check_interval' must be greater than zero",
            ));
        }
        if self.min_gc_interval_when_soft_limited < self.min_gc_interval_when_hard_limited {
            return Err(invalid(
                "min_gc_interval_when_soft_limited",
                "'min_gc_interval_when_soft_limited' should be larger than 'min_gc_interval_when_hard_limited'",
            ));
        }
        if self.limit_mib == 0 && self.limit_percentage == 0 {
            return Err(invalid(
                "limit_mib",
                "'limit_mib' or 'limit_percentage' must be greater than zero",
            ));
        }
        if self.limit_percentage > 100 || self.spike_limit_percentage > 100 {
            return Err(invalid(
                "limit_percentage",
                "'limit_percentage' and 'spike_limit_percentage' must be greater than zero and less than or equal to hundred",
            ));
        }
        if self.limit_mib > 0 && self.limit_mib <= self.spike_limit_mib {
            return Err(invalid(
                "spike_limit_mib",
                "'spike_limit_mib' must be smaller than 'limit_mib'",
            ));
        }
        if self.limit_percentage > 0 && self.limit_percentage <= self.spike_limit_percentage {
            return Err(invalid(
                "spike_limit_percentage",
                "'spike_limit_percentage' must be smaller than 'limit_percentage'",
            ));
        }
        Ok(Vec::new())
    }

    /// (hard, soft) limits in bytes; `total` is the memory available to the
    /// process, needed only for percentages.
    pub fn limits(&self, total: Option<u64>) -> Option<(u64, u64)> {
        let (limit, spike) = if self.limit_mib != 0 {
            (
                u64::from(self.limit_mib) * MIB,
                u64::from(self.spike_limit_mib) * MIB,
            )
        } else {
            let total = total?;
            (
                u64::from(self.limit_percentage) * total / 100,
                u64::from(self.spike_limit_percentage) * total / 100,
            )
        };
        let spike = if spike == 0 { limit / 5 } else { spike };
        Some((limit, limit.saturating_sub(spike)))
    }
}

/// Measures the process's memory in bytes.
pub type MemoryProbe = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The running processor.
pub struct MemoryLimiter {
    id: String,
    next: NextConsumer,
    must_refuse: AtomicBool,
    refused_spans: Counter,
}

/// What the periodic check needs, apart from the flag it sets.
struct Monitor {
    hard: u64,
    soft: u64,
    probe: MemoryProbe,
    release: Arc<dyn Fn() + Send + Sync>,
    min_release_soft: Duration,
    min_release_hard: Duration,
    last_release: Mutex<Option<Instant>>,
    /// This limiter's part in the process's [`MemoryPressure`].
    above_hard: HardLimitFlag,
    /// The memory measured at the last check.
    used: Gauge,
}

impl MemoryLimiter {
    /// Starts the processor and its check timer, measuring this process.
    /// It reports into `ctx.memory` and calls `ctx.release_memory` where
    /// the collector forces a GC. Must run inside a tokio runtime.
    pub fn start(
        id: &str,
        config: &Config,
        next: NextConsumer,
        ctx: &BuildContext,
    ) -> Arc<MemoryLimiter> {
        let probe: MemoryProbe = Arc::new(|| crate::memory::resident_bytes().unwrap_or(0));
        let release = ctx.release_memory;
        Self::start_with(
            id,
            config,
            next,
            probe,
            Arc::new(move || {
                if let Some(release) = release {
                    release();
                }
            }),
            crate::memory::total_memory(),
            &ctx.memory,
        )
    }

    pub(crate) fn start_with(
        id: &str,
        config: &Config,
        next: NextConsumer,
        probe: MemoryProbe,
        release: Arc<dyn Fn() + Send + Sync>,
        total: Option<u64>,
        pressure: &MemoryPressure,
    ) -> Arc<MemoryLimiter> {
        let limiter = Arc::new(MemoryLimiter {
            id: id.to_string(),
            next,
            must_refuse: AtomicBool::new(false),
            refused_spans: metrics::counter!(
                names::PROCESSOR_MEMORY_LIMITER_REFUSED_SPANS,
                "processor" => id.to_string()
            ),
        });
        let Some((hard, soft)) = config.limits(total) else {
            tracing::error!(
                processor = %id,
                "the memory available to the process is unknown; set limit_mib. Memory is not limited"
            );
            return limiter;
        };
        let gauge = |name: &'static str| metrics::gauge!(name, "processor" => id.to_string());
        gauge(names::MEMORY_LIMITER_HARD_LIMIT_BYTES).set(hard as f64);
        gauge(names::MEMORY_LIMITER_SOFT_LIMIT_BYTES).set(soft as f64);
        tracing::info!(
            processor = %id,
            limit_mib = hard / MIB,
            spike_limit_mib = (hard - soft) / MIB,
            check_interval = ?config.check_interval,
            "memory limiter configured"
        );
        let monitor = Monitor {
            hard,
            soft,
            probe,
            release,
            min_release_soft: config.min_gc_interval_when_soft_limited,
            min_release_hard: config.min_gc_interval_when_hard_limited,
            last_release: Mutex::new(None),
            above_hard: pressure.limiter(),
            used: gauge(names::MEMORY_LIMITER_USED_BYTES),
        };
        tokio::spawn(run_checks(
            Arc::downgrade(&limiter),
            monitor,
            config.check_interval,
        ));
        limiter
    }

    /// Whether new data is being refused.
    pub fn is_refusing(&self) -> bool {
        self.must_refuse.load(Ordering::Relaxed)
    }
}

/// Checks every `interval` while the processor lives.
async fn run_checks(limiter: Weak<MemoryLimiter>, monitor: Monitor, interval: Duration) {
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(limiter) = limiter.upgrade() else {
            return;
        };
        monitor.check(&limiter);
    }
}

impl Monitor {
    fn released_within(&self, interval: Duration) -> bool {
        let last = self.last_release.lock().unwrap_or_else(|e| e.into_inner());
        last.is_some_and(|at| at.elapsed() < interval)
    }

    fn release_and_measure(&self) -> u64 {
        (self.release)();
        *self.last_release.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        (self.probe)()
    }

    /// The collector's `CheckMemLimits`, with a release of freed memory
    /// where it forces a GC.
    fn check(&self, limiter: &MemoryLimiter) {
        let id = &limiter.id;
        let mut used = (self.probe)();
        tracing::debug!(processor = %id, cur_mem_mib = used / MIB, "memory in use");
        if used >= self.hard && !self.released_within(self.min_release_hard) {
            tracing::warn!(processor = %id, cur_mem_mib = used / MIB, "memory use is above the hard limit; releasing freed memory");
            used = self.release_and_measure();
            tracing::info!(processor = %id, cur_mem_mib = used / MIB, "memory use after the release");
        }
        self.above_hard.set(used >= self.hard);
        let was_refusing = limiter.must_refuse.load(Ordering::Relaxed);
        let mut must_refuse = used >= self.soft;
        // The collector forces a GC when it starts refusing and leaves the
        // rest to Go's own collector. Freed memory leaves the resident set
        // only when the allocator returns it, so tracegate releases again
        // on every check while refusing, at most every
        // `min_gc_interval_when_soft_limited`.
        if must_refuse && !self.released_within(self.min_release_soft) {
            if !was_refusing {
                tracing::info!(
                    processor = %id,
                    cur_mem_mib = used / MIB,
                    "memory use is above the soft limit; releasing freed memory"
                );
            }
            used = self.release_and_measure();
            must_refuse = used >= self.soft;
        }
        if was_refusing && !must_refuse {
            tracing::info!(
                processor = %id,
                cur_mem_mib = used / MIB,
                "memory use back within limits; accepting data again"
            );
        }
        if !was_refusing && must_refuse {
            tracing::warn!(
                processor = %id,
                cur_mem_mib = used / MIB,
                "memory use is above the soft limit; refusing data"
            );
        }
        self.used.set(used as f64);
        limiter.must_refuse.store(must_refuse, Ordering::Relaxed);
    }
}

#[async_trait]
impl Consumer for MemoryLimiter {
    async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
        if self.must_refuse.load(Ordering::Relaxed) {
            // Refused, not dropped: the client is told to retry, and the
            // receiver counts the spans as refused.
            self.refused_spans.increment(batch.len() as u64);
            return Err(ConsumeError::refused(
                "data refused due to high memory usage",
            ));
        }
        self.next.consume(batch).await
    }
}

#[async_trait]
impl Processor for MemoryLimiter {
    async fn flush(&self) {}
}

impl super::BuildProcessor for Config {
    fn build(&self, id: &str, next: NextConsumer, ctx: &super::BuildContext) -> super::Building {
        Ok(MemoryLimiter::start(id, self, next, ctx))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;
    use tracegate_model::otlp::{ExportTraceServiceRequest, ResourceSpans, ScopeSpans, Span};

    #[derive(Default)]
    struct Count(AtomicU64);

    #[async_trait]
    impl Consumer for Count {
        async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
            self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
            Ok(())
        }
    }

    fn batch(spans: usize) -> SpanBatch {
        SpanBatch::from_request(&ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: (0..spans)
                        .map(|i| Span {
                            trace_id: vec![1; 16],
                            span_id: vec![i as u8 + 1; 8],
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    fn config(json: serde_json::Value) -> Config {
        crate::config::from_value(json).unwrap()
    }

    #[test]
    fn validation_as_the_collector() {
        let ok = config(
            serde_json::json!({"check_interval": "1s", "limit_mib": 512, "spike_limit_mib": 128}),
        );
        assert!(ok.validate().unwrap().is_empty());
        let cases = [
            (serde_json::json!({"limit_mib": 512}), "check_interval"),
            (serde_json::json!({"check_interval": "1s"}), "limit_mib"),
            (
                serde_json::json!({"check_interval": "1s", "limit_mib": 100, "spike_limit_mib": 100}),
                "spike_limit_mib",
            ),
            (
                serde_json::json!({"check_interval": "1s", "limit_percentage": 101}),
                "limit_percentage",
            ),
            (
                serde_json::json!({"check_interval": "1s", "limit_percentage": 50, "spike_limit_percentage": 50}),
                "spike_limit_percentage",
            ),
            (
                serde_json::json!({"check_interval": "1s", "limit_mib": 10, "min_gc_interval_when_soft_limited": "1s", "min_gc_interval_when_hard_limited": "2s"}),
                "min_gc_interval_when_soft_limited",
            ),
        ];
        for (json, path) in cases {
            let e = config(json.clone()).validate().unwrap_err();
            assert_eq!(e.path, path, "{json}: {e}");
        }
    }

    #[test]
    fn limits_fixed_percentage_and_default_spike() {
        let fixed = config(
            serde_json::json!({"check_interval": "1s", "limit_mib": 512, "spike_limit_mib": 128}),
        );
        assert_eq!(fixed.limits(None), Some((512 * MIB, 384 * MIB)));
        let default_spike = config(serde_json::json!({"check_interval": "1s", "limit_mib": 100}));
        assert_eq!(default_spike.limits(None), Some((100 * MIB, 80 * MIB)));
        let pct = config(
            serde_json::json!({"check_interval": "1s", "limit_percentage": 80, "spike_limit_percentage": 20}),
        );
        assert_eq!(pct.limits(Some(1000 * MIB)), Some((800 * MIB, 600 * MIB)));
        assert_eq!(pct.limits(None), None);
    }

    /// Memory that the test sets; releasing frees `releasable` of it.
    struct FakeMemory {
        used: AtomicU64,
        releasable: AtomicU64,
        releases: AtomicU64,
    }

    fn limiter(memory: &Arc<FakeMemory>, sink: Arc<Count>) -> Arc<MemoryLimiter> {
        limiter_in(memory, sink, &MemoryPressure::default())
    }

    fn limiter_in(
        memory: &Arc<FakeMemory>,
        sink: Arc<Count>,
        pressure: &MemoryPressure,
    ) -> Arc<MemoryLimiter> {
        let probe_mem = memory.clone();
        let release_mem = memory.clone();
        let config = config(serde_json::json!({
            "check_interval": "1s", "limit_mib": 100, "spike_limit_mib": 20,
        }));
        MemoryLimiter::start_with(
            "memory_limiter",
            &config,
            sink,
            Arc::new(move || probe_mem.used.load(Ordering::Relaxed)),
            Arc::new(move || {
                let freed = release_mem.releasable.swap(0, Ordering::Relaxed);
                release_mem.used.fetch_sub(freed, Ordering::Relaxed);
                release_mem.releases.fetch_add(1, Ordering::Relaxed);
            }),
            None,
            pressure,
        )
    }

    async fn tick() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Let the check task run after the clock moved.
        tokio::task::yield_now().await;
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_above_the_soft_limit_and_accepts_again_below() {
        let memory = Arc::new(FakeMemory {
            used: AtomicU64::new(50 * MIB),
            releasable: AtomicU64::new(0),
            releases: AtomicU64::new(0),
        });
        let sink = Arc::new(Count::default());
        let ml = limiter(&memory, sink.clone());
        ml.consume(batch(3)).await.unwrap();
        memory.used.store(85 * MIB, Ordering::Relaxed);
        // Until the next check the old state holds, as in the collector.
        ml.consume(batch(1)).await.unwrap();
        tick().await;
        assert!(ml.is_refusing());
        // Above the soft limit a release is tried once (nothing to free).
        assert_eq!(memory.releases.load(Ordering::Relaxed), 1);
        let err = ml.consume(batch(5)).await.unwrap_err();
        assert!(matches!(err, ConsumeError::Refused { .. }), "{err:?}");
        assert_eq!(sink.0.load(Ordering::Relaxed), 4);
        memory.used.store(79 * MIB, Ordering::Relaxed);
        tick().await;
        assert!(!ml.is_refusing());
        ml.consume(batch(2)).await.unwrap();
        assert_eq!(sink.0.load(Ordering::Relaxed), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn above_the_hard_limit_memory_is_released_before_deciding() {
        let memory = Arc::new(FakeMemory {
            used: AtomicU64::new(120 * MIB),
            releasable: AtomicU64::new(60 * MIB),
            releases: AtomicU64::new(0),
        });
        let pressure = MemoryPressure::default();
        let ml = limiter_in(&memory, Arc::new(Count::default()), &pressure);
        tick().await;
        // The release brought it to 60 MiB: no need to refuse.
        assert!(!pressure.above_hard_limit());
        assert_eq!(memory.releases.load(Ordering::Relaxed), 1);
        assert!(!ml.is_refusing());
        // Every check above the hard limit releases again (min interval 0).
        memory.used.store(101 * MIB, Ordering::Relaxed);
        tick().await;
        assert_eq!(memory.releases.load(Ordering::Relaxed), 2);
        assert!(ml.is_refusing());
        // Components holding data are told to let go of what they can.
        assert!(pressure.above_hard_limit());
        tick().await;
        assert_eq!(memory.releases.load(Ordering::Relaxed), 3);
        memory.used.store(50 * MIB, Ordering::Relaxed);
        tick().await;
        assert!(!pressure.above_hard_limit());
        memory.used.store(101 * MIB, Ordering::Relaxed);
        tick().await;
        assert!(pressure.above_hard_limit());
        // A limiter that is gone no longer holds the pressure up.
        drop(ml);
        tick().await;
        tick().await;
        assert!(!pressure.above_hard_limit());
    }

    /// While refusing, freed memory is released again once the minimum
    /// interval has passed, so memory freed downstream lets data in again.
    #[tokio::test(start_paused = true)]
    async fn while_refusing_memory_is_released_again_after_the_interval() {
        let memory = Arc::new(FakeMemory {
            used: AtomicU64::new(90 * MIB),
            releasable: AtomicU64::new(0),
            releases: AtomicU64::new(0),
        });
        let ml = limiter(&memory, Arc::new(Count::default()));
        tick().await;
        assert!(ml.is_refusing());
        assert_eq!(memory.releases.load(Ordering::Relaxed), 1);
        // Downstream frees 40 MiB, but it only leaves the resident set on a
        // release: none before 10 s have passed since the last one.
        memory.releasable.store(40 * MIB, Ordering::Relaxed);
        for _ in 0..8 {
            tick().await;
            assert!(ml.is_refusing());
        }
        tick().await;
        tick().await;
        assert_eq!(memory.releases.load(Ordering::Relaxed), 2);
        assert!(!ml.is_refusing());
    }

    /// Its limits and what it measured are served, so an alert can fire
    /// before it refuses.
    #[tokio::test(start_paused = true)]
    async fn reports_its_limits_and_the_memory_it_measured() {
        let memory = Arc::new(FakeMemory {
            used: AtomicU64::new(50 * MIB),
            releasable: AtomicU64::new(0),
            releases: AtomicU64::new(0),
        });
        let recorder = Arc::new(crate::exporter::test_support::TestRecorder::default());
        let ml = metrics::with_local_recorder(recorder.as_ref(), || {
            limiter(&memory, Arc::new(Count::default()))
        });
        let gauge = |name| recorder.gauge(name, &[("processor", "memory_limiter")]);
        assert_eq!(
            gauge(names::MEMORY_LIMITER_HARD_LIMIT_BYTES),
            (100 * MIB) as f64
        );
        assert_eq!(
            gauge(names::MEMORY_LIMITER_SOFT_LIMIT_BYTES),
            (80 * MIB) as f64
        );
        tick().await;
        assert_eq!(gauge(names::MEMORY_LIMITER_USED_BYTES), (50 * MIB) as f64);
        // Measured after the release a check makes above the soft limit.
        memory.used.store(90 * MIB, Ordering::Relaxed);
        memory.releasable.store(5 * MIB, Ordering::Relaxed);
        tick().await;
        assert_eq!(gauge(names::MEMORY_LIMITER_USED_BYTES), (85 * MIB) as f64);
        assert!(ml.is_refusing());
    }

    #[tokio::test(start_paused = true)]
    async fn the_check_task_ends_with_the_processor() {
        let memory = Arc::new(FakeMemory {
            used: AtomicU64::new(0),
            releasable: AtomicU64::new(0),
            releases: AtomicU64::new(0),
        });
        let ml = limiter(&memory, Arc::new(Count::default()));
        drop(ml);
        tick().await;
        // The task held the probe's Arc; it is gone once the task ended.
        tick().await;
        assert_eq!(Arc::strong_count(&memory), 1);
    }
}
