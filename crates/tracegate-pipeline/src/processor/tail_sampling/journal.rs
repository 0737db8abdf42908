//! The tail sampler's journal (`tail_storage`): the spans of undecided
//! traces and the decisions made, kept in a [`tracegate_storage::Log`] so
//! that a restart — SIGKILL included — resumes the pending traces with
//! their `decision_wait` clocks still running, and late spans of traces
//! decided before it still follow their decisions. docs/architecture.md
//! ("The tail-sampling journal") has the design and its costs.
//!
//! Three kinds of record, told apart by their first byte:
//!
//! - spans (`0x01`): the arrival time (ns since the Unix epoch, u64 LE),
//!   then the batch as the processor received it (an encoded OTLP
//!   request). One per `consume`, written before the client is answered.
//! - handed-over spans (`0x03`): the arrival time, a count (u32 LE), then
//!   per trace its id and when its first span arrived at its previous
//!   owner (ns, u64 LE), then the batch. One per hand-over taken in
//!   (written before the other gateway is answered) and per failed
//!   hand-over taken back, so that the traces' clocks survive a restart.
//! - decisions (`0x02`): a count (u32 LE), then per trace its id (16
//!   bytes) and flags. Flags bit 1 clear: a decision (bit 0: sampled),
//!   then the policy credited (u16 LE, `0xffff` for none), then, with bit
//!   2 set, the tail threshold an adaptive policy kept the trace with
//!   (u64 LE), so that late spans after a restart get it. Bit 1 set: the
//!   trace is gone from this gateway without a decision kept here (handed
//!   over, diverted to its owner, or forgotten to make room), then the
//!   spans log's next sequence number when that was journaled (u64 LE):
//!   its spans in records below it are not restored, and no decision is
//!   remembered for it; spans in later records (the trace came back) are.
//!   Written by a shard after each round of work, once its kept spans
//!   have been passed on, and as a snapshot of what the shard remembers.
//!
//! Spans and decisions are two logs (two subdirectories of the storage): a
//! decision record is small and lives until a snapshot replaces it, and in
//! the spans log it would keep whole segments of freed spans on disk.
//!
//! A spans record is acknowledged once no pending trace holds spans from it:
//! the shards hold a [`RecordPin`] per record in each pending trace (see
//! `tracegate_sampling::tail::Pin`) and hand it back when the trace is
//! decided; the last one dropped queues the acknowledgement, which a worker
//! writes after it has passed the trace on and journaled the decision. A
//! record can hold spans of decided traces beside pending ones, so on
//! replay the spans of every trace with a journaled decision are skipped.
//! Decision records are acknowledged when a snapshot of the shard's
//! remembered decisions (and of the decided traces whose spans may still be
//! in unacknowledged records) replaces them, which happens once the
//! decisions written since the last snapshot outweigh it.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use metrics::{Counter, Gauge};
use tracegate_model::trace_state::Threshold;
use tracegate_model::SpanBatch;
use tracegate_sampling::tail::{
    shard_of, Decider, KnownDecision, Pin, Released, TraceId, TraceShard,
};
use tracegate_storage::{AppendError, Fsync, Log, OpenReport, Position};

use super::metrics_names as m;
use crate::telemetry::names;

const SPANS: u8 = 0x01;
const DECISIONS: u8 = 0x02;
const HANDED_OVER: u8 = 0x03;
const SPANS_HEADER: usize = 9;
/// A handed-over spans record's header before its per-trace clocks.
const HANDED_OVER_HEADER: usize = 13;
const CLOCK_LEN: usize = 24;
const DECISIONS_HEADER: usize = 5;
const DECISION_LEN: usize = 19;
const GONE_LEN: usize = 25;
const SAMPLED: u8 = 1;
const GONE: u8 = 2;
const TAIL: u8 = 4;
const NO_POLICY: u16 = u16::MAX;

/// A shard writes a snapshot once the decisions it wrote since the last one
/// take at least this much (or a 32nd of a smaller storage bound), and at
/// least twice as much as that snapshot did.
const SNAPSHOT_MIN_BYTES: u64 = 256 << 10;

/// Least time between two sheddings of one shard while the storage is
/// above its high-water mark.
const SHED_INTERVAL: Duration = Duration::from_millis(250);

/// The journal's two logs, as [`JournalPlace::open`] names them.
pub const SPANS_LOG: &str = "";
pub const DECISIONS_LOG: &str = "decisions";

/// Where a journal lives: the storage extension it belongs to, how to open
/// its logs, and what bounds them.
pub struct JournalPlace {
    /// The storage extension's id, for logs and metrics.
    pub storage: String,
    /// Opens the log named [`SPANS_LOG`] or [`DECISIONS_LOG`], replaying
    /// its records through the callback.
    #[allow(clippy::type_complexity)]
    pub open: Box<
        dyn FnMut(&str, &mut dyn FnMut(Position, &[u8])) -> Result<(Arc<Log>, OpenReport), String>
            + Send,
    >,
    /// Bytes on disk the storage may take; `None`: unbounded.
    pub bound: Option<u64>,
    /// The bytes counted against `bound`, if not the journal's own log
    /// (a `file_storage` directory shared with other components).
    pub disk_use: Option<Arc<dyn Fn() -> u64 + Send + Sync>>,
}

