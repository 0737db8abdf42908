//! End to end through the real binary: real OpenTelemetry SDK exporters and
//! the seed's curl check send to tracegate, which exports to in-test OTLP
//! backends.

use crate::support;

use std::time::Duration;

use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Array, KeyValue, StringValue, Value};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use support::gateway::{Gateway, TELEMETRY};
use support::sink::Sink;

const WAIT: Duration = Duration::from_secs(10);

/// OTLP gRPC + HTTP in, batch, OTLP gRPC out to `sink_addr`, plaintext.
fn passthrough_config(exporters: &str, pipeline_exporters: &str, batch: &str) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
      http:
        endpoint: 127.0.0.1:0
processors:
  batch:
{batch}
exporters:
{exporters}
extensions:
  health_check:
    endpoint: 127.0.0.1:0
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [{pipeline_exporters}]
{TELEMETRY}"#
    )
}

fn plain_otlp_exporter(name: &str, addr: std::net::SocketAddr) -> String {
    format!(
        "  {name}:\n    endpoint: 127.0.0.1:{}\n    tls:\n      insecure: true\n    retry_on_failure:\n      initial_interval: 10ms\n",
        addr.port()
    )
}

/// The Rust SDK's OTLP/gRPC exporter, sending to tracegate at `addr`.
fn sdk_grpc_exporter(addr: std::net::SocketAddr) -> opentelemetry_otlp::SpanExporter {
    opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{addr}"))
        .build()
        .unwrap()
}

fn sdk_provider(exporter: opentelemetry_otlp::SpanExporter, service: &str) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .build()
}

/// The SDK's batch processor runs its own thread without a tokio reactor,
/// which the hyper-based HTTP exporter needs; the simple processor exports
/// on the calling thread, which `emit_spans` runs inside the runtime.
fn sdk_provider_simple(
    exporter: opentelemetry_otlp::SpanExporter,
    service: &str,
) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .build()
}

