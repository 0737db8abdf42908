//! The tail sampler's journal (`tail_storage` on `pebble_tail_storage`)
//! with real processes: pending traces survive SIGKILL and are decided
//! whole after the restart; a journal cut mid-record costs only what the
//! cut reached, counted. Each test prints sent / acknowledged / delivered /
//! duplicated / lost.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::Span;

use crate::support::gateway::{otlp_exporter_to, Gateway, TELEMETRY};
use crate::support::raw::{counter_sum, grpc, TRACE_EXPORT};
use crate::support::sink::Sink;
use crate::support::traces::{
    assert_share, expected_kept, make_trace, request, Kind, Trace, CARD_POLICIES,
};
use crate::support::Rng;
use crate::tail_sampling::metrics_until;

/// Short enough for a test of a few seconds, long enough that the first
/// halves, a SIGKILL, a restart and the second halves fit in it.
const DECISION_WAIT: Duration = Duration::from_secs(4);

/// OTLP/gRPC in, the card's policy (every error trace, 25 % of slow ones,
/// 5 % of the rest) with its journal in `store`, OTLP out to `sink`.
fn config(sink: SocketAddr, store: &Path) -> String {
    format!(
        r#"receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
processors:
  tail_sampling:
    decision_wait: {wait}s
    tail_storage: pebble_tail_storage
    policies:
{CARD_POLICIES}extensions:
  pebble_tail_storage:
    directory: {store}
    max_storage_size_mib: 256
{exporters}service:
  extensions: [pebble_tail_storage]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [tail_sampling]
      exporters: [otlp]
{TELEMETRY}"#,
        wait = DECISION_WAIT.as_secs(),
        store = store.display(),
        exporters = otlp_exporter_to(sink),
    )
}

/// 10-span traces; the error span of an error trace falls in either half.
fn traces(n: usize, seed: u64) -> Vec<Trace> {
    let mut rng = Rng(seed);
    (0..n).map(|i| make_trace(&mut rng, i, 10..=10)).collect()
}

/// Sends spans `half` (0..5 or 5..10) of every trace, 50 traces a request,
/// `at_once` requests at a time; returns the span ids acknowledged and the
/// number sent.
async fn send_halves(
    gw: &Gateway,
    traces: &[Trace],
    half: std::ops::Range<usize>,
    at_once: usize,
) -> (HashSet<Vec<u8>>, usize) {
    let addr = gw.addr("otlp", "grpc");
    let requests: Vec<Vec<Span>> = traces
        .chunks(50)
        .map(|chunk| {
            chunk
                .iter()
                .flat_map(|t| t.spans[half.clone()].iter().cloned())
                .collect()
        })
        .collect();
    let sent = requests.iter().map(Vec::len).sum();
    let mut acknowledged = HashSet::new();
    for group in requests.chunks(at_once) {
        let replies = futures::future::join_all(group.iter().map(|spans| async move {
            let body = request("api", spans.clone());
            (spans, grpc(addr, TRACE_EXPORT, &body, None).await)
        }))
        .await;
        for (spans, reply) in replies {
            if reply.code == 0 {
                acknowledged.extend(spans.iter().map(|s| s.span_id.clone()));
            }
        }
    }
    (acknowledged, sent)
}

/// The spans the sink received, by trace, and how many arrived twice.
fn received(sink: &Sink) -> (HashMap<[u8; 16], HashSet<Vec<u8>>>, usize) {
    let mut by_trace: HashMap<[u8; 16], HashSet<Vec<u8>>> = HashMap::new();
    let mut duplicated = 0;
    for s in sink.spans() {
        let id: [u8; 16] = s.span.trace_id.as_slice().try_into().unwrap();
        if !by_trace.entry(id).or_default().insert(s.span.span_id) {
            duplicated += 1;
        }
    }
    (by_trace, duplicated)
}

/// Waits until the restarted gateway has decided `traces` traces and
/// exported everything it kept (so nothing more can arrive).
async fn settled(gw: &Gateway, sink: &Sink, traces: u64) -> String {
    let decided = "otelcol_processor_tail_sampling_global_count_traces_sampled_total";
    metrics_until(gw.addr("telemetry", "metrics"), |text| {
        counter_sum(text, decided) >= traces
            && counter_sum(text, "otelcol_exporter_sent_spans_total") == sink.span_count() as u64
    })
    .await
}