impl std::fmt::Debug for JournalPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalPlace")
            .field("storage", &self.storage)
            .field("bound", &self.bound)
            .finish()
    }
}

/// Why spans could not be journaled (the client is asked to retry).
#[derive(Debug, thiserror::Error)]
pub(crate) enum JournalError {
    #[error("tail storage {storage} is full ({size} of {bound} bytes): pending traces are being decided early to free it")]
    Full {
        storage: String,
        size: u64,
        bound: u64,
    },
    #[error("tail storage {storage} cannot be written: {error}")]
    Write { storage: String, error: String },
}

struct JournalMeters {
    written_bytes: Counter,
    syncs: Counter,
    disk_bytes: Gauge,
    refused_spans: Counter,
    unjournaled_decisions: Counter,
    restored_traces: Counter,
    restored_spans: Counter,
    lost_records: Counter,
}

/// An open journal, shared by the processor's `consume` and its workers.
pub(crate) struct Journal {
    /// Spans records.
    log: Arc<Log>,
    /// Decision records and snapshots.
    decisions: Arc<Log>,
    storage: String,
    bound: u64,
    /// Spans records are refused once they would take the disk use past
    /// this: the rest of `bound` is kept for decisions.
    span_limit: u64,
    /// Past this, workers decide their oldest traces early.
    high_water: u64,
    /// See [`SNAPSHOT_MIN_BYTES`].
    snapshot_min: u64,
    disk_use: Option<Arc<dyn Fn() -> u64 + Send + Sync>>,
    /// Spans records whose last pin was dropped, waiting to be acknowledged.
    acks: Mutex<Vec<u64>>,
    /// Spans records not yet acknowledged.
    live: Mutex<BTreeSet<u64>>,
    meters: JournalMeters,
    /// Both logs' counters as last reported: (bytes appended, syncs).
    reported: Mutex<(u64, u64)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Held by every pending trace with spans from one spans record (and by the
/// work carrying the record to the shards); when the last holder lets go,
/// the record is queued for acknowledgement — unless it was disarmed
/// because a trace holding it stays pending across a shutdown.
pub(crate) struct RecordPin {
    seq: u64,
    armed: AtomicBool,
    journal: Arc<Journal>,
}

impl RecordPin {
    fn new(seq: u64, journal: Arc<Journal>) -> RecordPin {
        RecordPin {
            seq,
            armed: AtomicBool::new(true),
            journal,
        }
    }

    /// Keeps the record when the last holder lets go.
    pub(crate) fn disarm(pin: &Pin) {
        if let Some(pin) = pin.downcast_ref::<RecordPin>() {
            pin.armed.store(false, Ordering::Relaxed);
        }
    }
}

impl Drop for RecordPin {
    fn drop(&mut self) {
        if self.armed.load(Ordering::Relaxed) {
            lock(&self.journal.acks).push(self.seq);
        }
    }
}

/// Ranges of consecutive numbers in `seqs`, which it sorts.
fn ranges(seqs: &mut [u64]) -> Vec<Range<u64>> {
    seqs.sort_unstable();
    let mut out: Vec<Range<u64>> = Vec::new();
    for &s in seqs.iter() {
        match out.last_mut() {
            Some(r) if r.end == s => r.end += 1,
            Some(r) if r.end > s => {}
            _ => out.push(s..s + 1),
        }
    }
    out
}

/// One entry of a decisions record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A decision, remembered for late spans.
    Decided(KnownDecision),
    /// The trace left this gateway without a decision kept here; its spans
    /// in spans records below `until` are not ours any more.
    Gone { trace_id: TraceId, until: u64 },
}

impl Entry {
    fn trace_id(&self) -> TraceId {
        match self {
            Entry::Decided(d) => d.trace_id,
            Entry::Gone { trace_id, .. } => *trace_id,
        }
    }

    /// Whether a span of this entry's trace in spans record `seq` is
    /// settled (not to be restored).
    fn settles(&self, seq: u64) -> bool {
        match self {
            Entry::Decided(_) => true,
            Entry::Gone { until, .. } => seq < *until,
        }
    }
}

fn encode_decisions(buf: &mut Vec<u8>, entries: &[Entry]) {
    buf.clear();
    buf.push(DECISIONS);
    buf.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for entry in entries {
        match entry {
            Entry::Decided(d) => {
                buf.extend_from_slice(&d.trace_id);
                let tail = if d.tail.is_some() { TAIL } else { 0 };
                buf.push(if d.sampled { SAMPLED } else { 0 } | tail);
                let policy = d
                    .policy
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|&p| p != NO_POLICY)
                    .unwrap_or(NO_POLICY);
                buf.extend_from_slice(&policy.to_le_bytes());
                if let Some(tail) = d.tail {
                    buf.extend_from_slice(&tail.unsigned().to_le_bytes());
                }
            }
            Entry::Gone { trace_id, until } => {
                buf.extend_from_slice(trace_id);
                buf.push(GONE);
                buf.extend_from_slice(&until.to_le_bytes());
            }
        }
    }
}

