//! The persistent sending queue (`sending_queue.storage`) through a real
//! exporter and sink: what is acknowledged to the pipeline survives a
//! restart, is sent once the backend answers, and then leaves the disk.

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;

use super::test_support::*;
use super::*;
use crate::consumer::Consumer;
use crate::file_storage::{self, FileStorage, Storages};
use crate::telemetry::names;

fn storage_in(dir: &std::path::Path) -> FileStorage {
    let config = file_storage::Config {
        directory: dir.display().to_string(),
        ..file_storage::Config::default()
    };
    FileStorage::open("file_storage/q", &config).unwrap()
}

fn persistent_config(sink: &GrpcSink, queue: serde_json::Value) -> ExporterConfig {
    let mut sending_queue = serde_json::json!({"storage": "file_storage/q", "num_consumers": 2});
    for (k, v) in queue.as_object().unwrap() {
        sending_queue[k] = v.clone();
    }
    ExporterConfig::from_value(
        "otlp",
        serde_json::json!({
            "endpoint": sink.addr.to_string(),
            "tls": {"insecure": true},
            "compression": "none",
            "sending_queue": sending_queue,
            "retry_on_failure": {
                "initial_interval": "5ms", "max_interval": "20ms", "max_elapsed_time": "0s",
                "randomization_factor": 0.0
            },
        }),
    )
    .unwrap()
    .unwrap()
}

fn start_with(
    config: &ExporterConfig,
    storage: &FileStorage,
) -> (Result<ExporterHandle, StartError>, Arc<TestRecorder>) {
    let recorder = Arc::new(TestRecorder::default());
    let ctx = crate::context::BuildContext {
        storages: Storages::new([storage.clone()]),
        ..crate::context::BuildContext::default()
    };
    let handle =
        metrics::with_local_recorder(recorder.as_ref(), || config.start("otlp/durable", &ctx));
    (handle, recorder)
}

fn unavailable() -> GrpcReply {
    GrpcReply::Fail(Status::unavailable("backend down"))
}

#[tokio::test]
async fn what_the_queue_took_survives_a_restart_and_is_sent_once_the_backend_answers() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage_in(dir.path());
    let sink = GrpcSink::start().await;
    sink.state.otherwise(unavailable());
    let config = persistent_config(&sink, serde_json::json!({}));

    let (handle, _) = start_with(&config, &storage);
    let handle = handle.unwrap();
    let fanout = Fanout::new(vec![handle.clone()]);
    let batches: Vec<_> = (0..6).map(|i| sample_batch(1, 2 + i)).collect();
    for batch in &batches {
        fanout.consume(batch.clone()).await.unwrap();
    }
    sink.state.wait_for_attempts(3).await;
    // The backend never took anything: shut down at once, as a crash would
    // leave it (in-flight batches are not acknowledged either).
    handle.shutdown(Duration::ZERO).await;
    drop(fanout);
    drop(handle);
    assert!(sink.state.received().is_empty());

    sink.state.otherwise(GrpcReply::Ok);
    let (handle, recorder) = start_with(&config, &storage);
    let handle = handle.unwrap();
    let want: usize = batches.iter().map(|b| b.len()).sum();
    sink.state.wait_for_spans(want).await;
    handle.shutdown(Duration::from_secs(5)).await;
    drop(handle);
    let mut got = sink.state.span_names();
    let mut expected: Vec<String> = batches
        .iter()
        .flat_map(|b| span_names(&b.to_request()))
        .collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "every span once, none lost");
    recorder.assert_sent_and_failed("otlp/durable", want as u64, 0);

    // Everything was acknowledged: a third start has nothing to send.
    let before = sink.state.received().len();
    let (handle, _) = start_with(&config, &storage);
    let handle = handle.unwrap();
    assert_eq!(handle.queue_len(), 0);
    handle.shutdown(Duration::from_secs(1)).await;
    assert_eq!(sink.state.received().len(), before);
}

#[tokio::test]
async fn a_full_persistent_queue_refuses_and_with_block_on_overflow_waits() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage_in(dir.path());
    let sink = GrpcSink::start().await;
    sink.state.otherwise(unavailable());
    // Room for 6 spans; one consumer holds a batch in flight.
    let config = persistent_config(
        &sink,
        serde_json::json!({"sizer": "items", "queue_size": 6, "num_consumers": 1}),
    );
    let (handle, recorder) = start_with(&config, &storage);
    let handle = handle.unwrap();
    handle.send(Arc::new(sample_batch(1, 3))).await.unwrap();
    sink.state.wait_for_attempts(1).await;
    handle.send(Arc::new(sample_batch(1, 3))).await.unwrap();
    handle.send(Arc::new(sample_batch(1, 3))).await.unwrap();
    assert_eq!(
        handle.send(Arc::new(sample_batch(1, 3))).await,
        Err(Refusal::QueueFull)
    );
    assert_eq!(
        recorder.exporter_counter(names::EXPORTER_ENQUEUE_FAILED_SPANS, "otlp/durable"),
        3
    );
    handle.shutdown(Duration::ZERO).await;
    drop(handle);

    let config = persistent_config(
        &sink,
        serde_json::json!({"sizer": "items", "queue_size": 6, "num_consumers": 1,
                           "block_on_overflow": true}),
    );
    let (handle, _) = start_with(&config, &storage);
    let handle = handle.unwrap();
    // The 9 spans stored before fill it; the next send waits for room.
    let waiting = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.send(Arc::new(sample_batch(1, 3))).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "waits while the queue is full");
    sink.state.otherwise(GrpcReply::Ok);
    let sent = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("room is made as the backend takes batches")
        .unwrap();
    assert_eq!(sent, Ok(()));
    sink.state.wait_for_spans(12).await;
    handle.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_storage_that_was_not_started_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage_in(dir.path());
    let sink = GrpcSink::start().await;
    let config = ExporterConfig::from_value(
        "otlp",
        serde_json::json!({"endpoint": sink.addr.to_string(),
                           "sending_queue": {"storage": "file_storage/missing"}}),
    )
    .unwrap()
    .unwrap();
    let (handle, _) = start_with(&config, &storage);
    let err = handle.unwrap_err().to_string();
    assert!(err.contains("sending_queue.storage"), "{err}");
    assert!(err.contains("file_storage/missing"), "{err}");
    assert!(
        err.contains("file_storage/q"),
        "names what was started: {err}"
    );
}

#[tokio::test]
async fn two_exporters_keep_apart_and_a_second_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage_in(dir.path());
    let err = FileStorage::open(
        "file_storage/again",
        &file_storage::Config {
            directory: dir.path().display().to_string(),
            timeout: Duration::ZERO,
            ..file_storage::Config::default()
        },
    )
    .unwrap_err();
    assert!(err.contains("in use by another process"), "{err}");
    let sink = GrpcSink::start().await;
    let config = persistent_config(&sink, serde_json::json!({}));
    let (a, _) = start_with(&config, &storage);
    let a = a.unwrap();
    // The same exporter id twice in one directory: its log is locked.
    let (b, _) = start_with(&config, &storage);
    let err = b.unwrap_err().to_string();
    assert!(err.contains("exporter_otlp_durable_traces"), "{err}");
    a.shutdown(Duration::from_secs(1)).await;
}
