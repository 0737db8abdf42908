//! A shard worker's side of hand-over: on a change of members it hands the
//! pending traces it no longer owns (and the decisions of trace ids that
//! moved away from it) to their owners; it passes on spans of traces it
//! neither owns nor holds anything of; it takes in what other gateways
//! hand it; and at shutdown it hands everything to the members without it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracegate_sampling::tail::{KnownDecision, PendingTrace, Released, TraceId, TraceShard};

use super::super::Work;
use super::forward::{Moving, Outgoing, Reason};
use super::m;
use super::{Arrival, Import, View, MAX_HOPS};

/// How often pending traces held here but owned elsewhere are looked at
/// again (see [`ShardHandover::foreign`]).
const RECHECK_EVERY: Duration = Duration::from_millis(500);

/// What woke the worker on hand-over's account.
#[derive(Debug)]
pub(in crate::processor::tail_sampling) enum Event {
    /// The members changed.
    ViewChanged,
    /// Spans or decisions to take in.
    Import(Import),
    /// Time to look at the foreign traces again.
    Recheck,
}

pub(in crate::processor::tail_sampling) struct ShardHandover {
    processor: String,
    view: watch::Receiver<Arc<View>>,
    /// The view the shard last acted on.
    current: Arc<View>,
    view_open: bool,
    imports: mpsc::Receiver<Import>,
    imports_open: bool,
    /// Hand-overs that failed come back here.
    returns_tx: mpsc::UnboundedSender<Import>,
    returns: mpsc::UnboundedReceiver<Import>,
    forwarder: mpsc::UnboundedSender<Outgoing>,
    /// Pending traces here that this gateway does not own, with how many
    /// hand-overs in a row each has had: taken in from a gateway whose view
    /// of the members differs (for a moment) from ours, or back from a
    /// hand-over that failed. Handed on again every [`RECHECK_EVERY`].
    foreign: HashMap<TraceId, u8>,
    recheck_at: Option<Instant>,
    /// Hand-overs of this shard not finished yet.
    in_flight: TaskTracker,
    /// How long the shutdown hand-over may take.
    shutdown_within: Duration,
}

impl ShardHandover {
    pub(super) fn new(
        processor: &str,
        view: watch::Receiver<Arc<View>>,
        imports: mpsc::Receiver<Import>,
        forwarder: mpsc::UnboundedSender<Outgoing>,
        shutdown_within: Duration,
    ) -> ShardHandover {
        let (returns_tx, returns) = mpsc::unbounded_channel();
        let current = view.borrow().clone();
        ShardHandover {
            processor: processor.to_string(),
            current,
            view,
            view_open: true,
            imports,
            imports_open: true,
            returns_tx,
            returns,
            forwarder,
            foreign: HashMap::new(),
            recheck_at: None,
            in_flight: TaskTracker::new(),
            shutdown_within,
        }
    }

    /// Waits for the next thing hand-over must act on.
    pub(in crate::processor::tail_sampling) async fn next_event(&mut self) -> Event {
        loop {
            let recheck = self.recheck_at;
            tokio::select! {
                biased;
                changed = self.view.changed(), if self.view_open => match changed {
                    Ok(()) => return Event::ViewChanged,
                    // The follower stopped: the last view stays.
                    Err(_) => self.view_open = false,
                },
                Some(import) = self.returns.recv() => return Event::Import(import),
                import = self.imports.recv(), if self.imports_open => match import {
                    Some(import) => return Event::Import(import),
                    None => self.imports_open = false,
                },
                _ = sleep_until(recheck) => return Event::Recheck,
            }
        }
    }

