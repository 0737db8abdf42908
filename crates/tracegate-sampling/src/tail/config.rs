//! Tail-sampling policy configs, with the OpenTelemetry Collector's
//! `tail_sampling` keys and defaults (`processor/tailsamplingprocessor/
//! config.go`), plus tracegate's `fraction_on_match`.
//!
//! A policy names its `type` and carries that type's block; blocks of other
//! types are accepted and ignored, as the collector ignores them. A missing
//! block is the type's zero config, again as in the collector (so a
//! `status_code` policy without codes is an error at build time).

use serde::Deserialize;

/// The policy types the collector defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    AlwaysSample,
    Latency,
    NumericAttribute,
    Probabilistic,
    StatusCode,
    StringAttribute,
    RateLimiting,
    BytesLimiting,
    SpanCount,
    TraceState,
    BooleanAttribute,
    OttlCondition,
    TraceFlags,
    And,
    Not,
    Drop,
    Composite,
    /// tracegate: keep about a goal number of traces per second
    /// ([`super::adaptive::throughput`]).
    Throughput,
    /// tracegate: keep rates per key, rare keys more
    /// ([`super::adaptive::dynamic`]).
    Dynamic,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::AlwaysSample => "always_sample",
            PolicyKind::Latency => "latency",
            PolicyKind::NumericAttribute => "numeric_attribute",
            PolicyKind::Probabilistic => "probabilistic",
            PolicyKind::StatusCode => "status_code",
            PolicyKind::StringAttribute => "string_attribute",
            PolicyKind::RateLimiting => "rate_limiting",
            PolicyKind::BytesLimiting => "bytes_limiting",
            PolicyKind::SpanCount => "span_count",
            PolicyKind::TraceState => "trace_state",
            PolicyKind::BooleanAttribute => "boolean_attribute",
            PolicyKind::OttlCondition => "ottl_condition",
            PolicyKind::TraceFlags => "trace_flags",
            PolicyKind::And => "and",
            PolicyKind::Not => "not",
            PolicyKind::Drop => "drop",
            PolicyKind::Composite => "composite",
            PolicyKind::Throughput => "throughput",
            PolicyKind::Dynamic => "dynamic",
        }
    }
}

/// One entry of `policies` (and of the `and`, `not`, `drop` and
/// `composite` sub-policy lists).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The policy's name, used in metrics (`policy` label) and in the
    /// `tailsampling.policy` attribute. Required, unique among the
    /// top-level policies.
    pub name: String,
    /// The policy type. Required.
    #[serde(rename = "type")]
    pub kind: PolicyKind,
    /// tracegate: when the policy samples a trace, keep it only if the
    /// trace's randomness (the low 56 bits of its id, as OTEP 235 and head
    /// sampling use) falls within this fraction. Default: unset (keep every
    /// match). May instead be written inside the type's block, as the seed
    /// configs do.
    #[serde(default)]
    pub fraction_on_match: Option<f64>,
    /// `latency` settings. Default: zero config.
    #[serde(default)]
    pub latency: Option<LatencyConfig>,
    /// `numeric_attribute` settings. Default: zero config.
    #[serde(default)]
    pub numeric_attribute: Option<NumericAttributeConfig>,
    /// `probabilistic` settings. Default: zero config.
    #[serde(default)]
    pub probabilistic: Option<ProbabilisticConfig>,
    /// `status_code` settings. Default: zero config.
    #[serde(default)]
    pub status_code: Option<StatusCodeConfig>,
    /// `string_attribute` settings. Default: zero config.
    #[serde(default)]
    pub string_attribute: Option<StringAttributeConfig>,
    /// `rate_limiting` settings. Default: zero config.
    #[serde(default)]
    pub rate_limiting: Option<RateLimitingConfig>,
    /// `bytes_limiting` settings. Default: zero config.
    #[serde(default)]
    pub bytes_limiting: Option<BytesLimitingConfig>,
    /// `span_count` settings. Default: zero config.
    #[serde(default)]
    pub span_count: Option<SpanCountConfig>,
    /// `trace_state` settings. Default: zero config.
    #[serde(default)]
    pub trace_state: Option<TraceStateConfig>,
    /// `boolean_attribute` settings. Default: zero config.
    #[serde(default)]
    pub boolean_attribute: Option<BooleanAttributeConfig>,
    /// `ottl_condition` settings. Default: zero config.
    #[serde(default)]
    pub ottl_condition: Option<OttlConditionConfig>,
    /// `trace_flags` takes no settings; a block is accepted for symmetry.
    #[serde(default)]
    pub trace_flags: Option<FractionOnly>,
    /// `always_sample` takes no settings; a block is accepted for symmetry.
    #[serde(default)]
    pub always_sample: Option<FractionOnly>,
    /// `and` settings. Default: no sub-policies.
    #[serde(default)]
    pub and: Option<AndConfig>,
    /// `not` settings. Required for a `not` policy.
    #[serde(default)]
    pub not: Option<NotConfig>,
    /// `drop` settings. Default: no sub-policies.
    #[serde(default)]
    pub drop: Option<DropConfig>,
    /// `composite` settings. Default: zero config.
    #[serde(default)]
    pub composite: Option<CompositeConfig>,
    /// tracegate: `throughput` settings. Default: zero config (Refinery's
    /// defaults).
    #[serde(default)]
    pub throughput: Option<super::adaptive::ThroughputConfig>,
    /// tracegate: `dynamic` settings. Required for a `dynamic` policy.
    #[serde(default)]
    pub dynamic: Option<super::adaptive::DynamicConfig>,
}

