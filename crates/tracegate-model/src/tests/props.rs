//! Property tests against prost: random requests built with the
//! opentelemetry-proto types scan to exactly their spans, and every subset,
//! concatenation, split and JSON round trip decodes to what it should.

use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn any_value_leaf() -> impl Strategy<Value = Option<any_value::Value>> {
    use any_value::Value;
    prop_oneof![
        Just(None),
        ".{0,12}".prop_map(|s| Some(Value::StringValue(s))),
        any::<bool>().prop_map(|b| Some(Value::BoolValue(b))),
        any::<i64>().prop_map(|i| Some(Value::IntValue(i))),
        // Finite: JSON has no NaN/Infinity numbers, and NaN != NaN.
        (-1e12f64..1e12).prop_map(|d| Some(Value::DoubleValue(d))),
        vec(any::<u8>(), 0..8).prop_map(|b| Some(Value::BytesValue(b))),
    ]
}

fn any_value() -> impl Strategy<Value = AnyValue> {
    use any_value::Value;
    any_value_leaf()
        .prop_map(|value| AnyValue { value })
        .prop_recursive(3, 16, 3, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..3).prop_map(|values| AnyValue {
                    value: Some(Value::ArrayValue(ArrayValue { values })),
                }),
                vec(("[a-z.]{1,6}", inner), 0..3).prop_map(|kvs| AnyValue {
                    value: Some(Value::KvlistValue(KeyValueList {
                        values: kvs
                            .into_iter()
                            .map(|(key, v)| KeyValue {
                                key,
                                value: Some(v),
                                ..Default::default()
                            })
                            .collect(),
                    })),
                }),
            ]
        })
}

fn attributes(max: usize) -> impl Strategy<Value = Vec<KeyValue>> {
    vec(
        (
            prop_oneof![
                Just("service.name".to_string()),
                Just("http.status_code".to_string()),
                "[a-zé.]{1,10}"
            ],
            proptest::option::weighted(0.9, any_value()),
        )
            .prop_map(|(key, value)| KeyValue {
                key,
                value,
                ..Default::default()
            }),
        0..max,
    )
}

/// Mostly valid ids, sometimes empty (invalid but accepted).
fn id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![9 => vec(any::<u8>(), len), 1 => Just(Vec::new())]
}

fn span_strategy() -> impl Strategy<Value = Span> {
    (
        (id(16), id(8), id(8), ".{0,10}", "[a-z=,:;0-9]{0,8}"),
        (0i32..8, any::<u64>(), any::<u64>(), any::<u32>()),
        attributes(8),
        proptest::option::of((-1i32..4, ".{0,6}")),
        vec(
            (any::<u64>(), "[a-z]{0,6}", attributes(3), 0u32..3).prop_map(
                |(time_unix_nano, name, attributes, dropped_attributes_count)| Event {
                    time_unix_nano,
                    name,
                    attributes,
                    dropped_attributes_count,
                },
            ),
            0..3,
        ),
        vec(
            (id(16), id(8), "[a-z=]{0,6}", attributes(2), any::<u32>()).prop_map(
                |(trace_id, span_id, trace_state, attributes, flags)| Link {
                    trace_id,
                    span_id,
                    trace_state,
                    attributes,
                    flags,
                    ..Default::default()
                },
            ),
            0..3,
        ),
        (0u32..4, 0u32..4, 0u32..4),
    )
        .prop_map(
            |(
                (trace_id, span_id, parent_span_id, name, trace_state),
                (kind, start, end, flags),
                attributes,
                status,
                events,
                links,
                (da, de, dl),
            )| Span {
                trace_id,
                span_id,
                parent_span_id,
                name,
                trace_state,
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                flags,
                attributes,
                status: status.map(|(code, message)| Status { code, message }),
                events,
                links,
                dropped_attributes_count: da,
                dropped_events_count: de,
                dropped_links_count: dl,
            },
        )
}

