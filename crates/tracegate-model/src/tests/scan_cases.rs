//! Scanner edge cases: every structure the wire allows, and every class of
//! malformation with the error it must produce.

use bytes::Bytes;
use prost::Message;

use super::*;
use crate::StatusCode;

/// A minimal valid span body: trace id, span id.
fn span_body() -> Pb {
    Pb::new().len(1, &[7; 16]).len(2, &[8; 8])
}

/// Wraps a span body into a whole request.
fn request_with_span(span: Pb) -> Pb {
    let scope = Pb::new().msg(2, span);
    let resource = Pb::new().msg(2, scope);
    Pb::new().msg(1, resource)
}

/// Wraps a KeyValue body as a span attribute.
fn request_with_attribute(kv: Pb) -> Pb {
    request_with_span(span_body().msg(9, kv))
}

#[test]
fn empty_request_is_an_empty_batch() {
    let b = SpanBatch::scan(Bytes::new()).unwrap();
    assert!(b.is_empty());
    assert_eq!(b.resources().len(), 0);
    assert_eq!(b.encoded_len(), 0);
}

#[test]
fn empty_resource_and_empty_scope_are_indexed_without_spans() {
    // One ResourceSpans with nothing in it, one with an empty ScopeSpans.
    let req = Pb::new().len(1, &[]).msg(1, Pb::new().len(2, &[]));
    let b = SpanBatch::scan(req.bytes()).unwrap();
    assert_eq!(b.len(), 0);
    assert_eq!(b.resources().len(), 2);
    assert_eq!(b.scopes().len(), 1);
    assert_eq!(b.scopes()[0].resource, 1);
    assert_eq!(b.resources()[1].scopes, 0..1);
    assert_eq!(b.resources()[0].scopes, 0..0);
    assert_eq!(b.resources()[0].resource, None);
}

#[test]
fn empty_span_has_zero_ids_and_times() {
    let b = SpanBatch::scan(request_with_span(Pb::new()).bytes()).unwrap();
    assert_eq!(b.len(), 1);
    let s = &b.spans()[0];
    assert_eq!(s.trace_id, [0; 16]);
    assert_eq!(s.span_id, [0; 8]);
    assert!(s.is_root());
    assert_eq!(s.status, StatusCode::Unset);
    assert_eq!(b.span_name(0), "");
    assert_index_consistent(&b);
}

