//! The collector configs users run today (`tests/fixtures/`) run on the real
//! binary as written, but for their listen addresses (every `0.0.0.0:PORT`
//! becomes `127.0.0.1:0`) and JSON logs, so the test can find the
//! listeners. Their backends are names that do not resolve here: tracegate
//! must start anyway, as the collector does, open every receiver the
//! traces pipeline names, take spans in on each and count them under the
//! `prometheus` exporter's namespace.

use std::time::Duration;

use http::Method;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tracegate_model::jaeger::proto;

use crate::support;
use support::gateway::Gateway;
use support::raw::{grpc, http, wait_for_metrics, TRACE_EXPORT};

const POST_SPANS: &str = "/jaeger.api_v2.CollectorService/PostSpans";

/// JSON logs, so the listeners can be read back. Metrics stay where the
/// seed's `prometheus` exporter puts them.
const JSON_LOGS: &str = r#"
  telemetry:
    logs:
      level: info
      encoding: json
"#;

fn local_listeners(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len());
    let mut rest = yaml;
    while let Some(i) = rest.find("0.0.0.0:") {
        out.push_str(&rest[..i]);
        out.push_str("127.0.0.1:0");
        rest = rest[i + "0.0.0.0:".len()..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

fn otlp_request() -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![0x5b; 16],
                    span_id: vec![0x05; 8],
                    name: "seed".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn jaeger_request() -> Vec<u8> {
    proto::PostSpansRequest {
        batch: Some(proto::Batch {
            spans: vec![proto::Span {
                trace_id: vec![0x6c; 16],
                span_id: vec![0x06; 8],
                operation_name: "seed".into(),
                ..Default::default()
            }],
            process: Some(proto::Process {
                service_name: "seed".into(),
                ..Default::default()
            }),
        }),
    }
    .encode_to_vec()
}

/// Starts `file` as written, sends one span to each of its receivers and
/// checks every one was counted under `namespace`.
async fn runs_as_written(file: &str, receivers: &[(&str, &str)], namespace: &str) {
    let seed = support::fixture(file);
    // `service:` is each seed's last section.
    let gw = Gateway::start(&format!("{}{JSON_LOGS}", local_listeners(&seed)));
    let mut listening: Vec<(&str, &str)> = gw
        .listening
        .iter()
        .map(|(c, p, _)| (c.as_str(), p.as_str()))
        .filter(|(c, _)| *c != "telemetry")
        .collect();
    listening.sort_unstable();
    let mut expected = receivers.to_vec();
    expected.sort_unstable();
    assert_eq!(listening, expected, "{file}: its receivers listen");

    for &(receiver, protocol) in receivers {
        let addr = gw.addr(receiver, protocol);
        match (receiver, protocol) {
            ("otlp", "grpc") => {
                let reply = grpc(addr, TRACE_EXPORT, &otlp_request(), None).await;
                assert_eq!(reply.code, 0, "{file}: {}", reply.message);
            }
            ("otlp", "http") => {
                let reply = http(
                    addr,
                    Method::POST,
                    "/v1/traces",
                    &[("content-type", "application/x-protobuf")],
                    otlp_request(),
                )
                .await;
                assert_eq!(reply.status, 200, "{file}: {:?}", reply.body);
            }
            ("jaeger", "grpc") => {
                let reply = grpc(addr, POST_SPANS, &jaeger_request(), None).await;
                assert_eq!(reply.code, 0, "{file}: {}", reply.message);
            }
            other => panic!("{file}: no request for {other:?}"),
        }
    }
    let accepted: Vec<String> = receivers
        .iter()
        .map(|(receiver, protocol)| {
            format!(
                "{namespace}_receiver_accepted_spans_total{{receiver=\"{receiver}\",transport=\"{protocol}\"}} 1"
            )
        })
        .collect();
    let needles: Vec<&str> = accepted.iter().map(String::as_str).collect();
    wait_for_metrics(
        gw.addr("telemetry", "metrics"),
        &needles,
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jaeger_v2_collector_config_runs_as_written() {
    runs_as_written(
        "jaeger-v2-collector.yaml",
        &[("otlp", "grpc"), ("otlp", "http"), ("jaeger", "grpc")],
        "otel_collector",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_daemonset_config_runs_as_written() {
    runs_as_written(
        "otel-collector-daemonset.yaml",
        &[("otlp", "grpc"), ("otlp", "http")],
        "otelcol",
    )
    .await;
}
