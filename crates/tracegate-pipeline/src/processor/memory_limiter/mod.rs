//! The `memory_limiter` processor, as the collector's: the process's memory
//! is measured every `check_interval`; at the soft limit (`limit -
//! spike_limit`) new data is refused with a retryable error, and at or
//! above the hard limit (`limit`) the allocator is asked to return freed
//! memory (the collector forces a GC) and data holders to let go of what
//! they can.
//!
//! Memory is the allocator's live bytes (jemalloc's `stats.allocated`, from
//! the build context's [`Allocator`](crate::memory::Allocator)), as the
//! collector reads Go's heap, plus what the resident set held beyond them at
//! the last check (the binary, stacks, the allocator's metadata and the
//! freed pages it has not returned yet): the live bytes fall as soon as data
//! is freed, where the resident set falls only when the allocator returns
//! pages, and the rest moves slowly, so the limits bound the resident set
//! without waiting for it. Without an allocator hook it is the resident
//! set. The pages the allocator has freed but keeps for reuse are part of
//! that rest; when they alone put memory over the soft limit, the check has
//! them returned at once rather than refuse data.
//!
//! Unlike the collector, which refuses every batch from the check that
//! finds memory above the soft limit until the check that finds it below,
//! tracegate decides per batch ([`gate`]): a batch is refused when it would
//! take memory past the soft limit, counting what the batches admitted since
//! the last reading will add, so the limit is not crossed between checks
//! and only what does not fit is refused. A refusal tells the client when to
//! come back, from how fast memory drains, and asks the tail sampler to
//! decide its oldest traces early to make room.

mod gate;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use metrics::Counter;
use serde::Deserialize;
use tokio::time::{Instant, MissedTickBehavior};
use tracegate_model::SpanBatch;

use self::gate::Gate;
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
    /// Cap of the backoff between releases above the soft limit: a release
    /// that returns less than 5 % of the resident set doubles the interval
    /// (from the larger of `min_gc_interval_when_soft_limited` and 95 % of
    /// `check_interval`) up to this; an effective release, or memory below
    /// the soft limit, resets it. `0s` turns the backoff off. Default `30s`.
    #[serde(
        default = "default_max_release",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub max_gc_interval_when_soft_limited: Duration,
    /// The same above the hard limit. Default `30s`.
    #[serde(
        default = "default_max_release",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub max_gc_interval_when_hard_limited: Duration,
}

fn default_min_release_soft() -> Duration {
    Duration::from_secs(10)
}

