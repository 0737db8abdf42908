//! The start of the `adaptive` source: Jaeger v2's calculation of
//! per-service, per-operation probabilities from the root spans received,
//! toward `target_samples_per_second`. This is the calculator alone, a
//! pure function of the counts it is given; it is not wired yet (the
//! config still refuses `adaptive`): the receivers do not count root spans
//! for it, and nothing serves what it computes.
//!
//! Each `calculation_interval`, for every (service, operation) seen:
//! the rate of sampled root spans received is compared with the target;
//! within `delta_tolerance` of it the probability stays, with none
//! received it doubles, above the target it drops in proportion at once,
//! below it rises in proportion but by at most half of itself per
//! interval (against oversampling on a burst). The result is kept within
//! [`min_sampling_probability`, 1]. An operation not seen before starts at
//! `initial_sampling_probability`. What is served to a service is its
//! operations' probabilities, with `initial_sampling_probability` for the
//! rest and `min_samples_per_second` as the lower bound of traces per
//! second every SDK keeps per operation.
//!
//! One difference from Jaeger is intended: Jaeger recalculates only for
//! services whose spans say (through `sampler.param` tags, which the
//! OpenTelemetry SDKs do not write) that they sample at the served
//! probability; here every service seen is taken to do so.

use std::collections::HashMap;
use std::time::Duration;

use tracegate_model::jaeger::proto::{
    OperationSamplingStrategy, PerOperationSamplingStrategies, ProbabilisticSamplingStrategy,
    SamplingStrategyResponse, SamplingStrategyType,
};

/// How much a probability may rise in one calculation, as a fraction of
/// itself (Jaeger's percentage-increase cap).
pub const INCREASE_CAP: f64 = 0.5;

/// Jaeger's `adaptive` settings that shape the calculation, with Jaeger's
/// defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Sampled root spans per second wanted per operation. Default 1.
    pub target_samples_per_second: f64,
    /// How far (a fraction of the target) the measured rate may be from
    /// the target before the probability changes. Default 0.3.
    pub delta_tolerance: f64,
    /// How often probabilities are calculated. Default 1 minute.
    pub calculation_interval: Duration,
    /// An operation's probability before anything was calculated for it.
    /// Default 0.001.
    pub initial_sampling_probability: f64,
    /// The lowest probability calculated. Default 1e-5.
    pub min_sampling_probability: f64,
    /// Traces per second every SDK keeps per operation whatever the
    /// probability (the strategy's lower bound). Default 1/60.
    pub min_samples_per_second: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            target_samples_per_second: 1.0,
            delta_tolerance: 0.3,
            calculation_interval: Duration::from_secs(60),
            initial_sampling_probability: 0.001,
            min_sampling_probability: 1e-5,
            min_samples_per_second: 1.0 / 60.0,
        }
    }
}

/// The probabilities calculated so far, by service, then operation.
#[derive(Debug, Clone, Default)]
pub struct Calculator {
    options: Options,
    probabilities: HashMap<String, HashMap<String, f64>>,
}

impl Calculator {
    pub fn new(options: Options) -> Calculator {
        Calculator {
            options,
            probabilities: HashMap::new(),
        }
    }

    /// One calculation: `counts` holds, per service and operation, the
    /// sampled root spans received over `interval`.
    pub fn calculate(
        &mut self,
        counts: &HashMap<String, HashMap<String, u64>>,
        interval: Duration,
    ) {
        let seconds = interval.as_secs_f64();
        if seconds <= 0.0 {
            return;
        }
        for (service, operations) in counts {
            let known = self.probabilities.entry(service.clone()).or_default();
            for (operation, count) in operations {
                let old = known
                    .get(operation)
                    .copied()
                    .unwrap_or(self.options.initial_sampling_probability);
                let rate = *count as f64 / seconds;
                known.insert(
                    operation.clone(),
                    next_probability(&self.options, rate, old),
                );
            }
        }
    }

    /// The probability calculated for an operation, if any.
    pub fn probability(&self, service: &str, operation: &str) -> Option<f64> {
        self.probabilities.get(service)?.get(operation).copied()
    }

