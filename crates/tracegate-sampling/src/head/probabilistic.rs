//! The OpenTelemetry Collector's `probabilistic_sampler` processor for
//! traces, decision for decision: the `hash_seed`, `proportional` and
//! `equalizing` modes, `fail_closed`, `sampling_precision` and the
//! OpenTracing `sampling.priority` span attribute. Kept spans carry the
//! threshold (and in `hash_seed` mode the hash's randomness) in their
//! tracestate, as the collector writes it.

use serde::Deserialize;
use tracegate_model::trace_state::{Randomness, Threshold, TraceState};
use tracegate_model::{AnyValueRef, SpanBatch, SpanInfo};

use super::otep235::{
    hash_seed_randomness, hash_seed_threshold, threshold_for_probability, DEFAULT_PRECISION,
    MIN_PROBABILITY,
};
use super::{ConfigError, HeadSampler, Verdict};

/// `processors: probabilistic_sampler:` (traces).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbabilisticSamplerConfig {
    /// Percentage of traces to keep; 100 or more keeps all, 0 none.
    /// Read as a 32-bit float, as the collector does. Default 0.
    #[serde(default)]
    pub sampling_percentage: f32,
    /// Seed of the `hash_seed` mode's hash; every collector of one tier
    /// must use the same. Default 0.
    #[serde(default)]
    pub hash_seed: u32,
    /// `hash_seed` (FNV hash of seed and trace id, 14 bits), `proportional`
    /// (multiplies the probability an arriving span was sampled at) or
    /// `equalizing` (raises arriving thresholds to this one). Default, as
    /// the collector's: `hash_seed` when a `hash_seed` is set, else
    /// `proportional` ([`ProbabilisticSamplerConfig::effective_mode`]).
    #[serde(default)]
    pub mode: Option<SamplerMode>,
    /// Significant hex digits of the threshold written into tracestate, 1 to
    /// 14 (more near 0 % and 100 %). Default 4.
    #[serde(default = "default_precision")]
    pub sampling_precision: u8,
    /// Drop a span whose sampling data cannot be used (unparseable
    /// tracestate, no randomness, an arriving threshold its randomness
    /// fails, `rv`/`th` present in `hash_seed` mode); keep it when false.
    /// `sampling.priority` still overrides. Default true.
    #[serde(default = "default_true")]
    pub fail_closed: bool,
    /// Logs only in the collector; accepted so a shared config loads, and
    /// ignored for traces. Default `traceID`.
    #[serde(default)]
    pub attribute_source: Option<String>,
    /// Logs only; accepted and ignored for traces. Default none.
    #[serde(default)]
    pub from_attribute: Option<String>,
    /// Logs only (the name of a priority attribute); accepted and ignored
    /// for traces, which always read `sampling.priority`. Default none.
    #[serde(default)]
    pub sampling_priority: Option<String>,
}

fn default_precision() -> u8 {
    DEFAULT_PRECISION
}
fn default_true() -> bool {
    true
}

impl Default for ProbabilisticSamplerConfig {
    fn default() -> Self {
        ProbabilisticSamplerConfig {
            sampling_percentage: 0.0,
            hash_seed: 0,
            mode: None,
            sampling_precision: DEFAULT_PRECISION,
            fail_closed: true,
            attribute_source: None,
            from_attribute: None,
            sampling_priority: None,
        }
    }
}

/// The `mode` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerMode {
    HashSeed,
    Proportional,
    Equalizing,
}

impl ProbabilisticSamplerConfig {
    /// The mode that runs: `mode` when given; otherwise, as the
    /// collector's `makeSampler` chooses for traces, `hash_seed` when a
    /// non-zero `hash_seed` asks for the legacy hash and `proportional`
    /// when it does not.
    pub fn effective_mode(&self) -> SamplerMode {
        self.mode.unwrap_or(if self.hash_seed != 0 {
            SamplerMode::HashSeed
        } else {
            SamplerMode::Proportional
        })
    }

