//! A set of `u64`s kept as disjoint, non-touching half-open ranges: the
//! acknowledged sequence numbers, where a long run costs one entry.

use std::collections::BTreeMap;
use std::ops::Range;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RangeSet {
    /// start → end (exclusive); no two ranges overlap or touch.
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// Adds `range`; returns how many numbers were not in the set before.
    pub(crate) fn insert(&mut self, range: Range<u64>) -> u64 {
        if range.start >= range.end {
            return 0;
        }
        let (mut start, mut end) = (range.start, range.end);
        let mut covered_before = 0;
        // A range that starts at or before `start` and reaches it merges.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            if e >= start {
                covered_before += e.min(end) - start;
                start = s;
                end = end.max(e);
                self.ranges.remove(&s);
            }
        }
        // Ranges that start inside (or touch the end of) the new one merge.
        while let Some((&s, &e)) = self.ranges.range(start..=end).next() {
            covered_before += e.min(range.end).saturating_sub(s.max(range.start));
            end = end.max(e);
            self.ranges.remove(&s);
        }
        self.ranges.insert(start, end);
        (range.end - range.start) - covered_before
    }

    pub(crate) fn contains(&self, x: u64) -> bool {
        self.ranges
            .range(..=x)
            .next_back()
            .is_some_and(|(_, &e)| x < e)
    }

    /// Whether every number of `range` is in the set.
    pub(crate) fn covers(&self, range: Range<u64>) -> bool {
        if range.start >= range.end {
            return true;
        }
        self.ranges
            .range(..=range.start)
            .next_back()
            .is_some_and(|(_, &e)| range.end <= e)
    }

    /// How many numbers of `range` are not in the set.
    pub(crate) fn missing(&self, range: Range<u64>) -> u64 {
        if range.start >= range.end {
            return 0;
        }
        let mut covered = 0;
        let first = self
            .ranges
            .range(..=range.start)
            .next_back()
            .map(|(&s, &e)| s..e);
        let rest = self
            .ranges
            .range(range.start + 1..range.end)
            .map(|(&s, &e)| s..e);
        for r in first.into_iter().chain(rest) {
            covered += r
                .end
                .min(range.end)
                .saturating_sub(r.start.max(range.start));
        }
        (range.end - range.start) - covered
    }

    /// The first number at or after `from` that is not in the set.
    pub(crate) fn first_gap(&self, from: u64) -> u64 {
        match self.ranges.range(..=from).next_back() {
            Some((_, &e)) if from < e => e,
            _ => from,
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.ranges.iter().map(|(&s, &e)| s..e)
    }

    /// The ranges held.
    pub(crate) fn len(&self) -> usize {
        self.ranges.len()
    }

    /// The end of the last range, or 0.
    pub(crate) fn max_end(&self) -> u64 {
        self.ranges.values().next_back().copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn behaves_as_a_set_of_numbers(ops in proptest::collection::vec((0u64..200, 0u64..20), 0..60)) {
            let mut set = RangeSet::default();
            let mut model = BTreeSet::new();
            for (start, len) in ops {
                let new = set.insert(start..start + len);
                let before = model.len();
                model.extend(start..start + len);
                prop_assert_eq!(new as usize, model.len() - before);
                // Disjoint and non-touching.
                let ranges: Vec<_> = set.iter().collect();
                for w in ranges.windows(2) {
                    prop_assert!(w[0].end < w[1].start);
                }
            }
            for x in 0..230 {
                prop_assert_eq!(set.contains(x), model.contains(&x));
                let gap = (x..).find(|y| !model.contains(y)).unwrap();
                prop_assert_eq!(set.first_gap(x), gap);
                prop_assert_eq!(set.covers(x..x + 3), (x..x + 3).all(|y| model.contains(&y)));
                let missing = (x..x + 25).filter(|y| !model.contains(y)).count() as u64;
                prop_assert_eq!(set.missing(x..x + 25), missing);
            }
        }
    }
}
