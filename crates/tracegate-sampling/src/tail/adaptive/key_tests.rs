//! The `dynamic` key recorded as a trace arrives against the key read from
//! its assembled spans: the same for every order of arrival, and a dropped
//! trace is never assembled.

use std::time::Duration;

use tracegate_model::otlp::any_value::Value;

use super::key::{KeyFields, RecordedKey, MAX_RECORDED_KEY_BYTES};
use crate::tail::config::PolicyConfig;
use crate::tail::policy::{PolicySet, TraceView, Verdict};
use crate::tail::store::ASSEMBLED;
use crate::tail::tests::{batch, s, span, tid, SpanSpec};
use crate::tail::{Decider, Released, TraceBufferSettings, TraceId, TraceShard};

const FIELDS: [&str; 3] = ["service.name", "http.route", "http.response.status_code"];

fn dynamic_set(goal_sample_rate: u32) -> PolicySet {
    let configs: Vec<PolicyConfig> = serde_json::from_value(serde_json::json!([
        {"name": "by-route", "type": "dynamic", "dynamic": {
            "key_fields": FIELDS, "goal_sample_rate": goal_sample_rate,
            "adjustment_interval": "1s"}},
        // A second dynamic policy sharing one field: each reads its own
        // fields out of one record.
        {"name": "by-user", "type": "dynamic", "dynamic": {
            "key_fields": ["enduser.id", "http.route"], "goal_sample_rate": goal_sample_rate,
            "adjustment_interval": "1s"}},
    ]))
    .expect("parses");
    PolicySet::build(&configs, false).expect("builds").0
}

/// The same policies, but nothing recorded as spans arrive: every key is
/// read from the assembled trace, as before keys were recorded.
struct ReadSpans(PolicySet);

impl Decider for ReadSpans {
    fn decide(&mut self, trace: &TraceView<'_>, now: Duration) -> Verdict {
        assert!(trace.recorded_key.is_none());
        self.0.decide(trace, now)
    }

    fn decide_span_ingest(&mut self, trace: &TraceView<'_>, now: Duration) -> Option<Verdict> {
        self.0.decide_span_ingest(trace, now)
    }
}

fn settings() -> TraceBufferSettings {
    TraceBufferSettings {
        decision_wait: Duration::from_secs(10),
        ..Default::default()
    }
}

fn int(n: i64) -> Value {
    Value::IntValue(n)
}

/// A span of trace `n` with a route, a status code and a service.
fn sp(n: u64, id: u8, route: &str, status: i64, service: &str) -> SpanSpec {
    span(tid(n), id)
        .attr("http.route", s(route))
        .attr("http.response.status_code", int(status))
        .res("service.name", s(service))
}

/// The keys (one per dynamic policy) built from what the shard recorded
/// for trace `n`, and whether it was recorded from a root span.
fn recorded_keys(shard: &TraceShard, policies: &mut PolicySet, n: u64) -> (Vec<String>, bool) {
    let id = tid(n);
    let key: &RecordedKey = shard.recorded_key(&id).expect("recorded");
    let values = key.values().expect("within the cap");
    let view = TraceView::of_batches(&id, &[]).with_recorded_key(values);
    (policies.dynamic_keys(&view), key.from_root())
}

/// The keys read from trace `n`'s assembled spans, as without recording.
fn keys_from_spans(shard: &TraceShard, policies: &mut PolicySet, n: u64) -> Vec<String> {
    let id = tid(n);
    let assembled = [shard.assembled(&id).expect("pending")];
    policies.dynamic_keys(&TraceView::of_batches(&id, &assembled))
}

