//! The Zipkin receiver over a real socket on 127.0.0.1:0.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::compression::test_encoders::{gzip, lz4, snappy_block, snappy_framed};
use crate::consumer::NextConsumer;
use crate::receiver::test_support::{http_request, Collect, Refuse};
use crate::receiver::ReceiverConfig;

async fn start(config: serde_json::Value, next: NextConsumer) -> (SocketAddr, CancellationToken) {
    let config = ReceiverConfig::from_value("zipkin", config)
        .unwrap()
        .unwrap();
    config.validate().unwrap();
    let shutdown = CancellationToken::new();
    let running = config
        .start("zipkin", next, shutdown.clone())
        .await
        .unwrap();
    (running.addresses()[0].1, shutdown)
}

async fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (StatusCode, String) {
    http_request(addr, Method::POST, path, headers, body).await
}

const SPANS: &str = r#"[{"traceId": "5af7183fb1d4cf5f", "id": "352bff9a74ca9ad2",
  "name": "get /api", "timestamp": 1556604172355737, "duration": 1431, "kind": "SERVER",
  "localEndpoint": {"serviceName": "backend"}, "tags": {"http.method": "GET"}},
  {"traceId": "5af7183fb1d4cf5f", "id": "452bff9a74ca9ad2", "parentId": "352bff9a74ca9ad2",
  "name": "query", "timestamp": 1556604172355800, "duration": 100, "kind": "CLIENT",
  "localEndpoint": {"serviceName": "backend"}}]"#;

