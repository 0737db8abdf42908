//! The `tail_sampling` processor, as the collector's: spans are grouped by
//! trace and held until the trace is decided, then the sampled traces'
//! spans flow on (in their original resource/scope structure) and the rest
//! are counted as dropped.
//!
//! Pending traces live in `tracegate_sampling::tail::TraceShard`s, one per
//! worker task, fed over bounded channels by trace id (docs/architecture.md,
//! "The shard-per-core trace buffer"): no lock is taken per span. Each
//! shard decides with its own policy set; the sets share only the rate
//! budgets (per processor, as in the collector) and the adaptive states,
//! each behind a small lock of its own taken by that policy alone.
//!
//! While a memory limiter is above its hard limit (the
//! [`MemoryPressure`] of the build context), each worker holding pending traces
//! decides the oldest half of them (by memory) early, once per
//! [`MEMORY_CHECK_INTERVAL`]: kept ones flow on whole, the rest are
//! counted, all under `tracegate_tail_sampling_early_decisions{reason=
//! "memory_limit"}`. Halving on each check rather than emptying the buffer
//! keeps the younger traces' chance of a full decision while memory comes
//! back down over a few checks. When a memory limiter at its soft limit
//! asks for room, each worker wakes and lets its oldest traces give way
//! (decided ones kept for late spans forgotten, pending ones decided early
//! and forgotten) until it has freed its share.
//!
//! With `tail_storage`, every batch is journaled before it is acknowledged
//! and every decision after its kept spans are passed on ([`journal`]); at
//! startup the journal gives the pending traces back, and at shutdown they
//! stay in it instead of being decided early. What leaves the buffer
//! without a decision kept here (handed to another gateway, forgotten to
//! make room) is journaled as gone, and what another gateway hands over is
//! journaled before it is acknowledged, as any arrival.

pub mod handover;
pub mod journal;
#[cfg(test)]
mod journal_tests;
mod metrics_names;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use metrics::{Counter, Gauge, Histogram};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracegate_model::SpanBatch;
use tracegate_sampling::tail::adaptive::key::KeyFields;
use tracegate_sampling::tail::adaptive::{apply_tail_threshold, AdaptiveReport, FleetSize};
use tracegate_sampling::tail::{
    shard_of, Decider, Decision, DecisionReason, Pin, PolicyConfig, PolicySet, PolicyTally,
    Released, TraceBuffer, TraceBufferSettings, TraceId, TraceShard, TraceView, Verdict,
};

use self::handover::{Handover, HandoverExchange, Import, ShardHandover};
use super::Processor;
use crate::config::ComponentError;
use crate::consumer::{ConsumeError, Consumer, NextConsumer};
use crate::memory::{MemoryPressure, ShedRequests};
use crate::telemetry::names;
use journal::{Journal, JournalPlace, ShardJournal};
use metrics_names as m;

/// `processors: tail_sampling:`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Time from a trace's first span to its decision. `0s` is accepted as
    /// the collector accepts it: each trace is decided as soon as its first
    /// spans are taken in (the collector decides it at its next 1-second
    /// tick). Default `30s`.
    #[serde(
        default = "default_decision_wait",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub decision_wait: Duration,
    /// Decide this long after the trace's root span arrives, if that is
    /// sooner than `decision_wait`. `0s` turns it off. Default `0s`.
    #[serde(default, deserialize_with = "crate::duration::deserialize")]
    pub decision_wait_after_root_received: Duration,
    /// Traces held in memory (pending, plus decided ones remembered for
    /// late spans when no decision cache is configured). When full, the
    /// oldest gives way: tracegate decides an undecided one early (the
    /// collector deletes it). One bound for all shards. Default 50000.
    #[serde(default = "default_num_traces")]
    pub num_traces: u64,
    /// Accepted for compatibility; tracegate sizes its tables as they
    /// grow. Default 0.
    #[serde(default)]
    pub expected_new_traces_per_sec: u64,
    /// When `num_traces` is reached, hold new traces back (pushing back on
    /// the receivers) until pending ones are decided, instead of deciding
    /// the oldest early. Default false.
    #[serde(default)]
    pub block_on_overflow: bool,
    /// Stop evaluating policies at the first one that samples the trace
    /// (drop policies always run first). Default false.
    #[serde(default)]
    pub sample_on_first_match: bool,
    /// On shutdown, drop pending traces (counted) instead of deciding them
    /// with what has arrived. Default false.
    #[serde(default)]
    pub drop_pending_traces_on_shutdown: bool,
    /// A trace whose spans grow past this many (protobuf) bytes is not
    /// sampled, at once, and counted in `traces_dropped_too_large`. 0: no
    /// limit. Default 0.
    #[serde(default)]
    pub maximum_trace_size_bytes: u64,
    /// Decision caches for late spans.
    #[serde(default)]
    pub decision_cache: DecisionCacheConfig,
    /// The sampling policies, evaluated for every trace. Required.
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    /// tracegate: memory budget for pending spans (encoded bytes plus their
    /// index), split across shards; over it the oldest pending traces are
    /// decided early, counted. 0: no budget. Default 0: the collector has
    /// no such bound, so an unchanged collector config gets its decisions
    /// at `decision_wait` whatever the load (a `memory_limiter` at its
    /// limit still makes the oldest traces decide early).
    #[serde(default)]
    pub max_buffered_bytes: u64,
    /// tracegate: a trace with more spans is decided at once by the
    /// policies (its later spans follow that decision), so one huge trace
    /// cannot hold memory for `decision_wait`. 0: no limit. Default 0.
    #[serde(default)]
    pub max_spans_per_trace: u64,
    /// tracegate: shard workers. 0: `num_shards` if given, else one per
    /// available CPU. Default 0.
    #[serde(default)]
    pub shards: usize,
    /// The collector's shard count (1 to 256; its default 1). In tracegate
    /// it sets the number of shard workers when `shards` is not given;
    /// tracegate's rate budgets hold for the whole processor whatever the
    /// shards. Default: unset.
    #[serde(default)]
    pub num_shards: Option<usize>,
    /// `trace-complete` (the default): a trace is judged once, on all its
    /// spans, when its wait ends. `span-ingest`: each arriving batch is
    /// judged on its own as it comes, the trace is passed on (with what
    /// arrived before) at the first batch some policy samples, and a trace
    /// still undecided when its wait ends is not sampled. Only stateless
    /// policies are allowed with `span-ingest`, as in the collector.
    #[serde(default)]
    pub sampling_strategy: SamplingStrategy,
    /// Mark kept spans with the scope attribute `tailsampling.policy`
    /// (the policy that kept the trace) and, for late spans released by
    /// the decision cache, `tailsampling.cached_decision: true`, as the
    /// collector does under its `processor.tailsamplingprocessor.recordpolicy`
    /// feature gate. Costs a decode and re-encode of each marked batch.
    /// Default false.
    #[serde(default)]
    pub record_policy: bool,
    /// The collector's `tail_storage`: the id of a storage extension
    /// (`pebble_tail_storage` or `file_storage`) in which the spans of
    /// undecided traces and the decisions are journaled, so that a restart
    /// (a crash included) resumes the pending traces. The collector needs a
    /// feature gate and one shard for it; tracegate needs neither. Default:
    /// unset (memory only).
    #[serde(default)]
    pub tail_storage: Option<String>,
    /// tracegate: hand-over of traces in flight between the gateways of
    /// a fleet when its members change (`handover.rs`). Off when absent.
    #[serde(default)]
    pub handover: Option<handover::Config>,
    /// tracegate: compress the spans of pending traces once they have
    /// waited 100 ms (zstd against a dictionary per shard), so the same
    /// memory holds about four times the traces, for the CPU of
    /// compressing every buffered span once. Default false: under the
    /// memory limiter's overload the packing's CPU halved goodput (the
    /// `overload` end-to-end test), so it is opt-in until it is cheaper.
    #[serde(default)]
    pub pack_pending_spans: bool,
}