fn decode_decisions(payload: &[u8]) -> Option<Vec<Entry>> {
    let count = u32::from_le_bytes(payload.get(1..DECISIONS_HEADER)?.try_into().ok()?) as usize;
    let mut body = payload.get(DECISIONS_HEADER..)?;
    // Each entry takes at least DECISION_LEN bytes.
    let mut out = Vec::with_capacity(count.min(body.len() / DECISION_LEN));
    for _ in 0..count {
        let trace_id: TraceId = body.get(..16)?.try_into().ok()?;
        let flags = *body.get(16)?;
        if flags & GONE != 0 {
            let until = u64::from_le_bytes(body.get(17..GONE_LEN)?.try_into().ok()?);
            out.push(Entry::Gone { trace_id, until });
            body = &body[GONE_LEN..];
        } else {
            let policy = u16::from_le_bytes(body.get(17..DECISION_LEN)?.try_into().ok()?);
            let mut len = DECISION_LEN;
            let tail = if flags & TAIL != 0 {
                len += 8;
                let t = u64::from_le_bytes(body.get(DECISION_LEN..len)?.try_into().ok()?);
                // Out of range: damage the checksum did not catch.
                Some(Threshold::from_unsigned(t)?)
            } else {
                None
            };
            out.push(Entry::Decided(KnownDecision {
                trace_id,
                sampled: flags & SAMPLED != 0,
                policy: (policy != NO_POLICY).then_some(usize::from(policy)),
                tail,
            }));
            body = &body[len..];
        }
    }
    body.is_empty().then_some(out)
}

/// A handed-over spans record: the arrival time, each trace's first-seen
/// time, and where the batch starts.
struct HandedOver {
    arrival: u64,
    first_seen: HashMap<TraceId, Duration>,
    batch_at: usize,
}

fn handed_over_header(arrival: Duration, first_seen: &[(TraceId, Duration)]) -> Vec<u8> {
    let mut header = Vec::with_capacity(HANDED_OVER_HEADER + first_seen.len() * CLOCK_LEN);
    header.push(HANDED_OVER);
    header.extend_from_slice(&(arrival.as_nanos() as u64).to_le_bytes());
    header.extend_from_slice(&(first_seen.len() as u32).to_le_bytes());
    for (id, at) in first_seen {
        header.extend_from_slice(id);
        header.extend_from_slice(&(at.as_nanos() as u64).to_le_bytes());
    }
    header
}

fn decode_handed_over(payload: &[u8]) -> Option<HandedOver> {
    let arrival = u64::from_le_bytes(payload.get(1..SPANS_HEADER)?.try_into().ok()?);
    let count = u32::from_le_bytes(
        payload
            .get(SPANS_HEADER..HANDED_OVER_HEADER)?
            .try_into()
            .ok()?,
    );
    let batch_at = (count as usize)
        .checked_mul(CLOCK_LEN)?
        .checked_add(HANDED_OVER_HEADER)?;
    let clocks = payload.get(HANDED_OVER_HEADER..batch_at)?;
    let first_seen = clocks
        .chunks_exact(CLOCK_LEN)
        .map(|c| {
            let id: TraceId = c[..16].try_into().expect("16 bytes");
            let at = u64::from_le_bytes(c[16..].try_into().expect("8 bytes"));
            (id, Duration::from_nanos(at))
        })
        .collect();
    Some(HandedOver {
        arrival,
        first_seen,
        batch_at,
    })
}

/// Runs `write` against `journal`, on a blocking thread when its fsync
/// policy may make the write wait for the disk.
pub(crate) async fn write_off_thread<T: Send + 'static>(
    journal: &Arc<Journal>,
    write: impl FnOnce(&Arc<Journal>) -> T + Send + 'static,
) -> Result<T, String> {
    if journal.syncs_on_append() {
        let journal = journal.clone();
        tokio::task::spawn_blocking(move || write(&journal))
            .await
            .map_err(|e| e.to_string())
    } else {
        Ok(write(journal))
    }
}

/// What the journal held when it was opened: the spans records to restore
/// and the decisions to remember, read in [`Journal::open`]'s first pass.
pub(crate) struct Replay {
    spans: Vec<Position>,
    /// The latest entry journaled for each trace, with its place in the
    /// replay (records in order, entries of a record in order).
    decisions: HashMap<TraceId, (u64, Entry)>,
    /// Decision records read, acknowledged once restored decisions are
    /// journaled again (with those that could not be understood).
    decision_seqs: Vec<u64>,
    /// Spans records that could not be understood (acknowledged, counted).
    unreadable: Vec<u64>,
    unreadable_decisions: u64,
    open: OpenReport,
    open_decisions: OpenReport,
}

/// What a restore found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RestoreReport {
    /// Records kept from the last run: spans and decisions.
    pub records: u64,
    pub bytes: u64,
    /// Traces pending again, and their spans.
    pub traces: u64,
    pub spans: u64,
    /// Spans skipped because their trace had been decided.
    pub decided_spans: u64,
    /// Spans skipped because their trace had left (handed over, diverted
    /// to its owner, or forgotten to make room).
    pub gone_spans: u64,
    /// Decisions remembered again.
    pub decisions: u64,
    /// Records lost to damage (torn or corrupt), found by the log or by
    /// reading them back.
    pub lost_records: u64,
    /// Spans a full table could not take back (with `block_on_overflow`
    /// and a smaller `num_traces` than before).
    pub overflow_spans: u64,
    pub elapsed: Duration,
}

