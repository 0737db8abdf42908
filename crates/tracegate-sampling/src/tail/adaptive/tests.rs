//! The adaptive policies against the goals issue 13 sets, in simulated
//! time (decisions take `now`), with seeded random trace ids.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracegate_model::trace_state::{Threshold, TraceState};

use super::dynamic::{Dynamic, DynamicConfig};
use super::throughput::{Throughput, ThroughputConfig};
use super::*;
use crate::tail::config::PolicyConfig;
use crate::tail::policy::{Decision, PolicySet, TraceView};
use crate::tail::tests::{batch, s, span};
use crate::tail::{Released, TraceBuffer, TraceBufferSettings};

fn throughput(config: serde_json::Value, fleet: &FleetSize) -> Throughput {
    let c: ThroughputConfig = serde_json::from_value(config).expect("parses");
    Throughput::new(c.settings().expect("valid"), fleet.clone())
}

fn dynamic(config: serde_json::Value) -> Dynamic {
    let c: DynamicConfig = serde_json::from_value(config).expect("parses");
    Dynamic::new(c.settings().expect("valid"), FleetSize::default())
}

fn random_seed(rng: &mut StdRng) -> TraceSeed {
    TraceSeed {
        randomness: rng.random::<u64>() >> 8,
        threshold: 0,
    }
}

/// Offers `rate` traces per second, evenly spaced, from `from` for `secs`
/// seconds; returns the kept traces' times.
fn offer(
    policy: &Throughput,
    rng: &mut StdRng,
    from: Duration,
    secs: f64,
    rate: f64,
    kept: &mut Vec<Duration>,
) {
    let n = (secs * rate) as u64;
    for i in 0..n {
        let now = from + Duration::from_secs_f64(i as f64 / rate);
        if policy.decide(random_seed(rng), now).is_some() {
            kept.push(now);
        }
    }
}

/// Kept traces per second in each interval of `interval` from `from` to
/// `to`.
fn kept_rates(kept: &[Duration], from: Duration, to: Duration, interval: Duration) -> Vec<f64> {
    let mut rates = Vec::new();
    let mut start = from;
    while start + interval <= to {
        let end = start + interval;
        let n = kept.iter().filter(|&&t| t >= start && t < end).count();
        rates.push(n as f64 / interval.as_secs_f64());
        start = end;
    }
    rates
}

#[test]
fn throughput_settles_within_ten_percent_of_the_goal_after_each_step() {
    let interval = Duration::from_secs(2);
    let goal = 500.0;
    let policy = throughput(
        serde_json::json!({"goal_traces_per_second": goal, "adjustment_interval": "2s"}),
        &FleetSize::default(),
    );
    let mut rng = StdRng::seed_from_u64(13);
    let mut kept = Vec::new();
    // 1 k/s, then 20 k/s, then 1 k/s again: ten intervals each.
    let phase = 10.0 * interval.as_secs_f64();
    let steps = [1_000.0, 20_000.0, 1_000.0];
    for (i, rate) in steps.iter().enumerate() {
        let from = Duration::from_secs_f64(i as f64 * phase);
        offer(&policy, &mut rng, from, phase, *rate, &mut kept);
    }
    for (i, offered) in steps.iter().enumerate() {
        let step = Duration::from_secs_f64(i as f64 * phase);
        let settled = step + 3 * interval;
        let end = Duration::from_secs_f64((i + 1) as f64 * phase);
        let rates = kept_rates(&kept, settled, end, interval);
        assert_eq!(rates.len(), 7);
        for (k, rate) in rates.iter().enumerate() {
            assert!(
                (rate - goal).abs() <= 0.1 * goal,
                "phase {i} ({offered} traces/s), interval {k} after settling: kept {rate}/s, goal {goal}/s"
            );
        }
    }
}

#[test]
fn throughput_without_burst_detection_takes_longer_to_settle() {
    // The same step with burst detection off: the moving average needs
    // several intervals, so the first interval after the step keeps far
    // more than the goal. This is what the burst and fall detection buy.
    let interval = Duration::from_secs(2);
    let goal = 500.0;
    let policy = throughput(
        serde_json::json!({"goal_traces_per_second": goal, "adjustment_interval": "2s", "burst_multiple": 0}),
        &FleetSize::default(),
    );
    let mut rng = StdRng::seed_from_u64(14);
    let mut kept = Vec::new();
    offer(&policy, &mut rng, Duration::ZERO, 20.0, 1_000.0, &mut kept);
    offer(
        &policy,
        &mut rng,
        Duration::from_secs(20),
        4.0,
        20_000.0,
        &mut kept,
    );
    let rates = kept_rates(
        &kept,
        Duration::from_secs(20),
        Duration::from_secs(24),
        interval,
    );
    assert!(rates[0] > 3.0 * goal, "{rates:?}");
}

