//! A small least-recently-used map: the decision caches
//! (`decision_cache.sampled_cache_size` / `non_sampled_cache_size`) and the
//! regex results of `string_attribute`, both LRU in the collector.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use foldhash::fast::RandomState;

/// Recency is a stamp per entry plus a queue of (key, stamp) in use order;
/// stale queue entries are skipped on eviction and compacted away, so every
/// operation is amortised O(1) without a linked list.
#[derive(Debug)]
pub(crate) struct LruMap<K, V> {
    capacity: usize,
    entries: HashMap<K, (V, u64), RandomState>,
    order: VecDeque<(K, u64)>,
    next_stamp: u64,
}

impl<K: Clone + Hash + Eq, V: Clone> LruMap<K, V> {
    /// A map of at most `capacity` entries; 0 holds nothing.
    pub(crate) fn new(capacity: usize) -> LruMap<K, V> {
        LruMap {
            capacity,
            entries: HashMap::default(),
            order: VecDeque::new(),
            next_stamp: 0,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The value for `key`, marking it most recently used.
    pub(crate) fn get<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let stamp = self.next_stamp;
        let (k, entry) = self.entries.get_key_value(key)?;
        let (k, value) = (k.clone(), entry.0.clone());
        self.next_stamp += 1;
        if let Some(entry) = self.entries.get_mut(key) {
            entry.1 = stamp;
        }
        self.order.push_back((k, stamp));
        self.compact();
        Some(value)
    }

    /// Inserts or refreshes `key`, evicting the least recently used entry
    /// when full.
    pub(crate) fn put(&mut self, key: K, value: V) {
        if self.capacity == 0 {
            return;
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let fresh = self.entries.insert(key.clone(), (value, stamp)).is_none();
        self.order.push_back((key, stamp));
        if fresh && self.entries.len() > self.capacity {
            while let Some((old, old_stamp)) = self.order.pop_front() {
                if self.entries.get(&old).is_some_and(|e| e.1 == old_stamp) {
                    self.entries.remove(&old);
                    break;
                }
            }
        }
        self.compact();
    }

    /// Every entry, least recently used first (without touching recency).
    pub(crate) fn iter_oldest_first(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.order.iter().filter_map(|(k, stamp)| {
            let (key, (value, s)) = self.entries.get_key_value(k)?;
            (s == stamp).then_some((key, value))
        })
    }

    /// Whether `key` is held, without marking it used.
    pub(crate) fn contains<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.contains_key(key)
    }

    fn compact(&mut self) {
        if self.order.len() > 2 * self.entries.len() + 32 {
            let entries = &self.entries;
            self.order
                .retain(|(k, stamp)| entries.get(k).is_some_and(|e| e.1 == *stamp));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut lru = LruMap::new(2);
        lru.put(1, "a");
        lru.put(2, "b");
        assert_eq!(lru.get(&1), Some("a"));
        lru.put(3, "c");
        assert_eq!(lru.get(&2), None, "2 was least recently used");
        assert_eq!(lru.get(&1), Some("a"));
        assert_eq!(lru.get(&3), Some("c"));
        assert_eq!(lru.len(), 2);
    }

    #[test]
    fn zero_capacity_holds_nothing() {
        let mut lru = LruMap::new(0);
        lru.put(1, ());
        assert_eq!(lru.get(&1), None);
    }

    #[test]
    fn stays_compact_under_repeated_hits() {
        let mut lru = LruMap::new(4);
        for i in 0..4 {
            lru.put(i, i);
        }
        for round in 0..10_000 {
            assert_eq!(lru.get(&(round % 4)), Some(round % 4));
        }
        assert!(lru.order.len() <= 2 * 4 + 33);
        lru.put(9, 9);
        assert_eq!(lru.len(), 4);
    }
}
