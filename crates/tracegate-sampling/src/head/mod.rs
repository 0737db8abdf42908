//! Head sampling: stateless, per-span decisions that every replica and
//! every span of a trace agree on, because they depend only on the trace's
//! OTEP 235 randomness (docs/architecture.md, "OTEP 235 randomness and
//! thresholds").
//!
//! - [`otep235`]: probability ↔ threshold arithmetic and the collector's
//!   `hash_seed` hash.
//! - [`policy`]: tracegate's `sampling` processor (the seed config's):
//!   a baseline percentage and policies with `fraction_on_match`.
//! - [`probabilistic`]: the collector's `probabilistic_sampler`.
//! - [`sample_batch`]: runs a sampler over a batch, re-encoding only kept
//!   spans whose tracestate changes.

pub mod otep235;
pub mod policy;
pub mod probabilistic;

#[cfg(test)]
mod tests;

use tracegate_model::SpanBatch;

pub use policy::{PolicySampler, SamplingConfig};
pub use probabilistic::{ProbabilisticSampler, ProbabilisticSamplerConfig, SamplerMode};

/// An invalid head-sampling config: the key path inside the component and
/// what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// One span's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub sampled: bool,
    /// The span is kept and its tracestate changes to what `decide` wrote.
    pub rewrite: bool,
    /// Index into [`HeadSampler::labels`]: what decided (for metrics).
    pub label: u16,
}

/// A stateless per-span sampler.
pub trait HeadSampler: Send + Sync {
    /// Names of what can decide a span (a policy, a randomness source),
    /// indexed by [`Verdict::label`].
    fn labels(&self) -> Vec<String>;

    /// Decides span `span` of `batch`. When the span is kept with a new
    /// tracestate, writes it to `new_trace_state` (empty on entry) and
    /// sets [`Verdict::rewrite`].
    fn decide(&self, batch: &SpanBatch, span: usize, new_trace_state: &mut String) -> Verdict;
}

/// A sampled batch: the kept spans and per-label counts.
#[derive(Debug, Clone)]
pub struct SampledBatch {
    pub kept: SpanBatch,
    /// `[dropped, kept]` spans per label of the sampler.
    pub tally: Vec<[u64; 2]>,
}

impl SampledBatch {
    pub fn dropped(&self) -> u64 {
        self.tally.iter().map(|t| t[0]).sum()
    }
}

/// Runs `sampler` over every span of `batch`. A batch kept whole with no
/// tracestate change comes back sharing the original bytes.
/// `label_count` is the length of the sampler's [`HeadSampler::labels`].
pub fn sample_batch(
    sampler: &dyn HeadSampler,
    label_count: usize,
    batch: &SpanBatch,
) -> SampledBatch {
    let mut tally = vec![[0u64; 2]; label_count];
    let mut kept = Vec::with_capacity(batch.len());
    // The new tracestates, one after another in one buffer (no allocation
    // per kept span), and which span gets which; sized for a threshold
    // (`ot=th:` and a few digits) on every span, so that they rarely grow.
    let mut states = String::with_capacity(batch.len() * 12);
    let mut edits: Vec<(u32, std::ops::Range<usize>)> = Vec::with_capacity(batch.len());
    let mut scratch = String::new();
    for span in 0..batch.len() {
        scratch.clear();
        let verdict = sampler.decide(batch, span, &mut scratch);
        if let Some(t) = tally.get_mut(usize::from(verdict.label)) {
            t[usize::from(verdict.sampled)] += 1;
        }
        if verdict.sampled {
            kept.push(span as u32);
            if verdict.rewrite {
                let at = states.len();
                states.push_str(&scratch);
                edits.push((span as u32, at..states.len()));
            }
        }
    }
    let kept = if edits.is_empty() {
        batch.select(&kept)
    } else {
        let edits: Vec<(u32, &str)> = edits
            .into_iter()
            .map(|(span, range)| (span, &states[range]))
            .collect();
        batch.select_with_trace_states(&kept, &edits)
    };
    SampledBatch { kept, tally }
}