    /// The spans of `work` to take here; those of traces owned elsewhere
    /// that this shard holds nothing of go to their owner, and their ids to
    /// `gone` (for the journal: their spans are not this gateway's).
    pub(in crate::processor::tail_sampling) fn divert(
        &mut self,
        work: Work,
        shard: &TraceShard,
        now: Duration,
        gone: &mut Vec<TraceId>,
    ) -> Option<Work> {
        if !self.current.is_active() {
            return Some(work);
        }
        let batch = work.batch.clone();
        let spans = batch.spans();
        let all = 0..spans.len() as u32;
        let indices: Box<dyn Iterator<Item = u32>> = match &work.spans {
            None => Box::new(all),
            Some(s) => Box::new(s.iter().copied()),
        };
        // Per trace leaving: its owner and its spans.
        let mut away: HashMap<TraceId, (String, Vec<u32>)> = HashMap::new();
        let mut last: Option<(TraceId, bool)> = None;
        for i in indices {
            let id = spans[i as usize].trace_id;
            let leaves = match last {
                Some((l, leaves)) if l == id => leaves,
                _ => {
                    // Owned here (the usual case) needs no look-up.
                    let owner = self.current.elsewhere(&id).filter(|_| !shard.knows(&id));
                    if let Some(owner) = owner {
                        away.entry(id)
                            .or_insert_with(|| (owner.to_string(), Vec::new()));
                    }
                    let leaves = owner.is_some();
                    last = Some((id, leaves));
                    leaves
                }
            };
            if leaves {
                if let Some((_, v)) = away.get_mut(&id) {
                    v.push(i);
                }
            }
        }
        if away.is_empty() {
            return Some(work);
        }
        let keep: Vec<u32> = match &work.spans {
            None => (0..spans.len() as u32)
                .filter(|&i| !away.contains_key(&spans[i as usize].trace_id))
                .collect(),
            Some(s) => s
                .iter()
                .copied()
                .filter(|&i| !away.contains_key(&spans[i as usize].trace_id))
                .collect(),
        };
        let mut by_owner: HashMap<String, Vec<Moving>> = HashMap::new();
        gone.extend(away.keys());
        for (id, (owner, indices)) in away {
            by_owner.entry(owner).or_default().push(Moving {
                trace_id: id,
                first_seen: now,
                hops: 1,
                spans: batch.select(&indices),
            });
        }
        for (to, traces) in by_owner {
            self.send(to, Reason::NotOwner, traces, Vec::new());
        }
        (!keep.is_empty()).then_some(Work {
            batch: work.batch,
            spans: Some(keep),
            pin: work.pin,
        })
    }

    /// The members changed: hands over what moved away (what leaves the
    /// shard is listed in `out`, see [`TraceShard::take_pending_where`]).
    pub(in crate::processor::tail_sampling) fn on_view_changed(
        &mut self,
        shard: &mut TraceShard,
        out: &mut Released,
    ) {
        let new = self.view.borrow_and_update().clone();
        let old = std::mem::replace(&mut self.current, new.clone());
        self.hand_over(shard, &old, &new, Reason::Membership, out);
        // What stays foreign is looked at again soon.
        let owned: Vec<TraceId> = self
            .foreign
            .keys()
            .filter(|id| new.owns(id))
            .copied()
            .collect();
        for id in owned {
            self.foreign.remove(&id);
        }
    }

    /// Hands foreign traces on to their owners, as the members now stand.
    pub(in crate::processor::tail_sampling) fn on_recheck(
        &mut self,
        shard: &mut TraceShard,
        out: &mut Released,
    ) {
        self.recheck_at = None;
        let view = self.current.clone();
        self.foreign
            .retain(|id, _| shard.is_pending(id) && !view.owns(id));
        if self.foreign.is_empty() {
            return;
        }
        let foreign = &self.foreign;
        let mut taken = Vec::new();
        shard.take_pending_where(|id| foreign.contains_key(id), &mut taken, out);
        self.send_taken(&view, taken, Vec::new(), Reason::Recheck);
    }

    /// After spans of `arrivals`' traces were taken in: the ones pending
    /// here that this gateway does not own are foreign.
    pub(in crate::processor::tail_sampling) fn mark_foreign(
        &mut self,
        shard: &TraceShard,
        arrivals: &HashMap<TraceId, Arrival>,
    ) {
        for (id, arrival) in arrivals {
            if !shard.is_pending(id) || self.current.owns(id) {
                continue;
            }
            if arrival.hops >= MAX_HOPS {
                // Passed around long enough: decided here.
                self.foreign.remove(id);
                metrics::counter!(m::HANDOVER_FAILED_SPANS, "processor" => self.processor.clone(), "reason" => "hop_limit")
                    .increment(shard.aggregates(id).map_or(0, |a| a.span_count));
                continue;
            }
            self.foreign.insert(*id, arrival.hops);
            if self.recheck_at.is_none() {
                self.recheck_at = Some(Instant::now() + RECHECK_EVERY);
            }
        }
    }