/// `sampling_strategy:`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum SamplingStrategy {
    #[default]
    #[serde(rename = "trace-complete")]
    TraceComplete,
    #[serde(rename = "span-ingest")]
    SpanIngest,
}

/// The collector's bound on `num_shards`.
const MAX_NUM_SHARDS: usize = 256;

/// `decision_cache:`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionCacheConfig {
    /// Trace ids remembered as sampled (LRU), so late spans are passed on
    /// at once. 0 turns the cache off. Default 0.
    #[serde(default)]
    pub sampled_cache_size: usize,
    /// Trace ids remembered as not sampled (LRU), so late spans are
    /// dropped at once. 0 turns the cache off. Default 0.
    #[serde(default)]
    pub non_sampled_cache_size: usize,
}

fn default_decision_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_num_traces() -> u64 {
    50_000
}

impl Default for Config {
    fn default() -> Self {
        Config {
            decision_wait: default_decision_wait(),
            decision_wait_after_root_received: Duration::ZERO,
            num_traces: default_num_traces(),
            expected_new_traces_per_sec: 0,
            block_on_overflow: false,
            sample_on_first_match: false,
            drop_pending_traces_on_shutdown: false,
            maximum_trace_size_bytes: 0,
            decision_cache: DecisionCacheConfig::default(),
            policies: Vec::new(),
            max_buffered_bytes: 0,
            max_spans_per_trace: 0,
            shards: 0,
            num_shards: None,
            sampling_strategy: SamplingStrategy::TraceComplete,
            record_policy: false,
            tail_storage: None,
            handover: None,
            pack_pending_spans: false,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        let err = |path: &str, message: String| ComponentError {
            path: path.into(),
            message,
        };
        if self.policies.is_empty() {
            return Err(err("policies", "at least one policy is required".into()));
        }
        if self.tail_storage.as_deref() == Some("") {
            return Err(err(
                "tail_storage",
                "tail_storage must name a storage extension".into(),
            ));
        }
        if self.num_traces == 0 {
            return Err(err("num_traces", "num_traces must be positive".into()));
        }
        if let Some(n) = self.num_shards {
            if !(1..=MAX_NUM_SHARDS).contains(&n) {
                return Err(err(
                    "num_shards",
                    format!("num_shards must be between 1 and {MAX_NUM_SHARDS}, got {n}"),
                ));
            }
        }
        let (set, mut warnings) = PolicySet::build(&self.policies, self.sample_on_first_match)
            .map_err(|e| err("policies", e.to_string()))?;
        if self.sampling_strategy == SamplingStrategy::SpanIngest {
            if let Some(name) = set.stateful_policy() {
                return Err(err(
                    "policies",
                    format!("sampling_strategy \"span-ingest\" requires all policies to be stateless, but policy {name:?} is stateful: rate_limiting, bytes_limiting and composite spend a budget per trace and throughput and dynamic count every trace, which one batch of a trace cannot judge"),
                ));
            }
        }
        if let Some(h) = &self.handover {
            let in_handover = |e: ComponentError| ComponentError {
                path: if e.path.is_empty() {
                    "handover".into()
                } else {
                    format!("handover.{}", e.path)
                },
                message: e.message,
            };
            warnings.extend(h.validate().map_err(in_handover)?);
        }
        if !self.decision_wait_after_root_received.is_zero()
            && self.decision_wait_after_root_received >= self.decision_wait
        {
            warnings.push(
                "decision_wait_after_root_received is not shorter than decision_wait, so it never shortens the wait".into(),
            );
        }
        warnings.extend(self.collector_differences());
        Ok(warnings)
    }

    /// Where this config keeps different traces than the collector would
    /// (docs/configuration.md, "Differences from the collector").
    fn collector_differences(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.decision_wait < Duration::from_secs(1) {
            warnings.push(format!(
                "decision_wait is {}: tracegate decides each trace exactly then; the collector \
                 counts the wait in whole seconds (at least one) on a 1-second tick, so it \
                 decides 1 to 2 s after the first span, and spans arriving in between join the \
                 trace there but are late here",
                crate::duration::format(self.decision_wait)
            ));
        }
        if let Some(n) = self.num_shards.filter(|&n| n > 1) {
            warnings.push(format!(
                "num_shards is {n}: the collector splits num_traces, the decision caches and the \
                 per-second rates of rate_limiting, bytes_limiting and composite evenly across \
                 its {n} shards; tracegate's limits hold for the whole processor"
            ));
        }
        warnings
    }

    fn buffer_settings(&self) -> TraceBufferSettings {
        TraceBufferSettings {
            decision_wait: self.decision_wait,
            decision_wait_after_root_received: self.decision_wait_after_root_received,
            num_traces: self.num_traces,
            max_buffered_bytes: self.max_buffered_bytes,
            maximum_trace_size_bytes: self.maximum_trace_size_bytes,
            max_spans_per_trace: self.max_spans_per_trace,
            block_on_overflow: self.block_on_overflow,
            sampled_cache_size: self.decision_cache.sampled_cache_size,
            non_sampled_cache_size: self.decision_cache.non_sampled_cache_size,
            span_ingest: self.sampling_strategy == SamplingStrategy::SpanIngest,
            pack_spans: self.pack_pending_spans,
            // Set per shard by `TraceBuffer::shard_settings`.
            table_capacity: 0,
            // Set in `start_with`, which knows the next stage.
            index_kept: true,
        }
    }

    fn shard_count(&self) -> usize {
        if self.shards > 0 {
            self.shards
        } else if let Some(n) = self.num_shards {
            n
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// Spans of one request for one shard.
struct Work {
    /// Shared by the shards the request's spans go to, not copied per
    /// shard: its index is as large as its spans' share of the bytes.
    batch: Arc<SpanBatch>,
    /// Indices of the spans that belong to the shard; `None`: all.
    spans: Option<Vec<u32>>,
    /// The batch's journal record, with `tail_storage`.
    pin: Option<Pin>,
}

/// Wall-clock time the library works in, advanced by tokio's clock (so
/// tests with a paused clock are exact).
#[derive(Clone, Copy)]
struct Clock {
    wall: Duration,
    instant: Instant,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            wall: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
            instant: Instant::now(),
        }
    }

    fn now(&self) -> Duration {
        self.wall + self.instant.elapsed()
    }

    fn instant_of(&self, at: Duration) -> Instant {
        self.instant + at.saturating_sub(self.wall)
    }
}

/// What the shards' policy sets share: their metrics. (The budgets and
/// adaptive states the sets share live in the sets,
/// [`PolicySet::build_shards`].)
struct SharedPolicies {
    /// Per policy.
    meters: Vec<PolicyMeters>,
    decision_latency: Histogram,
    /// The adaptive policies' metrics, published at most once per
    /// [`ADAPTIVE_REPORT_INTERVAL`].
    adaptive: AdaptiveMeters,
}

/// How often the adaptive policies' per-key metrics are published: each
/// report walks up to `max_keys` keys, too many for every emit.
const ADAPTIVE_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Metrics of the adaptive policies.
struct AdaptiveMeters {
    processor: String,
    /// Per policy index: its label.
    names: Vec<String>,
    next_report: Mutex<Option<std::time::Instant>>,
}

impl AdaptiveMeters {
    fn publish(&self, reports: Vec<(usize, AdaptiveReport)>) {
        for (index, report) in reports {
            let policy = self.names.get(index).cloned().unwrap_or_default();
            let labels = [
                ("processor", self.processor.clone()),
                ("policy", policy.clone()),
            ];
            if let Some(goal) = report.goal_per_second {
                metrics::gauge!(m::ADAPTIVE_GOAL_RATE, &labels).set(goal);
            }
            metrics::gauge!(m::ADAPTIVE_KEPT_RATE, &labels).set(report.kept_per_second);
            metrics::gauge!(m::ADAPTIVE_SEEN_RATE, &labels).set(report.seen_per_second);
            for key in report.keys {
                let labels = [
                    ("processor", self.processor.clone()),
                    ("policy", policy.clone()),
                    ("key", key.key),
                ];
                metrics::gauge!(m::ADAPTIVE_PROBABILITY, &labels).set(key.probability);
                let by = |decision: &'static str| {
                    let mut l = labels.to_vec();
                    l.push(("decision", decision.to_string()));
                    metrics::counter!(m::ADAPTIVE_TRACES, &l)
                };
                by("kept").increment(key.kept);
                by("dropped").increment(key.dropped);
            }
        }
    }
}

/// One policy's metrics, labelled as the collector labels them.
struct PolicyMeters {
    /// Per [`Decision::index`].
    traces: [Counter; 3],
    spans: [Counter; 3],
    executions: Counter,
    execution_micros: Counter,
    /// Evaluation time so far, and the whole µs of it already counted.
    nanos: AtomicU64,
    micros_counted: AtomicU64,
}

impl PolicyMeters {
    fn new(policy: String) -> PolicyMeters {
        let by_decision = |name: &'static str| {
            Decision::ALL.map(|d| {
                let (sampled, decision) = d.metric_labels();
                metrics::counter!(name, "policy" => policy.clone(), "sampled" => sampled, "decision" => decision)
            })
        };
        PolicyMeters {
            traces: by_decision(m::COUNT_TRACES_SAMPLED),
            spans: by_decision(m::COUNT_SPANS_SAMPLED),
            executions: metrics::counter!(m::POLICY_EXECUTION_COUNT, "policy" => policy.clone()),
            execution_micros: metrics::counter!(m::POLICY_EXECUTION_TIME_SUM, "policy" => policy),
            nanos: AtomicU64::new(0),
            micros_counted: AtomicU64::new(0),
        }
    }