#[test]
fn throughput_divides_its_goal_among_the_live_gateways() {
    let goal = 1_000.0;
    let fleet_a = FleetSize::default();
    let fleet_b = FleetSize::default();
    let config = serde_json::json!({"goal_traces_per_second": goal, "adjustment_interval": "1s"});
    let a = throughput(config.clone(), &fleet_a);
    let b = throughput(config, &fleet_b);
    // Membership says two gateways; each gets half of 20 k/s.
    fleet_a.set(2);
    fleet_b.set(2);
    let mut rng = StdRng::seed_from_u64(2);
    let (mut kept_a, mut kept_b) = (Vec::new(), Vec::new());
    offer(&a, &mut rng, Duration::ZERO, 10.0, 10_000.0, &mut kept_a);
    offer(&b, &mut rng, Duration::ZERO, 10.0, 10_000.0, &mut kept_b);
    let window = (Duration::from_secs(4), Duration::from_secs(10));
    let count =
        |k: &[Duration]| k.iter().filter(|&&t| t >= window.0 && t < window.1).count() as f64 / 6.0;
    let (ra, rb) = (count(&kept_a), count(&kept_b));
    assert!((ra - 500.0).abs() <= 50.0, "gateway a keeps {ra}/s");
    assert!((rb - 500.0).abs() <= 50.0, "gateway b keeps {rb}/s");
    assert!(
        (ra + rb - goal).abs() <= 0.1 * goal,
        "fleet keeps {}/s",
        ra + rb
    );
    assert_eq!(a.report().goal_per_second, Some(500.0));
    // A gateway leaves: the other takes the whole goal.
    fleet_a.set(1);
    assert_eq!(a.report().goal_per_second, Some(1_000.0));
}

/// Zipf weights `1/k` for keys 1..=n.
fn zipf(n: usize) -> Vec<f64> {
    let h: f64 = (1..=n).map(|k| 1.0 / k as f64).sum();
    (1..=n).map(|k| 1.0 / (k as f64 * h)).collect()
}