fn scope_spans() -> impl Strategy<Value = ScopeSpans> {
    (
        proptest::option::of(("[a-z.]{0,8}", "[0-9.]{0,5}", attributes(3))),
        vec(span_strategy(), 0..5),
        "[a-z:/]{0,8}",
    )
        .prop_map(|(scope, spans, schema_url)| ScopeSpans {
            scope: scope.map(|(name, version, attributes)| InstrumentationScope {
                name,
                version,
                attributes,
                dropped_attributes_count: 0,
            }),
            spans,
            schema_url,
        })
}

pub(super) fn request_strategy() -> impl Strategy<Value = ExportTraceServiceRequest> {
    vec(
        (
            proptest::option::of(attributes(4)),
            vec(scope_spans(), 0..3),
            "[a-z:/]{0,8}",
        )
            .prop_map(|(resource, scope_spans, schema_url)| ResourceSpans {
                resource: resource.map(|attributes| Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_spans,
                schema_url,
            }),
        0..4,
    )
    .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

/// Encodes `req` by hand the way other encoders may: unknown fields sprinkled
/// through every level, non-child fields (resource, scope, schema_url)
/// interleaved anywhere among the children.
pub(super) fn assemble(req: &ExportTraceServiceRequest, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Pb::new();
    for rs in &req.resource_spans {
        let mut others = Vec::new();
        if let Some(r) = &rs.resource {
            others.push(Pb::new().len(1, &r.encode_to_vec()));
        }
        if !rs.schema_url.is_empty() {
            others.push(Pb::new().len(3, rs.schema_url.as_bytes()));
        }
        others.extend(unknown_fields(&mut rng));
        let mut children = Vec::new();
        for ss in &rs.scope_spans {
            let mut scope_others = Vec::new();
            if let Some(s) = &ss.scope {
                scope_others.push(Pb::new().len(1, &s.encode_to_vec()));
            }
            if !ss.schema_url.is_empty() {
                scope_others.push(Pb::new().len(3, ss.schema_url.as_bytes()));
            }
            scope_others.extend(unknown_fields(&mut rng));
            let spans: Vec<Pb> = ss
                .spans
                .iter()
                .map(|s| {
                    let mut body = Pb::new().raw(&s.encode_to_vec());
                    for u in unknown_fields(&mut rng) {
                        body = body.raw(&u.0);
                    }
                    Pb::new().msg(2, body)
                })
                .collect();
            children.push(Pb::new().msg(2, interleave(scope_others, spans, &mut rng)));
        }
        out = out.msg(1, interleave(others, children, &mut rng));
        for u in unknown_fields(&mut rng) {
            out = out.raw(&u.0);
        }
    }
    out.0
}

fn unknown_fields(rng: &mut StdRng) -> Vec<Pb> {
    let n = rng.random_range(0..3);
    (0..n)
        .map(|_| {
            let field = rng.random_range(20..2000);
            match rng.random_range(0..5) {
                0 => Pb::new().varint(field, rng.random()),
                1 => Pb::new().fixed64(field, rng.random()),
                2 => Pb::new().fixed32(field, rng.random()),
                3 => Pb::new().len(field, b"\xffnot utf8 is fine here"),
                // group { 1: varint }
                _ => {
                    let mut g = Pb::new();
                    put_varint(&mut g.0, (u64::from(field) << 3) | 3);
                    g = g.varint(1, 5);
                    put_varint(&mut g.0, (u64::from(field) << 3) | 4);
                    g
                }
            }
        })
        .collect()
}

/// A message body's fields in a random order, some repeated, with unknown
/// fields among them.
/// `req` encoded with each span's body as `body` writes it (resources as
/// they are; scopes, and the span fields' order, left to `body`).
fn with_span_bodies(
    req: &ExportTraceServiceRequest,
    mut body: impl FnMut(&Span) -> Vec<u8>,
) -> Bytes {
    let mut out = Pb::new();
    for rs in &req.resource_spans {
        let mut spans = Pb::new();
        if let Some(r) = &rs.resource {
            spans = spans.len(1, &r.encode_to_vec());
        }
        for ss in &rs.scope_spans {
            let mut scope = Pb::new();
            for span in &ss.spans {
                scope = scope.msg(2, Pb::new().raw(&body(span)));
            }
            spans = spans.msg(2, scope);
        }
        out = out.msg(1, spans);
    }
    Bytes::from(out.0)
}

fn reordered(body: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut fields = Vec::new();
    let mut c = crate::wire::Cursor::new(body, 0..body.len());
    while !c.at_end() {
        let at = c.pos;
        let (field, wt) = c.tag().unwrap();
        c.skip(field, wt, 0).unwrap();
        fields.push(body[at..c.pos].to_vec());
    }
    if !fields.is_empty() {
        for _ in 0..rng.random_range(0..3) {
            let again = fields[rng.random_range(0..fields.len())].clone();
            fields.push(again);
        }
    }
    fields.extend(unknown_fields(rng).into_iter().map(|u| u.0));
    // Fisher-Yates, but leave it in order now and then.
    if rng.random_bool(0.8) {
        for i in (1..fields.len()).rev() {
            fields.swap(i, rng.random_range(0..=i));
        }
    }
    fields.concat()
}

/// Merges two lists at random, keeping each list's own order.
fn interleave(a: Vec<Pb>, b: Vec<Pb>, rng: &mut StdRng) -> Pb {
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    let mut out = Pb::new();
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (None, None) => return out,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            _ => rng.random_bool(0.5),
        };
        let next = if take_a { a.next() } else { b.next() };
        out = out.raw(&next.unwrap().0);
    }
}