impl Journal {
    /// Opens the journal at `place` and reads what it holds (the first
    /// pass); [`Journal::restore`] then gives it back to the shards.
    pub(crate) fn open(
        place: JournalPlace,
        processor: &str,
    ) -> Result<(Arc<Journal>, Replay), String> {
        let mut place = place;
        let mut decisions: HashMap<TraceId, (u64, Entry)> = HashMap::new();
        let mut decision_seqs = Vec::new();
        let mut unreadable_decisions = 0;
        let mut order = 0u64;
        let (decisions_log, open_decisions) =
            (place.open)(DECISIONS_LOG, &mut |position: Position, payload: &[u8]| {
                decision_seqs.push(position.seq);
                match decode_decisions(payload).filter(|_| payload[0] == DECISIONS) {
                    Some(list) => {
                        for entry in list {
                            // Replay order: by record, then within it.
                            order += 1;
                            decisions.insert(entry.trace_id(), (order, entry));
                        }
                    }
                    None => unreadable_decisions += 1,
                }
            })?;
        let mut spans = Vec::new();
        let mut unreadable = Vec::new();
        let (log, open) = (place.open)(SPANS_LOG, &mut |position: Position, payload: &[u8]| {
            let readable = match payload.first() {
                Some(&SPANS) => payload.len() >= SPANS_HEADER,
                Some(&HANDED_OVER) => decode_handed_over(payload).is_some(),
                _ => false,
            };
            if readable {
                spans.push(position);
            } else {
                unreadable.push(position.seq);
            }
        })?;
        let bound = place.bound.unwrap_or(u64::MAX);
        let labels = [
            ("processor", processor.to_string()),
            ("storage", place.storage.clone()),
        ];
        let meters = JournalMeters {
            written_bytes: metrics::counter!(m::JOURNAL_WRITTEN_BYTES, &labels),
            syncs: metrics::counter!(m::JOURNAL_SYNCS, &labels),
            disk_bytes: metrics::gauge!(m::JOURNAL_DISK_BYTES, &labels),
            refused_spans: metrics::counter!(m::JOURNAL_REFUSED_SPANS, &labels),
            unjournaled_decisions: metrics::counter!(m::JOURNAL_UNJOURNALED_DECISIONS, &labels),
            restored_traces: metrics::counter!(m::JOURNAL_RESTORED_TRACES, &labels),
            restored_spans: metrics::counter!(m::JOURNAL_RESTORED_SPANS, &labels),
            lost_records: metrics::counter!(names::STORAGE_LOST_RECORDS,
                "storage" => place.storage.clone(), "client" => processor.to_string(), "reason" => "corrupt"),
        };
        let journal = Arc::new(Journal {
            log,
            decisions: decisions_log,
            storage: place.storage,
            bound,
            span_limit: bound - bound / 16,
            high_water: bound - bound / 8,
            snapshot_min: (bound / 32).clamp(4 << 10, SNAPSHOT_MIN_BYTES),
            disk_use: place.disk_use,
            acks: Mutex::new(Vec::new()),
            live: Mutex::new(spans.iter().map(|p| p.seq).collect()),
            meters,
            reported: Mutex::new((0, 0)),
        });
        Ok((
            journal,
            Replay {
                spans,
                decisions,
                decision_seqs,
                unreadable,
                unreadable_decisions,
                open,
                open_decisions,
            },
        ))
    }

    pub(crate) fn storage(&self) -> &str {
        &self.storage
    }

    /// The bytes counted against the bound.
    pub(crate) fn disk_use(&self) -> u64 {
        match &self.disk_use {
            Some(f) => f(),
            None => self.log.size_on_disk(),
        }
    }

    /// Bytes appended to the decisions log so far.
    #[cfg(test)]
    pub(crate) fn decisions_appended(&self) -> u64 {
        self.decisions.stats().appended_bytes
    }

    /// Spans records appended so far.
    #[cfg(test)]
    pub(crate) fn spans_records_appended(&self) -> u64 {
        self.log.stats().appended_records
    }

    /// Whether workers should decide their oldest traces early.
    pub(crate) fn above_high_water(&self) -> bool {
        self.bound != u64::MAX && self.disk_use() > self.high_water
    }

    /// Whether appends may block on a sync (and so belong on a blocking
    /// thread).
    pub(crate) fn syncs_on_append(&self) -> bool {
        self.log.options().fsync != Fsync::Never
    }

    /// Writes `batch` as a spans record arriving at `arrival` (wall clock);
    /// the pin goes with the batch to the shards.
    pub(crate) fn append_spans(
        self: &Arc<Self>,
        batch: &SpanBatch,
        arrival: Duration,
    ) -> Result<Arc<RecordPin>, JournalError> {
        let mut header = [0u8; SPANS_HEADER];
        header[0] = SPANS;
        header[1..].copy_from_slice(&(arrival.as_nanos() as u64).to_le_bytes());
        self.append_record(&header, batch)
    }