#[test]
fn indexes_every_field_of_a_full_span() {
    let req = request(vec![(
        vec![str_kv("service.name", "checkout")],
        vec![vec![Span {
            trace_id: (1..=16).collect(),
            span_id: (1..=8).collect(),
            parent_span_id: (11..=18).collect(),
            trace_state: "ot=th:8".into(),
            name: "GET /cart".into(),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_500_000_000,
            status: Some(Status {
                message: "boom".into(),
                code: 2,
            }),
            flags: 0x301,
            events: vec![Event {
                time_unix_nano: 5,
                name: "exception".into(),
                attributes: vec![str_kv("exception.type", "E")],
                dropped_attributes_count: 1,
            }],
            links: vec![Link {
                trace_id: vec![3; 16],
                span_id: vec![4; 8],
                trace_state: "a=b".into(),
                flags: 1,
                ..Default::default()
            }],
            ..Default::default()
        }]],
    )]);
    let b = scan_request(&req);
    let s = &b.spans()[0];
    assert_eq!(s.trace_id.to_vec(), (1..=16).collect::<Vec<u8>>());
    assert_eq!(s.span_id.to_vec(), (1..=8).collect::<Vec<u8>>());
    assert_eq!(s.parent_span_id.to_vec(), (11..=18).collect::<Vec<u8>>());
    assert!(!s.is_root());
    assert_eq!(s.kind, 2);
    assert_eq!(s.status, StatusCode::Error);
    assert_eq!(s.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(s.end_time_unix_nano, 1_700_000_000_500_000_000);
    assert_eq!(b.span_name(0), "GET /cart");
    assert_eq!(b.span_trace_state(0), "ot=th:8");
    assert_eq!(b.service_name(0), Some("checkout"));
    assert_index_consistent(&b);
}

#[test]
fn unknown_fields_of_every_wire_type_are_skipped_at_every_level() {
    let unknown = |p: Pb| {
        p.varint(100, 300)
            .fixed64(101, 1)
            .len(102, b"x")
            .fixed32(103, 2)
            // group 104 { 1: 5, group 2 { } }
            .raw(&[0xc3, 0x06, 0x08, 0x05, 0x13, 0x14, 0xc4, 0x06])
    };
    let value = unknown(Pb::new().len(1, b"v"));
    let kv = unknown(Pb::new().len(1, b"k").msg(2, value));
    let status = unknown(Pb::new().varint(3, 1)).varint(1, 2); // reserved field 1 too
    let event = unknown(Pb::new().fixed64(1, 9).len(2, b"e").msg(3, kv.clone()));
    let link = unknown(
        Pb::new()
            .len(1, &[1; 16])
            .len(2, &[2; 8])
            .msg(4, kv.clone()),
    );
    let span = unknown(span_body())
        .msg(9, kv.clone())
        .msg(11, event)
        .msg(13, link)
        .msg(15, status);
    let scope = unknown(Pb::new().msg(1, unknown(Pb::new().len(1, b"lib").msg(3, kv.clone()))));
    let scope_spans = unknown(scope.msg(2, span));
    let resource = unknown(Pb::new().msg(1, kv.clone()));
    let resource_spans = unknown(Pb::new().msg(1, resource).msg(2, scope_spans));
    let req = unknown(Pb::new().msg(1, resource_spans));
    let b = SpanBatch::scan(req.bytes()).unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b.spans()[0].trace_id, [7; 16]);
    assert_eq!(b.spans()[0].status, StatusCode::Ok);
    assert_eq!(b.span_attribute(0, "k").and_then(|v| v.as_str()), Some("v"));
    assert_eq!(
        b.resource_attribute(0, "k").and_then(|v| v.as_str()),
        Some("v")
    );
    assert_eq!(
        b.scope_attribute(0, "k").and_then(|v| v.as_str()),
        Some("v")
    );
    assert_index_consistent(&b);
    // Unknown fields inside a ResourceSpans survive a subset re-encode byte
    // for byte (those at the request's top level belong to no resource).
    let second = SpanBatch::concat(&[b.clone(), b.clone()]).select(&[1]);
    let body = |b: &SpanBatch| {
        let r = &b.resources()[0].body;
        b.bytes()[r.start as usize..r.end as usize].to_vec()
    };
    assert_eq!(body(&second), body(&b));
    assert_index_consistent(&second);
}

#[test]
fn packed_and_unpacked_repeated_unknown_fields_are_skipped() {
    // Field 50 as a packed varint list, then as three unpacked varints, then
    // packed fixed32s: whichever way a newer schema encodes them.
    let mut list = Vec::new();
    for v in [1u64, 300, 70000] {
        put_varint(&mut list, v);
    }
    let span = span_body()
        .len(50, &list)
        .varint(50, 1)
        .varint(50, 300)
        .varint(50, 70000)
        .len(51, &[1, 0, 0, 0, 2, 0, 0, 0]);
    let b = SpanBatch::scan(request_with_span(span).bytes()).unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b.spans()[0].span_id, [8; 8]);
    assert_index_consistent(&b);
}

#[test]
fn repeated_scalar_fields_take_the_last_value_and_messages_merge() {
    let span = span_body()
        .len(1, &[9; 16]) // trace_id again: last wins
        .msg(15, Pb::new().varint(3, 2).len(2, b"first"))
        .msg(15, Pb::new().len(2, b"second")) // no code: the earlier code stays
        .len(5, b"a")
        .len(5, b"b");
    let b = SpanBatch::scan(request_with_span(span).bytes()).unwrap();
    let s = &b.spans()[0];
    assert_eq!(s.trace_id, [9; 16]);
    assert_eq!(s.status, StatusCode::Error);
    assert_eq!(b.span_name(0), "b");
    let decoded = b.to_request();
    let span = &decoded.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(span.status.as_ref().unwrap().code, 2);
    assert_eq!(span.name, "b");
}

