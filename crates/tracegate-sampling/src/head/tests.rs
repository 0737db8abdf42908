//! Head sampling against the OTEP 235 vectors, the collector's
//! `probabilistic_sampler` test tables, and its statistics.

use rand::{Rng, SeedableRng};
use tracegate_model::otlp::{
    any_value, AnyValue, ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans, ScopeSpans,
    Span, Status,
};
use tracegate_model::trace_state::{Randomness, Threshold};
use tracegate_model::SpanBatch;

use super::otep235::*;
use super::*;

fn hex_id(s: &str) -> [u8; 16] {
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    id
}

fn tvalue(p: f64, precision: u8) -> String {
    threshold_for_probability(p, precision).unwrap().tvalue()
}

#[test]
fn otep235_probability_vectors() {
    assert_eq!(tvalue(0.25, 4), "c");
    assert_eq!(tvalue(0.5, 4), "8");
    assert_eq!(tvalue(1.0, 4), "0");
    assert_eq!(tvalue(0.1, 4), "e666");
    // The collector's table: 99/100 = .fd70a3d70a3d70a3d…
    assert_eq!(tvalue(0.01, 0), "fd70a3d70a3d71");
    assert_eq!(tvalue(0.01, 14), "fd70a3d70a3d71");
    // One digit is added for the leading `f` of a small probability.
    assert_eq!(tvalue(0.01, 4), "fd70a");
    assert_eq!(tvalue(0.01, 3), "fd71");
    assert_eq!(tvalue(0.4, 3), "99a");
    assert_eq!(tvalue(0.4, 6), "99999a");
    assert_eq!(tvalue(0.4 * 0.5, 6), "cccccd");
    // And digits for the leading zeros of a probability near 1.
    assert_eq!(
        tvalue(f64::from((1.0f32 - 8e-7) * 100.0) / 100.0, 10),
        "00000cccccccd"
    );
    assert_eq!(tvalue(MIN_PROBABILITY, 4), "ffffffffffffff");
    for bad in [0.0, -0.5, 1.5, f64::NAN, MIN_PROBABILITY / 2.0] {
        assert_eq!(threshold_for_probability(bad, 4), None, "{bad}");
    }
}

#[test]
fn fnv_hash_vectors() {
    // The collector's TestEmptyHashFunction.
    assert_eq!(fnv1a32_seeded(0, &[]) & 0x3fff, 0x3515);
    assert_eq!(fnv1a32_seeded(0, &[0; 16]) & 0x3fff, 0x2455);
    // FNV-1a 32 reference values; the seed is just the first four bytes.
    assert_eq!(
        fnv1a32_seeded(u32::from_le_bytes(*b"foob"), b"ar"),
        0xbf9c_f968
    );
    assert_eq!(
        fnv1a32_seeded(u32::from_le_bytes(*b"abcd"), b"efgh"),
        fnv_reference(b"abcdefgh")
    );
}

/// Plain FNV-1a 32 written out, to check the seeded one against.
fn fnv_reference(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    })
}

/// (seed, trace id, kept at 50 %) from the collector's TestHashingFunction,
/// recorded from its legacy implementation.
const HASH_SEED_50PCT: &[(u32, &str, bool)] = &[
    (653, "474a03c76d75951a4b4c537ced8f1122", true),
    (563, "53a518291e91307e43cd8467bb06f986", true),
    (142, "a56a02f843b9bc6ee0b13889249e90e6", true),
    (904, "4e40762d3ee97a1c0932e4fa584f89a8", false),
    (445, "5224507db93db513f0ea2a4b4e0578c8", true),
    (38, "0c8717ced36216037af657e9d7f8b35b", true),
    (561, "2a8aa76c18d08e1e8be935541f9318c7", false),
    (757, "9e3d0f9481dc422cb613ea550897ae71", false),
    (22, "66a66c516ac22054673e5da5e6492545", false),
    (172, "84a1ce7bcea3e66194e72b4aa2694e31", true),
    (552, "a811a7def34ca4b98d8e320afd115fad", false),
    (546, "e3a345cc8dbb6f014bfa1edad3981820", true),
    (315, "a71effb50e28d27cbdc9892f3765b8c2", false),
    (790, "7629ecbea89398bfd9752a2f51c2c137", true),
    (555, "de6cdfb44d69e211f886c57120d7bda0", true),
    (666, "3ee60b013303bcfda06be89071b90bd1", true),
    (35, "855f493c5b5b1e2fcbc9993f8061eac8", false),
    (561, "0a0af00f63e098a39883705a423b0aa8", true),
    (936, "62dda24e4be24f5198e4d8dd4010c811", true),
    (864, "99f6a7e7b50845b4fb64b7c2ee49f53c", true),
    (687, "45a5ace7234d92d9983b4f3858bc0b8e", false),
    (400, "54156d7434a894ef07f2a80dbf0f1138", true),
    (607, "03240c2748aa67a185909a9345d84aba", false),
    (6, "d6a68b47c66d1f94eed46b8ddc72faf4", false),
    (965, "022315846d42a38322d6fd26250444b3", true),
    (16, "2533c732bed8c1ba4721c25a1205f06c", false),
    (773, "988481445600bb91bbe23e3103034bcd", true),
    (99, "497f02db51c898ac441aae18a8b7ced9", false),
    (460, "60c3b9a2dde734d71ba5cca7eb164bce", true),
];

