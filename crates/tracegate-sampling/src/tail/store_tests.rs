//! Span bodies held as slices of the request buffers they arrived in
//! (store.rs): what a trace gives back, and when a buffer is let go.

use std::time::Duration;

use bytes::Bytes;
use tracegate_model::SpanBatch;

use super::tests::{batch, keep_errors, policies, s, secs, settings, span, tid, SpanSpec};
use super::*;

fn keep_all() -> PolicySet {
    policies(
        serde_json::json!([{"name": "all", "type": "always_sample"}]),
        false,
    )
}

/// Span `n` of trace `t`, with a body of its own and one of two resources.
fn spec(t: u64, n: u8) -> SpanSpec {
    span(tid(t), n)
        .res(
            "service.name",
            s(if t.is_multiple_of(2) { "even" } else { "odd" }),
        )
        .attr("step", s(&format!("trace {t} span {n}")))
}

/// Three requests: the first with spans of traces 0..3, the others with
/// spans of traces 0..6, the traces' spans interleaved.
fn requests() -> Vec<SpanBatch> {
    (0..3u8)
        .map(|r| {
            let traces = if r == 0 { 0..3 } else { 0..6 };
            let spans: Vec<SpanSpec> = (0..2u8)
                .flat_map(|k| traces.clone().map(move |t| spec(t, 2 * r + k + 1)))
                .collect();
            batch(&spans)
        })
        .collect()
}

/// The span bodies of trace `t` in `batches`, in arrival order.
fn bodies_of(batches: &[SpanBatch], t: u64) -> Vec<Vec<u8>> {
    batches
        .iter()
        .flat_map(|b| {
            b.spans()
                .iter()
                .filter(move |s| s.trace_id == tid(t))
                .map(move |s| b.bytes()[s.span.start as usize..s.span.end as usize].to_vec())
        })
        .collect()
}

/// Trace `t`'s requests arrive at 0 s (traces 0..3) and 1 s (3..6), then
/// 2 s; with `pack` the bodies are copied into packed blocks at 1.5 s and
/// 2.5 s.
fn take_in(shard: &mut TraceShard, batches: &[SpanBatch], pack: bool, set: &mut PolicySet) {
    let mut out = Released::default();
    for (at, b) in batches.iter().enumerate() {
        shard.insert(b, secs(at as u64), set, &mut out);
        if pack {
            shard.poll(secs(at as u64) + Duration::from_millis(500), set, &mut out);
        }
    }
    assert!(out.decided.is_empty());
}