/// Inserts each arrival of trace `n` in turn and checks after each that
/// the recorded key is the key read from the spans so far; returns the
/// final keys and whether they came from a root.
fn arrive(arrivals: &[Vec<SpanSpec>], n: u64) -> (Vec<String>, bool) {
    let mut policies = dynamic_set(10);
    let mut shard = TraceShard::new(settings());
    let mut out = Released::default();
    let mut last = (Vec::new(), false);
    for (k, spans) in arrivals.iter().enumerate() {
        let at = Duration::from_millis(k as u64);
        shard.insert(&batch(spans), at, &mut policies, &mut out);
        let recorded = recorded_keys(&shard, &mut policies, n);
        let read = keys_from_spans(&shard, &mut policies, n);
        assert_eq!(recorded.0, read, "after arrival {k}");
        last = recorded;
    }
    last
}

#[test]
fn a_root_first_trace_records_the_root_key() {
    let (keys, from_root) = arrive(
        &[vec![
            sp(1, 1, "/checkout", 200, "shop").attr("enduser.id", s("u1")),
            sp(1, 2, "/child", 500, "db"),
        ]],
        1,
    );
    assert_eq!(keys, ["shop,/checkout,200", "u1,/checkout"]);
    assert!(from_root);
}

#[test]
fn a_root_arriving_late_replaces_the_first_spans_key() {
    let (keys, from_root) = arrive(
        &[
            vec![
                sp(2, 2, "/child", 500, "db"),
                sp(2, 3, "/other", 404, "cache"),
            ],
            vec![sp(2, 4, "/more", 503, "queue")],
            vec![
                sp(2, 5, "/late", 200, "late"),
                sp(2, 1, "/checkout", 201, "shop"),
            ],
            // A second root, or more spans, change nothing.
            vec![sp(2, 1, "/again", 202, "again"), sp(2, 6, "/x", 1, "x")],
        ],
        2,
    );
    assert_eq!(keys, ["shop,/checkout,201", ",/checkout"]);
    assert!(from_root);
}

#[test]
fn a_trace_without_a_root_keeps_its_first_spans_key() {
    let (keys, from_root) = arrive(
        &[
            vec![
                sp(3, 3, "/first", 200, "front").attr("enduser.id", s("u3")),
                sp(3, 2, "/second", 500, "db"),
            ],
            vec![sp(3, 4, "/third", 404, "cache")],
        ],
        3,
    );
    assert_eq!(keys, ["front,/first,200", "u3,/first"]);
    assert!(!from_root);
}

#[test]
fn values_of_every_kind_are_written_as_the_spans_give_them() {
    // A span attribute wins over its resource's; absent is empty; a comma
    // in a value stays (as it does when read from the spans).
    let root = span(tid(4), 1)
        .attr("http.route", Value::BoolValue(true))
        .attr("http.response.status_code", Value::DoubleValue(2.5))
        .attr("service.name", s("span-wins"))
        .res("service.name", s("resource"))
        .res("enduser.id", s("a,b"));
    let (keys, _) = arrive(&[vec![span(tid(4), 2)], vec![root]], 4);
    assert_eq!(keys, ["span-wins,true,2.5", "a,b,true"]);
}

#[test]
fn a_key_over_the_cap_is_read_from_the_spans_and_counted() {
    let mut policies = dynamic_set(1);
    let mut shard = TraceShard::new(settings());
    let mut out = Released::default();
    // Exactly at the cap: a length byte for each of the four fields the
    // two policies read, the route, the other values empty.
    let fits = "r".repeat(MAX_RECORDED_KEY_BYTES - 4);
    let long = "r".repeat(MAX_RECORDED_KEY_BYTES);
    shard.insert(
        &batch(&[span(tid(5), 1).attr("http.route", s(&fits))]),
        Duration::ZERO,
        &mut policies,
        &mut out,
    );
    // Too long at the first span; the late root's key fits.
    shard.insert(
        &batch(&[span(tid(6), 2).attr("http.route", s(&long))]),
        Duration::ZERO,
        &mut policies,
        &mut out,
    );
    shard.insert(
        &batch(&[span(tid(7), 1).attr("http.route", s(&long))]),
        Duration::ZERO,
        &mut policies,
        &mut out,
    );
    assert!(shard.recorded_key(&tid(6)).unwrap().over_cap());
    shard.insert(
        &batch(&[span(tid(6), 1).attr("http.route", s("/short"))]),
        Duration::ZERO,
        &mut policies,
        &mut out,
    );
    let (keys, _) = recorded_keys(&shard, &mut policies, 5);
    assert_eq!(keys, [format!(",{fits},"), format!(",{fits}")]);
    assert_eq!(recorded_keys(&shard, &mut policies, 6).0[0], ",/short,");
    let over = shard.recorded_key(&tid(7)).expect("marked");
    assert!(over.over_cap() && over.values().is_none());
    assert!(over.memory() < 8);
    assert_eq!(
        keys_from_spans(&shard, &mut policies, 7)[0],
        format!(",{long},")
    );
    shard.poll(Duration::from_secs(60), &mut policies, &mut out);
    assert_eq!(out.decided.len(), 3);
    assert_eq!(shard.stats().keys_over_cap, 1);
}