    /// The collector's checks; `Ok` carries warnings.
    pub fn validate(&self) -> Result<Vec<String>, ConfigError> {
        let pct = self.sampling_percentage;
        if !pct.is_finite() {
            return Err(ConfigError::new(
                "sampling_percentage",
                format!("sampling rate is invalid: {pct}%"),
            ));
        }
        let ratio = f64::from(pct) / 100.0;
        if ratio < 0.0 {
            return Err(ConfigError::new(
                "sampling_percentage",
                format!("sampling rate is negative: {pct}%"),
            ));
        }
        if ratio != 0.0 && ratio < MIN_PROBABILITY {
            return Err(ConfigError::new(
                "sampling_percentage",
                format!("sampling rate is too small: {pct}%"),
            ));
        }
        if self.sampling_precision == 0 {
            return Err(ConfigError::new(
                "sampling_precision",
                "invalid sampling precision: 0",
            ));
        }
        if self.sampling_precision > 14 {
            return Err(ConfigError::new(
                "sampling_precision",
                format!(
                    "sampling precision is too great, should be <= 14: {}",
                    self.sampling_precision
                ),
            ));
        }
        if let Some(source) = &self.attribute_source {
            if source != "traceID" && source != "record" {
                return Err(ConfigError::new(
                    "attribute_source",
                    format!("invalid attribute source: {source}. Expected: traceID or record"),
                ));
            }
        }
        let mut warnings = Vec::new();
        if self.attribute_source.is_some()
            || self.from_attribute.is_some()
            || self.sampling_priority.is_some()
        {
            warnings.push(
                "attribute_source, from_attribute and sampling_priority apply to logs only; \
                 tracegate samples traces and ignores them"
                    .to_string(),
            );
        }
        if self.effective_mode() == SamplerMode::HashSeed
            && pct > 0.0
            && hash_seed_threshold(pct).is_none()
        {
            warnings.push(format!(
                "sampling_percentage {pct}% rounds to zero in hash_seed mode (14 bits): nothing is kept"
            ));
        }
        Ok(warnings)
    }
}

/// What the `policy` label of `count_traces_sampled` says decided a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RandomnessSource {
    /// `hash_seed` mode's FNV hash of the trace id.
    TraceIdHash = 0,
    /// The trace id's low 56 bits.
    TraceIdW3c = 1,
    /// An explicit `rv` in the tracestate.
    SamplingRandomness = 2,
    /// No usable randomness (an all-zero trace id).
    MissingRandomness = 3,
    /// `sampling.priority` decided (and a zero `sampling_percentage`).
    SamplingPriority = 4,
}

impl RandomnessSource {
    /// The collector's label values, by discriminant.
    pub const LABELS: [&'static str; 5] = [
        "trace_id_hash",
        "trace_id_w3c",
        "sampling_randomness",
        "missing_randomness",
        "sampling_priority",
    ];
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// `sampling_percentage` 0 (or a hash rate that truncates to 0).
    Never,
    HashSeed {
        seed: u32,
        threshold: Threshold,
    },
    Equalizing {
        threshold: Threshold,
    },
    Proportional {
        ratio: f64,
        precision: u8,
        /// The threshold for a span that arrives without one (probability
        /// 1 × `ratio`): most spans, so computed once.
        first_threshold: Threshold,
    },
}

/// The built `probabilistic_sampler`.
#[derive(Debug, Clone)]
pub struct ProbabilisticSampler {
    mode: Mode,
    fail_closed: bool,
    /// Finds the priority attribute's name in a span's bytes; see the
    /// shortcut in `decide`.
    priority_key: memchr::memmem::Finder<'static>,
}

/// OpenTracing's `sampling.priority` hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Priority {
    Defer,
    MustSample,
    DoNotSample,
}

