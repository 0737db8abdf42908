//! Built tail-sampling policies and the final decision over them, following
//! the OpenTelemetry Collector's `tailsamplingprocessor` to the letter:
//! which spans and resources each policy looks at, in which order, what an
//! attribute of the wrong type reads as, and how the votes combine: Dropped
//! wins, then Sampled, else NotSampled. `invert_match` flips a policy's own
//! vote, as the collector has done since it removed inverted decisions.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regex::Regex;
use thiserror::Error;
use tracegate_model::trace_state::Threshold;
use tracegate_model::{AnyValueRef, SpanBatch, StatusCode};

use crate::policy_config::{is_valid_fraction, parse_status_code};

use super::adaptive::dynamic::Dynamic;
use super::adaptive::key::{KeyFields, RecordedValues};
use super::adaptive::throughput::Throughput;
use super::adaptive::{AdaptiveReport, FleetSize, TraceSeed};
use super::cache::LruMap;
use super::config::{PolicyConfig, PolicyKind};
use super::ottl::OttlCondition;
use super::store::AssembledOnDemand;
use super::{keep_threshold, trace_randomness, TraceId};

/// One policy's vote on a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Sampled,
    NotSampled,
    /// A `drop` policy matched: vetoes everything.
    Dropped,
}

impl Decision {
    /// All votes, in the order of [`Decision::index`].
    pub const ALL: [Decision; 3] = [Decision::Sampled, Decision::NotSampled, Decision::Dropped];

    pub fn index(self) -> usize {
        match self {
            Decision::Sampled => 0,
            Decision::NotSampled => 1,
            Decision::Dropped => 2,
        }
    }

    /// The collector's metric labels for this vote: `sampled` and
    /// `decision`.
    pub fn metric_labels(self) -> (&'static str, &'static str) {
        match self {
            Decision::Sampled => ("true", "sampled"),
            Decision::NotSampled => ("false", "not_sampled"),
            Decision::Dropped => ("false", "dropped"),
        }
    }

    fn is_sampled(self) -> bool {
        self == Decision::Sampled
    }
}

/// The outcome for a whole trace: Sampled, NotSampled or Dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    /// Index into [`PolicySet::names`] of the policy credited with a
    /// Sampled or Dropped outcome (the first that voted so).
    pub policy: Option<usize>,
    /// With `record_policy`: the last composite policy that sampled the
    /// trace and its sub-policy that did (indices into [`PolicySet::names`]
    /// and [`PolicySet::composite_sub_names`]), for the collector's
    /// `tailsampling.composite_policy` attribute.
    pub composite: Option<(usize, usize)>,
    /// Sampled by adaptive policies only: the tail threshold they kept the
    /// trace with (the smallest, when several did), which kept spans
    /// combine with the threshold they arrived with in their tracestate
    /// (`adaptive::apply_tail_threshold`). `None` when a policy without a
    /// probability (any other type) also sampled it.
    pub tail: Option<Threshold>,
}

impl Verdict {
    pub fn is_sampled(&self) -> bool {
        self.decision == Decision::Sampled
    }
}

/// A buffered trace as the policies see it: its spans in arrival order and
/// the aggregates kept while they arrived.
#[derive(Debug, Clone, Copy)]
pub struct TraceView<'a> {
    pub trace_id: &'a TraceId,
    pub span_count: u64,
    /// Encoded size of the trace's `ResourceSpans`, as the collector's
    /// `maximum_trace_size_bytes` measures it.
    pub byte_size: u64,
    /// The same framed as a `TracesData` (each `ResourceSpans` with its
    /// field tag and length), as the collector's `TracesSize` measures it
    /// for `bytes_limiting`.
    pub traces_size: u64,
    /// Bit `1 << status as u8` for every status code seen.
    pub statuses: u8,
    /// Earliest start and latest end of the spans, when every start is
    /// non-zero and every time fits an `i64`: then the latency policy's
    /// running duration only grows, so its final value decides it without
    /// reading the spans. `None`: read them.
    pub(crate) time_window: Option<(u64, u64)>,
    /// Randomness and incoming threshold of the trace's first span.
    pub(crate) seed: TraceSeed,
    /// The values of [`PolicySet::key_fields`] as recorded while the trace
    /// arrived: `dynamic` policies build their keys from them instead of
    /// reading the spans. `None`: read the spans.
    pub(crate) recorded_key: Option<RecordedValues<'a>>,
    spans: TraceSpans<'a>,
}

/// Where a view's spans come from.
#[derive(Debug, Clone, Copy)]
enum TraceSpans<'a> {
    Batches(&'a [SpanBatch]),
    /// Written back from the buffer only when a policy reads spans: most
    /// traces are decided from the aggregates and dropped unread.
    Stored(&'a AssembledOnDemand<'a>),
}

impl<'a> TraceView<'a> {
    /// A view of `batches` (one per arrival), with the aggregates computed
    /// from them.
    pub fn of_batches(trace_id: &'a TraceId, batches: &'a [SpanBatch]) -> TraceView<'a> {
        let mut statuses = 0u8;
        let mut span_count = 0u64;
        for b in batches {
            for sp in b.spans() {
                statuses |= 1 << sp.status as u8;
                span_count += 1;
            }
        }
        let size = batches.iter().map(|b| b.encoded_len() as u64).sum();
        let seed = batches
            .iter()
            .find(|b| !b.is_empty())
            .map_or(TraceSeed::of_trace_id(trace_id), |b| {
                TraceSeed::of_span(b, 0)
            });
        TraceView {
            seed,
            recorded_key: None,
            trace_id,
            span_count,
            byte_size: size,
            traces_size: size,
            statuses,
            time_window: None,
            spans: TraceSpans::Batches(batches),
        }
    }

    /// A view of a buffered trace whose spans are assembled on first read.
    pub(crate) fn of_stored(
        trace_id: &'a TraceId,
        span_count: u64,
        byte_size: u64,
        traces_size: u64,
        statuses: u8,
        time_window: Option<(u64, u64)>,
        spans: &'a AssembledOnDemand<'a>,
    ) -> TraceView<'a> {
        TraceView {
            seed: TraceSeed::of_trace_id(trace_id),
            recorded_key: None,
            trace_id,
            span_count,
            byte_size,
            traces_size,
            statuses,
            time_window,
            spans: TraceSpans::Stored(spans),
        }
    }

    /// The view with the randomness and incoming threshold of the trace's
    /// first span, as recorded while it arrived.
    pub(crate) fn with_seed(mut self, seed: TraceSeed) -> TraceView<'a> {
        self.seed = seed;
        self
    }

    /// The view with the key fields' values recorded while the trace
    /// arrived, by the [`KeyFields`] of the policy set that decides it.
    pub(crate) fn with_recorded_key(mut self, values: RecordedValues<'a>) -> TraceView<'a> {
        self.recorded_key = Some(values);
        self
    }

    /// The trace's spans, one batch per arrival (or one for all), in
    /// arrival order.
    pub fn batches(&self) -> &'a [SpanBatch] {
        match self.spans {
            TraceSpans::Batches(b) => b,
            TraceSpans::Stored(s) => std::slice::from_ref(s.batch()),
        }
    }
}