#[test]
fn unknown_enum_values_pass_through_and_index_as_default() {
    let span = span_body().varint(6, 9).msg(15, Pb::new().varint(3, 7));
    let b = SpanBatch::scan(request_with_span(span).bytes()).unwrap();
    assert_eq!(b.spans()[0].kind, 0);
    assert_eq!(b.spans()[0].status, StatusCode::Unset);
    let decoded = b.to_request();
    assert_eq!(decoded.resource_spans[0].scope_spans[0].spans[0].kind, 9);
    // Negative kinds are 10-byte varints.
    let span = span_body().varint(6, u64::MAX);
    let b = SpanBatch::scan(request_with_span(span).bytes()).unwrap();
    assert_eq!(b.spans()[0].kind, 0);
}

#[test]
fn non_minimal_lengths_and_keys_are_accepted() {
    // The span field's key 0x12 as two bytes, its length as two bytes.
    let body = span_body().0;
    let scope = Pb::new()
        .raw(&[0x92, 0x00, 0x80 | body.len() as u8, 0x00])
        .raw(&body);
    let req = Pb::new().msg(1, Pb::new().msg(2, scope));
    let b = SpanBatch::scan(req.bytes()).unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b.spans()[0].trace_id, [7; 16]);
    assert_index_consistent(&b);
    // A subset re-encode writes minimal framing and stays valid.
    let two = SpanBatch::concat(&[b.clone(), b.clone()]);
    let one = two.select(&[1]);
    assert_index_consistent(&one);
    assert!(one.encoded_len() < b.encoded_len());
}

#[test]
fn ids_of_the_wrong_length_are_refused_like_the_collector() {
    let cases: [(Pb, &str); 5] = [
        (
            Pb::new().len(1, &[1; 15]),
            "Span.trace_id: must be 16 bytes or empty",
        ),
        (
            Pb::new().len(2, &[1; 9]),
            "Span.span_id: must be 8 bytes or empty",
        ),
        (
            Pb::new().len(4, &[1; 1]),
            "Span.parent_span_id: must be 8 bytes or empty",
        ),
        (
            Pb::new().msg(13, Pb::new().len(1, &[1; 17])),
            "Span.Link.trace_id: must be 16 bytes or empty",
        ),
        (
            Pb::new().msg(13, Pb::new().len(2, &[1; 4])),
            "Span.Link.span_id: must be 8 bytes or empty",
        ),
    ];
    for (span, want) in cases {
        let req = request_with_span(span);
        let (offset, what) = scan_err(&req.0);
        assert_eq!(what, want);
        assert!(offset < req.0.len());
    }
    // Empty ids decode (they are "invalid" ids, not malformed protobuf).
    let span = Pb::new().len(1, &[]).len(2, &[]).len(4, &[]);
    let b = SpanBatch::scan(request_with_span(span).bytes()).unwrap();
    assert_eq!(b.spans()[0].trace_id, [0; 16]);
}