#[test]
fn dynamic_keeps_every_key_hits_the_goal_and_adjusted_counts_add_up() {
    let interval = Duration::from_secs(2);
    let goal = 500.0;
    let policy = dynamic(serde_json::json!({
        "key_fields": ["http.route"],
        "goal_traces_per_second": goal,
        "adjustment_interval": "2s",
    }));
    let weights = zipf(100);
    let cumulative: Vec<f64> = weights
        .iter()
        .scan(0.0, |acc, w| {
            *acc += w;
            Some(*acc)
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(100);
    let rate = 5_000.0;
    let intervals = 15;
    let mut true_counts = vec![0u64; 100];
    let mut adjusted = vec![0f64; 100];
    let mut variance = vec![0f64; 100];
    // Per interval: kept per key, seen per key.
    let mut kept_by_interval = vec![vec![0u64; 100]; intervals];
    let mut seen_by_interval = vec![vec![0u64; 100]; intervals];
    let n = (rate * interval.as_secs_f64()) as usize * intervals;
    for i in 0..n {
        let now = Duration::from_secs_f64(i as f64 / rate);
        let u: f64 = rng.random();
        let k = cumulative.partition_point(|&c| c < u).min(99);
        let key = format!("/route/{k}");
        let slot = (now.as_secs_f64() / interval.as_secs_f64()) as usize;
        true_counts[k] += 1;
        seen_by_interval[slot][k] += 1;
        if let Some(th) = policy.decide(&key, random_seed(&mut rng), now) {
            kept_by_interval[slot][k] += 1;
            // The weight a backend reads: 1/p of the `th` written.
            let written = combined_threshold(1.0, th);
            let p = Threshold::parse_tvalue(&written.tvalue()).map_or(1.0, Threshold::probability);
            adjusted[k] += 1.0 / p;
            variance[k] += (1.0 - p) / (p * p);
        }
    }
    for slot in 0..intervals {
        for k in 0..100 {
            if seen_by_interval[slot][k] > 0 {
                assert!(
                    kept_by_interval[slot][k] >= 1,
                    "key {k} kept nothing in interval {slot}"
                );
            }
        }
        if slot >= 3 {
            let total: u64 = kept_by_interval[slot].iter().sum();
            let per_second = total as f64 / interval.as_secs_f64();
            assert!(
                (per_second - goal).abs() <= 0.1 * goal,
                "interval {slot}: kept {per_second}/s, goal {goal}/s"
            );
        }
    }
    for k in 0..100 {
        let sigma = variance[k].sqrt();
        let error = (adjusted[k] - true_counts[k] as f64).abs();
        assert!(
            error <= 3.0 * sigma.max(1.0),
            "key {k}: adjusted {} vs true {} (σ {sigma})",
            adjusted[k],
            true_counts[k]
        );
    }
    // Rare keys keep more than frequent ones.
    let p_first = policy.probability_of("/route/0").expect("tracked");
    let p_last = policy.probability_of("/route/99").expect("tracked");
    assert!(p_first < p_last, "{p_first} vs {p_last}");
}

#[test]
fn dynamic_keys_past_max_keys_share_one_bucket() {
    let policy = dynamic(serde_json::json!({
        "key_fields": ["k"], "goal_sample_rate": 10, "max_keys": 3, "adjustment_interval": "1s",
    }));
    let mut rng = StdRng::seed_from_u64(3);
    // 4 traces per ms over 4 s; the first 2 s (every key new, so all
    // kept, then the averages settling) are left out of the count.
    for i in 0..16_000u64 {
        let now = Duration::from_millis(i / 4);
        if i == 8_000 {
            policy.report();
        }
        policy.decide(&format!("key-{}", i % 10), random_seed(&mut rng), now);
    }
    let report = policy.report();
    assert_eq!(report.keys.len(), 4, "{:?}", report.keys);
    assert!(report.keys.iter().any(|k| k.key == OVERFLOW_KEY));
    let kept: u64 = report.keys.iter().map(|k| k.kept).sum();
    let dropped: u64 = report.keys.iter().map(|k| k.dropped).sum();
    assert_eq!(kept + dropped, 8_000);
    // goal_sample_rate 10: about a tenth kept once the averages are in.
    assert!(kept > 650 && kept < 950, "kept {kept}");
}

#[test]
fn a_tail_probability_multiplies_the_incoming_one_in_th() {
    let tail = tail_threshold(0.25);
    assert_eq!(tail.tvalue(), "c");
    // No incoming threshold: th is the tail's.
    let plain = batch(&[span(crate::tail::tests::tid(1), 1)]);
    let out = apply_tail_threshold(&plain, tail);
    assert_eq!(out.span_trace_state(0), "ot=th:c");
    // Head kept it at 1/2 (th:8): 1/2 × 1/4 = 1/8 (th:e); other members
    // stay as they were.
    let headed =
        batch(&[span(crate::tail::tests::tid(2), 1).state("ot=th:8;rv:abcdefabcdef12,vendor=x")]);
    let out = apply_tail_threshold(&headed, tail);
    let ts = TraceState::parse(out.span_trace_state(0)).expect("parses");
    assert_eq!(ts.ot.threshold.map(|t| t.tvalue()), Some("e".to_string()));
    assert_eq!(ts.others, vec!["vendor=x"]);
    // Kept with probability 1: unchanged, or th:0 when it had none.
    let same = apply_tail_threshold(&headed, Threshold::ALWAYS);
    let ts = TraceState::parse(same.span_trace_state(0)).expect("parses");
    assert_eq!(ts.ot.threshold.map(|t| t.tvalue()), Some("8".to_string()));
    let sure = apply_tail_threshold(&plain, Threshold::ALWAYS);
    assert_eq!(sure.span_trace_state(0), "ot=th:0");
}

#[test]
fn the_decision_is_consistent_with_the_written_threshold() {
    let tail = tail_threshold(0.3);
    let mut rng = StdRng::seed_from_u64(9);
    let mut kept = 0;
    for _ in 0..10_000 {
        let seed = TraceSeed {
            randomness: (rng.random::<u64>() >> 8) | (1 << 55),
            threshold: 1 << 55, // th:8, the head kept it at 1/2
        };
        if keep_at(seed, tail) {
            kept += 1;
            let written = combined_threshold(seed.incoming_probability(), tail);
            assert!(written.unsigned() <= seed.randomness);
        }
    }
    // Given the head's 1/2, the tail keeps 0.3 of what it sees.
    assert!((kept as f64 / 10_000.0 - 0.3).abs() < 0.02, "{kept}");
}

fn set(config: serde_json::Value) -> PolicySet {
    let configs: Vec<PolicyConfig> = serde_json::from_value(config).expect("parses");
    PolicySet::build(&configs, false).expect("builds").0
}

#[test]
fn kept_spans_of_a_buffered_trace_carry_the_tail_threshold() {
    let mut policies = set(serde_json::json!([{
        "name": "by-route", "type": "dynamic",
        "dynamic": {"key_fields": ["service.name", "http.route"], "goal_sample_rate": 4, "adjustment_interval": "1s"},
    }]));
    let settings = TraceBufferSettings {
        decision_wait: Duration::from_millis(100),
        ..Default::default()
    };
    let mut buffer = TraceBuffer::new(&settings, 2);
    let mut out = Released::default();
    let mut with_th = 0;
    let mut kept_traces = 0;
    for n in 0..4_000u64 {
        let id = crate::tail::tests::tid(n + 1);
        let spans = [
            span(id, 2).attr("http.route", s("/child")),
            span(id, 1)
                .attr("http.route", s("/checkout"))
                .res("service.name", s("shop")),
        ];
        let now = Duration::from_millis(n);
        buffer.insert(&batch(&spans), now, &mut policies, &mut out);
        buffer.poll(now, &mut policies, &mut out);
    }
    buffer.poll(Duration::from_secs(60), &mut policies, &mut out);
    for (b, by) in out.sampled.iter().zip(&out.sampled_by) {
        kept_traces += 1;
        let tail = by.tail.expect("kept by the adaptive policy alone");
        let b = apply_tail_threshold(b, tail);
        for i in 0..b.len() {
            let ts = TraceState::parse(b.span_trace_state(i)).expect("parses");
            // Kept for sure (th:0) or with the key's probability.
            assert_eq!(ts.ot.threshold, Some(tail));
            if tail != Threshold::ALWAYS {
                with_th += 1;
            }
        }
    }
    // The key is the root's route and its resource's service.
    let reports = policies.adaptive_reports();
    let keys: Vec<&str> = reports[0].1.keys.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, vec!["shop,/checkout"]);
    assert!(with_th > 0);
    // A new key keeps everything until its first interval ends (1000
    // traces here), then about 1 in 4 of the other 3000.
    assert!(
        (1_550..1_950).contains(&kept_traces),
        "goal_sample_rate 4: kept {kept_traces}"
    );
}

#[test]
fn another_policy_sampling_too_means_no_tail_threshold() {
    let mut policies = set(serde_json::json!([
        {"name": "all", "type": "always_sample"},
        {"name": "t", "type": "throughput", "throughput": {"goal_traces_per_second": 1, "initial_sample_rate": 1}},
    ]));
    let id = crate::tail::tests::tid(5);
    let b = [batch(&[span(id, 1)])];
    let v = policies.decide(&TraceView::of_batches(&id, &b), Duration::ZERO);
    assert_eq!(v.decision, Decision::Sampled);
    assert_eq!(v.tail, None);
}

#[test]
fn adaptive_configs_are_checked() {
    let build = |c: serde_json::Value| {
        let configs: Vec<PolicyConfig> = serde_json::from_value(c).expect("parses");
        PolicySet::build(&configs, false)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let err = build(
        serde_json::json!([{"name": "d", "type": "dynamic", "dynamic": {"key_fields": ["a"]}}]),
    )
    .unwrap_err();
    assert!(err.contains("exactly one of goal_sample_rate"), "{err}");
    let err = build(
        serde_json::json!([{"name": "t", "type": "throughput", "throughput": {"weight": 1.5}}]),
    )
    .unwrap_err();
    assert!(err.contains("weight"), "{err}");
    let err =
        build(serde_json::json!([{"name": "t", "type": "throughput", "fraction_on_match": 0.5}]))
            .unwrap_err();
    assert!(err.contains("fraction_on_match"), "{err}");
    let err = build(
        serde_json::json!([{"name": "a", "type": "and", "and": {"and_sub_policy": [
        {"name": "t", "type": "throughput"}]}}]),
    )
    .unwrap_err();
    assert!(err.contains("top-level"), "{err}");
    let bad: Result<ThroughputConfig, _> =
        serde_json::from_value(serde_json::json!({"adjustment_interval": "soon"}));
    assert!(bad.is_err());
    let ok: ThroughputConfig =
        serde_json::from_value(serde_json::json!({"adjustment_interval": "1m30s"}))
            .expect("parses");
    assert_eq!(
        ok.adjustment_interval,
        Some(ConfigDuration(Duration::from_secs(90)))
    );
}

#[test]
fn an_inconsistent_incoming_threshold_is_cleared_not_multiplied() {
    // rv below th:8: no head sampler at 1/2 could have kept it.
    let id = crate::tail::tests::tid(3);
    let b = batch(&[span(id, 1).state("ot=th:8;rv:00000000000001")]);
    let seed = TraceSeed::of_span(&b, 0);
    assert_eq!(seed.threshold, 0);
    let out = apply_tail_threshold(&b, tail_threshold(0.25));
    let ts = TraceState::parse(out.span_trace_state(0)).expect("parses");
    assert_eq!(ts.ot.threshold.map(|t| t.tvalue()), Some("c".to_string()));
}
