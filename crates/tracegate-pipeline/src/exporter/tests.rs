//! Exporters end to end against in-test sinks: what arrives, on what wire,
//! with which retries, and how every span that does not arrive is counted.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::{Code, Status};
use tracegate_model::SpanBatch;

use super::test_support::*;
use super::*;
use crate::consumer::{ConsumeError, Consumer};
use crate::grpc::rpc_status;
use crate::telemetry::names;
use crate::test_logs::Logs;

/// Retries that wait milliseconds, not seconds.
fn fast_retry() -> serde_json::Value {
    serde_json::json!({
        "initial_interval": "5ms", "max_interval": "20ms", "max_elapsed_time": "2s",
        "randomization_factor": 0.0
    })
}

fn config(kind: &str, value: serde_json::Value) -> ExporterConfig {
    ExporterConfig::from_value(kind, value)
        .expect("known kind")
        .expect("valid config")
}

fn grpc_config(sink: &GrpcSink, extra: serde_json::Value) -> ExporterConfig {
    let mut value = serde_json::json!({
        "endpoint": sink.addr.to_string(),
        "tls": {"insecure": true},
        "retry_on_failure": fast_retry(),
    });
    for (k, v) in extra.as_object().unwrap() {
        value[k] = v.clone();
    }
    config("otlp", value)
}

const GRACE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn grpc_sink_receives_exactly_the_spans_sent_with_headers_and_gzip() {
    let sink = GrpcSink::start().await;
    let exporter = grpc_config(
        &sink,
        serde_json::json!({"headers": {"X-Scope-OrgID": "tenant-1", "authorization": "Bearer t"}}),
    );
    let (handle, recorder) = start_recorded(&exporter, "otlp");
    let fanout = Fanout::new(vec![handle.clone()]);
    let batches = [sample_batch(2, 3), sample_batch(1, 4)];
    for batch in &batches {
        fanout.consume(batch.clone()).await.unwrap();
    }
    sink.state.wait_for_spans(10).await;
    handle.shutdown(GRACE).await;

    let received = sink.state.received();
    assert_eq!(received.len(), 2);
    let mut want: Vec<String> = batches
        .iter()
        .flat_map(|b| span_names(&b.to_request()))
        .collect();
    let mut got = sink.state.span_names();
    want.sort();
    got.sort();
    assert_eq!(got, want, "every span arrives, once");
    for r in &received {
        assert!(
            batches.iter().any(|b| b.to_request() == r.request),
            "requests arrive byte-for-byte as the batches encode them"
        );
        assert_eq!(r.metadata.get("x-scope-orgid").unwrap(), "tenant-1");
        assert_eq!(r.metadata.get("authorization").unwrap(), "Bearer t");
        assert_eq!(
            r.metadata.get("grpc-encoding").unwrap(),
            "gzip",
            "gzip is the default"
        );
        assert!(r.metadata.get("grpc-timeout").is_some());
    }
    recorder.assert_sent_and_failed("otlp", 10, 0);
    assert_eq!(
        recorder.gauge(names::EXPORTER_QUEUE_CAPACITY, &[("exporter", "otlp")]),
        1000.0
    );
    assert_eq!(
        recorder.gauge(names::EXPORTER_QUEUE_SIZE, &[("exporter", "otlp")]),
        0.0
    );
}

#[tokio::test]
async fn grpc_zstd_and_no_compression_on_the_wire() {
    for (compression, want) in [("zstd", Some("zstd")), ("none", None)] {
        let sink = GrpcSink::start().await;
        let exporter = grpc_config(&sink, serde_json::json!({"compression": compression}));
        let (handle, _) = start_recorded(&exporter, "otlp");
        handle.try_enqueue(Arc::new(sample_batch(1, 2))).unwrap();
        sink.state.wait_for_spans(2).await;
        handle.shutdown(GRACE).await;
        let encoding = sink.state.received()[0]
            .metadata
            .get("grpc-encoding")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(encoding.as_deref(), want, "{compression}");
    }
}

/// A batch the batch processor concatenated goes out, compressed or not,
/// as exactly the request its parts join to; uncompressed, it is written
/// as its parts' buffers, without joining them first.
#[tokio::test]
async fn grpc_sends_a_concatenated_batch_as_the_request_it_joins_to() {
    use prost::Message;
    for compression in ["none", "gzip", "zstd"] {
        let sink = GrpcSink::start().await;
        let exporter = grpc_config(&sink, serde_json::json!({"compression": compression}));
        let (handle, _) = start_recorded(&exporter, "otlp");
        let batch =
            SpanBatch::concat(&[sample_batch(2, 3), sample_batch(1, 4), sample_batch(3, 1)]);
        assert_eq!(batch.segments().len(), 3);
        // Joined in a clone, so the batch sent stays in segments.
        let want = batch.clone().bytes().to_vec();
        let batch = Arc::new(batch);
        handle.try_enqueue(batch.clone()).unwrap();
        sink.state.wait_for_spans(13).await;
        handle.shutdown(GRACE).await;
        let received = sink.state.received();
        assert_eq!(received.len(), 1, "{compression}");
        assert_eq!(
            received[0].request.encode_to_vec(),
            want,
            "{compression}: the joined request, byte for byte"
        );
        if compression == "none" {
            assert_eq!(batch.segments().len(), 3, "sent without joining");
        }
    }
}