/// Emits `n` spans with one attribute of every type, then flushes.
async fn emit_spans(provider: SdkTracerProvider, n: usize, prefix: &'static str) {
    tokio::task::spawn_blocking(move || {
        let tracer = provider.tracer("e2e");
        for i in 0..n {
            let mut span = tracer.start(format!("{prefix}-{i}"));
            span.set_attribute(KeyValue::new("http.request.method", "GET"));
            span.set_attribute(KeyValue::new("index", i as i64));
            span.set_attribute(KeyValue::new("ratio", 0.5));
            span.set_attribute(KeyValue::new("cached", true));
            span.set_attribute(KeyValue::new(
                "tags",
                Value::Array(Array::String(vec![
                    StringValue::from("a"),
                    StringValue::from("b"),
                ])),
            ));
            span.end();
        }
        provider.force_flush().expect("flush");
        provider.shutdown().expect("shutdown");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_grpc_and_http_spans_arrive_with_attributes_intact() {
    let sink = Sink::start().await;
    let gw = Gateway::start(&passthrough_config(
        &plain_otlp_exporter("otlp", sink.addr),
        "otlp",
        "    timeout: 20ms",
    ));

    let grpc = sdk_grpc_exporter(gw.addr("otlp", "grpc"));
    emit_spans(sdk_provider(grpc, "svc-grpc"), 50, "grpc").await;

    let http = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("http://{}/v1/traces", gw.addr("otlp", "http")))
        .build()
        .unwrap();
    emit_spans(sdk_provider_simple(http, "svc-http"), 50, "http").await;

    assert!(
        sink.wait_for_spans(100, WAIT).await,
        "only {} spans arrived",
        sink.span_count()
    );
    let spans = sink.spans();
    assert_eq!(spans.len(), 100, "no span duplicated");
    for (prefix, service) in [("grpc", "svc-grpc"), ("http", "svc-http")] {
        for i in 0..50 {
            let name = format!("{prefix}-{i}");
            let s = spans
                .iter()
                .find(|s| s.span.name == name)
                .unwrap_or_else(|| panic!("span {name} missing"));
            assert_eq!(
                s.resource_attr("service.name"),
                Some(&any_value::Value::StringValue(service.into()))
            );
            assert_eq!(s.attr("index"), Some(&any_value::Value::IntValue(i)));
            assert_eq!(
                s.attr("http.request.method"),
                Some(&any_value::Value::StringValue("GET".into()))
            );
            assert_eq!(s.attr("ratio"), Some(&any_value::Value::DoubleValue(0.5)));
            assert_eq!(s.attr("cached"), Some(&any_value::Value::BoolValue(true)));
            match s.attr("tags") {
                Some(any_value::Value::ArrayValue(a)) => assert_eq!(a.values.len(), 2),
                other => panic!("tags: {other:?}"),
            }
            assert_eq!(s.span.trace_id.len(), 16);
            assert_eq!(s.span.span_id.len(), 8);
        }
    }

    // Self-telemetry in the collector's dialect.
    support::raw::wait_for_metrics(
        gw.addr("telemetry", "metrics"),
        &[
            "otelcol_receiver_accepted_spans_total{receiver=\"otlp\",transport=\"grpc\"} 50",
            "otelcol_receiver_accepted_spans_total{receiver=\"otlp\",transport=\"http\"} 50",
            "otelcol_exporter_sent_spans_total{exporter=\"otlp\"} 100",
            "otelcol_exporter_queue_capacity{exporter=\"otlp\"}",
            "otelcol_processor_batch_batch_send_size",
            "otelcol_processor_batch_metadata_cardinality{processor=\"batch\"} 1",
        ],
        WAIT,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_curl_json_check_is_accepted_and_arrives() {
    let sink = Sink::start().await;
    let gw = Gateway::start(&passthrough_config(
        &plain_otlp_exporter("otlp", sink.addr),
        "otlp",
        "    timeout: 20ms",
    ));
    let script = support::fixture("otlp-json-check.sh");
    let url = "http://otel-collector.monitoring:4318";
    assert!(script.contains(url), "the seed script changed");
    let script = script.replace(url, &format!("http://{}", gw.addr("otlp", "http")));
    let out = tokio::process::Command::new("bash")
        .args(["-c", &format!("set -e\n{script}\n")])
        .output()
        .await
        .expect("run bash");
    assert!(out.status.success(), "curl check failed: {out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "{}",
        "OTLP/JSON success body"
    );
    assert!(sink.wait_for_spans(1, WAIT).await);
    let spans = sink.spans();
    assert_eq!(spans[0].span.name, "test-span");
    assert_eq!(
        hex(&spans[0].span.trace_id),
        "5b8aa5a2d2c872e8321cf37308d69df2"
    );
    assert_eq!(
        spans[0].resource_attr("service.name"),
        Some(&any_value::Value::StringValue("test-service".into()))
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_over_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = support::tls::make(dir.path());
    let sink = Sink::start_tls(&pki.cert_pem, &pki.key_pem).await;
    let exporter = format!(
        "  otlp:\n    endpoint: localhost:{}\n    tls:\n      ca_file: {}\n",
        sink.addr.port(),
        pki.ca_file.display()
    );
    let gw = Gateway::start(&passthrough_config(&exporter, "otlp", "    timeout: 10ms"));
    let grpc = sdk_grpc_exporter(gw.addr("otlp", "grpc"));
    emit_spans(sdk_provider(grpc, "svc-tls"), 5, "tls").await;
    assert!(
        sink.wait_for_spans(5, WAIT).await,
        "spans did not arrive over TLS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ca_file_the_system_trust_store_verifies_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let pki = support::tls::make(dir.path());
    let sink = Sink::start_tls(&pki.cert_pem, &pki.key_pem).await;
    // TLS on, no ca_file: the system's store decides, which SSL_CERT_FILE
    // points at the test CA here (as it would at a distribution's bundle).
    let exporter = format!(
        "  otlp:\n    endpoint: localhost:{}\n    tls:\n      insecure: false\n",
        sink.addr.port()
    );
    let ca = pki.ca_file.to_str().unwrap();
    let gw = Gateway::start_with(
        &passthrough_config(&exporter, "otlp", "    timeout: 10ms"),
        &[],
        &[("SSL_CERT_FILE", ca), ("SSL_CERT_DIR", "/nonexistent")],
    );
    let grpc = sdk_grpc_exporter(gw.addr("otlp", "grpc"));
    emit_spans(sdk_provider(grpc, "svc-system-roots"), 3, "sys").await;
    assert!(
        sink.wait_for_spans(3, WAIT).await,
        "spans did not arrive over TLS verified by the system store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_exporter_does_not_delay_the_other() {
    let stalled = Sink::start_stalled().await;
    let healthy = Sink::start().await;
    let exporters = format!(
        "  otlp/stalled:\n    endpoint: 127.0.0.1:{}\n    timeout: 60s\n    tls:\n      insecure: true\n    sending_queue:\n      num_consumers: 1\n      queue_size: 2\n{}",
        stalled.addr.port(),
        plain_otlp_exporter("otlp/healthy", healthy.addr)
    );
    let gw = Gateway::start(&passthrough_config(
        &exporters,
        "otlp/stalled, otlp/healthy",
        "    timeout: 0s",
    ));
    let addr = gw.addr("otlp", "grpc");
    // Twenty separate exports: the stalled exporter's one consumer blocks on
    // the first for 60 s and its queue of 2 fills; the healthy one must get
    // every batch regardless.
    for round in 0..20 {
        let grpc = sdk_grpc_exporter(addr);
        emit_spans(sdk_provider(grpc, "svc"), 1, ["r0", "r1"][round % 2]).await;
    }
    assert!(
        healthy.wait_for_spans(20, WAIT).await,
        "healthy exporter got {} of 20 spans while the other stalled",
        healthy.span_count()
    );
    assert_eq!(stalled.span_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_pending_batches_and_exits_zero() {
    let sink = Sink::start().await;
    // A batch timeout far beyond the test: only shutdown can flush these.
    let mut gw = Gateway::start(&passthrough_config(
        &plain_otlp_exporter("otlp", sink.addr),
        "otlp",
        "    timeout: 1h\n    send_batch_size: 100000",
    ));
    let health = gw.addr("health_check", "http");
    let ok = support::raw::http(health, http::Method::GET, "/", &[], "").await;
    assert_eq!(ok.status, 200);
    let grpc = sdk_grpc_exporter(gw.addr("otlp", "grpc"));
    emit_spans(sdk_provider(grpc, "svc"), 30, "pending").await;
    assert_eq!(sink.span_count(), 0, "held by the batch processor");
    let status = tokio::task::block_in_place(|| gw.terminate(Duration::from_secs(20)));
    assert!(status.success(), "exit status {status}");
    assert_eq!(sink.span_count(), 30, "flushed on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_exporter_moves_self_telemetry_with_its_namespace() {
    let sink = Sink::start().await;
    // As the seed configs do: a `prometheus` exporter in a metrics pipeline
    // (skipped) decides where and under which namespace metrics are served.
    let gw = Gateway::start(&format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
exporters:
  otlp:
    endpoint: 127.0.0.1:{}
    tls:
      insecure: true
  prometheus:
    endpoint: 127.0.0.1:0
    namespace: otel_collector
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
    metrics:
      receivers: [otlp]
      exporters: [prometheus]
  telemetry:
    logs:
      encoding: json
"#,
        sink.addr.port()
    ));
    let grpc = sdk_grpc_exporter(gw.addr("otlp", "grpc"));
    emit_spans(sdk_provider(grpc, "svc"), 3, "ns").await;
    assert!(sink.wait_for_spans(3, WAIT).await);
    let text = support::raw::wait_for_metrics(
        gw.addr("telemetry", "metrics"),
        &["otel_collector_receiver_accepted_spans_total{receiver=\"otlp\",transport=\"grpc\"} 3"],
        WAIT,
    )
    .await;
    assert!(!text.contains("otelcol_"), "one namespace only:\n{text}");
}

/// gzip at `level`, one member.
fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_requests_batched_whole_reach_a_single_member_gzip_reader_intact() {
    // tonic's gzip decoder (the sink's) reads the first gzip member only:
    // the export assembled from the requests' own deflate data must be one
    // member holding every span, in order.
    let sink = Sink::start().await;
    let gw = Gateway::start(&passthrough_config(
        &plain_otlp_exporter("otlp", sink.addr),
        "otlp",
        "    timeout: 300ms\n    send_batch_size: 100000",
    ));
    let grpc = gw.addr("otlp", "grpc");
    let export = support::raw::TRACE_EXPORT;
    let mut sent = Vec::new();
    for (i, level) in [6u32, 1, 9, 0, 6].into_iter().enumerate() {
        let name = format!("gz{i}");
        let request = support::spans_request(&name, 20 + i as u64);
        let reply = support::raw::grpc(grpc, export, &gzip(&request, level), Some("gzip")).await;
        assert_eq!(reply.code, 0, "{}", reply.message);
        sent.push((name, 20 + i));
    }
    // A two-member body, an uncompressed request and a zstd one between
    // them: members and bytes compressed afresh in one export.
    let (a, b) = (
        support::spans_request("two-a", 7),
        support::spans_request("two-b", 8),
    );
    let mut two = gzip(&a, 6);
    two.extend(gzip(&b, 6));
    let plain = support::spans_request("plain", 5);
    let zstd = zstd::stream::encode_all(&support::spans_request("zstd", 6)[..], 3).unwrap();
    for (body, encoding) in [(plain, None), (two, Some("gzip")), (zstd, Some("zstd"))] {
        let reply = support::raw::grpc(grpc, export, &body, encoding).await;
        assert_eq!(reply.code, 0, "{}", reply.message);
    }
    sent.extend([
        ("plain".to_string(), 5),
        ("two-a".to_string(), 7),
        ("two-b".to_string(), 8),
        ("zstd".to_string(), 6),
    ]);
    let total: usize = sent.iter().map(|(_, n)| n).sum();
    assert!(
        sink.wait_for_spans(total, WAIT).await,
        "{} of {total}",
        sink.span_count()
    );
    let mut got = std::collections::BTreeMap::<String, usize>::new();
    for span in sink.spans() {
        *got.entry(span.span.name.clone()).or_default() += 1;
    }
    let want: std::collections::BTreeMap<String, usize> = sent.into_iter().collect();
    assert_eq!(got, want);
}
