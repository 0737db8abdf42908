//! The direct ingest path (`ingest.rs`) against the owned reference path
//! (prost decode, `to_otlp.rs`, prost encode): random Jaeger requests must
//! give the same OTLP bytes both ways, or both be refused.

use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;

use super::proto::{self, Batch, PostSpansRequest};
use super::{
    otlp_from_post_spans, span_batch_from_batches, span_batch_from_post_spans,
    span_batch_from_post_spans_with,
};
use crate::otlp::ExportTraceServiceRequest;
use crate::Indexing;

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("span.kind".to_string()),
        Just("error".to_string()),
        Just("otel.status_code".to_string()),
        Just("otel.status_description".to_string()),
        Just("http.status_code".to_string()),
        Just("http.status_message".to_string()),
        Just("w3c.tracestate".to_string()),
        Just("otel.scope.name".to_string()),
        Just("otel.scope.version".to_string()),
        Just("event".to_string()),
        Just("hostname".to_string()),
        Just("host.name".to_string()),
        Just("jaeger.version".to_string()),
        Just("service.name".to_string()),
        Just("opencensus.exporterversion".to_string()),
        Just(String::new()),
        "[a-zé.]{1,6}",
    ]
}

fn string_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("client".to_string()),
        Just("server".to_string()),
        Just("producer".to_string()),
        Just("consumer".to_string()),
        Just("internal".to_string()),
        Just("OK".to_string()),
        Just("error".to_string()),
        Just("404".to_string()),
        Just("500".to_string()),
        Just("201".to_string()),
        Just(String::new()),
        ".{0,8}",
    ]
}

fn tag() -> impl Strategy<Value = proto::KeyValue> {
    (
        key(),
        prop_oneof![6 => 0..5i32, 1 => any::<i32>()],
        string_value(),
        any::<bool>(),
        prop_oneof![Just(404i64), Just(503), Just(200), Just(399), any::<i64>()],
        prop_oneof![any::<f64>(), Just(f64::NAN), Just(0.5)],
        vec(any::<u8>(), 0..4),
    )
        .prop_map(
            |(key, v_type, v_str, v_bool, v_int64, v_float64, v_binary)| proto::KeyValue {
                key,
                v_type,
                v_str,
                v_bool,
                v_int64,
                v_float64,
                v_binary,
            },
        )
}

fn id(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => Just(max),
        1 => 0..=max + 1,
    ]
    .prop_flat_map(|len| {
        prop_oneof![
            vec(any::<u8>(), len..=len),
            Just(vec![0u8; len]),
            Just(vec![1u8; len]),
        ]
    })
}

fn time() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    proptest::option::of(
        (
            prop_oneof![any::<i64>(), 0..2_000_000_000i64, -5..5i64],
            prop_oneof![any::<i32>(), 0..1_000_000_000i32],
        )
            .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
    )
}

fn duration() -> impl Strategy<Value = Option<prost_types::Duration>> {
    proptest::option::of(
        (-3..1000i64, any::<i32>())
            .prop_map(|(seconds, nanos)| prost_types::Duration { seconds, nanos }),
    )
}

fn process() -> impl Strategy<Value = proto::Process> {
    (
        prop_oneof![
            Just("svc".to_string()),
            Just("OTLPResourceNoServiceName".to_string()),
            Just(String::new()),
            "[a-z]{1,4}",
        ],
        vec(tag(), 0..4),
    )
        .prop_map(|(service_name, tags)| proto::Process { service_name, tags })
}

fn reference() -> impl Strategy<Value = proto::SpanRef> {
    (id(16), id(8), prop_oneof![4 => 0..2i32, 1 => any::<i32>()]).prop_map(
        |(trace_id, span_id, ref_type)| proto::SpanRef {
            trace_id,
            span_id,
            ref_type,
        },
    )
}

fn span() -> impl Strategy<Value = proto::Span> {
    (
        (
            id(16),
            id(8),
            string_value(),
            vec(reference(), 0..3),
            any::<u32>(),
        ),
        (time(), duration(), vec(tag(), 0..8)),
        vec(
            (time(), vec(tag(), 0..3))
                .prop_map(|(timestamp, fields)| proto::Log { timestamp, fields }),
            0..3,
        ),
        (
            proptest::option::of(process()),
            "[a-z0-9]{0,3}",
            vec(".{0,3}", 0..2),
        ),
        0..8u8,
    )
        .prop_map(
            |(
                (trace_id, span_id, operation_name, references, flags),
                (start_time, duration, tags),
                logs,
                (process, process_id, warnings),
                empty,
            )| {
                if empty == 0 {
                    // A span with nothing but (maybe) a process.
                    return proto::Span {
                        process,
                        ..Default::default()
                    };
                }
                proto::Span {
                    trace_id,
                    span_id,
                    operation_name,
                    references,
                    flags: if empty == 1 { flags } else { 0 },
                    start_time,
                    duration,
                    tags,
                    logs,
                    process,
                    process_id,
                    warnings,
                }
            },
        )
}