#[test]
fn recorded_keys_count_as_buffered_memory_until_the_decision() {
    let spans = [sp(8, 1, "/checkout", 200, "shop")];
    let mut with = TraceShard::new(settings());
    let mut without = TraceShard::new(settings());
    let mut out = Released::default();
    let mut policies = dynamic_set(10);
    with.insert(&batch(&spans), Duration::ZERO, &mut policies, &mut out);
    let mut read = ReadSpans(dynamic_set(10));
    without.insert(&batch(&spans), Duration::ZERO, &mut read, &mut out);
    let key = with.recorded_key(&tid(8)).expect("recorded").memory();
    assert!(without.recorded_key(&tid(8)).is_none());
    assert_eq!(with.buffered_bytes(), without.buffered_bytes() + key);
    with.poll(Duration::from_secs(60), &mut policies, &mut out);
    assert_eq!(with.buffered_bytes(), 0);
}

#[test]
fn fixed_policies_record_nothing() {
    let configs: Vec<PolicyConfig> = serde_json::from_value(serde_json::json!([
        {"name": "p", "type": "probabilistic", "probabilistic": {"sampling_percentage": 5}},
        {"name": "t", "type": "throughput"},
    ]))
    .expect("parses");
    let mut policies = PolicySet::build(&configs, false).expect("builds").0;
    assert!(policies.key_fields().is_none());
    let mut shard = TraceShard::new(settings());
    let mut out = Released::default();
    shard.insert(
        &batch(&[sp(9, 1, "/a", 200, "shop")]),
        Duration::ZERO,
        &mut policies,
        &mut out,
    );
    assert!(shard.recorded_key(&tid(9)).is_none());
}

/// Trace `n`'s arrivals in one of three shapes: root first, root last, or
/// no root; over 5 routes and 3 services.
fn traffic(n: u64) -> Vec<Vec<SpanSpec>> {
    let route = |k: u64| format!("/route/{}", k % 5);
    let service = |k: u64| format!("svc-{}", k % 3);
    let a = sp(n, 2, &route(n + 1), 200, &service(n + 1));
    let b = sp(n, 3, &route(n + 2), 500, &service(n + 2));
    let root = sp(n, 1, &route(n), 200 + (n % 3) as i64, &service(n))
        .attr("enduser.id", s(&format!("u{}", n % 2)));
    match n % 3 {
        0 => vec![vec![root, a], vec![b]],
        1 => vec![vec![a], vec![b, root]],
        _ => vec![vec![a], vec![b]],
    }
}