    /// Writes `batch`, handed over from another gateway (or taken back from
    /// a failed hand-over), as a record arriving at `arrival` whose traces
    /// were first seen at `first_seen` (by trace id).
    pub(crate) fn append_handed_over(
        self: &Arc<Self>,
        batch: &SpanBatch,
        arrival: Duration,
        first_seen: &[(TraceId, Duration)],
    ) -> Result<Arc<RecordPin>, JournalError> {
        self.append_record(&handed_over_header(arrival, first_seen), batch)
    }

    fn append_record(
        self: &Arc<Self>,
        header: &[u8],
        batch: &SpanBatch,
    ) -> Result<Arc<RecordPin>, JournalError> {
        let framed = (header.len() + batch.bytes().len() + 8) as u64;
        let size = self.disk_use();
        if size + framed > self.span_limit {
            self.meters.refused_spans.increment(batch.len() as u64);
            return Err(JournalError::Full {
                storage: self.storage.clone(),
                size,
                bound: self.bound,
            });
        }
        let mut live = lock(&self.live);
        let position = self
            .log
            .append_batch(&[&[header, batch.bytes()]])
            .map_err(|e| {
                self.meters.refused_spans.increment(batch.len() as u64);
                match e {
                    AppendError::Full { size, .. } => JournalError::Full {
                        storage: self.storage.clone(),
                        size,
                        bound: self.bound,
                    },
                    e => JournalError::Write {
                        storage: self.storage.clone(),
                        error: e.to_string(),
                    },
                }
            })?;
        let seq = position[0].seq;
        live.insert(seq);
        drop(live);
        Ok(Arc::new(RecordPin::new(seq, self.clone())))
    }

    /// Writes a decisions record; `None` when the storage is full (or
    /// failing): those decisions are then not remembered across a restart.
    fn append_decisions(&self, payload: &[u8], count: usize) -> Option<u64> {
        if self.disk_use() + payload.len() as u64 + 8 > self.bound {
            self.meters.unjournaled_decisions.increment(count as u64);
            return None;
        }
        match self.decisions.append(payload) {
            Ok(position) => Some(position.seq),
            Err(e) => {
                self.meters.unjournaled_decisions.increment(count as u64);
                tracing::warn!(storage = %self.storage, error = %e, decisions = count,
                    "tail sampling decisions not journaled");
                None
            }
        }
    }

    /// Acknowledges the spans records whose last pin was dropped.
    pub(crate) fn flush_acks(&self) {
        let mut seqs = std::mem::take(&mut *lock(&self.acks));
        if seqs.is_empty() {
            return;
        }
        {
            let mut live = lock(&self.live);
            for s in &seqs {
                live.remove(s);
            }
        }
        self.log.ack_many(&ranges(&mut seqs));
        // A sync the policy asks for while the journal is idle.
        let _ = self.log.sync_if_due();
    }

    /// Every spans record below this is acknowledged.
    fn spans_floor(&self) -> u64 {
        let first = lock(&self.live).first().copied();
        first.unwrap_or_else(|| self.log.next_seq())
    }

    /// Turns the log's counters into metrics.
    pub(crate) fn report(&self) {
        let Ok(mut reported) = self.reported.try_lock() else {
            return;
        };
        let (spans, decisions) = (self.log.stats(), self.decisions.stats());
        let bytes = spans.appended_bytes + decisions.appended_bytes;
        let syncs = spans.syncs + decisions.syncs;
        if bytes > reported.0 {
            self.meters.written_bytes.increment(bytes - reported.0);
        }
        if syncs > reported.1 {
            self.meters.syncs.increment(syncs - reported.1);
        }
        *reported = (bytes, syncs);
        self.meters.disk_bytes.set(self.disk_use() as f64);
    }

    /// Forces everything written to the disk (on shutdown).
    pub(crate) fn sync(&self) {
        if let Err(e) = self.log.sync().and_then(|()| self.decisions.sync()) {
            tracing::warn!(storage = %self.storage, error = %e, "tail sampling journal sync failed");
        }
    }

