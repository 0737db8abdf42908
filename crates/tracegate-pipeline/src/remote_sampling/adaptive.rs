//! The `adaptive` source's calculation: Jaeger v2's per-service,
//! per-operation probabilities from the root spans received, toward
//! `target_samples_per_second`. A pure function of the tallies it is
//! given ([`super::counting`] makes them, `super::run` calls it every
//! `calculation_interval`).
//!
//! Each `calculation_interval`, for every (service, operation) with a root
//! span in the interval: the rate of root spans sampled at the served
//! probability is compared with the target; within `delta_tolerance` of it
//! the probability stays, with none sampled (only rate-limited,
//! lower-bound or `const` roots seen) it doubles, above the target it drops in
//! proportion at once, below it rises in proportion but at most doubles
//! per interval (against oversampling on a burst). The result is
//! kept within [`min_sampling_probability`, 1]. An operation not seen
//! before starts at `initial_sampling_probability`; one without a root
//! span for `aggregation_buckets` intervals is forgotten (served the
//! initial probability again). What is served to a service is its
//! operations' probabilities, with `initial_sampling_probability` for the
//! rest and `min_samples_per_second` as the lower bound of traces per
//! second every SDK keeps per operation.
//!
//! **The probability roots were sampled at.** Jaeger reads the
//! `sampler.type`/`sampler.param` tags its own clients write: it skips a
//! root without a recognized type and a numeric param, counts a
//! `probabilistic` one as sampled whatever the number, and marks the
//! operation seen for the others (`lowerbound`, `ratelimiting`, `const`).
//! The OpenTelemetry SDKs write no such tags, so Jaeger v2 counts none of
//! their roots. Here those tags are read as Jaeger reads them
//! ([`super::counting`]), and a root span may also say its probability by
//! the OTEP 235 threshold in its tracestate (`ot=th:`); one that says
//! nothing was sampled at the probability served. The rate compared with the target is the offered
//! rate the tally implies (each root weighs 1/p) times the probability
//! served: the same as Jaeger's count when every SDK samples as told, and
//! still right when some sample at another probability (a stale strategy,
//! their own sampler).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tracegate_model::jaeger::proto::{
    OperationSamplingStrategy, PerOperationSamplingStrategies, ProbabilisticSamplingStrategy,
    SamplingStrategyResponse, SamplingStrategyType,
};

use super::strategies::Strategies;

/// How much a probability may rise in one calculation, as a fraction of
/// itself: Jaeger v2's percentage-increase cap, 100 % (it at most doubles).
pub const INCREASE_CAP: f64 = 1.0;

/// The most (service, operation) pairs one extension keeps: the names
/// come from clients. Root spans of further pairs are not counted.
pub const MAX_OPERATIONS: usize = 10_000;

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
    /// Intervals without a root span after which an operation is
    /// forgotten. Default 10.
    pub aggregation_buckets: u32,
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
            aggregation_buckets: 10,
        }
    }
}

/// The root spans of one operation over an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    /// Roots that did not say their probability: sampled at the one served.
    pub at_served: u64,
    /// Roots that said it (`sampler.param`, `ot=th:`).
    pub explicit: u64,
    /// The sum of 1/p over the `explicit` roots: the offered roots they
    /// stand for.
    pub explicit_offered: f64,
}

impl Tally {
    /// The rate of roots sampled at `served` this tally implies, per
    /// second of `seconds`, multiplied by `scale` (the live gateways, each
    /// seeing its share).
    pub fn sampled_rate(&self, served: f64, seconds: f64, scale: f64) -> f64 {
        scale * (self.at_served as f64 + self.explicit_offered * served) / seconds
    }

    /// The offered roots per second this tally implies.
    pub fn offered_rate(&self, served: f64, seconds: f64, scale: f64) -> f64 {
        let at_served = if served > 0.0 {
            self.at_served as f64 / served
        } else {
            0.0
        };
        scale * (at_served + self.explicit_offered) / seconds
    }
}

/// Tallies by service, then operation.
pub type Tallies = HashMap<String, HashMap<String, Tally>>;

/// A set of probabilities by service, then operation: what a fleet's
/// leader publishes and its followers serve. Ordered, so that two
/// gateways holding the same set write it the same.
pub type Probabilities = BTreeMap<String, BTreeMap<String, f64>>;

/// One operation's state.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Operation {
    probability: f64,
    /// Calculations since its last root span.
    idle: u32,
}

/// What one calculation measured for an operation, for the metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub service: String,
    pub operation: String,
    /// Root spans per second sampled at the probability served (the
    /// fleet's, with `scale`).
    pub sampled_rate: f64,
    /// Root spans per second offered, as the tally implies.
    pub offered_rate: f64,
    /// The probability from now on.
    pub probability: f64,
}