    fn add(&self, tally: &PolicyTally) {
        for i in 0..3 {
            if tally.traces[i] > 0 {
                self.traces[i].increment(tally.traces[i]);
                self.spans[i].increment(tally.spans[i]);
            }
        }
        if tally.executions > 0 {
            self.executions.increment(tally.executions);
            let nanos = self
                .nanos
                .fetch_add(tally.execution_nanos, Ordering::Relaxed)
                + tally.execution_nanos;
            let micros = nanos / 1000;
            let counted = self.micros_counted.swap(micros, Ordering::Relaxed);
            if micros > counted {
                self.execution_micros.increment(micros - counted);
            }
        }
    }
}

/// One shard's policies: its own evaluator state, no lock between shards
/// (docs/architecture.md, "The shard-per-core trace buffer").
struct ShardPolicies {
    set: PolicySet,
    shared: Arc<SharedPolicies>,
}

impl ShardPolicies {
    /// Adds this shard's evaluations since the last call to the metrics.
    fn publish_tally(&mut self) {
        let tally = self.set.take_tally();
        for (meters, tally) in self.shared.meters.iter().zip(&tally) {
            meters.add(tally);
        }
        self.publish_adaptive(false);
    }

    /// The adaptive policies' metrics, when due (or `now`). Their state is
    /// shared by the shards' sets, so any shard reports it.
    fn publish_adaptive(&self, now: bool) {
        let adaptive = &self.shared.adaptive;
        if adaptive.names.is_empty() {
            return;
        }
        {
            let mut next = adaptive
                .next_report
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let at = std::time::Instant::now();
            if !now && next.is_some_and(|n| at < n) {
                return;
            }
            *next = Some(at + ADAPTIVE_REPORT_INTERVAL);
        }
        adaptive.publish(self.set.adaptive_reports());
    }
}

impl Decider for ShardPolicies {
    fn decide(&mut self, trace: &TraceView<'_>, now: Duration) -> Verdict {
        let started = std::time::Instant::now();
        let verdict = self.set.decide(trace, now);
        self.shared
            .decision_latency
            .record(started.elapsed().as_secs_f64() * 1e6);
        verdict
    }

    fn decide_span_ingest(&mut self, trace: &TraceView<'_>, now: Duration) -> Option<Verdict> {
        let started = std::time::Instant::now();
        let verdict = self.set.decide_span_ingest(trace, now);
        self.shared
            .decision_latency
            .record(started.elapsed().as_secs_f64() * 1e6);
        verdict
    }

    fn key_fields(&self) -> Option<&KeyFields> {
        self.set.key_fields()
    }
}

/// Handles for the processor-wide metrics.
struct Meters {
    global: [Counter; 3],
    new_traces: Counter,
    late_span_age: Histogram,
    cache_released_sampled: Counter,
    cache_released_not_sampled: Counter,
    too_large: Counter,
    early: [Counter; 5],
    traces_on_memory: Gauge,
    pending_traces: Gauge,
    buffered_bytes: Gauge,
    timer_latency: Histogram,
    removal_age: Histogram,
    dropped_not_sampled: Counter,
    dropped_by_policy: Counter,
    dropped_too_large: Counter,
    dropped_late: Counter,
    dropped_refused: Counter,
    dropped_shutdown: Counter,
    keys_over_cap: Counter,
    /// Whether [`NUM_TRACES_DIFFERS`] and [`MEMORY_LIMIT_DIFFERS`] were
    /// logged: once per processor, when its outcome first differs.
    warned_num_traces: AtomicBool,
    warned_memory_limit: AtomicBool,
}

