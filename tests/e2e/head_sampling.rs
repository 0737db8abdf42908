//! Head sampling end to end through the real binary: the seed's `sampling`
//! section, verbatim, in two tracegate processes; the same spans sent to
//! both must come out the same, trace-consistently, with the thresholds
//! written into their tracestate and every dropped span counted. Also the
//! collector's `probabilistic_sampler` in its default `hash_seed` mode.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use support::gateway::{pipeline_to, validate, Gateway};
use support::raw::{grpc, wait_for_metrics, wait_until_accounted, TRACE_EXPORT};
use support::sink::Sink;
use support::Rng;

/// The seed's `processors.sampling` block (jaeger-v2-collector.yaml), as
/// written there.
const SEED_SAMPLING: &str = r#"
  # Head-based sampling: Sample 100% errors + high-latency
  sampling:
    sampling_percentage: 5  # 5% baseline + special cases
    policies:
      - name: "error-traces"
        type: "status_code"
        status_code:
          status_codes: [ERROR, UNSET]
          fraction_on_match: 1.0  # 100% of errors

      - name: "high-latency"
        type: "latency"
        latency:
          threshold_ms: 1000
          fraction_on_match: 0.25  # 25% of slow traces

      - name: "default"
        type: "probabilistic"
        probabilistic:
          sampling_percentage: 5  # 5% baseline
"#;

fn config(processors: &str, pipeline: &str, sink: &Sink) -> String {
    pipeline_to(
        sink.addr,
        &format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
processors:
{processors}
  batch:
    timeout: 50ms
"#
        ),
        "otlp",
        &format!("{pipeline}, batch"),
    )
}

/// Which of the seed's policies a span matches decides its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Matched {
    /// status ERROR or UNSET: `error-traces`, fraction 1.
    Status,
    /// OK and at least 1000 ms: `high-latency`, 25 %.
    Slow,
    /// OK and fast: only `default`, 5 %.
    Probabilistic,
}

impl Matched {
    /// The OTEP 235 rejection threshold and its `th` value.
    fn threshold(self) -> (u64, &'static str) {
        match self {
            Matched::Status => (0, "0"),
            Matched::Slow => (0xc0000000000000, "c"),
            // 0.95 · 2^56 = 0xf3333333…, one extra digit of precision for
            // the leading `f`: 5 digits, rounded.
            Matched::Probabilistic => (0xf3333000000000, "f3333"),
        }
    }
}

struct SentSpan {
    span: Span,
    matched: Matched,
}

/// `traces` traces of 6 spans: a slow root, an error child in one trace
/// of ten, an UNSET child in one of five, the rest OK and fast; one span
/// in three arrives with another vendor's tracestate.
fn make_spans(traces: u64) -> Vec<SentSpan> {
    let mut rng = Rng(0x4ead);
    let mut out = Vec::new();
    for t in 0..traces {
        let trace_id = [rng.next().to_be_bytes(), rng.next().to_be_bytes()].concat();
        let start = 1_700_000_000_000_000_000u64 + t * 1_000_000;
        for i in 0..6u64 {
            let (code, duration_ms, matched) = match i {
                0 => (status::StatusCode::Ok, 1500, Matched::Slow),
                1 if t % 10 == 0 => (status::StatusCode::Error, 5, Matched::Status),
                2 if t % 5 == 0 => (status::StatusCode::Unset, 5, Matched::Status),
                _ => (status::StatusCode::Ok, 999, Matched::Probabilistic),
            };
            out.push(SentSpan {
                span: Span {
                    trace_id: trace_id.clone(),
                    span_id: ((t << 8) | (i + 1)).to_be_bytes().to_vec(),
                    parent_span_id: if i == 0 {
                        vec![]
                    } else {
                        ((t << 8) | 1).to_be_bytes().to_vec()
                    },
                    trace_state: if (t + i) % 3 == 0 {
                        "vendor=abc".into()
                    } else {
                        String::new()
                    },
                    name: format!("op-{i}"),
                    start_time_unix_nano: start,
                    end_time_unix_nano: start + duration_ms * 1_000_000,
                    status: Some(Status {
                        code: code as i32,
                        message: String::new(),
                    }),
                    ..Default::default()
                },
                matched,
            });
        }
    }
    out
}

fn request(spans: &[SentSpan]) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: spans.iter().map(|s| s.span.clone()).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn randomness(trace_id: &[u8]) -> u64 {
    let mut low = [0u8; 8];
    low[1..].copy_from_slice(&trace_id[9..16]);
    u64::from_be_bytes(low)
}

/// Sends every span to the gateway in requests of 600.
async fn send_all(gw: &Gateway, spans: &[SentSpan]) {
    let addr = gw.addr("otlp", "grpc");
    for chunk in spans.chunks(600) {
        let reply = grpc(addr, TRACE_EXPORT, &request(chunk), None).await;
        assert_eq!(reply.code, 0, "{}", reply.message);
    }
}

