//! The direct thrift → OTLP path against the owned reference: for any
//! batch, in each of the three wire forms, the same request bytes; for any
//! bytes, the same answer (the same error, or the same request).

use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::Indexing;

/// Keys the mapping treats specially, and a few plain ones that collide.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("span.kind".to_string()),
        2 => Just("error".to_string()),
        2 => Just("otel.status_code".to_string()),
        2 => Just("otel.status_description".to_string()),
        2 => Just("http.status_code".to_string()),
        1 => Just("http.status_message".to_string()),
        2 => Just("hostname".to_string()),
        1 => Just("host.name".to_string()),
        2 => Just("jaeger.version".to_string()),
        1 => Just("opencensus.exporterversion".to_string()),
        2 => Just("event".to_string()),
        1 => Just(String::new()),
        8 => "[a-c]{1,2}",
    ]
}

fn string_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("client".to_string()),
        Just("server".to_string()),
        Just("producer".to_string()),
        Just("OK".to_string()),
        Just("error".to_string()),
        Just("404".to_string()),
        Just("503".to_string()),
        Just("399".to_string()),
        ".{0,6}",
    ]
}

fn tag() -> impl Strategy<Value = Tag> {
    (
        key(),
        prop_oneof![(0i32..5), Just(7), Just(-1)],
        proptest::option::of(string_value()),
        proptest::option::of(any::<f64>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(prop_oneof![
            Just(200i64),
            Just(404),
            Just(500),
            any::<i64>()
        ]),
        proptest::option::of(vec(any::<u8>(), 0..4)),
    )
        .prop_map(|(key, v_type, v_str, v_double, v_bool, v_long, v_binary)| {
            let mut tag = Tag::long(&key, 0);
            tag.v_type = TagType::from_i32(v_type);
            tag.value = TagValue {
                v_str,
                v_double,
                v_bool,
                v_long,
                v_binary,
            };
            tag
        })
}

/// Tag lists, sometimes long enough for the attribute index.
fn tags() -> impl Strategy<Value = Option<Vec<Tag>>> {
    proptest::option::of(prop_oneof![
        8 => vec(tag(), 0..6),
        1 => vec(tag(), 15..40),
    ])
}

fn id() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0i64), Just(1), Just(2), Just(-1), any::<i64>()]
}

fn span_ref() -> impl Strategy<Value = SpanRef> {
    (0i32..3, id(), id(), id()).prop_map(|(ref_type, low, high, span_id)| SpanRef {
        ref_type,
        trace_id_low: low,
        trace_id_high: high,
        span_id,
    })
}

fn span() -> impl Strategy<Value = Span> {
    prop_oneof![
        1 => Just(Span::default()),
        9 => (
            (id(), id(), id(), id(), "[a-z]{0,4}"),
            proptest::option::of(vec(span_ref(), 0..4)),
            (any::<i32>(), any::<i64>(), any::<i64>()),
            tags(),
            proptest::option::of(vec((any::<i64>(), vec(tag(), 0..4)), 0..3)),
        )
            .prop_map(
                |((low, high, span_id, parent, name), references, (flags, start, duration), tags, logs)| Span {
                    trace_id_low: low,
                    trace_id_high: high,
                    span_id,
                    parent_span_id: parent,
                    operation_name: name,
                    references,
                    flags,
                    start_time: start,
                    duration,
                    tags,
                    logs: logs.map(|logs| {
                        logs.into_iter()
                            .map(|(timestamp, fields)| Log { timestamp, fields })
                            .collect()
                    }),
                },
            ),
    ]
}

fn batch() -> impl Strategy<Value = Batch> {
    (
        prop_oneof![Just(String::new()), "[a-z]{1,5}"],
        tags(),
        vec(span(), 0..5),
        proptest::option::of(any::<i64>()),
    )
        .prop_map(|(service_name, tags, spans, seq_no)| Batch {
            process: Process { service_name, tags },
            spans,
            seq_no,
        })
}

/// The reference: owned decode, owned mapping, prost encode.
fn reference(decoded: Result<Batch, ThriftError>) -> Result<(Vec<u8>, SpanBatch), ThriftError> {
    decoded.map(|b| {
        let request = batch_to_request(&b);
        (request.encode_to_vec(), SpanBatch::from_request(&request))
    })
}

/// The direct path's bytes, before and after the scan.
fn direct(
    view: Result<BatchView<'_>, ThriftError>,
    len: usize,
) -> Result<(Vec<u8>, SpanBatch), ThriftError> {
    view.map(|v| {
        let mut out = Vec::new();
        ingest::write_otlp(&v, &mut out);
        let eager = ingest::span_batch(&v, len, Indexing::Eager);
        // Lazily the request is not scanned; its index, built on first
        // use, is the eager one.
        let lazy = ingest::span_batch(&v, len, Indexing::Lazy);
        assert!(eager.is_indexed() && !lazy.is_indexed());
        crate::test_support::assert_same_index(&lazy, &eager);
        (out, eager)
    })
}

