//! Tail sampling end to end through the real binary on `config/gateway.yaml`
//! (its decision_wait shortened by environment variable): synthetic traces
//! whose spans are spread over several requests and connections go in over
//! OTLP/gRPC; what the in-test backend receives is checked trace by trace.

use crate::support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use support::gateway::{pipeline_to, Gateway};
use support::raw::{grpc, wait_for_metrics, TRACE_EXPORT};
use support::sink::Sink;
use support::Rng;
use tracegate_sampling::tail::{keep_threshold, trace_randomness};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Error,
    Slow,
    Normal,
}

pub(crate) struct Trace {
    pub(crate) id: [u8; 16],
    pub(crate) kind: Kind,
    pub(crate) spans: Vec<Span>,
}

fn make_trace(rng: &mut Rng, n: usize) -> Trace {
    make_trace_of(rng, n, None)
}

/// Trace number `n`: 5 % error, 10 % slow, the rest normal; of `spans`
/// spans, or 5 to 20 drawn from `rng`.
pub(crate) fn make_trace_of(rng: &mut Rng, n: usize, spans: Option<usize>) -> Trace {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&rng.next().to_be_bytes());
    id[8..].copy_from_slice(&rng.next().to_be_bytes());
    let kind = match rng.below(100) {
        0..=4 => Kind::Error,
        5..=14 => Kind::Slow,
        _ => Kind::Normal,
    };
    let count = spans.unwrap_or_else(|| 5 + rng.below(16) as usize); // 5..=20
    let start = 1_700_000_000_000_000_000u64 + n as u64 * 1_000_000;
    let length_ns: u64 = if kind == Kind::Slow {
        1_500_000_000
    } else {
        50_000_000
    };
    let error_span = rng.below(count as u64) as usize;
    let spans = (0..count)
        .map(|i| {
            let error = kind == Kind::Error && i == error_span;
            Span {
                trace_id: id.to_vec(),
                span_id: (((n as u64) << 8) | (i as u64 + 1)).to_be_bytes().to_vec(),
                parent_span_id: if i == 0 {
                    vec![]
                } else {
                    (((n as u64) << 8) | 1).to_be_bytes().to_vec()
                },
                name: format!("op-{i}"),
                start_time_unix_nano: start + i as u64 * 1_000_000,
                // The first span lasts the whole trace.
                end_time_unix_nano: if i == 0 {
                    start + length_ns
                } else {
                    start + i as u64 * 1_000_000 + 500_000
                },
                status: Some(Status {
                    code: if error {
                        status::StatusCode::Error as i32
                    } else {
                        status::StatusCode::Unset as i32
                    },
                    message: String::new(),
                }),
                ..Default::default()
            }
        })
        .collect();
    Trace { id, kind, spans }
}

pub(crate) fn request(service: &str, spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![opentelemetry_proto::tonic::common::v1::KeyValue {
                    key: "service.name".into(),
                    value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                        value: Some(
                            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                                service.into(),
                            ),
                        ),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// What `config/gateway.yaml` promises for a trace: every error trace, 25 %
/// of slow ones, 5 % of the rest, drawn from one per-trace randomness.
pub(crate) fn expected_kept(trace: &Trace) -> bool {
    let r = trace_randomness(&trace.id);
    match trace.kind {
        Kind::Error => true,
        Kind::Slow => r >= keep_threshold(0.25) || r >= keep_threshold(0.05),
        Kind::Normal => r >= keep_threshold(0.05),
    }
}

/// The value of metric `name` with exactly these labels (in any order).
pub(crate) fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    metric_opt(text, name, labels)
        .unwrap_or_else(|| panic!("no {name}{labels:?} in metrics:\n{text}"))
}

fn metric_opt(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric_name, label_text) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        if metric_name != name {
            return None;
        }
        let mut have: Vec<String> = label_text
            .split(',')
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        have.sort();
        want.sort();
        (have == want).then(|| value.parse::<f64>().ok().map(|v| v as u64))?
    })
}