/// What prost decodes from the subset of `req` keeping spans by flat index.
fn expected_subset(req: &ExportTraceServiceRequest, keep: &[bool]) -> ExportTraceServiceRequest {
    if keep.iter().all(|&k| k) {
        return req.clone();
    }
    let mut i = 0;
    let mut out = req.clone();
    for rs in &mut out.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans.retain(|_| {
                i += 1;
                keep[i - 1]
            });
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    out.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
    out
}

fn check_subsets(batch: &SpanBatch, truth: &ExportTraceServiceRequest, mask_seed: u64) {
    let mut rng = StdRng::seed_from_u64(mask_seed);
    for density in [0.0, 0.1, 0.5, 0.9, 1.0] {
        let keep: Vec<bool> = (0..batch.len()).map(|_| rng.random_bool(density)).collect();
        let expected = expected_subset(truth, &keep);
        let filtered = {
            let mut i = 0;
            batch.filter(|_| {
                i += 1;
                keep[i - 1]
            })
        };
        let indices: Vec<u32> = (0..batch.len() as u32)
            .filter(|&i| keep[i as usize])
            .collect();
        let selected = batch.select(&indices);
        assert_eq!(filtered.to_request(), expected);
        assert_eq!(selected.to_request(), expected);
        assert_eq!(filtered.spans(), selected.spans());
        assert_index_consistent(&selected);
        // The index built while encoding is the one a rescan builds.
        let rescanned = SpanBatch::scan(selected.bytes().clone()).unwrap();
        assert_eq!(rescanned.spans(), selected.spans());
        assert_eq!(rescanned.scopes(), selected.scopes());
        assert_eq!(rescanned.resources(), selected.resources());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn scanning_finds_exactly_the_encoded_spans(req in request_strategy()) {
        let batch = scan_request(&req);
        prop_assert_eq!(batch.len(), flatten(&req).len());
        assert_index_consistent(&batch);
        prop_assert_eq!(batch.to_request(), req.clone());
        // Bounded index: every indexed item needs at least 2 bytes of input.
        let items = batch.len() + batch.scopes().len() + batch.resources().len();
        prop_assert!(items * 2 <= batch.encoded_len());
    }

    #[test]
    fn any_subset_re_encodes_to_exactly_those_spans(req in request_strategy(), seed in any::<u64>()) {
        let batch = scan_request(&req);
        check_subsets(&batch, &req, seed);
    }

    #[test]
    fn hand_encoded_requests_with_unknown_and_interleaved_fields(
        req in request_strategy(),
        seed in any::<u64>(),
    ) {
        let bytes = assemble(&req, seed);
        let truth = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
        prop_assert_eq!(&truth, &req);
        let batch = SpanBatch::scan(Bytes::from(bytes)).unwrap();
        assert_index_consistent(&batch);
        check_subsets(&batch, &truth, seed);
    }

    /// The scanner takes a span's fields in field-number order first and
    /// everything else in its general loop: any order, repeats and
    /// unknown fields in between index the same as prost decodes them,
    /// and both ways of indexing accept the same.
    #[test]
    fn span_fields_in_any_order_and_repeated(
        req in request_strategy(),
        seed in any::<u64>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let bytes = with_span_bodies(&req, |span| reordered(&span.encode_to_vec(), &mut rng));
        let batch = SpanBatch::scan(bytes.clone()).unwrap();
        assert_index_consistent(&batch);
        let lazy = SpanBatch::scan_with(bytes, crate::Indexing::Lazy).unwrap();
        prop_assert_eq!(lazy.len(), batch.len());
    }

    /// A malformed field is refused wherever it sits among a span's
    /// fields: first and in order (where the in-order fast path takes
    /// it), last, or anywhere after a shuffle (the general loop), by the
    /// eager and the lazy scan alike.
    #[test]
    fn a_malformed_span_field_is_refused_in_any_position(
        req in request_strategy(),
        seed in any::<u64>(),
        which in 0usize..3,
        front in any::<bool>(),
        shuffle in any::<bool>(),
    ) {
        prop_assume!(req.resource_spans.iter().any(|rs| rs.scope_spans.iter().any(|ss| !ss.spans.is_empty())));
        // A 3-byte trace id; a name that is not UTF-8; start_time_unix_nano
        // (fixed64) as a varint.
        let bad: &[u8] = match which {
            0 => &[0x0a, 3, 1, 2, 3],
            1 => &[0x2a, 1, 0xff],
            _ => &[0x38, 1],
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let mut spoiled = false;
        let bytes = with_span_bodies(&req, |span| {
            let bytes = span.encode_to_vec();
            if spoiled {
                return bytes;
            }
            spoiled = true;
            let bytes = if front { [bad, &bytes].concat() } else { [&bytes, bad].concat() };
            if shuffle { reordered(&bytes, &mut rng) } else { bytes }
        });
        prop_assert!(SpanBatch::scan(bytes.clone()).is_err());
        prop_assert!(SpanBatch::scan_with(bytes, crate::Indexing::Lazy).is_err());
    }

    #[test]
    fn concat_and_split_round_trip(
        a in request_strategy(),
        b in request_strategy(),
        max in 1usize..6,
    ) {
        let (ba, bb) = (scan_request(&a), scan_request(&b));
        let joined = SpanBatch::concat(&[ba.clone(), bb.clone()]);
        let mut both = a.clone();
        both.resource_spans.extend(b.resource_spans.clone());
        prop_assert_eq!(joined.to_request(), both.clone());
        assert_index_consistent(&joined);

        let chunks = joined.split(max);
        prop_assert!(chunks.iter().all(|c| c.len() <= max));
        prop_assert_eq!(chunks.iter().map(SpanBatch::len).sum::<usize>(), joined.len());
        for c in &chunks {
            assert_index_consistent(c);
        }
        let rejoined = SpanBatch::concat(&chunks);
        prop_assert_eq!(flatten(&rejoined.to_request()), flatten(&both));
        prop_assert_eq!(
            rejoined.spans().iter().map(|s| (s.trace_id, s.span_id)).collect::<Vec<_>>(),
            joined.spans().iter().map(|s| (s.trace_id, s.span_id)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn json_round_trips(req in request_strategy()) {
        let batch = scan_request(&req);
        let json = batch.to_json();
        let back = SpanBatch::from_json(&json)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&json)));
        // Canonical OTLP/JSON leaves empty messages out, so they read back
        // as absent; everything else comes back as it was, and the JSON
        // written again is the same text.
        prop_assert_eq!(without_empty_messages(back.to_request()), without_empty_messages(req));
        let ids = |b: &SpanBatch| {
            b.spans()
                .iter()
                .map(|s| (s.trace_id, s.span_id, s.start_time_unix_nano, s.end_time_unix_nano, s.status, s.kind))
                .collect::<Vec<_>>()
        };
        prop_assert_eq!(ids(&back), ids(&batch));
        prop_assert_eq!(back.to_json(), json);
    }

    #[test]
    fn from_request_accepts_anything_and_try_from_request_explains(
        req in request_strategy(),
        bad_len in 1usize..20,
    ) {
        let mut bad = req.clone();
        let has_span = bad
            .resource_spans
            .iter_mut()
            .flat_map(|rs| rs.scope_spans.iter_mut())
            .flat_map(|ss| ss.spans.iter_mut())
            .next()
            .map(|s| s.trace_id = vec![1; bad_len])
            .is_some();
        let batch = SpanBatch::from_request(&bad);
        prop_assert_eq!(batch.len(), flatten(&bad).len());
        assert_index_consistent(&batch);
        if has_span && bad_len != 16 {
            prop_assert!(SpanBatch::try_from_request(&bad).is_err());
            prop_assert_eq!(batch.spans()[0].trace_id, [0; 16]);
        } else {
            prop_assert_eq!(batch.to_request(), bad);
        }
    }
}

#[test]
fn from_request_empties_values_nested_past_the_limit() {
    let mut value = AnyValue {
        value: Some(any_value::Value::StringValue("leaf".into())),
    };
    for _ in 0..60 {
        value = AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![KeyValue {
                    key: "k".into(),
                    value: Some(value),
                    ..Default::default()
                }],
            })),
        };
    }
    let mut s = span(1, 1, "deep");
    s.events = vec![Event {
        attributes: vec![KeyValue {
            key: "deep".into(),
            value: Some(value),
            ..Default::default()
        }],
        ..Default::default()
    }];
    let req = request(vec![(vec![], vec![vec![s]])]);
    assert!(SpanBatch::try_from_request(&req).is_err());
    let batch = SpanBatch::from_request(&req);
    assert_eq!(batch.len(), 1);
    assert_eq!(batch.span_name(0), "deep");
    assert_index_consistent(&batch);
}

