//! The trace buffer: pending traces held until they are decided, sharded
//! by trace id with each [`TraceShard`] owned by one worker
//! (docs/architecture.md, "The shard-per-core trace buffer").
//!
//! A shard owns its pending traces (span bodies kept as slices of the
//! request buffers they arrived in, each buffer counted as the shard's
//! share of the request until its last trace here is decided, store.rs),
//! the aggregates policies need (kept as spans arrive), its decision
//! timers and its decision caches. It never takes a lock; policies are reached through a
//! [`Decider`], one per shard ([`PolicySet::build_shards`]: the shards'
//! sets share the rate budgets, which are per processor in the collector).
//!
//! Timing, bounds and late spans follow the collector's processor:
//! - a trace is decided `decision_wait` after its first span, or
//!   `decision_wait_after_root_received` after its root span if that is
//!   sooner;
//! - a trace growing past `maximum_trace_size_bytes` is not sampled at
//!   once (counted as too large); one growing past tracegate's
//!   `max_spans_per_trace` is decided at once by the policies;
//! - when `num_traces` is reached, the oldest trace gives way. The
//!   collector silently deletes it even if undecided; tracegate decides an
//!   undecided one early instead and counts it. With `block_on_overflow`
//!   a new trace waits (the caller retries) until a pending one is decided;
//! - the byte budget for pending spans is tracegate's own: over it, the
//!   oldest pending traces are decided early, counted;
//! - while a memory limiter is above its hard limit, or when one at its
//!   soft limit asks for room, the caller may shed part of the buffer
//!   ([`TraceShard::decide_oldest_for_memory`],
//!   [`TraceShard::decide_oldest_to_free`]): the oldest pending traces are
//!   decided early, counted;
//! - a decided trace is remembered in the decision cache of its outcome
//!   when that cache is enabled; otherwise, as in the collector, it stays
//!   in the table (spans released) until `num_traces` pushes it out. A late
//!   span follows a remembered decision at once; a forgotten trace starts
//!   over as a new pending trace.
//!
//! A caller that keeps a journal of the spans (the pipeline's tail storage)
//! attaches a [`Pin`] to each insert ([`TraceShard::set_pin`]): every
//! pending trace that takes spans from it holds the pin until its spans
//! are released (decided or dropped) and then hands it back in
//! [`Released::released_pins`], so the caller knows when no pending trace
//! needs a journal record any more. The shard never looks inside a pin.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use foldhash::fast::RandomState;
use std::mem;
use std::time::Duration;

use tracegate_model::trace_state::Threshold;
use tracegate_model::{Indexing, SpanBatch, StatusCode};

use super::adaptive::key::{KeyFields, KeyScratch, RecordedKey};
use super::adaptive::TraceSeed;

use super::cache::LruMap;
use super::policy::{Decision, PolicySet, TraceView, Verdict};
use super::store::{AssembledOnDemand, Headers, ScopeHeaders, StoredSpans};
use super::{shard_of, TraceId};

/// A caller's opaque handle on the source of inserted spans (see the
/// module docs): held by each pending trace with spans from that insert.
pub type Pin = Arc<dyn Any + Send + Sync>;

mod handover;
mod table;
pub use handover::{KnownDecision, PendingTrace};
use table::Table;

/// Decides traces: the policies, possibly shared between shards.
pub trait Decider {
    fn decide(&mut self, trace: &TraceView<'_>, now: Duration) -> Verdict;
    /// `sampling_strategy: span-ingest`: a final decision from one arriving
    /// batch of a trace, or `None` while it stays pending
    /// ([`PolicySet::decide_span_ingest`]).
    fn decide_span_ingest(&mut self, trace: &TraceView<'_>, now: Duration) -> Option<Verdict>;
    /// The attributes to record as each trace's spans arrive, for the
    /// `dynamic` policies' keys ([`PolicySet::key_fields`]): the same
    /// decider must decide the traces. `None` (the default): nothing is
    /// recorded, and a policy reading them reads the spans.
    fn key_fields(&self) -> Option<&KeyFields> {
        None
    }
}

impl Decider for PolicySet {
    fn decide(&mut self, trace: &TraceView<'_>, now: Duration) -> Verdict {
        PolicySet::decide(self, trace, now)
    }

    fn decide_span_ingest(&mut self, trace: &TraceView<'_>, now: Duration) -> Option<Verdict> {
        PolicySet::decide_span_ingest(self, trace, now)
    }

    fn key_fields(&self) -> Option<&KeyFields> {
        PolicySet::key_fields(self)
    }
}

/// The buffer's bounds and timings, for the whole buffer (a shard gets its
/// share of the counts and bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceBufferSettings {
    pub decision_wait: Duration,
    /// Zero: off.
    pub decision_wait_after_root_received: Duration,
    pub num_traces: u64,
    /// Budget for the memory of pending spans (the request buffers they
    /// hold, or their packed bytes, plus their index); zero: none.
    pub max_buffered_bytes: u64,
    /// A trace whose `ResourceSpans` grow past this is not sampled; zero:
    /// no limit.
    pub maximum_trace_size_bytes: u64,
    /// A trace with more spans is decided at once; zero: no limit.
    pub max_spans_per_trace: u64,
    pub block_on_overflow: bool,
    pub sampled_cache_size: usize,
    pub non_sampled_cache_size: usize,
    /// `sampling_strategy: span-ingest`: each arriving batch is judged on
    /// its own as it comes ([`Decider::decide_span_ingest`]); a trace still
    /// undecided when its wait ends (or when it must give way early) is
    /// not sampled, without evaluation.
    pub span_ingest: bool,
    /// Pack the span bodies of pending traces once they have waited
    /// [`PACK_AFTER`] (store.rs): about a fifth of the memory, for the CPU
    /// of compressing every buffered span once.
    pub pack_spans: bool,
    /// Traces this shard's table is sized for before any arrives (its
    /// share of `num_traces`, set by [`TraceBuffer::shard_settings`]), so
    /// that taking new traces does not grow it; zero: grown as needed.
    pub table_capacity: u64,
    /// Index the spans of kept traces as they are assembled (true), or
    /// only validate them and let the batch index itself when something
    /// reads its spans (false: for a pipeline whose later stages only
    /// pass bytes on). The bytes are the same either way.
    pub index_kept: bool,
}

impl Default for TraceBufferSettings {
    fn default() -> Self {
        TraceBufferSettings {
            decision_wait: Duration::from_secs(30),
            decision_wait_after_root_received: Duration::ZERO,
            num_traces: 50_000,
            max_buffered_bytes: 0,
            maximum_trace_size_bytes: 0,
            max_spans_per_trace: 0,
            block_on_overflow: false,
            sampled_cache_size: 0,
            non_sampled_cache_size: 0,
            span_ingest: false,
            pack_spans: true,
            table_capacity: 0,
            index_kept: true,
        }
    }
}

impl TraceBufferSettings {
    /// This shard's share of the bounds (rounded up, so the shards together
    /// hold at least the configured amount). `num_traces` is not split: the
    /// shards count their traces together ([`TraceShard::with_table_count`]),
    /// so a skewed spread of trace ids does not fill one shard's share
    /// while the others sit empty.
    fn for_shard(&self, shards: usize) -> TraceBufferSettings {
        let n = shards.max(1) as u64;
        TraceBufferSettings {
            max_buffered_bytes: self.max_buffered_bytes.div_ceil(n),
            sampled_cache_size: self.sampled_cache_size.div_ceil(n as usize),
            non_sampled_cache_size: self.non_sampled_cache_size.div_ceil(n as usize),
            table_capacity: self.num_traces.div_ceil(n),
            ..self.clone()
        }
    }
}

/// Why a trace was decided when it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecisionReason {
    /// `decision_wait` after its first span.
    DecisionWait,
    /// `decision_wait_after_root_received` after its root span.
    RootReceived,
    /// Over `max_spans_per_trace`: decided by the policies at once.
    TooManySpans,
    /// Over `maximum_trace_size_bytes`: not sampled, without evaluation.
    TooLarge,
    /// Early, to make room under `num_traces`.
    NumTracesFull,
    /// Early, to stay within the byte budget.
    BytesFull,
    /// Early, to give memory back while a memory limiter is above its hard
    /// limit.
    MemoryLimit,
    /// On shutdown.
    Shutdown,
    /// Early, to free the tail storage's disk once it nears its bound.
    StorageFull,
    /// `span-ingest`: a batch of the trace decided it as it arrived.
    SpanIngest,
    /// Decided by the trace's previous owner, whose decision was handed
    /// over with the trace ([`TraceShard::import_decision`]).
    Handover,
}

