//! The buffer's side of hand-over between gateways (docs/architecture.md,
//! "Hand-over of traces in flight"): a shard gives up the pending traces
//! and the remembered decisions of trace ids it no longer owns, and takes
//! in what another gateway gave up. Which ids move is the caller's
//! business; the shard only answers a predicate.
//!
//! Imported spans go the way any arriving spans go ([`TraceShard::insert_spans`]:
//! merged into a pending trace, or following a decision already made here),
//! and then a pending trace's clock is moved back to when its previous
//! owner first saw it, if that is earlier: the trace is decided
//! `decision_wait` after its first span wherever that span arrived, not
//! later for having moved.

use std::mem;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracegate_model::trace_state::Threshold;
use tracegate_model::SpanBatch;

use super::{Decider, DecisionReason, Entry, Released, State, TraceShard};
use crate::tail::policy::{Decision, Verdict};
use crate::tail::store::AssembledOnDemand;
use crate::tail::TraceId;

/// A pending trace taken out of a shard to be handed to its new owner.
#[derive(Debug, Clone)]
pub struct PendingTrace {
    pub trace_id: TraceId,
    /// When its first span arrived, on the shard's clock (here, or at a
    /// previous owner as it was handed over).
    pub first_seen: Duration,
    /// Its spans, each under its original resource and scope.
    pub spans: SpanBatch,
}

/// A decision a shard remembers for late spans: in a decision cache, or
/// (caches off) in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownDecision {
    pub trace_id: TraceId,
    pub sampled: bool,
    /// The policy credited with a sampled decision, where known (for
    /// `record_policy`).
    pub policy: Option<usize>,
    /// The tail threshold an adaptive policy kept the trace with
    /// ([`Verdict::tail`]): late spans get it too, wherever they arrive.
    pub tail: Option<Threshold>,
}

impl TraceShard {
    /// Whether the shard holds anything of the trace: pending spans or a
    /// remembered decision.
    pub fn knows(&self, id: &TraceId) -> bool {
        self.table.contains_key(id)
            || self.sampled_cache.contains(id)
            || self.not_sampled_cache.contains(id)
    }

    /// Whether the trace is pending here.
    pub fn is_pending(&self, id: &TraceId) -> bool {
        self.table
            .get(id)
            .is_some_and(|e| matches!(e.state, State::Pending))
    }

    /// Takes every pending trace for which `leaves` holds out of the
    /// shard, whole, into `taken`, and returns how many. They leave as if
    /// they had never been here: no decision, no count but
    /// `new_traces` (which counted them as they started). Their ids go to
    /// [`Released::forgotten`] and the pins they held to
    /// [`Released::released_pins`], for a journal to record that they are
    /// no longer here.
    pub fn take_pending_where(
        &mut self,
        mut leaves: impl FnMut(&TraceId) -> bool,
        taken: &mut Vec<PendingTrace>,
        out: &mut Released,
    ) -> usize {
        let ids: Vec<TraceId> = self
            .table
            .iter()
            .filter(|&(id, e)| matches!(e.state, State::Pending) && leaves(id))
            .map(|(id, _)| *id)
            .collect();
        for &id in &ids {
            let Some(mut entry) = self.table.remove(&id) else {
                continue;
            };
            self.in_tables.fetch_sub(1, Ordering::Relaxed);
            self.pending -= 1;
            self.memory -= entry.memory;
            let spans = AssembledOnDemand::new(&entry.stored, &self.headers).into_batch();
            mem::take(&mut entry.stored).release(&mut self.headers);
            entry.pins.release_into(&mut out.released_pins);
            out.forgotten.push(id);
            // Its queue entries are stale now (no table entry of their
            // seq) and are skipped where they are met.
            taken.push(PendingTrace {
                trace_id: id,
                first_seen: entry.first_seen,
                spans,
            });
        }
        if !ids.is_empty() {
            self.headers.sweep();
        }
        ids.len()
    }

