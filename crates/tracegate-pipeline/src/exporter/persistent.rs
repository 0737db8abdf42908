//! The persistent sending queue (`sending_queue.storage`): each batch is
//! written to a [`Log`] in the storage extension's directory before the
//! pipeline is answered, and acknowledged there only once the backend took
//! it or it was dropped for good and counted. After a restart, SIGKILL
//! included, the log replays what was not acknowledged and the consumers
//! send it first.
//!
//! Writes and acknowledgements go through one writer thread per queue,
//! which takes whatever is waiting at once: one write (and, with
//! `fsync: true`, one sync) for every batch pipelines handed over
//! meanwhile. Recent batches also stay in memory, up to [`HOT_BYTES`], so
//! that in the steady state consumers never read back what was just
//! written; older ones are read from disk (on the blocking pool) and
//! scanned again when their turn comes.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use metrics::{Counter, Gauge};
use tokio::sync::{oneshot, Notify};
use tracegate_model::SpanBatch;
use tracegate_storage::{Fsync, Log, Position};

use super::delivery::Sizer;
use super::queue::PushError;
use crate::file_storage::FileStorage;
use crate::telemetry::names;

/// Encoded bytes of the newest queued batches kept in memory as well as on
/// disk.
pub(crate) const HOT_BYTES: usize = 32 << 20;

/// What a queue record holds before the OTLP request: a format version and
/// the span count, so that a replay can size the queue without scanning.
const RECORD_HEADER: usize = 5;
const RECORD_VERSION: u8 = 1;

/// At most this many appends share one write.
const MAX_GROUP: usize = 512;

struct Entry {
    position: Position,
    weight: usize,
    spans: u64,
    /// Also in memory (a recent batch), else read back from disk.
    batch: Option<Arc<SpanBatch>>,
}

#[derive(Default)]
struct State {
    /// Stored and not yet taken by a consumer, in sequence order.
    entries: VecDeque<Entry>,
    /// Weight of `entries` plus appends on their way to the disk.
    used: usize,
    /// Framed bytes of appends on their way to the disk.
    reserved_bytes: u64,
    /// Encoded bytes of the batches `entries` hold in memory.
    hot_bytes: usize,
    closed: bool,
}

enum Request {
    Append {
        batch: Arc<SpanBatch>,
        weight: usize,
        framed: u64,
        reply: oneshot::Sender<Result<usize, String>>,
    },
    Ack(u64),
    Stop,
}

struct Inner {
    exporter: String,
    log: Arc<Log>,
    storage: FileStorage,
    state: Mutex<State>,
    /// Consumers waiting for an entry.
    available: Notify,
    /// Producers waiting for room (`block_on_overflow`).
    space: Notify,
    capacity: usize,
    sizer: Sizer,
    blocking: bool,
    corrupt_spans: Counter,
    size_gauge: Gauge,
    written: Counter,
    syncs: Counter,
}

impl Inner {
    /// Brings the storage metrics up to the log's counters.
    fn report(&self) {
        let stats = self.log.stats();
        self.size_gauge.set(self.log.size_on_disk() as f64);
        self.written.absolute(stats.appended_bytes);
        self.syncs.absolute(stats.syncs);
    }
}