impl DecisionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionReason::DecisionWait => "decision_wait",
            DecisionReason::RootReceived => "root_received",
            DecisionReason::TooManySpans => "max_spans_per_trace",
            DecisionReason::TooLarge => "maximum_trace_size_bytes",
            DecisionReason::NumTracesFull => "num_traces",
            DecisionReason::BytesFull => "max_buffered_bytes",
            DecisionReason::MemoryLimit => "memory_limit",
            DecisionReason::Shutdown => "shutdown",
            DecisionReason::StorageFull => "storage_full",
            DecisionReason::SpanIngest => "span_ingest",
            DecisionReason::Handover => "handover",
        }
    }

    /// Decided before its time to respect a bound.
    pub fn is_early(self) -> bool {
        matches!(
            self,
            DecisionReason::TooManySpans
                | DecisionReason::NumTracesFull
                | DecisionReason::BytesFull
                | DecisionReason::MemoryLimit
                | DecisionReason::StorageFull
        )
    }
}

/// A trace that was just decided.
#[derive(Debug, Clone)]
pub struct DecidedTrace {
    pub trace_id: TraceId,
    pub verdict: Verdict,
    pub reason: DecisionReason,
    pub span_count: u64,
    /// From its first span to its decision.
    pub waited: Duration,
}

/// What kept a batch of [`Released::sampled`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampledBy {
    /// Index into the policy names of the policy credited with the
    /// decision (none for late spans of a trace remembered in the table,
    /// which the collector passes on unmarked).
    pub policy: Option<usize>,
    /// Released by the sampled decision cache.
    pub cached: bool,
    /// The composite policy and its sub-policy that sampled the trace
    /// ([`Verdict::composite`]).
    pub composite: Option<(usize, usize)>,
    /// The tail threshold adaptive policies kept the trace with
    /// ([`Verdict::tail`]), for the kept spans' tracestate.
    pub tail: Option<Threshold>,
}

/// What calls on a shard hand back: spans to pass on, decisions made, and
/// late spans seen. Reused across calls; the caller drains it.
#[derive(Debug, Default)]
pub struct Released {
    /// Spans of sampled traces (and late spans of sampled traces), each
    /// batch in the original resource/scope structure.
    pub sampled: Vec<SpanBatch>,
    /// For each of [`Self::sampled`]: what kept it, for the collector's
    /// `tailsampling.policy` attribute.
    pub sampled_by: Vec<SampledBy>,
    pub decided: Vec<DecidedTrace>,
    /// For each batch of late spans of a trace still in the table: how long
    /// after the decision it came (the collector's `late_span_age`).
    pub late_span_ages: Vec<Duration>,
    /// For each trace that left the table: how long after its first span
    /// (the collector's `sampling_trace_removal_age`).
    pub removal_ages: Vec<Duration>,
    /// The pins of traces whose spans were released, one per trace and
    /// insert (see [`TraceShard::set_pin`]).
    pub released_pins: Vec<Pin>,
    /// Traces the shard let go of without keeping a decision for their
    /// late spans: forgotten to free room a memory limiter asked for
    /// ([`TraceShard::decide_oldest_to_free`]), or taken out to be handed
    /// to another gateway ([`TraceShard::take_pending_where`]). A journal
    /// records them so that a restart neither gives their spans back nor
    /// remembers their decisions.
    pub forgotten: Vec<TraceId>,
}

impl Released {
    pub fn clear(&mut self) {
        self.sampled.clear();
        self.sampled_by.clear();
        self.decided.clear();
        self.late_span_ages.clear();
        self.removal_ages.clear();
        self.released_pins.clear();
        self.forgotten.clear();
    }
}

/// Cumulative counters of a shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Traces that started pending (`new_trace_id_received`).
    pub new_traces: u64,
    /// Late spans released at once by the sampled / non-sampled decision
    /// cache (`early_releases_from_cache_decision`).
    pub cache_released_sampled_spans: u64,
    pub cache_released_not_sampled_spans: u64,
    /// Late spans of a decided trace still in the table.
    pub late_sampled_spans: u64,
    pub late_not_sampled_spans: u64,
    /// Traces not sampled for `maximum_trace_size_bytes`
    /// (`traces_dropped_too_large`).
    pub traces_too_large: u64,
    /// Traces decided early: for `num_traces`, the byte budget,
    /// `max_spans_per_trace`, a memory limiter above its hard limit.
    pub early_num_traces: u64,
    pub early_bytes: u64,
    pub early_max_spans: u64,
    pub early_memory_limit: u64,
    /// Traces decided early to free the tail storage's disk.
    pub early_storage_full: u64,
    /// Spans not passed on, by why: not sampled by the policies, dropped
    /// by a drop policy, too large, late for a non-sampled decision.
    pub spans_not_sampled: u64,
    pub spans_dropped_by_policy: u64,
    pub spans_too_large: u64,
    pub spans_late_not_sampled: u64,
    /// Spans of pending traces dropped undecided at shutdown
    /// (`drop_pending_traces_on_shutdown`).
    pub spans_dropped_pending: u64,
    /// Spans passed on as part of a sampled decision.
    pub spans_sampled: u64,
    /// Traces decided by the policies whose `dynamic` key fields were too
    /// long to record as they arrived
    /// ([`MAX_RECORDED_KEY_BYTES`](super::adaptive::key::MAX_RECORDED_KEY_BYTES)),
    /// so their spans were assembled to read it.
    pub keys_over_cap: u64,
}

