//! End to end through the real binary: Zipkin v2 JSON posted to the
//! `zipkin` receiver arrives at an in-test OTLP backend as OTLP, and
//! malformed JSON is answered 400.
//!
//! When a Python with `py_zipkin` is available (`PY_ZIPKIN_PYTHON`, else
//! `python3`), the real py_zipkin client's failed spans are shown to be
//! errors: a tail sampler keeping ERROR traces keeps exactly those.

use crate::support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use http::{Method, StatusCode};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as OtlpStatus;
use support::gateway::{pipeline_to, Gateway};
use support::python;
use support::raw;
use support::sink::Sink;

const WAIT: Duration = Duration::from_secs(10);

fn config(sink: std::net::SocketAddr) -> String {
    pipeline_to(
        sink,
        r#"
receivers:
  zipkin:
    endpoint: 127.0.0.1:0
"#,
        "zipkin",
        "",
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
        quickstart.attr("network.local.address"),
        Some(&Value::StringValue("192.168.99.1".into()))
    );
    assert_eq!(
        quickstart.attr("net.host.port"),
        Some(&Value::IntValue(3306))
    );
    assert_eq!(
        quickstart.attr("network.peer.address"),
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
        client.attr("service.peer.name"),
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

/// The real py_zipkin application of `tests/clients/py_zipkin_errors.py`.
const PY_ZIPKIN_CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/clients/py_zipkin_errors.py"
);

/// The value of the tail sampler's global decision counter for one
/// decision, 0 while it has none.
fn decisions(text: &str, decision: &str) -> u64 {
    let sampled = if decision == "sampled" {
        "true"
    } else {
        "false"
    };
    text.lines()
        .filter(|l| {
            l.starts_with("otelcol_processor_tail_sampling_global_count_traces_sampled_total{")
                && l.contains(&format!("decision=\"{decision}\""))
                && l.contains(&format!("sampled=\"{sampled}\""))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// py_zipkin tags a span that raised `error=<type>: <message>`. Through a
/// tail sampler whose only policy keeps ERROR traces, every such trace
/// must be kept whole, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_zipkin_failed_spans_are_errors_to_a_tail_sampler() {
    let Some(python) = python::with_module("PY_ZIPKIN_PYTHON", "py_zipkin", "py_zipkin") else {
        return;
    };
    let sink = Sink::start().await;
    let gw = Gateway::start(&pipeline_to(
        sink.addr,
        r#"
receivers:
  zipkin:
    endpoint: 127.0.0.1:0
processors:
  tail_sampling:
    decision_wait: 500ms
    policies:
      - name: errors
        type: status_code
        status_code:
          status_codes: [ERROR]
"#,
        "zipkin",
        "tail_sampling",
    ));
    let url = format!("http://{}/api/v2/spans", gw.addr("zipkin", "http"));
    let stdout = python::run(python, &[PY_ZIPKIN_CLIENT, &url, "200", "4"]).await;
    // Trace ids as tracegate writes them: 64-bit ids in the low half.
    let mut errors = HashSet::new();
    let mut oks = HashSet::new();
    for line in stdout.lines() {
        let (kind, id) = line.split_once(' ').expect("`kind id` lines");
        let id = format!("{id:0>32}");
        match kind {
            "error" => errors.insert(id),
            "ok" => oks.insert(id),
            other => panic!("unexpected line kind {other:?}"),
        };
    }
    assert_eq!((errors.len(), oks.len()), (50, 150));

    // Every trace decided (each trace's spans came in one request), then
    // every kept span exported.
    let metrics = gw.addr("telemetry", "metrics");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let reply = raw::http(metrics, Method::GET, "/metrics", &[], "").await;
        let text = String::from_utf8_lossy(&reply.body).into_owned();
        let (kept, dropped) = (decisions(&text, "sampled"), decisions(&text, "not_sampled"));
        if kept + dropped >= 200 {
            assert_eq!((kept, dropped), (50, 150), "decisions:\n{text}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "decisions never reached 200:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sink.wait_for_spans(150, WAIT).await,
        "only {} of the error traces' 150 spans",
        sink.span_count()
    );
    raw::wait_for_metrics(
        metrics,
        &["otelcol_exporter_sent_spans_total{exporter=\"otlp\"} 150"],
        WAIT,
    )
    .await;

    let mut kept: HashMap<String, Vec<String>> = HashMap::new();
    for s in sink.spans() {
        let id: String = s.span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
        kept.entry(id).or_default().push(s.span.name.clone());
        if s.span.name == "charge" {
            assert_eq!(
                s.span.status.as_ref().map(|st| st.code),
                Some(OtlpStatus::Error as i32)
            );
            assert!(matches!(
                s.attr("error"),
                Some(Value::StringValue(m)) if m.starts_with("PaymentDeclined: card declined")
            ));
        }
    }
    let kept_ids: HashSet<String> = kept.keys().cloned().collect();
    assert_eq!(kept_ids, errors, "exactly the error traces are kept");
    for (id, names) in &mut kept {
        names.sort();
        assert_eq!(names, &["charge", "checkout", "load-cart"], "trace {id}");
    }
}