#[test]
fn slices_give_back_the_bytes_copies_did() {
    let mut set = keep_all();
    let sliced_settings = TraceBufferSettings {
        pack_spans: false,
        ..settings()
    };
    let mut sliced = TraceShard::new(sliced_settings);
    // Packing copies every body out of its request (into stored blocks
    // while the dictionary is untrained): the copying path.
    let mut copied = TraceShard::new(settings());
    let batches = requests();
    take_in(&mut sliced, &batches, false, &mut set);
    take_in(&mut copied, &batches, true, &mut set);
    assert_eq!(sliced.request_buffers().0, 3);
    assert_eq!(copied.request_buffers(), (0, 0), "packed traces hold none");
    let bodies: Vec<Vec<Vec<u8>>> = (0..6).map(|t| bodies_of(&batches, t)).collect();
    let buffers: Vec<Bytes> = batches.iter().map(|b| b.bytes().clone()).collect();
    drop(batches);
    let assembled = |shard: &TraceShard, t: u64| shard.assembled(&tid(t)).unwrap();
    for t in 0..6 {
        let a = assembled(&sliced, t);
        assert_eq!(a.bytes(), assembled(&copied, t).bytes(), "trace {t}");
        let got: Vec<Vec<u8>> = a
            .spans()
            .iter()
            .map(|s| a.bytes()[s.span.start as usize..s.span.end as usize].to_vec())
            .collect();
        assert_eq!(
            got, bodies[t as usize],
            "trace {t}: bodies in arrival order"
        );
    }
    // Traces 0..3 are due at 10 s: the first request goes with them, the
    // others stay for traces 3..6, whose bytes are untouched.
    let before: Vec<Vec<u8>> = (3..6)
        .map(|t| assembled(&sliced, t).bytes().to_vec())
        .collect();
    let mut out = Released::default();
    sliced.poll(secs(10), &mut set, &mut out);
    assert_eq!(out.decided.len(), 3);
    assert!(buffers[0].is_unique(), "first request released");
    assert!(!buffers[1].is_unique() && !buffers[2].is_unique());
    assert_eq!(sliced.request_buffers().0, 2);
    let after: Vec<Vec<u8>> = (3..6)
        .map(|t| assembled(&sliced, t).bytes().to_vec())
        .collect();
    assert_eq!(after, before);
    // Same bytes out: every kept trace as the copying shard sends it.
    sliced.poll(secs(11), &mut set, &mut out);
    let mut kept_sliced = std::mem::take(&mut out.sampled);
    copied.poll(secs(11), &mut set, &mut out);
    let mut kept_copied = std::mem::take(&mut out.sampled);
    let key = |b: &SpanBatch| b.spans()[0].trace_id;
    kept_sliced.sort_by_key(key);
    kept_copied.sort_by_key(key);
    assert_eq!(kept_sliced.len(), 6);
    let bytes = |v: &[SpanBatch]| v.iter().map(|b| b.bytes().clone()).collect::<Vec<_>>();
    assert_eq!(bytes(&kept_sliced), bytes(&kept_copied));
    assert!(
        buffers.iter().all(Bytes::is_unique),
        "every request released"
    );
    assert_eq!(sliced.request_buffers(), (0, 0));
    assert_eq!(sliced.buffered_bytes(), 0);
}

#[test]
fn a_request_is_held_and_counted_whole_until_its_last_trace_is_decided() {
    let mut shard = TraceShard::new(TraceBufferSettings {
        pack_spans: false,
        ..settings()
    });
    let mut set = keep_errors();
    let mut out = Released::default();
    // Traces 1 and 2 start in the first request; trace 3 in the second,
    // which also brings trace 2's second span.
    let first = batch(&[spec(1, 1), spec(2, 1)]);
    let second = batch(&[spec(2, 2), spec(3, 1)]);
    let (a, b) = (first.bytes().clone(), second.bytes().clone());
    shard.insert(&first, secs(0), &mut set, &mut out);
    let one = shard.buffered_bytes();
    shard.insert(&second, secs(5), &mut set, &mut out);
    drop((first, second));
    assert!(!a.is_unique() && !b.is_unique());
    // Each request counted whole (the slices are less than that), beside
    // the traces' own index and the headers.
    let (held, counted) = shard.request_buffers();
    assert_eq!(held, 2);
    assert!(counted >= (a.len() + b.len()) as u64, "{counted}");
    assert!(one >= a.len() as u64);
    assert!(shard.buffered_bytes() >= one + b.len() as u64);
    // Traces 1 and 2 are due at 10 s: the first request is free then, the
    // second still holds trace 3.
    shard.poll(secs(10), &mut set, &mut out);
    assert_eq!(out.decided.len(), 2);
    assert!(a.is_unique());
    assert!(!b.is_unique());
    let (held, counted) = shard.request_buffers();
    assert_eq!(held, 1);
    assert!(counted >= b.len() as u64 && counted < (a.len() + b.len()) as u64);
    shard.poll(secs(15), &mut set, &mut out);
    assert!(b.is_unique());
    assert_eq!(shard.request_buffers(), (0, 0));
    assert_eq!(shard.buffered_bytes(), 0);
}