/// A config the policies cannot be built from.
#[derive(Debug, Error, PartialEq)]
pub enum BuildError {
    #[error("policy name cannot be empty")]
    EmptyName,
    #[error("duplicate policy name {0:?}")]
    DuplicateName(String),
    #[error("policy {name:?}: {message}")]
    Invalid { name: String, message: String },
}

fn invalid(name: &str, message: impl Into<String>) -> BuildError {
    BuildError::Invalid {
        name: name.to_string(),
        message: message.into(),
    }
}

/// The configured policies, drop policies first (as the collector orders
/// them, since Dropped wins anyway and ends evaluation early).
#[derive(Debug)]
pub struct PolicySet {
    policies: Vec<Policy>,
    names: Vec<String>,
    /// Per policy: a top-level `drop` policy.
    is_drop: Vec<bool>,
    sample_on_first_match: bool,
    /// Per policy, since the last [`PolicySet::take_tally`].
    tally: Vec<PolicyTally>,
    /// The attributes the `dynamic` policies read, recorded by the buffer
    /// as traces arrive; `None` without a `dynamic` policy.
    key_fields: Option<KeyFields>,
}

impl PolicySet {
    /// Builds the policies, checking every config; `Ok` also carries
    /// warnings about valid but surprising settings.
    pub fn build(
        configs: &[PolicyConfig],
        sample_on_first_match: bool,
    ) -> Result<(PolicySet, Vec<String>), BuildError> {
        PolicySet::build_in_fleet(configs, sample_on_first_match, &FleetSize::default())
    }

    /// [`Self::build`], with adaptive policies dividing their per-second
    /// goals by `fleet`, the live gateways of the fleet.
    pub fn build_in_fleet(
        configs: &[PolicyConfig],
        sample_on_first_match: bool,
        fleet: &FleetSize,
    ) -> Result<(PolicySet, Vec<String>), BuildError> {
        let mut warnings = Vec::new();
        let mut seen = HashSet::new();
        let mut drops = Vec::new();
        let mut others = Vec::new();
        let mut key_fields: Option<KeyFields> = None;
        for config in configs {
            if config.name.is_empty() {
                return Err(BuildError::EmptyName);
            }
            if !seen.insert(config.name.as_str()) {
                return Err(BuildError::DuplicateName(config.name.clone()));
            }
            let mut policy = Policy::build(config, Level::Top, &mut warnings)?;
            match &mut policy.evaluator {
                Evaluator::Throughput(t) => *t = t.in_fleet(fleet),
                Evaluator::Dynamic(d) => {
                    d.policy = d.policy.in_fleet(fleet);
                    let fields = key_fields.get_or_insert_with(KeyFields::default);
                    d.recorded = d
                        .policy
                        .key_fields()
                        .iter()
                        .map(|f| fields.index_of(f))
                        .collect();
                }
                _ => {}
            }
            if config.kind == PolicyKind::Drop {
                drops.push(policy);
            } else {
                others.push(policy);
            }
        }
        let is_drop = (0..drops.len() + others.len())
            .map(|i| i < drops.len())
            .collect();
        drops.extend(others);
        let names = drops.iter().map(|p| p.name.clone()).collect();
        let tally = vec![PolicyTally::default(); drops.len()];
        Ok((
            PolicySet {
                policies: drops,
                names,
                is_drop,
                sample_on_first_match,
                tally,
                key_fields,
            },
            warnings,
        ))
    }

    /// [`Self::build_in_fleet`], once per shard: each shard evaluates with
    /// a set of its own (scratch buffers, regex caches, its tally), so
    /// shards decide without a lock between them, while what is a budget
    /// or a rate for the whole processor — the `rate_limiting` and
    /// `bytes_limiting` buckets, a `composite`'s per-second counts, the
    /// `throughput` and `dynamic` states — is one state the sets share.
    /// Deciding the same traces in the same order through any of the sets
    /// keeps the same traces as one set would.
    pub fn build_shards(
        configs: &[PolicyConfig],
        sample_on_first_match: bool,
        fleet: &FleetSize,
        shards: usize,
    ) -> Result<(Vec<PolicySet>, Vec<String>), BuildError> {
        let (first, warnings) = PolicySet::build_in_fleet(configs, sample_on_first_match, fleet)?;
        let mut sets = Vec::with_capacity(shards.max(1));
        for _ in 1..shards.max(1) {
            let (mut set, _) = PolicySet::build_in_fleet(configs, sample_on_first_match, fleet)?;
            for (mine, shared) in set.policies.iter_mut().zip(&first.policies) {
                mine.share_state_of(shared);
            }
            sets.push(set);
        }
        sets.insert(0, first);
        Ok((sets, warnings))
    }

    /// Policy names in evaluation order (drop policies first).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The key each `dynamic` policy builds for `trace` (tests).
    #[cfg(test)]
    pub(crate) fn dynamic_keys(&mut self, trace: &TraceView<'_>) -> Vec<String> {
        let mut keys = Vec::new();
        for p in &mut self.policies {
            if let Evaluator::Dynamic(d) = &mut p.evaluator {
                d.build_key(trace);
                keys.push(d.key.clone());
            }
        }
        keys
    }

    /// The attributes the set's `dynamic` policies build keys from, for a
    /// buffer to record as traces arrive ([`TraceView::with_recorded_key`]);
    /// `None` when no policy reads them.
    pub fn key_fields(&self) -> Option<&KeyFields> {
        self.key_fields.as_ref()
    }

    /// Evaluates the policies over a trace and combines their votes.
    pub fn decide(&mut self, trace: &TraceView<'_>, now: Duration) -> Verdict {
        let mut first: [Option<usize>; 3] = [None; 3];
        let mut composite = None;
        // The smallest tail threshold of the adaptive policies that
        // sampled, and whether another policy sampled too.
        let mut tail: Option<Threshold> = None;
        let mut sampled_without_probability = false;
        for (i, policy) in self.policies.iter_mut().enumerate() {
            let vote = self.tally[i].count(trace.span_count, || policy.evaluate(trace, now));
            first[vote.index()].get_or_insert(i);
            if vote == Decision::Sampled {
                match policy.last_tail {
                    Some(t) => tail = Some(tail.map_or(t, |was| was.min(t))),
                    None => sampled_without_probability = true,
                }
            }
            if let (Decision::Sampled, Evaluator::Composite(c)) = (vote, &policy.evaluator) {
                // The collector writes the attribute as the composite
                // samples, so the last one to sample names it.
                composite = c.last_sampled.map(|sub| (i, sub));
            }
            if vote == Decision::Dropped {
                break;
            }
            if self.sample_on_first_match && vote == Decision::Sampled {
                break;
            }
        }
        let voted = |d: Decision| first[d.index()];
        if let Some(p) = voted(Decision::Dropped) {
            Verdict {
                decision: Decision::Dropped,
                policy: Some(p),
                composite: None,
                tail: None,
            }
        } else if let Some(p) = voted(Decision::Sampled) {
            Verdict {
                decision: Decision::Sampled,
                policy: Some(p),
                composite,
                tail: tail.filter(|_| !sampled_without_probability),
            }
        } else {
            Verdict {
                decision: Decision::NotSampled,
                policy: None,
                composite: None,
                tail: None,
            }
        }
    }

