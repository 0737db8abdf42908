//! tracegate's `sampling` processor, as written in the seed's
//! `jaeger-v2-collector.yaml`: a baseline `sampling_percentage` and
//! `policies`, each keeping `fraction_on_match` of the traces whose spans
//! it matches. A span is kept when its trace's randomness passes the
//! largest fraction among the policies the span matches, the baseline when
//! none matches. Every decision is a threshold compared with the trace's
//! OTEP 235 randomness (`rv` from the tracestate, else the trace id's low
//! 56 bits), so the spans of a trace that match the same policies share one
//! fate on every replica.
//!
//! Decisions not spelled out by the seed, made here:
//! - A `probabilistic` policy matches every span, with the fraction
//!   `sampling_percentage / 100 × fraction_on_match`. It therefore acts as a
//!   floor: the baseline only applies when no policy matches, and with a
//!   `probabilistic` policy one always does, so the kept share is the
//!   larger of the two and of any other matching policy's fraction.
//! - Fractions are absolute probabilities (the collector's `equalizing`
//!   idea): an arriving `th` is raised to ours, never lowered, and a span
//!   whose arriving `th` exceeds ours keeps its own (its trace was sampled
//!   harder upstream). An arriving `th` its randomness fails is
//!   inconsistent and dropped from the tracestate, as the spec asks.
//! - A tracestate that cannot be parsed is left as it is; the span is
//!   decided on its trace id.

use std::collections::HashSet;

use serde::Deserialize;
use tracegate_model::trace_state::{Randomness, Threshold, TraceState};
use tracegate_model::{AnyValueRef, SpanBatch, SpanInfo, StatusCode};

use crate::policy_config::{is_valid_fraction, parse_status_code};

use super::otep235::{threshold_for_probability, DEFAULT_PRECISION};
use super::{ConfigError, HeadSampler, Verdict};

/// `processors: sampling:`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingConfig {
    /// Percentage (0 to 100) of traces kept among spans no policy matches.
    /// Default 0: only what the policies match is kept.
    #[serde(default)]
    pub sampling_percentage: f64,
    /// Significant hex digits of the threshold written into tracestate
    /// (`ot=th:…`), 1 to 14 (more near 0 % and 100 %), as the collector's
    /// `probabilistic_sampler`. Default 4.
    #[serde(default = "default_precision")]
    pub sampling_precision: u8,
    /// The policies, in any order (the largest matching fraction wins).
    /// Default none.
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
}

fn default_precision() -> u8 {
    DEFAULT_PRECISION
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            sampling_percentage: 0.0,
            sampling_precision: DEFAULT_PRECISION,
            policies: Vec::new(),
        }
    }
}

/// One entry of `policies`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Names the policy in metrics (`policy` label). Required, unique.
    pub name: String,
    /// `status_code`, `latency`, `probabilistic`, `string_attribute` or
    /// `numeric_attribute`. Required.
    #[serde(rename = "type")]
    pub kind: PolicyKind,
    /// Fraction (0 to 1) of matching traces kept; may instead be written
    /// inside the type's block, as the seed does. Default 1.
    #[serde(default)]
    pub fraction_on_match: Option<f64>,
    /// `status_code` settings. Required for that type.
    #[serde(default)]
    pub status_code: Option<StatusCodePolicy>,
    /// `latency` settings. Required for that type.
    #[serde(default)]
    pub latency: Option<LatencyPolicy>,
    /// `probabilistic` settings. Required for that type.
    #[serde(default)]
    pub probabilistic: Option<ProbabilisticPolicy>,
    /// `string_attribute` settings. Required for that type.
    #[serde(default)]
    pub string_attribute: Option<StringAttributePolicy>,
    /// `numeric_attribute` settings. Required for that type.
    #[serde(default)]
    pub numeric_attribute: Option<NumericAttributePolicy>,
}

/// The policy types of the `sampling` processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    StatusCode,
    Latency,
    Probabilistic,
    StringAttribute,
    NumericAttribute,
}

