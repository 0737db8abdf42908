//! filter / select / concat / split.

use prost::Message;

use super::*;

fn sample() -> (ExportTraceServiceRequest, SpanBatch) {
    let req = request(vec![
        (
            vec![str_kv("service.name", "a")],
            vec![
                vec![span(1, 1, "a1"), span(1, 2, "a2"), span(2, 3, "a3")],
                vec![span(3, 4, "a4")],
            ],
        ),
        (
            vec![str_kv("service.name", "b")],
            vec![vec![span(4, 5, "b1"), span(1, 6, "b2")]],
        ),
    ]);
    let batch = scan_request(&req);
    (req, batch)
}

/// The request prost would produce from `req` keeping spans by flat index,
/// dropping resources and scopes left empty.
fn expected_subset(req: &ExportTraceServiceRequest, keep: &[usize]) -> ExportTraceServiceRequest {
    let mut i = 0;
    let mut out = req.clone();
    for rs in &mut out.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans.retain(|_| {
                let k = keep.contains(&i);
                i += 1;
                k
            });
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    out.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
    out
}

#[test]
fn filter_keeps_matching_spans_with_their_resource_and_scope() {
    let (req, batch) = sample();
    let kept = batch.filter(|s| s.trace_id == [1; 16]);
    assert_eq!(kept.len(), 3);
    assert_eq!(kept.to_request(), expected_subset(&req, &[0, 1, 5]));
    assert_index_consistent(&kept);
    assert_eq!(kept.service_name(0), Some("a"));
    assert_eq!(kept.service_name(2), Some("b"));
    assert_eq!(kept.resources().len(), 2);
    assert_eq!(kept.scopes().len(), 2);
}

#[test]
fn keeping_everything_shares_the_bytes() {
    let (_, batch) = sample();
    let all = batch.filter(|_| true);
    assert_eq!(all.bytes().as_ptr(), batch.bytes().as_ptr());
    let all = batch.select(&[5, 4, 3, 2, 1, 0, 0]);
    assert_eq!(all.bytes().as_ptr(), batch.bytes().as_ptr());
    assert_eq!(all.spans(), batch.spans());
}

#[test]
fn keeping_nothing_is_an_empty_valid_request() {
    let (_, batch) = sample();
    let none = batch.filter(|_| false);
    assert!(none.is_empty());
    assert_eq!(none.encoded_len(), 0);
    assert!(none.resources().is_empty());
    assert_eq!(none.to_request(), ExportTraceServiceRequest::default());
    assert!(batch.select(&[]).is_empty());
}

#[test]
fn select_ignores_order_duplicates_and_out_of_range_indices() {
    let (req, batch) = sample();
    let picked = batch.select(&[5, 99, 2, 2, u32::MAX, 0]);
    assert_eq!(picked.to_request(), expected_subset(&req, &[0, 2, 5]));
    assert_index_consistent(&picked);
}

#[test]
fn select_resources_keeps_whole_resources_in_the_batchs_order() {
    let (req, batch) = sample();
    let second = batch.select_resources(&[1, 7]);
    assert_eq!(second.to_request(), expected_subset(&req, &[4, 5]));
    assert_index_consistent(&second);
    let both = batch.select_resources(&[1, 0]);
    assert_eq!(both.bytes().as_ptr(), batch.bytes().as_ptr());
    assert!(batch.select_resources(&[]).is_empty());
    // A resource without spans contributes nothing.
    let bare = scan_request(&request(vec![
        (vec![str_kv("service.name", "empty")], vec![]),
        (
            vec![str_kv("service.name", "c")],
            vec![vec![span(9, 9, "c1")]],
        ),
    ]));
    assert!(bare.select_resources(&[0]).is_empty());
    assert_eq!(bare.select_resources(&[0, 1]).len(), 1);
}

#[test]
fn a_subset_copies_instead_of_pinning_the_request() {
    let (_, batch) = sample();
    let one = batch.select(&[3]);
    let (lo, hi) = (
        batch.bytes().as_ptr() as usize,
        batch.bytes().as_ptr() as usize + batch.encoded_len(),
    );
    let p = one.bytes().as_ptr() as usize;
    assert!(p < lo || p >= hi);
    assert!(one.encoded_len() < batch.encoded_len());
}

#[test]
fn subsets_of_subsets_stay_consistent() {
    let (req, batch) = sample();
    let first = batch.select(&[0, 2, 3, 5]);
    let second = first.select(&[1, 3]);
    assert_eq!(second.to_request(), expected_subset(&req, &[2, 5]));
    assert_index_consistent(&second);
}

