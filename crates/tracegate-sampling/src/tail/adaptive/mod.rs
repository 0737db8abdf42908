//! Adaptive tail-sampling policies (docs/architecture.md, "Adaptive tail
//! sampling"): `throughput` keeps about a goal number of traces per
//! second, `dynamic` gives each key of a trace (`service.name`,
//! `http.route`, ...) its own keep probability so that rare keys keep more
//! than frequent ones. Both follow Refinery's EMA samplers
//! (dynsampler-go's `EMAThroughput` and `EMASampleRate`), with the
//! differences docs/configuration.md lists.
//!
//! What they share, here:
//! - [`FleetSize`]: the number of live gateways, which divides a per-second
//!   goal; the membership watcher stores it, decisions only load it;
//! - [`TraceSeed`]: the trace's OTEP 235 randomness and the threshold its
//!   first span arrived with. A policy keeping a trace with probability
//!   `p` keeps it when its randomness passes the threshold of
//!   `p_in × p` ([`keep_at`]), so the decision is consistent with the `th`
//!   written on its spans ([`apply_tail_threshold`]);
//! - the settings both read (durations, keys), and what they report for
//!   metrics ([`AdaptiveReport`]).
//!
//! State is kept behind a small mutex per policy, taken once per decision,
//! so the policies can later be shared by shards deciding in parallel.

pub mod dynamic;
pub mod key;
pub mod throughput;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tracegate_model::trace_state::{Randomness, Threshold, TraceState};
use tracegate_model::SpanBatch;

use crate::head::otep235::{threshold_for_probability, DEFAULT_PRECISION, MIN_PROBABILITY};

pub use dynamic::DynamicConfig;
pub use throughput::ThroughputConfig;

/// The number of live gateways sharing a goal: 1 until a membership
/// watcher says otherwise. Clones share the count.
#[derive(Debug, Clone)]
pub struct FleetSize(Arc<AtomicUsize>);

impl Default for FleetSize {
    fn default() -> Self {
        FleetSize(Arc::new(AtomicUsize::new(1)))
    }
}

impl FleetSize {
    /// Stores the live member count (0, no members known, counts as 1).
    pub fn set(&self, members: usize) {
        self.0.store(members.max(1), Ordering::Relaxed);
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed).max(1)
    }
}

/// What a consistent tail decision needs of a trace: its randomness (an
/// explicit `rv` of its first span, else the low 56 bits of its id) and the
/// threshold its first span arrived with (0: none, kept with probability 1
/// so far).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceSeed {
    pub randomness: u64,
    pub threshold: u64,
}

impl TraceSeed {
    /// No tracestate: the trace id's randomness, no threshold.
    pub fn of_trace_id(trace_id: &[u8; 16]) -> TraceSeed {
        TraceSeed {
            randomness: Randomness::from_trace_id(trace_id).unsigned(),
            threshold: 0,
        }
    }

    /// From span `span` of `batch`: its tracestate's `rv` and `th` when it
    /// parses, the trace id's randomness otherwise. A `th` the randomness
    /// does not pass is inconsistent and ignored, as the collector's
    /// samplers clear it.
    pub fn of_span(batch: &SpanBatch, span: usize) -> TraceSeed {
        let mut seed = TraceSeed::of_trace_id(&batch.spans()[span].trace_id);
        let raw = batch.span_trace_state(span);
        if raw.is_empty() {
            return seed;
        }
        if let Ok(ts) = TraceState::parse(raw) {
            if let Some(rv) = ts.ot.randomness {
                seed.randomness = rv.unsigned();
            }
            if let Some(th) = ts.ot.threshold {
                if th.unsigned() <= seed.randomness {
                    seed.threshold = th.unsigned();
                }
            }
        }
        seed
    }

    /// The probability the trace was kept with before it got here.
    pub fn incoming_probability(&self) -> f64 {
        Threshold::from_unsigned(self.threshold).map_or(0.0, Threshold::probability)
    }
}

/// The tail threshold of keep probability `p` (clamped to what OTEP 235
/// can express), rounded as head sampling rounds: the policies keep and
/// write exactly this.
pub fn tail_threshold(p: f64) -> Threshold {
    if p.is_nan() || p <= 0.0 {
        return Threshold::from_unsigned(threshold_of(MIN_PROBABILITY)).unwrap_or(Threshold::NEVER);
    }
    threshold_for_probability(p.clamp(MIN_PROBABILITY, 1.0), DEFAULT_PRECISION)
        .unwrap_or(Threshold::NEVER)
}

fn threshold_of(p: f64) -> u64 {
    threshold_for_probability(p, DEFAULT_PRECISION)
        .unwrap_or(Threshold::NEVER)
        .unsigned()
}

/// The threshold written on a span that arrived with probability `p_in`
/// and was kept by the tail with threshold `tail`: the product of the two
/// probabilities, as the collector's `proportional` mode combines them.
pub fn combined_threshold(p_in: f64, tail: Threshold) -> Threshold {
    if p_in >= 1.0 {
        return tail;
    }
    let p = p_in * tail.probability();
    if tail == Threshold::ALWAYS {
        return threshold_for_probability(p_in, DEFAULT_PRECISION).unwrap_or(Threshold::NEVER);
    }
    if p < MIN_PROBABILITY {
        return Threshold::NEVER;
    }
    threshold_for_probability(p.min(1.0), DEFAULT_PRECISION).unwrap_or(Threshold::NEVER)
}

