//! End to end through the real binary: Jaeger thrift as jaeger-client
//! SDKs send it (emitBatch over UDP in the compact and binary protocols,
//! a binary `Batch` posted to /api/traces) arrives at an in-test OTLP
//! backend as OTLP; malformed packets are counted and dropped.
//!
//! The packets come from tracegate's own thrift encoder and, when a Python
//! with `jaeger_client` is available (`JAEGER_CLIENT_PYTHON`, else
//! `python3`), from the real Python jaeger-client.

use crate::support;

use std::time::Duration;

use http::{Method, StatusCode};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as OtlpStatus;
use support::gateway::{pipeline_to, Gateway};
use support::python;
use support::raw;
use support::sink::Sink;
use tokio::net::UdpSocket;
use tracegate_model::thrift::{self, Batch, Log, Process, Span, SpanRef, Tag};

const WAIT: Duration = Duration::from_secs(10);

fn config(sink: std::net::SocketAddr) -> String {
    pipeline_to(
        sink,
        r#"
receivers:
  jaeger:
    protocols:
      thrift_compact:
        endpoint: 127.0.0.1:0
      thrift_binary:
        endpoint: 127.0.0.1:0
      thrift_http:
        endpoint: 127.0.0.1:0
"#,
        "jaeger",
        "",
    )
}

/// A batch as a jaeger-client builds it: process with the client's tags,
/// a server span with a child (references and parentSpanId both set),
/// tags of every type, a log.
fn batch(service: &str, trace: i64) -> Batch {
    Batch {
        process: Process {
            service_name: service.into(),
            tags: Some(vec![
                Tag::string("jaeger.version", "Go-2.30.0"),
                Tag::string("hostname", "web-1"),
                Tag::string("ip", "10.1.2.3"),
            ]),
        },
        spans: vec![
            Span {
                trace_id_low: trace,
                trace_id_high: 0x7a,
                span_id: 1,
                parent_span_id: 0,
                operation_name: format!("{service}-root"),
                references: None,
                flags: 1,
                start_time: 1_700_000_000_000_000,
                duration: 1_500,
                tags: Some(vec![
                    Tag::string("span.kind", "server"),
                    Tag::string("sampler.type", "const"),
                    Tag::bool("sampler.param", true),
                    Tag::long("http.status_code", 200),
                    Tag::double("load", 0.75),
                ]),
                logs: Some(vec![Log {
                    timestamp: 1_700_000_000_000_500,
                    fields: vec![Tag::string("event", "cache-miss"), Tag::string("key", "k1")],
                }]),
            },
            Span {
                trace_id_low: trace,
                trace_id_high: 0x7a,
                span_id: 2,
                parent_span_id: 1,
                operation_name: format!("{service}-child"),
                references: Some(vec![SpanRef {
                    ref_type: 0,
                    trace_id_low: trace,
                    trace_id_high: 0x7a,
                    span_id: 1,
                }]),
                flags: 1,
                start_time: 1_700_000_000_000_100,
                duration: 200,
                tags: Some(vec![
                    Tag::string("span.kind", "client"),
                    Tag::bool("error", true),
                ]),
                logs: None,
            },
        ],
        seq_no: Some(1),
    }
}