    /// Every remembered decision of a trace for which `moves` holds, into
    /// `out`, least recently used first: decided traces kept in the table
    /// (their cache off), then the decision caches' entries. The shard
    /// keeps them too: late spans that still come here follow them.
    pub fn decisions_where(
        &self,
        mut moves: impl FnMut(&TraceId) -> bool,
        out: &mut Vec<KnownDecision>,
    ) {
        for &(slot, seq) in &self.arrivals {
            let Some((id, entry)) = self.table.live(slot, seq) else {
                continue;
            };
            if let State::Decided { sampled, tail, .. } = entry.state {
                if moves(id) {
                    out.push(KnownDecision {
                        trace_id: *id,
                        sampled,
                        policy: None,
                        tail,
                    });
                }
            }
        }
        for (id, ()) in self.not_sampled_cache.iter_oldest_first() {
            if moves(id) {
                out.push(KnownDecision {
                    trace_id: *id,
                    sampled: false,
                    policy: None,
                    tail: None,
                });
            }
        }
        for (id, (policy, tail)) in self.sampled_cache.iter_oldest_first() {
            if moves(id) {
                out.push(KnownDecision {
                    trace_id: *id,
                    sampled: true,
                    policy: *policy,
                    tail: *tail,
                });
            }
        }
    }

    /// Takes in spans handed over by a previous owner: as
    /// [`Self::insert_spans`], then each trace of them still pending here
    /// counts from `first_seen(id)` when that is earlier than its first
    /// span here. A trace whose wait is over by then is due at once (the
    /// next [`Self::poll`] decides it). Returns what `block_on_overflow`
    /// held back, to be imported again later.
    pub fn import_spans(
        &mut self,
        batch: &SpanBatch,
        spans: impl IntoIterator<Item = u32>,
        first_seen: impl Fn(&TraceId) -> Option<Duration>,
        now: Duration,
        decider: &mut impl Decider,
        out: &mut Released,
    ) -> Option<SpanBatch> {
        let held = self.insert_spans(batch, spans, now, decider, out);
        // `groups` still holds this batch's traces.
        let ids = self.groups.ids.clone();
        let mut due = Vec::new();
        for id in ids {
            let Some(at) = first_seen(&id) else { continue };
            let Some(slot) = self.table.slot_of(&id) else {
                continue;
            };
            let Some((_, entry)) = self.table.at_mut(slot) else {
                continue;
            };
            if matches!(entry.state, State::Pending) && at < entry.first_seen {
                entry.first_seen = at;
                // The later entry of the same seq stays in the queue and
                // finds the trace decided when it comes up.
                due.push((at + self.settings.decision_wait, slot, entry.seq));
            }
        }
        self.merge_into_wait_queue(due);
        held
    }

