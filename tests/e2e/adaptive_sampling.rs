//! Adaptive tail sampling through the real binary: a `throughput` policy
//! keeps about its goal of a heavier offered load, and every kept span
//! carries its weight as OTEP 235 `th` (the product of the probability it
//! arrived with and the tail's), so the adjusted counts add up.

use crate::support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::Span;
use support::gateway::{pipeline_to, Gateway};
use support::raw::{grpc, wait_for_metrics, TRACE_EXPORT};
use support::sink::Sink;
use support::traces::request;
use support::Rng;

/// The `th` of a tracestate's `ot` entry, as a probability.
fn probability_of(trace_state: &str) -> Option<f64> {
    let ot = trace_state
        .split(',')
        .find_map(|m| m.trim().strip_prefix("ot="))?;
    let th = ot.split(';').find_map(|m| m.strip_prefix("th:"))?;
    let digits = format!("{th:0<14}");
    let rejected = u64::from_str_radix(&digits, 16).ok()?;
    Some(((1u64 << 56) - rejected) as f64 / (1u64 << 56) as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throughput_policy_keeps_its_goal_and_writes_th() {
    let goal = 300.0;
    let sink = Sink::start().await;
    let yaml = pipeline_to(
        sink.addr,
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
processors:
  tail_sampling:
    decision_wait: 200ms
    policies:
      - name: fleet
        type: throughput
        throughput:
          goal_traces_per_second: 300
          adjustment_interval: 500ms
          initial_sample_rate: 1
          burst_detection_delay: 1
"#,
        "otlp",
        "tail_sampling",
    );
    let gw = Gateway::start(&yaml);
    let addr = gw.addr("otlp", "grpc");
    let mut rng = Rng(0xada9);
    // 3 s of 2000 traces/s, 100 traces of 3 spans every 50 ms; odd
    // traces arrive head-sampled at 1/2 (th:8).
    let batches = 60;
    let per_batch = 100;
    let mut sent_at: HashMap<[u8; 16], usize> = HashMap::new();
    let mut headed: HashMap<[u8; 16], bool> = HashMap::new();
    let started = Instant::now();
    for b in 0..batches {
        let mut spans = Vec::with_capacity(per_batch * 3);
        for t in 0..per_batch {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&rng.next().to_be_bytes());
            id[8..].copy_from_slice(&rng.next().to_be_bytes());
            let head = t % 2 == 1;
            if head {
                // Kept by a head sampler at th:8, so its randomness (the
                // id's low 56 bits) passes 2^55.
                id[9] |= 0x80;
            }
            sent_at.insert(id, b);
            headed.insert(id, head);
            for s in 0..3u64 {
                spans.push(Span {
                    trace_id: id.to_vec(),
                    span_id: (((b * per_batch + t) as u64) << 8 | (s + 1))
                        .to_be_bytes()
                        .to_vec(),
                    parent_span_id: if s == 0 {
                        vec![]
                    } else {
                        (((b * per_batch + t) as u64) << 8 | 1)
                            .to_be_bytes()
                            .to_vec()
                    },
                    name: format!("op-{s}"),
                    trace_state: if head {
                        "ot=th:8".into()
                    } else {
                        String::new()
                    },
                    start_time_unix_nano: 1_700_000_000_000_000_000,
                    end_time_unix_nano: 1_700_000_000_050_000_000,
                    ..Default::default()
                });
            }
        }
        let at = started + Duration::from_millis(50 * b as u64);
        tokio::time::sleep_until(at.into()).await;
        let reply = grpc(addr, TRACE_EXPORT, &request("shop", spans), None).await;
        assert_eq!(reply.code, 0, "{}", reply.message);
    }
    // Everything decided and exported: the telemetry counts it.
    let metrics = gw.addr("telemetry", "metrics");
    support::raw::wait_until_accounted(metrics, batches * per_batch * 3, Duration::from_secs(20))
        .await;

    let mut kept: HashMap<[u8; 16], Vec<f64>> = HashMap::new();
    for span in sink.spans() {
        let id: [u8; 16] = span.span.trace_id.clone().try_into().expect("16 bytes");
        let p = probability_of(&span.span.trace_state)
            .unwrap_or_else(|| panic!("kept span without ot=th: {:?}", span.span.trace_state));
        kept.entry(id).or_default().push(p);
    }
    assert!(!kept.is_empty());
    let mut adjusted = 0.0;
    let mut variance = 0.0;
    let mut kept_in_window = 0;
    // The second half of the run: the policy has settled.
    let window = batches / 2..batches;
    for (id, ps) in &kept {
        assert_eq!(ps.len(), 3, "a kept trace is kept whole");
        assert!(ps.iter().all(|p| *p == ps[0]), "one weight per trace");
        let p = ps[0];
        if headed[id] {
            assert!(p <= 0.5, "th combines with the head's 1/2: {p}");
        }
        if window.contains(&sent_at[id]) {
            kept_in_window += 1;
            // What each kept trace stands for of what the gateway was
            // offered: the tail's share, given the head's.
            let tail = if headed[id] { p * 2.0 } else { p };
            adjusted += 1.0 / tail;
            variance += (1.0 - tail) / (tail * tail);
        }
    }
    let seconds = window.len() as f64 * 0.05;

    let rate = kept_in_window as f64 / seconds;
    assert!(
        (rate - goal).abs() <= 0.2 * goal,
        "kept {rate} traces/s, goal {goal}"
    );
    let offered = (window.len() * per_batch) as f64;
    assert!(
        (adjusted - offered).abs() <= 3.0 * variance.sqrt(),
        "adjusted count {adjusted} of {offered} offered (σ {})",
        variance.sqrt()
    );
    // The goal and the keep probability are published.
    let goal_metric = "otelcol_tracegate_tail_sampling_adaptive_goal_traces_per_second";
    let text = wait_for_metrics(metrics, &[goal_metric], Duration::from_secs(10)).await;
    let line = text
        .lines()
        .find(|l| l.starts_with(goal_metric) && l.contains("policy=\"fleet\""))
        .expect("the goal gauge");
    assert!(line.ends_with(" 300"), "{line}");
    assert!(
        text.lines().any(
            |l| l.starts_with("otelcol_tracegate_tail_sampling_adaptive_probability")
                && l.contains("policy=\"fleet\"")
        ),
        "the keep probability gauge:\n{text}"
    );
}