/// (span id → tracestate) of what a sink received, waiting for `n` spans.
async fn received(sink: &Sink, n: usize) -> BTreeMap<Vec<u8>, String> {
    assert!(
        sink.wait_for_spans(n, Duration::from_secs(30)).await,
        "sink has {} of {n} spans",
        sink.span_count()
    );
    let mut out = BTreeMap::new();
    for s in sink.spans() {
        assert!(
            out.insert(s.span.span_id.clone(), s.span.trace_state.clone())
                .is_none(),
            "a span exported twice"
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_the_seed_config_keep_the_same_spans_trace_consistently() {
    let spans = make_spans(5000);
    // The fate the seed's sampling section promises each span.
    let expected: BTreeMap<Vec<u8>, String> = spans
        .iter()
        .filter(|s| randomness(&s.span.trace_id) >= s.matched.threshold().0)
        .map(|s| {
            let th = format!("ot=th:{}", s.matched.threshold().1);
            let ts = if s.span.trace_state.is_empty() {
                th
            } else {
                format!("{th},{}", s.span.trace_state)
            };
            (s.span.span_id.clone(), ts)
        })
        .collect();

    let (sink_a, sink_b) = (Sink::start().await, Sink::start().await);
    let gw_a = Gateway::start(&config(SEED_SAMPLING, "sampling", &sink_a));
    let gw_b = Gateway::start(&config(SEED_SAMPLING, "sampling", &sink_b));
    // The same spans to both, in opposite orders.
    send_all(&gw_a, &spans).await;
    let mut reversed: Vec<SentSpan> = Vec::new();
    for chunk in spans.chunks(600).rev() {
        reversed.extend(chunk.iter().map(|s| SentSpan {
            span: s.span.clone(),
            matched: s.matched,
        }));
    }
    send_all(&gw_b, &reversed).await;

    let got_a = received(&sink_a, expected.len()).await;
    let got_b = received(&sink_b, expected.len()).await;
    // Once each gateway has exported or dropped every span it took in,
    // nothing more can arrive.
    for gw in [&gw_a, &gw_b] {
        wait_until_accounted(
            gw.addr("telemetry", "metrics"),
            spans.len(),
            Duration::from_secs(30),
        )
        .await;
    }
    assert_eq!(sink_a.span_count(), expected.len());
    assert_eq!(sink_b.span_count(), expected.len());
    assert_eq!(got_a, expected, "gateway A keeps what the config promises");
    assert_eq!(got_b, got_a, "both processes keep the same spans");

    // Spans of one trace matching the same policies share one fate.
    let mut fates: BTreeMap<(Vec<u8>, Matched), BTreeSet<bool>> = BTreeMap::new();
    for s in &spans {
        fates
            .entry((s.span.trace_id.clone(), s.matched))
            .or_default()
            .insert(got_a.contains_key(&s.span.span_id));
    }
    assert!(fates.values().all(|f| f.len() == 1));

    // The shares, within 4σ: every trace's ERROR/UNSET spans, 25 % of slow
    // roots, 5 % of the fast OK spans' traces.
    let share = |matched: Matched, p: f64| {
        let traces: BTreeMap<&[u8], bool> = spans
            .iter()
            .filter(|s| s.matched == matched)
            .map(|s| (&s.span.trace_id[..], got_a.contains_key(&s.span.span_id)))
            .collect();
        let n = traces.len() as f64;
        let kept = traces.values().filter(|k| **k).count() as f64;
        let sigma = (n * p * (1.0 - p)).sqrt();
        assert!(
            (kept - n * p).abs() <= 4.0 * sigma,
            "{matched:?}: kept {kept} of {n} traces, expected {p}"
        );
    };
    share(Matched::Status, 1.0);
    share(Matched::Slow, 0.25);
    share(Matched::Probabilistic, 0.05);

    // Every dropped span is counted, with the policy that decided it.
    let dropped = spans.len() - expected.len();
    let text = wait_for_metrics(
        gw_a.addr("telemetry", "metrics"),
        &[&format!(
            "otelcol_tracegate_dropped_spans_total{{component=\"sampling\",reason=\"sampled_out\"}} {dropped}"
        )],
        Duration::from_secs(10),
    )
    .await;
    let count = |policy: &str, sampled: bool| {
        let kept = spans
            .iter()
            .filter(|s| match policy {
                "error-traces" => s.matched == Matched::Status,
                "high-latency" => s.matched == Matched::Slow,
                _ => s.matched == Matched::Probabilistic,
            })
            .filter(|s| got_a.contains_key(&s.span.span_id) == sampled)
            .count();
        let line = format!(
            "otelcol_processor_sampling_count_traces_sampled_total{{processor=\"sampling\",policy=\"{policy}\",sampled=\"{sampled}\"}} {kept}"
        );
        assert!(
            kept == 0 || text.contains(&line),
            "missing {line} in\n{text}"
        );
    };
    for policy in ["error-traces", "high-latency", "default"] {
        count(policy, true);
        count(policy, false);
    }
}

#[test]
fn validate_warns_that_the_seeds_unset_policy_matches_almost_everything() {
    // Validation connects to nothing; any port will do.
    let sink_port = 1;
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
processors:
{SEED_SAMPLING}
exporters:
  otlp:
    endpoint: 127.0.0.1:{sink_port}
    tls:
      insecure: true
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [sampling]
      exporters: [otlp]
"#
    );
    let (valid, stdout, stderr) = validate(&yaml);
    assert!(valid, "{stdout}\n{stderr}");
    assert!(
        stdout.lines().any(|l| l.starts_with("warning:")
            && l.contains("UNSET")
            && l.contains("error-traces")),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probabilistic_sampler_hash_seed_decides_as_the_collector() {
    let sink = Sink::start().await;
    let processors = r#"
  probabilistic_sampler:
    sampling_percentage: 50
    hash_seed: 22
"#;
    let gw = Gateway::start(&config(processors, "probabilistic_sampler", &sink));
    let spans = make_spans(2000);
    send_all(&gw, &spans).await;
    // The legacy rule, written out: FNV-1a 32 over the little-endian seed
    // and the trace id, kept when its low 14 bits are below 50 % of 2^14.
    let fnv = |bytes: &[u8]| {
        bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
            (h ^ u32::from(b)).wrapping_mul(16_777_619)
        })
    };
    let keep = |id: &[u8]| {
        let mut input = 22u32.to_le_bytes().to_vec();
        input.extend_from_slice(id);
        fnv(&input) & 0x3fff < 8192
    };
    let expected: BTreeSet<Vec<u8>> = spans
        .iter()
        .filter(|s| keep(&s.span.trace_id))
        .map(|s| s.span.span_id.clone())
        .collect();
    let got = received(&sink, expected.len()).await;
    wait_until_accounted(
        gw.addr("telemetry", "metrics"),
        spans.len(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(sink.span_count(), expected.len());
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), expected);
    // Kept spans carry the hash's randomness and the 14-bit threshold.
    for ts in got.values() {
        assert!(ts.starts_with("ot=rv:") && ts.contains(";th:8"), "{ts}");
    }
    let dropped = spans.len() - expected.len();
    wait_for_metrics(
        gw.addr("telemetry", "metrics"),
        &[
            &format!(
                "otelcol_processor_probabilistic_sampler_count_traces_sampled_total{{processor=\"probabilistic_sampler\",policy=\"trace_id_hash\",sampled=\"false\"}} {dropped}"
            ),
            &format!(
                "otelcol_tracegate_dropped_spans_total{{component=\"probabilistic_sampler\",reason=\"sampled_out\"}} {dropped}"
            ),
        ],
        Duration::from_secs(10),
    )
    .await;
    // The collector's self-metrics with its names and labels: the
    // sampler's current decision counter, every processor's items and
    // time, and the receiver's requests by outcome (`send_all` sends 600
    // spans a request).
    let kept = expected.len();
    let total = spans.len();
    let requests = total.div_ceil(600);
    wait_for_metrics(
        gw.addr("telemetry", "metrics"),
        &[
            &format!(
                "otelcol_processor_probabilistic_sampler_count_spans_processed_total{{processor=\"probabilistic_sampler\",policy=\"trace_id_hash\",sampled=\"false\"}} {dropped}\n"
            ),
            &format!(
                "otelcol_processor_probabilistic_sampler_count_spans_processed_total{{processor=\"probabilistic_sampler\",policy=\"trace_id_hash\",sampled=\"true\"}} {kept}\n"
            ),
            &format!(
                "otelcol_processor_incoming_items_total{{processor=\"probabilistic_sampler\",otel_signal=\"traces\"}} {total}\n"
            ),
            &format!(
                "otelcol_processor_outgoing_items_total{{processor=\"probabilistic_sampler\",otel_signal=\"traces\"}} {kept}\n"
            ),
            &format!(
                "otelcol_processor_incoming_items_total{{processor=\"batch\",otel_signal=\"traces\"}} {kept}\n"
            ),
            &format!(
                "otelcol_processor_outgoing_items_total{{processor=\"batch\",otel_signal=\"traces\"}} {kept}\n"
            ),
            &format!(
                "otelcol_processor_internal_duration_count{{processor=\"probabilistic_sampler\",otel_signal=\"traces\"}} {requests}\n"
            ),
            // Seconds buckets, not the span-count ones.
            "otelcol_processor_internal_duration_bucket{processor=\"probabilistic_sampler\",otel_signal=\"traces\",le=\"0.001\"}",
            &format!(
                "otelcol_receiver_requests_total{{receiver=\"otlp\",transport=\"grpc\",outcome=\"success\"}} {requests}\n"
            ),
            "otelcol_receiver_requests_total{receiver=\"otlp\",transport=\"grpc\",outcome=\"refused\"} 0\n",
            "otelcol_receiver_failed_spans_total{receiver=\"otlp\",transport=\"grpc\"} 0\n",
        ],
        Duration::from_secs(10),
    )
    .await;
}