fn journal_segments(store: &Path) -> Vec<PathBuf> {
    let dir = store.join("processor_tail_sampling_");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_traces_survive_sigkill_and_are_decided_whole() {
    let sink = Sink::start().await;
    let store = tempfile::tempdir().unwrap();
    let yaml = config(sink.addr, store.path());
    let traces = traces(2000, 0x5161_c111);

    let mut gw = Gateway::start(&yaml);
    let started = Instant::now();
    let (mut acknowledged, mut sent) = send_halves(&gw, &traces, 0..5, 4).await;
    gw.kill();
    assert_eq!(sink.span_count(), 0, "nothing decided before the crash");
    let gw = Gateway::start(&yaml);
    let restarted = started.elapsed();
    let (second, second_sent) = send_halves(&gw, &traces, 5..10, 4).await;
    let sent_in = started.elapsed();
    acknowledged.extend(second);
    sent += second_sent;
    assert!(
        sent_in < DECISION_WAIT,
        "both halves, the kill and the restart took {sent_in:?}, longer than decision_wait: \
         the test cannot tell a restored trace from a late one on this machine now"
    );

    let expected: Vec<&Trace> = traces.iter().filter(|t| expected_kept(t)).collect();
    assert!(
        sink.wait_for_spans(expected.len() * 10, Duration::from_secs(30))
            .await,
        "{} of {} spans arrived",
        sink.span_count(),
        expected.len() * 10
    );
    let text = settled(&gw, &sink, traces.len() as u64).await;
    let (got, duplicated) = received(&sink);
    let delivered: usize = got.values().map(HashSet::len).sum();
    let lost = expected
        .iter()
        .map(|t| 10 - got.get(&t.id).map_or(0, HashSet::len))
        .sum::<usize>();
    println!(
        "pending traces across SIGKILL: sent {sent} / acknowledged {} / delivered {delivered} / \
         duplicated {duplicated} / lost {lost} (restarted {restarted:?} after the first span, \
         second halves in by {sent_in:?})",
        acknowledged.len()
    );
    assert_eq!(acknowledged.len(), sent, "every span acknowledged");
    assert_eq!(
        counter_sum(
            &text,
            "otelcol_tracegate_tail_sampling_journal_restored_traces_total"
        ),
        traces.len() as u64,
        "every trace pending at the kill came back:\n{text}"
    );
    // Every error trace whole, whichever half its error span was in.
    let errors: Vec<&Trace> = traces.iter().filter(|t| t.kind == Kind::Error).collect();
    let late_errors = errors
        .iter()
        .filter(|t| {
            t.spans[5..]
                .iter()
                .any(|s| s.status.as_ref().is_some_and(|st| st.code == 2))
        })
        .count();
    assert!(late_errors > 0 && late_errors < errors.len());
    for t in &errors {
        assert_eq!(
            got.get(&t.id).map_or(0, HashSet::len),
            10,
            "error trace {:02x?} kept whole",
            t.id
        );
    }
    // Exactly the traces the policy keeps, each whole; nothing twice.
    for (id, spans) in &got {
        let t = traces.iter().find(|t| &t.id == id).expect("a sent trace");
        assert!(
            expected_kept(t),
            "trace {id:02x?} ({:?}) not to be kept",
            t.kind
        );
        assert_eq!(spans.len(), 10, "trace {id:02x?} ({:?}) whole", t.kind);
    }
    assert_eq!(got.len(), expected.len());
    assert_eq!((duplicated, lost), (0, 0));
    // The baseline share within 3 sigma of 5 %.
    let kept: HashSet<[u8; 16]> = got.keys().copied().collect();
    assert_share(&traces, &kept, Kind::Normal, 0.05, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_cut_mid_record_starts_counts_and_keeps_the_rest() {
    let sink = Sink::start().await;
    let store = tempfile::tempdir().unwrap();
    let yaml = config(sink.addr, store.path());
    let traces = traces(400, 0x70a2);

    let mut gw = Gateway::start(&yaml);
    // One request at a time, so the last record is the last request's.
    let (mut acknowledged, mut sent) = send_halves(&gw, &traces, 0..5, 1).await;
    gw.kill();
    // Cut the last segment in the middle of its last record: the first
    // halves of the last request's 50 traces.
    let segments = journal_segments(store.path());
    let last = segments.last().expect("a segment");
    let len = std::fs::metadata(last).unwrap().len();
    let cut = len - 300;
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(cut)
        .unwrap();

    let gw = Gateway::start(&yaml);
    gw.wait_for_log(&["tail sampling journal damaged"], Duration::from_secs(5));
    let (second, second_sent) = send_halves(&gw, &traces, 5..10, 4).await;
    acknowledged.extend(second);
    sent += second_sent;

    let (before, torn) = traces.split_at(traces.len() - 50);
    let expected: Vec<&Trace> = before.iter().filter(|t| expected_kept(t)).collect();
    assert!(
        sink.wait_for_spans(expected.len() * 10, Duration::from_secs(30))
            .await
    );
    let text = settled(&gw, &sink, traces.len() as u64).await;
    let (got, duplicated) = received(&sink);
    let delivered: usize = got.values().map(HashSet::len).sum();
    let lost_to_the_cut = torn.len() * 5;
    let lost = expected
        .iter()
        .map(|t| 10 - got.get(&t.id).map_or(0, HashSet::len))
        .sum::<usize>();
    println!(
        "journal cut mid-record: sent {sent} / acknowledged {} / delivered {delivered} / \
         duplicated {duplicated} / lost {lost} before the cut, {lost_to_the_cut} spans in the \
         cut record",
        acknowledged.len()
    );
    assert_eq!(
        counter_sum(&text, "otelcol_tracegate_storage_lost_records_total"),
        1,
        "the cut record counted:\n{text}"
    );
    assert!(text.contains("reason=\"corrupt\""), "{text}");
    assert_eq!(
        counter_sum(
            &text,
            "otelcol_tracegate_tail_sampling_journal_restored_traces_total"
        ),
        before.len() as u64
    );
    // Everything before the damage: decided whole, as the policy says.
    for t in &expected {
        assert_eq!(
            got.get(&t.id).map_or(0, HashSet::len),
            10,
            "{:?} trace {:02x?} whole",
            t.kind,
            t.id
        );
    }
    for t in before.iter().filter(|t| !expected_kept(t)) {
        assert!(!got.contains_key(&t.id));
    }
    // The cut traces have only what came after the restart.
    for t in torn {
        assert!(got.get(&t.id).map_or(0, HashSet::len) <= 5);
    }
    assert_eq!((duplicated, lost), (0, 0));
}
