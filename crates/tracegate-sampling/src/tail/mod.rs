//! Tail sampling: whole traces are held until they can be judged, then kept
//! or dropped as one (docs/architecture.md, "The shard-per-core trace
//! buffer" and "OTEP 235 randomness and thresholds").
//!
//! - [`config`]: the policy configs, spelled as the OpenTelemetry
//!   Collector's `tail_sampling` processor spells them.
//! - [`policy`]: the built policies, their evaluation over a buffered trace
//!   and the final decision (Dropped > Sampled > NotSampled,
//!   `sample_on_first_match`).
//! - [`buffer`]: [`TraceShard`], one worker's share of the pending traces
//!   with its decision timers and caches, and [`TraceBuffer`], the shards
//!   together for callers that run them on one thread.
//!
//! Time is passed in as a [`Duration`] since the Unix epoch (the composite
//! policy counts spans per wall-clock second as the collector does); the
//! caller keeps it monotonic.

pub mod adaptive;
pub mod buffer;
mod cache;
pub mod config;
mod ottl;
pub mod policy;
mod store;

#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod tests;

pub use buffer::{
    DecidedTrace, Decider, DecisionReason, KnownDecision, PendingTrace, Pin, Released, SampledBy,
    ShardStats, TraceAggregates, TraceBuffer, TraceBufferSettings, TraceShard,
};
pub use config::PolicyConfig;
pub use policy::{BuildError, Decision, PolicySet, PolicyTally, TraceView, Verdict};

#[cfg(doc)]
use std::time::Duration;

use crate::head::otep235::{threshold_for_probability, DEFAULT_PRECISION};
use tracegate_model::trace_state::{Randomness, Threshold};

/// A trace id as it travels in OTLP.
pub type TraceId = [u8; 16];

/// The trace's randomness as OTEP 235 defines it when no explicit `rv` is
/// given: the low 56 bits of the trace id (its last 7 bytes, big-endian).
/// `fraction_on_match` compares this with a threshold exactly as head
/// sampling does, so a trace kept by a fraction here is kept by the same
/// fraction there.
pub fn trace_randomness(trace_id: &TraceId) -> u64 {
    Randomness::from_trace_id(trace_id).unsigned()
}

/// 2^56: the number of distinct randomness values.
pub const RANDOMNESS_RANGE: u64 = 1 << 56;

/// OTEP 235's rejection threshold for keeping `fraction` of traces: a trace
/// is kept when its randomness is at least this (0 keeps all, 2^56 none).
/// The same threshold head sampling uses for a policy's
/// `fraction_on_match` at its default precision (4 hex digits, as the
/// collector's `sampling_precision`), so head and tail agree on every trace.
pub fn keep_threshold(fraction: f64) -> u64 {
    if fraction.is_nan() || fraction <= 0.0 {
        return RANDOMNESS_RANGE;
    }
    threshold_for_probability(fraction.min(1.0), DEFAULT_PRECISION)
        .unwrap_or(Threshold::NEVER)
        .unsigned()
}

/// Which shard of `shards` owns a trace. Mixes both halves of the id so
/// clients with non-random ids (counters, zero-padded 64-bit ids) still
/// spread across shards.
pub fn shard_of(trace_id: &TraceId, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let hi = u64::from_le_bytes(trace_id[..8].try_into().unwrap_or_default());
    let lo = u64::from_le_bytes(trace_id[8..].try_into().unwrap_or_default());
    let mixed = (hi ^ lo.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((u128::from(mixed >> 32) * shards as u128) >> 32) as usize
}