/// Runs 6 000 traces of [`traffic`] through a shard, decided as they come
/// due; returns each decision and the traces assembled.
fn run(decider: &mut impl Decider) -> (Vec<(TraceId, Verdict)>, Vec<Vec<u8>>, u64) {
    let mut shard = TraceShard::new(TraceBufferSettings {
        decision_wait: Duration::from_millis(50),
        ..Default::default()
    });
    let mut out = Released::default();
    let assembled_before = ASSEMBLED.with(|c| c.get());
    for n in 0..6_000u64 {
        for spans in traffic(n) {
            // Each arrival its own insert; a root may come last.
            shard.insert(&batch(&spans), Duration::from_millis(n), decider, &mut out);
        }
        shard.poll(Duration::from_millis(n), decider, &mut out);
    }
    shard.poll(Duration::from_secs(60), decider, &mut out);
    let assembled = ASSEMBLED.with(|c| c.get()) - assembled_before;
    let decided = out
        .decided
        .iter()
        .map(|d| (d.trace_id, d.verdict))
        .collect();
    let kept = out.sampled.iter().map(|b| b.bytes().to_vec()).collect();
    (decided, kept, assembled)
}

/// Checks at every decision that the keys built from the recorded values
/// are those read from the assembled spans, then decides from the record.
struct Compare(PolicySet);

impl Decider for Compare {
    fn decide(&mut self, trace: &TraceView<'_>, now: Duration) -> Verdict {
        assert!(trace.recorded_key.is_some());
        let recorded = self.0.dynamic_keys(trace);
        let mut from_spans = *trace;
        from_spans.recorded_key = None;
        assert_eq!(
            recorded,
            self.0.dynamic_keys(&from_spans),
            "trace {:?}",
            trace.trace_id
        );
        self.0.decide(trace, now)
    }

    fn decide_span_ingest(&mut self, trace: &TraceView<'_>, now: Duration) -> Option<Verdict> {
        self.0.decide_span_ingest(trace, now)
    }

    fn key_fields(&self) -> Option<&KeyFields> {
        self.0.key_fields()
    }
}

#[test]
fn every_decision_reads_the_key_the_spans_give() {
    let (decided, _, _) = run(&mut Compare(dynamic_set(10)));
    assert_eq!(decided.len(), 6_000);
}

#[test]
fn a_trace_the_policies_drop_is_never_assembled() {
    let (recorded, kept, assembled) = run(&mut dynamic_set(10));
    assert_eq!(recorded.len(), 6_000);
    let sampled = recorded.iter().filter(|(_, v)| v.is_sampled()).count() as u64;
    assert!(sampled > 100 && sampled < 3_000, "kept {sampled}");
    assert_eq!(kept.len() as u64, sampled);
    // Only the kept traces are assembled, to be passed on.
    assert_eq!(assembled, sampled);
    // Read from the spans, every trace is.
    let (read, _, assembled_read) = run(&mut ReadSpans(dynamic_set(10)));
    assert_eq!(read.len(), 6_000);
    assert_eq!(assembled_read, 6_000);
}
#[test]
fn a_handed_over_trace_records_its_key_again_at_the_new_owner() {
    let mut policies = dynamic_set(10);
    let mut out = Released::default();
    let mut a = TraceShard::new(settings());
    a.insert(
        &batch(&[sp(10, 2, "/child", 500, "db")]),
        Duration::ZERO,
        &mut policies,
        &mut out,
    );
    let mut taken = Vec::new();
    a.take_pending_where(|_| true, &mut taken, &mut out);
    let mut b = TraceShard::new(settings());
    let moved = &taken[0];
    b.import_spans(
        &moved.spans,
        0..moved.spans.len() as u32,
        |_| Some(moved.first_seen),
        Duration::from_millis(1),
        &mut policies,
        &mut out,
    );
    let (keys, from_root) = recorded_keys(&b, &mut policies, 10);
    assert_eq!(keys, ["db,/child,500", ",/child"]);
    assert!(!from_root);
    // Its root arrives at the new owner.
    b.insert(
        &batch(&[sp(10, 1, "/checkout", 200, "shop")]),
        Duration::from_millis(2),
        &mut policies,
        &mut out,
    );
    let (keys, from_root) = recorded_keys(&b, &mut policies, 10);
    assert_eq!(keys, keys_from_spans(&b, &mut policies, 10));
    assert_eq!(keys[0], "shop,/checkout,200");
    assert!(from_root);
}