#[tokio::test]
async fn grpc_tls_with_ca_file_skip_verify_and_untrusted() {
    let pki = TestPki::new();
    let sink = GrpcSink::start_tls(&pki, false).await;
    let endpoint = format!("localhost:{}", sink.addr.port());

    let trusted = config(
        "otlp",
        serde_json::json!({"endpoint": endpoint, "tls": {"ca_file": pki.ca_file}}),
    );
    let (handle, _) = start_recorded(&trusted, "otlp/tls");
    handle.try_enqueue(Arc::new(sample_batch(1, 3))).unwrap();
    sink.state.wait_for_spans(3).await;
    handle.shutdown(GRACE).await;

    let skip = config(
        "otlp",
        serde_json::json!({"endpoint": endpoint, "tls": {"insecure_skip_verify": true}}),
    );
    let (handle, _) = start_recorded(&skip, "otlp/skip");
    handle.try_enqueue(Arc::new(sample_batch(1, 2))).unwrap();
    sink.state.wait_for_spans(5).await;
    handle.shutdown(GRACE).await;

    // Default roots do not trust the test CA: the handshake fails, nothing
    // arrives, and the spans are counted.
    let untrusted = config(
        "otlp",
        serde_json::json!({"endpoint": endpoint, "retry_on_failure": {"enabled": false}}),
    );
    let (handle, recorder) = start_recorded(&untrusted, "otlp/untrusted");
    handle.try_enqueue(Arc::new(sample_batch(1, 4))).unwrap();
    eventually("the failed send to be counted", || {
        recorder.dropped("otlp/untrusted", "retry_disabled") == 4
    })
    .await;
    handle.shutdown(GRACE).await;
    assert_eq!(
        recorder.exporter_counter(names::EXPORTER_SEND_FAILED_SPANS, "otlp/untrusted"),
        4
    );
    assert_eq!(sink.state.span_names().len(), 5);
}

#[tokio::test]
async fn grpc_mutual_tls_and_server_name_override() {
    let pki = TestPki::new();
    let sink = GrpcSink::start_tls(&pki, true).await;
    // Dialled by IP, verified as `localhost`, presenting the client certificate.
    let mtls = config(
        "otlp",
        serde_json::json!({
            "endpoint": sink.addr.to_string(),
            "tls": {
                "ca_file": pki.ca_file, "cert_file": pki.client_cert_file,
                "key_file": pki.client_key_file, "server_name_override": "localhost"
            }
        }),
    );
    let (handle, _) = start_recorded(&mtls, "otlp/mtls");
    handle.try_enqueue(Arc::new(sample_batch(1, 2))).unwrap();
    sink.state.wait_for_spans(2).await;
    handle.shutdown(GRACE).await;

    // Without the client certificate the server refuses the handshake.
    let anonymous = config(
        "otlp",
        serde_json::json!({
            "endpoint": sink.addr.to_string(),
            "tls": {"ca_file": pki.ca_file, "server_name_override": "localhost"},
            "retry_on_failure": {"enabled": false}
        }),
    );
    let (handle, recorder) = start_recorded(&anonymous, "otlp/anonymous");
    handle.try_enqueue(Arc::new(sample_batch(1, 3))).unwrap();
    eventually("the refused handshake to be counted", || {
        recorder.dropped("otlp/anonymous", "retry_disabled") == 3
    })
    .await;
    handle.shutdown(GRACE).await;
    assert_eq!(sink.state.span_names().len(), 2);
}