fn batch() -> impl Strategy<Value = Option<Batch>> {
    proptest::option::of(
        (vec(span(), 0..5), proptest::option::of(process()))
            .prop_map(|(spans, process)| Batch { spans, process }),
    )
}

/// What the receiver did before: decode, map, encode.
fn owned(bytes: &[u8]) -> Option<Vec<u8>> {
    let request = PostSpansRequest::decode(bytes).ok()?;
    let batch = span_batch_from_batches(request.batch).ok()?;
    Some(batch.bytes().to_vec())
}

fn assert_same(bytes: &[u8]) {
    let want = owned(bytes);
    let got = otlp_from_post_spans(bytes).ok();
    if want != got {
        let show = |b: &Option<Vec<u8>>| {
            b.as_ref()
                .map(|b| format!("{:#?}", ExportTraceServiceRequest::decode(&b[..])))
        };
        panic!(
            "owned {:?}\ndirect {:?}\nrequest {:?}",
            show(&want),
            show(&got),
            PostSpansRequest::decode(bytes)
        );
    }
    let batch = span_batch_from_post_spans(bytes).ok();
    // Lazily the written request is not scanned; its index, built on
    // first use, is the eager one.
    let lazy = span_batch_from_post_spans_with(bytes, Indexing::Lazy).ok();
    if let (Some(eager), Some(lazy)) = (&batch, &lazy) {
        assert!(eager.is_indexed() && !lazy.is_indexed());
        crate::test_support::assert_same_index(lazy, eager);
    }
    assert_eq!(batch.is_some(), lazy.is_some());
    assert_eq!(want, batch.map(|b| b.bytes().to_vec()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn direct_ingest_matches_the_owned_path(batch in batch()) {
        let bytes = PostSpansRequest { batch }.encode_to_vec();
        assert_same(&bytes);
    }

    /// Two encodings back to back are one request to prost: the batches
    /// merge (spans appended, the processes merged).
    #[test]
    fn merged_requests_match_the_owned_path(a in batch(), b in batch()) {
        let mut bytes = PostSpansRequest { batch: a }.encode_to_vec();
        bytes.extend(PostSpansRequest { batch: b }.encode_to_vec());
        assert_same(&bytes);
    }

    /// Spans whose fields are split over two encodings (every singular
    /// field merged, repeated ones appended), and a span's own process
    /// given twice.
    #[test]
    fn merged_spans_match_the_owned_path(a in span(), b in span(), process in proptest::option::of(process())) {
        let mut span = a.encode_to_vec();
        span.extend(b.encode_to_vec());
        let mut batch = Vec::new();
        batch.push(0x0a);
        crate::wire::put_varint(&mut batch, span.len() as u64);
        batch.extend(&span);
        if let Some(process) = process {
            batch.extend(Batch { spans: vec![], process: Some(process) }.encode_to_vec());
        }
        let bytes = PostSpansRequest::default().encode_to_vec().into_iter()
            .chain([0x0a])
            .chain({ let mut l = Vec::new(); crate::wire::put_varint(&mut l, batch.len() as u64); l })
            .chain(batch)
            .collect::<Vec<u8>>();
        assert_same(&bytes);
    }

    /// Whatever the bytes, both paths refuse or take them alike, and
    /// neither panics.
    #[test]
    fn arbitrary_bytes_are_refused_or_taken_alike(bytes in vec(any::<u8>(), 0..48)) {
        assert_same(&bytes);
    }

    /// A request cut short anywhere.
    #[test]
    fn truncated_requests_are_refused_alike(batch in batch(), cut in any::<prop::sample::Index>()) {
        let bytes = PostSpansRequest { batch }.encode_to_vec();
        let cut = cut.index(bytes.len() + 1);
        assert_same(&bytes[..cut]);
    }
}

#[test]
fn invalid_utf8_and_wrong_wire_types_are_malformed() {
    // Batch { spans: [Span { operation_name: 0xff }] }
    let bad_string = [0x0a, 0x05, 0x0a, 0x03, 0x1a, 0x01, 0xff];
    assert!(otlp_from_post_spans(&bad_string).is_err());
    assert!(owned(&bad_string).is_none());
    // Span.flags as a length-delimited field.
    let bad_wire = [0x0a, 0x05, 0x0a, 0x03, 0x2a, 0x01, 0x00];
    assert!(otlp_from_post_spans(&bad_wire).is_err());
    assert!(owned(&bad_wire).is_none());
}

/// The generators above make requests the mapping takes, mostly: the
/// comparison is not only of two refusals.
#[test]
fn most_generated_requests_are_taken() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut taken, mut spans) = (0, 0);
    for _ in 0..300 {
        let batch = batch().new_tree(&mut runner).unwrap().current();
        let bytes = PostSpansRequest { batch }.encode_to_vec();
        if let Ok(b) = span_batch_from_post_spans(&bytes) {
            taken += 1;
            spans += b.len();
        }
    }
    assert!(
        taken > 150 && spans > 150,
        "{taken} of 300 requests, {spans} spans"
    );
}