impl ProbabilisticSampler {
    /// Builds from a validated config.
    pub fn new(config: &ProbabilisticSamplerConfig) -> ProbabilisticSampler {
        let pct = config.sampling_percentage.min(100.0);
        let ratio = (f64::from(pct) / 100.0).max(MIN_PROBABILITY);
        let mode = if pct <= 0.0 {
            Mode::Never
        } else {
            match config.effective_mode() {
                SamplerMode::HashSeed => match hash_seed_threshold(pct) {
                    Some(threshold) => Mode::HashSeed {
                        seed: config.hash_seed,
                        threshold,
                    },
                    None => Mode::Never,
                },
                SamplerMode::Equalizing => Mode::Equalizing {
                    threshold: threshold_for_probability(ratio, config.sampling_precision)
                        .unwrap_or(Threshold::ALWAYS),
                },
                SamplerMode::Proportional => Mode::Proportional {
                    ratio,
                    precision: config.sampling_precision,
                    first_threshold: threshold_for_probability(ratio, config.sampling_precision)
                        .unwrap_or(Threshold::NEVER),
                },
            }
        };
        ProbabilisticSampler {
            mode,
            fail_closed: config.fail_closed,
            priority_key: memchr::memmem::Finder::new(SAMPLING_PRIORITY.as_bytes()),
        }
    }
}

impl ProbabilisticSampler {
    /// False when the span certainly has no `sampling.priority` attribute:
    /// the index knows the lengths of its attribute keys, and else its name
    /// must occur in the span's bytes.
    fn may_have_priority(&self, batch: &SpanBatch, info: &SpanInfo) -> bool {
        info.may_have_attribute(SAMPLING_PRIORITY)
            && self
                .priority_key
                .find(&batch.bytes()[info.span.start as usize..info.span.end as usize])
                .is_some()
    }
}

/// The span attribute OpenTracing's sampling hint is read from.
const SAMPLING_PRIORITY: &str = "sampling.priority";

fn priority(attribute: Option<AnyValueRef<'_>>) -> Priority {
    let from = |value: f64| {
        if value == 0.0 {
            Priority::DoNotSample
        } else if value > 0.0 {
            Priority::MustSample
        } else {
            Priority::Defer
        }
    };
    match attribute {
        Some(AnyValueRef::Int(n)) => from(n as f64),
        Some(AnyValueRef::Double(d)) => from(d),
        Some(AnyValueRef::String(s)) => s.parse::<f64>().map_or(Priority::Defer, from),
        _ => Priority::Defer,
    }
}