#[tokio::test]
async fn grpc_insecure_reaches_a_plaintext_sink_and_missing_tls_files_fail_startup() {
    let sink = GrpcSink::start().await;
    let plaintext = config(
        "tempo",
        serde_json::json!({"endpoint": sink.addr.to_string(), "tls": {"insecure": true}}),
    );
    let (handle, _) = start_recorded(&plaintext, "tempo");
    handle.try_enqueue(Arc::new(sample_batch(1, 1))).unwrap();
    sink.state.wait_for_spans(1).await;
    handle.shutdown(GRACE).await;

    let missing = config(
        "otlp",
        serde_json::json!({"endpoint": "localhost:4317", "tls": {"ca_file": "/nonexistent/ca.pem"}}),
    );
    let err = missing
        .start("otlp/tempo", &crate::context::BuildContext::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("otlp/tempo")
            && err.contains("tls.ca_file")
            && err.contains("/nonexistent/ca.pem"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_backend_does_not_block_startup() {
    // A port nothing listens on: start returns at once (lazy connect).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let exporter = config(
        "otlp",
        serde_json::json!({
            "endpoint": addr.to_string(), "tls": {"insecure": true},
            "retry_on_failure": {"enabled": false}
        }),
    );
    let started = Instant::now();
    let (handle, recorder) = start_recorded(&exporter, "otlp");
    assert!(started.elapsed() < Duration::from_secs(1));
    handle.try_enqueue(Arc::new(sample_batch(1, 2))).unwrap();
    eventually("the refused connection to be counted", || {
        recorder.dropped("otlp", "retry_disabled") == 2
    })
    .await;
    handle.shutdown(GRACE).await;
}

#[tokio::test]
async fn retries_unavailable_then_delivers_once() {
    let sink = GrpcSink::start().await;
    sink.state.script([
        GrpcReply::Fail(Status::unavailable("restarting")),
        GrpcReply::Fail(Status::unavailable("restarting")),
    ]);
    let (handle, recorder) = start_recorded(&grpc_config(&sink, serde_json::json!({})), "otlp");
    handle.try_enqueue(Arc::new(sample_batch(1, 3))).unwrap();
    sink.state.wait_for_spans(3).await;
    handle.shutdown(GRACE).await;
    assert_eq!(sink.state.attempts(), 3);
    assert_eq!(sink.state.span_names().len(), 3);
    recorder.assert_sent_and_failed("otlp", 3, 0);
}

#[tokio::test]
async fn resource_exhausted_is_retried_only_with_retry_info_and_its_delay_is_honoured() {
    let sink = GrpcSink::start().await;
    sink.state
        .script([GrpcReply::Fail(Status::resource_exhausted("full"))]);
    let (handle, recorder) = start_recorded(&grpc_config(&sink, serde_json::json!({})), "otlp");
    handle.try_enqueue(Arc::new(sample_batch(1, 2))).unwrap();
    eventually("the permanent failure to be counted", || {
        recorder.dropped("otlp", "permanent_error") == 2
    })
    .await;
    assert_eq!(sink.state.attempts(), 1, "no retry without RetryInfo");

    let delay = Duration::from_millis(300);
    sink.state.script([GrpcReply::Fail(Status::with_details(
        Code::ResourceExhausted,
        "slow down",
        rpc_status::encode_retry_info(delay).into(),
    ))]);
    let started = Instant::now();
    handle.try_enqueue(Arc::new(sample_batch(1, 3))).unwrap();
    sink.state.wait_for_spans(3).await;
    assert!(
        started.elapsed() >= delay,
        "the server's delay ({delay:?}) outlasts the 5ms backoff: {:?}",
        started.elapsed()
    );
    handle.shutdown(GRACE).await;
    recorder.assert_sent_and_failed("otlp", 3, 2);
}

#[tokio::test]
async fn retries_end_after_max_elapsed_time_and_are_counted() {
    let sink = GrpcSink::start().await;
    sink.state
        .otherwise(GrpcReply::Fail(Status::unavailable("down")));
    let exporter = grpc_config(
        &sink,
        serde_json::json!({"retry_on_failure": {
            "initial_interval": "10ms", "max_interval": "10ms", "max_elapsed_time": "100ms"
        }}),
    );
    let (handle, recorder) = start_recorded(&exporter, "otlp");
    handle.try_enqueue(Arc::new(sample_batch(2, 2))).unwrap();
    eventually("retries to run out", || {
        recorder.dropped("otlp", "retries_exhausted") == 4
    })
    .await;
    assert!(
        sink.state.attempts() >= 3,
        "retried: {}",
        sink.state.attempts()
    );
    assert_eq!(
        recorder.exporter_counter(names::EXPORTER_SEND_FAILED_SPANS, "otlp"),
        4
    );
    handle.shutdown(GRACE).await;
}

#[tokio::test]
async fn partial_success_counts_the_rejected_spans() {
    let sink = GrpcSink::start().await;
    sink.state.script([GrpcReply::Partial {
        rejected: 2,
        message: "too old".into(),
    }]);
    let (handle, recorder) = start_recorded(&grpc_config(&sink, serde_json::json!({})), "otlp");
    handle.try_enqueue(Arc::new(sample_batch(1, 5))).unwrap();
    sink.state.wait_for_spans(5).await;
    handle.shutdown(GRACE).await;
    assert_eq!(
        recorder.exporter_counter(names::EXPORTER_SENT_SPANS, "otlp"),
        5
    );
    assert_eq!(recorder.dropped("otlp", "rejected_by_backend"), 2);
}

#[tokio::test]
async fn a_partial_success_with_only_a_message_is_logged() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let sink = GrpcSink::start().await;
    sink.state.script([GrpcReply::Partial {
        rejected: 0,
        message: "attributes truncated".into(),
    }]);
    let (handle, recorder) = start_recorded(&grpc_config(&sink, serde_json::json!({})), "otlp");
    handle.try_enqueue(Arc::new(sample_batch(1, 2))).unwrap();
    sink.state.wait_for_spans(2).await;
    handle.shutdown(GRACE).await;
    assert_eq!(recorder.dropped("otlp", "rejected_by_backend"), 0);
    let text = logs.text();
    assert!(
        text.contains("Partial success response") && text.contains("attributes truncated"),
        "{text}"
    );
}

#[tokio::test]
async fn a_stalled_exporter_does_not_delay_the_other() {
    let stalled = GrpcSink::start().await;
    stalled.state.otherwise(GrpcReply::Stall);
    let healthy = GrpcSink::start().await;
    let (stuck, stuck_metrics) = start_recorded(
        &grpc_config(
            &stalled,
            serde_json::json!({"timeout": "60s", "sending_queue": {"num_consumers": 2, "queue_size": 100}}),
        ),
        "otlp/stalled",
    );
    let (fine, _) = start_recorded(
        &grpc_config(&healthy, serde_json::json!({})),
        "otlp/healthy",
    );
    let fanout = Fanout::new(vec![stuck.clone(), fine.clone()]);

    let started = Instant::now();
    for _ in 0..20 {
        fanout.consume(sample_batch(1, 5)).await.unwrap();
    }
    healthy.state.wait_for_spans(100).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the healthy exporter got everything while the other hangs: {:?}",
        started.elapsed()
    );
    stalled.state.wait_for_attempts(2).await;
    assert_eq!(stalled.state.span_names().len(), 0);

    // Shutdown cannot drain a backend that never answers: after the grace
    // period the 2 in-flight and 18 queued batches are counted.
    let started = Instant::now();
    stuck.shutdown(Duration::from_millis(200)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(stuck_metrics.dropped("otlp/stalled", "shutdown"), 100);
    assert_eq!(stuck.queue_len(), 0);
    fine.shutdown(GRACE).await;
}

#[tokio::test]
async fn a_full_queue_is_counted_and_refused_when_no_exporter_takes_the_batch() {
    let stalled = GrpcSink::start().await;
    stalled.state.otherwise(GrpcReply::Stall);
    let healthy = GrpcSink::start().await;
    let (small, small_metrics) = start_recorded(
        &grpc_config(
            &stalled,
            serde_json::json!({"timeout": "60s", "sending_queue": {"num_consumers": 1, "queue_size": 1}}),
        ),
        "otlp/small",
    );
    let (fine, _) = start_recorded(&grpc_config(&healthy, serde_json::json!({})), "otlp/fine");

    // Alone: one batch in flight, one queued, then refusals to the client.
    let alone = Fanout::new(vec![small.clone()]);
    alone.consume(sample_batch(1, 3)).await.unwrap();
    stalled.state.wait_for_attempts(1).await;
    alone.consume(sample_batch(1, 3)).await.unwrap();
    let refused = alone.consume(sample_batch(1, 3)).await.unwrap_err();
    assert!(
        matches!(refused, ConsumeError::Refused { .. }),
        "{refused:?}"
    );
    assert_eq!(
        small_metrics.exporter_counter(names::EXPORTER_ENQUEUE_FAILED_SPANS, "otlp/small"),
        3
    );
    assert_eq!(
        small_metrics.dropped("otlp/small", "queue_full"),
        0,
        "the client still holds refused spans"
    );
    assert_eq!(
        small_metrics.gauge(names::EXPORTER_QUEUE_SIZE, &[("exporter", "otlp/small")]),
        1.0
    );

    // Beside an exporter that takes it, the batch is acknowledged and the
    // full exporter's copy is counted as dropped.
    let both = Fanout::new(vec![small.clone(), fine.clone()]);
    both.consume(sample_batch(1, 4)).await.unwrap();
    healthy.state.wait_for_spans(4).await;
    assert_eq!(
        small_metrics.exporter_counter(names::EXPORTER_ENQUEUE_FAILED_SPANS, "otlp/small"),
        7
    );
    assert_eq!(small_metrics.dropped("otlp/small", "queue_full"), 4);

    small.shutdown(Duration::from_millis(100)).await;
    assert_eq!(small_metrics.dropped("otlp/small", "shutdown"), 6);
    fine.shutdown(GRACE).await;
}

#[tokio::test]
async fn shutdown_drains_the_queue_within_the_grace_period() {
    let sink = GrpcSink::start().await;
    let (handle, recorder) = start_recorded(
        &grpc_config(
            &sink,
            serde_json::json!({"sending_queue": {"num_consumers": 1}}),
        ),
        "otlp",
    );
    for _ in 0..50 {
        handle.try_enqueue(Arc::new(sample_batch(1, 2))).unwrap();
    }
    handle.shutdown(GRACE).await;
    assert_eq!(
        sink.state.span_names().len(),
        100,
        "drained before returning"
    );
    assert_eq!(
        recorder.exporter_counter(names::EXPORTER_SENT_SPANS, "otlp"),
        100
    );
    assert_eq!(recorder.dropped("otlp", "shutdown"), 0);
    let refused = handle
        .try_enqueue(Arc::new(sample_batch(1, 1)))
        .unwrap_err();
    assert!(refused.shutting_down);
    handle.shutdown(GRACE).await; // a second call is harmless
}

#[tokio::test]
async fn without_a_queue_the_pipeline_waits_for_the_export() {
    let sink = GrpcSink::start().await;
    let exporter = grpc_config(
        &sink,
        serde_json::json!({"sending_queue": {"enabled": false}}),
    );
    let (handle, recorder) = start_recorded(&exporter, "otlp");
    assert!(!handle.is_queued());
    let fanout = Fanout::new(vec![handle.clone()]);
    fanout.consume(sample_batch(1, 2)).await.unwrap();
    assert_eq!(
        sink.state.span_names().len(),
        2,
        "sent before consume returned"
    );

    sink.state
        .script([GrpcReply::Fail(Status::invalid_argument("bad data"))]);
    let err = fanout.consume(sample_batch(1, 3)).await.unwrap_err();
    assert!(
        matches!(&err, ConsumeError::Rejected { message, code: Some(tonic::Code::InvalidArgument) } if message.contains("InvalidArgument")),
        "{err:?}"
    );
    assert_eq!(
        recorder.exporter_counter(names::EXPORTER_SEND_FAILED_SPANS, "otlp"),
        3
    );
    assert_eq!(
        recorder.dropped("otlp", "permanent_error"),
        0,
        "the client was told"
    );
    handle.shutdown(GRACE).await;
    assert!(matches!(
        fanout.consume(sample_batch(1, 1)).await,
        Err(ConsumeError::Refused { .. })
    ));
}

fn http_config(sink: &HttpSink, extra: serde_json::Value) -> ExporterConfig {
    let mut value = serde_json::json!({
        "endpoint": format!("http://{}", sink.addr),
        "retry_on_failure": fast_retry(),
    });
    for (k, v) in extra.as_object().unwrap() {
        value[k] = v.clone();
    }
    config("otlphttp", value)
}

#[tokio::test]
async fn http_posts_protobuf_and_json_with_each_compression() {
    for (encoding, compression) in [
        ("proto", "gzip"),
        ("proto", "zstd"),
        ("proto", "none"),
        ("json", "gzip"),
        ("json", "none"),
    ] {
        let sink = HttpSink::start().await;
        let exporter = http_config(
            &sink,
            serde_json::json!({
                "encoding": encoding, "compression": compression,
                "headers": {"X-Scope-OrgID": "tenant-2"}
            }),
        );
        let (handle, recorder) = start_recorded(&exporter, "otlphttp");
        let batch = sample_batch(2, 2);
        handle.try_enqueue(Arc::new(batch.clone())).unwrap();
        sink.state.wait_for_requests(1).await;
        handle.shutdown(GRACE).await;

        let request = &sink.state.received()[0];
        assert_eq!(request.method, http::Method::POST);
        assert_eq!(request.path, "/v1/traces");
        assert_eq!(request.headers["x-scope-orgid"], "tenant-2");
        let content_encoding = request
            .headers
            .get("content-encoding")
            .map(|v| v.to_str().unwrap());
        assert_eq!(
            content_encoding,
            (compression != "none").then_some(compression),
            "{encoding}/{compression}"
        );
        let decoded = match encoding {
            "proto" => {
                assert_eq!(request.headers["content-type"], "application/x-protobuf");
                assert_eq!(&request.body[..], &batch.bytes()[..], "sent as encoded");
                SpanBatch::scan(request.body.clone().into()).unwrap()
            }
            _ => {
                assert_eq!(request.headers["content-type"], "application/json");
                SpanBatch::from_json(&request.body).expect("valid OTLP/JSON")
            }
        };
        assert_eq!(decoded.to_request(), batch.to_request());
        assert_eq!(
            recorder.exporter_counter(names::EXPORTER_SENT_SPANS, "otlphttp"),
            4
        );
    }
}

/// `compression_params.level` reaches the wire: the same batch is
/// smaller at a higher level, and every level reads back as the batch.
#[tokio::test]
async fn http_compression_levels_reach_the_wire() {
    let batch = sample_batch(20, 50);
    let mut sizes = Vec::new();
    for (compression, level) in [
        ("zstd", -5),
        ("zstd", 0),
        ("zstd", 19),
        ("gzip", 1),
        ("gzip", 9),
    ] {
        let sink = HttpSink::start().await;
        let exporter = http_config(
            &sink,
            serde_json::json!({"compression": compression, "compression_params": {"level": level}}),
        );
        let (handle, _) = start_recorded(&exporter, "otlphttp");
        handle.try_enqueue(Arc::new(batch.clone())).unwrap();
        sink.state.wait_for_requests(1).await;
        handle.shutdown(GRACE).await;
        let request = &sink.state.received()[0];
        assert_eq!(request.headers["content-encoding"], compression);
        assert_eq!(
            &request.body[..],
            &batch.bytes()[..],
            "{compression} {level}"
        );
        sizes.push(request.wire_len);
    }
    assert!(
        sizes[0] > sizes[1] && sizes[1] > sizes[2],
        "zstd -5, 3, 19: {sizes:?}"
    );
    assert!(sizes[3] > sizes[4], "gzip 1, 9: {sizes:?}");
}

/// The gRPC exporter sends at the configured level too (the sink reads
/// the frame back); a level the algorithm lacks fails the config.
#[tokio::test]
async fn grpc_compression_level_and_its_checks() {
    let sink = GrpcSink::start().await;
    let exporter = grpc_config(
        &sink,
        serde_json::json!({"compression": "zstd", "compression_params": {"level": 19}}),
    );
    let (handle, _) = start_recorded(&exporter, "otlp");
    let batch = sample_batch(2, 3);
    handle.try_enqueue(Arc::new(batch.clone())).unwrap();
    sink.state.wait_for_spans(6).await;
    handle.shutdown(GRACE).await;
    let received = &sink.state.received()[0];
    assert_eq!(received.metadata.get("grpc-encoding").unwrap(), "zstd");
    assert_eq!(received.request, batch.to_request());

    for (compression, level) in [("gzip", 10), ("zstd", 23), ("none", 1)] {
        let client = serde_json::json!({"compression": compression,
            "compression_params": {"level": level}});
        let mut configs = Vec::new();
        for (kind, endpoint) in [("otlp", "t:1"), ("otlphttp", "http://t:1")] {
            let mut value = client.clone();
            value["endpoint"] = endpoint.into();
            configs.push((kind, value));
        }
        configs.push((
            "loadbalancing",
            serde_json::json!({"protocol": {"otlp": client.clone()},
                "resolver": {"static": {"hostnames": ["a:4317"]}}}),
        ));
        for (kind, value) in configs {
            let err = config(kind, value).validate().unwrap_err();
            assert!(
                err.path.ends_with("compression_params.level"),
                "{kind} {compression} {level}: {err}"
            );
        }
    }
}

#[tokio::test]
async fn http_retries_429_after_retry_after_and_drops_400() {
    let sink = HttpSink::start().await;
    sink.state.script([
        HttpReply::status(429).header("retry-after", "1"),
        HttpReply::ok(),
        HttpReply::status(400),
    ]);
    let (handle, recorder) = start_recorded(
        &http_config(
            &sink,
            serde_json::json!({"sending_queue": {"num_consumers": 1}}),
        ),
        "otlphttp",
    );
    let started = Instant::now();
    handle.try_enqueue(Arc::new(sample_batch(1, 3))).unwrap();
    sink.state.wait_for_requests(2).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 is honoured over the 5ms backoff: {:?}",
        started.elapsed()
    );
    handle.try_enqueue(Arc::new(sample_batch(1, 2))).unwrap();
    eventually("the 400 to be counted", || {
        recorder.dropped("otlphttp", "permanent_error") == 2
    })
    .await;
    handle.shutdown(GRACE).await;
    assert_eq!(sink.state.received().len(), 3, "the 400 is not retried");
    recorder.assert_sent_and_failed("otlphttp", 3, 2);
}