    /// For each policy (in [`Self::names`] order), the names of its
    /// composite sub-policies (empty for other policies).
    pub fn composite_sub_names(&self) -> Vec<Vec<String>> {
        self.policies
            .iter()
            .map(|p| match &p.evaluator {
                Evaluator::Composite(c) => c.subs.iter().map(|s| s.policy.name.clone()).collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// The first policy that keeps state across traces (`rate_limiting`,
    /// `bytes_limiting`, `composite`, or a combination holding one), which
    /// `sampling_strategy: span-ingest` refuses as the collector does: a
    /// budget spent on one batch of a trace says nothing about the trace.
    pub fn stateful_policy(&self) -> Option<&str> {
        self.policies
            .iter()
            .find(|p| p.evaluator.is_stateful())
            .map(|p| p.name.as_str())
    }

    /// `sampling_strategy: span-ingest`: evaluates the policies over one
    /// arriving batch of a trace (`trace` holds that batch's spans, with the
    /// trace's span count so far) and returns a decision only when it is
    /// final, as the collector's span-ingest mode does:
    /// - a drop policy voting Dropped drops the trace;
    /// - a drop policy that does not match this batch might match a later
    ///   one, so nothing can be sampled yet: evaluation stops before the
    ///   first non-drop policy;
    /// - otherwise the first policy voting Sampled samples the trace.
    ///
    /// `None`: still pending (undecided traces are not sampled when their
    /// `decision_wait` ends).
    pub fn decide_span_ingest(&mut self, trace: &TraceView<'_>, now: Duration) -> Option<Verdict> {
        let mut drop_pending = false;
        for (i, policy) in self.policies.iter_mut().enumerate() {
            let is_drop = self.is_drop[i];
            if !is_drop && drop_pending {
                break;
            }
            let vote = self.tally[i].count(trace.span_count, || policy.evaluate(trace, now));
            if vote == Decision::Dropped {
                return Some(Verdict {
                    decision: Decision::Dropped,
                    policy: Some(i),
                    composite: None,
                    tail: None,
                });
            }
            if is_drop {
                drop_pending = true;
                continue;
            }
            if vote == Decision::Sampled {
                return Some(Verdict {
                    decision: Decision::Sampled,
                    policy: Some(i),
                    composite: None,
                    tail: None,
                });
            }
        }
        None
    }

    /// What each adaptive policy (by index into [`Self::names`]) reports
    /// for metrics since the last call.
    pub fn adaptive_reports(&self) -> Vec<(usize, AdaptiveReport)> {
        self.policies
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match &p.evaluator {
                Evaluator::Throughput(t) => Some((i, t.report())),
                Evaluator::Dynamic(d) => Some((i, d.policy.report())),
                _ => None,
            })
            .collect()
    }

    /// What each policy did (in [`Self::names`] order) since the last call,
    /// for the collector's per-policy metrics.
    pub fn take_tally(&mut self) -> Vec<PolicyTally> {
        let fresh = vec![PolicyTally::default(); self.tally.len()];
        std::mem::replace(&mut self.tally, fresh)
    }
}

/// One policy's evaluations since the last [`PolicySet::take_tally`], for
/// the collector's per-policy metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyTally {
    /// Traces by vote, indexed by [`Decision::index`]
    /// (`count_traces_sampled`).
    pub traces: [u64; 3],
    /// Their spans, by vote (`count_spans_sampled`).
    pub spans: [u64; 3],
    /// Evaluations (`sampling_policy_execution_count`).
    pub executions: u64,
    /// Time spent evaluating, in nanoseconds
    /// (`sampling_policy_execution_time_sum`, which is in µs).
    pub execution_nanos: u64,
}

impl PolicyTally {
    fn count(&mut self, spans: u64, evaluate: impl FnOnce() -> Decision) -> Decision {
        let started = std::time::Instant::now();
        let vote = evaluate();
        self.execution_nanos += started.elapsed().as_nanos() as u64;
        self.executions += 1;
        self.traces[vote.index()] += 1;
        self.spans[vote.index()] += spans;
        vote
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Level {
    Top,
    /// Inside `not` or `drop`: leaf policies only.
    Leaf,
    /// Inside `and`: leaf policies and `not` (as the collector's
    /// `and_sub_policy` allows).
    AndSub,
    /// Inside `composite`: leaf policies and `and`.
    CompositeSub,
}

#[derive(Debug)]
struct Policy {
    name: String,
    /// `fraction_on_match` as an OTEP 235 keep threshold.
    keep_threshold: Option<u64>,
    evaluator: Evaluator,
    /// An adaptive policy's threshold for the trace it last sampled.
    last_tail: Option<Threshold>,
}

#[derive(Debug)]
enum Evaluator {
    AlwaysSample,
    Latency {
        threshold_ms: i64,
        upper_threshold_ms: i64,
    },
    NumericAttribute {
        key: String,
        min: i64,
        max: i64,
        invert: bool,
    },
    Probabilistic {
        salt: String,
        threshold: u64,
    },
    StatusCode {
        /// Bit `1 << code` for every listed code.
        mask: u8,
    },
    StringAttribute {
        key: String,
        matcher: StringMatcher,
        invert: bool,
    },
    RateLimiting(TokenBucket),
    BytesLimiting(TokenBucket),
    SpanCount {
        min: i64,
        max: i64,
    },
    TraceState {
        key: String,
        values: HashSet<String>,
    },
    BooleanAttribute {
        key: String,
        value: bool,
        invert: bool,
    },
    Ottl(Vec<OttlCondition>),
    TraceFlags,
    And(Vec<Policy>),
    Not(Box<Policy>),
    Drop(Vec<Policy>),
    Composite(Composite),
    Throughput(Throughput),
    Dynamic(DynamicPolicy),
}

/// A `dynamic` policy and its buffer for building keys.
#[derive(Debug)]
struct DynamicPolicy {
    policy: Dynamic,
    key: String,
    /// Its key fields' indices in the set's [`KeyFields`].
    recorded: Vec<usize>,
}

impl DynamicPolicy {
    /// Builds the trace's key into `self.key`: from the values recorded as
    /// it arrived when the view has them, else from its spans.
    fn build_key(&mut self, trace: &TraceView<'_>) {
        match trace.recorded_key {
            Some(values) => Dynamic::key_of_recorded(values, &self.recorded, &mut self.key),
            None => self.policy.key_of(trace, &mut self.key),
        }
    }

    fn decide(&mut self, trace: &TraceView<'_>, now: Duration) -> Option<Threshold> {
        self.build_key(trace);
        self.policy.decide(&self.key, trace.seed, now)
    }
}

impl Policy {
    fn build(
        config: &PolicyConfig,
        level: Level,
        warnings: &mut Vec<String>,
    ) -> Result<Policy, BuildError> {
        let name = config.name.as_str();
        let kind = config.kind;
        let allowed = match level {
            Level::Top => true,
            Level::Leaf => !matches!(
                kind,
                PolicyKind::And | PolicyKind::Not | PolicyKind::Drop | PolicyKind::Composite
            ),
            Level::AndSub => !matches!(
                kind,
                PolicyKind::And | PolicyKind::Drop | PolicyKind::Composite
            ),
            Level::CompositeSub => !matches!(
                kind,
                PolicyKind::Not | PolicyKind::Drop | PolicyKind::Composite
            ),
        };
        if !allowed {
            return Err(invalid(
                name,
                format!(
                    "a {} policy cannot be used as a sub-policy here",
                    kind.as_str()
                ),
            ));
        }
        let fraction = config.fraction_on_match().map_err(|m| invalid(name, m))?;
        let adaptive = matches!(kind, PolicyKind::Throughput | PolicyKind::Dynamic);
        if adaptive && level != Level::Top {
            return Err(invalid(
                name,
                format!("a {} policy can only be a top-level policy", kind.as_str()),
            ));
        }
        if adaptive && fraction.is_some() {
            return Err(invalid(
                name,
                format!(
                    "fraction_on_match is not supported for a {} policy, which chooses its own probability",
                    kind.as_str()
                ),
            ));
        }
        let keep_threshold = match fraction {
            None => None,
            Some(f) if is_valid_fraction(f) => Some(keep_threshold(f)),
            Some(f) => {
                return Err(invalid(
                    name,
                    format!("fraction_on_match must be between 0 and 1, got {f}"),
                ))
            }
        };
        let evaluator = match kind {
            PolicyKind::AlwaysSample => Evaluator::AlwaysSample,
            PolicyKind::Latency => {
                let c = config.latency.clone().unwrap_or_default();
                if c.upper_threshold_ms != 0 && c.upper_threshold_ms < c.threshold_ms {
                    return Err(invalid(
                        name,
                        "latency: upper_threshold_ms must be at least threshold_ms",
                    ));
                }
                Evaluator::Latency {
                    threshold_ms: c.threshold_ms,
                    upper_threshold_ms: c.upper_threshold_ms,
                }
            }
            PolicyKind::NumericAttribute => {
                let c = config.numeric_attribute.clone().unwrap_or_default();
                // The collector treats a bound of 0 as unset.
                if c.min_value == 0 && c.max_value == 0 {
                    return Err(invalid(
                        name,
                        "numeric_attribute: at least one of min_value or max_value must be set",
                    ));
                }
                let min = if c.min_value == 0 {
                    i64::MIN
                } else {
                    c.min_value
                };
                let max = if c.max_value == 0 {
                    i64::MAX
                } else {
                    c.max_value
                };
                Evaluator::NumericAttribute {
                    key: c.key,
                    min,
                    max,
                    invert: c.invert_match,
                }
            }
            PolicyKind::Probabilistic => {
                let c = config.probabilistic.clone().unwrap_or_default();
                let salt = if c.hash_salt.is_empty() {
                    DEFAULT_HASH_SALT.to_string()
                } else {
                    c.hash_salt
                };
                Evaluator::Probabilistic {
                    salt,
                    threshold: probabilistic_threshold(c.sampling_percentage / 100.0),
                }
            }
            PolicyKind::StatusCode => {
                let c = config.status_code.clone().unwrap_or_default();
                if c.status_codes.is_empty() {
                    return Err(invalid(
                        name,
                        "status_code: expected at least one status code to filter on",
                    ));
                }
                let mut mask = 0u8;
                for code in &c.status_codes {
                    let bit = parse_status_code(code).ok_or_else(|| {
                        invalid(
                            name,
                            format!(
                                "status_code: unknown status code {code:?}, supported: OK, ERROR, UNSET"
                            ),
                        )
                    })?;
                    mask |= 1 << bit as u8;
                }
                if mask & (1 << StatusCode::Unset as u8) != 0 {
                    warnings.push(format!(
                        "policy {name:?}: status_code lists UNSET, which nearly every span has, so it keeps almost every trace"
                    ));
                }
                Evaluator::StatusCode { mask }
            }
            PolicyKind::StringAttribute => {
                let c = config.string_attribute.clone().unwrap_or_default();
                let matcher = if c.enabled_regex_matching {
                    let mut regexes = Vec::with_capacity(c.values.len());
                    for value in &c.values {
                        let re = Regex::new(&re2_perl_classes(value)).map_err(|e| {
                            invalid(
                                name,
                                format!("string_attribute: invalid regex {value:?}: {e}"),
                            )
                        })?;
                        regexes.push(re);
                    }
                    let size = if c.cache_max_size <= 0 {
                        DEFAULT_REGEX_CACHE_SIZE
                    } else {
                        c.cache_max_size as usize
                    };
                    StringMatcher::Regex {
                        regexes,
                        cache: LruMap::new(size),
                    }
                } else {
                    StringMatcher::Exact(
                        c.values.iter().filter(|v| !v.is_empty()).cloned().collect(),
                    )
                };
                Evaluator::StringAttribute {
                    key: c.key,
                    matcher,
                    invert: c.invert_match,
                }
            }
            PolicyKind::RateLimiting => {
                let c = config.rate_limiting.clone().unwrap_or_default();
                if c.spans_per_second < 0 {
                    return Err(invalid(
                        name,
                        "rate_limiting: spans_per_second must not be negative",
                    ));
                }
                let burst = if c.burst_capacity > 0 {
                    c.burst_capacity
                } else {
                    c.spans_per_second.saturating_mul(2)
                };
                Evaluator::RateLimiting(TokenBucket::new(c.spans_per_second as f64, burst))
            }
            PolicyKind::BytesLimiting => {
                let c = config.bytes_limiting.clone().unwrap_or_default();
                if c.bytes_per_second < 0 {
                    return Err(invalid(
                        name,
                        "bytes_limiting: bytes_per_second must not be negative",
                    ));
                }
                let burst = if c.burst_capacity > 0 {
                    c.burst_capacity
                } else {
                    c.bytes_per_second.saturating_mul(2)
                };
                Evaluator::BytesLimiting(TokenBucket::new(c.bytes_per_second as f64, burst))
            }
            PolicyKind::SpanCount => {
                let c = config.span_count.clone().unwrap_or_default();
                if c.max_spans != 0 && c.max_spans < c.min_spans {
                    return Err(invalid(
                        name,
                        "span_count: max_spans must be at least min_spans",
                    ));
                }
                Evaluator::SpanCount {
                    min: i64::from(c.min_spans),
                    max: i64::from(c.max_spans),
                }
            }
            PolicyKind::TraceState => {
                let c = config.trace_state.clone().unwrap_or_default();
                let values = c
                    .values
                    .iter()
                    .filter(|v| !v.is_empty() && c.key.len() + v.len() < 256)
                    .cloned()
                    .collect();
                Evaluator::TraceState { key: c.key, values }
            }
            PolicyKind::BooleanAttribute => {
                let c = config.boolean_attribute.clone().unwrap_or_default();
                Evaluator::BooleanAttribute {
                    key: c.key,
                    value: c.value,
                    invert: c.invert_match,
                }
            }
            PolicyKind::OttlCondition => {
                let c = config.ottl_condition.clone().unwrap_or_default();
                match c.error_mode.as_deref() {
                    None | Some("propagate") | Some("ignore") | Some("silent") => {}
                    Some(other) => {
                        return Err(invalid(
                            name,
                            format!("ottl_condition: unknown error_mode {other:?} (propagate, ignore, silent)"),
                        ))
                    }
                }
                if c.span.is_empty() && c.spanevent.is_empty() {
                    return Err(invalid(
                        name,
                        "ottl_condition: at least one span or spanevent condition is required",
                    ));
                }
                if let Some(first) = c.spanevent.first() {
                    return Err(invalid(
                        name,
                        format!("ottl_condition: unsupported expression {first:?}: span event conditions are not supported yet"),
                    ));
                }
                let mut conditions = Vec::with_capacity(c.span.len());
                for text in &c.span {
                    conditions.push(OttlCondition::parse(text).map_err(|e| {
                        invalid(
                            name,
                            format!("ottl_condition: unsupported expression {text:?}: {e}"),
                        )
                    })?);
                }
                Evaluator::Ottl(conditions)
            }
            PolicyKind::TraceFlags => Evaluator::TraceFlags,
            PolicyKind::And => {
                let subs = config
                    .and
                    .as_ref()
                    .map(|c| c.and_sub_policy.as_slice())
                    .unwrap_or(&[]);
                Evaluator::And(build_subs(subs, Level::AndSub, warnings)?)
            }
            PolicyKind::Drop => {
                let subs = config
                    .drop
                    .as_ref()
                    .map(|c| c.drop_sub_policy.as_slice())
                    .unwrap_or(&[]);
                if subs.is_empty() {
                    warnings.push(format!(
                        "policy {name:?}: a drop policy without sub-policies drops every trace"
                    ));
                }
                Evaluator::Drop(build_subs(subs, Level::Leaf, warnings)?)
            }
            PolicyKind::Not => {
                let Some(not) = config.not.as_ref() else {
                    return Err(invalid(name, "not: not_sub_policy is required"));
                };
                Evaluator::Not(Box::new(Policy::build(
                    &not.not_sub_policy,
                    Level::Leaf,
                    warnings,
                )?))
            }
            PolicyKind::Composite => {
                let c = config.composite.clone().unwrap_or_default();
                Evaluator::Composite(Composite::build(name, &c, warnings)?)
            }
            PolicyKind::Throughput => {
                let c = config.throughput.clone().unwrap_or_default();
                let settings = c.settings().map_err(|m| invalid(name, m))?;
                Evaluator::Throughput(Throughput::new(settings, FleetSize::default()))
            }
            PolicyKind::Dynamic => {
                let Some(c) = config.dynamic.as_ref() else {
                    return Err(invalid(
                        name,
                        "dynamic: a dynamic block with key_fields and a goal is required",
                    ));
                };
                let settings = c.settings().map_err(|m| invalid(name, m))?;
                Evaluator::Dynamic(DynamicPolicy {
                    policy: Dynamic::new(settings, FleetSize::default()),
                    key: String::new(),
                    recorded: Vec::new(),
                })
            }
        };
        Ok(Policy {
            name: name.to_string(),
            keep_threshold,
            evaluator,
            last_tail: None,
        })
    }

    /// Takes `other`'s processor-wide state (budgets, adaptive state) in
    /// place of its own; `other` was built from the same config.
    fn share_state_of(&mut self, other: &Policy) {
        match (&mut self.evaluator, &other.evaluator) {
            (Evaluator::RateLimiting(mine), Evaluator::RateLimiting(shared))
            | (Evaluator::BytesLimiting(mine), Evaluator::BytesLimiting(shared)) => {
                *mine = shared.clone();
            }
            (Evaluator::Throughput(mine), Evaluator::Throughput(shared)) => *mine = shared.clone(),
            (Evaluator::Dynamic(mine), Evaluator::Dynamic(shared)) => {
                mine.policy = shared.policy.clone();
            }
            (Evaluator::Composite(mine), Evaluator::Composite(shared)) => {
                mine.budget = shared.budget.clone();
                for (sub, shared) in mine.subs.iter_mut().zip(&shared.subs) {
                    sub.policy.share_state_of(&shared.policy);
                }
            }
            (Evaluator::And(mine), Evaluator::And(shared))
            | (Evaluator::Drop(mine), Evaluator::Drop(shared)) => {
                for (sub, shared) in mine.iter_mut().zip(shared) {
                    sub.share_state_of(shared);
                }
            }
            (Evaluator::Not(mine), Evaluator::Not(shared)) => mine.share_state_of(shared),
            _ => {}
        }
    }

    fn evaluate(&mut self, trace: &TraceView<'_>, now: Duration) -> Decision {
        let passes_fraction = self
            .keep_threshold
            .is_none_or(|t| trace_randomness(trace.trace_id) >= t);
        // A budget must not be spent on a trace the fraction refuses anyway.
        if !passes_fraction && self.evaluator.is_stateful() {
            return Decision::NotSampled;
        }
        let vote = match &mut self.evaluator {
            Evaluator::Throughput(t) => {
                self.last_tail = t.decide(trace.seed, now);
                sampled_if(self.last_tail.is_some())
            }
            Evaluator::Dynamic(d) => {
                self.last_tail = d.decide(trace, now);
                sampled_if(self.last_tail.is_some())
            }
            evaluator => evaluator.evaluate(trace, now),
        };
        if !passes_fraction && vote.is_sampled() {
            return Decision::NotSampled;
        }
        vote
    }
}

fn build_subs(
    configs: &[PolicyConfig],
    level: Level,
    warnings: &mut Vec<String>,
) -> Result<Vec<Policy>, BuildError> {
    configs
        .iter()
        .map(|c| Policy::build(c, level, warnings))
        .collect()
}

const DEFAULT_HASH_SALT: &str = "default-hash-seed";
const DEFAULT_REGEX_CACHE_SIZE: usize = 128;

impl Evaluator {
    fn is_stateful(&self) -> bool {
        match self {
            Evaluator::RateLimiting(_)
            | Evaluator::BytesLimiting(_)
            | Evaluator::Composite(_)
            | Evaluator::Throughput(_)
            | Evaluator::Dynamic(_) => true,
            Evaluator::And(subs) | Evaluator::Drop(subs) => {
                subs.iter().any(|s| s.evaluator.is_stateful())
            }
            Evaluator::Not(sub) => sub.evaluator.is_stateful(),
            _ => false,
        }
    }

    fn evaluate(&mut self, trace: &TraceView<'_>, now: Duration) -> Decision {
        match self {
            Evaluator::AlwaysSample => Decision::Sampled,
            Evaluator::Latency {
                threshold_ms,
                upper_threshold_ms,
            } => latency(trace, *threshold_ms, *upper_threshold_ms),
            Evaluator::NumericAttribute {
                key,
                min,
                max,
                invert,
            } => {
                let (min, max) = (*min, *max);
                // pcommon's Value.Int(): 0 for any value that is not an int.
                let in_range = |v: Lookup<'_>| match v {
                    Some(Some(AnyValueRef::Int(n))) => n >= min && n <= max,
                    Some(_) => 0 >= min && 0 <= max,
                    None => false,
                };
                resource_or_span_present(trace, key, *invert, in_range)
            }
            Evaluator::Probabilistic { salt, threshold } => {
                if fnv1a64(salt.as_bytes(), trace.trace_id) <= *threshold {
                    Decision::Sampled
                } else {
                    Decision::NotSampled
                }
            }
            Evaluator::StatusCode { mask } => {
                if trace.statuses & *mask != 0 {
                    Decision::Sampled
                } else {
                    Decision::NotSampled
                }
            }
            Evaluator::StringAttribute {
                key,
                matcher,
                invert,
            } => {
                // pcommon's Value.Str(): "" for any value that is not a string.
                let mut matches = |v: Lookup<'_>| match v {
                    Some(v) => matcher.matches(str_of(v)),
                    None => false,
                };
                string_attribute(trace, key, *invert, &mut matches)
            }
            Evaluator::RateLimiting(bucket) => {
                if bucket.allow(now, trace.span_count as i64) {
                    Decision::Sampled
                } else {
                    Decision::NotSampled
                }
            }
            Evaluator::BytesLimiting(bucket) => {
                if bucket.allow(now, trace.traces_size as i64) {
                    Decision::Sampled
                } else {
                    Decision::NotSampled
                }
            }
            Evaluator::SpanCount { min, max } => {
                let n = trace.span_count as i64;
                if n >= *min && (*max == 0 || n <= *max) {
                    Decision::Sampled
                } else {
                    Decision::NotSampled
                }
            }
            Evaluator::TraceState { key, values } => has_span(trace, |batch, i| {
                trace_state_get(batch.span_trace_state(i), key).is_some_and(|v| values.contains(v))
            }),
            Evaluator::BooleanAttribute { key, value, invert } => {
                let want = *value;
                // pcommon's Value.Bool(): false for any value that is not a bool.
                let matches = |v: Option<Option<AnyValueRef<'_>>>| match v {
                    Some(Some(AnyValueRef::Bool(b))) => b == want,
                    Some(_) => !want,
                    None => false,
                };
                resource_or_span_present(trace, key, *invert, matches)
            }
            Evaluator::Ottl(conditions) => has_span(trace, |batch, i| {
                conditions.iter().any(|c| c.matches(batch, i))
            }),
            Evaluator::TraceFlags => has_span(trace, |batch, i| span_flags(batch, i) & 0x01 != 0),
            Evaluator::And(subs) => {
                for sub in subs.iter_mut() {
                    let vote = sub.evaluate(trace, now);
                    if vote == Decision::NotSampled {
                        return Decision::NotSampled;
                    }
                }
                Decision::Sampled
            }
            Evaluator::Not(sub) => flip(sub.evaluate(trace, now), true),
            Evaluator::Drop(subs) => {
                for sub in subs.iter_mut() {
                    let vote = sub.evaluate(trace, now);
                    if vote == Decision::NotSampled {
                        return Decision::NotSampled;
                    }
                }
                Decision::Dropped
            }
            Evaluator::Composite(composite) => composite.evaluate(trace, now),
            // Evaluated by `Policy::evaluate`, which keeps their threshold;
            // they are top-level only.
            Evaluator::Throughput(t) => sampled_if(t.decide(trace.seed, now).is_some()),
            Evaluator::Dynamic(d) => sampled_if(d.decide(trace, now).is_some()),
        }
    }
}