/// The probabilities calculated so far, by service, then operation.
#[derive(Debug, Clone, Default)]
pub struct Calculator {
    options: Options,
    probabilities: HashMap<String, HashMap<String, Operation>>,
    operations: usize,
}

impl Calculator {
    pub fn new(options: Options) -> Calculator {
        Calculator {
            options,
            probabilities: HashMap::new(),
            operations: 0,
        }
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// One calculation from the `tallies` of `interval`, their rates
    /// multiplied by `scale`. Returns what it measured per operation seen.
    pub fn calculate(
        &mut self,
        tallies: &Tallies,
        interval: Duration,
        scale: f64,
    ) -> Vec<Measured> {
        let seconds = interval.as_secs_f64();
        let mut measured = Vec::new();
        if seconds <= 0.0 {
            return measured;
        }
        for operations in self.probabilities.values_mut() {
            for op in operations.values_mut() {
                op.idle = op.idle.saturating_add(1);
            }
        }
        for (service, operations) in tallies {
            for (operation, tally) in operations {
                let known = self
                    .probabilities
                    .get(service)
                    .and_then(|ops| ops.get(operation))
                    .map(|op| op.probability);
                if known.is_none() && self.operations >= MAX_OPERATIONS {
                    continue;
                }
                let old = known.unwrap_or(self.options.initial_sampling_probability);
                let rate = tally.sampled_rate(old, seconds, scale);
                let probability = next_probability(&self.options, rate, old);
                if known.is_none() {
                    self.operations += 1;
                }
                self.probabilities
                    .entry(service.clone())
                    .or_default()
                    .insert(
                        operation.clone(),
                        Operation {
                            probability,
                            idle: 0,
                        },
                    );
                measured.push(Measured {
                    service: service.clone(),
                    operation: operation.clone(),
                    sampled_rate: rate,
                    offered_rate: tally.offered_rate(old, seconds, scale),
                    probability,
                });
            }
        }
        let forget_after = self.options.aggregation_buckets;
        let mut forgotten = 0;
        self.probabilities.retain(|_, operations| {
            let before = operations.len();
            operations.retain(|_, op| op.idle < forget_after);
            forgotten += before - operations.len();
            !operations.is_empty()
        });
        self.operations -= forgotten;
        measured
    }

    /// The probability calculated for an operation, if any.
    pub fn probability(&self, service: &str, operation: &str) -> Option<f64> {
        Some(self.probabilities.get(service)?.get(operation)?.probability)
    }

    /// Every probability calculated, to publish.
    pub fn table(&self) -> Probabilities {
        self.probabilities
            .iter()
            .map(|(service, ops)| {
                let ops = ops
                    .iter()
                    .map(|(operation, op)| (operation.clone(), op.probability))
                    .collect();
                (service.clone(), ops)
            })
            .collect()
    }

    /// Takes another gateway's probabilities as its own (a follower takes
    /// its leader's), so that it goes on from them if it computes next.
    pub fn adopt(&mut self, table: &Probabilities) {
        self.probabilities = table
            .iter()
            .map(|(service, ops)| {
                let ops = ops
                    .iter()
                    .map(|(operation, p)| {
                        let op = Operation {
                            probability: *p,
                            idle: 0,
                        };
                        (operation.clone(), op)
                    })
                    .collect();
                (service.clone(), ops)
            })
            .collect();
        self.operations = self.probabilities.values().map(HashMap::len).sum();
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
            .map(|(operation, op)| OperationSamplingStrategy {
                operation: operation.clone(),
                probabilistic_sampling: Some(ProbabilisticSamplingStrategy {
                    sampling_rate: op.probability,
                }),
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

    /// The strategies to serve: each service's, and for the others the
    /// initial probability.
    pub fn strategies(&self) -> Strategies {
        let services = self
            .probabilities
            .keys()
            .map(|service| (service.clone(), self.strategy(service)))
            .collect();
        Strategies::from_parts(self.strategy(""), services)
    }
}

/// An operation's next probability, from the rate of root spans sampled
/// at probability `old`.
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

    /// Roots sampled at the probability served, per operation.
    fn counts(service: &str, ops: &[(&str, u64)]) -> Tallies {
        let ops = ops
            .iter()
            .map(|(o, c)| {
                let tally = Tally {
                    at_served: *c,
                    ..Tally::default()
                };
                (o.to_string(), tally)
            })
            .collect();
        HashMap::from([(service.to_string(), ops)])
    }

    /// Above the target the probability drops in proportion at once;
    /// below it rises in proportion, at most doubling; within the tolerance it
    /// stays; with nothing received it doubles; it stays within bounds.
    #[test]
    fn the_probability_moves_as_jaegers_does() {
        let o = Options::default();
        assert_eq!(next_probability(&o, 10.0, 0.1), 0.01);
        assert_eq!(next_probability(&o, 0.5, 0.1), 0.2, "in proportion");
        assert_eq!(next_probability(&o, 0.25, 0.1), 0.2, "at most doubled");
        assert_eq!(next_probability(&o, 0.6, 0.1), 0.1 / 0.6);
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
                calculator.calculate(&counts("svc", &[("op", sampled)]), interval, 1.0);
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
            1.0,
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

    /// Roots that say the probability they were sampled at weigh 1/p: the
    /// offered rate comes out the same whatever probability the SDK used,
    /// and so does the next probability.
    #[test]
    fn roots_sampled_at_another_probability_count_for_what_they_stand_for() {
        let options = Options {
            target_samples_per_second: 10.0,
            initial_sampling_probability: 0.1,
            ..Options::default()
        };
        let interval = Duration::from_secs(10);
        // 1000 offered roots a second: at the served 0.1, 1000 sampled in
        // 10 s; an SDK on 0.5 instead sends 5000 that say so.
        let served = counts("svc", &[("op", 1000)]);
        let mut said = Tallies::new();
        said.entry("svc".into()).or_default().insert(
            "op".into(),
            Tally {
                explicit: 5000,
                explicit_offered: 5000.0 / 0.5,
                ..Tally::default()
            },
        );
        let mut a = Calculator::new(options.clone());
        let mut b = Calculator::new(options.clone());
        let ma = a.calculate(&served, interval, 1.0);
        let mb = b.calculate(&said, interval, 1.0);
        assert_eq!(ma[0].offered_rate, 1000.0);
        assert_eq!(mb[0].offered_rate, 1000.0);
        assert_eq!(ma[0].sampled_rate, 100.0);
        assert_eq!(mb[0].sampled_rate, 100.0);
        assert_eq!(a.probability("svc", "op"), Some(0.01));
        assert_eq!(b.probability("svc", "op"), Some(0.01));
    }

    /// In a fleet of n gateways each sees a share of the roots: the leader
    /// scales its own by n.
    #[test]
    fn a_share_of_the_roots_scaled_by_the_fleet_size_gives_the_same_probability() {
        let options = Options {
            target_samples_per_second: 10.0,
            initial_sampling_probability: 0.1,
            ..Options::default()
        };
        let interval = Duration::from_secs(10);
        let mut whole = Calculator::new(options.clone());
        let mut third = Calculator::new(options);
        whole.calculate(&counts("svc", &[("op", 3000)]), interval, 1.0);
        third.calculate(&counts("svc", &[("op", 1000)]), interval, 3.0);
        assert_eq!(whole.table(), third.table());
        assert_eq!(whole.probability("svc", "op"), Some(0.1 / 30.0));
    }

    /// An operation without roots keeps its probability, and is forgotten
    /// after `aggregation_buckets` intervals; a follower adopting a table
    /// serves it as it is.
    #[test]
    fn idle_operations_are_forgotten_and_tables_adopted() {
        let options = Options {
            aggregation_buckets: 3,
            ..Options::default()
        };
        let interval = Duration::from_secs(60);
        let mut calculator = Calculator::new(options);
        calculator.calculate(&counts("svc", &[("op", 600)]), interval, 1.0);
        let p = calculator.probability("svc", "op").unwrap();
        for _ in 0..2 {
            calculator.calculate(&Tallies::new(), interval, 1.0);
            assert_eq!(calculator.probability("svc", "op"), Some(p));
        }
        calculator.calculate(&Tallies::new(), interval, 1.0);
        assert_eq!(calculator.probability("svc", "op"), None);
        assert!(calculator.table().is_empty());

        let table =
            Probabilities::from([("svc".to_string(), BTreeMap::from([("a".to_string(), 0.25)]))]);
        let mut follower = Calculator::new(Options::default());
        follower.adopt(&table);
        assert_eq!(follower.table(), table);
        let strategies = follower.strategies();
        let ops = strategies
            .for_service("svc")
            .operation_sampling
            .clone()
            .unwrap();
        assert_eq!(ops.per_operation_strategies[0].operation, "a");
        assert_eq!(
            strategies
                .for_service("other")
                .probabilistic_sampling
                .unwrap()
                .sampling_rate,
            0.001
        );
    }
}