#[tokio::test]
async fn https_with_a_private_ca_negotiates_h2() {
    let pki = TestPki::new();
    let sink = HttpSink::start_tls(&pki).await;
    let exporter = config(
        "otlphttp",
        serde_json::json!({
            "endpoint": format!("https://localhost:{}", sink.addr.port()),
            "tls": {"ca_file": pki.ca_file}
        }),
    );
    let (handle, recorder) = start_recorded(&exporter, "otlphttp");
    handle.try_enqueue(Arc::new(sample_batch(1, 2))).unwrap();
    sink.state.wait_for_requests(1).await;
    handle.shutdown(GRACE).await;
    let request = &sink.state.received()[0];
    assert_eq!(request.version, http::Version::HTTP_2);
    assert_eq!(
        SpanBatch::scan(request.body.clone().into()).unwrap().len(),
        2
    );
    assert_eq!(
        recorder.exporter_counter(names::EXPORTER_SENT_SPANS, "otlphttp"),
        2
    );
}

#[tokio::test]
async fn http_partial_success_and_custom_traces_endpoint() {
    let sink = HttpSink::start().await;
    let response = tracegate_model::otlp::ExportTraceServiceResponse {
        partial_success: Some(tracegate_model::otlp::ExportTracePartialSuccess {
            rejected_spans: 1,
            error_message: "dup".into(),
        }),
    };
    sink.state.script([HttpReply {
        status: 200,
        headers: vec![("content-type", "application/x-protobuf".into())],
        body: prost::Message::encode_to_vec(&response),
    }]);
    let exporter = config(
        "otlp_http",
        serde_json::json!({"traces_endpoint": format!("http://{}/tempo/push", sink.addr)}),
    );
    let (handle, recorder) = start_recorded(&exporter, "otlp_http");
    handle.try_enqueue(Arc::new(sample_batch(1, 3))).unwrap();
    sink.state.wait_for_requests(1).await;
    handle.shutdown(GRACE).await;
    assert_eq!(sink.state.received()[0].path, "/tempo/push");
    assert_eq!(recorder.dropped("otlp_http", "rejected_by_backend"), 1);
}