/// Logged the first time a full `num_traces` makes a pending trace decide
/// early: from then on this processor keeps traces the collector would not.
pub(crate) const NUM_TRACES_DIFFERS: &str = "num_traces is reached: tracegate decides the oldest \
    pending trace early by the policies, where the collector drops it unsampled, so traces the \
    policies keep (errors, say) are kept here and lost there; counted in \
    tracegate_tail_sampling_early_decisions{reason=\"num_traces\"}. Raise num_traces, or set \
    block_on_overflow to hold new traces back instead";

/// Logged the first time a memory limiter (at its soft limit, or above its
/// hard limit) makes pending traces decide early, which the collector's
/// tail sampler never does.
pub(crate) const MEMORY_LIMIT_DIFFERS: &str = "a memory_limiter reached its limit: tracegate \
    decides the oldest pending traces early to free memory, where the collector keeps them \
    until decision_wait (its memory limiter only refuses new data); counted in \
    tracegate_tail_sampling_early_decisions{reason=\"memory_limit\"}";

impl Meters {
    fn new(id: &str) -> Meters {
        let dropped = |reason: &'static str| metrics::counter!(names::DROPPED_SPANS, "component" => id.to_string(), "reason" => reason);
        let global = |sampled: &'static str, decision: &'static str| metrics::counter!(m::GLOBAL_COUNT_TRACES_SAMPLED, "sampled" => sampled, "decision" => decision);
        let early = |reason: &'static str| metrics::counter!(m::EARLY_DECISIONS, "processor" => id.to_string(), "reason" => reason);
        // Registered so dashboards see zeros: tracegate never deletes an
        // undecided trace, and its policies cannot fail while evaluating.
        metrics::counter!(m::TRACE_DROPPED_TOO_EARLY).increment(0);
        metrics::counter!(m::POLICY_EVALUATION_ERROR).increment(0);
        Meters {
            global: [
                global("true", "sampled"),
                global("false", "not_sampled"),
                global("false", "dropped"),
            ],
            new_traces: metrics::counter!(m::NEW_TRACE_ID_RECEIVED),
            late_span_age: metrics::histogram!(m::LATE_SPAN_AGE),
            cache_released_sampled: metrics::counter!(m::EARLY_RELEASES_FROM_CACHE_DECISION, "sampled" => "true"),
            cache_released_not_sampled: metrics::counter!(m::EARLY_RELEASES_FROM_CACHE_DECISION, "sampled" => "false"),
            too_large: metrics::counter!(m::TRACES_DROPPED_TOO_LARGE),
            early: [
                early("num_traces"),
                early("max_buffered_bytes"),
                early("max_spans_per_trace"),
                early("memory_limit"),
                early("storage_full"),
            ],
            traces_on_memory: metrics::gauge!(m::TRACES_ON_MEMORY),
            pending_traces: metrics::gauge!(m::PENDING_TRACES, "processor" => id.to_string()),
            timer_latency: metrics::histogram!(m::DECISION_TIMER_LATENCY),
            removal_age: metrics::histogram!(m::TRACE_REMOVAL_AGE),
            buffered_bytes: metrics::gauge!(m::BUFFERED_BYTES, "processor" => id.to_string()),
            dropped_not_sampled: dropped("not_sampled"),
            dropped_by_policy: dropped("dropped_by_policy"),
            dropped_too_large: dropped("trace_too_large"),
            dropped_late: dropped("late_span_not_sampled"),
            dropped_refused: dropped("refused_downstream"),
            dropped_shutdown: dropped("pending_on_shutdown"),
            keys_over_cap: metrics::counter!(m::ADAPTIVE_KEYS_OVER_CAP, "processor" => id.to_string()),
            warned_num_traces: AtomicBool::new(false),
            warned_memory_limit: AtomicBool::new(false),
        }
    }
}

/// The running tail sampler.
pub struct TailSampler {
    id: String,
    /// The shards' queues, shared by every request (one reference count
    /// per request, not a clone of each sender); `None` once flushing.
    senders: Mutex<Option<Arc<[mpsc::Sender<Work>]>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    journal: Option<Arc<Journal>>,
    clock: Clock,
    /// With `handover`: its inbox, forwarder and members.
    handover: Option<Handover>,
    /// Stops following the members (the process's end).
    shutdown: CancellationToken,
}

/// Channel depth per shard, in requests: enough to ride out a burst while
/// a shard decides, small enough that a stuck shard pushes back quickly.
const SHARD_QUEUE: usize = 64;

