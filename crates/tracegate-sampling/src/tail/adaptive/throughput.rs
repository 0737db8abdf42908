//! `throughput`: keep about `goal_traces_per_second` traces, whatever is
//! offered. Refinery's `EMAThroughput` with one key: the offered rate is
//! an exponential moving average (`weight`) updated every
//! `adjustment_interval`, and the keep probability is the goal over it.
//! A burst (`burst_multiple` times the average within an interval, once
//! `burst_detection_delay` intervals have passed) updates the average at
//! once, as in Refinery; tracegate also treats a fall below the average
//! divided by `burst_multiple` that way, and on either it takes the rate
//! just measured as the new average rather than blending a partial
//! interval's count into it, so a step in traffic settles within one
//! interval instead of several.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tracegate_model::trace_state::Threshold;

use super::{
    check_common, keep_at, tail_threshold, AdaptiveReport, ConfigDuration, FleetSize,
    IntervalClock, KeyReport, TraceSeed, DEFAULT_INTERVAL, DEFAULT_WEIGHT,
};

/// `throughput:` settings, with Refinery's names and defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThroughputConfig {
    /// Traces to keep per second, for the whole fleet when the processor
    /// has `handover` membership (each gateway keeps its share). Default
    /// 100.
    #[serde(default)]
    pub goal_traces_per_second: Option<f64>,
    /// How often the moving average and the keep probability are updated.
    /// Default 15s.
    #[serde(default)]
    pub adjustment_interval: Option<ConfigDuration>,
    /// Weight of the newest interval in the moving average, in (0, 1].
    /// Default 0.5.
    #[serde(default)]
    pub weight: Option<f64>,
    /// Keep 1 in this many traces until the first interval has ended.
    /// Default 10.
    #[serde(default)]
    pub initial_sample_rate: Option<f64>,
    /// A burst is this many times the average within one interval (and a
    /// fall, below the average divided by it); 0 or less turns burst
    /// detection off. Default 2.
    #[serde(default)]
    pub burst_multiple: Option<f64>,
    /// Intervals after start before bursts are detected. Default 3.
    #[serde(default)]
    pub burst_detection_delay: Option<u32>,
}

/// The checked settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ThroughputSettings {
    pub goal: f64,
    pub interval: Duration,
    pub weight: f64,
    pub initial_probability: f64,
    pub burst_multiple: f64,
    pub burst_detection_delay: u64,
}

impl ThroughputConfig {
    pub(crate) fn settings(&self) -> Result<ThroughputSettings, String> {
        let goal = self.goal_traces_per_second.unwrap_or(100.0);
        if !(goal.is_finite() && goal > 0.0) {
            return Err(format!(
                "throughput: goal_traces_per_second must be positive, got {goal}"
            ));
        }
        let interval = self.adjustment_interval.map_or(DEFAULT_INTERVAL, |d| d.0);
        let weight = self.weight.unwrap_or(DEFAULT_WEIGHT);
        check_common(weight, interval).map_err(|e| format!("throughput: {e}"))?;
        let initial = self.initial_sample_rate.unwrap_or(10.0);
        if !(initial.is_finite() && initial >= 1.0) {
            return Err(format!(
                "throughput: initial_sample_rate must be at least 1, got {initial}"
            ));
        }
        let burst_multiple = self.burst_multiple.unwrap_or(2.0);
        if burst_multiple.is_nan() || (burst_multiple > 0.0 && burst_multiple <= 1.0) {
            return Err(format!(
                "throughput: burst_multiple must be above 1 (or 0 or less to turn burst detection off), got {burst_multiple}"
            ));
        }
        Ok(ThroughputSettings {
            goal,
            interval,
            weight,
            initial_probability: 1.0 / initial,
            burst_multiple,
            burst_detection_delay: u64::from(self.burst_detection_delay.unwrap_or(3)),
        })
    }
}

/// Below this many expected traces so far in an interval, a fall in
/// traffic is not judged yet (too few to tell from noise).
const MIN_EXPECTED_FOR_FALL: f64 = 50.0;

