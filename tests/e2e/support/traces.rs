//! Synthetic traces of the three classes `config/gateway.yaml`'s policy
//! tells apart (errors, slow, the rest), what that policy keeps of them,
//! and a gateway running that config.

use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tracegate_sampling::tail::{keep_threshold, trace_randomness};

use super::gateway::Gateway;
use super::sink::Sink;
use super::Rng;

/// The card's tail-sampling policies (every error trace, 25 % of slow
/// ones, 5 % of the rest), as the list under a `tail_sampling:` block's
/// `policies:` key at its usual indentation.
pub const CARD_POLICIES: &str = "      - name: errors
        type: status_code
        status_code:
          status_codes: [ERROR]
      - name: slow
        type: latency
        latency:
          threshold_ms: 1000
          fraction_on_match: 0.25
      - name: baseline
        type: always_sample
        fraction_on_match: 0.05
";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Error,
    Slow,
    Normal,
}

pub struct Trace {
    pub id: [u8; 16],
    pub kind: Kind,
    pub spans: Vec<Span>,
}

/// Trace number `n`, of `spans` spans (a number drawn from the range):
/// 5 % have an error span, 10 % last 1.5 s, the rest 50 ms. The first span
/// is the root and lasts the whole trace.
pub fn make_trace(rng: &mut Rng, n: usize, spans: RangeInclusive<usize>) -> Trace {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&rng.next().to_be_bytes());
    id[8..].copy_from_slice(&rng.next().to_be_bytes());
    let kind = match rng.below(100) {
        0..=4 => Kind::Error,
        5..=14 => Kind::Slow,
        _ => Kind::Normal,
    };
    let count = spans.start() + rng.below((spans.end() - spans.start() + 1) as u64) as usize;
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

/// An encoded request of `spans` under one resource of service `service`.
pub fn request(service: &str, spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
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
pub fn expected_kept(trace: &Trace) -> bool {
    let r = trace_randomness(&trace.id);
    match trace.kind {
        Kind::Error => true,
        Kind::Slow => r >= keep_threshold(0.25) || r >= keep_threshold(0.05),
        Kind::Normal => r >= keep_threshold(0.05),
    }
}

/// Waits (up to `within`) until `sink` holds as many spans as the traces
/// [`expected_kept`] promises of `traces`; panics on timeout. Returns the
/// number of promised traces.
pub async fn wait_for_kept(sink: &Sink, traces: &[Trace], within: Duration) -> usize {
    let kept: Vec<&Trace> = traces.iter().filter(|t| expected_kept(t)).collect();
    let spans: usize = kept.iter().map(|t| t.spans.len()).sum();
    assert!(
        sink.wait_for_spans(spans, within).await,
        "sink has {} of {spans} spans",
        sink.span_count()
    );
    kept.len()
}

/// Checks what `sink` received of `traces`: no span twice, only traces
/// [`expected_kept`] promises, each whole, and every one of them. Returns
/// the ids of the traces it received.
pub fn assert_kept_whole_once(sink: &Sink, traces: &[Trace]) -> HashSet<[u8; 16]> {
    let expected: HashMap<[u8; 16], &Trace> = traces
        .iter()
        .filter(|t| expected_kept(t))
        .map(|t| (t.id, t))
        .collect();
    let mut got: HashMap<[u8; 16], HashSet<Vec<u8>>> = HashMap::new();
    for s in sink.spans() {
        let id: [u8; 16] = s.span.trace_id.as_slice().try_into().unwrap();
        assert!(
            got.entry(id).or_default().insert(s.span.span_id.clone()),
            "a span exported twice"
        );
    }
    for (id, spans) in &got {
        let t = expected
            .get(id)
            .unwrap_or_else(|| panic!("trace {id:02x?} should have been dropped"));
        let want: HashSet<Vec<u8>> = t.spans.iter().map(|s| s.span_id.clone()).collect();
        assert_eq!(spans, &want, "trace {id:02x?} ({:?}) incomplete", t.kind);
    }
    assert_eq!(got.len(), expected.len(), "every promised trace arrived");
    got.into_keys().collect()
}

/// Checks that the share of `kind`'s traces among `kept` is within
/// `sigmas` standard deviations of `p`.
pub fn assert_share(traces: &[Trace], kept: &HashSet<[u8; 16]>, kind: Kind, p: f64, sigmas: f64) {
    let of_kind: Vec<&Trace> = traces.iter().filter(|t| t.kind == kind).collect();
    let n = of_kind.len() as f64;
    let got = of_kind.iter().filter(|t| kept.contains(&t.id)).count() as f64;
    let sigma = (n * p * (1.0 - p)).sqrt();
    assert!(
        (got - n * p).abs() <= sigmas * sigma,
        "{kind:?}: kept {got} of {n}, expected {p}"
    );
}

/// tracegate on `config/gateway.yaml`, every listener on an ephemeral
/// loopback port, kept traces exported to `sink`, each trace decided 2 s
/// after its first span. The settings go to this process alone: the other
/// end-to-end tests share the test process and its environment. Its
/// hand-over's `k8s` resolver watches an API that lists no gateways, so it
/// works alone and keeps what it is sent (`super::kube`).
pub fn start_gateway(sink: &Sink) -> Gateway {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/gateway.yaml"
    ))
    .expect("config/gateway.yaml");
    let tempo = format!("127.0.0.1:{}", sink.addr.port());
    let [api, account] = super::kube::idle_api_env();
    Gateway::start_with(
        &yaml,
        &[],
        &[
            (api.0, api.1.as_str()),
            (account.0, account.1.as_str()),
            ("TRACEGATE_OTLP_GRPC_ENDPOINT", "127.0.0.1:0"),
            ("TRACEGATE_OTLP_HTTP_ENDPOINT", "127.0.0.1:0"),
            ("TRACEGATE_HEALTH_ENDPOINT", "127.0.0.1:0"),
            ("TRACEGATE_METRICS_ADDRESS", "127.0.0.1:0"),
            ("TRACEGATE_TEMPO_ENDPOINT", tempo.as_str()),
            ("TRACEGATE_DECISION_WAIT", "2s"),
            ("TRACEGATE_LOG_ENCODING", "json"),
        ],
    )
}