#[derive(Debug)]
enum State {
    Pending,
    /// Decided and remembered in the table (its decision cache is off).
    Decided {
        sampled: bool,
        at: Duration,
        /// [`Verdict::tail`], for late spans.
        tail: Option<Threshold>,
    },
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    first_seen: Duration,
    state: State,
    stored: StoredSpans,
    span_count: u64,
    /// `ResourceSpans` bytes, as the collector sizes a trace for
    /// `maximum_trace_size_bytes`.
    byte_size: u64,
    /// The same as a `TracesData`, as `bytes_limiting` charges it.
    traces_size: u64,
    /// What the trace itself costs in memory (span index, packed bodies),
    /// and the recorded `key`. The request buffers its unpacked bodies
    /// are slices of are counted by the shard's store (store.rs,
    /// `Sources`), as they are shared between traces.
    memory: u64,
    statuses: u8,
    root_seen: bool,
    min_start: u64,
    max_end: u64,
    /// Every start non-zero and every time within `i64`: the latency
    /// policy may judge from `min_start` and `max_end` alone.
    plain_times: bool,
    /// The pins of the inserts its pending spans came from.
    pins: Pins,
    /// Randomness and incoming threshold of the first span.
    seed: Option<TraceSeed>,
    /// With a decider that has [`Decider::key_fields`]: their values at
    /// the first span, replaced by those at the first root span when it
    /// arrives (counted in `memory`).
    key: Option<RecordedKey>,
}

/// A pending trace's pins, boxed: without a journal a trace has none,
/// and the entry stays small (8 bytes instead of a `Vec`'s 24, in every
/// table slot; the extra allocation is only for traces with pins).
#[derive(Debug, Default)]
#[allow(clippy::box_collection)]
struct Pins(Option<Box<Vec<Pin>>>);

impl Pins {
    /// Adds `pin` unless it is the last one added.
    fn add(&mut self, pin: &Pin) {
        let pins = self.0.get_or_insert_with(Box::default);
        if !pins.last().is_some_and(|p| Arc::ptr_eq(p, pin)) {
            pins.push(pin.clone());
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Pin> + '_ {
        self.0.iter().flat_map(|pins| pins.iter())
    }

    /// Hands the pins over to `out`, holding none afterwards.
    fn release_into(&mut self, out: &mut Vec<Pin>) {
        if let Some(pins) = self.0.take() {
            out.extend(*pins);
        }
    }
}

impl Entry {
    /// A trace with no spans yet, first seen `now`.
    fn empty(seq: u64, now: Duration, state: State) -> Entry {
        Entry {
            seq,
            first_seen: now,
            state,
            stored: StoredSpans::default(),
            span_count: 0,
            byte_size: 0,
            traces_size: 0,
            memory: 0,
            statuses: 0,
            root_seen: false,
            min_start: u64::MAX,
            max_end: 0,
            plain_times: true,
            pins: Pins::default(),
            seed: None,
            key: None,
        }
    }
}

/// A batch's spans grouped by trace, traces in order of first appearance
/// and each trace's spans in batch order: a counting sort over reused
/// buffers, so grouping allocates nothing per trace.
#[derive(Debug, Default)]
struct TraceGroups {
    slot_of: HashMap<TraceId, u32, RandomState>,
    /// Trace ids by slot, in order of first appearance.
    ids: Vec<TraceId>,
    /// (slot, span index) in batch order.
    tagged: Vec<(u32, u32)>,
    /// Where each slot's spans start in `sorted` (one more entry than slots).
    starts: Vec<u32>,
    sorted: Vec<u32>,
}

impl TraceGroups {
    fn group(&mut self, batch: &SpanBatch, spans: impl IntoIterator<Item = u32>) {
        // A huge batch once should not make every later clear pay for it.
        if self.slot_of.capacity() > 4096 {
            self.slot_of = HashMap::default();
        }
        self.slot_of.clear();
        self.ids.clear();
        self.tagged.clear();
        for i in spans {
            let id = batch.spans()[i as usize].trace_id;
            let next = self.ids.len() as u32;
            let slot = *self.slot_of.entry(id).or_insert(next);
            if slot == next {
                self.ids.push(id);
            }
            self.tagged.push((slot, i));
        }
        self.starts.clear();
        self.starts.resize(self.ids.len() + 1, 0);
        for &(slot, _) in &self.tagged {
            self.starts[slot as usize + 1] += 1;
        }
        for k in 1..self.starts.len() {
            self.starts[k] += self.starts[k - 1];
        }
        self.sorted.clear();
        self.sorted.resize(self.tagged.len(), 0);
        // `starts[slot]` walks forward as spans are placed and ends where
        // the next slot starts; shifted back below.
        for &(slot, i) in &self.tagged {
            let at = &mut self.starts[slot as usize];
            self.sorted[*at as usize] = i;
            *at += 1;
        }
        self.starts.rotate_right(1);
        self.starts[0] = 0;
    }

    /// Each trace with its spans' indices, ascending.
    fn iter(&self) -> impl Iterator<Item = (TraceId, &[u32])> + '_ {
        self.ids.iter().enumerate().map(|(slot, &id)| {
            let range = self.starts[slot] as usize..self.starts[slot + 1] as usize;
            (id, &self.sorted[range])
        })
    }
}

/// A batch being taken in, with the headers of its scopes as found.
struct Incoming<'a> {
    batch: &'a SpanBatch,
    scopes: ScopeHeaders,
}

/// What a trace's slot in the table costs beyond its spans: the entry and
/// its id in their slot, its place in the index, and its place in the
/// arrival order (the index's spare buckets aside).
pub(crate) const ENTRY_MEMORY: u64 = (mem::size_of::<Option<(TraceId, Entry)>>()
    + mem::size_of::<(TraceId, u32)>()
    + mem::size_of::<Queued>()) as u64;

/// A queue's reference to a trace: its slot in the table and its seq
/// (which tells a reused slot's later trace from this one).
type Queued = (u32, u64);

/// One worker's share of the pending traces.
#[derive(Debug)]
pub struct TraceShard {
    settings: TraceBufferSettings,
    table: Table,
    /// Traces in the tables of every shard sharing this count (the bound
    /// of `num_traces`); this shard adds and removes its own.
    in_tables: Arc<AtomicU64>,
    /// (deadline, slot, seq) in first-seen order: `decision_wait` is
    /// constant, so first-seen order is deadline order.
    wait_queue: VecDeque<(Duration, u32, u64)>,
    /// Same for root deadlines (`decision_wait_after_root_received`).
    root_queue: VecDeque<(Duration, u32, u64)>,
    /// (slot, seq) in first-seen order: who gives way first under
    /// `num_traces` and the byte budget. Stale entries are skipped.
    arrivals: VecDeque<Queued>,
    pending: u64,
    memory: u64,
    next_seq: u64,
    /// The policy credited and the tail threshold of each.
    sampled_cache: LruMap<TraceId, (Option<usize>, Option<Threshold>)>,
    not_sampled_cache: LruMap<TraceId, ()>,
    stats: ShardStats,
    /// Distinct resource+scope pairs of the pending spans.
    headers: Headers,
    /// Reused grouping of a batch's spans by trace.
    groups: TraceGroups,
    /// Attached to the spans inserted next ([`Self::set_pin`]).
    pin: Option<Pin>,
    /// Reused by [`KeyFields::record`].
    key_scratch: KeyScratch,
    /// (when, slot, seq) of pending traces with span bodies to pack, in
    /// the order they arrived ([`PACK_AFTER`]).
    pack_queue: VecDeque<(Duration, u32, u64)>,
}

