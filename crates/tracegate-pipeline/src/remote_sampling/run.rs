//! The `adaptive` source's loop: every `calculation_interval`, take the
//! tallies of the interval that ended, calculate (or, in a fleet, take the
//! leader's probabilities), and serve the result.

use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::adaptive::Calculator;
use super::counting::RootCounter;
use super::fleet::{self, Fleet, Role};
use super::serve::{names, Served};

pub struct Adaptive {
    pub calculator: Calculator,
    pub counter: Arc<RootCounter>,
    pub served: Arc<Served>,
    pub fleet: Option<Fleet>,
    /// When the current interval began.
    pub since: Instant,
    /// The last fetch error logged, so an unreachable leader is logged
    /// once, not every interval.
    pub last_error: Option<String>,
}

impl Adaptive {
    pub fn new(
        calculator: Calculator,
        counter: Arc<RootCounter>,
        served: Arc<Served>,
        fleet: Option<Fleet>,
    ) -> Adaptive {
        let extension = served.extension().to_string();
        metrics::gauge!(names::TARGET_RATE, "extension" => extension)
            .set(calculator.options().target_samples_per_second);
        Adaptive {
            calculator,
            counter,
            served,
            fleet,
            since: Instant::now(),
            last_error: None,
        }
    }

    /// Serves what the calculator holds.
    pub fn publish(&self) {
        self.served
            .publish(self.calculator.strategies(), &self.calculator.table());
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let every = self.calculator.options().calculation_interval;
        let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            self.step().await;
        }
    }

    /// One calculation, or one fetch from the leader.
    pub async fn step(&mut self) {
        let now = Instant::now();
        let interval = now - self.since;
        self.since = now;
        let extension = self.served.extension().to_string();
        let (tallies, uncounted) = self.counter.take();
        if uncounted > 0 {
            metrics::counter!(names::UNCOUNTED_ROOTS, "extension" => extension.clone())
                .increment(uncounted);
        }
        let role = self
            .fleet
            .as_ref()
            .map_or(Role::Leader { scale: 1.0 }, Fleet::role);
        let scale = match role {
            Role::Leader { scale } => scale,
            Role::Follower { leader, scale } => {
                let timeout = self.fleet.as_ref().map(|f| f.timeout).unwrap_or_default();
                let fetched = fleet::fetch(&leader, timeout).await;
                let outcome = if fetched.is_ok() {
                    "success"
                } else {
                    "failure"
                };
                metrics::counter!(names::FETCHES, "extension" => extension.clone(),
                    "outcome" => outcome)
                .increment(1);
                match fetched {
                    Ok(table) => {
                        if self.last_error.take().is_some() {
                            tracing::info!(extension = %extension, leader = %leader,
                                "serving the fleet leader's sampling probabilities again");
                        }
                        self.calculator.adopt(&table);
                        self.publish();
                        metrics::gauge!(names::LEADER, "extension" => extension).set(0.0);
                        return;
                    }
                    Err(e) => {
                        if self.last_error.as_ref() != Some(&e) {
                            tracing::warn!(extension = %extension, leader = %leader, error = %e,
                                "cannot fetch the fleet leader's sampling probabilities; \
                                 calculating from this gateway's share until it answers");
                            self.last_error = Some(e);
                        }
                        scale
                    }
                }
            }
        };
        let measured = self.calculator.calculate(&tallies, interval, scale);
        for m in &measured {
            metrics::gauge!(names::SAMPLED_RATE, "extension" => extension.clone(),
                "service" => m.service.clone(), "operation" => m.operation.clone())
            .set(m.sampled_rate);
            metrics::gauge!(names::OFFERED_RATE, "extension" => extension.clone(),
                "service" => m.service.clone(), "operation" => m.operation.clone())
            .set(m.offered_rate);
        }
        self.publish();
        metrics::gauge!(names::LEADER, "extension" => extension).set(1.0);
    }
}
