//! Bad input through the real binary: every refusal has the right status on
//! both protocols, a compression bomb is refused without the process
//! growing past the cap, and after all of it the process still serves.

use crate::support;

use std::io::Write;
use std::time::Duration;

use http::Method;
use support::gateway::{pipeline_to, Gateway};
use support::one_span_request;
use support::raw::{grpc, http, TRACE_EXPORT};
use support::sink::Sink;

const CAP_MIB: u64 = 4;

fn config(sink: std::net::SocketAddr) -> String {
    pipeline_to(
        sink,
        &format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
        max_recv_msg_size_mib: {CAP_MIB}
      http:
        endpoint: 127.0.0.1:0
        max_request_body_size: {}
processors:
  batch:
    timeout: 10ms
"#,
            CAP_MIB << 20,
        ),
        "otlp",
        "batch",
    )
}

/// `len` zero bytes, gzip-compressed (about 1 KiB per MiB).
fn gzip_zeros(len: usize) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..len >> 20 {
        enc.write_all(&chunk).unwrap();
    }
    enc.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_right_status_and_the_process_keeps_serving() {
    let sink = Sink::start().await;
    let mut gw = Gateway::start(&config(sink.addr));
    let h = gw.addr("otlp", "http");
    let g = gw.addr("otlp", "grpc");
    let proto = [("content-type", "application/x-protobuf")];
    let json = [("content-type", "application/json")];
    let garbage = vec![0x0a, 0xff, 0xff, 0xff, 0x0f, 0x01];

    // HTTP
    let r = http(h, Method::POST, "/v1/traces", &proto, garbage.clone()).await;
    assert_eq!(r.status, 400, "malformed protobuf");
    assert!(!r.body.is_empty(), "400 carries a message");
    assert_eq!(r.headers["content-type"], "application/x-protobuf");
    let r = http(
        h,
        Method::POST,
        "/v1/traces",
        &json,
        "{\"resourceSpans\": [",
    )
    .await;
    assert_eq!(r.status, 400, "malformed JSON");
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let big = vec![0u8; ((CAP_MIB + 1) << 20) as usize];
    let r = http(h, Method::POST, "/v1/traces", &proto, big).await;
    assert_eq!(r.status, 400, "too large (the collector answers 400)");
    let r = http(
        h,
        Method::POST,
        "/v1/traces",
        &[("content-type", "text/plain")],
        "x",
    )
    .await;
    assert_eq!(r.status, 415, "wrong content type");
    let r = http(h, Method::GET, "/v1/traces", &[], "").await;
    assert_eq!(r.status, 405, "wrong method");
    assert!(
        r.headers.get("allow").is_some(),
        "405 names the allowed method"
    );
    for path in ["/v1/metrics", "/v1/logs", "/nope"] {
        let r = http(h, Method::POST, path, &proto, one_span_request("x")).await;
        assert_eq!(r.status, 404, "unknown path {path}");
    }

    // gRPC
    let r = grpc(g, TRACE_EXPORT, &garbage, None).await;
    assert_eq!(
        r.code, 3,
        "INVALID_ARGUMENT for malformed protobuf: {}",
        r.message
    );
    assert!(!r.message.is_empty());
    let r = grpc(
        g,
        TRACE_EXPORT,
        &vec![0u8; ((CAP_MIB + 1) << 20) as usize],
        None,
    )
    .await;
    assert_eq!(r.code, 8, "RESOURCE_EXHAUSTED for too large: {}", r.message);
    for service in [
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    ] {
        let r = grpc(g, service, &one_span_request("x"), None).await;
        assert_eq!(r.code, 12, "UNIMPLEMENTED for {service}");
    }

    // Compression bombs: 256 MiB of zeros in about 256 KiB (64 times the
    // cap), over both protocols.
    let bomb = gzip_zeros(256 << 20);
    let before = gw.memory_kib("VmRSS");
    let r = http(
        h,
        Method::POST,
        "/v1/traces",
        &[
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "gzip"),
        ],
        bomb.clone(),
    )
    .await;
    assert_eq!(r.status, 400, "gzip bomb over HTTP");
    let r = grpc(g, TRACE_EXPORT, &bomb, Some("gzip")).await;
    assert_eq!(r.code, 8, "gzip bomb over gRPC: {}", r.message);
    let peak = gw.memory_kib("VmHWM");
    // Each bomb may hold up to the cap while decoding, plus the ~1 MiB
    // compressed body; 256 MiB decompressed would be far beyond this.
    let allowed = (2 * CAP_MIB + 2) * 1024 + 48 * 1024;
    assert!(
        peak.saturating_sub(before) < allowed,
        "peak RSS grew by {} KiB (from {before} KiB) decoding bombs; allowed {allowed} KiB",
        peak.saturating_sub(before)
    );

    // Still serving, on both protocols.
    assert!(gw.is_running());
    let r = http(
        h,
        Method::POST,
        "/v1/traces",
        &proto,
        one_span_request("after-http"),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = grpc(g, TRACE_EXPORT, &one_span_request("after-grpc"), None).await;
    assert_eq!(r.code, 0, "{}", r.message);
    assert!(sink.wait_for_spans(2, Duration::from_secs(10)).await);
    let names: Vec<String> = sink.spans().into_iter().map(|s| s.span.name).collect();
    assert!(names.contains(&"after-http".to_string()) && names.contains(&"after-grpc".to_string()));
    assert_eq!(
        names.len(),
        2,
        "nothing from the bad requests was exported: {names:?}"
    );
}
