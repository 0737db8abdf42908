//! Lazy attribute lookups.

use super::*;
use crate::AnyValueRef;

fn with_attributes(attrs: Vec<KeyValue>) -> SpanBatch {
    let mut s = span(1, 1, "op");
    s.attributes = attrs;
    scan_request(&request(vec![(
        vec![
            str_kv("service.name", "svc"),
            kv("replicas", any_value::Value::IntValue(3)),
        ],
        vec![vec![s]],
    )]))
}

#[test]
fn every_value_type_reads_back() {
    use any_value::Value;
    let b = with_attributes(vec![
        str_kv("s", "text"),
        kv("b", Value::BoolValue(true)),
        kv("i", Value::IntValue(-42)),
        kv("d", Value::DoubleValue(2.5)),
        kv("y", Value::BytesValue(vec![0, 255])),
        kv(
            "a",
            Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(Value::IntValue(1)),
                    },
                    AnyValue { value: None },
                    AnyValue {
                        value: Some(Value::StringValue("two".into())),
                    },
                ],
            }),
        ),
        kv(
            "m",
            Value::KvlistValue(KeyValueList {
                values: vec![str_kv("inner", "x"), kv("n", Value::IntValue(7))],
            }),
        ),
    ]);
    assert_eq!(b.span_attribute(0, "s"), Some(AnyValueRef::String("text")));
    assert_eq!(b.span_attribute(0, "b"), Some(AnyValueRef::Bool(true)));
    assert_eq!(b.span_attribute(0, "i"), Some(AnyValueRef::Int(-42)));
    assert_eq!(b.span_attribute(0, "d"), Some(AnyValueRef::Double(2.5)));
    assert_eq!(
        b.span_attribute(0, "y"),
        Some(AnyValueRef::Bytes(&[0, 255]))
    );
    let a = b.span_attribute(0, "a").unwrap();
    let elems: Vec<_> = a.array_values().collect();
    assert_eq!(
        elems,
        vec![
            Some(AnyValueRef::Int(1)),
            None,
            Some(AnyValueRef::String("two"))
        ]
    );
    let m = b.span_attribute(0, "m").unwrap();
    let entries: Vec<_> = m.kvlist_entries().collect();
    assert_eq!(
        entries,
        vec![
            ("inner", Some(AnyValueRef::String("x"))),
            ("n", Some(AnyValueRef::Int(7)))
        ]
    );
    assert_eq!(b.span_attribute(0, "missing"), None);
    assert_eq!(b.span_attributes(0).count(), 7);
    assert_eq!(
        b.resource_attribute(0, "replicas"),
        Some(AnyValueRef::Int(3))
    );
    assert_eq!(b.resource_attribute(0, "s"), None);
    assert_eq!(b.service_name(0), Some("svc"));
}

#[test]
fn first_duplicate_key_wins_and_empty_values_read_as_absent() {
    let b = with_attributes(vec![
        str_kv("k", "first"),
        str_kv("k", "second"),
        KeyValue {
            key: "empty".into(),
            value: None,
            ..Default::default()
        },
        KeyValue {
            key: "empty2".into(),
            value: Some(AnyValue { value: None }),
            ..Default::default()
        },
    ]);
    assert_eq!(
        b.span_attribute(0, "k").and_then(|v| v.as_str()),
        Some("first")
    );
    assert_eq!(b.span_attribute(0, "empty"), None);
    assert_eq!(b.span_attribute(0, "empty2"), None);
    let all: Vec<_> = b.span_attributes(0).map(|(k, _)| k).collect();
    assert_eq!(all, ["k", "k", "empty", "empty2"]);
}

