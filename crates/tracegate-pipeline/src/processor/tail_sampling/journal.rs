//! The tail sampler's journal (`tail_storage`): the spans of undecided
//! traces and the decisions made, kept in a [`tracegate_storage::Log`] so
//! that a restart — SIGKILL included — resumes the pending traces with
//! their `decision_wait` clocks still running, and late spans of traces
//! decided before it still follow their decisions. docs/architecture.md
//! ("The tail-sampling journal") has the design and its costs.
//!
//! Two kinds of record, told apart by their first byte:
//!
//! - spans (`0x01`): the arrival time (ns since the Unix epoch, u64 LE),
//!   then the batch as the processor received it (an encoded OTLP
//!   request). One per `consume`, written before the client is answered.
//! - decisions (`0x02`): a count (u32 LE), then per trace its id (16
//!   bytes), flags (bit 0: sampled) and the policy credited (u16 LE,
//!   `0xffff` for none). Written by a shard after each round of decisions,
//!   once their kept spans have been passed on, and as a snapshot of what
//!   the shard remembers.
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
use tracegate_model::SpanBatch;
use tracegate_sampling::tail::{
    shard_of, Decider, Pin, Released, RememberedDecision, TraceId, TraceShard,
};
use tracegate_storage::{AppendError, Fsync, Log, OpenReport, Position};

use super::metrics_names as m;
use crate::telemetry::names;

const SPANS: u8 = 0x01;
const DECISIONS: u8 = 0x02;
const SPANS_HEADER: usize = 9;
const DECISIONS_HEADER: usize = 5;
const DECISION_LEN: usize = 19;
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

fn encode_decisions(buf: &mut Vec<u8>, decisions: &[RememberedDecision]) {
    buf.clear();
    buf.push(DECISIONS);
    buf.extend_from_slice(&(decisions.len() as u32).to_le_bytes());
    for d in decisions {
        buf.extend_from_slice(&d.trace_id);
        buf.push(u8::from(d.sampled));
        let policy = d
            .policy
            .and_then(|p| u16::try_from(p).ok())
            .filter(|&p| p != NO_POLICY)
            .unwrap_or(NO_POLICY);
        buf.extend_from_slice(&policy.to_le_bytes());
    }
}

fn decode_decisions(payload: &[u8]) -> Option<Vec<RememberedDecision>> {
    let count = u32::from_le_bytes(payload.get(1..DECISIONS_HEADER)?.try_into().ok()?) as usize;
    let body = payload.get(DECISIONS_HEADER..)?;
    if body.len() != count.checked_mul(DECISION_LEN)? {
        return None;
    }
    Some(
        body.chunks_exact(DECISION_LEN)
            .map(|c| {
                let policy = u16::from_le_bytes([c[17], c[18]]);
                RememberedDecision {
                    trace_id: c[..16].try_into().expect("16 bytes"),
                    sampled: c[16] & 1 != 0,
                    policy: (policy != NO_POLICY).then_some(usize::from(policy)),
                }
            })
            .collect(),
    )
}

