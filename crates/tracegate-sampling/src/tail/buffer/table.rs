//! A shard's table of traces: a small hash index from trace id to a slot,
//! and the entries themselves in slots that never move.
//!
//! A hash table of whole entries (an entry is a couple of hundred bytes)
//! moves every entry each time it grows and, as its slots are filled at
//! random, has every page of its spare capacity in memory: at the load
//! factor after a growth, half again the entries' size. Here the hash
//! table holds only (trace id, slot), 20 bytes, and is sized up front for
//! the shard's share of `num_traces` (up to [`MAX_PRESIZED`]), so taking
//! a new trace does not rehash; the entries sit in fixed chunks of slots,
//! filled in order and reused as traces leave, so they are never moved
//! and their memory follows the traces held.
//!
//! The decision queues refer to a trace by (slot, seq) (the seq tells a
//! reused slot's new trace from the one a queue entry was made for), so
//! a trace falling due is reached without hashing its id.

use std::collections::HashMap;

use foldhash::fast::RandomState;

use super::Entry;
use crate::tail::TraceId;

/// Slots per chunk.
const CHUNK: usize = 1024;

/// The most traces a shard's index is sized for before any arrives; a
/// larger share of `num_traces` grows it as traces come (a table sized
/// for millions would keep its empty buckets' pages in memory once a few
/// traces touched them).
pub(super) const MAX_PRESIZED: usize = 1 << 18;

#[derive(Debug, Default)]
pub(super) struct Table {
    index: HashMap<TraceId, u32, RandomState>,
    /// Slots, `CHUNK` to a chunk; a chunk's vector is allocated whole and
    /// filled in order, so it never reallocates.
    chunks: Vec<Vec<Option<(TraceId, Entry)>>>,
    /// Slots emptied since, reused first.
    free: Vec<u32>,
}

impl Table {
    /// A table whose index holds `traces` without growing.
    pub(super) fn with_capacity(traces: usize) -> Table {
        Table {
            index: HashMap::with_capacity_and_hasher(
                traces.min(MAX_PRESIZED),
                RandomState::default(),
            ),
            chunks: Vec::new(),
            free: Vec::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub(super) fn slot_of(&self, id: &TraceId) -> Option<u32> {
        self.index.get(id).copied()
    }

    pub(super) fn contains_key(&self, id: &TraceId) -> bool {
        self.index.contains_key(id)
    }

    pub(super) fn get(&self, id: &TraceId) -> Option<&Entry> {
        let slot = self.slot_of(id)?;
        self.at(slot).map(|(_, e)| e)
    }

    /// The trace in `slot`, if any.
    pub(super) fn at(&self, slot: u32) -> Option<(&TraceId, &Entry)> {
        let s = slot as usize;
        let (id, entry) = self.chunks.get(s / CHUNK)?.get(s % CHUNK)?.as_ref()?;
        Some((id, entry))
    }

    pub(super) fn at_mut(&mut self, slot: u32) -> Option<(&TraceId, &mut Entry)> {
        let s = slot as usize;
        let (id, entry) = self
            .chunks
            .get_mut(s / CHUNK)?
            .get_mut(s % CHUNK)?
            .as_mut()?;
        Some((&*id, entry))
    }

    /// The trace in `slot` if it is still the one of `seq`.
    pub(super) fn live(&self, slot: u32, seq: u64) -> Option<(&TraceId, &Entry)> {
        self.at(slot).filter(|(_, e)| e.seq == seq)
    }

    /// Puts `entry` under `id`: in its slot if the id is there (the old
    /// entry is returned), else in a free slot. Returns the slot.
    pub(super) fn insert(&mut self, id: TraceId, entry: Entry) -> (u32, Option<Entry>) {
        if let Some(slot) = self.slot_of(&id) {
            let s = slot as usize;
            let old = self.chunks[s / CHUNK][s % CHUNK].replace((id, entry));
            return (slot, old.map(|(_, e)| e));
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                let s = slot as usize;
                self.chunks[s / CHUNK][s % CHUNK] = Some((id, entry));
                slot
            }
            None => {
                if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
                    self.chunks.push(Vec::with_capacity(CHUNK));
                }
                let last = self.chunks.len() - 1;
                let chunk = &mut self.chunks[last];
                chunk.push(Some((id, entry)));
                (last * CHUNK + chunk.len() - 1) as u32
            }
        };
        self.index.insert(id, slot);
        (slot, None)
    }

    pub(super) fn remove(&mut self, id: &TraceId) -> Option<Entry> {
        let slot = self.index.remove(id)?;
        let s = slot as usize;
        let (_, entry) = self.chunks[s / CHUNK][s % CHUNK].take()?;
        self.free.push(slot);
        Some(entry)
    }