    /// The second pass: gives the journaled traces back to `shards` (routed
    /// by trace id, so the shard count may have changed), each insert at
    /// its journaled arrival time so that its `decision_wait` counts the
    /// time the process was down, and remembers the journaled decisions.
    /// Nothing is decided for being due here: the workers do that at their
    /// first poll, on whole traces. What bounds decide early goes to
    /// `outs` (one per shard) for the workers to pass on.
    pub(crate) fn restore(
        self: &Arc<Self>,
        replay: Replay,
        shards: &mut [TraceShard],
        decider: &mut impl Decider,
        now: Duration,
        outs: &mut [Released],
    ) -> (Vec<ShardJournal>, RestoreReport) {
        let started = Instant::now();
        let mut report = RestoreReport {
            records: replay.open.records + replay.open_decisions.records,
            bytes: replay.open.payload_bytes + replay.open_decisions.payload_bytes,
            lost_records: replay.open.damaged_records()
                + replay.open_decisions.damaged_records()
                + replay.unreadable.len() as u64
                + replay.unreadable_decisions,
            ..RestoreReport::default()
        };
        let damage = replay
            .open
            .damage
            .iter()
            .chain(&replay.open_decisions.damage);
        for damage in damage {
            tracing::warn!(storage = %self.storage, file = %damage.file.display(), offset = damage.offset,
                records = damage.records, bytes = damage.bytes, what = damage.what,
                "tail sampling journal damaged: records skipped");
        }
        lock(&self.acks).extend(&replay.unreadable);
        let n = shards.len();
        let decided = &replay.decisions;
        let mut routes: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut last = Duration::ZERO;
        for position in &replay.spans {
            let seq = position.seq;
            let payload = match self.log.read(*position) {
                Ok(payload) => payload,
                Err(e) => {
                    tracing::warn!(storage = %self.storage, seq, error = %e,
                        "tail sampling journal record unreadable: skipped");
                    report.lost_records += 1;
                    lock(&self.acks).push(seq);
                    continue;
                }
            };
            // Checked as the log was opened.
            let handed_over = (payload[0] == HANDED_OVER)
                .then(|| decode_handed_over(&payload))
                .flatten();
            let (arrival, batch_at) = match &handed_over {
                Some(h) => (h.arrival, h.batch_at),
                None => (
                    u64::from_le_bytes(payload[1..SPANS_HEADER].try_into().expect("8 bytes")),
                    SPANS_HEADER,
                ),
            };
            let batch = match SpanBatch::scan(Bytes::from(payload).slice(batch_at..)) {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(storage = %self.storage, seq, error = %e,
                        "tail sampling journal record holds no valid spans: skipped");
                    report.lost_records += 1;
                    lock(&self.acks).push(seq);
                    continue;
                }
            };
            // Arrival order, never ahead of the clock.
            let at = Duration::from_nanos(arrival).min(now).max(last);
            last = at;
            for route in &mut routes {
                route.clear();
            }
            for (i, span) in batch.spans().iter().enumerate() {
                match decided.get(&span.trace_id) {
                    Some((_, entry @ Entry::Decided(_))) if entry.settles(seq) => {
                        report.decided_spans += 1
                    }
                    Some((_, entry)) if entry.settles(seq) => report.gone_spans += 1,
                    _ => routes[shard_of(&span.trace_id, n)].push(i as u32),
                }
            }
            // Dropped at the end of the loop: acknowledged then if no
            // pending trace took spans from it.
            let pin: Pin = Arc::new(RecordPin::new(seq, self.clone()));
            for (i, route) in routes.iter().enumerate() {
                if route.is_empty() {
                    continue;
                }
                let shard = &mut shards[i];
                shard.set_pin(Some(pin.clone()));
                let out = &mut outs[i];
                let spans = route.iter().copied();
                let held =
                    restore_spans(shard, &batch, spans, handed_over.as_ref(), at, decider, out);
                if let Some(held) = held {
                    // block_on_overflow with a full table: what is due
                    // makes room, once.
                    shard.poll(at, decider, out);
                    let all = 0..held.len() as u32;
                    let h = handed_over.as_ref();
                    if let Some(still) = restore_spans(shard, &held, all, h, at, decider, out) {
                        report.overflow_spans += still.len() as u64;
                    }
                }
                shard.set_pin(None);
                report.spans += route.len() as u64;
            }
        }
        report.spans -= report.overflow_spans;
        report.traces = shards.iter().map(TraceShard::pending_traces).sum();

        // Decisions: remembered again in the shard that now owns the trace,
        // oldest first so that the caches' recency comes back as it was;
        // those whose spans may still sit in records not acknowledged are
        // kept for the next snapshot too, as are the traces gone while
        // records below their mark are.
        let mut ordered: Vec<&(u64, Entry)> = decided.values().collect();
        ordered.sort_unstable_by_key(|(order, _)| *order);
        let needed_until = self.log.next_seq();
        let mut journals: Vec<ShardJournal> =
            (0..n).map(|_| ShardJournal::new(self.clone())).collect();
        let mut recent: Vec<Vec<(u64, Entry)>> = vec![Vec::new(); n];
        for (_, entry) in ordered {
            let i = shard_of(&entry.trace_id(), n);
            match entry {
                Entry::Decided(d) => {
                    shards[i].remember_decision(*d, now);
                    report.decisions += 1;
                    recent[i].push((needed_until, *entry));
                }
                Entry::Gone { until, .. } => recent[i].push((*until, *entry)),
            }
        }
        for (journal, mut recent) in journals.iter_mut().zip(recent) {
            // Pruned from the front: in the order of their marks (one
            // entry per trace, so the order among traces does not matter).
            recent.sort_by_key(|(until, _)| *until);
            journal.recent.extend(recent);
        }
        // Each shard journals what it now remembers; then the records of
        // the last run's decisions can go.
        for (journal, shard) in journals.iter_mut().zip(shards.iter()) {
            journal.snapshot(shard);
        }
        let mut old = replay.decision_seqs;
        self.decisions.ack_many(&ranges(&mut old));
        self.flush_acks();
        self.meters.restored_traces.increment(report.traces);
        self.meters.restored_spans.increment(report.spans);
        self.meters.lost_records.increment(report.lost_records);
        self.report();
        report.elapsed = replay.open.elapsed + replay.open_decisions.elapsed + started.elapsed();
        (journals, report)
    }
}

