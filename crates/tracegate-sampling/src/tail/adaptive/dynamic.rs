//! `dynamic`: a keep probability per key, the key built from attributes
//! of the trace's root span (its first span when the root has not
//! arrived), so that rare keys keep more and frequent keys less.
//! Refinery's `EMADynamic` (dynsampler-go's `EMASampleRate`): per key, a
//! moving average (`weight`) of traces per `adjustment_interval`; at each
//! interval's end the goal count (the average total over
//! `goal_sample_rate`, or `goal_traces_per_second` times the interval) is
//! shared out by the logarithm of each key's average, a key that needs
//! less than its share passing the rest on. Differences: probabilities are
//! fractional (OTEP 235 thresholds carry them) rather than whole sample
//! rates, the leftover share goes from the rarest keys up, and the first
//! trace of each key in each interval is always kept (with probability 1),
//! the key's other traces sharing the rest of its goal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tracegate_model::trace_state::Threshold;
use tracegate_model::{AnyValueRef, SpanBatch};

use super::key::RecordedValues;
use super::{
    check_common, keep_at, tail_threshold, AdaptiveReport, ConfigDuration, FleetSize,
    IntervalClock, KeyReport, TraceSeed, DEFAULT_INTERVAL, DEFAULT_WEIGHT, OVERFLOW_KEY,
};
use crate::tail::policy::TraceView;

