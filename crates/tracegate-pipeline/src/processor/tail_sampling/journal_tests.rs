//! The tail sampler with a journal (`tail_storage`): a crash (the workers
//! aborted, nothing flushed) and a clean shutdown both hand the pending
//! traces to the next start, decided traces are not decided again, a full
//! storage sheds, and damage is skipped and counted.

use std::path::Path;

use super::journal::JournalPlace;
use super::tests::{config, errors_only, request, send, settle, Collect};
use super::*;
use crate::file_storage::{self, FileStorage};

/// The journal in a `pebble_tail_storage`-like storage in `dir` (as the
/// extension opens it), bounded to `bound_mib`.
pub(super) fn place(dir: &Path, bound_mib: u64) -> Option<JournalPlace> {
    let config = file_storage::Config {
        directory: dir.display().to_string(),
        create_directory: true,
        max_size_mib: bound_mib,
        ..file_storage::Config::default()
    };
    let storage = FileStorage::open("pebble_tail_storage", &config).unwrap();
    Some(crate::tail_storage::journal_in(&storage, "tail_sampling"))
}

pub(super) fn start_journaled(
    cfg: Config,
    dir: &Path,
    bound_mib: u64,
) -> (Arc<Collect>, Arc<TailSampler>) {
    let sink = Arc::new(Collect::default());
    let sampler = TailSampler::start(
        "tail_sampling",
        cfg,
        sink.clone(),
        MemoryPressure::default(),
        place(dir, bound_mib),
    )
    .unwrap();
    (sink, sampler)
}

/// What SIGKILL leaves: the workers stop wherever they are, nothing is
/// flushed, acknowledgements still queued in memory are lost.
pub(super) async fn crash(sampler: Arc<TailSampler>) {
    let workers = std::mem::take(&mut *sampler.workers.lock().unwrap());
    for worker in workers {
        worker.abort();
        let _ = worker.await;
    }
    drop(sampler);
}

/// (trace, span) pairs the sink received, sorted.
fn received(sink: &Collect) -> Vec<(u8, u8)> {
    let mut out: Vec<(u8, u8)> = sink
        .spans()
        .iter()
        .map(|(trace, span, _)| (trace[0], span[0]))
        .collect();
    out.sort_unstable();
    out
}

#[tokio::test(start_paused = true)]
async fn a_crash_loses_no_pending_trace_and_repeats_no_decision() {
    for shards in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let (sink, a) = start_journaled(errors_only(shards), dir.path(), 0);
        send(&a, "api", &[(3, 1, true)]).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        // One record with spans of a trace decided before the crash and
        // of one still pending at it.
        send(&a, "api", &[(1, 1, false), (3, 2, false)]).await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        settle(|| sink.spans().len() == 2).await;
        assert_eq!(received(&sink), [(3, 1), (3, 2)]);
        send(&a, "api", &[(2, 1, true)]).await;
        settle(|| a.journal.as_ref().unwrap().disk_use() > 0).await;
        crash(a).await;

        // The next start: trace 1 and 2 pending again, trace 3 remembered
        // as sampled.
        let (sink, b) = start_journaled(errors_only(shards), dir.path(), 0);
        send(&b, "db", &[(1, 2, true), (3, 3, false)]).await;
        settle(|| !sink.spans().is_empty()).await;
        assert_eq!(
            received(&sink),
            [(3, 3)],
            "a late span follows the journaled decision at once (shards {shards})"
        );
        tokio::time::sleep(Duration::from_secs(11)).await;
        settle(|| sink.spans().len() == 4).await;
        assert_eq!(
            received(&sink),
            [(1, 1), (1, 2), (2, 1), (3, 3)],
            "trace 1 decided whole with its span from before the crash; trace 3 not again (shards {shards})"
        );
        b.flush().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_clean_shutdown_leaves_pending_traces_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, a) = start_journaled(errors_only(2), dir.path(), 0);
    send(&a, "api", &[(1, 1, true), (2, 1, false)]).await;
    a.flush().await;
    assert!(
        sink.spans().is_empty(),
        "with a journal, shutdown does not decide pending traces early"
    );
    drop(a);

    let (sink, b) = start_journaled(errors_only(1), dir.path(), 0);
    send(&b, "api", &[(1, 2, false)]).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    settle(|| sink.spans().len() == 2).await;
    assert_eq!(received(&sink), [(1, 1), (1, 2)]);
    b.flush().await;
    drop(b);

    // drop_pending_traces_on_shutdown still drops them, journal or not.
    let mut dropping = errors_only(1);
    dropping.drop_pending_traces_on_shutdown = true;
    let (_, c) = start_journaled(dropping.clone(), dir.path(), 0);
    send(&c, "api", &[(5, 1, true)]).await;
    c.flush().await;
    drop(c);
    let (sink, d) = start_journaled(dropping, dir.path(), 0);
    tokio::time::sleep(Duration::from_secs(11)).await;
    settle(|| true).await;
    assert!(sink.spans().is_empty(), "{:?}", received(&sink));
    d.flush().await;
}