/// Gives journaled spans back to `shard` as they arrived at `at`; the
/// traces of a handed-over record keep their first-seen clocks.
fn restore_spans(
    shard: &mut TraceShard,
    batch: &SpanBatch,
    spans: impl IntoIterator<Item = u32>,
    handed_over: Option<&HandedOver>,
    at: Duration,
    decider: &mut impl Decider,
    out: &mut Released,
) -> Option<SpanBatch> {
    match handed_over {
        None => shard.insert_spans(batch, spans, at, decider, out),
        Some(h) => {
            let first_seen = |id: &TraceId| h.first_seen.get(id).copied();
            shard.import_spans(batch, spans, first_seen, at, decider, out)
        }
    }
}

/// The decisions a round of a shard's work produced and the traces that
/// left it, taken from its [`Released`] before the round's spans are passed
/// on.
pub(crate) struct Round {
    pins: Vec<Pin>,
    entries: Vec<Entry>,
}

/// One shard's side of the journal: its decision records and what the next
/// snapshot must carry.
pub(crate) struct ShardJournal {
    journal: Arc<Journal>,
    /// Decision records this shard wrote that no snapshot replaced yet.
    decision_seqs: Vec<u64>,
    since_snapshot: u64,
    snapshot_bytes: u64,
    /// Decided traces whose spans may still be in spans records not
    /// acknowledged, and traces gone from the shard: (the log's next
    /// sequence number when it was journaled, the entry). Needed while a
    /// spans record below that is live.
    recent: VecDeque<(u64, Entry)>,
    /// Decisions handed over by another gateway and remembered here,
    /// journaled with the next round.
    handed_over: Vec<KnownDecision>,
    buf: Vec<u8>,
    /// On tokio's clock, as the workers' timers are.
    last_shed: Option<tokio::time::Instant>,
}

impl ShardJournal {
    pub(crate) fn new(journal: Arc<Journal>) -> ShardJournal {
        ShardJournal {
            journal,
            decision_seqs: Vec::new(),
            since_snapshot: 0,
            snapshot_bytes: 0,
            recent: VecDeque::new(),
            handed_over: Vec::new(),
            buf: Vec::new(),
            last_shed: None,
        }
    }

    pub(crate) fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// Journals, with the next round, decisions another gateway handed
    /// over that the shard now remembers.
    pub(crate) fn note_handed_over(&mut self, decisions: impl IntoIterator<Item = KnownDecision>) {
        self.handed_over.extend(decisions);
    }

    /// Takes the round's pins, decisions and departures out of `out`: the
    /// pins are let go in [`Self::commit`], after the kept spans were
    /// passed on and the entries journaled, so that no record is
    /// acknowledged before its trace's outcome is safe.
    pub(crate) fn begin(&mut self, out: &mut Released) -> Round {
        let decided = out.decided.iter().map(|d| {
            Entry::Decided(KnownDecision {
                trace_id: d.trace_id,
                sampled: d.verdict.is_sampled(),
                policy: d.verdict.policy,
                tail: d.verdict.tail,
            })
        });
        let handed_over = self.handed_over.drain(..).map(Entry::Decided);
        // Marks are set in `commit`, once the spans log's next number is
        // known; a departure comes last, so it wins over a decision of the
        // same round.
        let gone = out
            .forgotten
            .drain(..)
            .map(|trace_id| Entry::Gone { trace_id, until: 0 });
        Round {
            pins: std::mem::take(&mut out.released_pins),
            entries: decided.chain(handed_over).chain(gone).collect(),
        }
    }

    /// Journals the round's entries, then lets its pins go and writes the
    /// acknowledgements that follows; snapshots when it is time.
    pub(crate) fn commit(&mut self, round: Round, shard: &TraceShard) {
        let mut entries = round.entries;
        if !entries.is_empty() {
            // Every spans record this shard took spans from so far is
            // below this.
            let needed_until = self.journal.log.next_seq();
            for entry in &mut entries {
                if let Entry::Gone { until, .. } = entry {
                    *until = needed_until;
                }
            }
            encode_decisions(&mut self.buf, &entries);
            if let Some(seq) = self.journal.append_decisions(&self.buf, entries.len()) {
                self.decision_seqs.push(seq);
                self.since_snapshot += self.buf.len() as u64;
            }
            self.recent
                .extend(entries.into_iter().map(|e| (needed_until, e)));
        }
        drop(round.pins);
        self.journal.flush_acks();
        if self.since_snapshot >= self.journal.snapshot_min.max(2 * self.snapshot_bytes) {
            self.snapshot(shard);
        }
    }

    /// Forgets decided and gone traces no live spans record can hold.
    fn prune(&mut self) {
        let floor = self.journal.spans_floor();
        while self
            .recent
            .front()
            .is_some_and(|(until, _)| *until <= floor)
        {
            self.recent.pop_front();
        }
    }