#[tokio::test]
async fn debug_and_file_exporters_run_behind_the_same_fanout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    let (debug, _) = start_recorded(
        &config("debug", serde_json::json!({"verbosity": "detailed"})),
        "debug",
    );
    let (file, recorder) =
        start_recorded(&config("file", serde_json::json!({"path": path})), "file");
    let fanout = Fanout::new(vec![debug.clone(), file.clone()]);
    fanout.consume(sample_batch(2, 2)).await.unwrap();
    fanout.consume(sample_batch(1, 1)).await.unwrap();
    debug.shutdown(GRACE).await;
    file.shutdown(GRACE).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let spans: usize = text
        .lines()
        .map(|line| SpanBatch::from_json(line.as_bytes()).unwrap().len())
        .sum();
    assert_eq!(spans, 5);
    assert_eq!(
        recorder.exporter_counter(names::EXPORTER_SENT_SPANS, "file"),
        5
    );
}

#[test]
fn kinds_and_aliases_parse() {
    for kind in ["otlp", "otlp_grpc", "tempo"] {
        assert!(matches!(
            config(kind, serde_json::json!({"endpoint": "tempo:4317"})),
            ExporterConfig::OtlpGrpc(_)
        ));
    }
    for kind in ["otlphttp", "otlp_http"] {
        assert!(matches!(
            config(kind, serde_json::json!({"endpoint": "http://tempo:4318"})),
            ExporterConfig::OtlpHttp(_)
        ));
    }
    assert!(matches!(
        config("debug", serde_json::Value::Null),
        ExporterConfig::Debug(_)
    ));
    assert!(matches!(
        config("file", serde_json::json!({"path": "x"})),
        ExporterConfig::File(_)
    ));
    assert!(matches!(
        config("jaeger", serde_json::json!({"endpoint": "jaeger:14250"})),
        ExporterConfig::Jaeger(_)
    ));
    assert!(ExporterConfig::from_value("kafka", serde_json::Value::Null).is_none());
    for kind in ExporterConfig::KINDS {
        assert!(ExporterConfig::from_value(kind, serde_json::json!({})).is_some());
    }
    let err = ExporterConfig::from_value(
        "otlp",
        serde_json::json!({"endpoint": "t:1", "tls": {"insecur": true}}),
    )
    .unwrap()
    .unwrap_err();
    assert!(err.path.starts_with("tls"), "{err}");
    // The seed DaemonSet config's exporter.
    let seed = config(
        "tempo",
        serde_json::json!({"endpoint": "tempo:4317", "tls": {"insecure": true}}),
    );
    assert_eq!(seed.validate(), Ok(vec![]));
}

