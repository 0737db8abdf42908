//! Exponential backoff as the collector computes it (cenkalti/backoff, used
//! by exporterhelper's retry sender): each wait is the current interval
//! spread uniformly by ± `randomization_factor`, and the interval grows by
//! `multiplier` up to `max_interval`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use super::delivery::RetryConfig;

pub(crate) struct Backoff {
    current: Duration,
    initial: Duration,
    randomization_factor: f64,
    multiplier: f64,
    max_interval: Duration,
    rng: SplitMix64,
}

impl Backoff {
    pub(crate) fn new(config: &RetryConfig) -> Backoff {
        Backoff {
            current: Duration::ZERO,
            initial: config.initial_interval,
            randomization_factor: config.randomization_factor,
            multiplier: config.multiplier,
            max_interval: config.max_interval,
            rng: SplitMix64::seeded(),
        }
    }

    /// The wait before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        if self.current.is_zero() {
            self.current = self.initial;
        }
        let delay = spread(self.current, self.randomization_factor, self.rng.unit());
        let max = self.max_interval.as_secs_f64();
        let current = self.current.as_secs_f64();
        self.current = if self.multiplier > 0.0 && current >= max / self.multiplier {
            self.max_interval
        } else {
            Duration::try_from_secs_f64((current * self.multiplier).min(max))
                .unwrap_or(self.max_interval)
        };
        delay
    }
}

/// `interval` moved uniformly into [interval·(1−f), interval·(1+f)].
fn spread(interval: Duration, factor: f64, unit: f64) -> Duration {
    let secs = interval.as_secs_f64();
    let delta = factor * secs;
    let low = secs - delta;
    let high = secs + delta;
    Duration::try_from_secs_f64((low + unit * (high - low)).max(0.0)).unwrap_or(interval)
}

/// Small non-cryptographic generator; jitter only has to differ between
/// exporters and attempts, so a per-instance random seed is enough.
struct SplitMix64(u64);

impl SplitMix64 {
    fn seeded() -> SplitMix64 {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(0x9E37_79B9_7F4A_7C15);
        SplitMix64(hasher.finish())
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(initial_ms: u64, factor: f64, multiplier: f64, max_ms: u64) -> RetryConfig {
        RetryConfig {
            initial_interval: Duration::from_millis(initial_ms),
            randomization_factor: factor,
            multiplier,
            max_interval: Duration::from_millis(max_ms),
            ..RetryConfig::default()
        }
    }

    #[test]
    fn grows_by_multiplier_up_to_max_interval() {
        let mut backoff = Backoff::new(&config(100, 0.0, 2.0, 500));
        let delays: Vec<u128> = (0..6).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 500, 500, 500]);
    }

    /// Settings that overflow a naive `interval × multiplier` still give
    /// the promised waits: the interval jumps to `max_interval` and stays.
    #[test]
    fn extreme_settings_reach_max_interval_without_overflow() {
        let initial = Duration::from_secs(u64::MAX / 4);
        let max = Duration::from_secs(u64::MAX / 2);
        let extreme = |randomization_factor| RetryConfig {
            initial_interval: initial,
            randomization_factor,
            multiplier: f64::MAX,
            max_interval: max,
            ..RetryConfig::default()
        };
        let mut exact = Backoff::new(&extreme(0.0));
        let delays: Vec<Duration> = (0..5).map(|_| exact.next_delay()).collect();
        // Durations this large lose their low bits to f64, as in the
        // collector's float arithmetic; compare at that precision.
        let secs = |d: &Duration| d.as_secs_f64();
        assert_eq!(
            delays.iter().map(secs).collect::<Vec<_>>(),
            [initial, max, max, max, max]
                .iter()
                .map(secs)
                .collect::<Vec<_>>()
        );
        let mut spread = Backoff::new(&extreme(1.0));
        assert!(secs(&spread.next_delay()) <= 2.0 * secs(&initial));
        for _ in 0..50 {
            // ± 100 %: anywhere from 0 to twice the capped interval.
            assert!(secs(&spread.next_delay()) <= 2.0 * secs(&max));
        }
    }

    /// A multiplier below 1 (allowed: only negative or non-finite ones are
    /// refused) shrinks the wait.
    #[test]
    fn multiplier_below_one_shrinks_the_wait() {
        let mut halving = Backoff::new(&config(400, 0.0, 0.5, 1000));
        let delays: Vec<u128> = (0..4).map(|_| halving.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![400, 200, 100, 50]);
        let refused = config(400, 0.0, f64::NAN, 1000);
        assert!(refused.validate().is_err(), "NaN never reaches a Backoff");
    }

    #[test]
    fn randomization_stays_within_the_factor() {
        let mut backoff = Backoff::new(&config(1000, 0.5, 1.0, 1000));
        let delays: Vec<Duration> = (0..200).map(|_| backoff.next_delay()).collect();
        assert!(delays
            .iter()
            .all(|d| *d >= Duration::from_millis(500) && *d <= Duration::from_millis(1500)));
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "delays are spread, not constant");
    }
}