struct SpanSpec<'a> {
    trace_id: [u8; 16],
    trace_state: &'a str,
    attributes: Vec<(&'a str, any_value::Value)>,
    status: i32,
    duration_ms: u64,
}

impl Default for SpanSpec<'_> {
    fn default() -> Self {
        SpanSpec {
            trace_id: [1; 16],
            trace_state: "",
            attributes: Vec::new(),
            status: 0,
            duration_ms: 1,
        }
    }
}

fn otlp_span(spec: &SpanSpec<'_>, n: u64) -> Span {
    Span {
        trace_id: spec.trace_id.to_vec(),
        span_id: (n + 1).to_be_bytes().to_vec(),
        trace_state: spec.trace_state.into(),
        name: "op".into(),
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_000_000_000 + spec.duration_ms * 1_000_000,
        attributes: spec
            .attributes
            .iter()
            .map(|(k, v)| KeyValue {
                key: (*k).into(),
                value: Some(AnyValue {
                    value: Some(v.clone()),
                }),
                ..Default::default()
            })
            .collect(),
        status: Some(Status {
            code: spec.status,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn batch_of(specs: &[SpanSpec<'_>]) -> SpanBatch {
    SpanBatch::from_request(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource::default()),
            scope_spans: vec![ScopeSpans {
                spans: (0u64..).zip(specs).map(|(n, s)| otlp_span(s, n)).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn run(sampler: &dyn HeadSampler, batch: &SpanBatch) -> SampledBatch {
    sample_batch(sampler, sampler.labels().len(), batch)
}

fn probabilistic(
    pct: f32,
    mode: SamplerMode,
    precision: u8,
    fail_closed: bool,
    seed: u32,
) -> ProbabilisticSampler {
    ProbabilisticSampler::new(&ProbabilisticSamplerConfig {
        sampling_percentage: pct,
        mode: Some(mode),
        sampling_precision: precision,
        fail_closed,
        hash_seed: seed,
        ..Default::default()
    })
}

#[test]
fn hash_seed_decisions_equal_the_collectors() {
    for &(seed, id, expected) in HASH_SEED_50PCT {
        let sampler = probabilistic(50.0, SamplerMode::HashSeed, 4, true, seed);
        let batch = batch_of(&[SpanSpec {
            trace_id: hex_id(id),
            ..Default::default()
        }]);
        let out = run(&sampler, &batch);
        assert_eq!(out.kept.len() == 1, expected, "seed {seed} trace {id}");
        // The legacy test, written directly: bucket < 50 % of 2^14.
        let bucket = fnv1a32_seeded(seed, &hex_id(id)) & 0x3fff;
        assert_eq!(bucket < 8192, expected, "seed {seed} trace {id}");
    }
}

#[test]
fn hash_seed_writes_rv_and_its_14_bit_threshold() {
    for (pct, th) in [
        (100.0, "0"),
        (75.0, "4"),
        (50.0, "8"),
        (25.0, "c"),
        (10.0, "e668"),
        (100.0 / 3.0, "aaac"),
    ] {
        let sampler = probabilistic(pct, SamplerMode::HashSeed, 4, true, 4312);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut found = 0;
        while found < 10 {
            let batch = batch_of(&[SpanSpec {
                trace_id: rng.random(),
                trace_state: "vendor=x",
                ..Default::default()
            }]);
            let out = run(&sampler, &batch);
            if out.kept.is_empty() {
                continue;
            }
            found += 1;
            let ts = tracegate_model::trace_state::TraceState::parse(out.kept.span_trace_state(0))
                .unwrap();
            assert_eq!(ts.ot.threshold.unwrap().tvalue(), th, "{pct}%");
            let rv = ts.ot.randomness.unwrap();
            assert!(ts.ot.threshold.unwrap().should_sample(rv));
            assert_eq!(
                rv,
                hash_seed_randomness(4312, &batch.spans()[0].trace_id),
                "rv is the hash's randomness"
            );
            assert_eq!(ts.others, vec!["vendor=x"]);
        }
    }
}

#[test]
fn hash_seed_leaves_explicit_sampling_data_alone() {
    // rv or th present: an error in this mode, decided by fail_closed, and
    // the tracestate is not touched.
    for ts in ["ot=rv:ffffffffffffff", "ot=th:0"] {
        let batch = batch_of(&[SpanSpec {
            trace_state: ts,
            ..Default::default()
        }]);
        let closed = probabilistic(100.0, SamplerMode::HashSeed, 4, true, 1);
        assert!(run(&closed, &batch).kept.is_empty(), "{ts}");
        let open = probabilistic(1.0, SamplerMode::HashSeed, 4, false, 1);
        let out = run(&open, &batch);
        assert_eq!(out.kept.len(), 1, "{ts}");
        assert_eq!(out.kept.span_trace_state(0), ts);
    }
}

/// The collector's Test_tracesamplerprocessor_TraceState table, for the
/// two consistent modes: (name, pct, precision, trace id, tracestate,
/// expected tracestate when kept by equalizing, by proportional).
#[test]
fn consistent_modes_follow_the_collectors_table() {
    let default_tid = "fefefefefefefefefe80000000000000";
    let improbable = "111111111111111111ffffffffffffff";
    type Case = (
        &'static str,
        f32,
        u8,
        &'static str,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
    );
    let both = |s| (Some(s), Some(s));
    let cases: Vec<Case> = vec![
        (
            "100",
            100.0,
            0,
            default_tid,
            "",
            both("ot=th:0").0,
            both("ot=th:0").1,
        ),
        (
            "50",
            50.0,
            0,
            default_tid,
            "",
            Some("ot=th:8"),
            Some("ot=th:8"),
        ),
        (
            "25 sampled",
            25.0,
            0,
            "ddddddddddddddddddc0000000000000",
            "",
            Some("ot=th:c"),
            Some("ot=th:c"),
        ),
        (
            "25 unsampled",
            25.0,
            0,
            "ddddddddddddddddddb0000000000000",
            "",
            None,
            None,
        ),
        (
            "1 with rv",
            1.0,
            0,
            default_tid,
            "ot=rv:FD70A3D70A3D71",
            Some("ot=rv:FD70A3D70A3D71;th:fd70a3d70a3d71"),
            Some("ot=rv:FD70A3D70A3D71;th:fd70a3d70a3d71"),
        ),
        (
            "1 with rv, precision 4",
            1.0,
            4,
            default_tid,
            "ot=rv:FD70A3D70A3D71",
            Some("ot=rv:FD70A3D70A3D71;th:fd70a"),
            Some("ot=rv:FD70A3D70A3D71;th:fd70a"),
        ),
        (
            "1 with rv, precision 3",
            1.0,
            3,
            default_tid,
            "ot=rv:FD70A3D70A3D71",
            None,
            None,
        ),
        (
            "1 rv just below",
            1.0,
            0,
            default_tid,
            "ot=rv:FD70A3D70A3D70",
            None,
            None,
        ),
        ("49 default tid", 49.0, 0, default_tid, "", None, None),
        (
            "1 mixed-case rv",
            1.0,
            0,
            default_tid,
            "ot=rv:fd70B000000000",
            Some("ot=rv:fd70B000000000;th:fd70a3d70a3d71"),
            Some("ot=rv:fd70B000000000;th:fd70a3d70a3d71"),
        ),
        (
            "1 with tid",
            1.0,
            4,
            "a0a0a0a0a0a0a0a0a0fe000000000000",
            "",
            Some("ot=th:fd70a"),
            Some("ot=th:fd70a"),
        ),
        (
            "incoming 50 with rv",
            50.0,
            0,
            default_tid,
            "ot=rv:90000000000000;th:80000000000000",
            Some("ot=rv:90000000000000;th:8"),
            None,
        ),
        (
            "incoming 50 at 25 unsampled",
            25.0,
            0,
            default_tid,
            "ot=th:8",
            None,
            None,
        ),
        (
            "incoming 50 at 25 sampled",
            25.0,
            0,
            "ffffffffffffffffffffffffffffffff",
            "ot=th:8",
            Some("ot=th:c"),
            Some("ot=th:e"),
        ),
        (
            "equalizing vs proportional",
            50.0,
            0,
            default_tid,
            "ot=rv:c0000000000000;th:8",
            Some("ot=rv:c0000000000000;th:8"),
            Some("ot=rv:c0000000000000;th:c"),
        ),
        (
            "inconsistent arriving threshold, fail open",
            100.0,
            0,
            default_tid,
            "ot=rv:40000000000000;th:8",
            Some("ot=rv:40000000000000;th:0"),
            Some("ot=rv:40000000000000;th:0"),
        ),
        (
            "40 precision 3 with rv",
            40.0,
            3,
            default_tid,
            "ot=rv:a0000000000000",
            Some("ot=rv:a0000000000000;th:99a"),
            Some("ot=rv:a0000000000000;th:99a"),
        ),
        (
            "arriving 50 at 40 precision 6",
            40.0,
            6,
            "a0a0a0a0a0a0a0a0a0d0000000000000",
            "ot=th:8",
            Some("ot=th:99999a"),
            Some("ot=th:cccccd"),
        ),
        (
            "arriving 50 at 40 partly",
            40.0,
            3,
            "a0a0a0a0a0a0a0a0a0b0000000000000",
            "ot=th:8",
            Some("ot=th:99a"),
            None,
        ),
        (
            "arriving 50 at 40 not",
            40.0,
            3,
            "a0a0a0a0a0a0a0a0a080000000000000",
            "ot=th:8",
            None,
            None,
        ),
        (
            "200 is 100",
            200.0,
            0,
            default_tid,
            "",
            Some("ot=th:0"),
            Some("ot=th:0"),
        ),
        (
            "tiny probability rounding",
            100.0 * (1.0 / 16384.0),
            0,
            improbable,
            "ot=th:fffc",
            Some("ot=th:fffc"),
            Some("ot=th:fffffff"),
        ),
        (
            "almost 100",
            (1.0 - 8e-7) * 100.0,
            10,
            improbable,
            "",
            Some("ot=th:00000cccccccd"),
            Some("ot=th:00000cccccccd"),
        ),
        (
            "probability underflow",
            1.0 / 16.0,
            0,
            improbable,
            "ot=th:fffffffffffff8",
            Some("ot=th:fffffffffffff8"),
            None,
        ),
    ];
    for (name, pct, precision, tid, ts, equalizing, proportional) in cases {
        for (mode, expected) in [
            (SamplerMode::Equalizing, equalizing),
            (SamplerMode::Proportional, proportional),
        ] {
            let sampler = probabilistic(pct, mode, precision, false, 4312);
            let batch = batch_of(&[SpanSpec {
                trace_id: hex_id(tid),
                trace_state: ts,
                ..Default::default()
            }]);
            let out = run(&sampler, &batch);
            match expected {
                Some(want) => {
                    assert_eq!(out.kept.len(), 1, "{name} {mode:?}: kept");
                    assert_eq!(out.kept.span_trace_state(0), want, "{name} {mode:?}");
                }
                None => assert!(out.kept.is_empty(), "{name} {mode:?}: dropped"),
            }
        }
    }
}

#[test]
fn hash_seed_shortcut_still_honours_priority() {
    // At 1 %, nearly every trace is dropped by the hash: the priority
    // attribute must still keep its spans, and its name elsewhere must not.
    let sampler = probabilistic(1.0, SamplerMode::HashSeed, 4, true, 9);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut dropped_by_hash = 0;
    for _ in 0..200 {
        let trace_id: [u8; 16] = rng.random();
        let hash_keeps = hash_seed_threshold(1.0)
            .unwrap()
            .should_sample(hash_seed_randomness(9, &trace_id));
        dropped_by_hash += usize::from(!hash_keeps);
        let with_priority = batch_of(&[SpanSpec {
            trace_id,
            attributes: vec![("sampling.priority", any_value::Value::IntValue(1))],
            ..Default::default()
        }]);
        assert_eq!(run(&sampler, &with_priority).kept.len(), 1);
        let name_as_value = batch_of(&[SpanSpec {
            trace_id,
            attributes: vec![(
                "note",
                any_value::Value::StringValue("sampling.priority".into()),
            )],
            ..Default::default()
        }]);
        assert_eq!(run(&sampler, &name_as_value).kept.len() == 1, hash_keeps);
        let bad_trace_state = batch_of(&[SpanSpec {
            trace_id,
            trace_state: "ot=th:zz",
            ..Default::default()
        }]);
        assert!(run(&sampler, &bad_trace_state).kept.is_empty());
    }
    assert!(dropped_by_hash > 150);
}

#[test]
fn fail_closed_drops_what_cannot_be_decided() {
    let default_tid = hex_id("fefefefefefefefefe80000000000000");
    let cases = [
        ([0u8; 16], ""),
        (default_tid, "ot=rv:abababababababab"),
        (default_tid, "ot=th:abababababababab"),
        (default_tid, "ot=th:-1"),
        (hex_id("ffffffffffffffffff70000000000000"), "ot=th:8"),
        (default_tid, "ot=th:8;rv:70000000000000"),
    ];
    for (tid, ts) in cases {
        for mode in [SamplerMode::Equalizing, SamplerMode::Proportional] {
            let batch = batch_of(&[SpanSpec {
                trace_id: tid,
                trace_state: ts,
                ..Default::default()
            }]);
            let out = run(&probabilistic(100.0, mode, 4, true, 0), &batch);
            assert!(out.kept.is_empty(), "{ts:?} {mode:?}");
        }
    }
}

#[test]
fn missing_randomness_follows_fail_closed() {
    for (pct, fail_closed, kept) in [
        (0.0, true, false),
        (62.0, true, false),
        (100.0, true, false),
        (0.0, false, false),
        (62.0, false, true),
        (100.0, false, true),
    ] {
        for mode in [
            SamplerMode::HashSeed,
            SamplerMode::Equalizing,
            SamplerMode::Proportional,
        ] {
            let batch = batch_of(&[SpanSpec {
                trace_id: [0; 16],
                ..Default::default()
            }]);
            let sampler = probabilistic(pct, mode, 4, fail_closed, 4312);
            let out = run(&sampler, &batch);
            assert_eq!(out.kept.len() == 1, kept, "{pct} {fail_closed} {mode:?}");
            let label = if pct == 0.0 {
                "sampling_priority"
            } else {
                "missing_randomness"
            };
            let labels = sampler.labels();
            let i = labels.iter().position(|l| l == label).unwrap();
            assert_eq!(out.tally[i][usize::from(kept)], 1);
        }
    }
}

#[test]
fn sampling_priority_overrides() {
    use any_value::Value;
    let cases = [
        (0.0, Value::IntValue(2), true),
        (0.0, Value::DoubleValue(1.0), true),
        (0.0, Value::StringValue("1".into()), true),
        (100.0, Value::IntValue(0), false),
        (100.0, Value::DoubleValue(0.0), false),
        (100.0, Value::StringValue("0".into()), false),
        (100.0, Value::IntValue(-1), true),
        (0.0, Value::StringValue("NaN".into()), false),
    ];
    for (pct, value, kept) in cases {
        for mode in [
            SamplerMode::HashSeed,
            SamplerMode::Equalizing,
            SamplerMode::Proportional,
        ] {
            // The collector's fixture: a trace id whose randomness is 0.
            let mut trace_id = [0; 16];
            trace_id[0] = 1;
            let batch = batch_of(&[SpanSpec {
                trace_id,
                attributes: vec![("sampling.priority", value.clone())],
                ..Default::default()
            }]);
            let sampler = probabilistic(pct, mode, 4, true, 4312);
            let out = run(&sampler, &batch);
            assert_eq!(out.kept.len() == 1, kept, "{pct} {value:?} {mode:?}");
        }
    }
    // Kept by priority at 1 %: the threshold written is 0.
    let batch = batch_of(&[SpanSpec {
        trace_id: hex_id("fefefefefefefefefe80000000000000"),
        attributes: vec![("sampling.priority", any_value::Value::IntValue(2))],
        ..Default::default()
    }]);
    let out = run(
        &probabilistic(1.0, SamplerMode::Equalizing, 0, false, 0),
        &batch,
    );
    assert_eq!(out.kept.span_trace_state(0), "ot=th:0");
}

/// 100 000 single-span traces with random ids, in batches of 1000.
fn random_traces(spec: impl Fn(&mut SpanSpec<'static>)) -> Vec<SpanBatch> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    (0..100)
        .map(|_| {
            let specs: Vec<SpanSpec<'static>> = (0..1000)
                .map(|_| {
                    let mut s = SpanSpec {
                        trace_id: rng.random(),
                        ..Default::default()
                    };
                    spec(&mut s);
                    s
                })
                .collect();
            batch_of(&specs)
        })
        .collect()
}

/// The kept share of `batches` is within 4σ of `p`.
fn assert_share_of(sampler: &dyn HeadSampler, p: f64, batches: &[SpanBatch]) {
    let n = batches.iter().map(SpanBatch::len).sum::<usize>() as f64;
    let kept = batches
        .iter()
        .map(|b| run(sampler, b).kept.len())
        .sum::<usize>() as f64;
    let expected = p * n;
    let sigma = (n * p * (1.0 - p)).sqrt();
    assert!(
        (kept - expected).abs() <= 4.0 * sigma.max(0.5),
        "kept {kept}, expected {expected} ± 4σ ({sigma})"
    );
}

fn assert_share(sampler: &dyn HeadSampler, p: f64, spec: impl Fn(&mut SpanSpec<'static>)) {
    assert_share_of(sampler, p, &random_traces(spec));
}

#[test]
fn probabilistic_sampler_keeps_its_share_of_100k_traces() {
    let traces = random_traces(|_| {});
    for pct in [1.0f32, 10.0, 33.3, 50.0, 90.0] {
        for mode in [
            SamplerMode::HashSeed,
            SamplerMode::Equalizing,
            SamplerMode::Proportional,
        ] {
            let sampler = probabilistic(pct, mode, 4, true, 22);
            assert_share_of(&sampler, f64::from(pct) / 100.0, &traces);
        }
    }
}

fn seed_config() -> SamplingConfig {
    // The seed's `sampling` block, as YAML turns it into JSON.
    serde_json::from_value(serde_json::json!({
        "sampling_percentage": 5,
        "policies": [
            {"name": "error-traces", "type": "status_code",
             "status_code": {"status_codes": ["ERROR", "UNSET"], "fraction_on_match": 1.0}},
            {"name": "high-latency", "type": "latency",
             "latency": {"threshold_ms": 1000, "fraction_on_match": 0.25}},
            {"name": "default", "type": "probabilistic",
             "probabilistic": {"sampling_percentage": 5}},
        ]
    }))
    .unwrap()
}

#[test]
fn the_seed_config_parses_and_warns_about_unset() {
    let config = seed_config();
    let (_, warnings) = config.build().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("UNSET"), "{warnings:?}");
    assert!(warnings[0].contains("error-traces"), "{warnings:?}");
}

#[test]
fn the_seed_config_behaves_as_written() {
    let (sampler, _) = seed_config().build().unwrap();
    // UNSET and ERROR spans: every one kept (fraction 1).
    assert_share(&sampler, 1.0, |s| s.status = 0);
    assert_share(&sampler, 1.0, |s| s.status = 2);
    // OK and slow: 25 %.
    assert_share(&sampler, 0.25, |s| {
        s.status = 1;
        s.duration_ms = 1000;
    });
    // OK and fast: only the probabilistic floor, 5 %.
    assert_share(&sampler, 0.05, |s| {
        s.status = 1;
        s.duration_ms = 999;
    });
    // The thresholds written say so.
    let batch = batch_of(&[
        SpanSpec {
            trace_id: [0xff; 16],
            status: 1,
            duration_ms: 2000,
            ..Default::default()
        },
        SpanSpec {
            trace_id: [0xff; 16],
            status: 2,
            trace_state: "vendor=1",
            ..Default::default()
        },
        SpanSpec {
            trace_id: [0xff; 16],
            status: 1,
            ..Default::default()
        },
    ]);
    let out = run(&sampler, &batch);
    assert_eq!(out.kept.len(), 3);
    assert_eq!(out.kept.span_trace_state(0), "ot=th:c");
    assert_eq!(out.kept.span_trace_state(1), "ot=th:0,vendor=1");
    // 5 % gets a fifth digit for its leading `f`.
    assert_eq!(out.kept.span_trace_state(2), "ot=th:f3333");
    let labels = sampler.labels();
    let kept_by = |name: &str| out.tally[labels.iter().position(|l| l == name).unwrap()][1];
    assert_eq!(kept_by("high-latency"), 1);
    assert_eq!(kept_by("error-traces"), 1);
    assert_eq!(kept_by("default"), 1);
}

fn policies(json: serde_json::Value) -> PolicySampler {
    let config: SamplingConfig = serde_json::from_value(json).unwrap();
    config.build().unwrap().0
}

#[test]
fn sampling_keeps_its_shares_of_100k_traces() {
    let sampler = policies(serde_json::json!({
        "sampling_percentage": 10,
        "policies": [
            {"name": "checkout", "type": "string_attribute",
             "string_attribute": {"key": "route", "values": ["/checkout", "/pay"]},
             "fraction_on_match": 0.5},
            {"name": "big", "type": "numeric_attribute",
             "numeric_attribute": {"key": "items", "min_value": 100, "max_value": 1000,
                                   "fraction_on_match": 0.8}},
        ]
    }));
    use any_value::Value;
    assert_share(&sampler, 0.10, |_| {});
    assert_share(&sampler, 0.5, |s| {
        s.attributes = vec![("route", Value::StringValue("/pay".into()))];
    });
    assert_share(&sampler, 0.10, |s| {
        s.attributes = vec![("route", Value::StringValue("/home".into()))];
    });
    assert_share(&sampler, 0.8, |s| {
        s.attributes = vec![
            ("route", Value::StringValue("/pay".into())),
            ("items", Value::IntValue(500)),
        ];
    });
    assert_share(&sampler, 0.10, |s| {
        s.attributes = vec![("items", Value::IntValue(1001))];
    });
}

#[test]
fn spans_of_one_trace_matching_the_same_policies_share_a_fate() {
    let (sampler, _) = seed_config().build().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for _ in 0..2000 {
        let trace_id: [u8; 16] = rng.random();
        // Five OK fast spans of one trace, two arriving with other
        // vendors' tracestate: all kept or all dropped.
        let specs: Vec<SpanSpec<'_>> = (0..5)
            .map(|i| SpanSpec {
                trace_id,
                status: 1,
                trace_state: if i % 2 == 0 { "" } else { "v=1" },
                ..Default::default()
            })
            .collect();
        let kept = run(&sampler, &batch_of(&specs)).kept.len();
        assert!(kept == 0 || kept == 5, "{kept} of 5 kept");
    }
}

#[test]
fn explicit_rv_decides_instead_of_the_trace_id() {
    let sampler = policies(serde_json::json!({"sampling_percentage": 50}));
    // Trace id randomness 0 (dropped at 50 %), rv above the threshold.
    let batch = batch_of(&[SpanSpec {
        trace_id: [0; 16],
        trace_state: "ot=rv:80000000000000",
        ..Default::default()
    }]);
    let out = run(&sampler, &batch);
    assert_eq!(out.kept.span_trace_state(0), "ot=rv:80000000000000;th:8");
    let batch = batch_of(&[SpanSpec {
        trace_id: [0xff; 16],
        trace_state: "ot=rv:7fffffffffffff",
        ..Default::default()
    }]);
    assert!(run(&sampler, &batch).kept.is_empty());
}

#[test]
fn rv_outside_the_tracestate_changes_nothing() {
    // "rv:" in an attribute sends the span down the full path, which must
    // decide exactly as the quick one: on the trace id.
    let sampler = policies(serde_json::json!({"sampling_percentage": 50}));
    for (trace_id, kept) in [([0u8; 16], false), ([0xff; 16], true)] {
        let batch = batch_of(&[SpanSpec {
            trace_id,
            attributes: vec![(
                "note",
                any_value::Value::StringValue("rv:ffffffffffffff".into()),
            )],
            ..Default::default()
        }]);
        let out = run(&sampler, &batch);
        assert_eq!(out.kept.len() == 1, kept);
        if kept {
            assert_eq!(out.kept.span_trace_state(0), "ot=th:8");
        }
    }
}

#[test]
fn thresholds_arriving_are_only_raised() {
    let sampler = policies(serde_json::json!({"sampling_percentage": 50}));
    let keep = |ts: &str| {
        let batch = batch_of(&[SpanSpec {
            trace_id: [0xff; 16],
            trace_state: ts,
            ..Default::default()
        }]);
        let out = run(&sampler, &batch);
        assert_eq!(out.kept.len(), 1, "{ts}");
        out.kept.span_trace_state(0).to_string()
    };
    // Sampled harder upstream (25 %): its threshold stays.
    assert_eq!(keep("ot=th:c;x:1"), "ot=th:c;x:1");
    // Sampled more loosely upstream: raised to ours.
    assert_eq!(keep("a=b,ot=th:4"), "ot=th:8,a=b");
    // Inconsistent with the trace's randomness: dropped, ours written.
    assert_eq!(
        keep("ot=rv:90000000000000;th:a"),
        "ot=rv:90000000000000;th:8"
    );
    // Unparseable: decided on the trace id, left alone.
    assert_eq!(keep("Bad=1"), "Bad=1");
}

#[test]
fn unchanged_batches_are_not_reencoded() {
    let sampler = probabilistic(100.0, SamplerMode::Equalizing, 4, true, 0);
    let batch = batch_of(&[SpanSpec {
        trace_id: [9; 16],
        trace_state: "ot=th:0",
        ..Default::default()
    }]);
    let out = run(&sampler, &batch);
    assert_eq!(out.kept.bytes().as_ptr(), batch.bytes().as_ptr());
}

#[test]
fn sampling_config_errors_name_the_key() {
    let err = |json: serde_json::Value| {
        let config: SamplingConfig = serde_json::from_value(json).unwrap();
        config.build().unwrap_err().path
    };
    assert_eq!(
        err(serde_json::json!({"sampling_percentage": 101})),
        "sampling_percentage"
    );
    assert_eq!(
        err(serde_json::json!({"policies": [{"name": "a", "type": "latency"}]})),
        "policies[0].latency"
    );
    assert_eq!(
        err(
            serde_json::json!({"policies": [{"name": "a", "type": "status_code",
            "status_code": {"status_codes": ["WARN"]}}]})
        ),
        "policies[0].status_code.status_codes[0]"
    );
    assert_eq!(
        err(serde_json::json!({"policies": [
            {"name": "a", "type": "probabilistic", "probabilistic": {"sampling_percentage": 1}},
            {"name": "a", "type": "probabilistic", "probabilistic": {"sampling_percentage": 1}}]})),
        "policies[1].name"
    );
    assert_eq!(
        err(
            serde_json::json!({"policies": [{"name": "a", "type": "latency",
            "latency": {"threshold_ms": 1, "fraction_on_match": 2}}]})
        ),
        "policies[0].latency.fraction_on_match"
    );
    let unknown: Result<SamplingConfig, _> = serde_json::from_value(
        serde_json::json!({"policies": [{"name": "a", "type": "rate_limiting"}]}),
    );
    assert!(unknown.is_err());
}

#[test]
fn probabilistic_sampler_config_checks_are_the_collectors() {
    let check = |c: ProbabilisticSamplerConfig| c.validate();
    let base = ProbabilisticSamplerConfig::default;
    assert!(check(base()).is_ok());
    assert!(check(ProbabilisticSamplerConfig {
        sampling_percentage: -1.0,
        ..base()
    })
    .is_err());
    assert!(check(ProbabilisticSamplerConfig {
        sampling_percentage: f32::INFINITY,
        ..base()
    })
    .is_err());
    assert!(check(ProbabilisticSamplerConfig {
        sampling_percentage: 1e-15,
        ..base()
    })
    .is_err());
    assert!(check(ProbabilisticSamplerConfig {
        sampling_precision: 0,
        ..base()
    })
    .is_err());
    assert!(check(ProbabilisticSamplerConfig {
        sampling_precision: 15,
        ..base()
    })
    .is_err());
    assert!(check(ProbabilisticSamplerConfig {
        sampling_percentage: 200.0,
        ..base()
    })
    .is_ok());
    let defaults: ProbabilisticSamplerConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(defaults, base());
    assert!(defaults.fail_closed);
    assert_eq!(defaults.sampling_precision, 4);
    let mode: ProbabilisticSamplerConfig =
        serde_json::from_str(r#"{"mode": "equalizing"}"#).unwrap();
    assert_eq!(mode.mode, Some(SamplerMode::Equalizing));
    assert!(serde_json::from_str::<ProbabilisticSamplerConfig>(r#"{"mode": "other"}"#).is_err());
}

#[test]
fn randomness_of_the_hash_is_14_bits_reflected() {
    // threshold <= randomness must be the legacy bucket < rate test.
    let t = hash_seed_threshold(50.0).unwrap();
    assert_eq!(t.unsigned(), 8192u64 << 42);
    for seed in 0..200u32 {
        let id = [seed as u8; 16];
        let bucket = fnv1a32_seeded(seed, &id) & 0x3fff;
        assert_eq!(
            t.should_sample(hash_seed_randomness(seed, &id)),
            bucket < 8192
        );
    }
    assert_eq!(hash_seed_threshold(0.001), None, "truncates to 0 buckets");
    assert_eq!(hash_seed_threshold(250.0), Threshold::from_unsigned(0));
    assert!(Randomness::MAX.unsigned() < 1 << 56);
}

/// As the collector's `makeSampler` chooses for traces: without `mode`, a
/// non-zero `hash_seed` selects the legacy hash and anything else
/// `proportional`, so a span that arrives already sampled upstream (`th`
/// in its tracestate) is sampled on from that probability, not dropped as
/// `hash_seed` mode drops it.
#[test]
fn without_a_mode_the_seed_chooses_hash_seed_and_otherwise_proportional() {
    let config = |json: &str| serde_json::from_str::<ProbabilisticSamplerConfig>(json).unwrap();
    let only_pct = config(r#"{"sampling_percentage": 50}"#);
    assert_eq!(only_pct.effective_mode(), SamplerMode::Proportional);
    let seeded = config(r#"{"sampling_percentage": 50, "hash_seed": 22}"#);
    assert_eq!(seeded.effective_mode(), SamplerMode::HashSeed);
    let explicit = config(r#"{"sampling_percentage": 50, "hash_seed": 22, "mode": "equalizing"}"#);
    assert_eq!(explicit.effective_mode(), SamplerMode::Equalizing);

    // An upstream tier kept every span (th:0): proportional keeps about
    // half of them, each with the combined threshold; hash_seed mode
    // (fail_closed) keeps none.
    let default_sampler = ProbabilisticSampler::new(&only_pct);
    let seeded_sampler = ProbabilisticSampler::new(&seeded);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let (mut kept_default, mut kept_seeded) = (0, 0);
    for _ in 0..400 {
        let batch = batch_of(&[SpanSpec {
            trace_id: rng.random(),
            trace_state: "ot=th:0",
            ..Default::default()
        }]);
        let out = run(&default_sampler, &batch);
        if !out.kept.is_empty() {
            let ts = tracegate_model::trace_state::TraceState::parse(out.kept.span_trace_state(0))
                .unwrap();
            assert_eq!(ts.ot.threshold.unwrap().tvalue(), "8");
            kept_default += 1;
        }
        kept_seeded += run(&seeded_sampler, &batch).kept.len();
    }
    assert!((150..=250).contains(&kept_default), "{kept_default} of 400");
    assert_eq!(kept_seeded, 0);
}