/// A section written with no value (`sending_queue:`) is the same as the
/// section left out, as in the collector.
#[test]
fn sections_with_no_value_mean_their_defaults() {
    for (kind, endpoint) in [("otlp", "tempo:4317"), ("otlphttp", "http://tempo:4318")] {
        let empty = config(
            kind,
            serde_json::json!({
                "endpoint": endpoint,
                "sending_queue": null,
                "retry_on_failure": null,
                "tls": null,
                "headers": null,
                "compression": null,
                "timeout": null,
            }),
        );
        assert_eq!(
            empty,
            config(kind, serde_json::json!({"endpoint": endpoint})),
            "{kind}"
        );
        assert!(empty.validate().is_ok(), "{kind}");
    }
    let grpc = config(
        "otlp",
        serde_json::json!({"endpoint": "tempo:4317", "keepalive": null, "authority": null}),
    );
    assert_eq!(
        grpc,
        config("otlp", serde_json::json!({"endpoint": "tempo:4317"}))
    );
    for (kind, value) in [
        (
            "debug",
            serde_json::json!({"sending_queue": null, "verbosity": null}),
        ),
        (
            "file",
            serde_json::json!({"path": "x", "rotation": null, "sending_queue": null}),
        ),
    ] {
        let mut defaults = value.clone();
        defaults
            .as_object_mut()
            .unwrap()
            .retain(|_, v| !v.is_null());
        assert_eq!(config(kind, value), config(kind, defaults), "{kind}");
    }
    // Misspelt keys are still found, with or without a value.
    for (value, path, message) in [
        (
            serde_json::json!({"endpoint": "t:1", "tls": null, "sending_queue": {"queue_sise": 5}}),
            "sending_queue",
            r#"unknown field "queue_sise", did you mean "queue_size"?"#,
        ),
        (
            serde_json::json!({"endpoint": "t:1", "retry_on_failur": null}),
            "",
            r#"unknown field "retry_on_failur", did you mean "retry_on_failure"?"#,
        ),
    ] {
        let err = ExporterConfig::from_value("otlp", value)
            .unwrap()
            .unwrap_err();
        assert_eq!((err.path.as_str(), err.message.as_str()), (path, message));
    }
}