/// A queue whose entries live in a storage extension's directory.
pub(crate) struct PersistentQueue {
    inner: Arc<Inner>,
    requests: mpsc::Sender<Request>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A batch taken from the queue, to be acknowledged with
/// [`PersistentQueue::ack`] once sent or dropped for good.
pub(crate) struct Taken {
    pub(crate) batch: Arc<SpanBatch>,
    pub(crate) seq: u64,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn weigh(sizer: Sizer, spans: u64, encoded: usize) -> usize {
    match sizer {
        Sizer::Requests => 1,
        Sizer::Items => spans as usize,
        Sizer::Bytes => encoded,
    }
}

impl PersistentQueue {
    /// Opens the exporter's log in `storage` and queues what it still
    /// holds. `capacity` is `queue_size` in the sizer's unit; entries
    /// replayed count against it but are never refused.
    pub(crate) fn open(
        exporter: &str,
        storage: &FileStorage,
        capacity: usize,
        sizer: Sizer,
        blocking: bool,
    ) -> Result<PersistentQueue, String> {
        let mut entries = VecDeque::new();
        let mut used = 0usize;
        let mut unreadable = Vec::new();
        let (log, report) = storage
            .open_log(
                "exporter",
                exporter,
                "traces",
                |position, payload| match parse_header(payload) {
                    Some(spans) => {
                        let weight = weigh(sizer, spans, payload.len() - RECORD_HEADER);
                        used += weight;
                        entries.push_back(Entry {
                            position,
                            weight,
                            spans,
                            batch: None,
                        });
                    }
                    None => unreadable.push(position.seq),
                },
            )
            .map_err(|e| format!("sending_queue.storage {}: {e}", storage.id()))?;
        let client = log
            .dir()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let labels = [
            ("storage", storage.id().to_string()),
            ("client", client.clone()),
        ];
        let lost_records = report.damaged_records() + unreadable.len() as u64;
        metrics::counter!(
            names::STORAGE_LOST_RECORDS,
            &[
                ("storage", storage.id().to_string()),
                ("client", client.clone()),
                ("reason", "corrupt".to_string()),
            ]
        )
        .increment(lost_records);
        for damage in &report.damage {
            tracing::error!(
                exporter, file = %damage.file.display(), offset = damage.offset,
                records = damage.records, bytes = damage.bytes, what = damage.what,
                "Damaged queue records skipped; their spans are lost."
            );
        }
        for seq in &unreadable {
            log.ack(*seq..*seq + 1);
        }
        if report.records > 0 {
            let spans: u64 = entries.iter().map(|e| e.spans).sum();
            tracing::info!(
                exporter, batches = entries.len(), spans,
                bytes = report.payload_bytes, took = ?report.elapsed,
                "Resuming the persistent queue where it stopped."
            );
        }
        let inner = Arc::new(Inner {
            exporter: exporter.to_string(),
            log,
            storage: storage.clone(),
            state: Mutex::new(State {
                entries,
                used,
                ..State::default()
            }),
            available: Notify::new(),
            space: Notify::new(),
            capacity,
            sizer,
            blocking,
            corrupt_spans: metrics::counter!(
                names::DROPPED_SPANS,
                "component" => exporter.to_string(),
                "reason" => "corrupt"
            ),
            size_gauge: metrics::gauge!(names::STORAGE_BYTES, &labels),
            written: metrics::counter!(names::STORAGE_WRITTEN_BYTES, &labels),
            syncs: metrics::counter!(names::STORAGE_SYNCS, &labels),
        });
        inner.report();
        let (requests, receiver) = mpsc::channel();
        let writer = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name(format!("queue {exporter}"))
                .spawn(move || write_loop(&inner, &receiver))
                .map_err(|e| format!("cannot start the queue's writer thread: {e}"))?
        };
        Ok(PersistentQueue {
            inner,
            requests,
            writer: Mutex::new(Some(writer)),
        })
    }

    pub(crate) fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Batches stored and not yet taken.
    pub(crate) fn len(&self) -> usize {
        lock(&self.inner.state).entries.len()
    }

    /// The queue's size in the sizer's unit (replayed batches included).
    pub(crate) fn size(&self) -> usize {
        lock(&self.inner.state).used
    }