#[tokio::test(start_paused = true)]
async fn a_full_storage_sheds_its_oldest_traces_and_stays_within_its_bound() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let dir = tempfile::tempdir().unwrap();
    let bound = 1 << 20;
    let cfg = config(serde_json::json!({
        "decision_wait": "30s",
        "shards": 2,
        "policies": [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]
    }));
    let (sink, sampler) =
        metrics::with_local_recorder(&recorder, || start_journaled(cfg, dir.path(), 1));
    let journal = sampler.journal.clone().unwrap();
    // 1 000 requests of 20 traces (about 1.4 MB), more than the bound:
    // every trace with an even number has an error.
    let mut refused = 0;
    for r in 0..1000u32 {
        let spans: Vec<(u8, u8, bool)> = (0..20u8)
            .map(|t| {
                (
                    ((r * 20 + u32::from(t)) % 250) as u8,
                    (r / 12 % 256) as u8,
                    t % 2 == 0,
                )
            })
            .collect();
        let batch = request("api", &spans);
        loop {
            match sampler.consume(batch.clone()).await {
                Ok(()) => break,
                Err(ConsumeError::Refused { reason, .. }) => {
                    assert!(reason.contains("full"), "{reason}");
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            journal.disk_use() <= bound,
            "{} > {bound}",
            journal.disk_use()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    metrics::with_local_recorder(&recorder, || journal.report());
    let text = handle.render();
    let early = text
        .lines()
        .find(|l| {
            l.starts_with("tracegate_tail_sampling_early_decisions")
                && l.contains("reason=\"storage_full\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        early > 0,
        "the oldest traces were decided early (refused {refused}):\n{text}"
    );
    // Decided early, still by the policies: error traces kept.
    assert!(sink.spans().iter().any(|(t, _, _)| t[0] % 2 == 0));
    assert!(sink.spans().iter().all(|(t, _, _)| t[0] % 2 == 0));
    sampler.flush().await;
}

/// `spans` spans of each of the traces `first..first + count` (ids of 4
/// bytes repeated, so there are more than
/// [`trace_id`](super::tests::trace_id) gives), every even one an error.
fn new_traces(first: u32, count: u32, spans: u8) -> SpanBatch {
    use tracegate_model::otlp::{
        ExportTraceServiceRequest, ResourceSpans, ScopeSpans, Span, Status,
    };
    let spans = (first..first + count)
        .flat_map(|t| (1..=spans).map(move |s| (t, s)))
        .map(|(t, s)| Span {
            trace_id: t.to_be_bytes().repeat(4),
            span_id: vec![s; 8],
            name: "s".into(),
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_010_000_000,
            status: Some(Status {
                code: if t % 2 == 0 { 2 } else { 0 },
                message: String::new(),
            }),
            ..Default::default()
        })
        .collect();
    SpanBatch::from_request(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

#[tokio::test(start_paused = true)]
async fn the_journal_gives_disk_back_as_traces_are_decided() {
    let dir = tempfile::tempdir().unwrap();
    // Bounded, so the spans log's segments are 64 KiB.
    // A table for the traces pending at a time and as many decided ones
    // (the decisions remembered, and so snapshotted, without a cache).
    let mut cfg = errors_only(2);
    cfg.num_traces = 1000;
    let (sink, sampler) = start_journaled(cfg, dir.path(), 1);
    let journal = sampler.journal.clone().unwrap();
    // 40 s of new traces, each decided 10 s after it came: decisions are
    // written all along, between the spans.
    let mut most = 0;
    for r in 0..800u32 {
        sampler.consume(new_traces(r * 2, 2, 10)).await.unwrap();
        most = most.max(journal.disk_use());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(11)).await;
    settle(|| sink.spans().len() == 8000).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    // At most about 10 s of spans at a time (a quarter), and a segment;
    // at the end, the active segment, the acks and the decisions since the
    // last snapshot.
    let written = 800 * new_traces(0, 2, 10).bytes().len() as u64;
    assert!(
        most < written / 2,
        "{most} bytes on disk at most of {written} written"
    );
    let left = journal.disk_use();
    assert!(left < 160 << 10, "{left} of {written} bytes still on disk");
    sampler.flush().await;
}

#[tokio::test(start_paused = true)]
async fn a_damaged_record_is_skipped_and_counted_and_the_rest_restored() {
    let dir = tempfile::tempdir().unwrap();
    let (_, a) = start_journaled(errors_only(1), dir.path(), 0);
    for t in 1..=3u8 {
        send(&a, "api", &[(t, 1, true)]).await;
    }
    a.flush().await;
    drop(a);
    // Flip a byte inside the second record's payload.
    let journal_dir = dir.path().join("processor_tail_sampling_");
    let segment = std::fs::read_dir(&journal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut data = std::fs::read(&segment).unwrap();
    let record = request("api", &[(2, 1, true)]).bytes().len() + 9 + 8;
    let at = 16 + record + record / 2;
    data[at] ^= 0xff;
    std::fs::write(&segment, &data).unwrap();

    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let (sink, b) =
        metrics::with_local_recorder(&recorder, || start_journaled(errors_only(1), dir.path(), 0));
    tokio::time::sleep(Duration::from_secs(11)).await;
    settle(|| !sink.spans().is_empty()).await;
    assert_eq!(
        received(&sink),
        [(1, 1)],
        "the record before the damage is restored; the damaged one and the rest of its segment are lost"
    );
    let text = handle.render();
    assert!(
        text.lines()
            .any(|l| l.starts_with("tracegate_storage_lost_records")
                && l.contains("reason=\"corrupt\"")
                && !l.ends_with(" 0")),
        "{text}"
    );
    b.flush().await;
}