    /// Puts deadlines into the wait queue in deadline order (it is
    /// otherwise in first-seen order, which handed-over traces break).
    fn merge_into_wait_queue(&mut self, mut due: Vec<(Duration, u32, u64)>) {
        if due.is_empty() {
            return;
        }
        due.sort_unstable_by_key(|e| e.0);
        // Everything at or before the earliest new deadline stays put.
        let from = self.wait_queue.partition_point(|e| e.0 <= due[0].0);
        let tail: Vec<(Duration, u32, u64)> = self.wait_queue.drain(from..).collect();
        let (mut a, mut b) = (tail.into_iter().peekable(), due.into_iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.0 <= y.0 => a.next(),
                (_, Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, None) => break,
            };
            self.wait_queue.extend(next);
        }
    }

    /// Takes in a decision the trace's previous owner made. A trace
    /// pending here is decided by it at once (its spans here are the late
    /// ones); an unknown trace has it remembered, as if decided here, so
    /// its late spans follow it; a trace decided here keeps its decision.
    pub fn import_decision(
        &mut self,
        decision: KnownDecision,
        now: Duration,
        decider: &mut impl Decider,
        out: &mut Released,
    ) {
        let id = decision.trace_id;
        // One lookup: the trace's slot, and whether it is still pending.
        let held = self.table.slot_of(&id).and_then(|slot| {
            let (_, entry) = self.table.at(slot)?;
            Some((slot, matches!(entry.state, State::Pending)))
        });
        match held {
            Some((slot, true)) => {
                let verdict = Verdict {
                    decision: if decision.sampled {
                        Decision::Sampled
                    } else {
                        Decision::NotSampled
                    },
                    policy: decision.policy,
                    composite: None,
                    tail: decision.tail,
                };
                self.decide_as(
                    slot,
                    now,
                    DecisionReason::Handover,
                    Some(verdict),
                    decider,
                    out,
                );
            }
            Some((_, false)) => {}
            None => {
                if self.sampled_cache.contains(&id) || self.not_sampled_cache.contains(&id) {
                    return;
                }
                let cached = if decision.sampled {
                    self.sampled_cache.put(id, (decision.policy, decision.tail));
                    self.sampled_cache.capacity() > 0
                } else {
                    self.not_sampled_cache.put(id, ());
                    self.not_sampled_cache.capacity() > 0
                };
                if !cached {
                    self.remember_in_table(id, decision.sampled, decision.tail, now, decider, out);
                }
            }
        }
    }

    /// Without a decision cache, a decision is remembered in the table,
    /// taking a slot of `num_traces` as a decided trace of this shard
    /// would. Not remembered when `block_on_overflow` finds no room.
    fn remember_in_table(
        &mut self,
        id: TraceId,
        sampled: bool,
        tail: Option<Threshold>,
        now: Duration,
        decider: &mut impl Decider,
        out: &mut Released,
    ) {
        if !self.make_room(now, decider, out) {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = self.table_insert(
            id,
            Entry::empty(
                seq,
                now,
                State::Decided {
                    sampled,
                    at: now,
                    tail,
                },
            ),
        );
        self.arrivals.push_back((slot, seq));
        self.compact_arrivals();
    }
}

#[cfg(test)]
mod tests {
    use super::super::TraceBufferSettings;
    use super::*;
    use crate::tail::tests::{batch, keep_errors, secs, settings, span, tid, SpanSpec};

    fn ok(trace: u64, id: u8) -> SpanSpec {
        span(tid(trace), id)
    }

    fn err(trace: u64, id: u8) -> SpanSpec {
        span(tid(trace), id).error()
    }

    /// A shard whose decision caches hold `cached` traces each.
    fn shard(cached: usize) -> TraceShard {
        TraceShard::new(TraceBufferSettings {
            sampled_cache_size: cached,
            non_sampled_cache_size: cached,
            ..settings()
        })
    }

    fn span_names(batches: &[SpanBatch]) -> Vec<String> {
        let mut names: Vec<String> = batches
            .iter()
            .flat_map(|b| (0..b.len()).map(|i| b.span_name(i).to_string()))
            .collect();
        names.sort();
        names
    }

    /// The trace numbers of `decided`, in order.
    fn numbers(decided: &[super::super::DecidedTrace]) -> Vec<u8> {
        decided.iter().map(|d| d.trace_id[7]).collect()
    }

    /// What a shard with `cached`-entry caches remembers after deciding
    /// `spans` (taken in at 100 s).
    fn decided_elsewhere(cached: usize, spans: &[SpanSpec]) -> Vec<KnownDecision> {
        let mut a = shard(cached);
        let mut out = Released::default();
        a.insert(&batch(spans), secs(100), &mut keep_errors(), &mut out);
        a.poll(secs(110), &mut keep_errors(), &mut out);
        let mut decisions = Vec::new();
        a.decisions_where(|_| true, &mut decisions);
        decisions.sort_by_key(|d| d.trace_id);
        // The old owner still follows them.
        assert!(decisions.iter().all(|d| a.knows(&d.trace_id)));
        decisions
    }