/// A block that only carries tracegate's `fraction_on_match`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FractionOnly {
    /// See [`PolicyConfig::fraction_on_match`]. Default: unset.
    #[serde(default)]
    pub fraction_on_match: Option<f64>,
}

/// `latency`: the trace's duration, from its earliest span start to its
/// latest span end.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    /// Lower bound in milliseconds: with no upper bound, traces at least
    /// this long match; with one, traces longer than this. Default: 0.
    #[serde(default)]
    pub threshold_ms: i64,
    /// Upper bound in milliseconds, inclusive; 0 means none. Default: 0.
    #[serde(default)]
    pub upper_threshold_ms: i64,
    /// See [`PolicyConfig::fraction_on_match`]. Default: unset.
    #[serde(default)]
    pub fraction_on_match: Option<f64>,
}

/// `numeric_attribute`: a resource or span attribute in `[min, max]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericAttributeConfig {
    /// Attribute key. Default: "".
    #[serde(default)]
    pub key: String,
    /// Inclusive minimum; 0 means no lower bound (as in the collector).
    /// Default: 0.
    #[serde(default)]
    pub min_value: i64,
    /// Inclusive maximum; 0 means no upper bound (as in the collector).
    /// At least one bound must be set. Default: 0.
    #[serde(default)]
    pub max_value: i64,
    /// Sample traces where no resource or span has the key in range
    /// (including traces without the key). Default: false.
    #[serde(default)]
    pub invert_match: bool,
    /// See [`PolicyConfig::fraction_on_match`]. Default: unset.
    #[serde(default)]
    pub fraction_on_match: Option<f64>,
}

/// `probabilistic`: a share of traces chosen by FNV-1a-64 over `hash_salt`
/// and the trace id, exactly as the collector chooses them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbabilisticConfig {
    /// Salt hashed before the trace id; "" means the collector's
    /// `default-hash-seed`. Default: "".
    #[serde(default)]
    pub hash_salt: String,
    /// Percentage of traces to sample; 100 or more samples all.
    /// Default: 0.
    #[serde(default)]
    pub sampling_percentage: f64,
    /// See [`PolicyConfig::fraction_on_match`]. Default: unset.
    #[serde(default)]
    pub fraction_on_match: Option<f64>,
}

/// `status_code`: any span with one of these status codes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusCodeConfig {
    /// `OK`, `ERROR`, `UNSET`; at least one. Default: none (an error).
    #[serde(default)]
    pub status_codes: Vec<String>,
    /// See [`PolicyConfig::fraction_on_match`]. Default: unset.
    #[serde(default)]
    pub fraction_on_match: Option<f64>,
}

/// `string_attribute`: a resource or span string attribute equal to (or,
/// with regex matching, containing a match of) one of `values`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StringAttributeConfig {
    /// Attribute key. Default: "".
    #[serde(default)]
    pub key: String,
    /// Exact values, or regular expressions with `enabled_regex_matching`.
    /// Empty strings never match exactly. Default: none.
    #[serde(default)]
    pub values: Vec<String>,
    /// Treat `values` as regular expressions, unanchored like Go's
    /// `MatchString` (anchor with `^...$` for whole-value matches).
    /// Default: false.
    #[serde(default)]
    pub enabled_regex_matching: bool,
    /// Size of the LRU cache of regex results per attribute value; 0 or
    /// less means 128. Unused without regex matching. Default: 0.
    #[serde(default)]
    pub cache_max_size: i64,
    /// Sample traces where no resource or span matches (including traces
    /// without the key). Default: false.
    #[serde(default)]
    pub invert_match: bool,
    /// See [`PolicyConfig::fraction_on_match`]. Default: unset.
    #[serde(default)]
    pub fraction_on_match: Option<f64>,
}