/// Matches spans whose status is one of `status_codes`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusCodePolicy {
    /// `OK`, `ERROR`, `UNSET`; at least one. Note that `UNSET` is the status
    /// of nearly every span (tracegate warns). Required.
    #[serde(default)]
    pub status_codes: Vec<String>,
    /// See [`PolicyConfig::fraction_on_match`]. Default 1.
    #[serde(default)]
    pub fraction_on_match: Option<f64>,
}

/// Matches spans by their own duration (end − start, whole milliseconds).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyPolicy {
    /// A span matches when it lasts at least this long (or, with
    /// `upper_threshold_ms`, longer than this). Default 0.
    #[serde(default)]
    pub threshold_ms: i64,
    /// When non-zero, a span matches only up to this duration, as the
    /// collector's tail latency policy. Default 0 (no upper bound).
    #[serde(default)]
    pub upper_threshold_ms: i64,
    /// See [`PolicyConfig::fraction_on_match`]. Default 1.
    #[serde(default)]
    pub fraction_on_match: Option<f64>,
}

/// Matches every span; keeps `sampling_percentage` of traces.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbabilisticPolicy {
    /// Percentage (0 to 100) of traces kept. Default 0.
    #[serde(default)]
    pub sampling_percentage: f64,
    /// Multiplies the percentage. Default 1.
    #[serde(default)]
    pub fraction_on_match: Option<f64>,
}

/// Matches spans whose string attribute `key` (the span's own, else its
/// resource's) equals one of `values`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StringAttributePolicy {
    /// The attribute key. Required.
    #[serde(default)]
    pub key: String,
    /// Values matched exactly; at least one. Required.
    #[serde(default)]
    pub values: Vec<String>,
    /// See [`PolicyConfig::fraction_on_match`]. Default 1.
    #[serde(default)]
    pub fraction_on_match: Option<f64>,
}

/// Matches spans whose integer attribute `key` (the span's own, else its
/// resource's) lies in `[min_value, max_value]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericAttributePolicy {
    /// The attribute key. Required.
    #[serde(default)]
    pub key: String,
    /// Smallest matching value. Default `i64::MIN`.
    #[serde(default)]
    pub min_value: Option<i64>,
    /// Largest matching value. Default `i64::MAX`.
    #[serde(default)]
    pub max_value: Option<i64>,
    /// See [`PolicyConfig::fraction_on_match`]. Default 1.
    #[serde(default)]
    pub fraction_on_match: Option<f64>,
}

fn check_fraction(path: &str, f: f64) -> Result<f64, ConfigError> {
    if is_valid_fraction(f) {
        Ok(f)
    } else {
        Err(ConfigError::new(
            path,
            format!("must be between 0 and 1, got {f}"),
        ))
    }
}

fn check_percentage(path: &str, p: f64) -> Result<f64, ConfigError> {
    if (0.0..=100.0).contains(&p) {
        Ok(p)
    } else {
        Err(ConfigError::new(
            path,
            format!("must be between 0 and 100, got {p}"),
        ))
    }
}

/// A built policy's test. The attribute tests, rare and bulky, are boxed
/// so the others stay small and cheap to dispatch on for every span.
#[derive(Debug, Clone)]
enum Matcher {
    Status([bool; 3]),
    Latency { min_ms: i64, upper_ms: i64 },
    Always,
    StringAttribute(Box<StringAttributeMatcher>),
    NumericAttribute(Box<NumericAttributeMatcher>),
}

#[derive(Debug, Clone)]
struct StringAttributeMatcher {
    key: String,
    values: HashSet<String>,
}

#[derive(Debug, Clone)]
struct NumericAttributeMatcher {
    key: String,
    min: i64,
    max: i64,
}

#[derive(Debug, Clone)]
struct Policy {
    matcher: Matcher,
    threshold: Threshold,
}

/// The built `sampling` processor.
#[derive(Debug, Clone)]
pub struct PolicySampler {
    /// Sorted by threshold, smallest (largest fraction) first, so the first
    /// match decides.
    policies: Vec<(u16, Policy)>,
    baseline: Threshold,
    names: Vec<String>,
}

/// Whether `rv:` occurs in a tracestate: where it does not, the span has no
/// explicit randomness and is decided on its trace id alone. Tracestates
/// are short, where a substring searcher's setup costs more than finding
/// the few colons.
fn may_carry_rv(trace_state: &[u8]) -> bool {
    memchr::memchr_iter(b':', trace_state).any(|i| i >= 2 && &trace_state[i - 2..i] == b"rv")
}