    #[test]
    fn pending_traces_leave_whole_and_only_those_asked_for() {
        let mut policies = keep_errors();
        let mut out = Released::default();
        let mut a = shard(0);
        let first = batch(&[ok(1, 1), ok(2, 1), err(1, 2)]);
        a.insert(&first, secs(100), &mut policies, &mut out);
        a.insert(&batch(&[ok(2, 2)]), secs(103), &mut policies, &mut out);
        let before = a.buffered_bytes();
        let mut taken = Vec::new();
        assert_eq!(
            a.take_pending_where(|id| *id == tid(1), &mut taken, &mut out),
            1
        );
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].trace_id, tid(1));
        assert_eq!(taken[0].first_seen, secs(100));
        assert_eq!(span_names(&[taken[0].spans.clone()]), ["span-1", "span-2"]);
        assert_eq!(a.pending_traces(), 1);
        assert_eq!(a.traces_in_table(), 1);
        assert!(a.buffered_bytes() < before);
        assert!(!a.knows(&tid(1)));
        // Its deadline no longer fires: only trace 2 is decided.
        a.poll(secs(200), &mut policies, &mut out);
        assert_eq!(numbers(&out.decided), [2]);
        assert_eq!(a.buffered_bytes(), 0);
    }

    #[test]
    fn imported_traces_keep_their_first_seen_and_merge_with_local_spans() {
        let mut policies = keep_errors();
        let mut out = Released::default();
        let mut a = shard(0);
        a.insert(
            &batch(&[ok(1, 1), err(1, 2)]),
            secs(100),
            &mut policies,
            &mut out,
        );
        let mut taken = Vec::new();
        a.take_pending_where(|_| true, &mut taken, &mut out);

        let mut b = shard(0);
        // Local spans of the trace and another trace arrived first.
        b.insert(
            &batch(&[ok(1, 3), ok(9, 1)]),
            secs(104),
            &mut policies,
            &mut out,
        );
        let moved = &taken[0];
        let first_seen = |id: &TraceId| (*id == moved.trace_id).then_some(moved.first_seen);
        let all = 0..moved.spans.len() as u32;
        assert!(b
            .import_spans(
                &moved.spans,
                all,
                first_seen,
                secs(105),
                &mut policies,
                &mut out
            )
            .is_none());
        assert_eq!(b.aggregates(&tid(1)).unwrap().span_count, 3);
        // Due at 110 (first seen at 100 on the old owner), not 114.
        assert_eq!(b.next_deadline(), Some(secs(110)));
        b.poll(secs(110), &mut policies, &mut out);
        assert_eq!(numbers(&out.decided), [1]);
        assert_eq!(out.decided[0].span_count, 3);
        assert_eq!(span_names(&out.sampled), ["span-1", "span-2", "span-3"]);
        out.clear();
        b.poll(secs(114), &mut policies, &mut out);
        assert_eq!(numbers(&out.decided), [9]);
    }

    #[test]
    fn an_overdue_import_is_due_at_once_and_the_queue_stays_in_order() {
        let mut policies = keep_errors();
        let mut out = Released::default();
        let mut b = shard(0);
        for (n, at) in [(1, 100), (2, 102), (3, 104)] {
            b.insert(&batch(&[ok(n, 1)]), secs(at), &mut policies, &mut out);
        }
        let moved = batch(&[err(7, 1), ok(8, 1)]);
        let first_seen = |id: &TraceId| match id[7] {
            7 => Some(secs(90)),
            8 => Some(secs(101)),
            _ => None,
        };
        b.import_spans(&moved, 0..2, first_seen, secs(105), &mut policies, &mut out);
        assert_eq!(b.next_deadline(), Some(secs(100)));
        let order: Vec<u8> = b
            .wait_queue
            .iter()
            .map(|e| b.table.at(e.1).expect("a queued trace is in the table").0[7])
            .collect();
        assert_eq!(order, [7, 1, 8, 2, 3, 7, 8]);
        b.poll(secs(105), &mut policies, &mut out);
        assert_eq!(numbers(&out.decided), [7]);
        b.poll(secs(111), &mut policies, &mut out);
        assert_eq!(numbers(&out.decided), [7, 1, 8]);
    }

    #[test]
    fn handed_over_decisions_are_followed_by_late_spans() {
        let mut policies = keep_errors();
        let mut out = Released::default();
        let decisions = decided_elsewhere(10, &[err(1, 1), ok(2, 1)]);
        assert_eq!(
            decisions,
            [
                KnownDecision {
                    trace_id: tid(1),
                    sampled: true,
                    policy: Some(0),
                    tail: None,
                },
                KnownDecision {
                    trace_id: tid(2),
                    sampled: false,
                    policy: None,
                    tail: None,
                },
            ]
        );
        // The new owner: trace 1 unknown, trace 2 pending with a late span.
        let mut b = shard(10);
        b.insert(&batch(&[err(2, 2)]), secs(111), &mut policies, &mut out);
        for d in &decisions {
            b.import_decision(*d, secs(112), &mut policies, &mut out);
        }
        // Trace 2 decided as before (not sampled), though its span here is
        // an error: the decision is the old owner's.
        assert_eq!(numbers(&out.decided), [2]);
        assert_eq!(out.decided[0].reason, DecisionReason::Handover);
        assert!(!out.decided[0].verdict.is_sampled());
        assert!(out.sampled.is_empty());
        assert_eq!(b.pending_traces(), 0);
        out.clear();
        b.insert(
            &batch(&[ok(1, 2), ok(2, 3)]),
            secs(113),
            &mut policies,
            &mut out,
        );
        assert_eq!(span_names(&out.sampled), ["span-2"]);
        assert_eq!(out.sampled_by[0].policy, Some(0));
        assert_eq!(b.stats().cache_released_sampled_spans, 1);
        assert_eq!(b.stats().cache_released_not_sampled_spans, 1);
        assert_eq!(b.pending_traces(), 0);
    }

    #[test]
    fn a_handed_over_keep_gives_late_spans_its_tail_threshold() {
        let mut policies = keep_errors();
        let mut out = Released::default();
        let tail = Threshold::from_unsigned(0xfd70a3d70a3d7);
        // In the decision cache (size 10), and, with the caches off, in
        // the table; handed over, or read back from a journal after a
        // restart: late spans of the trace get the threshold every way.
        for (cache, restored) in [(10, false), (0, false), (10, true), (0, true)] {
            let mut b = shard(cache);
            let decision = KnownDecision {
                trace_id: tid(1),
                sampled: true,
                policy: Some(0),
                tail,
            };
            if restored {
                b.remember_decision(decision, secs(112));
            } else {
                b.import_decision(decision, secs(112), &mut policies, &mut out);
            }
            // Passed on again (a later hand-over, a snapshot) with it.
            assert!(
                b.remembered_decisions()
                    .iter()
                    .any(|d| d.trace_id == tid(1) && d.sampled && d.tail == tail),
                "cache {cache}, restored {restored}"
            );
            out.clear();
            b.insert(&batch(&[ok(1, 2)]), secs(113), &mut policies, &mut out);
            assert_eq!(
                span_names(&out.sampled),
                ["span-2"],
                "cache {cache}, restored {restored}"
            );
            assert_eq!(
                out.sampled_by[0].tail, tail,
                "cache {cache}, restored {restored}"
            );
            out.clear();
        }
    }

    #[test]
    fn without_caches_decisions_are_remembered_in_the_table() {
        let mut policies = keep_errors();
        let mut out = Released::default();
        let decisions = decided_elsewhere(0, &[err(1, 1)]);
        assert_eq!(decisions.len(), 1);
        assert!(decisions[0].sampled);

        let mut b = shard(0);
        b.import_decision(decisions[0], secs(111), &mut policies, &mut out);
        assert_eq!(b.traces_in_table(), 1);
        assert_eq!(b.pending_traces(), 0);
        b.insert(&batch(&[ok(1, 2)]), secs(112), &mut policies, &mut out);
        assert_eq!(span_names(&out.sampled), ["span-2"]);
        // A decision made here is not replaced by one handed over.
        let mut flipped = decisions[0];
        flipped.sampled = false;
        b.import_decision(flipped, secs(113), &mut policies, &mut out);
        out.clear();
        b.insert(&batch(&[ok(1, 3)]), secs(114), &mut policies, &mut out);
        assert_eq!(span_names(&out.sampled), ["span-3"]);
    }
}