/// `rate_limiting`: a token bucket of spans.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitingConfig {
    /// Spans per second refilled into the bucket. Default: 0.
    #[serde(default)]
    pub spans_per_second: i64,
    /// Bucket size; 0 or less means twice `spans_per_second`. A trace with
    /// more spans than this never passes. Default: 0.
    #[serde(default)]
    pub burst_capacity: i64,
    /// See [`PolicyConfig::fraction_on_match`]. Default: unset.
    #[serde(default)]
    pub fraction_on_match: Option<f64>,
}

/// `bytes_limiting`: a token bucket of encoded trace bytes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BytesLimitingConfig {
    /// Bytes per second refilled into the bucket. Default: 0.
    #[serde(default)]
    pub bytes_per_second: i64,
    /// Bucket size; 0 or less means twice `bytes_per_second`.
    /// Default: 0.
    #[serde(default)]
    pub burst_capacity: i64,
    /// See [`PolicyConfig::fraction_on_match`]. Default: unset.
    #[serde(default)]
    pub fraction_on_match: Option<f64>,
}

/// `span_count`: the trace's span count in `[min_spans, max_spans]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanCountConfig {
    /// Inclusive minimum. Default: 0.
    #[serde(default)]
    pub min_spans: i32,
    /// Inclusive maximum; 0 means none. Default: 0.
    #[serde(default)]
    pub max_spans: i32,
    /// See [`PolicyConfig::fraction_on_match`]. Default: unset.
    #[serde(default)]
    pub fraction_on_match: Option<f64>,
}

/// `trace_state`: a span whose W3C tracestate has `key` set to one of
/// `values`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceStateConfig {
    /// The tracestate list member's key. Default: "".
    #[serde(default)]
    pub key: String,
    /// Values to match exactly; empty values and those making a member
    /// of 256 characters or more are ignored. Default: none.
    #[serde(default)]
    pub values: Vec<String>,
    /// See [`PolicyConfig::fraction_on_match`]. Default: unset.
    #[serde(default)]
    pub fraction_on_match: Option<f64>,
}

/// `boolean_attribute`: a resource or span attribute equal to `value`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BooleanAttributeConfig {
    /// Attribute key. Default: "".
    #[serde(default)]
    pub key: String,
    /// The value to match. Default: false.
    #[serde(default)]
    pub value: bool,
    /// Sample traces where no resource or span matches (including traces
    /// without the key). Default: false.
    #[serde(default)]
    pub invert_match: bool,
    /// See [`PolicyConfig::fraction_on_match`]. Default: unset.
    #[serde(default)]
    pub fraction_on_match: Option<f64>,
}

/// `ottl_condition`: spans matching any of the conditions. tracegate
/// parses a documented subset of OTTL (see docs/configuration.md); other
/// expressions are refused at startup, never silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OttlConditionConfig {
    /// `propagate`, `ignore` or `silent`. The supported subset cannot fail
    /// while evaluating, so this only is checked. Default: `propagate`.
    #[serde(default)]
    pub error_mode: Option<String>,
    /// Conditions over spans; the trace matches when any span matches any
    /// condition. Default: none.
    #[serde(default)]
    pub span: Vec<String>,
    /// Conditions over span events. Not supported yet: any entry is a
    /// startup error. Default: none.
    #[serde(default)]
    pub spanevent: Vec<String>,
    /// See [`PolicyConfig::fraction_on_match`]. Default: unset.
    #[serde(default)]
    pub fraction_on_match: Option<f64>,
}

/// `and`: samples when every sub-policy samples.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AndConfig {
    /// The sub-policies (not `and`, `drop` or `composite`; a `not` is
    /// allowed, its own sub-policy a leaf). Default: none (which samples
    /// every trace, as in the collector).
    #[serde(default)]
    pub and_sub_policy: Vec<PolicyConfig>,
}

/// `not`: inverts one sub-policy's Sampled / NotSampled.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotConfig {
    /// The sub-policy (not `and`, `not`, `drop` or `composite`). Required.
    pub not_sub_policy: Box<PolicyConfig>,
}

