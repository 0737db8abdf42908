//! The Jaeger receiver's config and its gRPC protocol over real sockets on
//! 127.0.0.1:0, with a client generated from the same protos, and the
//! `jaeger` exporter sending to it.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::*;
use crate::exporter::{jaeger as jaeger_exporter, Exporter};
use crate::receiver::test_support::Collect;
use crate::receiver::ReceiverConfig;
use tracegate_model::jaeger::proto::collector_service_client::CollectorServiceClient;
use tracegate_model::jaeger::proto::{self, PostSpansRequest};
use tracegate_model::SpanBatch;

fn parse(value: serde_json::Value) -> Result<Config, ComponentError> {
    match ReceiverConfig::from_value("jaeger", value) {
        Some(Ok(ReceiverConfig::Jaeger(config))) => Ok(config),
        Some(Ok(other)) => panic!("jaeger parsed as {other:?}"),
        Some(Err(e)) => Err(e),
        None => panic!("jaeger is a receiver kind"),
    }
}

#[test]
fn grpc_with_no_value_listens_on_14250() {
    let config = parse(json!({"protocols": {"grpc": null}})).unwrap();
    let grpc = config.protocols.grpc.as_ref().unwrap();
    assert_eq!(grpc.endpoint, "localhost:14250");
    assert_eq!(grpc.max_recv_msg_size(), 4 * 1024 * 1024);
    assert!(config.validate().unwrap().is_empty());
    let config = parse(json!({"protocols": {"grpc": {"endpoint": "0.0.0.0:9999"}}})).unwrap();
    assert_eq!(config.protocols.grpc.unwrap().endpoint, "0.0.0.0:9999");
}

#[test]
fn nested_keys_with_no_value_mean_defaults_as_for_every_component() {
    let config = parse(json!({"protocols": {
        "grpc": {"endpoint": null, "max_recv_msg_size_mib": null, "keepalive": {"enforcement_policy": {"permit_without_stream": null}}},
        "thrift_http": {"endpoint": null, "max_request_body_size": null},
        "thrift_compact": {"workers": null},
    }}))
    .unwrap();
    let p = &config.protocols;
    let grpc = p.grpc.as_ref().unwrap();
    assert_eq!(grpc.endpoint, DEFAULT_GRPC_ENDPOINT);
    assert_eq!(grpc.max_recv_msg_size(), 4 * 1024 * 1024);
    let policy = grpc.keepalive.as_ref().unwrap().enforcement_policy.as_ref();
    assert!(!policy.unwrap().permit_without_stream);
    assert_eq!(p.thrift_http.as_ref().unwrap().endpoint, "localhost:14268");
    assert_eq!(p.thrift_http.as_ref().unwrap().max_request_body_size, 0);
    assert_eq!(p.thrift_compact.as_ref().unwrap().workers, 0);
    assert!(p.thrift_binary.is_none());
    let warnings = config.validate().unwrap();
    assert!(
        warnings.iter().all(|w| w.contains("enforcement_policy")),
        "{warnings:?}"
    );
}

#[test]
fn validate_needs_a_protocol_and_checks_each() {
    assert_eq!(
        parse(json!({})).unwrap().validate().unwrap_err().path,
        "protocols"
    );
    for name in ["thrift_http", "thrift_compact", "thrift_binary"] {
        // With no value: served with its defaults.
        let config = parse(json!({"protocols": {name: null}})).unwrap();
        assert!(config.validate().unwrap().is_empty(), "{name}");
        let err = parse(json!({"protocols": {name: {"endpoint": "nope"}}}))
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(err.path, format!("protocols.{name}.endpoint"));
    }
    let config = parse(
        json!({"protocols": {"thrift_compact": null, "thrift_binary": {}, "thrift_http": null}}),
    )
    .unwrap();
    let p = &config.protocols;
    assert_eq!(
        p.thrift_compact
            .as_ref()
            .unwrap()
            .endpoint(ThriftProtocol::Compact),
        "localhost:6831"
    );
    assert_eq!(
        p.thrift_binary
            .as_ref()
            .unwrap()
            .endpoint(ThriftProtocol::Binary),
        "localhost:6832"
    );
    assert_eq!(p.thrift_http.as_ref().unwrap().endpoint, "localhost:14268");
    let err = parse(json!({"protocols": {"grcp": null}})).unwrap_err();
    assert!(err.message.contains("grcp"), "{err}");
    let err = parse(json!({"protocols": {"grpc": {"endpoint": "nope"}}}))
        .unwrap()
        .validate()
        .unwrap_err();
    assert_eq!(err.path, "protocols.grpc.endpoint");
}