fn default_max_release() -> Duration {
    Duration::from_secs(30)
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
            max_gc_interval_when_soft_limited: default_max_release(),
            max_gc_interval_when_hard_limited: default_max_release(),
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
        let (max_soft, max_hard) = (
            self.max_gc_interval_when_soft_limited,
            self.max_gc_interval_when_hard_limited,
        );
        if !max_soft.is_zero() && max_soft < self.min_gc_interval_when_soft_limited {
            return Err(invalid(
                "max_gc_interval_when_soft_limited",
                "'max_gc_interval_when_soft_limited' must be greater than or equal to 'min_gc_interval_when_soft_limited' (or 0 to disable)",
            ));
        }
        if !max_hard.is_zero() && max_hard < self.min_gc_interval_when_hard_limited {
            return Err(invalid(
                "max_gc_interval_when_hard_limited",
                "'max_gc_interval_when_hard_limited' must be greater than or equal to 'min_gc_interval_when_hard_limited' (or 0 to disable)",
            ));
        }
        if !max_soft.is_zero() && !max_hard.is_zero() && max_soft < max_hard {
            return Err(invalid(
                "max_gc_interval_when_soft_limited",
                "'max_gc_interval_when_soft_limited' should be larger than or equal to 'max_gc_interval_when_hard_limited' (when both are set)",
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

/// What the limiter measures and releases: the allocator's live bytes and
/// its release, and the resident set, which tells whether a release helped
/// and, with `live` from the allocator, what the process holds beyond it.
#[derive(Clone)]
pub struct MemorySource {
    pub live: MemoryProbe,
    pub resident: Arc<dyn Fn() -> Option<u64> + Send + Sync>,
    pub release: Arc<dyn Fn() + Send + Sync>,
    /// Bytes of the resident set that `release` returns at once: the pages
    /// the allocator has freed and not yet returned (0 when unknown).
    pub freed: MemoryProbe,
    /// Whether `live` leaves part of the resident set out (the allocator's
    /// count does; the resident set itself does not).
    pub partial: bool,
}

impl MemorySource {
    /// This process: the allocator's live bytes and release when the build
    /// context has them, else the resident set and nothing to release.
    pub fn of_process(ctx: &BuildContext) -> MemorySource {
        let resident = || crate::memory::resident_bytes();
        type Release = Arc<dyn Fn() + Send + Sync>;
        let (live, release, freed): (MemoryProbe, Release, MemoryProbe) = match ctx.allocator {
            Some(a) => (
                Arc::new(move || (a.live_bytes)().or_else(resident).unwrap_or(0)),
                Arc::new(a.release),
                Arc::new(move || (a.freed_bytes)().unwrap_or(0)),
            ),
            None => (
                Arc::new(move || resident().unwrap_or(0)),
                Arc::new(|| {}),
                Arc::new(|| 0),
            ),
        };
        MemorySource {
            live,
            resident: Arc::new(resident),
            release,
            freed,
            partial: ctx.allocator.is_some(),
        }
    }
}

/// The running processor.
pub struct MemoryLimiter {
    next: NextConsumer,
    gate: Arc<Gate>,
    /// Whether the last check found memory at or above the soft limit.
    above_soft: Arc<std::sync::atomic::AtomicBool>,
    refused_spans: Counter,
}

/// What the periodic check keeps between checks.
struct Monitor {
    id: String,
    gate: Arc<Gate>,
    /// [`MemorySource::partial`].
    partial: bool,
    resident: Arc<dyn Fn() -> Option<u64> + Send + Sync>,
    release: Arc<dyn Fn() + Send + Sync>,
    /// [`MemorySource::freed`].
    freed: MemoryProbe,
    check_interval: Duration,
    min_release_soft: Duration,
    min_release_hard: Duration,
    max_release_soft: Duration,
    max_release_hard: Duration,
    last_release: Option<Instant>,
    /// The backoff of each path, grown by releases that did not help.
    backoff_soft: Duration,
    backoff_hard: Duration,
    /// The last release made because freed pages alone seemed to put
    /// memory over the soft limit left it there: the allocator's count
    /// includes pages never touched, which are not resident. Until memory
    /// falls under the soft limit, releases wait for the interval again.
    freed_release_failed: bool,
    above_soft: Arc<std::sync::atomic::AtomicBool>,
    /// This limiter's part in the process's [`MemoryPressure`].
    above_hard: HardLimitFlag,
    /// The memory measured at the last check.
    used: metrics::Gauge,
}

/// A release that returns less than this share (%) of the resident set
/// did not help, and the next one waits longer (the collector's 5 % rule,
/// applied to what a release can change).
const RELEASE_EFFECTIVE_PERCENT: u64 = 5;

impl MemoryLimiter {
    /// Starts the processor and its check timer, measuring this process.
    /// It reports into `ctx.memory` and releases memory through
    /// `ctx.allocator` where the collector forces a GC. Must run inside a
    /// tokio runtime. `Err`, as in the collector, when a percentage limit
    /// is set and the memory available cannot be read.
    pub fn start(
        id: &str,
        config: &Config,
        next: NextConsumer,
        ctx: &BuildContext,
    ) -> Result<Arc<MemoryLimiter>, ComponentError> {
        let total = if config.limit_mib == 0 {
            let total = crate::memory::total_memory().map_err(|e| ComponentError {
                path: "limit_percentage".into(),
                message: format!(
                    "failed to get total memory, use fixed memory settings (limit_mib): {e}"
                ),
            })?;
            tracing::info!(
                processor = %id,
                total_memory_mib = total / MIB,
                limit_percentage = config.limit_percentage,
                spike_limit_percentage = config.spike_limit_percentage,
                "using a percentage memory limit"
            );
            Some(total)
        } else {
            None
        };
        Ok(Self::start_with(
            id,
            config,
            next,
            MemorySource::of_process(ctx),
            total,
            &ctx.memory,
        ))
    }

    pub(crate) fn start_with(
        id: &str,
        config: &Config,
        next: NextConsumer,
        memory: MemorySource,
        total: Option<u64>,
        pressure: &MemoryPressure,
    ) -> Arc<MemoryLimiter> {
        let (hard, soft) = config
            .limits(total)
            .expect("limit_mib, or the total memory for a percentage");
        tracing::info!(
            processor = %id,
            limit_mib = hard / MIB,
            spike_limit_mib = (hard - soft) / MIB,
            check_interval = ?config.check_interval,
            "memory limiter configured"
        );
        let gauge = |name: &'static str| metrics::gauge!(name, "processor" => id.to_string());
        gauge(names::MEMORY_LIMITER_HARD_LIMIT_BYTES).set(hard as f64);
        gauge(names::MEMORY_LIMITER_SOFT_LIMIT_BYTES).set(soft as f64);
        let gate = Arc::new(Gate::new(
            hard,
            soft,
            memory.live,
            config.check_interval,
            pressure.clone(),
        ));
        if memory.partial {
            if let Some(resident) = (memory.resident)() {
                gate.set_resident(resident);
                gate.read();
            }
        }
        let above_soft = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let limiter = Arc::new(MemoryLimiter {
            next,
            gate: gate.clone(),
            above_soft: above_soft.clone(),
            refused_spans: metrics::counter!(
                names::PROCESSOR_MEMORY_LIMITER_REFUSED_SPANS,
                "processor" => id.to_string()
            ),
        });
        let monitor = Monitor {
            id: id.to_string(),
            gate,
            partial: memory.partial,
            resident: memory.resident,
            release: memory.release,
            freed: memory.freed,
            check_interval: config.check_interval,
            min_release_soft: config.min_gc_interval_when_soft_limited,
            min_release_hard: config.min_gc_interval_when_hard_limited,
            max_release_soft: config.max_gc_interval_when_soft_limited,
            max_release_hard: config.max_gc_interval_when_hard_limited,
            last_release: None,
            backoff_soft: Duration::ZERO,
            backoff_hard: Duration::ZERO,
            freed_release_failed: false,
            above_soft,
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

    /// Whether the last check found memory at or above the soft limit.
    pub fn is_refusing(&self) -> bool {
        self.above_soft.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Checks every `interval` while the processor lives.
async fn run_checks(
    limiter: std::sync::Weak<MemoryLimiter>,
    mut monitor: Monitor,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if limiter.strong_count() == 0 {
            return;
        }
        monitor.check();
    }
}

impl Monitor {
    fn released_within(&self, interval: Duration) -> bool {
        self.last_release.is_some_and(|at| at.elapsed() < interval)
    }

    /// Releases freed memory; whether that returned at least
    /// [`RELEASE_EFFECTIVE_PERCENT`] of the resident set. Reads memory again.
    fn release(&mut self) -> (u64, bool) {
        let before = (self.resident)();
        (self.release)();
        self.last_release = Some(Instant::now());
        let after = (self.resident)();
        let used = self.read(after);
        let effective = match (before, after) {
            (Some(b), Some(a)) => a <= b - b * RELEASE_EFFECTIVE_PERCENT / 100,
            _ => true,
        };
        (used, effective || used < self.gate.soft)
    }

    /// The collector's backoff step: from the larger of the configured
    /// minimum and 95 % of the check interval, doubling up to the maximum;
    /// pinned to the minimum when the maximum is 0.
    fn next_backoff(&self, current: Duration, min: Duration, max: Duration) -> Duration {
        if max.is_zero() {
            return min;
        }
        let floor = min.max(self.check_interval.mul_f64(0.95));
        (current.max(floor) * 2).min(max.max(min))
    }

    /// The collector's `CheckMemLimits`, releasing freed memory where it
    /// forces a GC, and asking holders to shed what is over the soft limit.
    /// Reads memory, counting what the process holds beyond the live
    /// bytes as `resident` shows it.
    fn read(&self, resident: Option<u64>) -> u64 {
        if let (true, Some(resident)) = (self.partial, resident) {
            self.gate.set_resident(resident);
        }
        self.gate.read()
    }

    fn check(&mut self) {
        let id = self.id.clone();
        let mut used = self.read((self.resident)());
        tracing::debug!(processor = %id, cur_mem_mib = used / MIB, "memory in use");
        let was_above = self.above_soft.load(std::sync::atomic::Ordering::Relaxed);
        if used < self.gate.soft {
            // Memory came down on its own.
            self.backoff_soft = Duration::ZERO;
            self.backoff_hard = Duration::ZERO;
            self.freed_release_failed = false;
        } else {
            let hard = used >= self.gate.hard;
            let wait = if hard {
                self.min_release_hard.max(self.backoff_hard)
            } else {
                self.min_release_soft.max(self.backoff_soft)
            };
            // Pages the allocator has freed but still holds go back at
            // once: when they alone put memory over the soft limit,
            // returning them should help, so no interval holds it back
            // (the allocator keeps them for seconds to reuse them, which
            // must not cost refusals). Once such a release did not bring
            // memory under the limit, the interval and backoff hold again.
            let freed_pages_suffice =
                !self.freed_release_failed && used - (self.freed)().min(used) < self.gate.soft;
            if freed_pages_suffice || !self.released_within(wait) {
                if hard {
                    tracing::warn!(processor = %id, cur_mem_mib = used / MIB, "memory use is above the hard limit; releasing freed memory");
                } else if !was_above {
                    // As the collector logs each GC it forces on crossing
                    // the soft limit.
                    tracing::info!(processor = %id, cur_mem_mib = used / MIB, "memory use is above the soft limit; releasing freed memory");
                }
                let (after, effective) = self.release();
                used = after;
                if freed_pages_suffice {
                    self.freed_release_failed = after >= self.gate.soft;
                }
                if effective {
                    self.backoff_soft = Duration::ZERO;
                    self.backoff_hard = Duration::ZERO;
                } else {
                    self.backoff_soft = self.next_backoff(
                        self.backoff_soft,
                        self.min_release_soft,
                        self.max_release_soft,
                    );
                    self.backoff_hard = self.next_backoff(
                        self.backoff_hard,
                        self.min_release_hard,
                        self.max_release_hard,
                    );
                    tracing::debug!(
                        processor = %id,
                        next_soft_interval = ?self.backoff_soft,
                        next_hard_interval = ?self.backoff_hard,
                        "releasing returned little memory; releasing less often"
                    );
                }
                if hard {
                    tracing::info!(processor = %id, cur_mem_mib = used / MIB, "memory use after the release");
                }
            }
        }
        self.used.set(used as f64);
        self.above_hard.set(used >= self.gate.hard);
        let above = used >= self.gate.soft;
        if above {
            // What is over the line now: holders make room for what comes.
            self.gate.shed(0);
        }
        if was_above && !above {
            tracing::info!(processor = %id, cur_mem_mib = used / MIB, "memory use back within limits; accepting data again");
        }
        if !was_above && above {
            tracing::warn!(processor = %id, cur_mem_mib = used / MIB, "memory use is above the soft limit; refusing data");
        }
        self.above_soft
            .store(above, std::sync::atomic::Ordering::Relaxed);
    }
}

#[async_trait]
impl Consumer for MemoryLimiter {
    /// It weighs batches by their encoded size.
    fn reads_spans(&self) -> bool {
        self.next.reads_spans()
    }

    async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
        if let Err(retry_after) = self.gate.admit(batch.encoded_len() as u64) {
            // Refused, not dropped: the client is told to retry, and the
            // receiver counts the spans as refused.
            self.refused_spans.increment(batch.len() as u64);
            return Err(ConsumeError::Refused {
                reason: "data refused due to high memory usage".into(),
                retry_after: Some(retry_after),
            });
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
        Ok(MemoryLimiter::start(id, self, next, ctx)?)
    }
}