    /// Every trace, in slot order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&TraceId, &Entry)> + '_ {
        self.chunks
            .iter()
            .flatten()
            .filter_map(|s| s.as_ref().map(|(id, e)| (id, e)))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.iter().map(|(_, e)| e)
    }

    /// Gives back the memory of a table emptied by far: the index shrinks
    /// to twice what it holds, and chunks at the end with no trace left go.
    pub(super) fn shrink(&mut self) {
        let len = self.index.len();
        if self.index.capacity() > 4 * len + 1024 {
            self.index.shrink_to(2 * len);
        }
        let mut keep = self.chunks.len();
        while keep > 0 && self.chunks[keep - 1].iter().all(Option::is_none) {
            keep -= 1;
        }
        if keep < self.chunks.len() {
            self.chunks.truncate(keep);
            let end = (keep * CHUNK) as u32;
            self.free.retain(|&s| s < end);
            self.free.shrink_to_fit();
        }
    }

    /// Slots allocated (tests).
    #[cfg(test)]
    pub(super) fn slots(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::State;
    use super::*;

    fn id(n: u8) -> TraceId {
        [n; 16]
    }

    fn entry(seq: u64) -> Entry {
        Entry::empty(seq, Duration::ZERO, State::Pending)
    }

    #[test]
    fn slots_are_reused_and_stale_seqs_are_told_apart() {
        let mut table = Table::with_capacity(4);
        let (a, _) = table.insert(id(1), entry(0));
        let (b, _) = table.insert(id(2), entry(1));
        assert_ne!(a, b);
        assert_eq!(table.len(), 2);
        assert_eq!(table.get(&id(2)).map(|e| e.seq), Some(1));
        // The same id again replaces the entry in its slot.
        let (again, old) = table.insert(id(2), entry(2));
        assert_eq!((again, old.map(|e| e.seq)), (b, Some(1)));
        assert!(table.remove(&id(1)).is_some());
        assert!(table.live(a, 0).is_none());
        let (c, _) = table.insert(id(3), entry(3));
        assert_eq!(c, a, "a freed slot is taken first");
        assert!(table.live(c, 0).is_none(), "the old seq is stale");
        assert_eq!(table.live(c, 3).map(|(id, _)| *id), Some(id(3)));
        assert_eq!(table.slots(), 2);
        let mut ids: Vec<TraceId> = table.iter().map(|(id, _)| *id).collect();
        ids.sort();
        assert_eq!(ids, [id(2), id(3)]);
    }

    #[test]
    fn an_emptied_table_gives_its_chunks_back() {
        let mut table = Table::default();
        let n = 3 * CHUNK + 5;
        for k in 0..n {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&(k as u64).to_le_bytes());
            table.insert(key, entry(k as u64));
        }
        assert_eq!(table.chunks.len(), 4);
        // Keep one trace in the first chunk.
        for k in 1..n {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&(k as u64).to_le_bytes());
            assert!(table.remove(&key).is_some());
        }
        table.shrink();
        assert_eq!(table.chunks.len(), 1);
        assert!(table.free.iter().all(|&s| (s as usize) < CHUNK));
        assert_eq!(table.len(), 1);
        // New traces fill the kept chunk's free slots first.
        let (slot, _) = table.insert(id(9), entry(99));
        assert!((slot as usize) < CHUNK);
    }

    /// What the decision queues rely on when chunks are given back: a
    /// (slot, seq) queued for a trace in a chunk that went names nothing,
    /// both before the slot number is used again and after a later trace
    /// took it.
    #[test]
    fn slots_of_given_back_chunks_name_nothing_and_later_traces_by_their_own_seq() {
        let key = |k: u64| {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&k.to_le_bytes());
            key
        };
        let mut table = Table::default();
        let n = 2 * CHUNK as u64 + 1;
        let slots: Vec<u32> = (0..n).map(|k| table.insert(key(k), entry(k)).0).collect();
        // Everything past the first chunk leaves; a queue would still hold
        // (slot, seq) for the last trace.
        let (gone_slot, gone_seq) = (slots[n as usize - 1], n - 1);
        for k in CHUNK as u64..n {
            assert!(table.remove(&key(k)).is_some());
        }
        table.shrink();
        assert_eq!(table.chunks.len(), 1);
        assert!(table.live(gone_slot, gone_seq).is_none());
        assert!(table.at(gone_slot).is_none());
        // Later traces take the slot numbers again, in order.
        let later: Vec<u32> = (0..=CHUNK as u64)
            .map(|k| table.insert(key(n + k), entry(n + k)).0)
            .collect();
        assert_eq!(later[CHUNK], gone_slot, "the slot number is used again");
        assert!(
            table.live(gone_slot, gone_seq).is_none(),
            "the old seq is stale"
        );
        assert_eq!(
            table.live(gone_slot, n + CHUNK as u64).map(|(id, _)| *id),
            Some(key(n + CHUNK as u64))
        );
        // The traces that stayed are untouched.
        assert_eq!(table.live(slots[0], 0).map(|(id, _)| *id), Some(key(0)));
        assert_eq!(table.len(), CHUNK + CHUNK + 1);
    }
}
