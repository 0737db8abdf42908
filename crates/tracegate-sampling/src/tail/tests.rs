//! Tail sampling against the collector's semantics, with a fake clock.
//! The builders are shared with the buffer's hand-over tests.

use std::time::Duration;

use tracegate_model::otlp::{
    any_value, kv, ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans, ScopeSpans, Span,
    Status,
};
use tracegate_model::SpanBatch;

use super::adaptive::FleetSize;
use super::config::PolicyConfig;
use super::policy::{
    fnv1a64, probabilistic_threshold, Decision, PolicySet, PolicyTally, TraceView,
};
use super::*;

// ---------------------------------------------------------------- builders

#[derive(Clone)]
pub(crate) struct SpanSpec {
    trace: TraceId,
    id: u8,
    parent: u8,
    start_ms: u64,
    end_ms: u64,
    status: i32,
    attrs: Vec<KeyValue>,
    resource: Vec<KeyValue>,
    trace_state: String,
    flags: u32,
}

pub(crate) fn tid(n: u64) -> TraceId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    id[8..].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    id
}

pub(crate) fn span(trace: TraceId, id: u8) -> SpanSpec {
    SpanSpec {
        trace,
        id,
        parent: if id == 1 { 0 } else { 1 },
        start_ms: 1_000,
        end_ms: 1_010,
        status: 0,
        attrs: vec![],
        resource: vec![],
        trace_state: String::new(),
        flags: 0,
    }
}

pub(crate) fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}
fn int(v: i64) -> any_value::Value {
    any_value::Value::IntValue(v)
}

impl SpanSpec {
    fn times(mut self, start_ms: u64, end_ms: u64) -> Self {
        self.start_ms = start_ms;
        self.end_ms = end_ms;
        self
    }
    pub(crate) fn error(mut self) -> Self {
        self.status = 2;
        self
    }
    pub(crate) fn attr(mut self, key: &str, v: any_value::Value) -> Self {
        self.attrs.push(kv(key, v));
        self
    }
    pub(crate) fn res(mut self, key: &str, v: any_value::Value) -> Self {
        self.resource.push(kv(key, v));
        self
    }
    pub(crate) fn state(mut self, ts: &str) -> Self {
        self.trace_state = ts.into();
        self
    }
    fn flags(mut self, f: u32) -> Self {
        self.flags = f;
        self
    }
}