/// `drop`: drops the trace (over every other decision) when every
/// sub-policy samples it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropConfig {
    /// The sub-policies (not `and`, `not`, `drop` or `composite`).
    /// Default: none.
    #[serde(default)]
    pub drop_sub_policy: Vec<PolicyConfig>,
}

/// `composite`: the first sub-policy that samples a trace spends its share
/// of a per-second span budget on it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompositeConfig {
    /// Spans per wall-clock second the composite may sample. Default: 0.
    #[serde(default)]
    pub max_total_spans_per_second: i64,
    /// Accepted as in the collector, which evaluates sub-policies in
    /// `composite_sub_policy` order regardless; tracegate does the same
    /// and warns when the two orders differ. Default: none.
    #[serde(default)]
    pub policy_order: Vec<String>,
    /// The sub-policies (not `not`, `drop` or `composite`), evaluated in
    /// this order. Default: none.
    #[serde(default)]
    pub composite_sub_policy: Vec<PolicyConfig>,
    /// Each sub-policy's share of `max_total_spans_per_second`, in percent
    /// (0 or less: an equal share). A sub-policy without an entry gets a
    /// budget of zero and never samples, exactly as in the collector
    /// (tracegate warns about it). Default: none.
    #[serde(default)]
    pub rate_allocation: Vec<RateAllocationConfig>,
}

/// One `rate_allocation` entry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateAllocationConfig {
    /// The sub-policy's name. Default: "".
    #[serde(default)]
    pub policy: String,
    /// Its share in percent. Default: 0 (an equal share).
    #[serde(default)]
    pub percent: i64,
}

impl PolicyConfig {
    /// The `fraction_on_match` given at the policy level or in its type's
    /// block; `Err` when both are given.
    pub fn fraction_on_match(&self) -> Result<Option<f64>, String> {
        let in_block = match self.kind {
            PolicyKind::AlwaysSample => block_fraction(&self.always_sample),
            PolicyKind::TraceFlags => block_fraction(&self.trace_flags),
            PolicyKind::Latency => block_fraction(&self.latency),
            PolicyKind::NumericAttribute => block_fraction(&self.numeric_attribute),
            PolicyKind::Probabilistic => block_fraction(&self.probabilistic),
            PolicyKind::StatusCode => block_fraction(&self.status_code),
            PolicyKind::StringAttribute => block_fraction(&self.string_attribute),
            PolicyKind::RateLimiting => block_fraction(&self.rate_limiting),
            PolicyKind::BytesLimiting => block_fraction(&self.bytes_limiting),
            PolicyKind::SpanCount => block_fraction(&self.span_count),
            PolicyKind::TraceState => block_fraction(&self.trace_state),
            PolicyKind::BooleanAttribute => block_fraction(&self.boolean_attribute),
            PolicyKind::OttlCondition => block_fraction(&self.ottl_condition),
            PolicyKind::And
            | PolicyKind::Not
            | PolicyKind::Drop
            | PolicyKind::Composite
            | PolicyKind::Throughput
            | PolicyKind::Dynamic => None,
        };
        match (self.fraction_on_match, in_block) {
            (Some(_), Some(_)) => Err(format!(
                "policy {:?}: fraction_on_match is given both at the policy level and in its {} block",
                self.name,
                self.kind.as_str()
            )),
            (Some(f), None) | (None, Some(f)) => Ok(Some(f)),
            (None, None) => Ok(None),
        }
    }
}

/// A type's block that may carry `fraction_on_match`: every block but the
/// sub-policy ones. The field itself is repeated in each struct because
/// `deny_unknown_fields` rules out a flattened common part.
trait BlockFraction {
    fn fraction_on_match(&self) -> Option<f64>;
}

macro_rules! block_fraction_for {
    ($($block:ty),* $(,)?) => {
        $(impl BlockFraction for $block {
            fn fraction_on_match(&self) -> Option<f64> {
                self.fraction_on_match
            }
        })*
    };
}

block_fraction_for!(
    FractionOnly,
    LatencyConfig,
    NumericAttributeConfig,
    ProbabilisticConfig,
    StatusCodeConfig,
    StringAttributeConfig,
    RateLimitingConfig,
    BytesLimitingConfig,
    SpanCountConfig,
    TraceStateConfig,
    BooleanAttributeConfig,
    OttlConditionConfig,
);

/// The `fraction_on_match` written inside a block, if the block is there.
fn block_fraction<B: BlockFraction>(block: &Option<B>) -> Option<f64> {
    block.as_ref().and_then(BlockFraction::fraction_on_match)
}