fn sampled_if(keep: bool) -> Decision {
    if keep {
        Decision::Sampled
    } else {
        Decision::NotSampled
    }
}

/// The collector's latency check: a running earliest start and latest end
/// over the spans in arrival order, sampling as soon as the running
/// duration qualifies (so with an upper bound, a prefix in range counts).
/// A duration of exactly `threshold_ms` never qualifies.
fn latency(trace: &TraceView<'_>, threshold_ms: i64, upper_ms: i64) -> Decision {
    if let (0, Some((min, max))) = (upper_ms, trace.time_window) {
        // Both within i64 and min non-zero: the running duration never
        // shrinks, so some prefix qualifies exactly when the whole does.
        let ms = (max as i64).wrapping_sub(min as i64) / 1_000_000;
        return if ms > threshold_ms {
            Decision::Sampled
        } else {
            Decision::NotSampled
        };
    }
    let mut min = 0u64;
    let mut max = 0u64;
    has_span(trace, |batch, i| {
        let span = &batch.spans()[i];
        if min == 0 || span.start_time_unix_nano < min {
            min = span.start_time_unix_nano;
        }
        if max == 0 || span.end_time_unix_nano > max {
            max = span.end_time_unix_nano;
        }
        // Go: time.Duration of the difference, truncated to milliseconds.
        let ms = (max as i64).wrapping_sub(min as i64) / 1_000_000;
        // The lower bound is exclusive with or without an upper bound, as
        // in the collector since it aligned the two (mid-2026).
        threshold_ms < ms && (upper_ms == 0 || ms <= upper_ms)
    })
}