#[test]
fn invalid_utf8_is_refused_in_every_string_field() {
    let bad: &[u8] = &[b'a', 0xff, b'b'];
    let kv_with_key = |k: &[u8]| Pb::new().len(1, k).msg(2, Pb::new().len(1, b"v"));
    let cases: Vec<(Pb, &str)> = vec![
        (
            request_with_span(span_body().len(5, bad)),
            "Span.name: invalid UTF-8",
        ),
        (
            request_with_span(span_body().len(3, bad)),
            "Span.trace_state: invalid UTF-8",
        ),
        (
            request_with_span(span_body().msg(15, Pb::new().len(2, bad))),
            "Status.message: invalid UTF-8",
        ),
        (
            request_with_span(span_body().msg(11, Pb::new().len(2, bad))),
            "Span.Event.name: invalid UTF-8",
        ),
        (
            request_with_span(span_body().msg(13, Pb::new().len(3, bad))),
            "Span.Link.trace_state: invalid UTF-8",
        ),
        (
            request_with_attribute(kv_with_key(bad)),
            "KeyValue.key: invalid UTF-8",
        ),
        (
            request_with_attribute(Pb::new().len(1, b"k").msg(2, Pb::new().len(1, bad))),
            "AnyValue.string_value: invalid UTF-8",
        ),
        (
            Pb::new().msg(1, Pb::new().len(3, bad)),
            "ResourceSpans.schema_url: invalid UTF-8",
        ),
        (
            Pb::new().msg(1, Pb::new().msg(2, Pb::new().len(3, bad))),
            "ScopeSpans.schema_url: invalid UTF-8",
        ),
        (
            Pb::new().msg(1, Pb::new().msg(2, Pb::new().msg(1, Pb::new().len(1, bad)))),
            "InstrumentationScope.name: invalid UTF-8",
        ),
        (
            Pb::new().msg(1, Pb::new().msg(2, Pb::new().msg(1, Pb::new().len(2, bad)))),
            "InstrumentationScope.version: invalid UTF-8",
        ),
        (
            Pb::new().msg(1, Pb::new().msg(1, Pb::new().msg(1, kv_with_key(bad)))),
            "KeyValue.key: invalid UTF-8",
        ),
        (
            Pb::new().msg(1, Pb::new().msg(1, Pb::new().msg(3, Pb::new().len(2, bad)))),
            "EntityRef: invalid UTF-8",
        ),
    ];
    for (req, want) in cases {
        let (offset, what) = scan_err(&req.0);
        assert_eq!(what, want);
        // The offset names the field's key, which precedes the bad bytes.
        let bad_at = req.0.windows(3).position(|w| w == bad).unwrap();
        assert!(
            offset < bad_at,
            "{want}: offset {offset} not before {bad_at}"
        );
        // prost refuses the same input (for the fields prost knows).
        assert!(
            ExportTraceServiceRequest::decode(&req.0[..]).is_err(),
            "{want}"
        );
    }
    // Bytes values are not strings: anything goes.
    let ok = request_with_attribute(Pb::new().len(1, b"k").msg(2, Pb::new().len(7, bad)));
    assert!(SpanBatch::scan(ok.bytes()).is_ok());
}

#[test]
fn wrong_wire_types_for_known_fields_are_refused() {
    let cases: Vec<(Pb, &str)> = vec![
        (
            Pb::new().varint(1, 1),
            "ExportTraceServiceRequest.resource_spans: wrong wire type",
        ),
        (
            Pb::new().msg(1, Pb::new().fixed32(2, 1)),
            "ResourceSpans.scope_spans: wrong wire type",
        ),
        (
            request_with_span(Pb::new().varint(1, 1)),
            "Span.trace_id: wrong wire type",
        ),
        (
            request_with_span(Pb::new().len(6, b"")),
            "Span.kind: wrong wire type",
        ),
        (
            request_with_span(Pb::new().varint(7, 1)),
            "Span.start_time_unix_nano: wrong wire type",
        ),
        (
            request_with_span(Pb::new().fixed32(8, 1)),
            "Span.end_time_unix_nano: wrong wire type",
        ),
        (
            request_with_span(Pb::new().fixed64(16, 1)),
            "Span.flags: wrong wire type",
        ),
        (
            request_with_span(Pb::new().len(10, b"")),
            "Span: wrong wire type for a dropped count",
        ),
        (
            request_with_span(Pb::new().msg(15, Pb::new().len(3, b""))),
            "Status.code: wrong wire type",
        ),
        (
            request_with_attribute(Pb::new().len(1, b"k").msg(2, Pb::new().len(3, b""))),
            "AnyValue: wrong wire type for bool_value/int_value/string_value_strindex",
        ),
        (
            request_with_attribute(Pb::new().len(1, b"k").msg(2, Pb::new().varint(4, 1))),
            "AnyValue.double_value: wrong wire type",
        ),
        (
            request_with_attribute(Pb::new().varint(2, 1)),
            "KeyValue.value: wrong wire type",
        ),
    ];
    for (req, want) in cases {
        assert_eq!(scan_err(&req.0).1, want);
        assert!(
            ExportTraceServiceRequest::decode(&req.0[..]).is_err(),
            "{want}"
        );
    }
}