/// How long a trace's newly arrived span bodies wait before they are
/// packed (store.rs): most of a trace arrives within it, so a trace is
/// usually packed once, in one block. At most a quarter of
/// `decision_wait`.
pub const PACK_AFTER: Duration = Duration::from_millis(100);

impl TraceShard {
    /// A shard holding the whole of `settings` (use
    /// [`TraceBuffer::new`] for several shards).
    pub fn new(settings: TraceBufferSettings) -> TraceShard {
        Self::with_table_count(settings, Arc::default())
    }

    /// A shard whose `num_traces` bound counts the traces of every shard
    /// given the same `in_tables`.
    pub fn with_table_count(
        settings: TraceBufferSettings,
        in_tables: Arc<AtomicU64>,
    ) -> TraceShard {
        TraceShard {
            in_tables,
            sampled_cache: LruMap::new(settings.sampled_cache_size),
            not_sampled_cache: LruMap::new(settings.non_sampled_cache_size),
            table: Table::with_capacity(
                usize::try_from(settings.table_capacity).unwrap_or(usize::MAX),
            ),
            settings,
            wait_queue: VecDeque::new(),
            root_queue: VecDeque::new(),
            arrivals: VecDeque::new(),
            pending: 0,
            memory: 0,
            next_seq: 0,
            stats: ShardStats::default(),
            groups: TraceGroups::default(),
            headers: Headers::default(),
            pin: None,
            key_scratch: KeyScratch::default(),
            pack_queue: VecDeque::new(),
        }
    }

    /// Packs the span bodies of pending traces that have waited
    /// [`PACK_AFTER`] (or a quarter of `decision_wait`) since they arrived.
    fn pack_due(&mut self, now: Duration) {
        while let Some(&(due, slot, seq)) = self.pack_queue.front() {
            if due > now {
                break;
            }
            self.pack_queue.pop_front();
            let Some((_, entry)) = self.table.at_mut(slot) else {
                continue;
            };
            if entry.seq != seq || !matches!(entry.state, State::Pending) {
                continue;
            }
            let before = entry.stored.memory();
            entry.stored.pack(&mut self.headers);
            let after = entry.stored.memory();
            entry.memory = entry.memory + after - before;
            self.memory = self.memory + after - before;
        }
    }

    /// Span bodies packed so far and the bytes they took (diagnostics).
    pub fn packed_bytes(&self) -> (u64, u64) {
        (
            self.headers.packer.packed_in,
            self.headers.packer.packed_out,
        )
    }

    /// Attaches `pin` to the spans of the inserts that follow (until set
    /// again): each pending trace taking some of them holds it until its
    /// spans are released, then hands it back in
    /// [`Released::released_pins`].
    pub fn set_pin(&mut self, pin: Option<Pin>) {
        self.pin = pin;
    }

