//! A bounded fuzz loop that runs with `cargo test` in seconds: arbitrary
//! bytes and mutations of valid requests (bit flips, truncations, corrupted
//! lengths, spliced bytes) never panic the scanner, and whatever it accepts
//! is a consistent index over bytes prost can decode. The coverage-guided
//! twin of this loop is the cargo-fuzz target under /fuzz.

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::props::{assemble, request_strategy};
use super::*;

/// Everything promised about an accepted input.
fn check_accepted(input: &[u8], rng: &mut StdRng) {
    let scanned = SpanBatch::scan(Bytes::copy_from_slice(input));
    // Validating without the index is exactly as strict, error for error,
    // and indexes to the same on first use.
    let lazy = SpanBatch::scan_with(Bytes::copy_from_slice(input), crate::Indexing::Lazy);
    match (&scanned, &lazy) {
        (Err(eager), Err(lazy)) => assert_eq!(eager, lazy),
        (Ok(eager), Ok(lazy)) => crate::test_support::assert_same_index(lazy, eager),
        _ => panic!("eager scan {scanned:?}, lazy scan {lazy:?}"),
    }
    let Ok(batch) = scanned else {
        return;
    };
    // Each span, scope and resource takes at least a key and a length byte.
    let items = batch.len() + batch.scopes().len() + batch.resources().len();
    assert!(
        items * 2 <= input.len(),
        "index larger than the input allows"
    );
    // Never looser than prost: to_request must decode.
    ExportTraceServiceRequest::decode(input).expect("scanner accepted what prost refuses");
    assert_index_consistent(&batch);
    // Subsets of whatever was accepted are valid and rescan identically.
    if !batch.is_empty() {
        let keep: Vec<u32> = (0..batch.len() as u32)
            .filter(|_| rng.random_bool(0.3))
            .collect();
        let subset = batch.select(&keep);
        let rescanned = SpanBatch::scan(subset.bytes().clone()).expect("subset rescans");
        assert_eq!(rescanned.spans(), subset.spans());
        for i in 0..subset.len() {
            let _ = subset.span_attribute(i, "http.status_code");
            let _ = subset.service_name(i);
        }
    }
}

fn mutate(seed: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut m = seed.to_vec();
    for _ in 0..rng.random_range(1..4) {
        if m.is_empty() {
            m.push(rng.random());
            continue;
        }
        let at = rng.random_range(0..m.len());
        match rng.random_range(0..6) {
            // Bit flip.
            0 => m[at] ^= 1 << rng.random_range(0..8),
            // Truncation.
            1 => m.truncate(at),
            // A length (or any varint) byte set to something else, often
            // a little larger or smaller than it was.
            2 => {
                let delta: i16 = rng.random_range(-3..=3);
                m[at] = (i16::from(m[at]) + delta).clamp(0, 255) as u8;
            }
            // A multi-byte varint spliced in (huge lengths, overlong keys).
            3 => {
                let mut v = Vec::new();
                put_varint(&mut v, rng.random::<u64>() >> rng.random_range(0..64));
                m.splice(at..at, v);
            }
            // A slice of the input duplicated somewhere else.
            4 => {
                let end = (at + rng.random_range(1..32)).min(m.len());
                let piece = m[at..end].to_vec();
                let to = rng.random_range(0..m.len());
                m.splice(to..to, piece);
            }
            // Random bytes overwritten.
            _ => {
                for b in m.iter_mut().skip(at).take(rng.random_range(1..8)) {
                    *b = rng.random();
                }
            }
        }
    }
    m
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x7ace_6a7e);
    for _ in 0..20_000 {
        let len = rng.random_range(0..256);
        let mut input: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        // Bias toward structure: start with a ResourceSpans key sometimes.
        if rng.random_bool(0.5) && !input.is_empty() {
            input[0] = 0x0a;
        }
        check_accepted(&input, &mut rng);
    }
}

#[test]
fn mutated_requests_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x5ca9);
    let mut runner = TestRunner::deterministic();
    let strategy = request_strategy();
    let mut accepted = 0;
    let mut total = 0;
    for round in 0..60 {
        let req = strategy.new_tree(&mut runner).unwrap().current();
        let seed = if round % 2 == 0 {
            req.encode_to_vec()
        } else {
            assemble(&req, round)
        };
        for _ in 0..300 {
            let input = mutate(&seed, &mut rng);
            total += 1;
            if SpanBatch::scan(Bytes::copy_from_slice(&input)).is_ok() {
                accepted += 1;
            }
            check_accepted(&input, &mut rng);
        }
    }
    // The mutations must exercise both outcomes to mean anything.
    assert!(
        accepted > total / 50,
        "only {accepted} of {total} mutants accepted"
    );
    assert!(accepted < total, "every mutant accepted");
}