impl SamplingConfig {
    /// Checks the config and builds the sampler; `Ok` also carries warnings
    /// about valid but surprising settings.
    pub fn build(&self) -> Result<(PolicySampler, Vec<String>), ConfigError> {
        let mut warnings = Vec::new();
        let percentage = check_percentage("sampling_percentage", self.sampling_percentage)?;
        let precision = self.sampling_precision;
        if !(1..=14).contains(&precision) {
            return Err(ConfigError::new(
                "sampling_precision",
                format!("must be between 1 and 14, got {precision}"),
            ));
        }
        let threshold = |fraction: f64| {
            threshold_for_probability(fraction, precision).unwrap_or(Threshold::NEVER)
        };
        let mut names = Vec::new();
        let mut seen = HashSet::new();
        let mut policies = Vec::new();
        for (i, p) in self.policies.iter().enumerate() {
            let at = format!("policies[{i}]");
            if p.name.is_empty() {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    "a policy needs a name",
                ));
            }
            if !seen.insert(p.name.as_str()) {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    format!("duplicate policy name {:?}", p.name),
                ));
            }
            let (matcher, inner_fraction, base) = build_matcher(p, &at, &mut warnings)?;
            let fraction = match (p.fraction_on_match, inner_fraction) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(
                        format!("{at}.fraction_on_match"),
                        "written both on the policy and inside its block; keep one",
                    ))
                }
                (Some(f), None) => check_fraction(&format!("{at}.fraction_on_match"), f)?,
                (None, Some(f)) => {
                    check_fraction(&format!("{at}.{}.fraction_on_match", kind_key(p.kind)), f)?
                }
                (None, None) => 1.0,
            };
            let other_blocks = [
                (PolicyKind::StatusCode, p.status_code.is_some()),
                (PolicyKind::Latency, p.latency.is_some()),
                (PolicyKind::Probabilistic, p.probabilistic.is_some()),
                (PolicyKind::StringAttribute, p.string_attribute.is_some()),
                (PolicyKind::NumericAttribute, p.numeric_attribute.is_some()),
            ];
            for (kind, present) in other_blocks {
                if present && kind != p.kind {
                    warnings.push(format!(
                        "{at} ({}): the {} block is ignored for a {} policy",
                        p.name,
                        kind_key(kind),
                        kind_key(p.kind)
                    ));
                }
            }
            names.push(p.name.clone());
            policies.push((
                i as u16,
                Policy {
                    matcher,
                    threshold: threshold(base * fraction),
                },
            ));
        }
        if policies.is_empty() && percentage == 0.0 {
            warnings.push(
                "sampling_percentage is 0 and there are no policies: every span is dropped"
                    .to_string(),
            );
        }
        policies.sort_by_key(|(_, p)| p.threshold);
        names.push("baseline".to_string());
        Ok((
            PolicySampler {
                policies,
                baseline: threshold(percentage / 100.0),
                names,
            },
            warnings,
        ))
    }

    /// The checks of [`Self::build`] alone.
    pub fn validate(&self) -> Result<Vec<String>, ConfigError> {
        self.build().map(|(_, warnings)| warnings)
    }
}

fn kind_key(kind: PolicyKind) -> &'static str {
    match kind {
        PolicyKind::StatusCode => "status_code",
        PolicyKind::Latency => "latency",
        PolicyKind::Probabilistic => "probabilistic",
        PolicyKind::StringAttribute => "string_attribute",
        PolicyKind::NumericAttribute => "numeric_attribute",
    }
}