/// How often a worker holding pending traces asks whether memory is above
/// a hard limit, and so the least time between two sheddings: the memory
/// limiter's usual `check_interval`, so each shedding is measured before
/// the next.
pub(crate) const MEMORY_CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl TailSampler {
    /// Starts the shard workers; while `memory` says a memory limiter is
    /// above its hard limit they shed pending traces. With a `journal`,
    /// first gives back the traces it holds (blocking file I/O, before any
    /// receiver listens). Must run inside a tokio runtime. `Err` when the
    /// policies cannot be built, which [`Config::validate`] reports first,
    /// or the journal cannot be opened.
    pub fn start(
        id: &str,
        config: Config,
        next: NextConsumer,
        memory: MemoryPressure,
        journal: Option<JournalPlace>,
    ) -> Result<Arc<TailSampler>, ComponentError> {
        Self::start_with(
            id,
            config,
            next,
            memory,
            journal,
            &HandoverExchange::default(),
            CancellationToken::new(),
        )
    }

    /// [`Self::start`] whose hand-over (if configured) takes requests
    /// through `exchange` and follows the members until `shutdown`.
    pub fn start_with(
        id: &str,
        config: Config,
        next: NextConsumer,
        memory: MemoryPressure,
        journal: Option<JournalPlace>,
        exchange: &HandoverExchange,
        shutdown: CancellationToken,
    ) -> Result<Arc<TailSampler>, ComponentError> {
        let shards = config.shard_count();
        // The live gateways, as hand-over's membership finds them: the
        // adaptive policies divide their per-second goals by it.
        let fleet = FleetSize::default();
        // One policy set per shard, sharing the processor-wide budgets.
        let (sets, _) = PolicySet::build_shards(
            &config.policies,
            config.sample_on_first_match,
            &fleet,
            shards,
        )
        .map_err(|e| ComponentError {
            path: "policies".into(),
            message: e.to_string(),
        })?;
        let set = &sets[0];
        // The collector labels policies `<component name>.<policy>` when
        // the component id has a name.
        let prefix = id.split_once('/').map(|(_, name)| format!("{name}."));
        let labels: Vec<String> = set
            .names()
            .iter()
            .map(|name| format!("{}{name}", prefix.as_deref().unwrap_or("")))
            .collect();
        let adaptive = !set.adaptive_reports().is_empty();
        let adaptive_names = if !adaptive {
            Vec::new()
        } else {
            labels.clone()
        };
        let policy_meters = labels.into_iter().map(PolicyMeters::new).collect();
        let record_policy = config.record_policy.then(|| {
            Arc::new(RecordNames {
                policies: set.names().to_vec(),
                composite_subs: set.composite_sub_names(),
            })
        });
        let shared = Arc::new(SharedPolicies {
            meters: policy_meters,
            decision_latency: metrics::histogram!(m::SAMPLING_DECISION_LATENCY),
            adaptive: AdaptiveMeters {
                processor: id.to_string(),
                names: adaptive_names,
                next_report: Mutex::new(None),
            },
        });
        let mut policies: Vec<ShardPolicies> = sets
            .into_iter()
            .map(|set| ShardPolicies {
                set,
                shared: shared.clone(),
            })
            .collect();
        let meters = Arc::new(Meters::new(id));
        let gauges = Arc::new(ShardGauges {
            pending: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            bytes: (0..shards).map(|_| AtomicU64::new(0)).collect(),
        });
        let mut settings = TraceBuffer::shard_settings(&config.buffer_settings(), shards);
        // Kept traces are indexed as they are assembled only when a stage
        // after this one reads spans, or this one writes to them (the
        // policy names, adaptive thresholds); otherwise only validated.
        settings.index_kept = next.reads_spans() || config.record_policy || adaptive;
        // num_traces bounds the traces of all shards together.
        let in_tables = Arc::new(AtomicU64::new(0));
        let clock = Clock::start();
        let mut buffers: Vec<TraceShard> = (0..shards)
            .map(|_| TraceShard::with_table_count(settings.clone(), in_tables.clone()))
            .collect();
        let mut restored: Vec<Released> = (0..shards).map(|_| Released::default()).collect();
        let mut shard_journals: Vec<Option<ShardJournal>> = (0..shards).map(|_| None).collect();
        let journal = match journal {
            None => None,
            Some(place) => {
                let storage = place.storage.clone();
                let (journal, replay) = Journal::open(place, id).map_err(|e| ComponentError {
                    path: "tail_storage".into(),
                    message: format!("cannot open the journal in {storage}: {e}"),
                })?;
                // Restored traces are decided by the first shard's set (its
                // worker publishes what it counted).
                let (per_shard, report) = journal.restore(
                    replay,
                    &mut buffers,
                    &mut policies[0],
                    clock.now(),
                    &mut restored,
                );
                tracing::info!(
                    processor = %id, storage = %storage,
                    records = report.records, bytes = report.bytes,
                    traces = report.traces, spans = report.spans,
                    decided_spans = report.decided_spans, gone_spans = report.gone_spans,
                    decisions = report.decisions,
                    lost_records = report.lost_records, overflow_spans = report.overflow_spans,
                    elapsed_ms = report.elapsed.as_millis() as u64,
                    "tail sampling journal restored"
                );
                shard_journals = per_shard.into_iter().map(Some).collect();
                Some(journal)
            }
        };
        // Hand-overs taken in are journaled before they are acknowledged.
        let (handover, mut handover_parts) = match &config.handover {
            Some(h) => {
                let (handover, parts) =
                    Handover::new(id, h, shards, clock, exchange, journal.clone(), &fleet)?;
                (Some(handover), parts.into_iter().map(Some).collect())
            }
            None => (None, Vec::new()),
        };
        let mut senders = Vec::with_capacity(shards);
        let mut workers = Vec::with_capacity(shards);
        let starts = buffers
            .into_iter()
            .zip(restored)
            .zip(shard_journals)
            .zip(policies)
            .enumerate();
        for (index, (((shard, restored), journal), policies)) in starts {
            let (tx, rx) = mpsc::channel(SHARD_QUEUE);
            senders.push(tx);
            let shard_handover = match (&handover, handover_parts.get_mut(index)) {
                (Some(h), Some(parts)) => parts.take().map(|parts| h.shard(parts)),
                _ => None,
            };
            let worker = ShardWorker {
                id: id.to_string(),
                index,
                shard,
                journal,
                policies,
                meters: meters.clone(),
                gauges: gauges.clone(),
                next: next.clone(),
                clock,
                drop_pending_on_shutdown: config.drop_pending_traces_on_shutdown,
                record_policy: record_policy.clone(),
                reported: Default::default(),
                shed_requests: memory.shedding_requests(),
                shards,
                memory: memory.clone(),
                next_memory_check: Instant::now() + MEMORY_CHECK_INTERVAL,
                handover: shard_handover,
            };
            workers.push(tokio::spawn(worker.run(rx, restored)));
        }
        Ok(Arc::new(TailSampler {
            id: id.to_string(),
            senders: Mutex::new(Some(senders.into())),
            workers: Mutex::new(workers),
            journal,
            clock,
            handover,
            shutdown,
        }))
    }

    fn senders(&self) -> Option<Arc<[mpsc::Sender<Work>]>> {
        self.senders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait]
impl Consumer for TailSampler {
    async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
        if batch.is_empty() {
            return Ok(());
        }
        let Some(senders) = self.senders() else {
            return Err(ConsumeError::refused(format!(
                "{} is shutting down",
                self.id
            )));
        };
        let n = senders.len();
        let closed = || ConsumeError::refused(format!("{} is shutting down", self.id));
        // Journaled before it is acknowledged: from here a crash loses none
        // of it.
        let pin: Option<Pin> = match &self.journal {
            Some(journal) => Some(self.journal_batch(journal, &batch).await?),
            None => None,
        };
        let batch = Arc::new(batch);
        if n == 1 {
            return senders[0]
                .send(Work {
                    batch,
                    spans: None,
                    pin,
                })
                .await
                .map_err(|_| closed());
        }
        let mut routes: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (i, span) in batch.spans().iter().enumerate() {
            routes[shard_of(&span.trace_id, n)].push(i as u32);
        }
        let whole = routes.iter().filter(|r| !r.is_empty()).count() == 1;
        for (sender, route) in senders.iter().zip(routes) {
            if route.is_empty() {
                continue;
            }
            let spans = if whole { None } else { Some(route) };
            sender
                .send(Work {
                    batch: Arc::clone(&batch),
                    spans,
                    pin: pin.clone(),
                })
                .await
                .map_err(|_| closed())?;
        }
        Ok(())
    }
}

impl TailSampler {
    /// Writes `batch` to the journal (on a blocking thread when the fsync
    /// policy may make the write wait for the disk).
    async fn journal_batch(
        &self,
        journal: &Arc<Journal>,
        batch: &SpanBatch,
    ) -> Result<Pin, ConsumeError> {
        let arrival = self.clock.now();
        let batch = batch.clone();
        let written = journal::write_off_thread(journal, move |j| j.append_spans(&batch, arrival))
            .await
            .map_err(|e| ConsumeError::refused(format!("{}: {e}", self.id)))?;
        match written {
            Ok(pin) => Ok(pin),
            Err(e) => Err(ConsumeError::refused(format!("{}: {e}", self.id))),
        }
    }
}