/// Sampled when `check` holds for some span, in arrival order.
fn has_span(trace: &TraceView<'_>, mut check: impl FnMut(&SpanBatch, usize) -> bool) -> Decision {
    for batch in trace.batches() {
        for i in 0..batch.len() {
            if check(batch, i) {
                return Decision::Sampled;
            }
        }
    }
    Decision::NotSampled
}

/// An attribute looked up the way pcommon's `Map.Get` does: `None` when
/// the key is absent, `Some(None)` when present with an empty value.
type Lookup<'a> = Option<Option<AnyValueRef<'a>>>;

fn lookup<'a>(mut attrs: tracegate_model::Attributes<'a>, key: &str) -> Lookup<'a> {
    attrs.find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// The first span index of each resource of a batch (every resource of a
/// stored batch has spans).
fn resource_first_spans(
    batch: &SpanBatch,
) -> impl Iterator<Item = (usize, std::ops::Range<usize>)> + '_ {
    batch.resources().iter().map(move |r| {
        let scopes = &batch.scopes()[r.scopes.start as usize..r.scopes.end as usize];
        let start = scopes.first().map_or(0, |s| s.spans.start as usize);
        let end = scopes.last().map_or(0, |s| s.spans.end as usize);
        (start, start..end)
    })
}

/// The collector's `hasResourceOrSpanWithCondition` and its inverted form,
/// with one check for resources and spans.
fn resource_or_span_present(
    trace: &TraceView<'_>,
    key: &str,
    invert: bool,
    matches: impl Fn(Lookup<'_>) -> bool,
) -> Decision {
    walk_resources_and_spans(trace, key, invert, &matches, &matches)
}

/// Walks each stored `ResourceSpans`: its resource, then its spans, and
/// votes Sampled at the first match, NotSampled when nothing matched. With
/// `invert` the vote is flipped: NotSampled at the first match, Sampled
/// when nothing matched (a missing key included), as the collector's
/// `invert_match` has voted since it removed inverted decisions.
fn walk_resources_and_spans(
    trace: &TraceView<'_>,
    key: &str,
    invert: bool,
    mut resource_matches: impl FnMut(Lookup<'_>) -> bool,
    mut span_matches: impl FnMut(Lookup<'_>) -> bool,
) -> Decision {
    for batch in trace.batches() {
        for (first, spans) in resource_first_spans(batch) {
            if resource_matches(lookup(batch.resource_attributes(first), key)) {
                return flip(Decision::Sampled, invert);
            }
            for i in spans {
                if span_matches(lookup(batch.span_attributes(i), key)) {
                    return flip(Decision::Sampled, invert);
                }
            }
        }
    }
    flip(Decision::NotSampled, invert)
}

/// `invert_match`: Sampled and NotSampled swap.
fn flip(vote: Decision, invert: bool) -> Decision {
    match (vote, invert) {
        (Decision::Sampled, true) => Decision::NotSampled,
        (Decision::NotSampled, true) => Decision::Sampled,
        (vote, _) => vote,
    }
}

fn str_of(v: Option<AnyValueRef<'_>>) -> &str {
    match v {
        Some(AnyValueRef::String(s)) => s,
        _ => "",
    }
}

/// `string_attribute`: a resource's value is matched even when it reads as
/// "" (not a string, or empty); a span's only when it is not "".
fn string_attribute(
    trace: &TraceView<'_>,
    key: &str,
    invert: bool,
    matcher: &mut dyn FnMut(Lookup<'_>) -> bool,
) -> Decision {
    // Both checks share the matcher (and its regex cache), so they are
    // dispatched through one closure with a flag.
    let cell = std::cell::RefCell::new(matcher);
    walk_resources_and_spans(
        trace,
        key,
        invert,
        |v| (cell.borrow_mut())(v),
        |v| match v {
            Some(inner) if !str_of(inner).is_empty() => (cell.borrow_mut())(v),
            _ => false,
        },
    )
}

#[derive(Debug)]
enum StringMatcher {
    Exact(HashSet<String>),
    Regex {
        regexes: Vec<Regex>,
        /// Results per attribute value, as the collector caches them.
        cache: LruMap<String, bool>,
    },
}

impl StringMatcher {
    fn matches(&mut self, value: &str) -> bool {
        match self {
            StringMatcher::Exact(values) => values.contains(value),
            StringMatcher::Regex { regexes, cache } => {
                if let Some(hit) = cache.get(value) {
                    return hit;
                }
                // Unanchored, like Go's Regexp.MatchString.
                let matched = regexes.iter().any(|r| r.is_match(value));
                cache.put(value.to_string(), matched);
                matched
            }
        }
    }
}

/// Rewrites the Perl classes `\d \w \s` (and their negations) and the
/// word boundaries `\b \B` to the ASCII meaning Go's RE2 gives them, where
/// the regex crate's are Unicode-aware; everything else (`.`, `\pL`, ...)
/// keeps its Unicode meaning, as in RE2. RE2's `\s` is `[\t\n\f\r ]`,
/// without `\v`. Inside a bracket class the replacement is a nested class,
/// which the regex crate accepts.
pub(crate) fn re2_perl_classes(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars();
    let mut class_depth = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(next) = chars.next() else {
                    out.push(c);
                    break;
                };
                let class = match next {
                    'd' => Some("[0-9]"),
                    'D' => Some("[^0-9]"),
                    'w' => Some("[0-9A-Za-z_]"),
                    'W' => Some("[^0-9A-Za-z_]"),
                    's' => Some("[\\t\\n\\f\\r ]"),
                    'S' => Some("[^\\t\\n\\f\\r ]"),
                    'b' if class_depth == 0 => Some("(?-u:\\b)"),
                    'B' if class_depth == 0 => Some("(?-u:\\B)"),
                    _ => None,
                };
                match class {
                    Some(class) => out.push_str(class),
                    None => {
                        out.push(c);
                        out.push(next);
                    }
                }
            }
            '[' => {
                class_depth += 1;
                out.push(c);
            }
            ']' if class_depth > 0 => {
                class_depth -= 1;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// The value of `key` in a W3C tracestate header, if the header parses.
/// The collector parses with the OpenTelemetry Go SDK, which rejects the
/// whole header when any member is malformed or a key repeats.
fn trace_state_get<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    if header.is_empty() {
        return None;
    }
    let mut found = None;
    let mut keys: HashMap<&str, ()> = HashMap::new();
    let mut members = 0;
    for member in header.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        members += 1;
        let (k, v) = member.split_once('=')?;
        if !valid_trace_state_key(k) || !valid_trace_state_value(v) {
            return None;
        }
        if keys.insert(k, ()).is_some() {
            return None;
        }
        if k == key {
            found = Some(v);
        }
    }
    if members > 32 {
        return None;
    }
    found
}

fn valid_trace_state_key(k: &str) -> bool {
    let simple = |s: &str, max: usize| {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= max
            && b[0].is_ascii_lowercase()
            && b.iter().all(|&c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, b'_' | b'-' | b'*' | b'/')
            })
    };
    match k.split_once('@') {
        None => simple(k, 256),
        Some((tenant, system)) => {
            let tb = tenant.as_bytes();
            !tb.is_empty()
                && tb.len() <= 241
                && (tb[0].is_ascii_lowercase() || tb[0].is_ascii_digit())
                && tb.iter().all(|&c| {
                    c.is_ascii_lowercase()
                        || c.is_ascii_digit()
                        || matches!(c, b'_' | b'-' | b'*' | b'/')
                })
                && simple(system, 14)
        }
    }
}

fn valid_trace_state_value(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b.iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
        && b[b.len() - 1] != b' '
}

/// The span's `flags` field (fixed32, field 16), 0 when absent.
fn span_flags(batch: &SpanBatch, span: usize) -> u32 {
    let info = &batch.spans()[span];
    let body = &batch.bytes()[info.span.start as usize..info.span.end as usize];
    let mut at = 0usize;
    let mut flags = 0;
    while at < body.len() {
        let Some((tag, n)) = read_varint(&body[at..]) else {
            return flags;
        };
        at += n;
        let field = tag >> 3;
        match tag & 7 {
            0 => match read_varint(&body[at..]) {
                Some((_, n)) => at += n,
                None => return flags,
            },
            1 => at += 8,
            2 => match read_varint(&body[at..]) {
                Some((len, n)) => at += n + len as usize,
                None => return flags,
            },
            5 => {
                if field == 16 {
                    if let Some(b) = body.get(at..at + 4) {
                        flags = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    }
                }
                at += 4;
            }
            // Groups never appear in a Span the scanner accepted.
            _ => return flags,
        }
    }
    flags
}

fn read_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// FNV-1a 64 over `salt` then the trace id's 16 bytes: the collector's
/// `hashTraceID`.
pub fn fnv1a64(salt: &[u8], trace_id: &TraceId) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for &b in salt.iter().chain(trace_id.iter()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

/// The collector's `calculateThreshold`: `MaxUint64 × ratio` computed as a
/// Go `big.Float` of 64-bit precision (rounded to nearest even), then
/// truncated to an integer. A trace is sampled when its hash is at most
/// this.
pub fn probabilistic_threshold(ratio: f64) -> u64 {
    if ratio.is_nan() || ratio <= 0.0 {
        return 0;
    }
    if ratio >= 1.0 {
        return u64::MAX;
    }
    let bits = ratio.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    let (mantissa, mut exp2) = if exp == 0 {
        (frac, -1074)
    } else {
        (frac | (1u64 << 52), exp - 1075)
    };
    let mut product = u128::from(u64::MAX) * u128::from(mantissa);
    let bit_len = 128 - product.leading_zeros() as i32;
    if bit_len > 64 {
        let shift = (bit_len - 64) as u32;
        let rest = product & ((1u128 << shift) - 1);
        let half = 1u128 << (shift - 1);
        product >>= shift;
        exp2 += shift as i32;
        if rest > half || (rest == half && product & 1 == 1) {
            product += 1;
        }
    }
    if exp2 >= 0 {
        u64::try_from(product << exp2).unwrap_or(u64::MAX)
    } else if -exp2 >= 128 {
        0
    } else {
        u64::try_from(product >> (-exp2) as u32).unwrap_or(u64::MAX)
    }
}

/// A token bucket with the semantics of Go's `golang.org/x/time/rate`
/// limiter's `AllowN`, which the collector's rate and bytes policies use:
/// it starts full, refills continuously, and refuses (without spending) a
/// request larger than what it holds or than its size.
///
/// One bucket per policy for the whole processor, shared by the shards'
/// evaluators ([`PolicySet::fork`]): the budget is a per-second total, as
/// in the collector with one shard. It has its own small lock (Go's
/// limiter has one too), taken only when this policy is evaluated.
#[derive(Debug, Clone)]
struct TokenBucket(Arc<Mutex<BucketState>>);

#[derive(Debug)]
struct BucketState {
    rate: f64,
    burst: i64,
    tokens: f64,
    /// When the tokens were last spent; `None`: never, the bucket is full.
    last: Option<Duration>,
}

impl TokenBucket {
    fn new(rate: f64, burst: i64) -> TokenBucket {
        TokenBucket(Arc::new(Mutex::new(BucketState {
            rate,
            burst,
            tokens: 0.0,
            last: None,
        })))
    }

    fn allow(&self, now: Duration, n: i64) -> bool {
        // Only counters: recovering after a panic elsewhere is better than
        // stopping sampling.
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(now, n)
    }
}

impl BucketState {
    fn allow(&mut self, now: Duration, n: i64) -> bool {
        if self.rate == 0.0 {
            // Go's limiter with a zero rate spends its burst once.
            if self.burst >= n {
                self.burst -= n;
                return true;
            }
            return false;
        }
        let burst = self.burst as f64;
        let tokens = match self.last {
            None => burst,
            Some(last) => {
                let elapsed = now.saturating_sub(last).as_secs_f64();
                (self.tokens + elapsed * self.rate).min(burst)
            }
        };
        let left = tokens - n as f64;
        if n <= self.burst && left >= 0.0 {
            self.tokens = left;
            self.last = Some(now.max(self.last.unwrap_or_default()));
            true
        } else {
            false
        }
    }
}

/// The composite policy: sub-policies in config order, each with a share
/// of the spans per wall-clock second.
#[derive(Debug)]
struct Composite {
    subs: Vec<CompositeSub>,
    max_total: i64,
    /// The spans each sub-policy sampled this second: one count for the
    /// whole processor, shared by the shards' evaluators
    /// ([`PolicySet::fork`]) behind its own lock, taken only when a
    /// sub-policy samples.
    budget: Arc<Mutex<CompositeBudget>>,
    /// The sub-policy that sampled the trace last evaluated, if one did.
    last_sampled: Option<usize>,
}

#[derive(Debug)]
struct CompositeBudget {
    current_second: u64,
    /// Per sub-policy.
    sampled: Vec<i64>,
}

#[derive(Debug)]
struct CompositeSub {
    policy: Policy,
    allocated: i64,
}

impl Composite {
    fn build(
        name: &str,
        c: &super::config::CompositeConfig,
        warnings: &mut Vec<String>,
    ) -> Result<Composite, BuildError> {
        let max_total = c.max_total_spans_per_second as f64;
        let n = c.composite_sub_policy.len().max(1) as f64;
        let default_share = max_total / n;
        let mut allocation: HashMap<&str, f64> = HashMap::new();
        for entry in &c.rate_allocation {
            let share = if entry.percent > 0 {
                (entry.percent as f64 / 100.0) * max_total
            } else {
                default_share
            };
            allocation.insert(entry.policy.as_str(), share);
        }
        let mut subs = Vec::with_capacity(c.composite_sub_policy.len());
        for sub in &c.composite_sub_policy {
            let allocated = match allocation.get(sub.name.as_str()) {
                Some(&share) => share as i64,
                None => {
                    warnings.push(format!(
                        "policy {name:?}: composite sub-policy {:?} has no rate_allocation entry, so its budget is 0 and it never samples (as in the collector)",
                        sub.name
                    ));
                    0
                }
            };
            subs.push(CompositeSub {
                policy: Policy::build(sub, Level::CompositeSub, warnings)?,
                allocated,
            });
        }
        let order: Vec<&str> = c
            .composite_sub_policy
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        if !c.policy_order.is_empty()
            && c.policy_order
                .iter()
                .map(String::as_str)
                .ne(order.iter().copied())
        {
            warnings.push(format!(
                "policy {name:?}: composite evaluates sub-policies in composite_sub_policy order ({order:?}), not policy_order, as the collector does"
            ));
        }
        let budget = CompositeBudget {
            current_second: 0,
            sampled: vec![0; subs.len()],
        };
        Ok(Composite {
            subs,
            max_total: c.max_total_spans_per_second,
            budget: Arc::new(Mutex::new(budget)),
            last_sampled: None,
        })
    }

    fn evaluate(&mut self, trace: &TraceView<'_>, now: Duration) -> Decision {
        let spans = trace.span_count as i64;
        self.last_sampled = None;
        for (index, sub) in self.subs.iter_mut().enumerate() {
            if sub.policy.evaluate(trace, now).is_sampled() {
                let mut budget = self.budget.lock().unwrap_or_else(|e| e.into_inner());
                // A new second starts every count afresh (whether or not a
                // sub-policy samples then changes nothing: the counts are
                // read only here).
                let second = now.as_secs();
                if second != budget.current_second {
                    budget.current_second = second;
                    budget.sampled.iter_mut().for_each(|n| *n = 0);
                }
                let if_sampled = budget.sampled[index] + spans;
                // As in the collector, each sub-policy's own count is held
                // against both its share and the total.
                if if_sampled <= sub.allocated && if_sampled <= self.max_total {
                    budget.sampled[index] = if_sampled;
                    self.last_sampled = Some(index);
                    return Decision::Sampled;
                }
                return Decision::NotSampled;
            }
        }
        Decision::NotSampled
    }
}