/// The matcher, the fraction written inside the block, and the share the
/// fraction multiplies (1 except for `probabilistic`).
fn build_matcher(
    p: &PolicyConfig,
    at: &str,
    warnings: &mut Vec<String>,
) -> Result<(Matcher, Option<f64>, f64), ConfigError> {
    let block = kind_key(p.kind);
    let missing = || {
        ConfigError::new(
            format!("{at}.{block}"),
            format!("a {block} policy needs its {block} block"),
        )
    };
    Ok(match p.kind {
        PolicyKind::StatusCode => {
            let c = p.status_code.as_ref().ok_or_else(missing)?;
            if c.status_codes.is_empty() {
                return Err(ConfigError::new(
                    format!("{at}.status_code.status_codes"),
                    "list at least one of OK, ERROR, UNSET",
                ));
            }
            let mut codes = [false; 3];
            for (j, name) in c.status_codes.iter().enumerate() {
                let code = parse_status_code(name).ok_or_else(|| {
                    ConfigError::new(
                        format!("{at}.status_code.status_codes[{j}]"),
                        format!("unknown status code {name:?}; use OK, ERROR or UNSET"),
                    )
                })?;
                codes[code as usize] = true;
            }
            if codes[StatusCode::Unset as usize] {
                warnings.push(format!(
                    "{at} ({}): status_codes lists UNSET, the status of nearly every span \
                     (any span that did not set one): this policy matches almost all traffic",
                    p.name
                ));
            }
            (Matcher::Status(codes), c.fraction_on_match, 1.0)
        }
        PolicyKind::Latency => {
            let c = p.latency.as_ref().ok_or_else(missing)?;
            if c.upper_threshold_ms != 0 && c.upper_threshold_ms < c.threshold_ms {
                return Err(ConfigError::new(
                    format!("{at}.latency.upper_threshold_ms"),
                    "must be 0 or at least threshold_ms",
                ));
            }
            (
                Matcher::Latency {
                    min_ms: c.threshold_ms,
                    upper_ms: c.upper_threshold_ms,
                },
                c.fraction_on_match,
                1.0,
            )
        }
        PolicyKind::Probabilistic => {
            let c = p.probabilistic.as_ref().ok_or_else(missing)?;
            let pct = check_percentage(
                &format!("{at}.probabilistic.sampling_percentage"),
                c.sampling_percentage,
            )?;
            (Matcher::Always, c.fraction_on_match, pct / 100.0)
        }
        PolicyKind::StringAttribute => {
            let c = p.string_attribute.as_ref().ok_or_else(missing)?;
            if c.key.is_empty() {
                return Err(ConfigError::new(
                    format!("{at}.string_attribute.key"),
                    "an attribute key is required",
                ));
            }
            if c.values.is_empty() {
                return Err(ConfigError::new(
                    format!("{at}.string_attribute.values"),
                    "list at least one value",
                ));
            }
            (
                Matcher::StringAttribute(Box::new(StringAttributeMatcher {
                    key: c.key.clone(),
                    values: c.values.iter().cloned().collect(),
                })),
                c.fraction_on_match,
                1.0,
            )
        }
        PolicyKind::NumericAttribute => {
            let c = p.numeric_attribute.as_ref().ok_or_else(missing)?;
            if c.key.is_empty() {
                return Err(ConfigError::new(
                    format!("{at}.numeric_attribute.key"),
                    "an attribute key is required",
                ));
            }
            let (min, max) = (
                c.min_value.unwrap_or(i64::MIN),
                c.max_value.unwrap_or(i64::MAX),
            );
            if max < min {
                return Err(ConfigError::new(
                    format!("{at}.numeric_attribute.max_value"),
                    "must be at least min_value",
                ));
            }
            (
                Matcher::NumericAttribute(Box::new(NumericAttributeMatcher {
                    key: c.key.clone(),
                    min,
                    max,
                })),
                c.fraction_on_match,
                1.0,
            )
        }
    })
}

/// The span's attribute `key`, else its resource's.
fn attribute<'a>(batch: &'a SpanBatch, span: usize, key: &str) -> Option<AnyValueRef<'a>> {
    batch
        .span_attribute(span, key)
        .or_else(|| batch.resource_attribute(span, key))
}

impl Matcher {
    fn matches(&self, batch: &SpanBatch, span: usize, info: &SpanInfo) -> bool {
        match self {
            Matcher::Status(codes) => codes[info.status as usize],
            Matcher::Latency { min_ms, upper_ms } => {
                // Whole milliseconds, truncated toward zero as Go's
                // Duration.Milliseconds (without 128-bit division).
                let (start, end) = (info.start_time_unix_nano, info.end_time_unix_nano);
                let ms = if end >= start {
                    ((end - start) / 1_000_000) as i64
                } else {
                    -(((start - end) / 1_000_000) as i64)
                };
                if *upper_ms == 0 {
                    ms >= *min_ms
                } else {
                    *min_ms < ms && ms <= *upper_ms
                }
            }
            Matcher::Always => true,
            Matcher::StringAttribute(m) => m.matches(batch, span),
            Matcher::NumericAttribute(m) => m.matches(batch, span),
        }
    }
}