/// `sending_queue.sizer: items`: `queue_size` counts spans, so a queue of
/// 10 takes a 6-span batch and refuses the next, and the queue size gauge
/// is in spans too, as the collector's.
#[tokio::test]
async fn the_items_sizer_counts_spans_in_the_queue() {
    let stalled = GrpcSink::start().await;
    stalled.state.otherwise(GrpcReply::Stall);
    let (handle, metrics) = start_recorded(
        &grpc_config(
            &stalled,
            serde_json::json!({"timeout": "60s",
                "sending_queue": {"num_consumers": 1, "queue_size": 10, "sizer": "items"}}),
        ),
        "otlp/items",
    );
    let fanout = Fanout::new(vec![handle.clone()]);
    // The consumer takes the first batch and stalls on it.
    fanout.consume(sample_batch(1, 3)).await.unwrap();
    stalled.state.wait_for_attempts(1).await;
    fanout.consume(sample_batch(2, 3)).await.unwrap();
    assert_eq!(
        metrics.gauge(names::EXPORTER_QUEUE_SIZE, &[("exporter", "otlp/items")]),
        6.0
    );
    let refused = fanout.consume(sample_batch(1, 5)).await.unwrap_err();
    assert!(
        matches!(refused, ConsumeError::Refused { .. }),
        "{refused:?}"
    );
    fanout.consume(sample_batch(1, 4)).await.unwrap();
    assert_eq!(
        metrics.gauge(names::EXPORTER_QUEUE_SIZE, &[("exporter", "otlp/items")]),
        10.0
    );
    assert_eq!(
        metrics.exporter_counter(names::EXPORTER_ENQUEUE_FAILED_SPANS, "otlp/items"),
        5
    );
}

/// As the collector's otlphttp exporter: a 2xx whose body says it is an
/// OTLP protobuf response and does not parse is not a delivery; the batch
/// is retried, and counted as sent only once a response parses.
#[tokio::test]
async fn http_retries_a_2xx_whose_otlp_response_does_not_parse() {
    let sink = HttpSink::start().await;
    let garbled = HttpReply {
        body: vec![0xff, 0xff],
        ..HttpReply::ok()
    };
    sink.state.script([garbled, HttpReply::ok()]);
    let (handle, recorder) = start_recorded(
        &http_config(
            &sink,
            serde_json::json!({"sending_queue": {"num_consumers": 1}}),
        ),
        "otlphttp",
    );
    handle.try_enqueue(Arc::new(sample_batch(1, 3))).unwrap();
    sink.state.wait_for_requests(2).await;
    eventually("the retried batch to be counted", || {
        recorder.exporter_counter(names::EXPORTER_SENT_SPANS, "otlphttp") == 3
    })
    .await;
    handle.shutdown(GRACE).await;
    recorder.assert_sent_and_failed("otlphttp", 3, 0);
    assert_eq!(sink.state.received().len(), 2);
}