#[test]
fn shards_sharing_a_request_count_it_once_between_them() {
    let shards = 2;
    let mut buffer = TraceBuffer::new(
        &TraceBufferSettings {
            pack_spans: false,
            ..settings()
        },
        shards,
    );
    let mut set = keep_errors();
    let mut out = Released::default();
    let spans: Vec<SpanSpec> = (0..64).map(|t| spec(t, 1)).collect();
    let request = batch(&spans);
    let len = request.bytes().len() as u64;
    buffer.insert(&request, secs(0), &mut set, &mut out);
    let per_shard: Vec<(usize, u64)> = buffer
        .shards()
        .iter()
        .map(|s| s.request_buffers())
        .collect();
    assert!(
        per_shard.iter().all(|&(held, _)| held == 1),
        "{per_shard:?}"
    );
    let counted: u64 = per_shard.iter().map(|&(_, c)| c).sum();
    // Each shard counts its share (and a buffer's fixed cost): together
    // the request once, not once per shard.
    assert!(counted >= len - shards as u64, "{counted} of {len}");
    assert!(counted <= len + 256 * shards as u64, "{counted} of {len}");
    buffer.poll(secs(10), &mut set, &mut out);
    assert!(buffer
        .shards()
        .iter()
        .all(|s| s.request_buffers() == (0, 0)));
    assert_eq!(buffer.buffered_bytes(), 0);
}

#[test]
fn packing_copies_the_bodies_and_lets_the_request_go() {
    let mut shard = TraceShard::new(settings());
    let mut set = keep_all();
    let mut out = Released::default();
    let request = batch(&[spec(1, 1), spec(1, 2)]);
    let buffer = request.bytes().clone();
    let bodies = bodies_of(std::slice::from_ref(&request), 1);
    shard.insert(&request, secs(0), &mut set, &mut out);
    drop(request);
    assert!(!buffer.is_unique());
    shard.poll(secs(0) + Duration::from_millis(250), &mut set, &mut out);
    assert!(buffer.is_unique(), "packed: the request is no longer held");
    assert_eq!(shard.request_buffers(), (0, 0));
    // A late span joins as a slice after the packed ones.
    let late = batch(&[spec(1, 3)]);
    shard.insert(&late, secs(1), &mut set, &mut out);
    assert_eq!(shard.request_buffers().0, 1);
    let mut expected = bodies;
    expected.extend(bodies_of(std::slice::from_ref(&late), 1));
    drop(late);
    shard.poll(secs(10), &mut set, &mut out);
    assert_eq!(out.sampled.len(), 1);
    let kept = &out.sampled[0];
    let got: Vec<Vec<u8>> = kept
        .spans()
        .iter()
        .map(|s| kept.bytes()[s.span.start as usize..s.span.end as usize].to_vec())
        .collect();
    assert_eq!(got, expected);
    assert_eq!(shard.buffered_bytes(), 0);
}

#[test]
fn kept_traces_left_unindexed_send_the_same_bytes_and_spans() {
    let mut set = keep_all();
    let mut eager = TraceShard::new(TraceBufferSettings {
        pack_spans: false,
        ..settings()
    });
    let mut lazy = TraceShard::new(TraceBufferSettings {
        pack_spans: false,
        index_kept: false,
        ..settings()
    });
    let batches = requests();
    take_in(&mut eager, &batches, false, &mut set);
    take_in(&mut lazy, &batches, false, &mut set);
    let mut out = Released::default();
    eager.poll(secs(20), &mut set, &mut out);
    let kept_eager = std::mem::take(&mut out.sampled);
    lazy.poll(secs(20), &mut set, &mut out);
    let kept_lazy = std::mem::take(&mut out.sampled);
    assert_eq!(kept_eager.len(), 6);
    assert_eq!(kept_lazy.len(), 6);
    for (e, l) in kept_eager.iter().zip(&kept_lazy) {
        assert!(e.is_indexed());
        assert!(!l.is_indexed(), "validated, not indexed");
        assert_eq!(l.len(), e.len());
        assert_eq!(l.bytes(), e.bytes());
        // Indexed on first use, as the eager scan indexed it.
        assert_eq!(l.spans(), e.spans());
        assert_eq!(l.scopes(), e.scopes());
        assert_eq!(l.resources(), e.resources());
    }
}