/// Polls `/metrics` until `done` holds for its text; panics on timeout.
pub(crate) async fn metrics_until(
    addr: std::net::SocketAddr,
    mut done: impl FnMut(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reply = support::raw::http(addr, http::Method::GET, "/metrics", &[], "").await;
        let text = String::from_utf8_lossy(&reply.body).into_owned();
        if done(&text) {
            return text;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("metrics never settled:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_keeps_error_traces_and_its_shares_whole() {
    let sink = Sink::start().await;
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/gateway.yaml"
    ))
    .expect("config/gateway.yaml");
    // Given to this gateway alone: the other end-to-end tests share this
    // process and its environment.
    let tempo = format!("127.0.0.1:{}", sink.addr.port());
    let envs = [
        ("TRACEGATE_OTLP_GRPC_ENDPOINT", "127.0.0.1:0"),
        ("TRACEGATE_OTLP_HTTP_ENDPOINT", "127.0.0.1:0"),
        ("TRACEGATE_HEALTH_ENDPOINT", "127.0.0.1:0"),
        ("TRACEGATE_METRICS_ADDRESS", "127.0.0.1:0"),
        ("TRACEGATE_TEMPO_ENDPOINT", tempo.as_str()),
        ("TRACEGATE_DECISION_WAIT", "2s"),
        ("TRACEGATE_LOG_ENCODING", "json"),
    ];
    let gw = Gateway::start_with(&yaml, &[], &envs);
    let addr = gw.addr("otlp", "grpc");

    let mut rng = Rng(0x7a11);
    let traces: Vec<Trace> = (0..20_000).map(|n| make_trace(&mut rng, n)).collect();
    let total_spans: usize = traces.iter().map(|t| t.spans.len()).sum();

    // Waves of 1000 traces; each trace's spans are split in three parts
    // sent in three requests, each over its own connection, concurrently.
    for wave in traces.chunks(1000) {
        let mut parts: [Vec<Span>; 3] = Default::default();
        for t in wave {
            let cut1 = t.spans.len() / 3;
            let cut2 = 2 * t.spans.len() / 3;
            // The root goes last, so it is not always first to arrive.
            parts[2].extend_from_slice(&t.spans[..cut1.max(1)]);
            parts[0].extend_from_slice(&t.spans[cut1.max(1)..cut2.max(1)]);
            parts[1].extend_from_slice(&t.spans[cut2.max(1)..]);
        }
        let sends = parts.into_iter().enumerate().map(|(i, spans)| {
            let body = request(&format!("svc-{i}"), spans);
            async move { grpc(addr, TRACE_EXPORT, &body, None).await }
        });
        for reply in futures::future::join_all(sends).await {
            assert_eq!(reply.code, 0, "{}", reply.message);
        }
    }

    let expected: HashMap<[u8; 16], &Trace> = traces
        .iter()
        .filter(|t| expected_kept(t))
        .map(|t| (t.id, t))
        .collect();
    let expected_spans: usize = expected.values().map(|t| t.spans.len()).sum();
    assert!(
        sink.wait_for_spans(expected_spans, Duration::from_secs(60))
            .await,
        "sink has {} of {expected_spans} spans",
        sink.span_count()
    );
    // Once the gateway has exported or dropped every span it took in,
    // nothing more can arrive.
    support::raw::wait_until_accounted(
        gw.addr("telemetry", "metrics"),
        total_spans,
        Duration::from_secs(30),
    )
    .await;

    let mut got: HashMap<[u8; 16], HashSet<Vec<u8>>> = HashMap::new();
    for s in sink.spans() {
        let id: [u8; 16] = s.span.trace_id.as_slice().try_into().unwrap();
        assert!(
            got.entry(id).or_default().insert(s.span.span_id.clone()),
            "a span exported twice"
        );
    }
    // Exactly the promised traces, each complete; nothing of the others.
    for (id, spans) in &got {
        let t = expected
            .get(id)
            .unwrap_or_else(|| panic!("trace {id:02x?} should have been dropped"));
        let want: HashSet<Vec<u8>> = t.spans.iter().map(|s| s.span_id.clone()).collect();
        assert_eq!(spans, &want, "trace {id:02x?} ({:?}) incomplete", t.kind);
    }
    assert_eq!(got.len(), expected.len(), "every promised trace arrived");

    // The shares the policies imply, within 4 sigma.
    let share = |kind: Kind, p: f64| {
        let of_kind: Vec<&Trace> = traces.iter().filter(|t| t.kind == kind).collect();
        let kept = of_kind.iter().filter(|t| got.contains_key(&t.id)).count() as f64;
        let n = of_kind.len() as f64;
        let sigma = (n * p * (1.0 - p)).sqrt();
        assert!(
            (kept - n * p).abs() <= 4.0 * sigma,
            "{kind:?}: kept {kept} of {n}, expected {p}"
        );
    };
    assert!(traces
        .iter()
        .filter(|t| t.kind == Kind::Error)
        .all(|t| got.contains_key(&t.id)));
    share(Kind::Normal, 0.05);
    share(Kind::Slow, 0.25);

    // The counters agree with what the backend saw.
    let kept_spans = sink.span_count();
    let dropped = total_spans - kept_spans;
    let text = wait_for_metrics(
        gw.addr("telemetry", "metrics"),
        &[&format!(
            "otelcol_exporter_sent_spans_total{{exporter=\"otlp/tempo\"}} {kept_spans}"
        )],
        Duration::from_secs(10),
    )
    .await;
    let global = "otelcol_processor_tail_sampling_global_count_traces_sampled_total";
    assert_eq!(
        metric(
            &text,
            global,
            &[("decision", "sampled"), ("sampled", "true")]
        ),
        expected.len() as u64
    );
    assert_eq!(
        metric(
            &text,
            global,
            &[("decision", "not_sampled"), ("sampled", "false")]
        ),
        (traces.len() - expected.len()) as u64
    );
    assert_eq!(
        metric(
            &text,
            "otelcol_processor_tail_sampling_new_trace_id_received_total",
            &[]
        ),
        traces.len() as u64
    );
    assert_eq!(
        metric(
            &text,
            "otelcol_tracegate_dropped_spans_total",
            &[("component", "tail_sampling"), ("reason", "not_sampled")]
        ),
        dropped as u64
    );
    // Every policy votes on every trace; the errors policy samples exactly
    // the error traces.
    assert_eq!(
        metric(
            &text,
            "otelcol_processor_tail_sampling_count_traces_sampled_total",
            &[
                ("decision", "sampled"),
                ("policy", "errors"),
                ("sampled", "true")
            ]
        ),
        traces.iter().filter(|t| t.kind == Kind::Error).count() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_new_traces_stays_within_the_bounds() {
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
    decision_wait: 30s
    num_traces: 200
    max_buffered_bytes: 262144
    policies:
      - name: errors
        type: status_code
        status_code:
          status_codes: [ERROR]
"#,
        "otlp",
        "tail_sampling",
    );
    let gw = Gateway::start(&yaml);
    let addr = gw.addr("otlp", "grpc");
    let mut rng = Rng(0xf100d);
    let mut rss_after_warmup = 0;
    let rounds = 60;
    for round in 0..rounds {
        let spans: Vec<Span> = (0..2000)
            .flat_map(|n| {
                make_trace(&mut rng, round * 2000 + n)
                    .spans
                    .into_iter()
                    .take(2)
            })
            .collect();
        let reply = grpc(addr, TRACE_EXPORT, &request("flood", spans), None).await;
        assert_eq!(reply.code, 0, "{}", reply.message);
        if round == 10 {
            rss_after_warmup = gw.memory_kib("VmRSS");
        }
    }
    let rss = gw.memory_kib("VmRSS");
    // 120 000 traces went in; at most 200 (and 256 KiB of spans) are held.
    assert!(
        rss < rss_after_warmup + 32 * 1024,
        "RSS grew from {rss_after_warmup} KiB to {rss} KiB"
    );
    let early = "otelcol_tracegate_tail_sampling_early_decisions_total";
    let counted = |text: &str| {
        let by = |reason| {
            metric_opt(
                text,
                early,
                &[("processor", "tail_sampling"), ("reason", reason)],
            )
            .unwrap_or(0)
        };
        let pending = metric_opt(
            text,
            "otelcol_tracegate_tail_sampling_pending_traces",
            &[("processor", "tail_sampling")],
        )
        .unwrap_or(0);
        (by("num_traces"), by("max_buffered_bytes"), pending)
    };
    let text = metrics_until(gw.addr("telemetry", "metrics"), |text| {
        let (a, b, pending) = counted(text);
        a + b + pending == 120_000
    })
    .await;
    let (by_count, by_bytes, pending) = counted(&text);
    assert!(pending <= 200, "{pending} traces pending");
    assert!(
        by_count > 0,
        "num_traces made room: {by_count} + {by_bytes}"
    );
}