fn check_service(spans: &[support::sink::ReceivedSpan], service: &str, trace: i64) {
    let root = spans
        .iter()
        .find(|s| s.span.name == format!("{service}-root"))
        .unwrap_or_else(|| panic!("{service}-root missing"));
    let child = spans
        .iter()
        .find(|s| s.span.name == format!("{service}-child"))
        .unwrap_or_else(|| panic!("{service}-child missing"));
    assert_eq!(
        root.resource_attr("service.name"),
        Some(&Value::StringValue(service.into()))
    );
    assert_eq!(
        root.resource_attr("host.name"),
        Some(&Value::StringValue("web-1".into()))
    );
    assert_eq!(
        root.resource_attr("opencensus.exporterversion"),
        Some(&Value::StringValue("Jaeger-Go-2.30.0".into()))
    );
    let mut trace_id = vec![0, 0, 0, 0, 0, 0, 0, 0x7a];
    trace_id.extend_from_slice(&trace.to_be_bytes());
    assert_eq!(root.span.trace_id, trace_id);
    assert_eq!(root.span.span_id, 1u64.to_be_bytes());
    assert!(root.span.parent_span_id.is_empty());
    assert_eq!(root.span.kind, SpanKind::Server as i32);
    assert_eq!(root.span.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(root.span.end_time_unix_nano, 1_700_000_000_001_500_000);
    assert_eq!(
        root.attr("sampler.type"),
        Some(&Value::StringValue("const".into()))
    );
    assert_eq!(root.attr("sampler.param"), Some(&Value::BoolValue(true)));
    assert_eq!(root.attr("http.status_code"), Some(&Value::IntValue(200)));
    assert_eq!(root.attr("load"), Some(&Value::DoubleValue(0.75)));
    assert_eq!(root.span.events.len(), 1);
    assert_eq!(root.span.events[0].name, "cache-miss");
    assert_eq!(
        root.span.events[0].time_unix_nano,
        1_700_000_000_000_500_000
    );
    assert_eq!(child.span.parent_span_id, 1u64.to_be_bytes());
    assert!(child.span.links.is_empty());
    assert_eq!(child.span.kind, SpanKind::Client as i32);
    assert_eq!(
        child.span.status.as_ref().unwrap().code,
        OtlpStatus::Error as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thrift_over_udp_and_http_arrives_as_otlp() {
    let sink = Sink::start().await;
    let gw = Gateway::start(&config(sink.addr));
    let compact = gw.addr("jaeger", "thrift_compact");
    let binary = gw.addr("jaeger", "thrift_binary");
    let http = gw.addr("jaeger", "thrift_http");

    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Garbage on both ports is dropped and counted.
    udp.send_to(b"\x82\x81\x00\x09emitBatch\x1c\xff", compact)
        .await
        .unwrap();
    udp.send_to(b"not thrift", binary).await.unwrap();
    udp.send_to(
        &thrift::encode_agent_compact(&batch("compact-svc", 11)),
        compact,
    )
    .await
    .unwrap();
    udp.send_to(
        &thrift::encode_agent_binary(&batch("binary-svc", 12)),
        binary,
    )
    .await
    .unwrap();
    let reply = raw::http(
        http,
        Method::POST,
        "/api/traces",
        &[("content-type", "application/x-thrift")],
        thrift::encode_batch_binary(&batch("http-svc", 13)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let reply = raw::http(
        http,
        Method::POST,
        "/api/traces",
        &[("content-type", "application/x-thrift")],
        &b"\x0c\x00\x01"[..],
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&reply.body).starts_with("Unable to process request body"));

    assert!(
        sink.wait_for_spans(6, WAIT).await,
        "only {} spans",
        sink.span_count()
    );
    let spans = sink.spans();
    assert_eq!(spans.len(), 6);
    check_service(&spans, "compact-svc", 11);
    check_service(&spans, "binary-svc", 12);
    check_service(&spans, "http-svc", 13);

    raw::wait_for_metrics(
        gw.addr("telemetry", "metrics"),
        &[
            "otelcol_receiver_accepted_spans_total{receiver=\"jaeger\",transport=\"thrift_compact\"} 2",
            "otelcol_receiver_accepted_spans_total{receiver=\"jaeger\",transport=\"thrift_binary\"} 2",
            "otelcol_receiver_accepted_spans_total{receiver=\"jaeger\",transport=\"thrift_http\"} 2",
            "otelcol_receiver_rejected_requests_total{receiver=\"jaeger\",transport=\"thrift_compact\",reason=\"malformed\"} 1",
            "otelcol_receiver_rejected_requests_total{receiver=\"jaeger\",transport=\"thrift_binary\",reason=\"malformed\"} 1",
            "otelcol_receiver_rejected_requests_total{receiver=\"jaeger\",transport=\"thrift_http\",reason=\"malformed\"} 1",
        ],
        WAIT,
    )
    .await;
}

/// The real Python jaeger-client, as the seed's example app uses it.
const PYTHON_CLIENT: &str = r#"
import sys, time
from jaeger_client import Config
cfg = Config(config={
    'sampler': {'type': 'const', 'param': 1},
    'local_agent': {'reporting_host': '127.0.0.1', 'reporting_port': int(sys.argv[1])},
    'tags': {'deployment': 'e2e'},
}, service_name='py-e2e', validate=True)
tracer = cfg.initialize_tracer()
with tracer.start_span('checkout') as parent:
    parent.set_tag('http.method', 'POST')
    parent.set_tag('items', 3)
    parent.log_kv({'event': 'payment', 'amount': 'ok'})
    with tracer.start_span('charge', child_of=parent) as child:
        child.set_tag('error', True)
time.sleep(0.3)
tracer.close()
time.sleep(0.3)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_jaeger_client_reaches_otlp() {
    let Some(python) =
        python::with_module("JAEGER_CLIENT_PYTHON", "jaeger_client", "jaeger-client six")
    else {
        return;
    };
    let sink = Sink::start().await;
    let gw = Gateway::start(&config(sink.addr));
    let port = gw.addr("jaeger", "thrift_compact").port().to_string();
    python::run(python, &["-c", PYTHON_CLIENT, &port]).await;
    assert!(
        sink.wait_for_spans(2, WAIT).await,
        "only {} spans",
        sink.span_count()
    );
    let spans = sink.spans();
    let parent = spans.iter().find(|s| s.span.name == "checkout").unwrap();
    let child = spans.iter().find(|s| s.span.name == "charge").unwrap();
    assert_eq!(
        parent.resource_attr("service.name"),
        Some(&Value::StringValue("py-e2e".into()))
    );
    assert_eq!(
        parent.resource_attr("deployment"),
        Some(&Value::StringValue("e2e".into()))
    );
    assert!(matches!(
        parent.resource_attr("opencensus.exporterversion"),
        Some(Value::StringValue(v)) if v.starts_with("Jaeger-Python-")
    ));
    assert_eq!(
        parent.attr("http.method"),
        Some(&Value::StringValue("POST".into()))
    );
    assert_eq!(parent.attr("items"), Some(&Value::IntValue(3)));
    assert_eq!(
        parent.attr("sampler.type"),
        Some(&Value::StringValue("const".into()))
    );
    assert_eq!(parent.span.events.len(), 1);
    assert_eq!(parent.span.events[0].name, "payment");
    assert_eq!(child.span.trace_id, parent.span.trace_id);
    assert_eq!(child.span.parent_span_id, parent.span.span_id);
    assert_eq!(
        child.span.status.as_ref().unwrap().code,
        OtlpStatus::Error as i32
    );
}