    /// The pins pending traces hold, for a caller that must know which
    /// journal records still carry undecided spans (at shutdown).
    pub fn pending_pins(&self) -> impl Iterator<Item = &Pin> + '_ {
        self.table
            .values()
            .filter(|e| matches!(e.state, State::Pending))
            .flat_map(|e| e.pins.iter())
    }

    /// The decisions remembered for late spans, least recently used
    /// first: decided traces kept in the table when their cache is off,
    /// then the decision caches' entries.
    pub fn remembered_decisions(&self) -> Vec<KnownDecision> {
        let mut out = Vec::new();
        self.decisions_where(|_| true, &mut out);
        out
    }

    /// Remembers a decision made earlier (by a previous run, read back
    /// from a journal) as if it had just been made: in the decision cache
    /// of its outcome, or, with that cache off, as a decided trace in the
    /// table while `num_traces` leaves room. A trace pending here keeps
    /// its state.
    pub fn remember_decision(&mut self, decision: KnownDecision, now: Duration) {
        let id = decision.trace_id;
        if decision.sampled && self.sampled_cache.capacity() > 0 {
            self.sampled_cache.put(id, (decision.policy, decision.tail));
        } else if !decision.sampled && self.not_sampled_cache.capacity() > 0 {
            self.not_sampled_cache.put(id, ());
        } else if !self.table.contains_key(&id)
            && self.in_tables.load(Ordering::Relaxed) < self.settings.num_traces
        {
            let seq = self.next_seq;
            self.next_seq += 1;
            let state = State::Decided {
                sampled: decision.sampled,
                at: now,
                tail: decision.tail,
            };
            let slot = self.table_insert(id, Entry::empty(seq, now, state));
            self.arrivals.push_back((slot, seq));
            self.compact_arrivals();
        }
    }

    pub fn stats(&self) -> ShardStats {
        self.stats
    }

    /// Traces waiting for a decision.
    pub fn pending_traces(&self) -> u64 {
        self.pending
    }

    /// Traces in the table: pending plus decided ones remembered there.
    pub fn traces_in_table(&self) -> usize {
        self.table.len()
    }

    /// Traces in the tables of every shard sharing this one's count.
    pub fn traces_in_all_tables(&self) -> u64 {
        self.in_tables.load(Ordering::Relaxed)
    }

    /// Puts `entry` in the table; returns its slot.
    fn table_insert(&mut self, id: TraceId, entry: Entry) -> u32 {
        let (slot, old) = self.table.insert(id, entry);
        if old.is_none() {
            self.in_tables.fetch_add(1, Ordering::Relaxed);
        }
        slot
    }

    fn table_remove(&mut self, id: &TraceId, now: Duration, out: &mut Released) -> Option<Entry> {
        let entry = self.table.remove(id);
        if let Some(e) = &entry {
            self.in_tables.fetch_sub(1, Ordering::Relaxed);
            out.removal_ages.push(now.saturating_sub(e.first_seen));
        }
        entry
    }

    /// Memory of the pending spans, as the byte budget counts it.
    pub fn buffered_bytes(&self) -> u64 {
        self.memory + self.headers.memory + self.headers.sources.memory
    }

    /// What deciding pending traces can free: the traces' own memory and
    /// the request buffers they hold (headers go only at the next sweep).
    fn spans_memory(&self) -> u64 {
        self.memory + self.headers.sources.memory
    }

    /// When the next trace falls due, if any is pending.
    pub fn next_deadline(&self) -> Option<Duration> {
        let a = self.wait_queue.front().map(|e| e.0);
        let b = self.root_queue.front().map(|e| e.0);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes in every span of `batch`. Returns the spans that could not be
    /// taken because `block_on_overflow` holds new traces back while the
    /// table is full; retry them after [`Self::poll`] has decided some.
    pub fn insert(
        &mut self,
        batch: &SpanBatch,
        now: Duration,
        decider: &mut impl Decider,
        out: &mut Released,
    ) -> Option<SpanBatch> {
        self.insert_spans(batch, 0..batch.len() as u32, now, decider, out)
    }

    /// Like [`Self::insert`] for the spans at `spans` only.
    pub fn insert_spans(
        &mut self,
        batch: &SpanBatch,
        spans: impl IntoIterator<Item = u32>,
        now: Duration,
        decider: &mut impl Decider,
        out: &mut Released,
    ) -> Option<SpanBatch> {
        self.headers.sweep();
        let mut incoming = Incoming {
            batch,
            scopes: ScopeHeaders::new(batch),
        };
        let mut groups = mem::take(&mut self.groups);
        groups.group(batch, spans);
        let mut held_back: Vec<u32> = Vec::new();
        for (id, indices) in groups.iter() {
            if !self.take_trace_spans(&mut incoming, id, indices, now, decider, out) {
                held_back.extend_from_slice(indices);
            }
        }
        incoming
            .scopes
            .finish(batch, groups.tagged.len(), &mut self.headers);
        self.groups = groups;
        self.pack_due(now);
        self.enforce_byte_budget(now, decider, out);
        if held_back.is_empty() {
            None
        } else {
            Some(batch.select(&held_back))
        }
    }

    /// Spans of one trace from one batch. `false`: held back (blocked).
    fn take_trace_spans(
        &mut self,
        incoming: &mut Incoming<'_>,
        id: TraceId,
        indices: &[u32],
        now: Duration,
        decider: &mut impl Decider,
        out: &mut Released,
    ) -> bool {
        let batch = incoming.batch;
        let count = indices.len() as u64;
        let slot = if let Some((slot, entry)) = self
            .table
            .slot_of(&id)
            .and_then(|slot| Some((slot, self.table.at(slot)?.1)))
        {
            if let State::Decided { sampled, at, tail } = entry.state {
                out.late_span_ages.push(now.saturating_sub(at));
                if sampled {
                    self.stats.late_sampled_spans += count;
                    self.stats.spans_sampled += count;
                    out.sampled.push(batch.select(indices));
                    out.sampled_by.push(SampledBy {
                        policy: None,
                        cached: false,
                        composite: None,
                        tail,
                    });
                } else {
                    self.stats.late_not_sampled_spans += count;
                    self.stats.spans_late_not_sampled += count;
                }
                return true;
            }
            slot
        } else {
            if let Some((policy, tail)) = self.sampled_cache.get(&id) {
                self.stats.cache_released_sampled_spans += count;
                self.stats.spans_sampled += count;
                out.sampled.push(batch.select(indices));
                out.sampled_by.push(SampledBy {
                    policy,
                    cached: true,
                    composite: None,
                    tail,
                });
                return true;
            }
            if self.not_sampled_cache.get(&id).is_some() {
                self.stats.cache_released_not_sampled_spans += count;
                self.stats.spans_late_not_sampled += count;
                return true;
            }
            if !self.make_room(now, decider, out) {
                return false;
            }
            self.start_trace(id, now)
        };
        self.append(incoming, slot, indices, now, decider, out);
        if self.settings.span_ingest {
            self.decide_on_ingest(batch, id, indices, now, decider, out);
        }
        true
    }

    /// `span-ingest`: judges the batch's spans of a still pending trace on
    /// their own, with the trace's span count so far (as the collector
    /// does), and finishes the trace if that decides it.
    fn decide_on_ingest(
        &mut self,
        batch: &SpanBatch,
        id: TraceId,
        indices: &[u32],
        now: Duration,
        decider: &mut impl Decider,
        out: &mut Released,
    ) {
        let Some(slot) = self.table.slot_of(&id) else {
            return;
        };
        let Some((_, entry)) = self.table.at(slot) else {
            return;
        };
        if !matches!(entry.state, State::Pending) {
            return;
        }
        let arrived = [batch.select(indices)];
        let mut view = TraceView::of_batches(&id, &arrived);
        view.span_count = entry.span_count;
        if let Some(verdict) = decider.decide_span_ingest(&view, now) {
            self.decide_as(
                slot,
                now,
                DecisionReason::SpanIngest,
                Some(verdict),
                decider,
                out,
            );
        }
    }

    /// Starts a pending trace; returns its slot.
    fn start_trace(&mut self, id: TraceId, now: Duration) -> u32 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = self.table_insert(id, Entry::empty(seq, now, State::Pending));
        self.pending += 1;
        self.stats.new_traces += 1;
        self.wait_queue
            .push_back((now + self.settings.decision_wait, slot, seq));
        self.arrivals.push_back((slot, seq));
        self.compact_arrivals();
        slot
    }

    /// Appends spans to the pending trace in `slot` and applies the
    /// per-trace limits.
    fn append(
        &mut self,
        incoming: &mut Incoming<'_>,
        slot: u32,
        indices: &[u32],
        now: Duration,
        decider: &mut impl Decider,
        out: &mut Released,
    ) {
        let settings = &self.settings;
        let Some((_, entry)) = self.table.at_mut(slot) else {
            return;
        };
        let batch = incoming.batch;
        let mut first_root: Option<u32> = None;
        if entry.seed.is_none() {
            if let Some(&first) = indices.first() {
                entry.seed = Some(TraceSeed::of_span(batch, first as usize));
            }
        }
        for &i in indices {
            let span = &batch.spans()[i as usize];
            entry.statuses |= 1 << span.status as u8;
            if first_root.is_none() && span.is_root() {
                first_root = Some(i);
            }
            entry.min_start = entry.min_start.min(span.start_time_unix_nano);
            entry.max_end = entry.max_end.max(span.end_time_unix_nano);
            entry.plain_times &= span.start_time_unix_nano != 0
                && span.start_time_unix_nano <= i64::MAX as u64
                && span.end_time_unix_nano <= i64::MAX as u64;
        }
        let root = first_root.is_some();
        if let Some(fields) = decider.key_fields().filter(|_| !settings.span_ingest) {
            // The span `Dynamic::key_of` reads from the assembled trace:
            // its first root span in arrival order, else its first span.
            let at = match first_root {
                Some(r) if !entry.root_seen => Some((r, true)),
                _ if entry.span_count == 0 => indices.first().map(|&f| (f, false)),
                _ => None,
            };
            if let Some((span, from_root)) = at {
                let key = fields.record(batch, span as usize, from_root, &mut self.key_scratch);
                let was = entry.key.as_ref().map_or(0, RecordedKey::memory);
                entry.memory = entry.memory - was + key.memory();
                self.memory = self.memory - was + key.memory();
                entry.key = Some(key);
            }
        }
        entry.span_count += indices.len() as u64;
        if settings.pack_spans && !entry.stored.has_unpacked() {
            let after = PACK_AFTER.min(settings.decision_wait / 4);
            self.pack_queue.push_back((now + after, slot, entry.seq));
        }
        let before = entry.stored.memory();
        let (size, traces_size) =
            entry
                .stored
                .append(batch, indices, &mut incoming.scopes, &mut self.headers);
        entry.byte_size += size;
        entry.traces_size += traces_size;
        let memory = entry.stored.memory() - before;
        entry.memory += memory;
        self.memory += memory;
        if let Some(pin) = &self.pin {
            entry.pins.add(pin);
        }
        if root && !entry.root_seen {
            entry.root_seen = true;
            let after_root = settings.decision_wait_after_root_received;
            if !after_root.is_zero() {
                let deadline = now + after_root;
                if deadline < entry.first_seen + settings.decision_wait {
                    self.root_queue.push_back((deadline, slot, entry.seq));
                }
            }
        }
        let too_large = settings.maximum_trace_size_bytes > 0
            && entry.byte_size > settings.maximum_trace_size_bytes;
        let too_many =
            settings.max_spans_per_trace > 0 && entry.span_count > settings.max_spans_per_trace;
        if too_large {
            self.decide_at(slot, now, DecisionReason::TooLarge, decider, out);
        } else if too_many {
            self.decide_at(slot, now, DecisionReason::TooManySpans, decider, out);
        }
    }

    /// Frees a slot for a new trace if the tables are full. `false` when
    /// `block_on_overflow` says the new trace must wait. The bound counts
    /// every shard's traces, but a shard can only make its own give way:
    /// one with none takes the trace (the others give way as they next
    /// take one), so the tables may briefly hold a few over the bound.
    fn make_room(&mut self, now: Duration, decider: &mut impl Decider, out: &mut Released) -> bool {
        while self.in_tables.load(Ordering::Relaxed) >= self.settings.num_traces {
            if self.table.is_empty() {
                return true;
            }
            if self.settings.block_on_overflow {
                // Only decided traces remembered in the table may go; a
                // pending one is waited for.
                if self
                    .evict_oldest(true, DecisionReason::NumTracesFull, now, decider, out)
                    .is_none()
                {
                    return false;
                }
            } else if self
                .evict_oldest(false, DecisionReason::NumTracesFull, now, decider, out)
                .is_none()
            {
                return true;
            }
        }
        true
    }

    /// Makes the oldest trace in the table give way: a decided one is
    /// forgotten, a pending one decided early for `reason` and forgotten.
    /// With `decided_only`, the oldest decided one. Its id and the memory
    /// that deciding it freed (0 for a decided one; 0 too when the request
    /// buffers it held slices of are still held by younger traces), or
    /// `None` when there was none to evict.
    fn evict_oldest(
        &mut self,
        decided_only: bool,
        reason: DecisionReason,
        now: Duration,
        decider: &mut impl Decider,
        out: &mut Released,
    ) -> Option<(TraceId, u64)> {
        let mut skipped: Vec<Queued> = Vec::new();
        let mut evicted = None;
        while let Some((slot, seq)) = self.arrivals.pop_front() {
            let Some((&id, entry)) = self.table.live(slot, seq) else {
                continue;
            };
            match entry.state {
                State::Decided { .. } => {
                    self.table_remove(&id, now, out);
                    evicted = Some((id, 0));
                    break;
                }
                State::Pending if decided_only => skipped.push((slot, seq)),
                State::Pending => {
                    let before = self.spans_memory();
                    // Stays in the table as decided (or leaves it), either
                    // way the slot accounting below sees the change.
                    self.decide_at(slot, now, reason, decider, out);
                    if self.table.live(slot, seq).is_some() {
                        self.table_remove(&id, now, out);
                    }
                    // What it really freed: a request buffer goes with
                    // the last trace holding a slice of it.
                    evicted = Some((id, before.saturating_sub(self.spans_memory())));
                    break;
                }
            }
        }
        for s in skipped.into_iter().rev() {
            self.arrivals.push_front(s);
        }
        evicted
    }

    /// Decides the oldest pending traces early while the pending spans'
    /// memory is over budget.
    fn enforce_byte_budget(
        &mut self,
        now: Duration,
        decider: &mut impl Decider,
        out: &mut Released,
    ) {
        let budget = self.settings.max_buffered_bytes;
        if budget == 0 {
            return;
        }
        self.decide_oldest_while_over(budget, now, DecisionReason::BytesFull, decider, out);
    }

    /// Sheds half of the pending spans' memory: decides the oldest pending
    /// traces early (reason [`DecisionReason::MemoryLimit`]) until the
    /// spans still pending take at most half the memory they did. For a caller that
    /// learned memory is above a hard limit; called again on each check
    /// that still finds it so, the buffer halves each time. The oldest
    /// go first as they are the closest to their decision anyway: they
    /// lose the least of their wait. Returns the traces decided.
    pub fn decide_oldest_for_memory(
        &mut self,
        now: Duration,
        decider: &mut impl Decider,
        out: &mut Released,
    ) -> u64 {
        self.halve_pending(now, DecisionReason::MemoryLimit, decider, out)
    }

    /// Frees tail storage: decides the oldest pending traces early (reason
    /// [`DecisionReason::StorageFull`]) until the spans still pending take
    /// at most half the memory they did. Their journal records are
    /// released with them (oldest first, so whole segments of the journal
    /// come free). Returns the traces decided.
    pub fn decide_oldest_for_storage(
        &mut self,
        now: Duration,
        decider: &mut impl Decider,
        out: &mut Released,
    ) -> u64 {
        self.halve_pending(now, DecisionReason::StorageFull, decider, out)
    }

    /// Decides the oldest pending traces early, for `reason`, until the
    /// spans still pending take at most half the memory they did; returns
    /// the traces decided.
    fn halve_pending(
        &mut self,
        now: Duration,
        reason: DecisionReason,
        decider: &mut impl Decider,
        out: &mut Released,
    ) -> u64 {
        let before = self.pending;
        if before == 0 {
            return 0;
        }
        // The headers' memory only falls at the sweep below, so the target
        // counts it as it stands: halve the spans' own memory.
        let target = self.spans_memory() / 2 + self.headers.memory;
        self.decide_oldest_while_over(target, now, reason, decider, out);
        // Headers no pending span refers to any more are memory too.
        self.headers.sweep();
        before - self.pending
    }

    /// Frees about `bytes` for a caller asked to make room by a memory
    /// limiter at its soft limit: the oldest traces in the table give way
    /// as when `num_traces` is full, whatever their state (a decided one
    /// kept for late spans is forgotten, a pending one is decided early,
    /// reason [`DecisionReason::MemoryLimit`], and forgotten), each counted
    /// as its spans' memory plus [`ENTRY_MEMORY`]. Forgetting them rather
    /// than keeping them as decided lets the table shrink: under memory
    /// pressure decided entries must not crowd out pending traces. A late
    /// span of a forgotten trace starts it over, as in the collector. The
    /// forgotten traces are listed in [`Released::forgotten`].
    /// Returns the traces decided.
    pub fn decide_oldest_to_free(
        &mut self,
        bytes: u64,
        now: Duration,
        decider: &mut impl Decider,
        out: &mut Released,
    ) -> u64 {
        let before = self.stats.early_memory_limit;
        let mut freed = 0;
        while freed < bytes {
            match self.evict_oldest(false, DecisionReason::MemoryLimit, now, decider, out) {
                Some((id, memory)) => {
                    out.forgotten.push(id);
                    freed += memory + ENTRY_MEMORY;
                }
                None => break,
            }
        }
        self.headers.sweep();
        // A table emptied this way gives its memory back.
        self.table.shrink();
        self.stats.early_memory_limit - before
    }

    /// Decides the oldest pending traces early, for `reason`, while the
    /// pending spans' memory is over `budget`.
    fn decide_oldest_while_over(
        &mut self,
        budget: u64,
        now: Duration,
        reason: DecisionReason,
        decider: &mut impl Decider,
        out: &mut Released,
    ) {
        // The wait queue is the pending traces in first-seen order; entries
        // of traces decided since are skipped (and dropped) on the way.
        while self.buffered_bytes() > budget {
            let Some((_, slot, seq)) = self.wait_queue.pop_front() else {
                break;
            };
            if self.is_pending_at(slot, seq) {
                self.decide_at(slot, now, reason, decider, out);
            }
        }
    }

    /// Decides every trace whose time has come.
    pub fn poll(&mut self, now: Duration, decider: &mut impl Decider, out: &mut Released) {
        self.poll_due(now, decider, out);
        self.pack_due(now);
        self.headers.sweep();
    }

    fn poll_due(&mut self, now: Duration, decider: &mut impl Decider, out: &mut Released) {
        loop {
            let wait_due = self.wait_queue.front().is_some_and(|e| e.0 <= now);
            let root_due = self.root_queue.front().is_some_and(|e| e.0 <= now);
            let (entry, reason) = match (wait_due, root_due) {
                (false, false) => break,
                (true, false) => (self.wait_queue.pop_front(), DecisionReason::DecisionWait),
                (false, true) => (self.root_queue.pop_front(), DecisionReason::RootReceived),
                (true, true) => {
                    if self.root_queue[0].0 < self.wait_queue[0].0 {
                        (self.root_queue.pop_front(), DecisionReason::RootReceived)
                    } else {
                        (self.wait_queue.pop_front(), DecisionReason::DecisionWait)
                    }
                }
            };
            let Some((_, slot, seq)) = entry else { break };
            if self.is_pending_at(slot, seq) {
                self.decide_at(slot, now, reason, decider, out);
            }
        }
    }

    /// Decides every pending trace now (shutdown), or with
    /// `drop_pending` counts their spans as not sampled without deciding.
    pub fn drain(
        &mut self,
        now: Duration,
        drop_pending: bool,
        decider: &mut impl Decider,
        out: &mut Released,
    ) {
        let ids: Vec<TraceId> = self
            .arrivals
            .iter()
            .filter_map(|&(slot, seq)| {
                let (id, e) = self.table.live(slot, seq)?;
                matches!(e.state, State::Pending).then_some(*id)
            })
            .collect();
        for id in ids {
            if drop_pending {
                if let Some(mut entry) = self.table_remove(&id, now, out) {
                    self.pending -= 1;
                    self.memory -= entry.memory;
                    self.stats.spans_dropped_pending += entry.span_count;
                    entry.pins.release_into(&mut out.released_pins);
                    entry.stored.release(&mut self.headers);
                }
            } else {
                self.decide(id, now, DecisionReason::Shutdown, decider, out);
            }
        }
    }

    fn decide(
        &mut self,
        id: TraceId,
        now: Duration,
        reason: DecisionReason,
        decider: &mut impl Decider,
        out: &mut Released,
    ) {
        if let Some(slot) = self.table.slot_of(&id) {
            self.decide_as(slot, now, reason, None, decider, out);
        }
    }

    /// Decides the trace in `slot` by the policies.
    fn decide_at(
        &mut self,
        slot: u32,
        now: Duration,
        reason: DecisionReason,
        decider: &mut impl Decider,
        out: &mut Released,
    ) {
        self.decide_as(slot, now, reason, None, decider, out);
    }

    /// Whether the trace in `slot` is the pending one of `seq`.
    fn is_pending_at(&self, slot: u32, seq: u64) -> bool {
        self.table
            .live(slot, seq)
            .is_some_and(|(_, e)| matches!(e.state, State::Pending))
    }

    /// Decides the pending trace in `slot`: with `given`, as given;
    /// otherwise by the policies (or as not sampled, when too large or in
    /// `span-ingest`).
    fn decide_as(
        &mut self,
        slot: u32,
        now: Duration,
        reason: DecisionReason,
        given: Option<Verdict>,
        decider: &mut impl Decider,
        out: &mut Released,
    ) {
        let Some((&id, entry)) = self.table.at_mut(slot) else {
            return;
        };
        if !matches!(entry.state, State::Pending) {
            return;
        }
        let (verdict, assembled) = if let Some(verdict) = given {
            let assembled = verdict
                .is_sampled()
                .then(|| AssembledOnDemand::new(&entry.stored, &self.headers).into_batch());
            (verdict, assembled)
        } else if reason == DecisionReason::TooLarge || self.settings.span_ingest {
            let verdict = Verdict {
                decision: Decision::NotSampled,
                policy: None,
                composite: None,
                tail: None,
            };
            (verdict, None)
        } else {
            let spans = AssembledOnDemand::new(&entry.stored, &self.headers);
            let view = TraceView::of_stored(
                &id,
                entry.span_count,
                entry.byte_size,
                entry.traces_size,
                entry.statuses,
                entry
                    .plain_times
                    .then_some((entry.min_start, entry.max_end)),
                &spans,
            );
            let view = match entry.seed {
                Some(seed) => view.with_seed(seed),
                None => view,
            };
            let view = match entry.key.as_ref() {
                Some(key) => match key.values() {
                    Some(values) => view.with_recorded_key(values),
                    None => {
                        self.stats.keys_over_cap += 1;
                        view
                    }
                },
                None => view,
            };
            let verdict = decider.decide(&view, now);
            // Only a kept trace is written back if no policy read it.
            let indexing = if self.settings.index_kept {
                Indexing::Eager
            } else {
                Indexing::Lazy
            };
            let assembled = verdict
                .is_sampled()
                .then(|| spans.into_batch_with(indexing));
            (verdict, assembled)
        };
        let sampled = verdict.is_sampled();
        let spans = entry.span_count;
        self.pending -= 1;
        self.memory -= entry.memory;
        entry.memory = 0;
        entry.state = State::Decided {
            sampled,
            at: now,
            tail: verdict.tail,
        };
        mem::take(&mut entry.stored).release(&mut self.headers);
        entry.key = None;
        entry.pins.release_into(&mut out.released_pins);
        out.decided.push(DecidedTrace {
            trace_id: id,
            verdict,
            reason,
            span_count: spans,
            waited: now.saturating_sub(entry.first_seen),
        });
        match reason {
            DecisionReason::TooLarge => {
                self.stats.traces_too_large += 1;
                self.stats.spans_too_large += spans;
            }
            DecisionReason::NumTracesFull => self.stats.early_num_traces += 1,
            DecisionReason::BytesFull => self.stats.early_bytes += 1,
            DecisionReason::MemoryLimit => self.stats.early_memory_limit += 1,
            DecisionReason::StorageFull => self.stats.early_storage_full += 1,
            DecisionReason::TooManySpans => self.stats.early_max_spans += 1,
            _ => {}
        }
        let remembered_by_cache = if sampled {
            self.stats.spans_sampled += spans;
            if let Some(trace) = assembled {
                out.sampled.push(trace);
                out.sampled_by.push(SampledBy {
                    policy: verdict.policy,
                    cached: false,
                    composite: verdict.composite,
                    tail: verdict.tail,
                });
            }
            self.sampled_cache.put(id, (verdict.policy, verdict.tail));
            self.sampled_cache.capacity() > 0
        } else {
            if reason != DecisionReason::TooLarge {
                if verdict.decision == Decision::Dropped {
                    self.stats.spans_dropped_by_policy += spans;
                } else {
                    self.stats.spans_not_sampled += spans;
                }
            }
            self.not_sampled_cache.put(id, ());
            self.not_sampled_cache.capacity() > 0
        };
        if remembered_by_cache {
            self.table_remove(&id, now, out);
        }
    }

    /// Drops stale arrival entries once they outnumber live ones.
    fn compact_arrivals(&mut self) {
        if self.arrivals.len() > 2 * self.table.len() + 64 {
            let table = &self.table;
            self.arrivals
                .retain(|&(slot, seq)| table.live(slot, seq).is_some());
        }
    }
}

