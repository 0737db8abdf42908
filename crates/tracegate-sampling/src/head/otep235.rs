//! OTEP 235 arithmetic (the spec's "TraceState: Probability Sampling"), as
//! the collector's `pkg/sampling` computes it: probabilities to rejection
//! thresholds with a given precision, and the legacy FNV hash of the
//! `probabilistic_sampler`'s `hash_seed` mode as a 56-bit randomness.

use tracegate_model::trace_state::{Randomness, Threshold, MAX_ADJUSTED_COUNT, NUM_HEX_DIGITS};

/// The smallest sampling probability a threshold can express: 2^-56.
pub const MIN_PROBABILITY: f64 = 1.0 / MAX_ADJUSTED_COUNT as f64;

/// The default number of significant hex digits of an encoded threshold
/// (the collector's `sampling_precision` default).
pub const DEFAULT_PRECISION: u8 = 4;

/// The threshold that samples `probability` (in [2^-56, 1]) of traces,
/// rounded to `precision` significant hex digits (0 or more than 14 mean
/// 14). Near 0 and 1 precision is added to keep the relative error small:
/// one digit per leading `0` or `f` the threshold would have. `None` for a
/// probability out of range (or NaN).
pub fn threshold_for_probability(probability: f64, precision: u8) -> Option<Threshold> {
    let mut precision = match usize::from(precision) {
        0 => NUM_HEX_DIGITS,
        p => p.min(NUM_HEX_DIGITS),
    };
    if !(MIN_PROBABILITY..=1.0).contains(&probability) {
        return None;
    }
    if probability == 1.0 {
        return Some(Threshold::ALWAYS);
    }
    // Both exponents are <= 0; integer division truncates as Go's does.
    let extra = |x: f64| (-frexp_exponent(x) / 4) as usize;
    precision = NUM_HEX_DIGITS
        .min((precision + extra(probability)).max(precision + extra(1.0 - probability)));
    let scaled = (probability * MAX_ADJUSTED_COUNT as f64).round() as u64;
    let mut threshold = MAX_ADJUSTED_COUNT - scaled;
    let shift = 4 * (NUM_HEX_DIGITS - precision);
    if shift != 0 {
        threshold += 1 << (shift - 1);
        threshold >>= shift;
        threshold <<= shift;
    }
    Threshold::from_unsigned(threshold)
}

/// The exponent `e` of `x = m · 2^e` with `m` in [0.5, 1), for positive
/// normal `x` (Go's `math.Frexp`).
fn frexp_exponent(x: f64) -> i64 {
    debug_assert!(x.is_normal() && x > 0.0);
    ((x.to_bits() >> 52) & 0x7ff) as i64 - 1022
}

/// The collector's hash: FNV-1a (32-bit) over the seed's four bytes,
/// little-endian, then `bytes`.
pub fn fnv1a32_seeded(seed: u32, bytes: &[u8]) -> u32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let mut hash = OFFSET;
    for &b in seed.to_le_bytes().iter().chain(bytes) {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

/// Buckets of the `hash_seed` mode: the low 14 bits of the hash.
pub const HASH_BUCKETS: u32 = 1 << 14;

/// The `hash_seed` mode's randomness, as the collector builds it from the
/// hash so that `threshold <= randomness` is the legacy test
/// `hash & 0x3fff < scaled_rate`: the top 14 bits are the bucket reflected
/// (`0x3fff - bucket`), the middle 28 a mix of the hash's 18 unused bits,
/// the low 14 the bucket itself.
pub fn hash_seed_randomness(seed: u32, bytes: &[u8]) -> Randomness {
    let hashed32 = fnv1a32_seeded(seed, bytes);
    let bucket = u64::from(hashed32 & (HASH_BUCKETS - 1));
    let reflected = u64::from(HASH_BUCKETS) - 1 - bucket;
    let unused18 = u64::from(hashed32 >> 14);
    let mixed28 = unused18 ^ (unused18 << 10);
    let value = (reflected << 42) | (mixed28 << 14) | bucket;
    Randomness::from_unsigned(value).unwrap_or(Randomness::MAX)
}

/// The `hash_seed` mode's threshold for a `sampling_percentage`, computed
/// as the collector does: `uint32(pct * 163.84)` in 32-bit float
/// arithmetic, truncated, then reflected into a rejection threshold in the
/// top 14 bits. `None` when the rate truncates to zero (never sample).
pub fn hash_seed_threshold(percentage: f32) -> Option<Threshold> {
    let percentage = percentage.min(100.0);
    let scale: f32 = HASH_BUCKETS as f32 / 100.0;
    let scaled = (percentage * scale) as u32;
    if scaled == 0 {
        return None;
    }
    let reject = u64::from(HASH_BUCKETS.saturating_sub(scaled));
    Threshold::from_unsigned(reject << 42)
}