/// One `ResourceSpans` per span, so each carries its own resource.
pub(crate) fn batch(spans: &[SpanSpec]) -> SpanBatch {
    let resource_spans = spans
        .iter()
        .map(|sp| ResourceSpans {
            resource: Some(Resource {
                attributes: sp.resource.clone(),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: sp.trace.to_vec(),
                    span_id: vec![sp.id, 0, 0, 0, 0, 0, 0, 1],
                    parent_span_id: if sp.parent == 0 {
                        vec![]
                    } else {
                        vec![sp.parent, 0, 0, 0, 0, 0, 0, 1]
                    },
                    name: format!("span-{}", sp.id),
                    start_time_unix_nano: sp.start_ms * 1_000_000,
                    end_time_unix_nano: sp.end_ms * 1_000_000,
                    attributes: sp.attrs.clone(),
                    trace_state: sp.trace_state.clone(),
                    flags: sp.flags,
                    status: Some(Status {
                        code: sp.status,
                        message: String::new(),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    SpanBatch::try_from_request(&ExportTraceServiceRequest { resource_spans }).expect("valid")
}

pub(crate) fn policies(yaml_like_json: serde_json::Value, first_match: bool) -> PolicySet {
    let configs: Vec<PolicyConfig> = serde_json::from_value(yaml_like_json).expect("config parses");
    PolicySet::build(&configs, first_match).expect("builds").0
}

fn view<'a>(id: &'a TraceId, batches: &'a [SpanBatch]) -> TraceView<'a> {
    TraceView::of_batches(id, batches)
}

/// Evaluates one policy config over the spans.
fn vote(config: serde_json::Value, spans: &[SpanSpec]) -> Decision {
    vote_batches(config, &[batch(spans)])
}

fn vote_batches(config: serde_json::Value, batches: &[SpanBatch]) -> Decision {
    let mut set = policies(serde_json::json!([config]), false);
    let id = batches[0].spans()[0].trace_id;
    set.decide(&view(&id, batches), Duration::ZERO);
    let tally = set.take_tally();
    Decision::ALL
        .into_iter()
        .find(|d| tally[0].traces[d.index()] == 1)
        .expect("one vote")
}

const T: u64 = 7;

// ---------------------------------------------------------------- latency

#[test]
fn latency_threshold_is_exclusive_without_an_upper_bound() {
    let p =
        serde_json::json!({"name": "slow", "type": "latency", "latency": {"threshold_ms": 1000}});
    let at = vote(p.clone(), &[span(tid(T), 1).times(0, 1000)]);
    let under = vote(p.clone(), &[span(tid(T), 1).times(0, 999)]);
    let over = vote(p, &[span(tid(T), 1).times(0, 1001)]);
    // The collector's current rule: strictly longer than threshold_ms,
    // the same lower bound as with upper_threshold_ms.
    assert_eq!(
        (at, under, over),
        (
            Decision::NotSampled,
            Decision::NotSampled,
            Decision::Sampled
        )
    );
}

#[test]
fn latency_spans_the_whole_trace_not_one_span() {
    // No span is long, but the trace is: 100..200 and 1500..1600.
    let p =
        serde_json::json!({"name": "slow", "type": "latency", "latency": {"threshold_ms": 1000}});
    let b1 = batch(&[span(tid(T), 1).times(100, 200)]);
    let b2 = batch(&[span(tid(T), 2).times(1500, 1600)]);
    assert_eq!(vote_batches(p.clone(), &[b1, b2]), Decision::Sampled);
    // The collector's running minimum restarts after a span starting at 0
    // (its "unset" value); tracegate keeps that quirk so both agree.
    let b1 = batch(&[span(tid(T), 1).times(0, 100)]);
    let b2 = batch(&[span(tid(T), 2).times(1500, 1600)]);
    assert_eq!(vote_batches(p, &[b1, b2]), Decision::NotSampled);
}

#[test]
fn latency_upper_bound_is_exclusive_below_inclusive_above() {
    let p = serde_json::json!({"name": "band", "type": "latency",
        "latency": {"threshold_ms": 1000, "upper_threshold_ms": 2000}});
    assert_eq!(
        vote(p.clone(), &[span(tid(T), 1).times(0, 1000)]),
        Decision::NotSampled
    );
    assert_eq!(
        vote(p.clone(), &[span(tid(T), 1).times(0, 2000)]),
        Decision::Sampled
    );
    assert_eq!(
        vote(p, &[span(tid(T), 1).times(0, 2001)]),
        Decision::NotSampled
    );
}

// ---------------------------------------------------------------- span_count

#[test]
fn span_count_bounds_across_several_batches() {
    let p = serde_json::json!({"name": "n", "type": "span_count", "span_count": {"min_spans": 3, "max_spans": 4}});
    let one = |i| batch(&[span(tid(T), i)]);
    assert_eq!(
        vote_batches(p.clone(), &[one(1), one(2)]),
        Decision::NotSampled
    );
    assert_eq!(
        vote_batches(p.clone(), &[one(1), one(2), one(3)]),
        Decision::Sampled
    );
    assert_eq!(
        vote_batches(p.clone(), &[one(1), one(2), one(3), one(4)]),
        Decision::Sampled
    );
    assert_eq!(
        vote_batches(p, &[one(1), one(2), one(3), one(4), one(5)]),
        Decision::NotSampled
    );
    let min_only =
        serde_json::json!({"name": "n", "type": "span_count", "span_count": {"min_spans": 2}});
    assert_eq!(
        vote_batches(min_only, &[one(1), one(2), one(3), one(4), one(5)]),
        Decision::Sampled
    );
}

// ---------------------------------------------------------------- numeric

#[test]
fn numeric_bounds_and_missing_keys() {
    let p = |invert| {
        serde_json::json!({"name": "n", "type": "numeric_attribute",
        "numeric_attribute": {"key": "http.status_code", "min_value": 400, "max_value": 499, "invert_match": invert}})
    };
    let with = |v| span(tid(T), 1).attr("http.status_code", int(v));
    assert_eq!(vote(p(false), &[with(400)]), Decision::Sampled);
    assert_eq!(vote(p(false), &[with(499)]), Decision::Sampled);
    assert_eq!(vote(p(false), &[with(500)]), Decision::NotSampled);
    assert_eq!(vote(p(false), &[with(399)]), Decision::NotSampled);
    assert_eq!(
        vote(p(false), &[span(tid(T), 1)]),
        Decision::NotSampled,
        "missing key"
    );
    // On the resource too.
    assert_eq!(
        vote(
            p(false),
            &[span(tid(T), 1).res("http.status_code", int(404))]
        ),
        Decision::Sampled
    );
    // Inverted: a match is NotSampled, anything else (missing key
    // included) Sampled — plain votes, no veto.
    assert_eq!(vote(p(true), &[with(404)]), Decision::NotSampled);
    assert_eq!(vote(p(true), &[with(200)]), Decision::Sampled);
    assert_eq!(
        vote(p(true), &[span(tid(T), 1)]),
        Decision::Sampled,
        "missing key"
    );
    // A string value reads as 0, as pcommon's Value.Int() does.
    let zero_ok = serde_json::json!({"name": "n", "type": "numeric_attribute",
        "numeric_attribute": {"key": "k", "max_value": 10}});
    assert_eq!(
        vote(zero_ok, &[span(tid(T), 1).attr("k", s("x"))]),
        Decision::Sampled
    );
    // Only a max: no lower bound.
    let max_only = serde_json::json!({"name": "n", "type": "numeric_attribute",
        "numeric_attribute": {"key": "k", "max_value": 10}});
    assert_eq!(
        vote(max_only, &[span(tid(T), 1).attr("k", int(-5_000))]),
        Decision::Sampled
    );
}

#[test]
fn numeric_without_bounds_is_refused() {
    let configs: Vec<PolicyConfig> = serde_json::from_value(serde_json::json!([
        {"name": "n", "type": "numeric_attribute", "numeric_attribute": {"key": "k"}}
    ]))
    .unwrap();
    assert!(PolicySet::build(&configs, false).is_err());
}

// ---------------------------------------------------------------- string

#[test]
fn string_exact_and_regex_matches() {
    let exact = |invert| {
        serde_json::json!({"name": "s", "type": "string_attribute",
        "string_attribute": {"key": "service.name", "values": ["api", "auth"], "invert_match": invert}})
    };
    assert_eq!(
        vote(
            exact(false),
            &[span(tid(T), 1).res("service.name", s("api"))]
        ),
        Decision::Sampled
    );
    assert_eq!(
        vote(
            exact(false),
            &[span(tid(T), 1).attr("service.name", s("auth"))]
        ),
        Decision::Sampled
    );
    assert_eq!(
        vote(
            exact(false),
            &[span(tid(T), 1).res("service.name", s("apiX"))]
        ),
        Decision::NotSampled
    );
    assert_eq!(vote(exact(false), &[span(tid(T), 1)]), Decision::NotSampled);
    assert_eq!(
        vote(
            exact(true),
            &[span(tid(T), 1).res("service.name", s("api"))]
        ),
        Decision::NotSampled
    );
    assert_eq!(
        vote(
            exact(true),
            &[span(tid(T), 1).res("service.name", s("web"))]
        ),
        Decision::Sampled
    );
    assert_eq!(vote(exact(true), &[span(tid(T), 1)]), Decision::Sampled);

    let regex = serde_json::json!({"name": "r", "type": "string_attribute",
        "string_attribute": {"key": "url.path", "values": ["/health"], "enabled_regex_matching": true}});
    // Unanchored, like Go's MatchString.
    assert_eq!(
        vote(
            regex.clone(),
            &[span(tid(T), 1).attr("url.path", s("/api/health/live"))]
        ),
        Decision::Sampled
    );
    assert_eq!(
        vote(
            regex.clone(),
            &[span(tid(T), 1).attr("url.path", s("/metrics"))]
        ),
        Decision::NotSampled
    );
    let anchored = serde_json::json!({"name": "r", "type": "string_attribute",
        "string_attribute": {"key": "url.path", "values": ["^/health$"], "enabled_regex_matching": true}});
    assert_eq!(
        vote(
            anchored,
            &[span(tid(T), 1).attr("url.path", s("/api/health"))]
        ),
        Decision::NotSampled
    );
    // A regex that matches "" matches a resource's non-string value (read as
    // "") but not a span's, as in the collector.
    let any = serde_json::json!({"name": "r", "type": "string_attribute",
        "string_attribute": {"key": "k", "values": [".*"], "enabled_regex_matching": true}});
    assert_eq!(
        vote(any.clone(), &[span(tid(T), 1).res("k", int(1))]),
        Decision::Sampled
    );
    assert_eq!(
        vote(any, &[span(tid(T), 1).attr("k", int(1))]),
        Decision::NotSampled
    );
    // Empty exact values never match.
    let empty = serde_json::json!({"name": "e", "type": "string_attribute",
        "string_attribute": {"key": "k", "values": [""]}});
    assert_eq!(
        vote(empty, &[span(tid(T), 1).res("k", s(""))]),
        Decision::NotSampled
    );
}

#[test]
fn string_regex_cache_keeps_answers_stable() {
    let mut set = policies(
        serde_json::json!([{"name": "r", "type": "string_attribute",
            "string_attribute": {"key": "k", "values": ["^a"], "enabled_regex_matching": true, "cache_max_size": 1}}]),
        false,
    );
    for (value, want) in [
        ("abc", true),
        ("xyz", false),
        ("abc", true),
        ("abc", true),
        ("xyz", false),
    ] {
        let b = [batch(&[span(tid(T), 1).attr("k", s(value))])];
        let id = tid(T);
        assert_eq!(
            set.decide(&view(&id, &b), Duration::ZERO).is_sampled(),
            want,
            "{value}"
        );
    }
}

// ---------------------------------------------------------------- probabilistic

#[test]
fn probabilistic_agrees_with_fnv1a64_on_fixed_vectors() {
    // Derived from the collector's hashTraceID (FNV-1a 64 over salt, then id).
    let ids = [
        hex16("000102030405060708090a0b0c0d0e0f"),
        hex16("ffffffffffffffffffffffffffffffff"),
        hex16("5b8aa5a2d2c872e8321cf37308d69df2"),
    ];
    let want: [(&str, [u64; 3]); 3] = [
        (
            "default-hash-seed",
            [0xa6622cfe5bfb0e0d, 0x17bec3739634fe2d, 0xa5bea68bf4217aba],
        ),
        (
            "my-salt",
            [0x496a49f9c43ba106, 0x73daea262c898636, 0xf8ac198d9d011ab5],
        ),
        (
            "",
            [0x7c84dc9477851775, 0xd6607508f5a1e855, 0x214d9c784e786232],
        ),
    ];
    for (salt, hashes) in want {
        for (id, hash) in ids.iter().zip(hashes) {
            assert_eq!(fnv1a64(salt.as_bytes(), id), hash, "salt {salt:?}");
        }
    }
    // calculateThreshold: MaxUint64 × ratio as a 64-bit big.Float, truncated.
    for (ratio, threshold) in [
        (0.1, 1844674407370955263u64),
        (0.05, 922337203685477631),
        (0.25, 4611686018427387903),
        (0.5, 9223372036854775807),
        (0.001, 18446744073709551),
        (1e-9, 18446744073),
        (0.9999999, 18446742229035145215),
        (1.0, u64::MAX),
        (2.0, u64::MAX),
        (0.0, 0),
    ] {
        assert_eq!(probabilistic_threshold(ratio), threshold, "ratio {ratio}");
    }
    // So, with the default salt at 50 %: 0x17be... <= 2^63-1 samples,
    // 0xa662... does not.
    let p = serde_json::json!({"name": "p", "type": "probabilistic", "probabilistic": {"sampling_percentage": 50}});
    assert_eq!(vote(p.clone(), &[span(ids[1], 1)]), Decision::Sampled);
    assert_eq!(vote(p, &[span(ids[0], 1)]), Decision::NotSampled);
}

fn hex16(s: &str) -> TraceId {
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    id
}

#[test]
fn probabilistic_share_within_tolerance_over_100k_random_ids() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut set = policies(
        serde_json::json!([{"name": "p", "type": "probabilistic",
            "probabilistic": {"sampling_percentage": 5, "hash_salt": "tg"}}]),
        false,
    );
    let b = [batch(&[span(tid(1), 1)])];
    let n = 100_000;
    let mut kept = 0;
    for _ in 0..n {
        let id: TraceId = rng.random();
        if set.decide(&view(&id, &b), Duration::ZERO).is_sampled() {
            kept += 1;
        }
    }
    let p = 0.05;
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    assert!(
        ((kept as f64) - n as f64 * p).abs() < 4.0 * sigma,
        "kept {kept} of {n}"
    );
}

// ---------------------------------------------------------------- other leaves

#[test]
fn status_code_trace_state_boolean_trace_flags_and_ottl() {
    let status = serde_json::json!({"name": "e", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}});
    assert_eq!(
        vote(status.clone(), &[span(tid(T), 1), span(tid(T), 2).error()]),
        Decision::Sampled
    );
    assert_eq!(vote(status, &[span(tid(T), 1)]), Decision::NotSampled);

    let ts = serde_json::json!({"name": "t", "type": "trace_state", "trace_state": {"key": "vendor", "values": ["x"]}});
    assert_eq!(
        vote(ts.clone(), &[span(tid(T), 1).state("a=1,vendor=x")]),
        Decision::Sampled
    );
    assert_eq!(
        vote(ts.clone(), &[span(tid(T), 1).state("vendor=y")]),
        Decision::NotSampled
    );
    // A malformed header matches nothing.
    assert_eq!(
        vote(ts, &[span(tid(T), 1).state("vendor=x,Bad Key=1")]),
        Decision::NotSampled
    );

    let flags = serde_json::json!({"name": "f", "type": "trace_flags"});
    assert_eq!(
        vote(flags.clone(), &[span(tid(T), 1).flags(0x301)]),
        Decision::Sampled
    );
    assert_eq!(
        vote(flags, &[span(tid(T), 1).flags(0x300)]),
        Decision::NotSampled
    );

    let boolean = |invert| {
        serde_json::json!({"name": "b", "type": "boolean_attribute",
        "boolean_attribute": {"key": "force", "value": true, "invert_match": invert}})
    };
    let forced = span(tid(T), 1).attr("force", any_value::Value::BoolValue(true));
    assert_eq!(
        vote(boolean(false), std::slice::from_ref(&forced)),
        Decision::Sampled
    );
    assert_eq!(
        vote(boolean(false), &[span(tid(T), 1)]),
        Decision::NotSampled
    );
    assert_eq!(vote(boolean(true), &[forced]), Decision::NotSampled);
    assert_eq!(vote(boolean(true), &[span(tid(T), 1)]), Decision::Sampled);

    let ottl = serde_json::json!({"name": "o", "type": "ottl_condition", "ottl_condition": {
        "error_mode": "ignore",
        "span": ["attributes[\"http.route\"] == \"/checkout\" and status.code == STATUS_CODE_ERROR",
                 "resource.attributes[\"tier\"] == \"gold\""]}});
    let checkout = span(tid(T), 1).attr("http.route", s("/checkout"));
    assert_eq!(
        vote(ottl.clone(), &[checkout.clone().error()]),
        Decision::Sampled
    );
    assert_eq!(vote(ottl.clone(), &[checkout]), Decision::NotSampled);
    assert_eq!(
        vote(ottl, &[span(tid(T), 1).res("tier", s("gold"))]),
        Decision::Sampled
    );

    let unsupported: Vec<PolicyConfig> = serde_json::from_value(serde_json::json!([
        {"name": "o", "type": "ottl_condition", "ottl_condition": {"span": ["Len(name) > 3"]}}
    ]))
    .unwrap();
    let err = PolicySet::build(&unsupported, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unsupported expression"), "{err}");
}

#[test]
fn and_not_drop_combine_sub_policies() {
    let and = serde_json::json!({"name": "a", "type": "and", "and": {"and_sub_policy": [
        {"name": "svc", "type": "string_attribute", "string_attribute": {"key": "svc", "values": ["api"]}},
        {"name": "err", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]}});
    assert_eq!(
        vote(and.clone(), &[span(tid(T), 1).res("svc", s("api")).error()]),
        Decision::Sampled
    );
    assert_eq!(
        vote(and, &[span(tid(T), 1).res("svc", s("api"))]),
        Decision::NotSampled
    );

    let not = serde_json::json!({"name": "n", "type": "not", "not": {"not_sub_policy":
        {"name": "err", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}}});
    assert_eq!(vote(not.clone(), &[span(tid(T), 1)]), Decision::Sampled);
    assert_eq!(vote(not, &[span(tid(T), 1).error()]), Decision::NotSampled);

    let drop = serde_json::json!({"name": "d", "type": "drop", "drop": {"drop_sub_policy": [
        {"name": "health", "type": "string_attribute",
         "string_attribute": {"key": "url.path", "values": ["/health"], "enabled_regex_matching": true}}]}});
    assert_eq!(
        vote(
            drop.clone(),
            &[span(tid(T), 1).attr("url.path", s("/health"))]
        ),
        Decision::Dropped
    );
    assert_eq!(vote(drop, &[span(tid(T), 1)]), Decision::NotSampled);
}

// ---------------------------------------------------------------- precedence

/// A policy that votes as told, built from real policies: always_sample
/// (Sampled), an impossible latency (NotSampled), a drop of always_sample
/// (Dropped).
fn voter(name: &str, d: Decision) -> serde_json::Value {
    match d {
        Decision::Sampled => serde_json::json!({"name": name, "type": "always_sample"}),
        Decision::NotSampled => {
            serde_json::json!({"name": name, "type": "latency", "latency": {"threshold_ms": 1_000_000}})
        }
        Decision::Dropped => {
            serde_json::json!({"name": name, "type": "drop", "drop": {"drop_sub_policy": [
            {"name": "all", "type": "always_sample"}]}})
        }
    }
}

#[test]
fn precedence_table() {
    use Decision::*;
    let cases: &[(&[Decision], Decision)] = &[
        (&[Sampled], Sampled),
        (&[NotSampled], NotSampled),
        (&[Dropped], Dropped),
        (&[Sampled, Dropped], Dropped),
        (&[Sampled, NotSampled], Sampled),
        (&[NotSampled, Sampled], Sampled),
        (&[NotSampled, Dropped], Dropped),
        (&[NotSampled, NotSampled], NotSampled),
    ];
    let spans = [batch(&[span(tid(T), 1).attr("hit", s("x"))])];
    for (votes, want) in cases {
        let configs: Vec<serde_json::Value> = votes
            .iter()
            .enumerate()
            .map(|(i, d)| voter(&format!("p{i}"), *d))
            .collect();
        let mut set = policies(serde_json::Value::Array(configs), false);
        let id = tid(T);
        let verdict = set.decide(&view(&id, &spans), Duration::ZERO);
        assert_eq!(verdict.decision, *want, "votes {votes:?}");
    }
}

/// The issue's measured case: "every ERROR trace" plus "service.name not
/// in [health]" with `invert_match`. The inverted policy votes only for
/// itself, so each policy keeps its own traces: non-error traces of `api`
/// and error traces of `health` are both kept; only healthy `health`
/// traces go.
#[test]
fn invert_match_flips_its_own_vote_without_veto() {
    let configs = serde_json::json!([
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "not-health", "type": "string_attribute", "string_attribute":
            {"key": "service.name", "values": ["health"], "invert_match": true}},
    ]);
    let mut set = policies(configs, false);
    let id = tid(T);
    let cases = [
        ("api", false, Decision::Sampled, Some(1)),
        ("api", true, Decision::Sampled, Some(0)),
        ("health", true, Decision::Sampled, Some(0)),
        ("health", false, Decision::NotSampled, None),
    ];
    for (service, error, want, by) in cases {
        let mut sp = span(tid(T), 1).res("service.name", s(service));
        if error {
            sp = sp.error();
        }
        let spans = [batch(&[sp])];
        let verdict = set.decide(&view(&id, &spans), Duration::ZERO);
        assert_eq!(verdict.decision, want, "{service} error={error}");
        assert_eq!(verdict.policy, by, "{service} error={error}");
    }
}

#[test]
fn sample_on_first_match_stops_evaluation() {
    let configs = serde_json::json!([
        voter("first", Decision::NotSampled),
        voter("second", Decision::Sampled),
        voter("third", Decision::NotSampled),
    ]);
    let spans = [batch(&[span(tid(T), 1).attr("hit", s("x"))])];
    let id = tid(T);
    let mut all = policies(configs.clone(), false);
    assert_eq!(
        all.decide(&view(&id, &spans), Duration::ZERO).decision,
        Decision::Sampled
    );
    assert_eq!(
        all.take_tally()[2].traces,
        [0, 1, 0],
        "the third policy ran"
    );
    let mut first = policies(configs, true);
    let verdict = first.decide(&view(&id, &spans), Duration::ZERO);
    assert_eq!(verdict.decision, Decision::Sampled);
    assert_eq!(verdict.policy, Some(1));
    let tally = first.take_tally();
    assert_eq!(
        tally[2],
        PolicyTally::default(),
        "the third policy was never evaluated"
    );
    // Drop policies still run first, whatever their position.
    let mut with_drop = policies(
        serde_json::json!([
            voter("keep", Decision::Sampled),
            voter("drop", Decision::Dropped)
        ]),
        true,
    );
    assert_eq!(
        with_drop
            .decide(&view(&id, &spans), Duration::ZERO)
            .decision,
        Decision::Dropped
    );
}

// ---------------------------------------------------------------- rate budgets

#[test]
fn rate_limiting_is_a_token_bucket() {
    let mut set = policies(
        serde_json::json!([{"name": "r", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 10, "burst_capacity": 20}}]),
        false,
    );
    let five = [batch(&(1..=5).map(|i| span(tid(T), i)).collect::<Vec<_>>())];
    let id = tid(T);
    let at = |ms: u64| Duration::from_millis(1_000_000 + ms);
    let mut decide = |ms| set.decide(&view(&id, &five), at(ms)).is_sampled();
    // The bucket starts full (20): four traces of 5 spans pass, the fifth not.
    assert!(decide(0) && decide(0) && decide(0) && decide(0));
    assert!(!decide(0));
    // Half a second refills 5 spans.
    assert!(decide(500));
    assert!(!decide(500));
    // A trace bigger than the burst never passes.
    let big = [batch(
        &(1..=21).map(|i| span(tid(T), i)).collect::<Vec<_>>(),
    )];
    assert!(!set.decide(&view(&id, &big), at(60_000)).is_sampled());
}

#[test]
fn composite_budgets_and_their_reset_each_second() {
    let config = serde_json::json!([{"name": "c", "type": "composite", "composite": {
        "max_total_spans_per_second": 100,
        "policy_order": ["errors", "rest"],
        "composite_sub_policy": [
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "rest", "type": "always_sample"},
            {"name": "unallocated", "type": "always_sample"}],
        "rate_allocation": [{"policy": "errors", "percent": 50}, {"policy": "rest", "percent": 20}]}}]);
    let configs: Vec<PolicyConfig> = serde_json::from_value(config).unwrap();
    let (mut set, warnings) = PolicySet::build(&configs, false).unwrap();
    assert!(
        warnings.iter().any(|w| w.contains("unallocated")),
        "{warnings:?}"
    );
    let ten = |error: bool| {
        [batch(
            &(1..=10)
                .map(|i| {
                    if error {
                        span(tid(T), i).error()
                    } else {
                        span(tid(T), i)
                    }
                })
                .collect::<Vec<_>>(),
        )]
    };
    let id = tid(T);
    let sec = |s: u64, ms: u64| Duration::from_secs(1_700_000_000 + s) + Duration::from_millis(ms);
    let errors = ten(true);
    let plain = ten(false);
    // errors: 50 spans per second = five 10-span traces.
    for _ in 0..5 {
        assert!(set.decide(&view(&id, &errors), sec(0, 0)).is_sampled());
    }
    assert!(!set.decide(&view(&id, &errors), sec(0, 500)).is_sampled());
    // rest: 20 per second; an over-budget error trace does not fall through.
    assert!(set.decide(&view(&id, &plain), sec(0, 600)).is_sampled());
    assert!(set.decide(&view(&id, &plain), sec(0, 700)).is_sampled());
    assert!(!set.decide(&view(&id, &plain), sec(0, 800)).is_sampled());
    // A new second resets every budget.
    assert!(set.decide(&view(&id, &errors), sec(1, 0)).is_sampled());
    assert!(set.decide(&view(&id, &plain), sec(1, 0)).is_sampled());
}

/// Per-shard policy sets ([`PolicySet::build_shards`]) spend one budget
/// for the processor: the same sequence of decisions spread over the
/// shards' sets keeps exactly the traces one set keeps, and shards deciding
/// at once from their own threads never keep more than the budget.
#[test]
fn shard_policy_sets_share_one_budget_and_keep_what_one_set_keeps() {
    let config = serde_json::json!([
        {"name": "r", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 100, "burst_capacity": 200}},
        {"name": "b", "type": "bytes_limiting", "bytes_limiting": {"bytes_per_second": 3000, "burst_capacity": 4000}},
        {"name": "c", "type": "composite", "composite": {
            "max_total_spans_per_second": 50,
            "composite_sub_policy": [
                {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                {"name": "rest", "type": "always_sample"}],
            "rate_allocation": [{"policy": "errors", "percent": 60}, {"policy": "rest", "percent": 40}]}},
        {"name": "guarded", "type": "and", "and": {"and_sub_policy": [
            {"name": "errors-only", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "few", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 30}}]}}]);
    let configs: Vec<PolicyConfig> = serde_json::from_value(config).unwrap();
    let fleet = FleetSize::default();
    let traces: Vec<(TraceId, [SpanBatch; 1])> = (0..400u64)
        .map(|n| {
            let id = tid(1000 + n);
            let spans: Vec<SpanSpec> = (1..=(1 + n % 7) as u8)
                .map(|i| {
                    let s = span(id, i);
                    if n % 5 == 0 {
                        s.error()
                    } else {
                        s
                    }
                })
                .collect();
            (id, [batch(&spans)])
        })
        .collect();
    let at = |n: usize| Duration::from_secs(1_700_000_000) + Duration::from_millis(n as u64 * 7);
    // Each policy's own votes, not only the combined verdict: a budget
    // spent by one policy changes what the next sees.
    let votes = |set: &mut PolicySet, n: usize| {
        let (id, b) = &traces[n];
        let v = set.decide(&view(id, b), at(n));
        let tally = set.take_tally();
        let per_policy: Vec<usize> = tally
            .iter()
            .map(|t| (0..3).find(|&d| t.traces[d] == 1).unwrap_or(9))
            .collect();
        (v.decision, v.policy, v.composite, per_policy)
    };
    let (mut one, _) = PolicySet::build_shards(&configs, false, &fleet, 1).unwrap();
    let alone: Vec<_> = (0..traces.len()).map(|n| votes(&mut one[0], n)).collect();
    let (mut sets, _) = PolicySet::build_shards(&configs, false, &fleet, 3).unwrap();
    assert_eq!(sets.len(), 3);
    let spread: Vec<_> = (0..traces.len())
        .map(|n| votes(&mut sets[(n * 7 + n / 3) % 3], n))
        .collect();
    assert_eq!(spread, alone);
    let kept = alone.iter().filter(|v| v.0 == Decision::Sampled).count();
    assert!(kept > 0 && kept < traces.len(), "kept {kept}");

    // Concurrently: four sets deciding 10-span traces at one instant keep
    // exactly the burst (200 spans = 20 traces) of the first policy, shared.
    let only_rate: Vec<PolicyConfig> = serde_json::from_value(serde_json::json!([
        {"name": "r", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 100, "burst_capacity": 200}}]))
    .unwrap();
    let (sets, _) = PolicySet::build_shards(&only_rate, false, &fleet, 4).unwrap();
    let now = Duration::from_secs(1_700_000_000);
    let kept: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = sets
            .into_iter()
            .enumerate()
            .map(|(k, mut set)| {
                scope.spawn(move || {
                    let id = tid(5000 + k as u64);
                    let ten = [batch(&(1..=10).map(|i| span(id, i)).collect::<Vec<_>>())];
                    (0..50)
                        .filter(|_| set.decide(&view(&id, &ten), now).is_sampled())
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(kept, 20);
}

// ---------------------------------------------------------------- fraction_on_match

#[test]
fn fraction_on_match_is_deterministic_per_trace_and_uses_otep_randomness() {
    let config = serde_json::json!([{"name": "e", "type": "status_code",
        "status_code": {"status_codes": ["ERROR"], "fraction_on_match": 0.25}}]);
    let mut set = policies(config, false);
    let mut kept = 0;
    let n = 20_000u64;
    for i in 0..n {
        let id = tid(i);
        let b = [batch(&[span(id, 1).error()])];
        let first = set.decide(&view(&id, &b), Duration::ZERO).is_sampled();
        let again = set.decide(&view(&id, &b), Duration::ZERO).is_sampled();
        assert_eq!(first, again);
        assert_eq!(first, trace_randomness(&id) >= keep_threshold(0.25));
        kept += u64::from(first);
    }
    let sigma = (n as f64 * 0.25 * 0.75).sqrt();
    assert!(
        (kept as f64 - n as f64 * 0.25).abs() < 4.0 * sigma,
        "kept {kept}"
    );
    // Not matching stays not sampled whatever the randomness.
    let id = hex16("ffffffffffffffffffffffffffffffff");
    let b = [batch(&[span(id, 1)])];
    assert!(!set.decide(&view(&id, &b), Duration::ZERO).is_sampled());
    assert_eq!(trace_randomness(&id), RANDOMNESS_RANGE - 1);
}

#[test]
fn seed_config_tail_sampling_section_parses() {
    let yaml_as_json = serde_json::json!([
        {"name": "error-traces", "type": "status_code", "status_code": {"status_codes": ["ERROR"], "fraction_on_match": 1.0}},
        {"name": "slow-traces", "type": "latency", "latency": {"threshold_ms": 1000, "fraction_on_match": 0.1}},
        {"name": "alphabetical-service", "type": "string_attribute",
         "string_attribute": {"key": "service.name", "values": ["api", "auth", "payment"], "fraction_on_match": 0.5}}
    ]);
    let set = policies(yaml_as_json, false);
    assert_eq!(set.names().len(), 3);
    let typo: Result<Vec<PolicyConfig>, _> = serde_json::from_value(serde_json::json!([
        {"name": "x", "type": "latency", "latency": {"treshold_ms": 5}}
    ]));
    assert!(typo.unwrap_err().to_string().contains("treshold_ms"));
}

// ---------------------------------------------------------------- the buffer

pub(crate) fn settings() -> TraceBufferSettings {
    TraceBufferSettings {
        decision_wait: Duration::from_secs(10),
        ..TraceBufferSettings::default()
    }
}

pub(crate) fn keep_errors() -> PolicySet {
    policies(
        serde_json::json!([{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]),
        false,
    )
}

pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(1_700_000_000 + s)
}

#[test]
fn decides_decision_wait_after_the_first_span_with_all_its_spans() {
    let mut shard = TraceShard::new(settings());
    let mut set = keep_errors();
    let mut out = Released::default();
    let id = tid(1);
    assert!(shard
        .insert(&batch(&[span(id, 1)]), secs(0), &mut set, &mut out)
        .is_none());
    shard.insert(
        &batch(&[span(id, 2).error(), span(tid(2), 1)]),
        secs(5),
        &mut set,
        &mut out,
    );
    let agg = shard.aggregates(&id).unwrap();
    assert_eq!(
        (agg.span_count, agg.any_error, agg.root_seen),
        (2, true, true)
    );
    assert_eq!(shard.next_deadline(), Some(secs(10)));
    shard.poll(secs(9), &mut set, &mut out);
    assert!(out.decided.is_empty());
    shard.poll(secs(10), &mut set, &mut out);
    assert_eq!(out.decided.len(), 1);
    assert_eq!(out.decided[0].reason, DecisionReason::DecisionWait);
    assert_eq!(out.sampled.iter().map(SpanBatch::len).sum::<usize>(), 2);
    assert_eq!(shard.pending_traces(), 1, "trace 2 came later");
    shard.poll(secs(15), &mut set, &mut out);
    assert_eq!(out.decided.len(), 2);
    assert!(!out.decided[1].verdict.is_sampled());
    assert_eq!(shard.stats().spans_not_sampled, 1);
    assert_eq!(shard.buffered_bytes(), 0);
}

/// The buffer judges latency from its aggregates when the times are plain
/// and walks the spans otherwise; either way as the collector's running
/// duration does, including its restart after a span starting at 0.
#[test]
fn buffered_latency_agrees_with_the_span_walk() {
    let slow = || {
        policies(
            serde_json::json!([{"name": "slow", "type": "latency", "latency": {"threshold_ms": 1000}}]),
            false,
        )
    };
    let cases: [(&[(u64, u64)], bool); 5] = [
        (&[(100, 200), (1500, 1600)], true),
        (&[(100, 200), (1000, 1099)], false),
        (&[(1500, 1600), (100, 200)], true),
        // A start of 0 restarts the collector's running minimum.
        (&[(0, 100), (1500, 1600)], false),
        (&[(1500, 1600), (0, 100)], true),
    ];
    for (n, (times, kept)) in cases.into_iter().enumerate() {
        let mut shard = TraceShard::new(settings());
        let mut set = slow();
        let mut out = Released::default();
        let id = tid(n as u64 + 1);
        for (i, &(start, end)) in times.iter().enumerate() {
            let sp = span(id, i as u8 + 1).times(start, end);
            shard.insert(&batch(&[sp]), secs(i as u64), &mut set, &mut out);
        }
        shard.poll(secs(60), &mut set, &mut out);
        let spans: Vec<SpanBatch> = times
            .iter()
            .enumerate()
            .map(|(i, &(start, end))| batch(&[span(id, i as u8 + 1).times(start, end)]))
            .collect();
        let walked = slow().decide(&view(&id, &spans), secs(60)).is_sampled();
        assert_eq!(out.decided.len(), 1, "case {n}");
        assert_eq!(out.decided[0].verdict.is_sampled(), kept, "case {n}");
        assert_eq!(walked, kept, "case {n}");
        let released: usize = out.sampled.iter().map(SpanBatch::len).sum();
        assert_eq!(released, if kept { times.len() } else { 0 }, "case {n}");
    }
}

#[test]
fn root_received_shortens_the_wait_but_never_lengthens_it() {
    let mut shard = TraceShard::new(TraceBufferSettings {
        decision_wait_after_root_received: Duration::from_secs(2),
        ..settings()
    });
    let mut set = keep_errors();
    let mut out = Released::default();
    // Child first, root at 3 s: decided at 5 s.
    shard.insert(
        &batch(&[span(tid(1), 2).error()]),
        secs(0),
        &mut set,
        &mut out,
    );
    shard.insert(&batch(&[span(tid(1), 1)]), secs(3), &mut set, &mut out);
    // Root at 9 s: 9 + 2 > 0 + 10, decided at 10 s as usual.
    shard.insert(
        &batch(&[span(tid(2), 2).error()]),
        secs(0),
        &mut set,
        &mut out,
    );
    shard.insert(&batch(&[span(tid(2), 1)]), secs(9), &mut set, &mut out);
    shard.poll(secs(5), &mut set, &mut out);
    assert_eq!(out.decided.len(), 1);
    assert_eq!(
        (out.decided[0].trace_id, out.decided[0].reason),
        (tid(1), DecisionReason::RootReceived)
    );
    shard.poll(secs(10), &mut set, &mut out);
    assert_eq!(out.decided.len(), 2);
    assert_eq!(out.decided[1].reason, DecisionReason::DecisionWait);
}

#[test]
fn a_reused_slot_is_not_decided_for_the_trace_that_left_it() {
    // With a decision cache a decided trace leaves the table and its slot
    // goes to the next new trace; the queue entries made for the one that
    // left must not decide the newcomer.
    let mut shard = TraceShard::new(TraceBufferSettings {
        decision_wait_after_root_received: Duration::from_secs(1),
        sampled_cache_size: 10,
        non_sampled_cache_size: 10,
        ..settings()
    });
    let mut set = keep_errors();
    let mut out = Released::default();
    // Trace 1: root at 0 s, decided at 1 s (its wait-queue entry for 10 s
    // stays behind), and it leaves the table for the cache.
    shard.insert(&batch(&[span(tid(1), 1)]), secs(0), &mut set, &mut out);
    shard.poll(secs(1), &mut set, &mut out);
    assert_eq!(out.decided.len(), 1);
    assert_eq!(shard.traces_in_table(), 0);
    // Trace 2 at 2 s takes the freed slot: due at 12 s, not at 10 s.
    shard.insert(
        &batch(&[span(tid(2), 2).error()]),
        secs(2),
        &mut set,
        &mut out,
    );
    assert_eq!(shard.table_slots(), 1, "the slot is reused");
    shard.poll(secs(10), &mut set, &mut out);
    assert_eq!(out.decided.len(), 1, "trace 2 waits its own decision_wait");
    assert!(shard.is_pending(&tid(2)));
    shard.poll(secs(12), &mut set, &mut out);
    assert_eq!(out.decided.len(), 2);
    assert_eq!(
        (out.decided[1].trace_id, out.decided[1].reason),
        (tid(2), DecisionReason::DecisionWait)
    );
    assert_eq!(out.sampled.len(), 1);
}

#[test]
fn size_limits_decide_at_once() {
    let mut shard = TraceShard::new(TraceBufferSettings {
        max_spans_per_trace: 3,
        ..settings()
    });
    let mut set = keep_errors();
    let mut out = Released::default();
    let spans: Vec<_> = (1..=4).map(|i| span(tid(1), i).error()).collect();
    shard.insert(&batch(&spans[..2]), secs(0), &mut set, &mut out);
    assert!(out.decided.is_empty());
    shard.insert(&batch(&spans[2..]), secs(1), &mut set, &mut out);
    assert_eq!(out.decided[0].reason, DecisionReason::TooManySpans);
    assert!(
        out.decided[0].verdict.is_sampled(),
        "decided by the policies"
    );
    assert_eq!(shard.stats().early_max_spans, 1);

    let mut shard = TraceShard::new(TraceBufferSettings {
        maximum_trace_size_bytes: 150,
        ..settings()
    });
    let mut out = Released::default();
    for i in 1..=5 {
        shard.insert(
            &batch(&[span(tid(2), i).error()]),
            secs(0),
            &mut set,
            &mut out,
        );
    }
    assert_eq!(out.decided.len(), 1);
    assert_eq!(out.decided[0].reason, DecisionReason::TooLarge);
    assert!(
        !out.decided[0].verdict.is_sampled(),
        "too large is not sampled, as in the collector"
    );
    assert_eq!(shard.stats().traces_too_large, 1);
    assert!(shard.stats().spans_too_large >= 2);
    // Later spans follow the decision (the trace stays in the table).
    let too_large = shard.stats().spans_too_large;
    assert_eq!(
        too_large + shard.stats().spans_late_not_sampled,
        5,
        "every span is accounted for"
    );
}

#[test]
fn num_traces_bound_decides_the_oldest_early() {
    let mut shard = TraceShard::new(TraceBufferSettings {
        num_traces: 3,
        ..settings()
    });
    let mut set = keep_errors();
    let mut out = Released::default();
    for i in 0..10 {
        shard.insert(
            &batch(&[span(tid(i), 1).error()]),
            secs(i),
            &mut set,
            &mut out,
        );
        assert!(shard.traces_in_table() <= 3);
    }
    assert_eq!(shard.stats().early_num_traces, 7);
    let early: Vec<_> = out.decided.iter().map(|d| d.trace_id).collect();
    assert_eq!(early, (0..7).map(tid).collect::<Vec<_>>(), "oldest first");
    assert!(out
        .decided
        .iter()
        .all(|d| d.verdict.is_sampled() && d.reason == DecisionReason::NumTracesFull));
}

#[test]
fn byte_budget_decides_the_oldest_early() {
    // What one more pending trace costs, and the shared resource+scope.
    let mut probe = TraceShard::new(settings());
    let mut set = keep_errors();
    let mut out = Released::default();
    probe.insert(&batch(&[span(tid(0), 1)]), secs(0), &mut set, &mut out);
    let one = probe.buffered_bytes();
    probe.insert(&batch(&[span(tid(1), 1)]), secs(0), &mut set, &mut out);
    let per_trace = probe.buffered_bytes() - one;
    let shared = one - per_trace;
    let budget = shared + 4 * per_trace;
    let mut shard = TraceShard::new(TraceBufferSettings {
        max_buffered_bytes: budget,
        ..settings()
    });
    for i in 0..50 {
        shard.insert(&batch(&[span(tid(i), 1)]), secs(0), &mut set, &mut out);
        assert!(shard.buffered_bytes() <= budget);
    }
    assert_eq!(shard.pending_traces(), 4);
    assert_eq!(shard.stats().early_bytes, 46);
}

#[test]
fn above_a_memory_limit_the_oldest_half_is_decided_early_and_kept_ones_released_whole() {
    // Unpacked, so that every trace costs the same and half the memory is
    // half the traces (a trace packed after its wait costs less than one
    // still holding its requests' buffers).
    let mut shard = TraceShard::new(TraceBufferSettings {
        pack_spans: false,
        ..settings()
    });
    let mut set = keep_errors();
    let mut out = Released::default();
    // Eight traces of two spans each, arriving a second apart, each in
    // two requests; the even ones have an error and are kept.
    for i in 0..8 {
        shard.insert(&batch(&[span(tid(i), 1)]), secs(i), &mut set, &mut out);
        let child = if i % 2 == 0 {
            span(tid(i), 2).error()
        } else {
            span(tid(i), 2)
        };
        shard.insert(&batch(&[child]), secs(i), &mut set, &mut out);
    }
    assert!(out.decided.is_empty());
    let spans_memory_before = shard.buffered_bytes();
    let now = secs(8);
    assert_eq!(shard.decide_oldest_for_memory(now, &mut set, &mut out), 4);
    let early: Vec<_> = out.decided.iter().map(|d| d.trace_id).collect();
    assert_eq!(early, (0..4).map(tid).collect::<Vec<_>>(), "oldest first");
    assert!(out
        .decided
        .iter()
        .all(|d| d.reason == DecisionReason::MemoryLimit && d.reason.is_early()));
    assert!(out
        .decided
        .iter()
        .all(|d| d.waited < Duration::from_secs(10)));
    assert_eq!(DecisionReason::MemoryLimit.as_str(), "memory_limit");
    assert_eq!(shard.stats().early_memory_limit, 4);
    assert_eq!(shard.pending_traces(), 4);
    assert!(shard.buffered_bytes() < spans_memory_before);
    // The kept traces (0 and 2) leave with both their spans; the others
    // are counted as not sampled.
    let mut released: Vec<(TraceId, [u8; 8])> = out
        .sampled
        .iter()
        .flat_map(|b| b.spans().iter().map(|s| (s.trace_id, s.span_id)))
        .collect();
    released.sort();
    let mut expected: Vec<(TraceId, [u8; 8])> = [0, 2]
        .iter()
        .flat_map(|&t| {
            [1u8, 2].map(|s| {
                let batch = batch(&[span(tid(t), s)]);
                (tid(t), batch.spans()[0].span_id)
            })
        })
        .collect();
    expected.sort();
    assert_eq!(released, expected);
    assert_eq!(shard.stats().spans_sampled, 4);
    assert_eq!(shard.stats().spans_not_sampled, 4);
    // The younger half still waits for its time.
    out.clear();
    shard.poll(secs(13), &mut set, &mut out);
    assert!(out.decided.is_empty());
    shard.poll(secs(17), &mut set, &mut out);
    assert_eq!(out.decided.len(), 4);
    assert!(out
        .decided
        .iter()
        .all(|d| d.reason == DecisionReason::DecisionWait));
    assert_eq!(shard.buffered_bytes(), 0);
}

/// Asked to free a number of bytes (a memory limiter at its soft limit),
/// a shard lets its oldest traces give way until it has: a decided one
/// kept for late spans is forgotten, a pending one decided early by the
/// policies and forgotten, so the table itself shrinks too.
#[test]
fn asked_to_free_bytes_the_oldest_traces_give_way() {
    use super::buffer::ENTRY_MEMORY;
    let mut shard = TraceShard::new(settings());
    let mut set = keep_errors();
    let mut out = Released::default();
    // Trace 0 is decided at 10 s (not sampled) and kept for late spans;
    // traces 1..=6 (odd ones with an error) arrive later and wait.
    shard.insert(&batch(&[span(tid(0), 1)]), secs(0), &mut set, &mut out);
    shard.poll(secs(10), &mut set, &mut out);
    assert_eq!(shard.pending_traces(), 0);
    for i in 1..=6 {
        let second = if i % 2 == 1 {
            span(tid(i), 2).error()
        } else {
            span(tid(i), 2)
        };
        shard.insert(
            &batch(&[span(tid(i), 1), second]),
            secs(10),
            &mut set,
            &mut out,
        );
    }
    out.clear();
    let per_trace = shard.buffered_bytes() / 6;
    assert_eq!(
        shard.decide_oldest_to_free(0, secs(11), &mut set, &mut out),
        0
    );
    // The decided trace goes first (forgotten, nothing to decide), then
    // the two oldest pending ones: three table slots and two traces'
    // spans.
    let ask = 3 * ENTRY_MEMORY + 2 * per_trace - per_trace / 2;
    assert_eq!(
        shard.decide_oldest_to_free(ask, secs(11), &mut set, &mut out),
        2
    );
    let early: Vec<_> = out.decided.iter().map(|d| d.trace_id).collect();
    assert_eq!(early, vec![tid(1), tid(2)]);
    assert!(out
        .decided
        .iter()
        .all(|d| d.reason == DecisionReason::MemoryLimit));
    // Trace 1 (an error) leaves whole.
    let kept: Vec<TraceId> = out
        .sampled
        .iter()
        .flat_map(|b| b.spans().iter().map(|s| s.trace_id))
        .collect();
    assert_eq!(kept, vec![tid(1), tid(1)]);
    assert_eq!(shard.stats().early_memory_limit, 2);
    assert_eq!(shard.pending_traces(), 4);
    // Forgotten, not remembered: a late span of trace 2 starts it over.
    out.clear();
    shard.insert(&batch(&[span(tid(2), 3)]), secs(11), &mut set, &mut out);
    assert!(out.late_span_ages.is_empty());
    assert_eq!(shard.pending_traces(), 5);
    // More than is held: everything goes.
    assert_eq!(
        shard.decide_oldest_to_free(u64::MAX, secs(11), &mut set, &mut out),
        5
    );
    assert_eq!(shard.pending_traces(), 0);
    assert_eq!(shard.buffered_bytes(), 0);
}

#[test]
fn block_on_overflow_holds_new_traces_back_until_room() {
    let mut shard = TraceShard::new(TraceBufferSettings {
        num_traces: 2,
        block_on_overflow: true,
        non_sampled_cache_size: 10,
        ..settings()
    });
    let mut set = keep_errors();
    let mut out = Released::default();
    shard.insert(&batch(&[span(tid(1), 1)]), secs(0), &mut set, &mut out);
    shard.insert(&batch(&[span(tid(2), 1)]), secs(1), &mut set, &mut out);
    let held = shard
        .insert(
            &batch(&[span(tid(3), 1), span(tid(1), 2)]),
            secs(2),
            &mut set,
            &mut out,
        )
        .expect("trace 3 is held back");
    assert_eq!(held.len(), 1, "the span of known trace 1 went in");
    assert_eq!(held.spans()[0].trace_id, tid(3));
    assert!(out.decided.is_empty(), "nothing decided early");
    shard.poll(secs(10), &mut set, &mut out);
    assert!(shard.insert(&held, secs(10), &mut set, &mut out).is_none());
    assert_eq!(shard.pending_traces(), 2);
}

/// Late spans after each kind of decision, with and without caches.
#[test]
fn late_spans_follow_the_decision() {
    for caches in [false, true] {
        let size = if caches { 100 } else { 0 };
        let mut shard = TraceShard::new(TraceBufferSettings {
            sampled_cache_size: size,
            non_sampled_cache_size: size,
            ..settings()
        });
        let mut set = errors_and_health_drop();
        let mut out = Released::default();
        let (sampled, not_sampled, dropped) = (tid(1), tid(2), tid(3));
        shard.insert(
            &batch(&[span(sampled, 1).error()]),
            secs(0),
            &mut set,
            &mut out,
        );
        shard.insert(&batch(&[span(not_sampled, 1)]), secs(0), &mut set, &mut out);
        shard.insert(
            &batch(&[span(dropped, 1).error().attr("health", s("y"))]),
            secs(0),
            &mut set,
            &mut out,
        );
        shard.poll(secs(10), &mut set, &mut out);
        assert_eq!(out.decided.len(), 3);
        assert_eq!(out.decided[2].verdict.decision, Decision::Dropped);
        assert_eq!(shard.traces_in_table(), if caches { 0 } else { 3 });
        out.clear();
        shard.insert(
            &batch(&[span(sampled, 2), span(not_sampled, 2), span(dropped, 2)]),
            secs(12),
            &mut set,
            &mut out,
        );
        assert!(
            out.decided.is_empty(),
            "late spans are not re-decided (caches {caches})"
        );
        assert_eq!(out.sampled.len(), 1);
        assert_eq!(out.sampled[0].spans()[0].trace_id, sampled);
        let st = shard.stats();
        if caches {
            assert_eq!(
                (
                    st.cache_released_sampled_spans,
                    st.cache_released_not_sampled_spans
                ),
                (1, 2)
            );
            assert!(out.late_span_ages.is_empty());
        } else {
            assert_eq!((st.late_sampled_spans, st.late_not_sampled_spans), (1, 2));
            assert_eq!(out.late_span_ages, vec![Duration::from_secs(2); 3]);
        }
        assert_eq!(st.new_traces, 3);
    }
}

fn errors_and_health_drop() -> PolicySet {
    policies(
        serde_json::json!([
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "no-health", "type": "drop", "drop": {"drop_sub_policy": [
                {"name": "h", "type": "string_attribute", "string_attribute": {"key": "health", "values": ["y"]}}]}}
        ]),
        false,
    )
}

#[test]
fn a_forgotten_decision_starts_a_new_pending_trace() {
    // A sampled cache of one: the second decision evicts the first.
    let mut shard = TraceShard::new(TraceBufferSettings {
        sampled_cache_size: 1,
        non_sampled_cache_size: 1,
        ..settings()
    });
    let mut set = keep_errors();
    let mut out = Released::default();
    shard.insert(
        &batch(&[span(tid(1), 1).error()]),
        secs(0),
        &mut set,
        &mut out,
    );
    shard.insert(
        &batch(&[span(tid(2), 1).error()]),
        secs(0),
        &mut set,
        &mut out,
    );
    shard.poll(secs(10), &mut set, &mut out);
    assert_eq!(shard.traces_in_table(), 0);
    out.clear();
    shard.insert(&batch(&[span(tid(1), 2)]), secs(11), &mut set, &mut out);
    assert!(out.sampled.is_empty());
    assert_eq!(shard.pending_traces(), 1, "trace 1 is pending again");
    assert_eq!(shard.stats().new_traces, 3);
}

#[test]
fn trace_buffer_routes_by_trace_id_across_shards() {
    let settings = TraceBufferSettings {
        num_traces: 1000,
        ..settings()
    };
    let mut buffer = TraceBuffer::new(&settings, 4);
    let mut set = keep_errors();
    let mut out = Released::default();
    let spans: Vec<_> = (0..200).map(|i| span(tid(i), 1).error()).collect();
    assert!(buffer
        .insert(&batch(&spans), secs(0), &mut set, &mut out)
        .is_empty());
    assert_eq!(buffer.pending_traces(), 200);
    assert!(buffer.shards().iter().all(|s| s.pending_traces() > 20));
    buffer.poll(secs(10), &mut set, &mut out);
    assert_eq!(out.decided.len(), 200);
    assert_eq!(buffer.stats().spans_sampled, 200);
    // Shutdown decides whatever is left.
    buffer.insert(&batch(&spans[..3]), secs(20), &mut set, &mut out);
    buffer.drain(secs(21), false, &mut set, &mut out);
    assert_eq!(buffer.pending_traces(), 0);
}

#[test]
fn fraction_on_match_agrees_with_head_sampling_on_every_trace() {
    use crate::head::{sample_batch, HeadSampler, SamplingConfig};
    for fraction in [0.05, 0.25, 0.5, 0.999] {
        let head: SamplingConfig = serde_json::from_value(serde_json::json!({
            "sampling_percentage": 0,
            "policies": [{"name": "errors", "type": "status_code",
                          "status_code": {"status_codes": ["ERROR"], "fraction_on_match": fraction}}]
        }))
        .unwrap();
        let (head, _) = head.build().unwrap();
        let mut tail = policies(
            serde_json::json!([{"name": "errors", "type": "status_code",
                "status_code": {"status_codes": ["ERROR"], "fraction_on_match": fraction}}]),
            false,
        );
        let spans: Vec<SpanSpec> = (0..4000).map(|i| span(tid(i), 1).error()).collect();
        let b = batch(&spans);
        let kept = sample_batch(&head, head.labels().len(), &b).kept;
        let head_kept: std::collections::HashSet<TraceId> =
            kept.spans().iter().map(|s| s.trace_id).collect();
        for i in 0..4000 {
            let id = tid(i);
            let one = [batch(&[span(id, 1).error()])];
            let tail_kept = tail.decide(&view(&id, &one), Duration::ZERO).is_sampled();
            assert_eq!(
                tail_kept,
                head_kept.contains(&id),
                "fraction {fraction}, trace {i}"
            );
        }
    }
}

#[test]
fn seed_config_tail_sampling_section_behaves_as_written() {
    let mut set = policies(
        serde_json::json!([
            {"name": "error-traces", "type": "status_code", "status_code": {"status_codes": ["ERROR"], "fraction_on_match": 1.0}},
            {"name": "slow-traces", "type": "latency", "latency": {"threshold_ms": 1000, "fraction_on_match": 0.1}},
            {"name": "alphabetical-service", "type": "string_attribute",
             "string_attribute": {"key": "service.name", "values": ["api", "auth", "payment"], "fraction_on_match": 0.5}}
        ]),
        false,
    );
    let (mut kept, mut of) = ([0u32; 4], [0u32; 4]);
    for i in 0..8000u64 {
        let id = tid(i);
        let r = trace_randomness(&id);
        let kind = i % 4;
        let sp = match kind {
            0 => span(id, 1).error().res("service.name", s("web")),
            1 => span(id, 1).times(100, 1600).res("service.name", s("web")),
            2 => span(id, 1).res("service.name", s("auth")),
            _ => span(id, 1).res("service.name", s("web")),
        };
        let want = match kind {
            0 => true,
            1 => r >= keep_threshold(0.1),
            2 => r >= keep_threshold(0.5),
            _ => false,
        };
        let b = [batch(&[sp])];
        let got = set.decide(&view(&id, &b), Duration::ZERO).is_sampled();
        assert_eq!(got, want, "trace {i}");
        of[kind as usize] += 1;
        kept[kind as usize] += u32::from(got);
    }
    // Roughly the written shares: all errors, 10 % slow, 50 % of the listed
    // services, none of the rest.
    assert_eq!(kept[0], of[0]);
    assert!((150..250).contains(&kept[1]), "{kept:?}");
    assert!((900..1100).contains(&kept[2]), "{kept:?}");
    assert_eq!(kept[3], 0);
}

#[test]
fn stored_traces_come_back_whole_in_arrival_order_with_their_resources() {
    use prost::Message;
    let mut shard = TraceShard::new(settings());
    let mut set = keep_errors();
    let mut out = Released::default();
    let id = tid(9);
    // Two requests, each mixing two services and another trace.
    let first = batch(&[
        span(id, 1).res("service.name", s("api")),
        span(tid(10), 1).res("service.name", s("api")),
        span(id, 2).res("service.name", s("db")).attr("k", s("v")),
    ]);
    let second = batch(&[span(id, 3).error().res("service.name", s("api"))]);
    shard.insert(&first, secs(0), &mut set, &mut out);
    shard.insert(&second, secs(1), &mut set, &mut out);
    // The collector's size: the trace's ResourceSpans of each arrival.
    let collector_size: usize = [first.select(&[0, 2]), second.clone()]
        .iter()
        .flat_map(|b| b.to_request().resource_spans)
        .map(|rs| rs.encoded_len())
        .sum();
    assert_eq!(
        shard.aggregates(&id).unwrap().byte_size,
        collector_size as u64
    );
    // "api" arrived in both requests with the same bytes: stored once.
    assert_eq!(shard.headers_len(), 2);
    shard.poll(secs(10), &mut set, &mut out);
    assert_eq!(out.sampled.len(), 1);
    let kept = &out.sampled[0];
    let got: Vec<(u8, Option<&str>)> = (0..kept.len())
        .map(|i| (kept.spans()[i].span_id[0], kept.service_name(i)))
        .collect();
    assert_eq!(
        got,
        vec![(1, Some("api")), (2, Some("db")), (3, Some("api"))]
    );
    assert!(matches!(
        kept.span_attribute(1, "k"),
        Some(tracegate_model::AnyValueRef::String("v"))
    ));
    assert_eq!(kept.spans()[2].status, tracegate_model::StatusCode::Error);
    assert_eq!(shard.pending_traces(), 0);
    assert_eq!(shard.buffered_bytes(), 0, "spans and headers all released");
    assert_eq!(shard.headers_len(), 0);
}

/// Span bodies that waited are packed: the buffer then counts (and holds)
/// well under 0.6 × the bytes it held unpacked, and every trace comes back
/// byte for byte as it would have unpacked — those packed before the
/// shard's dictionary was trained, those packed against it, and a trace
/// with spans arriving after it was packed.
#[test]
fn waiting_spans_are_packed_and_come_back_byte_for_byte() {
    let methods = ["GET", "POST", "PUT"];
    let routes = ["/api/v1/orders/{id}", "/api/v1/users/{id}", "/health"];
    let spans_of = |n: u64, from: u8, to: u8| -> Vec<SpanSpec> {
        (from..=to)
            .map(|i| {
                let k = (n as usize + i as usize) % 3;
                span(tid(n), i)
                    .times(1_000 + n, 1_050 + n + u64::from(i))
                    .res("service.name", s("checkout"))
                    .res("k8s.pod.name", s("checkout-7d9f8b-xk2p4"))
                    .attr("http.request.method", s(methods[k]))
                    .attr("http.route", s(routes[k]))
                    .attr(
                        "url.full",
                        s(&format!(
                            "https://shop.example.com{}?user={}",
                            routes[k],
                            n % 1000
                        )),
                    )
                    .attr("http.response.status_code", int(200))
                    .attr("server.address", s("checkout.shop.svc.cluster.local"))
                    .attr(
                        "user_agent.original",
                        s("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"),
                    )
            })
            .collect()
    };
    let keep_all = || {
        policies(
            serde_json::json!([{"name": "all", "type": "always_sample"}]),
            false,
        )
    };
    // The same traffic into a shard whose traces are decided before they
    // would be packed and one that packs them.
    let traces = 3000u64;
    let mut plain = TraceShard::new(settings());
    let mut packed = TraceShard::new(settings());
    let mut set = keep_all();
    let mut out = Released::default();
    for n in 0..traces {
        let b = batch(&spans_of(n, 1, 8));
        plain.insert(&b, secs(0), &mut set, &mut out);
        packed.insert(&b, secs(0), &mut set, &mut out);
    }
    let unpacked_bytes = packed.buffered_bytes();
    assert_eq!(unpacked_bytes, plain.buffered_bytes());
    let before: Vec<Vec<u8>> = (0..traces)
        .map(|n| packed.assembled(&tid(n)).unwrap().bytes().to_vec())
        .collect();
    // A quarter of a second later everything has waited: packed.
    packed.poll(secs(0) + Duration::from_millis(250), &mut set, &mut out);
    assert!(out.decided.is_empty());
    let (into, took) = packed.packed_bytes();
    assert!(into > 0 && took < into, "{into} {took}");
    let packed_bytes = packed.buffered_bytes();
    assert!(
        packed_bytes * 10 < unpacked_bytes * 6,
        "{packed_bytes} of {unpacked_bytes}"
    );
    // Honest: the bytes counted are the packed ones.
    let after: Vec<Vec<u8>> = (0..traces)
        .map(|n| packed.assembled(&tid(n)).unwrap().bytes().to_vec())
        .collect();
    assert_eq!(after, before);
    // Late arrivals join a packed trace in arrival order (the plain shard
    // takes them before its traces are due to be packed).
    for n in [0, traces / 2, traces - 1] {
        let b = batch(&spans_of(n, 9, 10));
        plain.insert(&b, secs(0), &mut set, &mut out);
        packed.insert(&b, secs(1), &mut set, &mut out);
    }
    assert_eq!(plain.packed_bytes(), (0, 0));
    plain.poll(secs(20), &mut set, &mut out);
    let mut kept_plain = std::mem::take(&mut out.sampled);
    packed.poll(secs(20), &mut set, &mut out);
    let mut kept_packed = std::mem::take(&mut out.sampled);
    let key = |b: &SpanBatch| b.spans()[0].trace_id;
    kept_plain.sort_by_key(key);
    kept_packed.sort_by_key(key);
    assert_eq!(kept_packed.len(), traces as usize);
    for (p, q) in kept_plain.iter().zip(&kept_packed) {
        assert_eq!(p.bytes(), q.bytes());
    }
    assert_eq!(packed.buffered_bytes(), 0);
    // `pack_pending_spans: false` keeps the bodies as they arrived.
    let mut off = TraceShard::new(TraceBufferSettings {
        pack_spans: false,
        ..settings()
    });
    for n in 0..100 {
        off.insert(&batch(&spans_of(n, 1, 8)), secs(0), &mut set, &mut out);
    }
    let held = off.buffered_bytes();
    off.poll(secs(1), &mut set, &mut out);
    assert_eq!(off.packed_bytes(), (0, 0));
    assert_eq!(off.buffered_bytes(), held);
}

// ---------------------------------------------------------------- span-ingest

fn span_ingest() -> TraceBufferSettings {
    TraceBufferSettings {
        span_ingest: true,
        ..settings()
    }
}

/// The collector's span-ingest mode: each arriving batch is judged on its
/// own; the first batch a policy samples releases the whole trace so far,
/// later spans follow that decision, and a trace never sampled is not
/// sampled when its wait ends, without evaluation.
#[test]
fn span_ingest_decides_per_arriving_batch() {
    let mut shard = TraceShard::new(span_ingest());
    let mut set = keep_errors();
    let mut out = Released::default();
    let (kept, never) = (tid(1), tid(2));
    shard.insert(
        &batch(&[span(kept, 1), span(never, 1)]),
        secs(0),
        &mut set,
        &mut out,
    );
    assert!(out.decided.is_empty(), "no batch matched yet");
    assert_eq!(shard.pending_traces(), 2);
    shard.insert(
        &batch(&[span(kept, 2).error()]),
        secs(1),
        &mut set,
        &mut out,
    );
    assert_eq!(out.decided.len(), 1);
    assert_eq!(out.decided[0].trace_id, kept);
    assert_eq!(out.decided[0].reason, DecisionReason::SpanIngest);
    assert_eq!(out.decided[0].verdict.policy, Some(0));
    assert_eq!(
        out.sampled.iter().map(SpanBatch::len).sum::<usize>(),
        2,
        "the earlier batch goes with the one that decided"
    );
    // A later span of the kept trace follows the decision.
    shard.insert(&batch(&[span(kept, 3)]), secs(2), &mut set, &mut out);
    assert_eq!(out.sampled.iter().map(SpanBatch::len).sum::<usize>(), 3);
    let tally = set.take_tally()[0];
    assert_eq!(tally.executions, 3, "one per batch of a pending trace");
    assert_eq!(tally.traces, [1, 2, 0]);
    assert_eq!(tally.spans, [2, 2, 0], "the trace's span count so far");
    // The other trace: not sampled at its deadline, no evaluation.
    shard.poll(secs(10), &mut set, &mut out);
    assert_eq!(out.decided.len(), 2);
    assert_eq!(out.decided[1].trace_id, never);
    assert_eq!(out.decided[1].reason, DecisionReason::DecisionWait);
    assert!(!out.decided[1].verdict.is_sampled());
    assert_eq!(
        set.take_tally()[0].executions,
        0,
        "not evaluated at the deadline"
    );
    assert_eq!(shard.stats().spans_not_sampled, 1);
}

/// A batch only sees its own spans: an error in an earlier batch does not
/// make a later batch match, unlike trace-complete where the whole trace
/// is judged once.
#[test]
fn span_ingest_judges_each_batch_on_its_own_spans() {
    let mut set = policies(
        serde_json::json!([{"name": "and", "type": "and", "and": {"and_sub_policy": [
            {"name": "err", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "svc", "type": "string_attribute", "string_attribute": {"key": "svc", "values": ["api"]}}]}}]),
        false,
    );
    let id = tid(1);
    let batches = [
        batch(&[span(id, 1).error()]),
        batch(&[span(id, 2).attr("svc", s("api"))]),
    ];
    for (span_ingest, kept) in [(false, true), (true, false)] {
        let mut shard = TraceShard::new(TraceBufferSettings {
            span_ingest,
            ..settings()
        });
        let mut out = Released::default();
        for (i, b) in batches.iter().enumerate() {
            shard.insert(b, secs(i as u64), &mut set, &mut out);
        }
        shard.poll(secs(10), &mut set, &mut out);
        assert_eq!(out.decided.len(), 1);
        assert_eq!(
            out.decided[0].verdict.is_sampled(),
            kept,
            "span_ingest={span_ingest}"
        );
    }
}

/// A drop policy that does not match a batch may match a later one, so in
/// span-ingest nothing is sampled while one is configured and unmatched;
/// a batch it matches drops the trace at once.
#[test]
fn span_ingest_holds_back_while_a_drop_policy_may_still_match() {
    let configs = serde_json::json!([
        {"name": "all", "type": "always_sample"},
        {"name": "no-health", "type": "drop", "drop": {"drop_sub_policy": [
            {"name": "health", "type": "string_attribute", "string_attribute": {"key": "url.path", "values": ["/health"]}}]}},
    ]);
    let mut set = policies(configs, false);
    let mut shard = TraceShard::new(span_ingest());
    let mut out = Released::default();
    shard.insert(&batch(&[span(tid(1), 1)]), secs(0), &mut set, &mut out);
    assert!(
        out.decided.is_empty(),
        "always_sample must wait for the drop"
    );
    assert_eq!(
        set.take_tally()[1].executions,
        0,
        "always_sample not evaluated"
    );
    shard.insert(
        &batch(&[span(tid(1), 2).attr("url.path", s("/health"))]),
        secs(1),
        &mut set,
        &mut out,
    );
    assert_eq!(out.decided.len(), 1);
    assert_eq!(out.decided[0].verdict.decision, Decision::Dropped);
    assert_eq!(out.decided[0].verdict.policy, Some(0), "the drop policy");
    assert!(out.sampled.is_empty());
}

#[test]
fn span_ingest_names_a_stateful_policy() {
    let set = policies(
        serde_json::json!([
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "and", "type": "and", "and": {"and_sub_policy": [
                {"name": "budget", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 10}}]}},
        ]),
        false,
    );
    assert_eq!(set.stateful_policy(), Some("and"));
    assert_eq!(keep_errors().stateful_policy(), None);
}

/// The collector's `and` takes a `not` among its sub-policies.
#[test]
fn not_inside_and() {
    let configs = serde_json::json!({"name": "errors-not-health", "type": "and", "and": {"and_sub_policy": [
        {"name": "err", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "not-health", "type": "not", "not": {"not_sub_policy":
            {"name": "health", "type": "string_attribute", "string_attribute": {"key": "service.name", "values": ["health"]}}}}]}});
    let api = span(tid(T), 1).res("service.name", s("api")).error();
    let health = span(tid(T), 1).res("service.name", s("health")).error();
    assert_eq!(vote(configs.clone(), &[api]), Decision::Sampled);
    assert_eq!(vote(configs, &[health]), Decision::NotSampled);
    // Still not inside not or drop.
    let nested: Vec<PolicyConfig> = serde_json::from_value(serde_json::json!([
        {"name": "d", "type": "drop", "drop": {"drop_sub_policy": [
            {"name": "n", "type": "not", "not": {"not_sub_policy": {"name": "a", "type": "always_sample"}}}]}}
    ]))
    .unwrap();
    assert!(PolicySet::build(&nested, false).is_err());
}

/// `num_traces` bounds all shards together: traces that all land on one
/// shard may fill the whole bound (with a per-shard split, 4 shards and
/// `num_traces: 100` would decide early from the 26th trace).
#[test]
fn num_traces_is_one_bound_for_all_shards_under_a_skewed_spread() {
    let settings = TraceBufferSettings {
        num_traces: 100,
        ..settings()
    };
    let shards = 4;
    let mut buffer = TraceBuffer::new(&settings, shards);
    let mut set = keep_errors();
    let mut out = Released::default();
    let skewed: Vec<TraceId> = (0..10_000u64)
        .map(tid)
        .filter(|id| shard_of(id, shards) == 0)
        .take(120)
        .collect();
    let spans: Vec<_> = skewed[..100].iter().map(|&id| span(id, 1)).collect();
    buffer.insert(&batch(&spans), secs(0), &mut set, &mut out);
    assert_eq!(buffer.pending_traces(), 100);
    assert_eq!(buffer.stats().early_num_traces, 0, "room for all 100");
    // Past the bound the oldest gives way, one per new trace.
    let more: Vec<_> = skewed[100..].iter().map(|&id| span(id, 1)).collect();
    buffer.insert(&batch(&more), secs(1), &mut set, &mut out);
    assert_eq!(buffer.pending_traces(), 100);
    assert_eq!(buffer.stats().early_num_traces, 20);
    assert_eq!(buffer.shards()[0].traces_in_all_tables(), 100);
    // Another shard's first trace is taken even though the bound is full:
    // it has nothing of its own to make give way.
    let elsewhere = (0..10_000u64)
        .map(tid)
        .find(|id| shard_of(id, shards) == 1)
        .unwrap();
    buffer.insert(&batch(&[span(elsewhere, 1)]), secs(2), &mut set, &mut out);
    assert_eq!(buffer.pending_traces(), 101);
    assert_eq!(buffer.shards()[1].pending_traces(), 1);
}

// ---------------------------------------------------------------- small ones

/// Go's RE2 gives `\d \w \s \b` their ASCII meaning; `.` and the rest keep
/// matching any character.
#[test]
fn regex_perl_classes_are_ascii_as_in_re2() {
    let matches = |pattern: &str, value: &str| {
        let p = serde_json::json!({"name": "r", "type": "string_attribute", "string_attribute":
            {"key": "k", "values": [pattern], "enabled_regex_matching": true}});
        vote(p, &[span(tid(T), 1).attr("k", s(value))]) == Decision::Sampled
    };
    assert!(matches(r"^\d+$", "123"));
    assert!(!matches(r"^\d+$", "١٢٣"), "Arabic-Indic digits are not \\d");
    assert!(matches(r"^\D$", "١"), "but are \\D");
    assert!(!matches(r"^\w+$", "café"));
    assert!(matches(r"^\w+$", "cafe_1"));
    assert!(matches(r"^[\w-]+$", "a-b_c"), "inside a class too");
    assert!(!matches(r"^[\w-]+$", "é-b"));
    assert!(!matches(r"\s", "a\u{a0}b"), "no-break space is not \\s");
    assert!(!matches(r"\s", "a\u{b}b"), "RE2's \\s has no \\v");
    assert!(matches(r"\s", "a\tb"));
    assert!(matches(r"\bfoo\b", "éfooé"), "é is not a word character");
    assert!(matches(r"^.$", "é"), ". is still one character");
    assert!(
        matches(r"^\\d$", "\\d"),
        "an escaped backslash stays literal"
    );
    assert_eq!(
        policy::re2_perl_classes(r"[^\d\s]\b\x41\pL"),
        r"[^[0-9][\t\n\f\r ]](?-u:\b)\x41\pL"
    );
}

/// `bytes_limiting` charges what the collector's `TracesSize` counts: the
/// trace's `ResourceSpans` framed as fields of a `TracesData`, a little
/// more than the `ResourceSpans` alone (`maximum_trace_size_bytes`).
#[test]
fn bytes_limiting_charges_the_traces_size() {
    let spans = [span(tid(1), 1), span(tid(1), 2).error()];
    let b = batch(&spans);
    let mut shard = TraceShard::new(settings());
    let mut set = keep_errors();
    let mut out = Released::default();
    shard.insert(&b, secs(0), &mut set, &mut out);
    let agg = shard.aggregates(&tid(1)).unwrap();
    assert_eq!(agg.traces_size, b.encoded_len() as u64);
    assert!(agg.byte_size < agg.traces_size);
    // A bucket of exactly the ResourceSpans size refuses the trace.
    let burst = agg.byte_size;
    let mut limited = policies(
        serde_json::json!([{"name": "b", "type": "bytes_limiting",
            "bytes_limiting": {"bytes_per_second": 1, "burst_capacity": burst}}]),
        false,
    );
    let mut shard = TraceShard::new(settings());
    shard.insert(&b, secs(0), &mut limited, &mut out);
    out.clear();
    shard.poll(secs(10), &mut limited, &mut out);
    assert!(!out.decided[0].verdict.is_sampled());
    let mut roomy = policies(
        serde_json::json!([{"name": "b", "type": "bytes_limiting",
            "bytes_limiting": {"bytes_per_second": 1, "burst_capacity": agg.traces_size}}]),
        false,
    );
    let mut shard = TraceShard::new(settings());
    shard.insert(&b, secs(0), &mut roomy, &mut out);
    out.clear();
    shard.poll(secs(10), &mut roomy, &mut out);
    assert!(out.decided[0].verdict.is_sampled());
}

#[test]
fn composite_names_the_sub_policy_that_sampled() {
    let mut set = policies(
        serde_json::json!([{"name": "c", "type": "composite", "composite": {
            "max_total_spans_per_second": 100,
            "composite_sub_policy": [
                {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                {"name": "rest", "type": "always_sample"}],
            "rate_allocation": [{"policy": "errors", "percent": 50}, {"policy": "rest", "percent": 50}]}}]),
        false,
    );
    assert_eq!(
        set.composite_sub_names(),
        vec![vec!["errors".to_string(), "rest".to_string()]]
    );
    let id = tid(T);
    let error = [batch(&[span(id, 1).error()])];
    let plain = [batch(&[span(id, 1)])];
    let at = Duration::from_secs(5);
    assert_eq!(set.decide(&view(&id, &error), at).composite, Some((0, 0)));
    assert_eq!(set.decide(&view(&id, &plain), at).composite, Some((0, 1)));
}

// ------------------------------------------------ hooks for the tail journal

fn pin(n: u32) -> Pin {
    std::sync::Arc::new(n)
}

fn pin_ids(pins: &[Pin]) -> Vec<u32> {
    let mut ids: Vec<u32> = pins
        .iter()
        .map(|p| *p.downcast_ref::<u32>().expect("a test pin"))
        .collect();
    ids.sort_unstable();
    ids
}

#[test]
fn a_pending_trace_holds_the_pins_of_its_inserts_until_its_spans_go() {
    let mut shard = TraceShard::new(settings());
    let mut set = keep_errors();
    let mut out = Released::default();
    let (a, b) = (tid(1), tid(2));
    shard.set_pin(Some(pin(1)));
    shard.insert(
        &batch(&[span(a, 1), span(b, 1)]),
        secs(0),
        &mut set,
        &mut out,
    );
    shard.set_pin(Some(pin(2)));
    shard.insert(
        &batch(&[span(a, 2), span(a, 3)]),
        secs(1),
        &mut set,
        &mut out,
    );
    shard.set_pin(None);
    shard.insert(&batch(&[span(b, 2)]), secs(2), &mut set, &mut out);
    assert_eq!(
        pin_ids(&shard.pending_pins().cloned().collect::<Vec<_>>()),
        [1, 1, 2]
    );
    assert!(out.released_pins.is_empty(), "nothing decided yet");
    shard.poll(secs(10), &mut set, &mut out);
    assert_eq!(out.decided.len(), 2);
    assert_eq!(
        pin_ids(&out.released_pins),
        [1, 1, 2],
        "each trace hands back each insert's pin once"
    );
    assert_eq!(shard.pending_pins().count(), 0);
    // A late span of a decided trace holds no pin.
    out.clear();
    shard.set_pin(Some(pin(3)));
    shard.insert(&batch(&[span(a, 4)]), secs(11), &mut set, &mut out);
    assert_eq!(shard.pending_pins().count(), 0);
    // Dropped at shutdown: the pins come back too.
    shard.insert(&batch(&[span(tid(9), 1)]), secs(12), &mut set, &mut out);
    shard.drain(secs(13), true, &mut set, &mut out);
    assert_eq!(pin_ids(&out.released_pins), [3]);
}

#[test]
fn remembered_decisions_round_trip_through_another_shard() {
    for caches in [false, true] {
        let size = if caches { 100 } else { 0 };
        let with_caches = TraceBufferSettings {
            sampled_cache_size: size,
            non_sampled_cache_size: size,
            ..settings()
        };
        let mut shard = TraceShard::new(with_caches.clone());
        let mut set = keep_errors();
        let mut out = Released::default();
        let (kept, dropped) = (tid(1), tid(2));
        shard.insert(
            &batch(&[span(kept, 1).error()]),
            secs(0),
            &mut set,
            &mut out,
        );
        shard.insert(&batch(&[span(dropped, 1)]), secs(0), &mut set, &mut out);
        shard.poll(secs(10), &mut set, &mut out);
        let remembered = shard.remembered_decisions();
        assert_eq!(remembered.len(), 2, "caches {caches}");
        let policy = if caches { Some(0) } else { None };
        assert!(remembered.contains(&KnownDecision {
            trace_id: kept,
            sampled: true,
            policy,
            tail: None,
        }));

        // A new shard (a restarted process) told the same decisions lets
        // late spans follow them without deciding again.
        let mut restarted = TraceShard::new(with_caches);
        for d in remembered {
            restarted.remember_decision(d, secs(20));
        }
        out.clear();
        restarted.insert(
            &batch(&[span(kept, 2), span(dropped, 2)]),
            secs(21),
            &mut set,
            &mut out,
        );
        assert!(out.decided.is_empty(), "caches {caches}");
        assert_eq!(restarted.pending_traces(), 0);
        assert_eq!(out.sampled.len(), 1);
        assert_eq!(out.sampled[0].spans()[0].trace_id, kept);
    }
}

#[test]
fn shedding_for_storage_decides_the_oldest_half_early() {
    let mut shard = TraceShard::new(settings());
    let mut set = keep_errors();
    let mut out = Released::default();
    for n in 0..10 {
        shard.set_pin(Some(pin(n)));
        shard.insert(
            &batch(&[span(tid(n.into()), 1)]),
            secs(n.into()),
            &mut set,
            &mut out,
        );
    }
    let decided = shard.decide_oldest_for_storage(secs(10), &mut set, &mut out);
    assert!((4..=6).contains(&decided), "{decided}");
    assert_eq!(shard.stats().early_storage_full, decided);
    assert!(out
        .decided
        .iter()
        .all(|d| d.reason == DecisionReason::StorageFull));
    // The oldest went first, and their pins with them.
    let released = pin_ids(&out.released_pins);
    assert_eq!(released, (0..decided as u32).collect::<Vec<_>>());
}

#[test]
fn traces_that_leave_without_a_decision_kept_are_listed_with_their_pins() {
    let mut set = keep_errors();
    let mut out = Released::default();
    let mut shard = TraceShard::new(settings());
    shard.set_pin(Some(pin(1)));
    shard.insert(
        &batch(&[span(tid(1), 1), span(tid(2), 1), span(tid(3), 1)]),
        secs(0),
        &mut set,
        &mut out,
    );
    shard.set_pin(Some(pin(2)));
    shard.insert(&batch(&[span(tid(1), 2)]), secs(1), &mut set, &mut out);
    shard.set_pin(None);
    // Handed over: trace 1 leaves with both its pins.
    let mut taken = Vec::new();
    assert_eq!(
        shard.take_pending_where(|id| *id == tid(1), &mut taken, &mut out),
        1
    );
    assert_eq!(out.forgotten, [tid(1)]);
    assert_eq!(pin_ids(&out.released_pins), [1, 2]);
    assert!(out.decided.is_empty());
    out.clear();
    assert!(out.forgotten.is_empty() && out.released_pins.is_empty());

    // Traces 2 and 3 decided and kept in the table (caches off), trace 4
    // pending: room asked for forgets all three, oldest first, and hands
    // back trace 4's pin; trace 4's early decision is listed too.
    shard.poll(secs(10), &mut set, &mut out);
    assert_eq!(out.decided.len(), 2);
    out.clear();
    shard.set_pin(Some(pin(3)));
    shard.insert(&batch(&[span(tid(4), 1)]), secs(10), &mut set, &mut out);
    shard.set_pin(None);
    assert_eq!(shard.traces_in_table(), 3);
    shard.decide_oldest_to_free(u64::MAX, secs(11), &mut set, &mut out);
    assert_eq!(out.forgotten, [tid(2), tid(3), tid(4)]);
    assert_eq!(pin_ids(&out.released_pins), [3]);
    assert_eq!(out.decided.len(), 1);
    assert_eq!(shard.traces_in_table(), 0);
}