/// What the load-balancing exporter does with a batch: every span lands in
/// exactly one part, in order, with its resource and scope.
#[test]
fn partition_puts_every_span_in_its_part_once() {
    let (req, batch) = sample();
    // By trace id: traces 1 and 4 to part 0, trace 3 to part 1, trace 2 to part 2.
    let parts = batch.partition(3, |_, s| match s.trace_id[0] {
        1 | 4 => 0,
        2 => 2,
        _ => 1,
    });
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0].to_request(), expected_subset(&req, &[0, 1, 4, 5]));
    assert_eq!(parts[1].to_request(), expected_subset(&req, &[3]));
    assert_eq!(parts[2].to_request(), expected_subset(&req, &[2]));
    for part in &parts {
        assert_index_consistent(part);
    }
    assert_eq!(parts.iter().map(SpanBatch::len).sum::<usize>(), batch.len());

    // A part that takes everything shares the bytes; the others are empty.
    let whole = batch.partition(4, |_, _| 2);
    assert_eq!(whole[2].bytes().as_ptr(), batch.bytes().as_ptr());
    assert!(whole[0].is_empty() && whole[1].is_empty() && whole[3].is_empty());
    assert_eq!(whole[0].encoded_len(), 0);
    // The span index is passed along.
    let by_index = batch.partition(2, |i, _| i % 2);
    assert_eq!(by_index[0].to_request(), expected_subset(&req, &[0, 2, 4]));
    assert_eq!(by_index[1].to_request(), expected_subset(&req, &[1, 3, 5]));
    assert!(SpanBatch::default()
        .partition(2, |_, _| 0)
        .iter()
        .all(SpanBatch::is_empty));
}

#[test]
fn concat_joins_requests_and_shifts_the_index() {
    let (req, batch) = sample();
    let other = scan_request(&request(vec![(
        vec![str_kv("service.name", "c")],
        vec![vec![span(9, 9, "c1")]],
    )]));
    let joined = SpanBatch::concat(&[batch.clone(), other.clone(), batch.clone()]);
    assert_eq!(joined.len(), 2 * batch.len() + 1);
    assert_eq!(joined.resources().len(), 5);
    assert_index_consistent(&joined);
    let decoded = joined.to_request();
    assert_eq!(decoded.resource_spans.len(), 5);
    assert_eq!(decoded.resource_spans[0..2], req.resource_spans[..]);
    assert_eq!(joined.service_name(6), Some("c"));
    assert_eq!(joined.span_name(7), "a1");
    // The shifted index supports subsets.
    let tail = joined.select(&[6, 12]);
    assert_eq!(tail.len(), 2);
    assert_eq!(tail.span_name(0), "c1");
    assert_eq!(tail.span_name(1), "b2");
    assert_index_consistent(&tail);

    assert!(SpanBatch::concat(&[]).is_empty());
    assert_eq!(
        SpanBatch::concat(std::slice::from_ref(&other)).bytes(),
        other.bytes()
    );
}

#[test]
fn concat_keeps_the_parts_buffers_until_something_reads_the_request_whole() {
    let (_, batch) = sample();
    let other = scan_request(&request(vec![(
        vec![str_kv("service.name", "c")],
        vec![vec![span(9, 9, "c1")]],
    )]));
    let joined = SpanBatch::concat(&[batch.clone(), other.clone(), SpanBatch::default()]);
    let expected = [&batch.bytes()[..], &other.bytes()[..]].concat();
    assert_eq!(joined.encoded_len(), expected.len());
    // Not joined: the segments are the parts' own buffers, in order.
    let segments = joined.segments();
    assert_eq!(segments.len(), 2, "the empty part adds no segment");
    assert_eq!(segments[0].as_ptr(), batch.bytes().as_ptr());
    assert_eq!(segments[1].as_ptr(), other.bytes().as_ptr());
    // A concatenation of concatenations keeps every original buffer.
    let twice = SpanBatch::concat(&[joined.clone(), batch.clone()]);
    assert_eq!(twice.segments().len(), 3);
    assert_eq!(twice.segments()[2].as_ptr(), batch.bytes().as_ptr());
    // Reading it whole joins it once, into exactly the concatenated bytes;
    // from then on it is that one buffer.
    assert_eq!(joined.bytes()[..], expected[..]);
    let at = joined.bytes().as_ptr();
    assert_eq!(joined.bytes().as_ptr(), at);
    assert_eq!(joined.segments().len(), 1);
    assert_eq!(joined.segments()[0].as_ptr(), at);
    // A clone made before the join is still segmented and reads the same.
    assert_eq!(
        twice.bytes()[..],
        [&expected[..], &batch.bytes()[..]].concat()[..]
    );
    assert_index_consistent(&twice);
    // A batch that was scanned is one segment, its own buffer.
    assert_eq!(batch.segments().len(), 1);
    assert_eq!(batch.segments()[0].as_ptr(), batch.bytes().as_ptr());
    assert!(SpanBatch::default().segments().is_empty());
}