/// The policy. Clones share their state.
#[derive(Debug, Clone)]
pub struct Throughput {
    settings: ThroughputSettings,
    fleet: FleetSize,
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    clock: IntervalClock,
    /// Traces seen and kept in the current interval.
    seen: u64,
    kept: u64,
    /// Offered traces per second (the moving average); `None` before the
    /// first interval ends.
    average: Option<f64>,
    /// Intervals closed (bursts included).
    intervals: u64,
    /// The keep threshold traces get now.
    threshold: Threshold,
    /// Kept per second over the last closed interval.
    kept_rate: f64,
    /// Since the last report.
    report_kept: u64,
    report_dropped: u64,
}

impl Throughput {
    pub(crate) fn new(settings: ThroughputSettings, fleet: FleetSize) -> Throughput {
        Throughput {
            settings,
            fleet,
            state: Arc::new(Mutex::new(State {
                clock: IntervalClock::new(settings.interval),
                seen: 0,
                kept: 0,
                average: None,
                intervals: 0,
                threshold: tail_threshold(settings.initial_probability),
                kept_rate: 0.0,
                report_kept: 0,
                report_dropped: 0,
            })),
        }
    }

    /// The same policy, dividing its per-second goal by `fleet`.
    pub(crate) fn in_fleet(&self, fleet: &FleetSize) -> Throughput {
        Throughput {
            fleet: fleet.clone(),
            ..self.clone()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This gateway's share of the goal.
    fn goal(&self) -> f64 {
        self.settings.goal / self.fleet.get() as f64
    }

    /// Decides a trace at `now`: `Some(threshold)` when kept with it.
    pub fn decide(&self, seed: TraceSeed, now: Duration) -> Option<Threshold> {
        let goal = self.goal();
        let s = &self.settings;
        let mut st = self.lock();
        if st.clock.roll(now) {
            let rate = st.seen as f64 / s.interval.as_secs_f64();
            st.close(rate, false, goal, s);
        }
        st.seen += 1;
        if let (Some(average), true) = (
            st.average,
            s.burst_multiple > 0.0 && st.intervals >= s.burst_detection_delay,
        ) {
            let elapsed = st.clock.elapsed(now).as_secs_f64();
            let expected_interval = average * s.interval.as_secs_f64();
            let burst = st.seen as f64 >= s.burst_multiple * expected_interval;
            let expected_so_far = average * elapsed;
            let fall = elapsed >= s.interval.as_secs_f64() / 2.0
                && expected_so_far >= MIN_EXPECTED_FOR_FALL
                && (st.seen as f64) < expected_so_far / s.burst_multiple;
            if (burst || fall) && elapsed > 0.0 {
                let rate = st.seen as f64 / elapsed;
                st.close(rate, true, goal, s);
                st.clock.start = Some(now);
            }
        }
        let threshold = st.threshold;
        let keep = keep_at(seed, threshold);
        if keep {
            st.kept += 1;
            st.report_kept += 1;
        } else {
            st.report_dropped += 1;
        }
        keep.then_some(threshold)
    }

    /// The keep probability traces get now.
    pub fn probability(&self) -> f64 {
        self.lock().threshold.probability()
    }

    /// Metrics since the last report.
    pub fn report(&self) -> AdaptiveReport {
        let goal = self.goal();
        let mut st = self.lock();
        let key = KeyReport {
            key: String::new(),
            probability: st.threshold.probability(),
            kept: std::mem::take(&mut st.report_kept),
            dropped: std::mem::take(&mut st.report_dropped),
        };
        AdaptiveReport {
            goal_per_second: Some(goal),
            kept_per_second: st.kept_rate,
            seen_per_second: st.average.unwrap_or(0.0),
            keys: vec![key],
        }
    }
}

impl State {
    /// Closes an interval over which `rate` traces per second were
    /// offered: updates the average and the keep probability.
    fn close(&mut self, rate: f64, burst: bool, goal: f64, s: &ThroughputSettings) {
        let elapsed = s.interval.as_secs_f64();
        if !burst {
            self.kept_rate = self.kept as f64 / elapsed;
        }
        self.kept = 0;
        self.intervals += 1;
        if self.seen == 0 {
            // No traffic: the average is left as it was, as in Refinery.
            return;
        }
        self.seen = 0;
        let average = match self.average {
            // A burst or fall replaces the average; the first interval
            // starts it.
            Some(_) if burst => rate,
            None => rate,
            Some(a) => s.weight * rate + (1.0 - s.weight) * a,
        };
        self.average = Some(average);
        self.threshold = tail_threshold((goal / average).min(1.0));
    }
}