/// Every wire form of `bytes` through both paths, compared.
fn check_alike(bytes: &[u8]) -> Result<(), TestCaseError> {
    type View<'a> = fn(&'a [u8]) -> Result<BatchView<'a>, ThriftError>;
    type Decode = fn(&[u8]) -> Result<Batch, ThriftError>;
    type Direct = fn(&[u8]) -> Result<SpanBatch, ThriftError>;
    let forms: [(View<'_>, Decode, Direct); 3] = [
        (
            view_agent_compact,
            decode_agent_compact,
            agent_compact_to_span_batch,
        ),
        (
            view_agent_binary,
            decode_agent_binary,
            agent_binary_to_span_batch,
        ),
        (
            view_batch_binary,
            decode_batch_binary,
            batch_binary_to_span_batch,
        ),
    ];
    for (view, decode, public) in forms {
        let want = reference(decode(bytes));
        let got = direct(view(bytes), bytes.len());
        match (&want, &got) {
            (Ok((want_bytes, want_batch)), Ok((got_bytes, got_batch))) => {
                prop_assert_eq!(want_bytes, got_bytes);
                prop_assert_eq!(want_batch.bytes(), got_batch.bytes());
                prop_assert_eq!(want_batch.len(), got_batch.len());
                let public = public(bytes).expect("the view decoded");
                prop_assert_eq!(public.bytes(), got_batch.bytes());
            }
            (Err(want), Err(got)) => {
                prop_assert_eq!(want, got);
                prop_assert_eq!(public(bytes).unwrap_err(), got.clone());
            }
            _ => prop_assert!(
                false,
                "the paths disagree: {:?} against {:?}",
                want.as_ref().map(|_| ()),
                got.as_ref().map(|_| ())
            ),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn direct_output_matches_the_owned_path_in_every_wire_form(batch in batch()) {
        for bytes in [
            encode_agent_compact(&batch),
            encode_agent_binary(&batch),
            encode_batch_binary(&batch),
        ] {
            check_alike(&bytes)?;
        }
        // And the bytes are what the reference makes of the batch itself.
        let want = batch_to_request(&batch).encode_to_vec();
        let got = agent_compact_to_span_batch(&encode_agent_compact(&batch)).unwrap();
        prop_assert_eq!(&want[..], &got.bytes()[..]);
    }

    #[test]
    fn arbitrary_bytes_are_refused_or_taken_alike(bytes in vec(any::<u8>(), 0..64)) {
        check_alike(&bytes)?;
    }

    #[test]
    fn mutated_batches_are_refused_or_taken_alike(
        batch in batch(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        for mut bytes in [
            encode_agent_compact(&batch),
            encode_agent_binary(&batch),
            encode_batch_binary(&batch),
        ] {
            for (at, byte) in &edits {
                let at = at.index(bytes.len());
                bytes[at] = *byte;
            }
            check_alike(&bytes)?;
            let cut = cut.index(bytes.len());
            check_alike(&bytes[..cut])?;
        }
    }
}

#[test]
fn invalid_utf8_is_replaced_alike() {
    let batch = Batch {
        process: Process {
            service_name: "svc-\u{1}".into(),
            tags: Some(vec![Tag::string("k\u{2}", "v\u{3}")]),
        },
        spans: vec![Span {
            trace_id_low: 1,
            span_id: 2,
            operation_name: "op-\u{4}".into(),
            tags: Some(vec![Tag::string("a\u{5}", "b\u{6}")]),
            ..Default::default()
        }],
        seq_no: None,
    };
    let mut bytes = encode_batch_binary(&batch);
    // Each marker byte becomes a lone continuation byte.
    for marker in 1u8..=6 {
        let at = bytes
            .windows(2)
            .position(|w| w[1] == marker && w[0] != 0 && w[0].is_ascii_graphic())
            .expect("marker");
        bytes[at + 1] = 0x80 | marker;
    }
    check_alike(&bytes).unwrap();
    let got = batch_binary_to_span_batch(&bytes).unwrap();
    let request = got.to_request();
    let rs = &request.resource_spans[0];
    assert!(rs.scope_spans[0].spans[0].name.contains('\u{fffd}'));
}

#[test]
fn the_python_clients_packet_and_the_full_batch_match_the_reference() {
    check_alike(tests::PYTHON_CLIENT_PACKET).unwrap();
    let full = tests::full_batch();
    for bytes in [
        encode_agent_compact(&full),
        encode_agent_binary(&full),
        encode_batch_binary(&full),
    ] {
        check_alike(&bytes).unwrap();
    }
    let got = agent_compact_to_span_batch(tests::PYTHON_CLIENT_PACKET).unwrap();
    assert_eq!(got.len(), 2);
}

#[test]
fn a_span_with_many_tags_keeps_pdata_map_semantics() {
    // Past the attribute list's index threshold: repeats replace in place,
    // removals keep the order.
    let mut tags: Vec<Tag> = (0..40).map(|i| Tag::long(&format!("k{i}"), i)).collect();
    tags.push(Tag::long("k3", 300));
    tags.push(Tag::string("span.kind", "server"));
    tags.push(Tag::bool("error", true));
    tags.push(Tag::long("k39", 3900));
    let batch = Batch {
        process: Process {
            service_name: "svc".into(),
            tags: None,
        },
        spans: vec![Span {
            trace_id_low: 1,
            span_id: 2,
            tags: Some(tags),
            ..Default::default()
        }],
        seq_no: None,
    };
    let bytes = encode_agent_compact(&batch);
    check_alike(&bytes).unwrap();
    let request = agent_compact_to_span_batch(&bytes).unwrap().to_request();
    let span = &request.resource_spans[0].scope_spans[0].spans[0];
    let keys: Vec<&str> = span.attributes.iter().map(|kv| kv.key.as_str()).collect();
    let want: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    assert_eq!(keys, want);
    assert_eq!(
        span.attributes[3].value.as_ref().unwrap().value,
        Some(crate::otlp::any_value::Value::IntValue(300))
    );
    assert_eq!(span.kind, crate::otlp::SpanKind::Server as i32);
    assert_eq!(span.status.as_ref().unwrap().code, 2);
}