    /// What is served to `service`: per-operation probabilities over the
    /// initial one.
    pub fn strategy(&self, service: &str) -> SamplingStrategyResponse {
        let initial = self.options.initial_sampling_probability;
        let mut operations: Vec<OperationSamplingStrategy> = self
            .probabilities
            .get(service)
            .into_iter()
            .flatten()
            .map(|(operation, p)| OperationSamplingStrategy {
                operation: operation.clone(),
                probabilistic_sampling: Some(ProbabilisticSamplingStrategy { sampling_rate: *p }),
            })
            .collect();
        operations.sort_by(|a, b| a.operation.cmp(&b.operation));
        SamplingStrategyResponse {
            strategy_type: SamplingStrategyType::Probabilistic as i32,
            probabilistic_sampling: Some(ProbabilisticSamplingStrategy {
                sampling_rate: initial,
            }),
            rate_limiting_sampling: None,
            operation_sampling: Some(PerOperationSamplingStrategies {
                default_sampling_probability: initial,
                default_lower_bound_traces_per_second: self.options.min_samples_per_second,
                per_operation_strategies: operations,
                default_upper_bound_traces_per_second: 0.0,
            }),
        }
    }
}

/// An operation's next probability, from the rate of sampled root spans
/// measured at probability `old`.
pub fn next_probability(options: &Options, rate: f64, old: f64) -> f64 {
    let target = options.target_samples_per_second;
    if (rate - target).abs() / target < options.delta_tolerance {
        return old;
    }
    let new = if rate == 0.0 {
        old * 2.0
    } else {
        let proposed = old * target / rate;
        if proposed > old {
            proposed.min(old * (1.0 + INCREASE_CAP))
        } else {
            proposed
        }
    };
    new.clamp(options.min_sampling_probability, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(service: &str, ops: &[(&str, u64)]) -> HashMap<String, HashMap<String, u64>> {
        let ops = ops.iter().map(|(o, c)| (o.to_string(), *c)).collect();
        HashMap::from([(service.to_string(), ops)])
    }

    /// Above the target the probability drops in proportion at once;
    /// below it rises by at most half of itself; within the tolerance it
    /// stays; with nothing received it doubles; it stays within bounds.
    #[test]
    fn the_probability_moves_as_jaegers_does() {
        let o = Options::default();
        assert_eq!(next_probability(&o, 10.0, 0.1), 0.01);
        assert_eq!(next_probability(&o, 0.5, 0.1), 0.15000000000000002);
        assert_eq!(next_probability(&o, 0.8, 0.1), 0.1, "within 30 %");
        assert_eq!(next_probability(&o, 1.2, 0.1), 0.1, "within 30 %");
        assert_eq!(next_probability(&o, 0.0, 0.1), 0.2);
        assert_eq!(next_probability(&o, 0.0, 0.8), 1.0);
        assert_eq!(next_probability(&o, 1e9, 0.1), o.min_sampling_probability);
    }

    /// Offered traffic that steps up and back: the sampled rate (offered
    /// times probability) converges to the target each time.
    #[test]
    fn the_sampled_rate_settles_at_the_target_as_traffic_changes() {
        let options = Options {
            target_samples_per_second: 2.0,
            ..Options::default()
        };
        let mut calculator = Calculator::new(options.clone());
        let interval = Duration::from_secs(60);
        for offered in [1000.0, 20_000.0, 1000.0] {
            for _ in 0..40 {
                let p = calculator
                    .probability("svc", "op")
                    .unwrap_or(options.initial_sampling_probability);
                let sampled = (offered * p * 60.0).round() as u64;
                calculator.calculate(&counts("svc", &[("op", sampled)]), interval);
            }
            let p = calculator.probability("svc", "op").unwrap();
            let rate = offered * p;
            assert!(
                (rate - 2.0).abs() / 2.0 < options.delta_tolerance,
                "offered {offered}/s: probability {p} samples {rate}/s"
            );
        }
    }

    /// What a service is served: its operations, over the initial
    /// probability and the lower bound.
    #[test]
    fn the_strategy_lists_the_operations_calculated() {
        let mut calculator = Calculator::new(Options::default());
        calculator.calculate(
            &counts("svc", &[("b", 600), ("a", 0)]),
            Duration::from_secs(60),
        );
        let strategy = calculator.strategy("svc");
        let ops = strategy.operation_sampling.unwrap();
        assert_eq!(ops.default_sampling_probability, 0.001);
        assert_eq!(ops.default_lower_bound_traces_per_second, 1.0 / 60.0);
        let listed: Vec<(&str, f64)> = ops
            .per_operation_strategies
            .iter()
            .map(|o| {
                (
                    o.operation.as_str(),
                    o.probabilistic_sampling.unwrap().sampling_rate,
                )
            })
            .collect();
        assert_eq!(listed, vec![("a", 0.002), ("b", 0.0001)]);
        let other = calculator.strategy("other").operation_sampling.unwrap();
        assert!(other.per_operation_strategies.is_empty());
    }
}