/// What the journal held when it was opened: the spans records to restore
/// and the decisions to remember, read in [`Journal::open`]'s first pass.
pub(crate) struct Replay {
    spans: Vec<Position>,
    /// The latest decision journaled for each trace, with its place in the
    /// replay (records in order, entries of a record in order).
    decisions: HashMap<TraceId, (u64, RememberedDecision)>,
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
        let mut decisions: HashMap<TraceId, (u64, RememberedDecision)> = HashMap::new();
        let mut decision_seqs = Vec::new();
        let mut unreadable_decisions = 0;
        let mut order = 0u64;
        let (decisions_log, open_decisions) =
            (place.open)(DECISIONS_LOG, &mut |position: Position, payload: &[u8]| {
                decision_seqs.push(position.seq);
                match decode_decisions(payload).filter(|_| payload[0] == DECISIONS) {
                    Some(list) => {
                        for d in list {
                            // Replay order: by record, then within it.
                            order += 1;
                            decisions.insert(d.trace_id, (order, d));
                        }
                    }
                    None => unreadable_decisions += 1,
                }
            })?;
        let mut spans = Vec::new();
        let mut unreadable = Vec::new();
        let (log, open) = (place.open)(SPANS_LOG, &mut |position: Position, payload: &[u8]| {
            if payload.first() == Some(&SPANS) && payload.len() >= SPANS_HEADER {
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
        let framed = (SPANS_HEADER + batch.bytes().len() + 8) as u64;
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
            .append_batch(&[&[&header, batch.bytes()]])
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
            let arrival = u64::from_le_bytes(payload[1..SPANS_HEADER].try_into().expect("8 bytes"));
            let batch = match SpanBatch::scan(Bytes::from(payload).slice(SPANS_HEADER..)) {
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
                if decided.contains_key(&span.trace_id) {
                    report.decided_spans += 1;
                } else {
                    routes[shard_of(&span.trace_id, n)].push(i as u32);
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
                let held =
                    shard.insert_spans(&batch, route.iter().copied(), at, decider, &mut outs[i]);
                if let Some(held) = held {
                    // block_on_overflow with a full table: what is due
                    // makes room, once.
                    shard.poll(at, decider, &mut outs[i]);
                    if let Some(still) = shard.insert(&held, at, decider, &mut outs[i]) {
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
        // kept for the next snapshot too.
        let mut ordered: Vec<&(u64, RememberedDecision)> = decided.values().collect();
        ordered.sort_unstable_by_key(|(order, _)| *order);
        let needed_until = self.log.next_seq();
        let mut journals: Vec<ShardJournal> =
            (0..n).map(|_| ShardJournal::new(self.clone())).collect();
        for (_, d) in ordered {
            let i = shard_of(&d.trace_id, n);
            shards[i].remember_decision(*d, now);
            journals[i].recent.push_back((needed_until, *d));
        }
        report.decisions = decided.len() as u64;
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

/// The decisions a round of a shard's work produced, taken from its
/// [`Released`] before the round's spans are passed on.
pub(crate) struct Round {
    pins: Vec<Pin>,
    decisions: Vec<RememberedDecision>,
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
    /// acknowledged: (the log's next sequence number when it was decided,
    /// the decision). Needed while a spans record below that is live.
    recent: VecDeque<(u64, RememberedDecision)>,
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
            buf: Vec::new(),
            last_shed: None,
        }
    }

    pub(crate) fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// Takes the round's pins and decisions out of `out`: the pins are let
    /// go in [`Self::commit`], after the kept spans were passed on and the
    /// decisions journaled, so that no record is acknowledged before its
    /// trace's outcome is safe.
    pub(crate) fn begin(&mut self, out: &mut Released) -> Round {
        Round {
            pins: std::mem::take(&mut out.released_pins),
            decisions: out
                .decided
                .iter()
                .map(|d| RememberedDecision {
                    trace_id: d.trace_id,
                    sampled: d.verdict.is_sampled(),
                    policy: d.verdict.policy,
                })
                .collect(),
        }
    }

    /// Journals the round's decisions, then lets its pins go and writes the
    /// acknowledgements that follows; snapshots when it is time.
    pub(crate) fn commit(&mut self, round: Round, shard: &TraceShard) {
        if !round.decisions.is_empty() {
            encode_decisions(&mut self.buf, &round.decisions);
            if let Some(seq) = self
                .journal
                .append_decisions(&self.buf, round.decisions.len())
            {
                self.decision_seqs.push(seq);
                self.since_snapshot += self.buf.len() as u64;
            }
            let needed_until = self.journal.log.next_seq();
            self.recent
                .extend(round.decisions.iter().map(|d| (needed_until, *d)));
        }
        drop(round.pins);
        self.journal.flush_acks();
        if self.since_snapshot >= self.journal.snapshot_min.max(2 * self.snapshot_bytes) {
            self.snapshot(shard);
        }
    }

    /// Forgets decided traces no live spans record can hold.
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
    /// (its remembered decisions and its recently decided traces), then
    /// acknowledges the decision records it replaces.
    pub(crate) fn snapshot(&mut self, shard: &TraceShard) {
        self.prune();
        let mut seen: HashSet<TraceId> = HashSet::new();
        let mut entries: Vec<RememberedDecision> = shard.remembered_decisions();
        entries.extend(self.recent.iter().map(|(_, d)| *d));
        // The latest entry for a trace wins.
        entries.reverse();
        entries.retain(|d| seen.insert(d.trace_id));
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
        let decisions = vec![
            RememberedDecision {
                trace_id: [1; 16],
                sampled: true,
                policy: Some(3),
            },
            RememberedDecision {
                trace_id: [2; 16],
                sampled: false,
                policy: None,
            },
        ];
        let mut buf = Vec::new();
        encode_decisions(&mut buf, &decisions);
        assert_eq!(buf.len(), DECISIONS_HEADER + 2 * DECISION_LEN);
        assert_eq!(decode_decisions(&buf), Some(decisions));
        assert_eq!(decode_decisions(&buf[..buf.len() - 1]), None);
        assert_eq!(decode_decisions(&buf[..3]), None);
    }

    #[test]
    fn acknowledgements_coalesce_into_ranges() {
        let mut seqs = vec![7, 3, 4, 5, 9, 4, 10];
        assert_eq!(ranges(&mut seqs), vec![3..6, 7..8, 9..11]);
        assert!(ranges(&mut []).is_empty());
    }
}