    /// Stores `batch`, returning the queue's size in the sizer's unit once
    /// it is written (and synced, if the storage's policy says so). A full
    /// queue refuses at once, or with `block_on_overflow` waits for room.
    pub(crate) async fn push(&self, batch: Arc<SpanBatch>) -> Result<usize, PushError> {
        let inner = &self.inner;
        let weight = weigh(inner.sizer, batch.len() as u64, batch.encoded_len());
        let framed = (8 + RECORD_HEADER + batch.encoded_len()) as u64;
        loop {
            let space = inner.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let mut state = lock(&inner.state);
                if state.closed {
                    return Err(PushError::Closed);
                }
                let fits_queue = state.used + weight <= inner.capacity;
                let fits_disk = inner.storage.max_bytes().is_none_or(|max| {
                    inner.storage.size_on_disk() + state.reserved_bytes + framed <= max
                });
                if fits_queue && fits_disk {
                    state.used += weight;
                    state.reserved_bytes += framed;
                    break;
                }
                let could_ever_fit = weight <= inner.capacity;
                if !inner.blocking || !could_ever_fit {
                    return Err(PushError::Full);
                }
            }
            space.await;
        }
        let (reply, answer) = oneshot::channel();
        let sent = self.requests.send(Request::Append {
            batch,
            weight,
            framed,
            reply,
        });
        if sent.is_err() {
            release(inner, weight, framed);
            return Err(PushError::Closed);
        }
        match answer.await {
            Ok(Ok(used)) => Ok(used),
            Ok(Err(message)) => {
                tracing::error!(
                    exporter = %inner.exporter, error = %message,
                    "Cannot store the batch in the persistent queue; refusing it."
                );
                Err(PushError::Full)
            }
            Err(_) => Err(PushError::Closed),
        }
    }

    /// Takes the oldest batch, with the queue's size left behind, waiting
    /// while there is none; `None` once closed and empty. A batch that can
    /// no longer be read is counted as dropped (`reason="corrupt"`),
    /// acknowledged and skipped.
    pub(crate) async fn pop(&self) -> Option<(Taken, usize)> {
        let inner = &self.inner;
        loop {
            let notified = inner.available.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next = {
                let mut state = lock(&inner.state);
                match state.entries.pop_front() {
                    Some(entry) => {
                        state.used -= entry.weight;
                        if let Some(batch) = &entry.batch {
                            state.hot_bytes -= batch.encoded_len();
                        }
                        let left = state.used;
                        let more = !state.entries.is_empty();
                        drop(state);
                        if more {
                            inner.available.notify_one();
                        }
                        if inner.blocking {
                            inner.space.notify_waiters();
                        }
                        Some((entry, left))
                    }
                    None if state.closed => return None,
                    None => None,
                }
            };
            let Some((entry, left)) = next else {
                notified.await;
                continue;
            };
            let seq = entry.position.seq;
            let batch = match entry.batch {
                Some(batch) => batch,
                None => match self.read(entry.position).await {
                    Ok(batch) => Arc::new(batch),
                    Err(what) => {
                        inner.corrupt_spans.increment(entry.spans);
                        tracing::error!(
                            exporter = %inner.exporter, spans = entry.spans, error = %what,
                            "A queued batch cannot be read back; dropping it."
                        );
                        self.ack(seq);
                        continue;
                    }
                },
            };
            return Some((Taken { batch, seq }, left));
        }
    }

    async fn read(&self, position: Position) -> Result<SpanBatch, String> {
        let log = self.inner.log.clone();
        let payload = tokio::task::spawn_blocking(move || log.read(position))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if parse_header(&payload).is_none() {
            return Err("unknown record format".to_string());
        }
        let bytes = Bytes::from(payload).slice(RECORD_HEADER..);
        SpanBatch::scan(bytes).map_err(|e| format!("stored request does not scan: {e}"))
    }

    /// The batch `seq` was sent, or dropped for good: it leaves the disk.
    pub(crate) fn ack(&self, seq: u64) {
        let _ = self.requests.send(Request::Ack(seq));
    }

    /// Refuses further pushes; consumers drain what is left, then get
    /// `None`. What they do not take stays on disk for the next start.
    pub(crate) fn close(&self) {
        lock(&self.inner.state).closed = true;
        self.inner.available.notify_waiters();
        self.inner.space.notify_waiters();
    }

    /// After the consumers stopped: the batches and spans still stored
    /// (they stay for the next start), after writing out the last
    /// acknowledgements and syncing.
    pub(crate) async fn finish(&self) -> (usize, u64) {
        let _ = self.requests.send(Request::Stop);
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
        let state = lock(&self.inner.state);
        let spans = state.entries.iter().map(|e| e.spans).sum();
        (state.entries.len(), spans)
    }
}

fn release(inner: &Inner, weight: usize, framed: u64) {
    let mut state = lock(&inner.state);
    state.used -= weight;
    state.reserved_bytes -= framed;
    drop(state);
    inner.space.notify_waiters();
}

