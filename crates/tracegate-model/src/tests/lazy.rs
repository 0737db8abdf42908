//! The lazily built index: a batch scanned with [`Indexing::Lazy`] only
//! validates and counts, and the index it builds on first use, from its
//! bytes or its segments, is the one an eager scan builds, for single
//! requests and for concatenations of lazy and eager batches alike.

use proptest::collection::vec;
use proptest::prelude::*;

use super::props::{assemble, request_strategy};
use super::*;
use crate::test_support::assert_same_index;
use crate::Indexing;

fn lazy(bytes: &[u8]) -> SpanBatch {
    SpanBatch::scan_with(Bytes::copy_from_slice(bytes), Indexing::Lazy).expect("lazy scan")
}

fn eager(bytes: &[u8]) -> SpanBatch {
    SpanBatch::scan(Bytes::copy_from_slice(bytes)).expect("eager scan")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn lazy_index_equals_the_eager_one(req in request_strategy(), seed in any::<u64>()) {
        // prost's encoding and a hand-made one with unknown and
        // interleaved fields.
        for bytes in [req.encode_to_vec(), assemble(&req, seed)] {
            let (l, e) = (lazy(&bytes), eager(&bytes));
            prop_assert!(!l.is_indexed());
            prop_assert!(e.is_indexed());
            // Counted without the index.
            prop_assert_eq!(l.len(), e.len());
            prop_assert_eq!(l.is_empty(), e.is_empty());
            prop_assert!(!l.is_indexed());
            assert_same_index(&l, &e);
            prop_assert!(l.is_indexed());
            assert_index_consistent(&l);
        }
    }

    /// Concatenations of any mix of lazy and eager batches, nested, index
    /// (on first use or at once) to what concatenating eager ones gives,
    /// and subsets of them are the same.
    #[test]
    fn concat_of_lazy_and_eager_batches_indexes_as_eager(
        reqs in vec(request_strategy(), 1..5),
        lazies in vec(any::<bool>(), 5),
        nest in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let bytes: Vec<Vec<u8>> = reqs.iter().map(|r| r.encode_to_vec()).collect();
        let mixed: Vec<SpanBatch> = bytes
            .iter()
            .zip(&lazies)
            .map(|(b, &l)| if l { lazy(b) } else { eager(b) })
            .collect();
        let all_eager: Vec<SpanBatch> = bytes.iter().map(|b| eager(b)).collect();
        let want = SpanBatch::concat(&all_eager);
        let got = if nest && mixed.len() > 2 {
            // A concatenation of a concatenation keeps the inner one's
            // segments.
            let inner = SpanBatch::concat(&mixed[..2]);
            let mut outer = vec![inner];
            outer.extend(mixed[2..].iter().cloned());
            SpanBatch::concat(&outer)
        } else {
            SpanBatch::concat(&mixed)
        };
        let any_lazy = lazies.iter().take(mixed.len()).any(|&l| l);
        prop_assert_eq!(got.is_indexed(), !any_lazy || mixed.len() == 1 && !lazies[0]);
        prop_assert_eq!(got.len(), want.len());
        let segments = got.segments().len();
        prop_assert_eq!(got.spans(), want.spans());
        // Building the index read the segments where they are.
        prop_assert_eq!(got.segments().len(), segments);
        assert_same_index(&got, &want);
        assert_index_consistent(&got);
        let keep: Vec<u32> = (0..got.len() as u32).filter(|i| (seed >> (i % 64)) & 1 == 1).collect();
        prop_assert_eq!(got.select(&keep).bytes().clone(), want.select(&keep).bytes().clone());
        prop_assert_eq!(got.split(3).len(), want.split(3).len());
    }
}

#[test]
fn a_lazy_concatenation_indexes_without_joining_its_parts() {
    let a = request(vec![(
        vec![str_kv("service.name", "a")],
        vec![vec![span(1, 1, "x")]],
    )]);
    let b = request(vec![(
        vec![str_kv("service.name", "b")],
        vec![vec![span(2, 2, "y"), span(2, 3, "z")]],
    )]);
    let (ea, eb) = (a.encode_to_vec(), b.encode_to_vec());
    let joined = SpanBatch::concat(&[lazy(&ea), lazy(&eb)]);
    assert!(!joined.is_indexed());
    assert_eq!(joined.len(), 3);
    assert_eq!(joined.segments().len(), 2);
    assert_eq!(joined.spans()[2].span_id, [3; 8]);
    assert!(joined.is_indexed());
    assert_eq!(
        joined.segments().len(),
        2,
        "reading the index joined the parts"
    );
    // Attributes are read from the request as one buffer.
    assert_eq!(joined.service_name(2), Some("b"));
    assert_eq!(joined.span_name(1), "y");
    assert_same_index(&joined, &SpanBatch::concat(&[eager(&ea), eager(&eb)]));
}

#[test]
fn changing_a_lazy_batch_in_place_builds_its_index_first() {
    let req = request(vec![
        (
            vec![str_kv("service.name", "a")],
            vec![vec![span(1, 1, "x")]],
        ),
        (vec![], vec![vec![span(2, 2, "y")], vec![span(2, 3, "z")]]),
    ]);
    let bytes = req.encode_to_vec();
    let attributes = crate::ResourceAttributes::new([str_kv("host.name", "h")]);
    let from_lazy = lazy(&bytes).merge_resource_attributes(&attributes, false);
    let from_eager = eager(&bytes).merge_resource_attributes(&attributes, false);
    assert_same_index(&from_lazy, &from_eager);
    assert_eq!(
        from_lazy.resource_attribute(2, "host.name"),
        from_eager.resource_attribute(2, "host.name")
    );
    assert_index_consistent(&from_lazy);
}

#[test]
fn an_empty_lazy_batch_has_an_empty_index() {
    let batch = lazy(&[]);
    assert!(batch.is_empty());
    assert!(batch.spans().is_empty() && batch.resources().is_empty());
    assert!(SpanBatch::default().spans().is_empty());
}