/// `req` with every empty message field (resource, scope, status, an
/// attribute's value) unset: what canonical OTLP/JSON cannot tell apart.
fn without_empty_messages(mut req: ExportTraceServiceRequest) -> ExportTraceServiceRequest {
    fn attributes(kvs: &mut [KeyValue]) {
        for kv in kvs {
            if kv.value.as_ref().is_some_and(|v| v.value.is_none()) {
                kv.value = None;
            }
            if let Some(value) = kv.value.as_mut() {
                nested(value);
            }
        }
    }
    fn nested(value: &mut AnyValue) {
        match value.value.as_mut() {
            Some(any_value::Value::KvlistValue(list)) => attributes(&mut list.values),
            Some(any_value::Value::ArrayValue(array)) => array.values.iter_mut().for_each(nested),
            _ => {}
        }
    }
    fn unset_default<T: Default + PartialEq>(field: &mut Option<T>) {
        if field.as_ref().is_some_and(|v| *v == T::default()) {
            *field = None;
        }
    }
    for rs in &mut req.resource_spans {
        if let Some(resource) = rs.resource.as_mut() {
            attributes(&mut resource.attributes);
        }
        unset_default(&mut rs.resource);
        for ss in &mut rs.scope_spans {
            if let Some(scope) = ss.scope.as_mut() {
                attributes(&mut scope.attributes);
            }
            unset_default(&mut ss.scope);
            for span in &mut ss.spans {
                attributes(&mut span.attributes);
                unset_default(&mut span.status);
                for event in &mut span.events {
                    attributes(&mut event.attributes);
                }
                for link in &mut span.links {
                    attributes(&mut link.attributes);
                }
            }
        }
    }
    req
}