#[tokio::test]
async fn json_spans_are_accepted_and_forwarded() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (addr, shutdown) = start(json!({"endpoint": "127.0.0.1:0"}), Arc::new(Collect(tx))).await;
    let (status, body) = post(
        addr,
        "/api/v2/spans",
        &[("content-type", "application/json")],
        SPANS,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let batch = rx.recv().await.unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!(batch.service_name(0), Some("backend"));
    assert_eq!(batch.span_name(0), "get /api");
    assert_eq!(batch.span_name(1), "query");

    // gzip, as zipkin-java senders compress.
    let (status, _) = post(
        addr,
        "/api/v2/spans",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        gzip(SPANS.as_bytes()),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(rx.recv().await.unwrap().len(), 2);

    // The collector's other encodings, decoded by the shared body reader.
    for (encoding, body) in [
        ("snappy", snappy_block(SPANS.as_bytes())),
        ("snappy", snappy_framed(SPANS.as_bytes())),
        ("x-snappy-framed", snappy_framed(SPANS.as_bytes())),
        ("lz4", lz4(SPANS.as_bytes())),
    ] {
        let (status, text) = post(
            addr,
            "/api/v2/spans",
            &[
                ("content-type", "application/json"),
                ("content-encoding", encoding),
            ],
            body,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{encoding}: {text}");
        assert_eq!(rx.recv().await.unwrap().len(), 2, "{encoding}");
    }

    // proto3, as zipkin-go and zipkin-java send with application/x-protobuf.
    let list = tracegate_model::zipkin::proto::ListOfSpans {
        spans: vec![tracegate_model::zipkin::proto::ProtoSpan {
            trace_id: vec![1; 16],
            id: vec![2; 8],
            name: "proto-span".into(),
            kind: 1,
            timestamp: 1_700_000_000_000_000,
            local_endpoint: Some(tracegate_model::zipkin::proto::ProtoEndpoint {
                service_name: "proto-svc".into(),
                ..Default::default()
            }),
            ..Default::default()
        }],
    };
    let (status, body) = post(
        addr,
        "/api/v2/spans",
        &[("content-type", "application/x-protobuf")],
        prost::Message::encode_to_vec(&list),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let batch = rx.recv().await.unwrap();
    assert_eq!(batch.service_name(0), Some("proto-svc"));
    assert_eq!(batch.span_name(0), "proto-span");
    shutdown.cancel();
}

#[tokio::test]
async fn a_large_body_is_decoded_whole() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (addr, shutdown) = start(json!({"endpoint": "127.0.0.1:0"}), Arc::new(Collect(tx))).await;
    // 2 000 spans, about 400 KiB of JSON: decoded on the blocking pool.
    let spans: Vec<serde_json::Value> = (0..2_000u32)
        .map(|i| {
            json!({"traceId": "5af7183fb1d4cf5f", "id": format!("{:016x}", i + 1),
                "name": format!("op-{i}"), "timestamp": 1556604172355737u64, "duration": 10,
                "localEndpoint": {"serviceName": "backend"},
                "tags": {"payload": "x".repeat(100)}})
        })
        .collect();
    let body = serde_json::to_vec(&spans).unwrap();
    assert!(body.len() > 256 * 1024, "{} bytes", body.len());
    let (status, text) = post(
        addr,
        "/api/v2/spans",
        &[("content-type", "application/json")],
        body,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    let batch = rx.recv().await.unwrap();
    assert_eq!(batch.len(), 2_000);
    assert_eq!(batch.span_name(1_999), "op-1999");
    shutdown.cancel();
}

#[tokio::test]
async fn malformed_json_is_400_with_the_reason() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (addr, shutdown) = start(json!({"endpoint": "127.0.0.1:0"}), Arc::new(Collect(tx))).await;
    let (status, body) = post(addr, "/api/v2/spans", &[], "[{\"traceId\": ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("invalid Zipkin v2 JSON"), "{body}");
    let (status, body) = post(addr, "/api/v2/spans", &[], r#"[{"traceId": "1"}]"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("valid span id required"), "{body}");
    let (status, _) = post(addr, "/api/v1/spans", &[], "[]").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = post(
        addr,
        "/api/v2/spans",
        &[("content-type", "application/x-protobuf")],
        &b"\x0a\xff\xff"[..],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("invalid Zipkin proto3"), "{body}");
    assert!(rx.try_recv().is_err(), "nothing reaches the pipeline");
    shutdown.cancel();
}

#[tokio::test]
async fn oversized_bodies_are_400_and_refusals_are_500() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let (addr, shutdown) = start(
        json!({"endpoint": "127.0.0.1:0", "max_request_body_size": 16}),
        Arc::new(Collect(tx)),
    )
    .await;
    let (status, _) = post(addr, "/api/v2/spans", &[], SPANS).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Compressed bodies get the same answer (the caps on decompressed
    // size are tested in compression.rs and the OTLP receiver's tests).
    for (encoding, body) in [
        ("snappy", snappy_block(SPANS.as_bytes())),
        ("x-snappy-framed", snappy_framed(SPANS.as_bytes())),
        ("lz4", lz4(SPANS.as_bytes())),
    ] {
        let (status, text) = post(
            addr,
            "/api/v2/spans",
            &[("content-encoding", encoding)],
            body,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{encoding}");
        assert!(text.contains("exceeds"), "{encoding}: {text}");
    }
    shutdown.cancel();

    let (addr, shutdown) = start(json!({"endpoint": "127.0.0.1:0"}), Arc::new(Refuse)).await;
    let (status, body) = post(addr, "/api/v2/spans", &[], SPANS).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, "\"Internal Server Error\"");
    shutdown.cancel();
}

#[test]
fn config_defaults_and_checks() {
    let ReceiverConfig::Zipkin(config) =
        ReceiverConfig::from_value("zipkin", serde_json::Value::Null)
            .unwrap()
            .unwrap()
    else {
        panic!("not a zipkin config");
    };
    assert_eq!(config.endpoint, "localhost:9411");
    assert_eq!(config.max_request_body_size(), 20 * 1024 * 1024);
    assert!(!config.parse_string_tags);
    let err = ReceiverConfig::from_value("zipkin", json!({"endpoint": "nope"}))
        .unwrap()
        .unwrap()
        .validate()
        .unwrap_err();
    assert_eq!(err.path, "endpoint");
    assert!(ReceiverConfig::from_value("zipkin", json!({"bogus": 1}))
        .unwrap()
        .is_err());
}