#[test]
fn repeated_resource_messages_merge_their_attributes() {
    let kv = |k: &str, v: &str| str_kv(k, v).encode_to_vec();
    let rs = Pb::new()
        .msg(1, Pb::new().len(1, &kv("host.name", "h1")))
        .msg(
            2,
            Pb::new().msg(2, Pb::new().len(1, &[1; 16]).len(2, &[1; 8])),
        )
        .msg(1, Pb::new().len(1, &kv("service.name", "merged")));
    let b = SpanBatch::scan(Pb::new().msg(1, rs).bytes()).unwrap();
    assert_eq!(b.service_name(0), Some("merged"));
    assert_eq!(
        b.resource_attribute(0, "host.name")
            .and_then(|v| v.as_str()),
        Some("h1")
    );
    // prost agrees the two merge into one resource.
    let decoded = b.to_request();
    assert_eq!(
        decoded.resource_spans[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .len(),
        2
    );
}

#[test]
fn service_name_must_be_a_string() {
    let b = scan_request(&request(vec![(
        vec![kv("service.name", any_value::Value::IntValue(1))],
        vec![vec![span(1, 1, "x")]],
    )]));
    assert_eq!(b.service_name(0), None);
    let b = scan_request(&request(vec![(vec![], vec![vec![span(1, 1, "x")]])]));
    assert_eq!(b.service_name(0), None);
}

#[test]
fn scope_attributes_and_indices() {
    let mut req = request(vec![
        (vec![], vec![vec![span(1, 1, "x")]]),
        (vec![], vec![vec![], vec![span(1, 2, "y")]]),
    ]);
    req.resource_spans[1].scope_spans[1]
        .scope
        .as_mut()
        .unwrap()
        .attributes = vec![str_kv("lib.attr", "v")];
    let b = scan_request(&req);
    assert_eq!(b.resource_index(0), 0);
    assert_eq!(b.resource_index(1), 1);
    assert_eq!(
        b.scope_attribute(1, "lib.attr").and_then(|v| v.as_str()),
        Some("v")
    );
    assert_eq!(b.scope_attribute(0, "lib.attr"), None);
    assert_eq!(b.scopes().len(), 3);
    assert_eq!(b.spans()[1].scope, 2);
}

#[test]
fn string_value_strindex_reads_as_empty() {
    let v = Pb::new().varint(8, 3);
    let kv = Pb::new().len(1, b"k").msg(2, v);
    let sp = Pb::new().len(1, &[1; 16]).msg(9, kv);
    let req = Pb::new().msg(1, Pb::new().msg(2, Pb::new().msg(2, sp)));
    let b = SpanBatch::scan(req.bytes()).unwrap();
    assert_eq!(b.span_attribute(0, "k"), None);
    assert_eq!(b.span_attributes(0).count(), 1);
}

use prost::Message;

/// The index's key-length bits only ever skip lookups that would find
/// nothing: hand-made attributes with no key, a repeated key field, long
/// keys and one that is not plain all read as a walk over the span reads.
#[test]
fn key_length_bits_never_hide_an_attribute() {
    let value = Pb::new().len(1, b"v");
    let long = "k".repeat(33);
    let attributes = [
        // No key at all: the empty key.
        Pb::new().msg(2, value.clone()),
        // The key twice: protobuf keeps the last.
        Pb::new()
            .len(1, b"first")
            .len(1, b"kept")
            .msg(2, value.clone()),
        // A key whose length shares its bit with a 1-byte key.
        Pb::new().len(1, long.as_bytes()).msg(2, value.clone()),
        // Not plain: the value before the key.
        Pb::new().msg(2, value.clone()).len(1, b"late"),
        Pb::new().len(1, b"plain").msg(2, value),
    ];
    let mut span = Pb::new().len(1, &[1; 16]).len(2, &[2; 8]).len(5, b"op");
    for a in &attributes {
        span = span.msg(9, a.clone());
    }
    let request = Pb::new().msg(1, Pb::new().msg(2, Pb::new().msg(2, span)));
    let batch = SpanBatch::scan(request.bytes()).unwrap();
    assert_index_consistent(&batch);
    let keys = [
        "",
        "first",
        "kept",
        "k",
        "kk",
        &long,
        "late",
        "plain",
        "plai",
        "x",
        "other.key",
    ];
    for key in keys {
        assert_eq!(
            batch.span_attribute(0, key),
            batch.span_attributes(0).get(key),
            "{key:?}"
        );
    }
    assert_eq!(
        batch.span_attribute(0, "kept"),
        Some(AnyValueRef::String("v"))
    );
    assert!(batch.span_attribute(0, "").is_some());
    assert!(batch.span_attribute(0, &long).is_some());
    assert!(batch.span_attribute(0, "late").is_some());
    assert!(!batch.spans()[0].may_have_attribute("other.key"));
}