/// The aggregates kept for a pending trace, for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceAggregates {
    pub span_count: u64,
    pub byte_size: u64,
    pub traces_size: u64,
    pub min_start: u64,
    pub max_end: u64,
    pub any_error: bool,
    pub root_seen: bool,
}

impl TraceShard {
    #[cfg(test)]
    pub(crate) fn headers_len(&self) -> usize {
        self.headers.len()
    }

    /// Slots the table has allocated.
    #[cfg(test)]
    pub(crate) fn table_slots(&self) -> usize {
        self.table.slots()
    }

    /// Request buffers pending spans hold slices of, and what they count.
    #[cfg(test)]
    pub(crate) fn request_buffers(&self) -> (usize, u64) {
        (self.headers.sources.len(), self.headers.sources.memory)
    }

    /// The key fields recorded for a pending trace.
    #[cfg(test)]
    pub(crate) fn recorded_key(&self, id: &TraceId) -> Option<&RecordedKey> {
        self.table.get(id)?.key.as_ref()
    }

    /// A pending trace's spans assembled as the policies would read them.
    #[cfg(test)]
    pub(crate) fn assembled(&self, id: &TraceId) -> Option<SpanBatch> {
        let e = self.table.get(id)?;
        Some(AssembledOnDemand::new(&e.stored, &self.headers).into_batch())
    }