    /// Writes one record of what this shard must remember across a restart
    /// (its remembered decisions, its recently decided traces and those
    /// gone from it), then acknowledges the decision records it replaces.
    pub(crate) fn snapshot(&mut self, shard: &TraceShard) {
        self.prune();
        let mut seen: HashSet<TraceId> = HashSet::new();
        let mut entries: Vec<Entry> = shard
            .remembered_decisions()
            .into_iter()
            .map(Entry::Decided)
            .collect();
        entries.extend(self.recent.iter().map(|(_, e)| *e));
        // The latest entry for a trace wins.
        entries.reverse();
        entries.retain(|e| seen.insert(e.trace_id()));
        entries.reverse();
        let replaced = std::mem::take(&mut self.decision_seqs);
        if !entries.is_empty() {
            encode_decisions(&mut self.buf, &entries);
            match self.journal.append_decisions(&self.buf, entries.len()) {
                Some(seq) => {
                    self.decision_seqs.push(seq);
                    self.snapshot_bytes = self.buf.len() as u64;
                }
                None => {
                    // Full: the old records stay until a snapshot fits.
                    self.decision_seqs = replaced;
                    return;
                }
            }
        } else {
            self.snapshot_bytes = 0;
        }
        self.since_snapshot = 0;
        let mut replaced = replaced;
        self.journal.decisions.ack_many(&ranges(&mut replaced));
    }

    /// While the storage is above its high-water mark (at most once per
    /// [`SHED_INTERVAL`]): snapshot if decisions were written since the last
    /// one (which frees old decision records), and if still above, decide
    /// the oldest half of the pending traces early.
    /// Returns the traces decided.
    pub(crate) fn shed_if_full(
        &mut self,
        shard: &mut TraceShard,
        now: Duration,
        decider: &mut impl Decider,
        out: &mut Released,
    ) -> u64 {
        if !self.journal.above_high_water() {
            return 0;
        }
        if self
            .last_shed
            .is_some_and(|at| at.elapsed() < SHED_INTERVAL)
        {
            return 0;
        }
        self.last_shed = Some(tokio::time::Instant::now());
        if self.since_snapshot > 0 {
            self.snapshot(shard);
            if !self.journal.above_high_water() {
                return 0;
            }
        }
        shard.decide_oldest_for_storage(now, decider, out)
    }

    /// At shutdown, keeps the records of the traces still pending, which
    /// the next start restores. Returns how many traces that is.
    pub(crate) fn keep_pending(&mut self, shard: &TraceShard) -> u64 {
        for pin in shard.pending_pins() {
            RecordPin::disarm(pin);
        }
        shard.pending_traces()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_round_trip_and_damage_is_refused() {
        let entries = vec![
            Entry::Decided(KnownDecision {
                trace_id: [1; 16],
                sampled: true,
                policy: Some(3),
                tail: None,
            }),
            Entry::Gone {
                trace_id: [3; 16],
                until: 41,
            },
            Entry::Decided(KnownDecision {
                trace_id: [2; 16],
                sampled: false,
                policy: None,
                tail: None,
            }),
            // Kept by an adaptive policy: its threshold comes back.
            Entry::Decided(KnownDecision {
                trace_id: [4; 16],
                sampled: true,
                policy: Some(0),
                tail: Threshold::from_unsigned(0xfd70a3d70a3d7),
            }),
        ];
        let mut buf = Vec::new();
        encode_decisions(&mut buf, &entries);
        assert_eq!(
            buf.len(),
            DECISIONS_HEADER + 3 * DECISION_LEN + 8 + GONE_LEN
        );
        assert_eq!(decode_decisions(&buf), Some(entries));
        // A threshold past 2^56 does not pass for one.
        let mut out_of_range = buf.clone();
        let at = out_of_range.len() - 8;
        out_of_range[at..].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(decode_decisions(&out_of_range), None);
        assert_eq!(decode_decisions(&buf[..buf.len() - 1]), None);
        assert_eq!(decode_decisions(&buf[..3]), None);
        let mut longer = buf.clone();
        longer.push(0);
        assert_eq!(decode_decisions(&longer), None);
    }

    #[test]
    fn a_gone_trace_settles_only_the_records_before_its_mark() {
        let gone = Entry::Gone {
            trace_id: [3; 16],
            until: 41,
        };
        assert!(gone.settles(40));
        assert!(!gone.settles(41));
        let decided = Entry::Decided(KnownDecision {
            trace_id: [3; 16],
            sampled: false,
            policy: None,
            tail: None,
        });
        assert!(decided.settles(u64::MAX));
    }

    #[test]
    fn handed_over_clocks_round_trip() {
        let clocks = [
            ([7; 16], Duration::from_secs(5)),
            ([8; 16], Duration::from_millis(1500)),
        ];
        let header = handed_over_header(Duration::from_secs(9), &clocks);
        let mut payload = header.clone();
        payload.extend_from_slice(b"batch");
        let h = decode_handed_over(&payload).expect("readable");
        assert_eq!(h.arrival, 9_000_000_000);
        assert_eq!(h.batch_at, header.len());
        assert_eq!(h.first_seen.len(), 2);
        assert_eq!(h.first_seen[&[8; 16]], Duration::from_millis(1500));
        assert!(decode_handed_over(&header[..header.len() - 1]).is_none());
    }

    #[test]
    fn acknowledgements_coalesce_into_ranges() {
        let mut seqs = vec![7, 3, 4, 5, 9, 4, 10];
        assert_eq!(ranges(&mut seqs), vec![3..6, 7..8, 9..11]);
        assert!(ranges(&mut []).is_empty());
    }
}