impl StringAttributeMatcher {
    #[inline(never)]
    fn matches(&self, batch: &SpanBatch, span: usize) -> bool {
        matches!(attribute(batch, span, &self.key), Some(AnyValueRef::String(s)) if self.values.contains(s))
    }
}

impl NumericAttributeMatcher {
    #[inline(never)]
    fn matches(&self, batch: &SpanBatch, span: usize) -> bool {
        matches!(attribute(batch, span, &self.key), Some(AnyValueRef::Int(n)) if self.min <= n && n <= self.max)
    }
}

impl PolicySampler {
    /// The threshold for span `span` and the label of what decided it.
    fn threshold_for(&self, batch: &SpanBatch, span: usize, info: &SpanInfo) -> (Threshold, u16) {
        for (label, policy) in &self.policies {
            if policy.matcher.matches(batch, span, info) {
                return (policy.threshold, *label);
            }
        }
        (self.baseline, (self.names.len() - 1) as u16)
    }

    /// [`HeadSampler::decide`] for a span that arrived with a tracestate:
    /// its `rv`, if any, decides, and a kept span's `th` is merged into it.
    /// Out of line, so the common case stays small.
    #[inline(never)]
    fn decide_with_trace_state(
        &self,
        batch: &SpanBatch,
        span: usize,
        threshold: Threshold,
        label: u16,
        new_trace_state: &mut String,
    ) -> Verdict {
        let info = &batch.spans()[span];
        // Most spans are dropped: decide those without parsing the
        // tracestate (or checking it is UTF-8) when it has no `rv` to
        // decide by instead.
        if !may_carry_rv(&batch.bytes()[info.trace_state()])
            && !threshold.should_sample(Randomness::from_trace_id(&info.trace_id))
        {
            return Verdict {
                sampled: false,
                rewrite: false,
                label,
            };
        }
        let raw = batch.span_trace_state(span);
        let Ok(mut state) = TraceState::parse(raw) else {
            let sampled = threshold.should_sample(Randomness::from_trace_id(&info.trace_id));
            return Verdict {
                sampled,
                rewrite: false,
                label,
            };
        };
        let randomness = state
            .ot
            .randomness
            .unwrap_or_else(|| Randomness::from_trace_id(&info.trace_id));
        if state
            .ot
            .threshold
            .is_some_and(|arriving| !arriving.should_sample(randomness))
        {
            state.ot.threshold = None;
        }
        let sampled = threshold.should_sample(randomness);
        let mut rewrite = false;
        if sampled {
            state.ot.raise_threshold(threshold);
            state.write(new_trace_state);
            rewrite = new_trace_state != raw;
        }
        Verdict {
            sampled,
            rewrite,
            label,
        }
    }
}

impl HeadSampler for PolicySampler {
    fn labels(&self) -> Vec<String> {
        self.names.clone()
    }

    fn decide(&self, batch: &SpanBatch, span: usize, new_trace_state: &mut String) -> Verdict {
        let info = &batch.spans()[span];
        let (threshold, label) = self.threshold_for(batch, span, info);
        if threshold == Threshold::NEVER {
            // No randomness passes it: nothing else to read.
            return Verdict {
                sampled: false,
                rewrite: false,
                label,
            };
        }
        // The tracestate comes from the index, without reading the span.
        if info.trace_state_len != 0 {
            return self.decide_with_trace_state(batch, span, threshold, label, new_trace_state);
        }
        // The common case: no tracestate to read or merge.
        let sampled = threshold.should_sample(Randomness::from_trace_id(&info.trace_id));
        if sampled {
            new_trace_state.push_str("ot=th:");
            threshold.write_tvalue(new_trace_state);
        }
        Verdict {
            sampled,
            rewrite: sampled,
            label,
        }
    }
}