    /// Shutdown, once no more work comes: what other gateways handed over
    /// and is still queued. Hand-overs that come later are refused (their
    /// senders keep their traces).
    pub(in crate::processor::tail_sampling) async fn last_imports(&mut self) -> Vec<Import> {
        self.imports.close();
        let mut imports = Vec::new();
        while let Some(import) = self.imports.recv().await {
            imports.push(import);
        }
        imports
    }

    /// Shutdown: hands every pending trace, and the decisions of the trace
    /// ids it owned, to the members without this gateway, and waits (at
    /// most the configured retry time) for every hand-over of the shard to
    /// finish. Returns what came back, for the caller to take in and
    /// decide here.
    pub(in crate::processor::tail_sampling) async fn hand_over_all(
        &mut self,
        shard: &mut TraceShard,
        out: &mut Released,
    ) -> Vec<Import> {
        let old = self.current.clone();
        let new = Arc::new(old.without_me());
        self.hand_over(shard, &old, &new, Reason::Shutdown, out);
        self.current = new;
        self.in_flight.close();
        if tokio::time::timeout(self.shutdown_within, self.in_flight.wait())
            .await
            .is_err()
        {
            tracing::warn!(processor = %self.processor, "hand-overs at shutdown did not finish in time");
        }
        let mut returned = Vec::new();
        while let Ok(import) = self.returns.try_recv() {
            returned.push(import);
        }
        returned
    }

    /// Hands the pending traces owned elsewhere under `new`, and the
    /// decisions of trace ids owned here under `old` and elsewhere under
    /// `new`, to their owners under `new`.
    fn hand_over(
        &mut self,
        shard: &mut TraceShard,
        old: &View,
        new: &View,
        reason: Reason,
        out: &mut Released,
    ) {
        if !new.is_active() {
            // Nobody to hand to: everything stays.
            return;
        }
        let mut taken = Vec::new();
        shard.take_pending_where(|id| !new.owns(id), &mut taken, out);
        let mut decisions = Vec::new();
        shard.decisions_where(|id| old.owns(id) && !new.owns(id), &mut decisions);
        self.send_taken(new, taken, decisions, reason);
    }

    /// Sends `taken` and `decisions` to their owners under `view`.
    fn send_taken(
        &mut self,
        view: &View,
        taken: Vec<PendingTrace>,
        decisions: Vec<KnownDecision>,
        reason: Reason,
    ) {
        let mut by_owner: HashMap<String, (Vec<Moving>, Vec<KnownDecision>)> = HashMap::new();
        for t in taken {
            let Some(owner) = view.elsewhere(&t.trace_id) else {
                continue;
            };
            let hops = self
                .foreign
                .remove(&t.trace_id)
                .unwrap_or(0)
                .saturating_add(1);
            by_owner
                .entry(owner.to_string())
                .or_default()
                .0
                .push(Moving {
                    trace_id: t.trace_id,
                    first_seen: t.first_seen,
                    hops,
                    spans: t.spans,
                });
        }
        for d in decisions {
            if let Some(owner) = view.elsewhere(&d.trace_id) {
                by_owner.entry(owner.to_string()).or_default().1.push(d);
            }
        }
        for (to, (traces, decisions)) in by_owner {
            self.send(to, reason, traces, decisions);
        }
    }

    fn send(&self, to: String, reason: Reason, traces: Vec<Moving>, decisions: Vec<KnownDecision>) {
        let outgoing = Outgoing {
            to,
            reason,
            traces,
            decisions,
            back: self.returns_tx.clone(),
            in_flight: self.in_flight.token(),
        };
        if let Err(mpsc::error::SendError(outgoing)) = self.forwarder.send(outgoing) {
            // The forwarder is gone (it ends only after the workers): take
            // the traces back.
            outgoing.fail(
                "shutting_down",
                "the forwarder has stopped",
                &self.processor,
            );
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