#[async_trait]
impl Processor for TailSampler {
    /// With `handover`: starts following the members (the first list must
    /// come, as for the agents' `loadbalancing` exporter).
    async fn ready(&self) -> Result<(), String> {
        match &self.handover {
            Some(h) => h.follow(self.shutdown.clone()).await,
            None => Ok(()),
        }
    }

    async fn flush(&self) {
        if let Some(h) = &self.handover {
            h.inbox.close();
        }
        // Closing the channels tells each worker to hand over (with
        // `handover`), then decide (or drop) what it holds and pass it on.
        drop(
            self.senders
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for worker in workers {
            if let Err(e) = worker.await {
                tracing::error!(processor = %self.id, error = %e, "tail sampling worker failed");
            }
        }
        if let Some(h) = &self.handover {
            h.forwarder.finish(h.shutdown_within()).await;
        }
        if let Some(journal) = &self.journal {
            journal.flush_acks();
            journal.report();
            journal.sync();
        }
    }
}

impl super::BuildProcessor for Config {
    fn build(&self, id: &str, next: NextConsumer, ctx: &super::BuildContext) -> super::Building {
        let mut config = self.clone();
        if let Some(handover) = &mut config.handover {
            // Hand-overs carry credentials when the other gateways' OTLP
            // port requires them.
            let otlp = &mut handover.protocol.otlp;
            otlp.client_auth =
                crate::auth::ClientAuth::resolve(&ctx.authenticators, otlp.auth.as_ref())
                    .map_err(|e| crate::config::error("handover.protocol.otlp.auth", e))?;
        }
        let journal = match &self.tail_storage {
            Some(storage) => Some(crate::tail_storage::journal_place(storage, id, ctx)?),
            None => None,
        };
        Ok(TailSampler::start_with(
            id,
            config,
            next,
            ctx.memory.clone(),
            journal,
            &ctx.handover,
            ctx.shutdown.clone(),
        )?)
    }
}

/// The names `record_policy` writes.
struct RecordNames {
    policies: Vec<String>,
    /// Per policy, its composite sub-policies' names.
    composite_subs: Vec<Vec<String>>,
}

struct ShardGauges {
    pending: Vec<AtomicU64>,
    bytes: Vec<AtomicU64>,
}

struct ShardWorker {
    id: String,
    index: usize,
    shard: TraceShard,
    /// With `tail_storage`: this shard's side of the journal.
    journal: Option<ShardJournal>,
    policies: ShardPolicies,
    meters: Arc<Meters>,
    gauges: Arc<ShardGauges>,
    next: NextConsumer,
    clock: Clock,
    drop_pending_on_shutdown: bool,
    /// Policy names, when kept spans are marked with them.
    record_policy: Option<Arc<RecordNames>>,
    /// Shard counters already turned into metrics.
    reported: tracegate_sampling::tail::ShardStats,
    /// Whether a memory limiter is above its hard limit.
    memory: MemoryPressure,
    /// Room memory limiters ask for; this worker frees its share.
    shed_requests: ShedRequests,
    /// Workers of this processor, among which a request is shared.
    shards: usize,
    /// When to next ask `memory`, while traces are pending.
    next_memory_check: Instant,
    /// With `handover`: this shard's side of it.
    handover: Option<ShardHandover>,
}

/// Why a shard worker woke.
enum Wake {
    /// A trace falls due, or a memory check.
    Due,
    /// A memory limiter asked for room.
    Room,
    Work(Work),
    /// Another gateway handed traces over, or the members changed.
    Handover(handover::Event),
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl ShardWorker {
    /// Takes work until the channel closes; `out` holds what a restore
    /// from the journal decided early, to pass on first.
    async fn run(mut self, mut rx: mpsc::Receiver<Work>, mut out: Released) {
        self.emit(&mut out).await;
        loop {
            let deadline = self.wake_at();
            let wake = {
                let handover = async {
                    match self.handover.as_mut() {
                        Some(h) => h.next_event().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    _ = sleep_until_some(deadline) => Wake::Due,
                    _ = self.shed_requests.arrived() => Wake::Room,
                    event = handover => Wake::Handover(event),
                    work = rx.recv() => match work {
                        Some(work) => Wake::Work(work),
                        None => break,
                    },
                }
            };
            let now = self.clock.now();
            match wake {
                Wake::Work(work) => {
                    // Spans of traces owned by another gateway go there;
                    // the journal records that they are not ours.
                    let work = match self.handover.as_mut() {
                        Some(h) => h.divert(work, &self.shard, now, &mut out.forgotten),
                        None => Some(work),
                    };
                    if let Some(work) = work {
                        let pin = work.pin.as_ref();
                        self.take(&work.batch, work.spans.as_deref(), None, pin, now, &mut out)
                            .await;
                    }
                }
                // Room is made below, as after any wake.
                Wake::Room => {}
                Wake::Due => {
                    // A run of the decision timer, as the collector times
                    // its ticks (in ms).
                    let started = std::time::Instant::now();
                    self.shard.poll(now, &mut self.policies, &mut out);
                    self.meters
                        .timer_latency
                        .record(started.elapsed().as_millis() as f64);
                }
                Wake::Handover(event) => self.on_handover(event, now, &mut out).await,
            }
            self.shed_if_above_hard_limit(now, &mut out);
            self.shed_if_asked(now, &mut out);
            if let Some(journal) = &mut self.journal {
                let decided =
                    journal.shed_if_full(&mut self.shard, now, &mut self.policies, &mut out);
                if decided > 0 {
                    tracing::debug!(processor = %self.id, shard = self.index, decided, "tail storage above its high-water mark; decided the oldest pending traces early");
                }
            }
            self.emit(&mut out).await;
        }
        // With `handover`, pending traces go to the members without this
        // gateway first (journaled as gone); what cannot go is taken back
        // (journaled again) and decided here, or with `tail_storage` kept
        // for the next start.
        if let Some(mut h) = self.handover.take() {
            for import in h.last_imports().await {
                let now = self.clock.now();
                self.import(import, now, &mut out).await;
            }
            let returned = h.hand_over_all(&mut self.shard, &mut out).await;
            // What left is journaled as gone before what came back is
            // journaled as an arrival again.
            self.emit(&mut out).await;
            for import in returned {
                let now = self.clock.now();
                self.import(import, now, &mut out).await;
            }
            self.emit(&mut out).await;
        }
        let now = self.clock.now();
        match &mut self.journal {
            // Pending traces stay journaled: the next start resumes them
            // with their decision_wait still running.
            Some(journal) if !self.drop_pending_on_shutdown => {
                let kept = journal.keep_pending(&self.shard);
                if kept > 0 {
                    tracing::info!(processor = %self.id, shard = self.index, traces = kept,
                        storage = %journal.journal().storage(),
                        "pending traces left in the tail storage for the next start");
                }
            }
            _ => self.shard.drain(
                now,
                self.drop_pending_on_shutdown,
                &mut self.policies,
                &mut out,
            ),
        }
        self.emit(&mut out).await;
    }

    /// Takes in `spans` of `batch` (all when `None`), as arriving spans or,
    /// with `arrivals`, as spans handed over with their traces' clocks.
    /// With `block_on_overflow`, waits for pending traces to fall due
    /// (passing on what they release) until all are taken.
    /// With `tail_storage`, `pin` is the journal record the spans are in.
    async fn take(
        &mut self,
        batch: &SpanBatch,
        spans: Option<&[u32]>,
        arrivals: Option<&HashMap<TraceId, handover::Arrival>>,
        pin: Option<&Pin>,
        now: Duration,
        out: &mut Released,
    ) {
        self.shard.set_pin(pin.cloned());
        let mut held = self.insert(batch, spans, arrivals, now, out);
        self.shard.set_pin(None);
        while let Some(rest) = held.take() {
            self.emit(out).await;
            let Some(wake) = self.wake_at() else {
                break;
            };
            tokio::time::sleep_until(wake).await;
            let now = self.clock.now();
            self.shard.poll(now, &mut self.policies, out);
            self.shed_if_above_hard_limit(now, out);
            self.shard.set_pin(pin.cloned());
            held = self.insert(&rest, None, arrivals, now, out);
            self.shard.set_pin(None);
        }
    }

    fn insert(
        &mut self,
        batch: &SpanBatch,
        spans: Option<&[u32]>,
        arrivals: Option<&HashMap<TraceId, handover::Arrival>>,
        now: Duration,
        out: &mut Released,
    ) -> Option<SpanBatch> {
        let decider = &mut self.policies;
        let all = 0..batch.len() as u32;
        match (spans, arrivals) {
            (None, None) => self.shard.insert(batch, now, decider, out),
            (Some(spans), None) => {
                self.shard
                    .insert_spans(batch, spans.iter().copied(), now, decider, out)
            }
            (spans, Some(arrivals)) => {
                let first_seen = |id: &TraceId| arrivals.get(id).map(|a| a.first_seen);
                match spans {
                    Some(spans) => self.shard.import_spans(
                        batch,
                        spans.iter().copied(),
                        first_seen,
                        now,
                        decider,
                        out,
                    ),
                    None => self
                        .shard
                        .import_spans(batch, all, first_seen, now, decider, out),
                }
            }
        }
    }

    async fn on_handover(&mut self, event: handover::Event, now: Duration, out: &mut Released) {
        match event {
            handover::Event::ViewChanged => {
                if let Some(h) = self.handover.as_mut() {
                    h.on_view_changed(&mut self.shard, out);
                }
            }
            handover::Event::Recheck => {
                if let Some(h) = self.handover.as_mut() {
                    h.on_recheck(&mut self.shard, out);
                }
            }
            handover::Event::Import(import) => self.import(import, now, out).await,
        }
    }

    /// Takes in what another gateway handed over (or a failed hand-over
    /// handed back). With `tail_storage`, what the inbox did not journal
    /// (spans taken back) is journaled first, and decisions remembered
    /// here go with the round's.
    async fn import(&mut self, import: Import, now: Duration, out: &mut Released) {
        match import {
            Import::Spans {
                batch,
                spans,
                arrivals,
                pin,
            } => {
                let (batch, spans, pin) = match (pin, &self.journal) {
                    (None, Some(journal)) => {
                        let journal = journal.journal().clone();
                        let (mine, pin) = self
                            .journal_taken_back(&journal, &batch, spans.as_deref(), &arrivals, now)
                            .await;
                        (mine, None, pin)
                    }
                    (pin, _) => (batch, spans, pin),
                };
                self.take(
                    &batch,
                    spans.as_deref(),
                    Some(&arrivals),
                    pin.as_ref(),
                    now,
                    out,
                )
                .await;
                if let Some(h) = self.handover.as_mut() {
                    h.mark_foreign(&self.shard, &arrivals);
                }
            }
            Import::Decisions(decisions) => {
                for decision in decisions {
                    // An unknown trace has the decision remembered (a
                    // pending one is decided by it, journaled as any
                    // decision; a decided one keeps its own).
                    let remembered = !self.shard.knows(&decision.trace_id);
                    self.shard
                        .import_decision(decision, now, &mut self.policies, out);
                    if let (true, Some(journal)) = (remembered, &mut self.journal) {
                        journal.note_handed_over([decision]);
                    }
                }
            }
        }
    }

    /// Journals spans of a failed hand-over as they come back (their
    /// journal records were let go as they left). Returns what to take in
    /// (the shard's spans alone) and their record. When the storage
    /// refuses, they are taken in unjournaled, logged.
    async fn journal_taken_back(
        &self,
        journal: &Arc<Journal>,
        batch: &Arc<SpanBatch>,
        spans: Option<&[u32]>,
        arrivals: &HashMap<TraceId, handover::Arrival>,
        now: Duration,
    ) -> (Arc<SpanBatch>, Option<Pin>) {
        let mine = match spans {
            Some(spans) => Arc::new(batch.select(spans)),
            None => batch.clone(),
        };
        match handover::journal_handed_over(journal, &mine, now, arrivals).await {
            Ok(pin) => (mine, Some(pin)),
            Err(error) => {
                tracing::warn!(processor = %self.id, shard = self.index, %error,
                    "spans of a failed hand-over taken back without a journal record");
                (mine, None)
            }
        }
    }

    /// When the worker must wake without new work: the next trace due, or
    /// the next memory check while traces are pending.
    fn wake_at(&self) -> Option<Instant> {
        let due = self.shard.next_deadline().map(|d| self.clock.instant_of(d));
        if self.shard.pending_traces() == 0 {
            return due;
        }
        Some(due.map_or(self.next_memory_check, |d| d.min(self.next_memory_check)))
    }

    /// Once per [`MEMORY_CHECK_INTERVAL`]: above a hard limit, decides the
    /// oldest pending traces early to shed half of their memory.
    fn shed_if_above_hard_limit(&mut self, now: Duration, out: &mut Released) {
        let at = Instant::now();
        if at < self.next_memory_check {
            return;
        }
        self.next_memory_check = at + MEMORY_CHECK_INTERVAL;
        if self.shard.pending_traces() == 0 || !self.memory.above_hard_limit() {
            return;
        }
        let decided = self
            .shard
            .decide_oldest_for_memory(now, &mut self.policies, out);
        tracing::debug!(processor = %self.id, shard = self.index, decided, "memory above the hard limit; decided the oldest pending traces early");
    }

    /// When a memory limiter asked for room: lets the oldest traces give
    /// way (decided ones forgotten, pending ones decided early) to free this
    /// worker's share of it. A shard with nothing pending may still hold
    /// decided traces for late spans: those go too.
    fn shed_if_asked(&mut self, now: Duration, out: &mut Released) {
        let asked = self.shed_requests.take();
        if asked == 0 {
            return;
        }
        let share = asked.div_ceil(self.shards as u64);
        let decided = self
            .shard
            .decide_oldest_to_free(share, now, &mut self.policies, out);
        tracing::debug!(processor = %self.id, shard = self.index, share, decided, "a memory limiter asked for room; the oldest traces gave way");
    }

    /// Passes on released spans and turns what happened into metrics.
    async fn emit(&mut self, out: &mut Released) {
        let round = self.journal.as_mut().map(|j| j.begin(out));
        self.pass_on(out).await;
        if let (Some(journal), Some(round)) = (&mut self.journal, round) {
            journal.commit(round, &self.shard);
            journal.journal().report();
        }
    }

    /// [`Self::emit`] without the journal.
    async fn pass_on(&mut self, out: &mut Released) {
        let meters = &self.meters;
        for decided in &out.decided {
            // As in the collector, a trace not sampled for being too large
            // is counted in traces_dropped_too_large only.
            if decided.reason == DecisionReason::TooLarge {
                continue;
            }
            // Counted by the gateway that decided it before a hand-over.
            if decided.reason == DecisionReason::Handover {
                continue;
            }
            let slot = match decided.verdict.decision {
                Decision::Sampled => 0,
                Decision::Dropped => 2,
                _ => 1,
            };
            meters.global[slot].increment(1);
        }
        for age in &out.late_span_ages {
            meters.late_span_age.record(age.as_secs() as f64);
        }
        for age in &out.removal_ages {
            meters.removal_age.record(age.as_secs() as f64);
        }
        if !out.decided.is_empty() {
            self.policies.publish_tally();
        }
        self.report_stats();
        let mut sampled = std::mem::take(&mut out.sampled);
        // Spans kept by adaptive policies carry the product of the
        // probability they arrived with and the tail's as their `th`.
        for (batch, by) in sampled.iter_mut().zip(&out.sampled_by) {
            if let Some(tail) = by.tail {
                *batch = apply_tail_threshold(batch, tail);
            }
        }
        if let Some(names) = &self.record_policy {
            for (batch, by) in sampled.iter_mut().zip(&out.sampled_by) {
                let policy = by
                    .policy
                    .and_then(|p| names.policies.get(p))
                    .map(String::as_str);
                let composite = by
                    .composite
                    .and_then(|(p, sub)| names.composite_subs.get(p)?.get(sub))
                    .map(String::as_str);
                *batch = mark_policy(batch, policy, composite, by.cached);
            }
        }
        out.clear();
        if sampled.is_empty() {
            return;
        }
        let batch = SpanBatch::concat(&sampled);
        drop(sampled);
        let spans = batch.len();
        if let Err(e) = self.next.consume(batch).await {
            self.meters.dropped_refused.increment(spans as u64);
            tracing::warn!(processor = %self.id, spans, error = %e, "next stage refused sampled spans; spans dropped");
        }
    }

    fn report_stats(&mut self) {
        let now = self.shard.stats();
        let was = self.reported;
        let m = &self.meters;
        let add = |c: &Counter, new: u64, old: u64| {
            if new > old {
                c.increment(new - old);
            }
        };
        add(&m.new_traces, now.new_traces, was.new_traces);
        add(
            &m.cache_released_sampled,
            now.cache_released_sampled_spans,
            was.cache_released_sampled_spans,
        );
        add(
            &m.cache_released_not_sampled,
            now.cache_released_not_sampled_spans,
            was.cache_released_not_sampled_spans,
        );
        add(&m.too_large, now.traces_too_large, was.traces_too_large);
        add(&m.early[0], now.early_num_traces, was.early_num_traces);
        add(&m.early[1], now.early_bytes, was.early_bytes);
        add(&m.early[2], now.early_max_spans, was.early_max_spans);
        add(&m.early[3], now.early_memory_limit, was.early_memory_limit);
        add(&m.early[4], now.early_storage_full, was.early_storage_full);
        for (differs, new, old, message) in [
            (
                &m.warned_num_traces,
                now.early_num_traces,
                was.early_num_traces,
                NUM_TRACES_DIFFERS,
            ),
            (
                &m.warned_memory_limit,
                now.early_memory_limit,
                was.early_memory_limit,
                MEMORY_LIMIT_DIFFERS,
            ),
        ] {
            if new > old && !differs.swap(true, Ordering::Relaxed) {
                tracing::warn!(processor = %self.id, "{message}");
            }
        }
        add(
            &m.dropped_by_policy,
            now.spans_dropped_by_policy,
            was.spans_dropped_by_policy,
        );
        add(
            &m.dropped_too_large,
            now.spans_too_large,
            was.spans_too_large,
        );
        add(
            &m.dropped_late,
            now.spans_late_not_sampled,
            was.spans_late_not_sampled,
        );
        add(
            &m.dropped_not_sampled,
            now.spans_not_sampled,
            was.spans_not_sampled,
        );
        add(
            &m.dropped_shutdown,
            now.spans_dropped_pending,
            was.spans_dropped_pending,
        );
        add(&m.keys_over_cap, now.keys_over_cap, was.keys_over_cap);
        self.reported = now;
        self.gauges.pending[self.index].store(self.shard.pending_traces(), Ordering::Relaxed);
        self.gauges.bytes[self.index].store(self.shard.buffered_bytes(), Ordering::Relaxed);
        let pending: u64 = self
            .gauges
            .pending
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum();
        let bytes: u64 = self
            .gauges
            .bytes
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum();
        // The collector's gauge counts its whole table: pending traces and
        // decided ones still held for late spans.
        m.traces_on_memory
            .set(self.shard.traces_in_all_tables() as f64);
        m.pending_traces.set(pending as f64);
        m.buffered_bytes.set(bytes as f64);
    }
}

/// The collector's `SetAttrOnScopeSpans`: the policy that kept the spans,
/// the composite sub-policy that did if a composite policy sampled the
/// trace, and whether a cached decision released them, on every scope.
fn mark_policy(
    batch: &SpanBatch,
    policy: Option<&str>,
    composite: Option<&str>,
    cached: bool,
) -> SpanBatch {
    use tracegate_model::otlp::{any_value, AnyValue, KeyValue};
    if policy.is_none_or(str::is_empty) && composite.is_none() && !cached {
        return batch.clone();
    }
    let put = |attrs: &mut Vec<KeyValue>, key: &str, value: any_value::Value| {
        let value = Some(AnyValue { value: Some(value) });
        match attrs.iter_mut().find(|kv| kv.key == key) {
            Some(kv) => kv.value = value,
            None => attrs.push(KeyValue {
                key: key.into(),
                value,
                ..Default::default()
            }),
        }
    };
    let mut request = batch.to_request();
    for rs in &mut request.resource_spans {
        for ss in &mut rs.scope_spans {
            let scope = ss.scope.get_or_insert_with(Default::default);
            if let Some(name) = policy.filter(|p| !p.is_empty()) {
                put(
                    &mut scope.attributes,
                    "tailsampling.policy",
                    any_value::Value::StringValue(name.into()),
                );
            }
            if let Some(sub) = composite {
                put(
                    &mut scope.attributes,
                    "tailsampling.composite_policy",
                    any_value::Value::StringValue(sub.into()),
                );
            }
            if cached {
                put(
                    &mut scope.attributes,
                    "tailsampling.cached_decision",
                    any_value::Value::BoolValue(true),
                );
            }
        }
    }
    SpanBatch::from_request(&request)
}