    /// The aggregates of a pending trace.
    pub fn aggregates(&self, id: &TraceId) -> Option<TraceAggregates> {
        let e = self.table.get(id)?;
        if !matches!(e.state, State::Pending) {
            return None;
        }
        Some(TraceAggregates {
            span_count: e.span_count,
            byte_size: e.byte_size,
            traces_size: e.traces_size,
            min_start: e.min_start,
            max_end: e.max_end,
            any_error: e.statuses & (1 << StatusCode::Error as u8) != 0,
            root_seen: e.root_seen,
        })
    }
}

/// Several shards driven from one thread: for tests, benchmarks and
/// callers without workers. The pipeline runs each shard on its own worker
/// instead.
#[derive(Debug)]
pub struct TraceBuffer {
    shards: Vec<TraceShard>,
    routes: Vec<Vec<u32>>,
}

impl TraceBuffer {
    /// `shards` shards sharing `settings`' bounds.
    pub fn new(settings: &TraceBufferSettings, shards: usize) -> TraceBuffer {
        let n = shards.max(1);
        let per_shard = settings.for_shard(n);
        let in_tables = Arc::new(AtomicU64::new(0));
        TraceBuffer {
            shards: (0..n)
                .map(|_| TraceShard::with_table_count(per_shard.clone(), in_tables.clone()))
                .collect(),
            routes: vec![Vec::new(); n],
        }
    }