async fn start_receiver() -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<SpanBatch>,
    CancellationToken,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let config = parse(json!({"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}})).unwrap();
    let shutdown = CancellationToken::new();
    let running = start(
        &config,
        "jaeger",
        Arc::new(Collect(tx)),
        &crate::context::BuildContext::from(shutdown.clone()),
    )
    .await
    .unwrap();
    (running.addresses()[0].1, rx, shutdown)
}

fn jaeger_batch(service: &str, spans: u8) -> proto::Batch {
    proto::Batch {
        spans: (1..=spans)
            .map(|i| proto::Span {
                trace_id: vec![7; 16],
                span_id: vec![i; 8],
                operation_name: format!("op-{i}"),
                start_time: Some(proto::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 5,
                }),
                duration: Some(proto::Duration {
                    seconds: 0,
                    nanos: 1_500,
                }),
                tags: vec![proto::KeyValue {
                    key: "span.kind".into(),
                    v_str: "client".into(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
        process: Some(proto::Process {
            service_name: service.into(),
            tags: vec![],
        }),
    }
}

#[tokio::test]
async fn post_spans_arrive_as_otlp() {
    let (addr, mut rx, shutdown) = start_receiver().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = CollectorServiceClient::new(channel.clone());
    client
        .post_spans(PostSpansRequest {
            batch: Some(jaeger_batch("cart", 3)),
        })
        .await
        .unwrap();
    let batch = rx.recv().await.unwrap();
    assert_eq!(batch.len(), 3);
    assert_eq!(batch.service_name(0), Some("cart"));
    assert_eq!(batch.span_name(2), "op-3");
    let span = &batch.spans()[0];
    assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_000_005);
    assert_eq!(span.end_time_unix_nano, 1_700_000_000_000_001_505);

    // Not a PostSpansRequest: INVALID_ARGUMENT, nothing handed on.
    let mut raw = tonic::client::Grpc::new(channel);
    raw.ready().await.unwrap();
    let status = raw
        .unary(
            tonic::Request::new(bytes::Bytes::from_static(&[0x0a, 0xff])),
            http::uri::PathAndQuery::from_static(POST_SPANS_PATH),
            crate::grpc::PassthroughCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // A trace id longer than 16 bytes cannot be mapped.
    let mut bad = jaeger_batch("cart", 1);
    bad.spans[0].trace_id = vec![1; 17];
    let status = client
        .post_spans(PostSpansRequest { batch: Some(bad) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(rx.try_recv().is_err());
    shutdown.cancel();
}

#[tokio::test]
async fn the_jaeger_exporter_posts_one_batch_per_resource() {
    let (addr, mut rx, shutdown) = start_receiver().await;
    let exporter = jaeger_exporter::JaegerExporter::new(
        &jaeger_exporter::config_from_value(json!({
            "endpoint": addr.to_string(),
            "tls": {"insecure": true},
            "compression": "gzip",
            "headers": {"x-tenant": "a"},
        }))
        .unwrap(),
    )
    .unwrap();
    let mut request =
        tracegate_model::jaeger::request_from_batches([jaeger_batch("a", 2), jaeger_batch("b", 1)])
            .unwrap();
    // Spans decoded from bytes: what the pipeline hands exporters.
    request.resource_spans.swap(0, 1);
    let batch = SpanBatch::from_request(&request);
    exporter.export(&batch).await.unwrap();
    let first = rx.recv().await.unwrap();
    let second = rx.recv().await.unwrap();
    assert_eq!((first.len(), first.service_name(0)), (1, Some("b")));
    assert_eq!((second.len(), second.service_name(0)), (2, Some("a")));
    assert_eq!(
        tracegate_model::jaeger::batches_from_span_batch(&second),
        vec![jaeger_batch("a", 2)]
    );
    shutdown.cancel();
}

#[tokio::test]
async fn the_jaeger_exporter_retries_an_unreachable_collector() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let exporter = jaeger_exporter::JaegerExporter::new(
        &jaeger_exporter::config_from_value(json!({
            "endpoint": addr.to_string(),
            "tls": {"insecure": true},
            "timeout": "2s",
        }))
        .unwrap(),
    )
    .unwrap();
    let batch = SpanBatch::from_request(
        &tracegate_model::jaeger::request_from_batches([jaeger_batch("a", 1)]).unwrap(),
    );
    let err = exporter.export(&batch).await.unwrap_err();
    assert!(
        matches!(err, crate::exporter::ExportError::Retryable { .. }),
        "{err:?}"
    );
}

/// A pipeline that reads no spans gets, on every Jaeger protocol, batches
/// whose written request was not scanned and whose index is built on
/// first use; that index is the eager one, and a malformed request is
/// refused either way.
#[tokio::test]
async fn a_pipeline_that_reads_no_spans_gets_batches_indexed_on_first_use() {
    use crate::receiver::test_support::CollectSaying;
    use tracegate_model::thrift;
    let grpc_request = PostSpansRequest {
        batch: Some(jaeger_batch("cart", 3)),
    };
    let eager = tracegate_model::jaeger::span_batch_from_post_spans(
        &prost::Message::encode_to_vec(&grpc_request),
    )
    .unwrap();
    let thrift_batch = thrift::Batch {
        process: thrift::Process {
            service_name: "cart".into(),
            tags: Some(vec![thrift::Tag::string("hostname", "h")]),
        },
        spans: (1..=3)
            .map(|i| thrift::Span {
                trace_id_low: 7,
                trace_id_high: 9,
                span_id: i,
                operation_name: format!("op-{i}"),
                start_time: 1_700_000_000_000_000,
                duration: 15,
                tags: Some(vec![thrift::Tag::string("span.kind", "server")]),
                ..Default::default()
            })
            .collect(),
        seq_no: None,
    };
    let body = thrift::encode_batch_binary(&thrift_batch);
    let packet = thrift::encode_agent_compact(&thrift_batch);
    let thrift_eager = thrift::batch_binary_to_span_batch(&body).unwrap();
    for reads_spans in [false, true] {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let config = parse(json!({"protocols": {
            "grpc": {"endpoint": "127.0.0.1:0"},
            "thrift_http": {"endpoint": "127.0.0.1:0"},
            "thrift_compact": {"endpoint": "127.0.0.1:0"},
        }}))
        .unwrap();
        let shutdown = CancellationToken::new();
        let running = start(
            &config,
            "jaeger",
            Arc::new(CollectSaying {
                batches: tx,
                reads_spans,
            }),
            &crate::context::BuildContext::from(shutdown.clone()),
        )
        .await
        .unwrap();
        let addr = |protocol: &str| {
            running
                .addresses()
                .iter()
                .find(|(p, _)| *p == protocol)
                .unwrap_or_else(|| panic!("{protocol} listens"))
                .1
        };

        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", addr("grpc")))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = CollectorServiceClient::new(channel);
        client.post_spans(grpc_request.clone()).await.unwrap();
        let (status, _) = crate::receiver::test_support::http_request(
            addr("thrift_http"),
            http::Method::POST,
            "/api/traces",
            &[("content-type", "application/x-thrift")],
            body.clone(),
        )
        .await;
        assert_eq!(status, http::StatusCode::ACCEPTED);
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        udp.send_to(&packet, addr("thrift_compact")).await.unwrap();

        for (what, want) in [
            ("grpc", &eager),
            ("thrift_http", &thrift_eager),
            ("thrift_compact", &thrift_eager),
        ] {
            let batch = rx.recv().await.unwrap();
            assert_eq!(batch.is_indexed(), reads_spans, "{what}");
            assert_eq!(batch.len(), 3, "{what}");
            assert_eq!(batch.bytes(), want.bytes(), "{what}");
            assert_eq!(batch.spans(), want.spans(), "{what}");
            assert_eq!(batch.scopes(), want.scopes(), "{what}");
            assert_eq!(batch.resources(), want.resources(), "{what}");
        }

        // Malformed: refused, nothing handed on.
        let mut bad = jaeger_batch("cart", 1);
        bad.spans[0].trace_id = vec![1; 17];
        let status = client
            .post_spans(PostSpansRequest { batch: Some(bad) })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let (status, _) = crate::receiver::test_support::http_request(
            addr("thrift_http"),
            http::Method::POST,
            "/api/traces",
            &[("content-type", "application/x-thrift")],
            bytes::Bytes::from_static(&[0x0c, 0x00]),
        )
        .await;
        assert_eq!(status, http::StatusCode::BAD_REQUEST);
        assert!(rx.try_recv().is_err(), "a malformed request was handed on");
        shutdown.cancel();
    }
}
