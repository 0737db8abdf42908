//! End to end through the real binary: Zipkin v2 JSON posted to the
//! `zipkin` receiver arrives at an in-test OTLP backend as OTLP, and
//! malformed JSON is answered 400.

use crate::support;

use std::time::Duration;

use http::{Method, StatusCode};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as OtlpStatus;
use support::gateway::{Gateway, TELEMETRY};
use support::raw;
use support::sink::Sink;

const WAIT: Duration = Duration::from_secs(10);

fn config(sink: std::net::SocketAddr) -> String {
    format!(
        r#"
receivers:
  zipkin:
    endpoint: 127.0.0.1:0
exporters:
  otlp:
    endpoint: 127.0.0.1:{}
    tls:
      insecure: true
service:
  pipelines:
    traces:
      receivers: [zipkin]
      exporters: [otlp]
{TELEMETRY}"#,
        sink.port()
    )
}

/// The Zipkin quickstart's span (the zipkin-api example) and a client
/// span of another service with a shared server half, annotations, an
/// error tag and a 128-bit trace id.
const SPANS: &str = r#"[
  {"id": "352bff9a74ca9ad2", "traceId": "5af7183fb1d4cf5f", "parentId": "6b221d5bc9e6496c",
   "name": "get /api", "timestamp": 1556604172355737, "duration": 1431, "kind": "SERVER",
   "localEndpoint": {"serviceName": "backend", "ipv4": "192.168.99.1", "port": 3306},
   "remoteEndpoint": {"ipv4": "172.19.0.2", "port": 58648},
   "tags": {"http.method": "GET", "http.path": "/api"}},
  {"traceId": "463ac35c9f6413ad48485a3953bb6124", "id": "a2fb4a1d1a96d312",
   "name": "get", "kind": "CLIENT", "timestamp": 1472470996199000, "duration": 207000,
   "localEndpoint": {"serviceName": "frontend"},
   "remoteEndpoint": {"serviceName": "backend"},
   "annotations": [{"timestamp": 1472470996238000, "value": "ws"}],
   "tags": {"error": "true"}},
  {"traceId": "463ac35c9f6413ad48485a3953bb6124", "id": "a2fb4a1d1a96d312",
   "parentId": "a2fb4a1d1a96d312", "shared": true,
   "name": "get", "kind": "SERVER", "timestamp": 1472470996250000, "duration": 100000,
   "localEndpoint": {"serviceName": "backend"}}
]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipkin_json_arrives_as_otlp_and_malformed_json_is_400() {
    let sink = Sink::start().await;
    let gw = Gateway::start(&config(sink.addr));
    let addr = gw.addr("zipkin", "http");

    let reply = raw::http(
        addr,
        Method::POST,
        "/api/v2/spans",
        &[("content-type", "application/json")],
        SPANS,
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);

    assert!(
        sink.wait_for_spans(3, WAIT).await,
        "only {} spans",
        sink.span_count()
    );
    let spans = sink.spans();
    assert_eq!(spans.len(), 3);
    let quickstart = spans.iter().find(|s| s.span.name == "get /api").unwrap();
    assert_eq!(
        quickstart.resource_attr("service.name"),
        Some(&Value::StringValue("backend".into()))
    );
    assert_eq!(quickstart.span.kind, SpanKind::Server as i32);
    assert_eq!(
        quickstart.span.trace_id,
        [0, 0, 0, 0, 0, 0, 0, 0, 0x5a, 0xf7, 0x18, 0x3f, 0xb1, 0xd4, 0xcf, 0x5f]
    );
    assert_eq!(quickstart.span.span_id, 0x352bff9a74ca9ad2u64.to_be_bytes());
    assert_eq!(
        quickstart.span.parent_span_id,
        0x6b221d5bc9e6496cu64.to_be_bytes()
    );
    assert_eq!(
        quickstart.span.start_time_unix_nano,
        1_556_604_172_355_737_000
    );
    assert_eq!(
        quickstart.span.end_time_unix_nano,
        1_556_604_172_357_168_000
    );
    assert_eq!(
        quickstart.attr("http.method"),
        Some(&Value::StringValue("GET".into()))
    );
    assert_eq!(
        quickstart.attr("http.path"),
        Some(&Value::StringValue("/api".into()))
    );
    assert_eq!(
        quickstart.attr("net.host.ip"),
        Some(&Value::StringValue("192.168.99.1".into()))
    );
    assert_eq!(
        quickstart.attr("net.host.port"),
        Some(&Value::IntValue(3306))
    );
    assert_eq!(
        quickstart.attr("net.peer.ip"),
        Some(&Value::StringValue("172.19.0.2".into()))
    );
    assert_eq!(
        quickstart.attr("net.peer.port"),
        Some(&Value::IntValue(58648))
    );

    let client = spans
        .iter()
        .find(|s| s.span.kind == SpanKind::Client as i32)
        .unwrap();
    assert_eq!(
        client.resource_attr("service.name"),
        Some(&Value::StringValue("frontend".into()))
    );
    assert_eq!(client.span.trace_id.len(), 16);
    assert_eq!(client.span.trace_id[0], 0x46);
    assert_eq!(
        client.span.status.as_ref().unwrap().code,
        OtlpStatus::Error as i32
    );
    assert_eq!(
        client.attr("peer.service"),
        Some(&Value::StringValue("backend".into()))
    );
    assert_eq!(client.span.events.len(), 1);
    assert_eq!(client.span.events[0].name, "ws");
    assert_eq!(
        client.span.events[0].time_unix_nano,
        1_472_470_996_238_000_000
    );
    let shared = spans
        .iter()
        .find(|s| s.span.name == "get" && s.span.kind == SpanKind::Server as i32)
        .unwrap();
    assert_eq!(shared.span.span_id, client.span.span_id);
    assert!(shared.span.parent_span_id.is_empty(), "no self-parent");

    // Malformed JSON: 400 with the reason, nothing forwarded.
    let reply = raw::http(
        addr,
        Method::POST,
        "/api/v2/spans",
        &[("content-type", "application/json")],
        "[{\"traceId\": \"5af7183fb1d4cf5f\", \"id\": ",
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let text = String::from_utf8_lossy(&reply.body);
    assert!(text.contains("invalid Zipkin v2 JSON"), "{text}");
    let reply = raw::http(
        addr,
        Method::POST,
        "/api/v2/spans",
        &[("content-type", "application/json")],
        r#"[{"traceId": "xyz", "id": "1"}]"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&reply.body).contains("$[0].traceId"));

    raw::wait_for_metrics(
        gw.addr("telemetry", "metrics"),
        &[
            "otelcol_receiver_accepted_spans_total{receiver=\"zipkin\",transport=\"http\"} 3",
            "otelcol_receiver_rejected_requests_total{receiver=\"zipkin\",transport=\"http\",reason=\"malformed\"} 2",
        ],
        WAIT,
    )
    .await;
    assert_eq!(sink.span_count(), 3);
}