/// `dynamic:` settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicConfig {
    /// Attribute names whose values make a trace's key, read from its root
    /// span (its first span while the root has not arrived): the span's
    /// attribute, else its resource's. At least one.
    #[serde(default)]
    pub key_fields: Vec<String>,
    /// Keep on average 1 in this many traces (at least 1). Exactly one of
    /// this and `goal_traces_per_second`.
    #[serde(default)]
    pub goal_sample_rate: Option<f64>,
    /// Keep about this many traces per second, for the whole fleet when
    /// the processor has `handover` membership.
    #[serde(default)]
    pub goal_traces_per_second: Option<f64>,
    /// Default 15s.
    #[serde(default)]
    pub adjustment_interval: Option<ConfigDuration>,
    /// In (0, 1]. Default 0.5.
    #[serde(default)]
    pub weight: Option<f64>,
    /// Distinct keys tracked; traces of further keys share one bucket
    /// (`_overflow`). Default 500.
    #[serde(default)]
    pub max_keys: Option<usize>,
    /// A key whose moving average falls below this is forgotten (making
    /// room under `max_keys`). Default: `weight`.
    #[serde(default)]
    pub age_out_value: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Goal {
    SampleRate(f64),
    PerSecond(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DynamicSettings {
    key_fields: Vec<String>,
    goal: Goal,
    interval: Duration,
    weight: f64,
    max_keys: usize,
    age_out: f64,
}

impl DynamicConfig {
    pub(crate) fn settings(&self) -> Result<DynamicSettings, String> {
        if self.key_fields.is_empty() || self.key_fields.iter().any(String::is_empty) {
            return Err(
                "dynamic: key_fields must list at least one attribute name, none empty".into(),
            );
        }
        let goal = match (self.goal_sample_rate, self.goal_traces_per_second) {
            (Some(r), None) if r.is_finite() && r >= 1.0 => Goal::SampleRate(r),
            (Some(r), None) => {
                return Err(format!(
                    "dynamic: goal_sample_rate must be at least 1, got {r}"
                ))
            }
            (None, Some(g)) if g.is_finite() && g > 0.0 => Goal::PerSecond(g),
            (None, Some(g)) => {
                return Err(format!(
                    "dynamic: goal_traces_per_second must be positive, got {g}"
                ))
            }
            _ => {
                return Err(
                    "dynamic: give exactly one of goal_sample_rate and goal_traces_per_second"
                        .into(),
                )
            }
        };
        let interval = self.adjustment_interval.map_or(DEFAULT_INTERVAL, |d| d.0);
        let weight = self.weight.unwrap_or(DEFAULT_WEIGHT);
        check_common(weight, interval).map_err(|e| format!("dynamic: {e}"))?;
        let max_keys = self.max_keys.unwrap_or(500);
        if max_keys == 0 {
            return Err("dynamic: max_keys must be at least 1".into());
        }
        let age_out = self.age_out_value.unwrap_or(weight);
        if !(age_out.is_finite() && age_out >= 0.0) {
            return Err(format!(
                "dynamic: age_out_value must not be negative, got {age_out}"
            ));
        }
        Ok(DynamicSettings {
            key_fields: self.key_fields.clone(),
            goal,
            interval,
            weight,
            max_keys,
            age_out,
        })
    }
}

/// The policy. Clones share their state.
#[derive(Debug, Clone)]
pub struct Dynamic {
    settings: Arc<DynamicSettings>,
    fleet: FleetSize,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct KeyState {
    /// Traces this interval.
    seen: u64,
    /// Moving average of traces per interval; `None` for a key not yet
    /// through an interval's end.
    average: Option<f64>,
    /// For the key's traces after its first in an interval.
    threshold: Option<Threshold>,
    report_kept: u64,
    report_dropped: u64,
}

impl KeyState {
    fn threshold(&self) -> Threshold {
        self.threshold.unwrap_or(Threshold::ALWAYS)
    }
}

#[derive(Debug)]
struct State {
    clock: IntervalClock,
    keys: HashMap<String, KeyState>,
    overflow: KeyState,
    kept: u64,
    kept_rate: f64,
    /// Moving average of all traces per interval.
    total_average: f64,
}

impl Dynamic {
    pub(crate) fn new(settings: DynamicSettings, fleet: FleetSize) -> Dynamic {
        let clock = IntervalClock::new(settings.interval);
        Dynamic {
            settings: Arc::new(settings),
            fleet,
            state: Arc::new(Mutex::new(State {
                clock,
                keys: HashMap::new(),
                overflow: KeyState::default(),
                kept: 0,
                kept_rate: 0.0,
                total_average: 0.0,
            })),
        }
    }

    /// The same policy, dividing its per-second goal by `fleet`.
    pub(crate) fn in_fleet(&self, fleet: &FleetSize) -> Dynamic {
        Dynamic {
            fleet: fleet.clone(),
            ..self.clone()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Goal traces per interval for this gateway, from the total average.
    fn goal_count(&self, total_average: f64) -> f64 {
        match self.settings.goal {
            Goal::SampleRate(r) => total_average / r,
            Goal::PerSecond(g) => {
                g / self.fleet.get() as f64 * self.settings.interval.as_secs_f64()
            }
        }
    }

    /// Writes the trace's key into `key` (cleared first): the key fields'
    /// values joined by `,`, an absent one as empty.
    pub fn key_of(&self, trace: &TraceView<'_>, key: &mut String) {
        key.clear();
        let batches = trace.batches();
        let mut chosen: Option<(&SpanBatch, usize)> = None;
        'find: for b in batches {
            for (i, span) in b.spans().iter().enumerate() {
                if span.is_root() {
                    chosen = Some((b, i));
                    break 'find;
                }
                if chosen.is_none() {
                    chosen = Some((b, i));
                }
            }
        }
        for (n, field) in self.settings.key_fields.iter().enumerate() {
            if n > 0 {
                key.push(',');
            }
            let Some((batch, span)) = chosen else {
                continue;
            };
            let value = batch
                .span_attribute(span, field)
                .or_else(|| batch.resource_attribute(span, field));
            push_value(key, value);
        }
    }

    /// The attribute names the key is built from, in order.
    pub fn key_fields(&self) -> &[String] {
        &self.settings.key_fields
    }

    /// Writes the key of a trace whose key fields were recorded as it
    /// arrived ([`super::key`]) into `key`: the values of the recorded
    /// fields at `indices` (this policy's key fields, in order), as
    /// [`Self::key_of`] writes them from the same span.
    pub fn key_of_recorded(values: RecordedValues<'_>, indices: &[usize], key: &mut String) {
        key.clear();
        for (n, &i) in indices.iter().enumerate() {
            if n > 0 {
                key.push(',');
            }
            key.push_str(values.get(i));
        }
    }

    /// Decides a trace of `key` at `now`: `Some(threshold)` when kept.
    pub fn decide(&self, key: &str, seed: TraceSeed, now: Duration) -> Option<Threshold> {
        let mut st = self.lock();
        if st.clock.roll(now) {
            self.close(&mut st);
        }
        let max_keys = self.settings.max_keys;
        let st = &mut *st;
        let bucket = if let Some(k) = st.keys.get_mut(key) {
            k
        } else if st.keys.len() < max_keys {
            st.keys.entry(key.to_string()).or_default()
        } else {
            &mut st.overflow
        };
        bucket.seen += 1;
        let threshold = if bucket.seen == 1 {
            Threshold::ALWAYS
        } else {
            bucket.threshold()
        };
        let keep = keep_at(seed, threshold);
        if keep {
            bucket.report_kept += 1;
            st.kept += 1;
        } else {
            bucket.report_dropped += 1;
        }
        keep.then_some(threshold)
    }

    /// Ends an interval: averages, then each key's share of the goal.
    fn close(&self, st: &mut State) {
        let s = &self.settings;
        st.kept_rate = st.kept as f64 / s.interval.as_secs_f64();
        st.kept = 0;
        let weight = s.weight;
        let update = |k: &mut KeyState| {
            let seen = k.seen as f64;
            k.seen = 0;
            k.average = Some(match k.average {
                None => seen,
                Some(a) => weight * seen + (1.0 - weight) * a,
            });
        };
        let any_traffic = st.keys.values().any(|k| k.seen > 0) || st.overflow.seen > 0;
        if !any_traffic {
            // No traffic: averages are left as they were, as in Refinery.
            return;
        }
        for k in st.keys.values_mut() {
            update(k);
        }
        if st.overflow.seen > 0 || st.overflow.average.is_some() {
            update(&mut st.overflow);
        }
        st.keys.retain(|_, k| k.average.unwrap_or(0.0) >= s.age_out);
        let mut buckets: Vec<&mut KeyState> = st.keys.values_mut().collect();
        if st.overflow.average.unwrap_or(0.0) > 0.0 {
            buckets.push(&mut st.overflow);
        }
        let total: f64 = buckets.iter().map(|k| k.average.unwrap_or(0.0)).sum();
        st.total_average = total;
        share_out(self.goal_count(total), &mut buckets);
    }

    /// Metrics since the last report: at most `max_keys` keys and the
    /// overflow bucket.
    pub fn report(&self) -> AdaptiveReport {
        let mut st = self.lock();
        let goal = match self.settings.goal {
            Goal::SampleRate(_) => None,
            Goal::PerSecond(_) => Some(self.goal_count(0.0) / self.settings.interval.as_secs_f64()),
        };
        let seen = st.total_average / self.settings.interval.as_secs_f64();
        let mut keys: Vec<KeyReport> = st
            .keys
            .iter_mut()
            .map(|(key, k)| KeyReport {
                key: key.clone(),
                probability: k.threshold().probability(),
                kept: std::mem::take(&mut k.report_kept),
                dropped: std::mem::take(&mut k.report_dropped),
            })
            .collect();
        let o = &mut st.overflow;
        if o.average.unwrap_or(0.0) > 0.0 || o.report_kept + o.report_dropped > 0 {
            keys.push(KeyReport {
                key: OVERFLOW_KEY.to_string(),
                probability: o.threshold().probability(),
                kept: std::mem::take(&mut o.report_kept),
                dropped: std::mem::take(&mut o.report_dropped),
            });
        }
        AdaptiveReport {
            goal_per_second: goal,
            kept_per_second: st.kept_rate,
            seen_per_second: seen,
            keys,
        }
    }

    /// The threshold later traces of `key` get this interval (tests).
    pub fn probability_of(&self, key: &str) -> Option<f64> {
        let st = self.lock();
        st.keys.get(key).map(|k| k.threshold().probability())
    }
}

/// dynsampler-go's `calculateSampleRates` with fractional probabilities:
/// each key's goal is `max(1, log10(average) × goal / Σ log10(average))`
/// plus its share of what rarer keys left over; a key at or under its goal
/// keeps everything. The first trace of a key each interval is kept
/// anyway, so the others share `goal − 1` of the `average − 1`.
fn share_out(goal: f64, buckets: &mut [&mut KeyState]) {
    buckets.sort_by(|a, b| {
        let (a, b) = (a.average.unwrap_or(0.0), b.average.unwrap_or(0.0));
        a.total_cmp(&b)
    });
    let log_sum: f64 = buckets
        .iter()
        .map(|k| k.average.unwrap_or(0.0).max(1.0).log10())
        .sum();
    let ratio = if log_sum > 0.0 { goal / log_sum } else { goal };
    let mut extra = 0.0;
    let mut remaining = buckets.len() as f64;
    for k in buckets.iter_mut() {
        let count = k.average.unwrap_or(0.0).max(1.0);
        let share = extra / remaining;
        extra -= share;
        remaining -= 1.0;
        let goal_for_key = (count.log10() * ratio).max(1.0) + share;
        if count <= goal_for_key {
            k.threshold = Some(Threshold::ALWAYS);
            extra += goal_for_key - count;
        } else {
            // The first trace is kept at 1; the rest keep goal − 1, with
            // a floor so no trace has a zero chance (adjusted counts stay
            // unbiased).
            let p = ((goal_for_key - 1.0) / (count - 1.0)).max(1.0 / count);
            let threshold = tail_threshold(p);
            k.threshold = Some(threshold);
            extra += goal_for_key - (1.0 + (count - 1.0) * threshold.probability());
        }
    }
}

/// A value as text in a key: strings as they are, numbers and booleans as
/// written, other kinds as their kind's name.
pub(super) fn push_value(key: &mut String, value: Option<AnyValueRef<'_>>) {
    use std::fmt::Write;
    match value {
        None => {}
        Some(AnyValueRef::String(s)) => key.push_str(s),
        Some(AnyValueRef::Bool(b)) => {
            let _ = write!(key, "{b}");
        }
        Some(AnyValueRef::Int(n)) => {
            let _ = write!(key, "{n}");
        }
        Some(AnyValueRef::Double(d)) => {
            let _ = write!(key, "{d}");
        }
        Some(AnyValueRef::Bytes(_)) => key.push_str("<bytes>"),
        Some(AnyValueRef::Array(_)) => key.push_str("<array>"),
        Some(AnyValueRef::KvList(_)) => key.push_str("<kvlist>"),
    }
}
