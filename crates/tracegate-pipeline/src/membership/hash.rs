//! Which member owns a routing key: rendezvous (highest random weight)
//! hashing. Every member scores the key and the highest score owns it, so
//!
//! - each member owns 1/N of the keys, with no virtual nodes to tune: the
//!   spread is only as uneven as the sample of keys;
//! - a member that leaves hands on exactly its own keys (1/N), each to the
//!   member that scored second; one that joins takes 1/(N+1), from every
//!   member alike. No other key moves;
//! - members need no order and no numbering: removing one from the middle
//!   of the list moves no more than removing the last.
//!
//! The cost is one 64-bit mix per member per key, which the exporter pays
//! once per trace in a batch. Why this and not a ring or jump hash, and the
//! measured spread and movement: docs/architecture.md, "Membership and
//! consistent hashing".
//!
//! Every process that routes must agree, so nothing here is seeded per
//! process: the scores depend only on the member's `host:port` and the key.

use std::sync::Arc;

/// The 64-bit finalizer of MurmurHash3: a bijection in which every input
/// bit flips each output bit with probability close to 1/2.
#[inline]
fn mix(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// The routing key of a trace id. Client ids need not be random (counters,
/// 64-bit ids padded with zeros), so both halves are mixed.
#[inline]
pub fn trace_id_key(trace_id: &[u8; 16]) -> u64 {
    let (hi, lo) = trace_id.split_at(8);
    let hi = u64::from_be_bytes(hi.try_into().expect("8 bytes"));
    let lo = u64::from_be_bytes(lo.try_into().expect("8 bytes"));
    mix(hi ^ mix(lo ^ 0x9e37_79b9_7f4a_7c15))
}

/// Builds the routing key of a byte string (a service name, a resource's
/// attributes): FNV-1a over the bytes, mixed at the end.
#[derive(Debug, Clone, Copy)]
pub struct KeyHasher(u64);

impl Default for KeyHasher {
    fn default() -> Self {
        KeyHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl KeyHasher {
    #[inline]
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    #[inline]
    pub fn finish(self) -> u64 {
        mix(self.0)
    }
}

/// The routing key of a byte string; see [`KeyHasher`].
pub fn bytes_key(bytes: &[u8]) -> u64 {
    let mut h = KeyHasher::default();
    h.write(bytes);
    h.finish()
}

/// The owners of keys among a set of members.
#[derive(Debug, Clone)]
pub struct Rendezvous {
    members: Arc<[String]>,
    /// One per member: what its scores are drawn from.
    seeds: Box<[u64]>,
}

impl Rendezvous {
    /// The members, as a resolver gives them (sorted, no duplicates; the
    /// order only breaks ties between equal scores, which 64-bit scores
    /// practically never have).
    pub fn new(members: Arc<[String]>) -> Rendezvous {
        let seeds = members
            .iter()
            .map(|m| mix(bytes_key(m.as_bytes())))
            .collect();
        Rendezvous { members, seeds }
    }

    pub fn members(&self) -> &Arc<[String]> {
        &self.members
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The index (into [`Self::members`]) of the member that owns `key`;
    /// `None` when there are no members.
    #[inline]
    pub fn owner(&self, key: u64) -> Option<usize> {
        let mut best: Option<(usize, u64)> = None;
        for (i, &seed) in self.seeds.iter().enumerate() {
            let score = mix(key ^ seed);
            if best.is_none_or(|(_, top)| score > top) {
                best = Some((i, score));
            }
        }
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporter::test_support::TestRng as Rng;

    const SAMPLE: usize = 100_000;

    fn members(names: impl IntoIterator<Item = String>) -> Arc<[String]> {
        let mut names: Vec<String> = names.into_iter().collect();
        names.sort();
        names.into()
    }

    /// Member lists as resolvers produce them: pod IPs behind one port,
    /// hostnames of a StatefulSet, IPv6 addresses.
    fn fleets(n: usize) -> Vec<Arc<[String]>> {
        vec![
            members((0..n).map(|i| format!("10.0.0.{}:4317", i + 1))),
            members((0..n).map(|i| format!("10.244.{}.{}:4317", i % 3, 17 + 11 * i))),
            members((0..n).map(|i| format!("gateway-{i}.gateway.observability:4317"))),
            members((0..n).map(|i| format!("[fd00::{:x}]:4317", i + 1))),
        ]
    }

    /// Random trace ids, and ids a counter made (not random at all).
    fn keys() -> Vec<Vec<u64>> {
        let mut rng = Rng(0x10ad_ba1a);
        let random = (0..SAMPLE).map(|_| trace_id_key(&rng.trace_id())).collect();
        let counted = (0..SAMPLE as u64)
            .map(|i| {
                let mut id = [0u8; 16];
                id[8..].copy_from_slice(&(i + 1).to_be_bytes());
                trace_id_key(&id)
            })
            .collect();
        vec![random, counted]
    }

    fn owners(ring: &Rendezvous, keys: &[u64]) -> Vec<usize> {
        keys.iter().map(|&k| ring.owner(k).unwrap()).collect()
    }

    /// The largest relative deviation of a member's share from 1/N.
    fn worst_share_deviation(ring: &Rendezvous, keys: &[u64]) -> f64 {
        let mut counts = vec![0usize; ring.len()];
        for owner in owners(ring, keys) {
            counts[owner] += 1;
        }
        let fair = keys.len() as f64 / ring.len() as f64;
        counts
            .iter()
            .map(|&c| (c as f64 - fair).abs() / fair)
            .fold(0.0, f64::max)
    }

    /// docs/architecture.md quotes what this and the next test print
    /// (`--nocapture`).
    #[test]
    fn every_member_owns_its_share_within_ten_percent() {
        let mut worst: f64 = 0.0;
        for n in 2..=10 {
            for fleet in fleets(n) {
                let ring = Rendezvous::new(fleet.clone());
                for keys in keys() {
                    let deviation = worst_share_deviation(&ring, &keys);
                    assert!(
                        deviation <= 0.10,
                        "{n} members {fleet:?}: a share is {:.1} % off 1/N",
                        deviation * 100.0
                    );
                    worst = worst.max(deviation);
                }
            }
        }
        eprintln!(
            "rendezvous, N = 2..10, {SAMPLE} trace ids: worst share {:.2} % off 1/N",
            worst * 100.0
        );
    }

    /// A member joining moves 1/(N+1) of the keys (all to it); one leaving
    /// moves its own 1/N. Both must stay under 1.1/N, N the larger count;
    /// and no key moves between two members that stay.
    #[test]
    fn a_membership_change_moves_at_most_its_share() {
        let mut worst: f64 = 0.0;
        // Random trace ids only, and three kinds of fleet: the spread test
        // above covers the rest, and this one must stay quick in a debug
        // build.
        let keys = keys().swap_remove(0);
        for n in 2..=10 {
            for fleet in fleets(n + 1).into_iter().skip(1) {
                let all = Rendezvous::new(fleet.clone());
                let with_all = owners(&all, &keys);
                for leaving in [0, n / 2, n] {
                    let rest: Vec<String> = fleet
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != leaving)
                        .map(|(_, m)| m.clone())
                        .collect();
                    let fewer = Rendezvous::new(rest.into());
                    // Where each of the fewer members sits in `all`.
                    let in_all: Vec<usize> = (0..=n).filter(|&i| i != leaving).collect();
                    let mut changed = 0usize;
                    for (k, &owner) in owners(&fewer, &keys).iter().enumerate() {
                        if in_all[owner] != with_all[k] {
                            // Keys only move to or from the member
                            // that joined or left.
                            assert_eq!(with_all[k], leaving);
                            changed += 1;
                        }
                    }
                    // Joining (n → n+1) and leaving (n+1 → n) move the
                    // same keys, in opposite directions.
                    let moved = changed as f64 / keys.len() as f64 * (n + 1) as f64;
                    assert!(
                        moved <= 1.1,
                        "{fleet:?} with or without #{leaving}: {moved:.3}/N"
                    );
                    worst = worst.max(moved);
                }
            }
        }
        eprintln!(
            "rendezvous, N = 3..11, {SAMPLE} trace ids: a member joining or leaving moves \
             at most {worst:.3}/N of them"
        );
    }

    #[test]
    fn owners_depend_only_on_members_and_key() {
        let fleet = members((0..5).map(|i| format!("10.1.0.{i}:4317")));
        let a = Rendezvous::new(fleet.clone());
        let b = Rendezvous::new(fleet.to_vec().into());
        let mut rng = Rng(7);
        for _ in 0..1000 {
            let key = trace_id_key(&rng.trace_id());
            assert_eq!(a.owner(key), b.owner(key));
        }
        // Fixed values: a change of hash function shows up here, since
        // every process of a fleet must route alike.
        assert_eq!(bytes_key(b""), mix(0xcbf2_9ce4_8422_2325));
        assert_eq!(
            trace_id_key(&[0; 16]),
            mix(mix(0x9e37_79b9_7f4a_7c15)),
            "both halves are mixed"
        );
        assert_eq!(Rendezvous::new(Vec::new().into()).owner(1), None);
        let one = Rendezvous::new(vec!["a:1".to_string()].into());
        assert_eq!(one.owner(rng.next()), Some(0));
    }

    #[test]
    fn key_hasher_is_fnv1a_streamed() {
        let mut h = KeyHasher::default();
        h.write(b"service.name=");
        h.write(b"checkout|");
        assert_eq!(h.finish(), bytes_key(b"service.name=checkout|"));
        assert_ne!(bytes_key(b"a"), bytes_key(b"b"));
    }
}