    /// The settings each shard of `shards` gets.
    pub fn shard_settings(settings: &TraceBufferSettings, shards: usize) -> TraceBufferSettings {
        settings.for_shard(shards)
    }

    pub fn shards(&self) -> &[TraceShard] {
        &self.shards
    }

    /// Routes each span to its trace's shard. Returns spans held back by
    /// `block_on_overflow`, one batch per blocked shard.
    pub fn insert(
        &mut self,
        batch: &SpanBatch,
        now: Duration,
        decider: &mut impl Decider,
        out: &mut Released,
    ) -> Vec<SpanBatch> {
        let n = self.shards.len();
        for route in &mut self.routes {
            route.clear();
        }
        for (i, span) in batch.spans().iter().enumerate() {
            self.routes[shard_of(&span.trace_id, n)].push(i as u32);
        }
        let mut held = Vec::new();
        for (shard, route) in self.shards.iter_mut().zip(&self.routes) {
            if route.is_empty() {
                continue;
            }
            if let Some(back) = shard.insert_spans(batch, route.iter().copied(), now, decider, out)
            {
                held.push(back);
            }
        }
        held
    }

    pub fn poll(&mut self, now: Duration, decider: &mut impl Decider, out: &mut Released) {
        for shard in &mut self.shards {
            shard.poll(now, decider, out);
        }
    }

    pub fn drain(
        &mut self,
        now: Duration,
        drop_pending: bool,
        decider: &mut impl Decider,
        out: &mut Released,
    ) {
        for shard in &mut self.shards {
            shard.drain(now, drop_pending, decider, out);
        }
    }

    pub fn pending_traces(&self) -> u64 {
        self.shards.iter().map(TraceShard::pending_traces).sum()
    }

    pub fn buffered_bytes(&self) -> u64 {
        self.shards.iter().map(TraceShard::buffered_bytes).sum()
    }

    pub fn stats(&self) -> ShardStats {
        let mut total = ShardStats::default();
        for s in &self.shards {
            let s = s.stats();
            total.new_traces += s.new_traces;
            total.cache_released_sampled_spans += s.cache_released_sampled_spans;
            total.cache_released_not_sampled_spans += s.cache_released_not_sampled_spans;
            total.late_sampled_spans += s.late_sampled_spans;
            total.late_not_sampled_spans += s.late_not_sampled_spans;
            total.traces_too_large += s.traces_too_large;
            total.early_num_traces += s.early_num_traces;
            total.early_bytes += s.early_bytes;
            total.early_max_spans += s.early_max_spans;
            total.early_memory_limit += s.early_memory_limit;
            total.early_storage_full += s.early_storage_full;
            total.spans_not_sampled += s.spans_not_sampled;
            total.spans_dropped_by_policy += s.spans_dropped_by_policy;
            total.spans_too_large += s.spans_too_large;
            total.spans_late_not_sampled += s.spans_late_not_sampled;
            total.spans_dropped_pending += s.spans_dropped_pending;
            total.spans_sampled += s.spans_sampled;
            total.keys_over_cap += s.keys_over_cap;
        }
        total
    }

    pub fn next_deadline(&self) -> Option<Duration> {
        self.shards
            .iter()
            .filter_map(TraceShard::next_deadline)
            .min()
    }
}