/// Whether a trace with `seed` is kept at tail threshold `tail`: its
/// randomness passes the combined threshold (given that it passed the
/// incoming one, that happens with probability `tail.probability()`).
pub fn keep_at(seed: TraceSeed, tail: Threshold) -> bool {
    if tail == Threshold::ALWAYS {
        return true;
    }
    if seed.threshold == 0 {
        return tail.unsigned() <= seed.randomness;
    }
    combined_threshold(seed.incoming_probability(), tail).unsigned() <= seed.randomness
}

/// The spans of a trace the tail kept with threshold `tail`, each with its
/// tracestate's `th` raised to the product of its incoming probability and
/// the tail's. A span kept with probability 1 that came without `th` gets
/// `th:0`, so every kept span says its weight. Spans whose tracestate does
/// not parse keep it unchanged.
pub fn apply_tail_threshold(batch: &SpanBatch, tail: Threshold) -> SpanBatch {
    let mut rewritten: Vec<(u32, String)> = Vec::new();
    for i in 0..batch.len() {
        let raw = batch.span_trace_state(i);
        let Ok(mut ts) = TraceState::parse(raw) else {
            continue;
        };
        let randomness = ts
            .ot
            .randomness
            .unwrap_or_else(|| Randomness::from_trace_id(&batch.spans()[i].trace_id));
        if ts
            .ot
            .threshold
            .is_some_and(|t| !t.should_sample(randomness))
        {
            // Inconsistent: cleared, as the collector's samplers do.
            ts.ot.threshold = None;
        }
        let combined = match ts.ot.threshold {
            None => tail,
            // Kept for sure here: the span keeps the threshold it came
            // with, as it was spelled.
            Some(incoming) if tail == Threshold::ALWAYS => incoming,
            Some(incoming) => combined_threshold(incoming.probability(), tail),
        };
        ts.ot.raise_threshold(combined);
        let mut out = String::with_capacity(raw.len() + 12);
        ts.write(&mut out);
        if out != raw {
            rewritten.push((i as u32, out));
        }
    }
    if rewritten.is_empty() {
        return batch.clone();
    }
    let all: Vec<u32> = (0..batch.len() as u32).collect();
    let edits: Vec<(u32, &str)> = rewritten.iter().map(|(i, s)| (*i, s.as_str())).collect();
    batch.select_with_trace_states(&all, &edits)
}

/// A duration as the collector writes them (`15s`, `500ms`, `1m30s`), or a
/// bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Seconds(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Seconds(s) if s.is_finite() && s >= 0.0 => {
                Ok(ConfigDuration(Duration::from_secs_f64(s)))
            }
            Raw::Seconds(s) => Err(serde::de::Error::custom(format!("invalid duration {s}"))),
            Raw::Text(t) => parse_duration(&t)
                .map(ConfigDuration)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid duration {t:?}"))),
        }
    }
}

/// Go's `time.ParseDuration` for non-negative values.
fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    total.is_finite().then(|| Duration::from_secs_f64(total))
}

/// The label of the bucket keys beyond `max_keys` share.
pub const OVERFLOW_KEY: &str = "_overflow";

/// One key of an adaptive policy, for metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyReport {
    /// The key (`""` for `throughput`, [`OVERFLOW_KEY`] for the shared
    /// bucket).
    pub key: String,
    /// The keep probability traces of the key get now.
    pub probability: f64,
    /// Traces kept and dropped since the last report.
    pub kept: u64,
    pub dropped: u64,
}

/// What an adaptive policy reports for metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveReport {
    /// This gateway's goal in kept traces per second (a fleet goal divided
    /// by the live gateways); `None` for a `dynamic` policy with
    /// `goal_sample_rate`.
    pub goal_per_second: Option<f64>,
    /// Traces kept per second over the last completed interval.
    pub kept_per_second: f64,
    /// Traces seen per second, as the moving average has it.
    pub seen_per_second: f64,
    pub keys: Vec<KeyReport>,
}

/// Refinery's default `adjustment_interval`.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// Refinery's default `weight`.
pub(crate) const DEFAULT_WEIGHT: f64 = 0.5;

/// Checks `weight` and `adjustment_interval`.
pub(crate) fn check_common(weight: f64, interval: Duration) -> Result<(), String> {
    if !(weight > 0.0 && weight <= 1.0) {
        return Err(format!("weight must be in (0, 1], got {weight}"));
    }
    if interval < Duration::from_millis(1) {
        return Err(format!(
            "adjustment_interval must be at least 1ms, got {interval:?}"
        ));
    }
    Ok(())
}

/// The interval clock both policies run: which interval `now` falls in,
/// and when one ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IntervalClock {
    pub interval: Duration,
    /// Start of the current interval; `None` before the first decision.
    pub start: Option<Duration>,
}

impl IntervalClock {
    pub fn new(interval: Duration) -> IntervalClock {
        IntervalClock {
            interval,
            start: None,
        }
    }

    /// `true` when `now` is past the current interval: the caller closes it
    /// (its counts all fell inside it, as this is the first decision after
    /// its end) and a new one starts, at its end or, after an idle gap
    /// longer than an interval, at `now`.
    pub fn roll(&mut self, now: Duration) -> bool {
        let Some(start) = self.start else {
            self.start = Some(now);
            return false;
        };
        let end = start + self.interval;
        if now < end {
            return false;
        }
        self.start = Some(if now < end + self.interval { end } else { now });
        true
    }

    /// Time since the current interval started.
    pub fn elapsed(&self, now: Duration) -> Duration {
        self.start.map_or(Duration::ZERO, |s| now.saturating_sub(s))
    }
}

#[cfg(test)]
mod key_tests;
#[cfg(test)]
mod tests;