impl HeadSampler for ProbabilisticSampler {
    fn labels(&self) -> Vec<String> {
        RandomnessSource::LABELS
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn decide(&self, batch: &SpanBatch, span: usize, new_trace_state: &mut String) -> Verdict {
        let info = &batch.spans()[span];
        if let Mode::HashSeed { seed, threshold } = self.mode {
            // Failing closed, a span the hash drops is kept only by a
            // positive `sampling.priority` (tracestate trouble drops it
            // too): without that name in its bytes, nothing else to read.
            if self.fail_closed
                && info.trace_id != [0; 16]
                && !threshold.should_sample(hash_seed_randomness(seed, &info.trace_id))
                && !self.may_have_priority(batch, info)
            {
                return Verdict {
                    sampled: false,
                    rewrite: false,
                    label: RandomnessSource::TraceIdHash as u16,
                };
            }
        }
        // The tracestate comes from the index; the priority attribute is
        // read only when its name may be there.
        let raw = batch.span_trace_state(span);
        let priority_attribute = if self.may_have_priority(batch, info) {
            batch.span_attribute(span, SAMPLING_PRIORITY)
        } else {
            None
        };
        let parsed = TraceState::parse(raw);
        let trace_id_empty = info.trace_id == [0; 16];

        // Randomness, the tracestate to update ("carrier"), and whether the
        // sampling data could not be used.
        let (mut source, randomness, mut carrier, mut failed) = match self.mode {
            Mode::Never => (
                RandomnessSource::SamplingPriority,
                Randomness::MAX,
                parsed.as_ref().ok().cloned(),
                parsed.is_err(),
            ),
            Mode::HashSeed { seed, .. } => {
                let (source, randomness) = if trace_id_empty {
                    (RandomnessSource::MissingRandomness, Randomness::MAX)
                } else {
                    (
                        RandomnessSource::TraceIdHash,
                        hash_seed_randomness(seed, &info.trace_id),
                    )
                };
                match parsed {
                    Err(_) => (source, randomness, None, true),
                    // Explicit OTEP 235 data is left alone in this mode.
                    Ok(ts) if ts.ot.randomness.is_some() || ts.ot.threshold.is_some() => {
                        (source, randomness, None, true)
                    }
                    Ok(mut ts) => {
                        // As the collector, even a missing randomness is
                        // written (as all ones) should the span be kept.
                        ts.ot.randomness = Some(randomness);
                        (source, randomness, Some(ts), false)
                    }
                }
            }
            Mode::Equalizing { .. } | Mode::Proportional { .. } => match parsed {
                Err(_) => (
                    RandomnessSource::MissingRandomness,
                    Randomness::MAX,
                    None,
                    true,
                ),
                Ok(ts) => match ts.ot.randomness {
                    Some(rv) => (RandomnessSource::SamplingRandomness, rv, Some(ts), false),
                    None if !trace_id_empty => (
                        RandomnessSource::TraceIdW3c,
                        Randomness::from_trace_id(&info.trace_id),
                        Some(ts),
                        false,
                    ),
                    None => (
                        RandomnessSource::MissingRandomness,
                        Randomness::MAX,
                        Some(ts),
                        false,
                    ),
                },
            },
        };

        // The consistency check: no randomness, or an arriving threshold
        // the randomness fails (which is then cleared, as the spec asks).
        if !failed {
            if source == RandomnessSource::MissingRandomness {
                failed = true;
            } else if let Some(ts) = carrier.as_mut() {
                if ts
                    .ot
                    .threshold
                    .is_some_and(|t| !t.should_sample(randomness))
                {
                    ts.ot.threshold = None;
                    failed = true;
                }
            }
        }

        let mut threshold = if failed {
            if self.fail_closed {
                Threshold::NEVER
            } else {
                Threshold::ALWAYS
            }
        } else {
            let arriving = carrier.as_ref().and_then(|ts| ts.ot.threshold);
            match self.mode {
                Mode::Never => Threshold::NEVER,
                Mode::HashSeed { threshold, .. } => threshold,
                Mode::Equalizing { threshold } => match arriving {
                    Some(t) if threshold < t => t,
                    _ => threshold,
                },
                Mode::Proportional {
                    ratio,
                    precision,
                    first_threshold,
                } => match arriving {
                    None => first_threshold,
                    Some(t) => threshold_for_probability(t.probability() * ratio, precision)
                        .unwrap_or(Threshold::NEVER),
                },
            }
        };

        match priority(priority_attribute) {
            Priority::Defer => {}
            Priority::MustSample => {
                threshold = Threshold::ALWAYS;
                source = RandomnessSource::SamplingPriority;
            }
            Priority::DoNotSample => {
                threshold = Threshold::NEVER;
                source = RandomnessSource::SamplingPriority;
            }
        }

        let sampled = threshold.should_sample(randomness);
        let mut rewrite = false;
        if sampled {
            if let Some(mut ts) = carrier {
                // Refused when it would lower an arriving threshold: the
                // span then keeps the one it came with.
                ts.ot.raise_threshold(threshold);
                ts.write(new_trace_state);
                rewrite = new_trace_state != raw;
            }
        }
        Verdict {
            sampled,
            rewrite,
            label: source as u16,
        }
    }
}