/// The span count of a queue record, if its header is one this version
/// writes.
fn parse_header(payload: &[u8]) -> Option<u64> {
    if payload.len() < RECORD_HEADER || payload[0] != RECORD_VERSION {
        return None;
    }
    Some(u64::from(u32::from_le_bytes(
        payload[1..RECORD_HEADER].try_into().ok()?,
    )))
}

/// The writer thread: appends and acknowledgements in groups, and the
/// interval syncs, until told to stop.
fn write_loop(inner: &Inner, requests: &mpsc::Receiver<Request>) {
    let tick = match inner.log.options().fsync {
        Fsync::Interval(every) => Some(every),
        _ => None,
    };
    let mut appends = Vec::new();
    let mut acks = Vec::new();
    loop {
        let first = match tick {
            Some(every) => match requests.recv_timeout(every.max(Duration::from_millis(1))) {
                Ok(request) => request,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = inner.log.sync_if_due();
                    inner.report();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
            None => match requests.recv() {
                Ok(request) => request,
                Err(_) => break,
            },
        };
        let mut stop = false;
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Append {
                    batch,
                    weight,
                    framed,
                    reply,
                } => appends.push((batch, weight, framed, reply)),
                Request::Ack(seq) => acks.push(seq),
                Request::Stop => stop = true,
            }
            if appends.len() < MAX_GROUP && !stop {
                next = requests.try_recv().ok();
            }
        }
        if !acks.is_empty() {
            write_acks(inner, &mut acks);
        }
        if !appends.is_empty() {
            write_appends(inner, &mut appends);
        }
        inner.report();
        if stop {
            break;
        }
    }
    let _ = inner.log.sync();
    inner.report();
}

fn write_acks(inner: &Inner, acks: &mut Vec<u64>) {
    acks.sort_unstable();
    let mut ranges: Vec<std::ops::Range<u64>> = Vec::new();
    for &seq in acks.iter() {
        match ranges.last_mut() {
            Some(last) if last.end == seq => last.end += 1,
            _ => ranges.push(seq..seq + 1),
        }
    }
    acks.clear();
    if inner.log.ack_many(&ranges) > 0 && inner.storage.max_bytes().is_some() {
        inner.space.notify_waiters();
    }
}

type Append = (
    Arc<SpanBatch>,
    usize,
    u64,
    oneshot::Sender<Result<usize, String>>,
);

fn write_appends(inner: &Inner, appends: &mut Vec<Append>) {
    let headers: Vec<[u8; RECORD_HEADER]> = appends
        .iter()
        .map(|(batch, ..)| {
            let mut header = [0u8; RECORD_HEADER];
            header[0] = RECORD_VERSION;
            header[1..].copy_from_slice(&(batch.len() as u32).to_le_bytes());
            header
        })
        .collect();
    let parts: Vec<[&[u8]; 2]> = appends
        .iter()
        .zip(&headers)
        .map(|((batch, ..), header)| [&header[..], &batch.bytes()[..]])
        .collect();
    let records: Vec<&[&[u8]]> = parts.iter().map(|p| &p[..]).collect();
    let result = inner.log.append_batch(&records);
    drop(records);
    drop(parts);
    match result {
        Ok(positions) => {
            let mut state = lock(&inner.state);
            let mut replies = Vec::with_capacity(appends.len());
            for ((batch, weight, framed, reply), position) in appends.drain(..).zip(positions) {
                state.reserved_bytes -= framed;
                let hot = state.hot_bytes + batch.encoded_len() <= HOT_BYTES;
                if hot {
                    state.hot_bytes += batch.encoded_len();
                }
                state.entries.push_back(Entry {
                    position,
                    weight,
                    spans: batch.len() as u64,
                    batch: hot.then_some(batch),
                });
                replies.push(reply);
            }
            let used = state.used;
            drop(state);
            inner.available.notify_one();
            for reply in replies {
                let _ = reply.send(Ok(used));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for (_, weight, framed, reply) in appends.drain(..) {
                release(inner, weight, framed);
                let _ = reply.send(Err(message.clone()));
            }
        }
    }
}