#[test]
fn split_makes_ordered_chunks_of_at_most_the_limit() {
    let (req, batch) = sample();
    for max in 1..=7 {
        let chunks = batch.split(max);
        assert_eq!(chunks.len(), batch.len().div_ceil(max), "max {max}");
        assert!(chunks.iter().all(|c| c.len() <= max && !c.is_empty()));
        for c in &chunks {
            assert_index_consistent(c);
        }
        let joined = SpanBatch::concat(&chunks);
        assert_eq!(
            flatten(&joined.to_request()),
            flatten(&req),
            "max {max}: concat(split) keeps every span with its resource and scope"
        );
    }
    assert_eq!(batch.split(0).len(), 1);
    assert_eq!(batch.split(100)[0].bytes().as_ptr(), batch.bytes().as_ptr());
}

/// Non-span fields sitting between spans, and non-scope fields between
/// scopes: prost never writes these, other encoders may.
fn interleaved() -> (Vec<u8>, SpanBatch) {
    let span_bytes = |t: u8, name: &str| span(t, t, name).encode_to_vec();
    let scope_a = Pb::new()
        .len(2, &span_bytes(1, "s1"))
        .len(3, b"https://scope-schema") // schema_url between spans
        .len(2, &span_bytes(2, "s2"))
        .varint(99, 7) // unknown between spans
        .len(2, &span_bytes(3, "s3"))
        .msg(1, Pb::new().len(1, b"lib-a")); // scope after its spans
    let scope_b = Pb::new().len(2, &span_bytes(4, "s4"));
    let resource = Resource {
        attributes: vec![str_kv("service.name", "svc")],
        ..Default::default()
    }
    .encode_to_vec();
    let rs = Pb::new()
        .msg(2, scope_a)
        .len(1, &resource) // resource between scopes
        .len(3, b"https://resource-schema")
        .msg(2, scope_b)
        .fixed32(77, 1);
    let req = Pb::new().msg(1, rs);
    let batch = SpanBatch::scan(req.bytes()).unwrap();
    (req.0, batch)
}

#[test]
fn interleaved_layouts_are_detected() {
    let (_, batch) = interleaved();
    assert!(batch.scopes()[0].layout.interleaved);
    assert!(!batch.scopes()[1].layout.interleaved);
    assert!(batch.resources()[0].layout.interleaved);
}

#[test]
fn interleaved_layouts_re_encode_every_subset_exactly() {
    let (bytes, batch) = interleaved();
    let req = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
    assert_index_consistent(&batch);
    assert_eq!(batch.service_name(0), Some("svc"));
    for mask in 0u32..16 {
        let keep: Vec<usize> = (0..4).filter(|i| mask & (1 << i) != 0).collect();
        let idx: Vec<u32> = keep.iter().map(|&i| i as u32).collect();
        let subset = batch.select(&idx);
        assert_eq!(
            subset.to_request(),
            expected_subset(&req, &keep),
            "mask {mask:b}"
        );
        assert_index_consistent(&subset);
        if !keep.is_empty() {
            assert_eq!(subset.service_name(0), Some("svc"));
            let r = subset.resources()[0].resource.clone().unwrap();
            let res = Resource::decode(&subset.bytes()[r.start as usize..r.end as usize]);
            assert_eq!(res.unwrap().attributes[0].key, "service.name");
        }
        // Subsets of the subset still work from the re-encoded layout.
        if subset.len() > 1 {
            let last = subset.select(&[subset.len() as u32 - 1]);
            assert_index_consistent(&last);
        }
    }
}

#[test]
fn copied_re_encodes_everything_into_a_new_buffer() {
    let (req, batch) = sample();
    let copy = batch.copied();
    assert_ne!(copy.bytes().as_ptr(), batch.bytes().as_ptr());
    assert_eq!(copy.to_request(), req);
    assert_eq!(copy.spans().len(), batch.len());
    assert_index_consistent(&copy);
    // An empty resource is left out of the copy.
    let with_empty = SpanBatch::concat(&[
        batch.clone(),
        scan_request(&request(vec![(vec![], vec![])])),
    ]);
    assert_eq!(with_empty.resources().len(), 3);
    assert_eq!(with_empty.copied().resources().len(), 2);
    assert!(SpanBatch::default().copied().is_empty());
}