#[test]
fn structural_malformations_name_the_message_and_the_byte() {
    // Truncated key varint at the top.
    assert_eq!(
        scan_err(&[0x8a]),
        (0, "ExportTraceServiceRequest: truncated or overlong varint")
    );
    // Field number 0 inside a ResourceSpans at byte 2.
    assert_eq!(
        scan_err(&[0x0a, 0x01, 0x00]),
        (2, "ResourceSpans: invalid field number")
    );
    // Wire type 7 inside a ScopeSpans.
    assert_eq!(
        scan_err(&Pb::new().msg(1, Pb::new().len(2, &[0x0f])).0),
        (4, "ScopeSpans: invalid wire type (6 or 7)")
    );
    // A length running past the end of the request.
    assert_eq!(
        scan_err(&[0x0a, 0x05, 0x00]),
        (
            1,
            "ExportTraceServiceRequest: length-delimited field runs past the end of its message"
        )
    );
    // A length running past the end of its parent (but not of the request).
    let req = Pb::new()
        .len(1, &[0x12, 0x05, 0x00])
        .varint(2, 0)
        .varint(3, 0)
        .varint(4, 0);
    assert_eq!(
        scan_err(&req.0).1,
        "ResourceSpans: length-delimited field runs past the end of its message"
    );
    // Truncated fixed64.
    let req = request_with_span(Pb::new().raw(&[0x39, 1, 2, 3]));
    assert_eq!(
        scan_err(&req.0).1,
        "Span: fixed32/fixed64 field runs past the end of its message"
    );
    // A stray end-group and a mismatched one.
    assert_eq!(
        scan_err(&request_with_span(Pb::new().raw(&[0xa4, 0x01])).0).1,
        "Span: end-group tag without a matching start-group"
    );
    assert_eq!(
        scan_err(&[0x1b, 0x24]).1,
        "ExportTraceServiceRequest: end-group tag without a matching start-group"
    );
    // An overlong varint (11 bytes).
    let mut req = vec![0x10];
    req.extend([0xff; 10]);
    req.push(0x01);
    assert_eq!(
        scan_err(&req),
        (1, "ExportTraceServiceRequest: truncated or overlong varint")
    );
}

#[test]
fn nesting_is_bounded_and_deep_input_does_not_overflow_the_stack() {
    // AnyValue { array_value { values: AnyValue { ... } } } nested 10_000 deep.
    let mut value = Pb::new().len(1, b"leaf");
    for _ in 0..2_000 {
        value = Pb::new().msg(5, Pb::new().msg(1, value));
    }
    let req = request_with_attribute(Pb::new().len(1, b"k").msg(2, value));
    let (_, what) = scan_err(&req.0);
    assert!(what.contains("nested too deep"), "{what}");

    // Within the limit, it scans and prost decodes it.
    let mut value = Pb::new().len(1, b"leaf");
    for _ in 0..25 {
        value = Pb::new().msg(5, Pb::new().msg(1, value));
    }
    let req = request_with_attribute(Pb::new().len(1, b"k").msg(2, value));
    let b = SpanBatch::scan(req.bytes()).unwrap();
    assert_index_consistent(&b);

    // Nested groups in an unknown field.
    let mut deep = Vec::new();
    for _ in 0..1000 {
        deep.extend_from_slice(&[0xa3, 0x06]); // start group 100
    }
    for _ in 0..1000 {
        deep.extend_from_slice(&[0xa4, 0x06]); // end group 100
    }
    let (_, what) = scan_err(&deep);
    assert_eq!(what, "ExportTraceServiceRequest: groups nested too deep");
}

#[test]
fn scanned_batches_report_their_size_and_keep_the_bytes() {
    let req = request(vec![(vec![], vec![vec![span(1, 1, "a"), span(1, 2, "b")]])]);
    let bytes = Bytes::from(req.encode_to_vec());
    let b = SpanBatch::scan(bytes.clone()).unwrap();
    assert_eq!(b.bytes(), &bytes);
    assert_eq!(b.encoded_len(), bytes.len());
    assert_eq!(b.len(), 2);
    assert_eq!(b.to_request(), req);
}

#[test]
fn error_messages_read_well() {
    let e = SpanBatch::scan(Bytes::from_static(&[0x0a, 0x05])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "malformed protobuf at byte 1: ExportTraceServiceRequest: length-delimited field runs past the end of its message"
    );
}
