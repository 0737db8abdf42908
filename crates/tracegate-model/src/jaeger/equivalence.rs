//! The direct encoders against the owned-message reference path: random
//! OTLP requests (every attribute type, ids, kinds, statuses, events, links,
//! scopes, resources, and wire layouts prost merges) must give the same
//! Jaeger bytes both ways.

use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;

use super::proto::{self, PostSpansRequest, SpanRefType, ValueType};
use super::{
    batches_from_span_batch, post_spans_requests, post_spans_requests_by_process,
    post_spans_requests_by_resource,
};
use crate::otlp::{
    any_value::Value as V, AnyValue, ArrayValue, Event, ExportTraceServiceRequest,
    InstrumentationScope, KeyValue, KeyValueList, Link, Resource, ResourceSpans, ScopeSpans, Span,
    Status,
};
use crate::wire::{put_varint, LEN};
use crate::SpanBatch;

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("service.name".to_string()),
        Just("opentracing.ref_type".to_string()),
        Just("event".to_string()),
        Just(String::new()),
        "[a-zé.]{1,8}",
    ]
}

fn leaf() -> impl Strategy<Value = Option<V>> {
    prop_oneof![
        Just(None),
        Just(Some(V::StringValue("child_of".into()))),
        ".{0,10}".prop_map(|s| Some(V::StringValue(s))),
        any::<bool>().prop_map(|b| Some(V::BoolValue(b))),
        any::<i64>().prop_map(|i| Some(V::IntValue(i))),
        // Every double, NaN, infinities and -0 included: bytes are compared.
        any::<f64>().prop_map(|d| Some(V::DoubleValue(d))),
        prop_oneof![Just(0.0), Just(-0.0), Just(1e21), Just(1.5e-7)]
            .prop_map(|d| Some(V::DoubleValue(d))),
        vec(any::<u8>(), 0..6).prop_map(|b| Some(V::BytesValue(b))),
        any::<i32>().prop_map(|i| Some(V::StringValueStrindex(i))),
    ]
}

fn value() -> impl Strategy<Value = AnyValue> {
    leaf()
        .prop_map(|value| AnyValue { value })
        .prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..3).prop_map(|values| AnyValue {
                    value: Some(V::ArrayValue(ArrayValue { values })),
                }),
                vec((key(), proptest::option::of(inner)), 0..3).prop_map(|kvs| AnyValue {
                    value: Some(V::KvlistValue(KeyValueList {
                        values: kvs
                            .into_iter()
                            .map(|(key, value)| KeyValue {
                                key,
                                value,
                                ..Default::default()
                            })
                            .collect(),
                    })),
                }),
            ]
        })
}

fn key_value() -> impl Strategy<Value = KeyValue> {
    (key(), proptest::option::weighted(0.9, value())).prop_map(|(key, value)| KeyValue {
        key,
        value,
        ..Default::default()
    })
}

fn attributes(max: usize) -> impl Strategy<Value = Vec<KeyValue>> {
    vec(key_value(), 0..max)
}

/// Attributes where the key `special` (which the mapping reads) is common,
/// often more than once, with string values that matter to it.
fn attributes_with(special: &'static str, max: usize) -> impl Strategy<Value = Vec<KeyValue>> {
    let special_kv = (
        prop_oneof![
            Just(V::StringValue("child_of".into())),
            Just(V::StringValue("follows_from".into())),
            Just(V::StringValue(String::new())),
            Just(V::StringValue("svc".into())),
            leaf().prop_filter_map("a value", |v| v),
        ],
        proptest::bool::weighted(0.1),
    )
        .prop_map(move |(value, absent)| KeyValue {
            key: special.to_string(),
            value: (!absent).then_some(AnyValue { value: Some(value) }),
            ..Default::default()
        });
    vec(prop_oneof![special_kv, key_value()], 0..max)
}

/// Valid ids (the scanner refuses others), sometimes empty or all zero.
fn id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![8 => vec(any::<u8>(), len), 1 => Just(Vec::new()), 1 => Just(vec![0; len])]
}

fn event() -> impl Strategy<Value = Event> {
    (
        any::<u64>(),
        "[a-z ]{0,6}",
        attributes_with("event", 3),
        0u32..3,
    )
        .prop_map(
            |(time_unix_nano, name, attributes, dropped_attributes_count)| Event {
                time_unix_nano,
                name,
                attributes,
                dropped_attributes_count,
            },
        )
}

fn link() -> impl Strategy<Value = (bool, Link)> {
    (
        // Sometimes a link to the span's own parent.
        proptest::bool::weighted(0.3),
        (
            id(16),
            id(8),
            "[a-z=]{0,6}",
            attributes_with("opentracing.ref_type", 4),
            any::<u32>(),
            0u32..3,
        ),
    )
        .prop_map(
            |(to_parent, (trace_id, span_id, trace_state, attributes, flags, dropped))| {
                (
                    to_parent,
                    Link {
                        trace_id,
                        span_id,
                        trace_state,
                        attributes,
                        dropped_attributes_count: dropped,
                        flags,
                    },
                )
            },
        )
}

fn span() -> impl Strategy<Value = Span> {
    (
        (id(16), id(8), id(8), ".{0,10}", "[a-z=,:;0-9]{0,8}"),
        (-1i32..8, any::<u64>(), any::<u64>(), any::<u32>()),
        attributes(6),
        proptest::option::of((-1i32..4, ".{0,6}")),
        vec(event(), 0..3),
        vec(link(), 0..3),
        (0u32..3, 0u32..3, 0u32..3),
    )
        .prop_map(
            |(
                (trace_id, span_id, parent_span_id, name, trace_state),
                (kind, start, end, flags),
                attributes,
                status,
                events,
                links,
                (dropped_attributes_count, dropped_events_count, dropped_links_count),
            )| {
                let links = links
                    .into_iter()
                    .map(|(to_parent, link)| {
                        if to_parent {
                            Link {
                                trace_id: trace_id.clone(),
                                span_id: parent_span_id.clone(),
                                ..link
                            }
                        } else {
                            link
                        }
                    })
                    .collect();
                Span {
                    trace_id,
                    span_id,
                    parent_span_id,
                    name,
                    trace_state,
                    kind,
                    // Near each other too, for small and negative durations.
                    start_time_unix_nano: start,
                    end_time_unix_nano: if end % 2 == 0 {
                        start.wrapping_add(end % 5_000_000_000)
                    } else {
                        end
                    },
                    flags,
                    attributes,
                    status: status.map(|(code, message)| Status { code, message }),
                    events,
                    links,
                    dropped_attributes_count,
                    dropped_events_count,
                    dropped_links_count,
                }
            },
        )
}

fn scope_spans() -> impl Strategy<Value = ScopeSpans> {
    (
        proptest::option::of(("[a-z.]{0,8}", "[0-9.]{0,5}", attributes(2))),
        vec(span(), 0..4),
    )
        .prop_map(|(scope, spans)| ScopeSpans {
            scope: scope.map(|(name, version, attributes)| InstrumentationScope {
                name,
                version,
                attributes,
                dropped_attributes_count: 0,
            }),
            spans,
            schema_url: String::new(),
        })
}

fn request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    vec(
        (
            proptest::option::of(attributes_with("service.name", 5)),
            vec(scope_spans(), 0..3),
        )
            .prop_map(|(resource, scope_spans)| ResourceSpans {
                resource: resource.map(|attributes| Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_spans,
                schema_url: String::new(),
            }),
        0..4,
    )
    .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

/// What the owned path sends: prost's encoding of each mapped batch.
fn reference(batch: &SpanBatch) -> Vec<Vec<u8>> {
    batches_from_span_batch(batch)
        .into_iter()
        .map(|b| PostSpansRequest { batch: Some(b) }.encode_to_vec())
        .collect()
}

fn assert_same_export(batch: &SpanBatch) {
    let want = reference(batch);
    let got: Vec<Vec<u8>> = post_spans_requests(batch)
        .iter()
        .map(|b| b.to_vec())
        .collect();
    if got != want {
        // Decoded, for a readable difference (NaN aside, the same).
        let decode = |r: &[Vec<u8>]| -> Vec<PostSpansRequest> {
            r.iter()
                .map(|b| PostSpansRequest::decode(&b[..]).expect("decodes"))
                .collect()
        };
        assert_eq!(decode(&got), decode(&want));
        assert_eq!(got, want, "same messages, different bytes");
    }
}

fn field(out: &mut Vec<u8>, number: u32, body: &[u8]) {
    put_varint(out, u64::from(number) << 3 | u64::from(LEN));
    put_varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// Layouts prost merges, written by hand: per span, a second span's fields
/// after its own (the last scalar wins, status merges, lists concatenate),
/// an attribute made of two `KeyValue`s, and one whose value is two
/// `AnyValue`s; repeated `resource` and `scope` fields.
#[derive(Debug, Clone)]
struct Quirks {
    extra_span: Option<Span>,
    merged_key_values: Option<(KeyValue, KeyValue)>,
    merged_values: Option<(String, AnyValue, AnyValue)>,
    extra_resource: Option<Vec<KeyValue>>,
    extra_scope: Option<(String, String)>,
}

fn quirks() -> impl Strategy<Value = Quirks> {
    (
        proptest::option::of(span()),
        proptest::option::of((key_value(), key_value())),
        proptest::option::of((key(), value(), value())),
        proptest::option::of(attributes_with("service.name", 3)),
        proptest::option::of(("[a-z]{0,4}", "[0-9]{0,3}")),
    )
        .prop_map(
            |(extra_span, merged_key_values, merged_values, extra_resource, extra_scope)| Quirks {
                extra_span,
                merged_key_values,
                merged_values,
                extra_resource,
                extra_scope,
            },
        )
}

fn assemble(req: &ExportTraceServiceRequest, q: &Quirks) -> Vec<u8> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let mut rs_body = ResourceSpans {
            scope_spans: Vec::new(),
            ..rs.clone()
        }
        .encode_to_vec();
        for ss in &rs.scope_spans {
            let mut ss_body = ScopeSpans {
                spans: Vec::new(),
                ..ss.clone()
            }
            .encode_to_vec();
            for span in &ss.spans {
                let mut body = span.encode_to_vec();
                if let Some(extra) = &q.extra_span {
                    body.extend(extra.encode_to_vec());
                }
                if let Some((a, b)) = &q.merged_key_values {
                    let mut kv = a.encode_to_vec();
                    kv.extend(b.encode_to_vec());
                    field(&mut body, 9, &kv);
                }
                if let Some((key, a, b)) = &q.merged_values {
                    let mut kv = Vec::new();
                    field(&mut kv, 1, key.as_bytes());
                    let mut value = a.encode_to_vec();
                    value.extend(b.encode_to_vec());
                    field(&mut kv, 2, &value);
                    field(&mut body, 9, &kv);
                }
                field(&mut ss_body, 2, &body);
            }
            if let Some((name, version)) = &q.extra_scope {
                let scope = InstrumentationScope {
                    name: name.clone(),
                    version: version.clone(),
                    ..Default::default()
                };
                field(&mut ss_body, 1, &scope.encode_to_vec());
            }
            field(&mut rs_body, 2, &ss_body);
        }
        if let Some(attributes) = &q.extra_resource {
            let resource = Resource {
                attributes: attributes.clone(),
                ..Default::default()
            };
            field(&mut rs_body, 1, &resource.encode_to_vec());
        }
        field(&mut out, 1, &rs_body);
    }
    out
}

/// The requests by process against the requests by resource: each group's
/// request holds its resources' spans, in order, under the process each of
/// them has alone, and every resource with a request of its own is in
/// exactly one group. Compared as bytes (a NaN tag is not equal to itself).
fn assert_grouped_export(batch: &SpanBatch) {
    let decode = |b: &[u8]| {
        PostSpansRequest::decode(b)
            .expect("decodes")
            .batch
            .expect("a batch")
    };
    let alone: std::collections::HashMap<usize, proto::Batch> =
        post_spans_requests_by_resource(batch)
            .into_iter()
            .map(|(r, b)| (r, decode(&b)))
            .collect();
    let mut grouped = Vec::new();
    for (group, request) in post_spans_requests_by_process(batch) {
        assert!(group.windows(2).all(|w| w[0] < w[1]), "{group:?}");
        let got = decode(&request);
        let members: Vec<&proto::Batch> = group.iter().filter_map(|r| alone.get(r)).collect();
        assert!(!members.is_empty(), "a request for {group:?}, none alone");
        let spans = |spans: &[proto::Span]| -> Vec<Vec<u8>> {
            spans.iter().map(Message::encode_to_vec).collect()
        };
        let want: Vec<Vec<u8>> = members.iter().flat_map(|b| spans(&b.spans)).collect();
        assert_eq!(spans(&got.spans), want, "the spans of {group:?}");
        for member in &members {
            assert_eq!(
                member.process.as_ref().map(Message::encode_to_vec),
                got.process.as_ref().map(Message::encode_to_vec)
            );
        }
        grouped.extend(group);
    }
    grouped.sort_unstable();
    assert!(
        grouped.windows(2).all(|w| w[0] < w[1]),
        "a resource in two groups"
    );
    for resource in alone.keys() {
        assert!(
            grouped.binary_search(resource).is_ok(),
            "{resource} in no group"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn resources_with_the_same_attributes_share_one_request(req in request()) {
        let batch = SpanBatch::try_from_request(&req).expect("valid ids");
        assert_grouped_export(&batch);
        // The same resources twice over: no more requests than once.
        let mut twice = req.clone();
        twice.resource_spans.extend(req.resource_spans.iter().cloned());
        let twice = SpanBatch::try_from_request(&twice).expect("valid ids");
        assert_grouped_export(&twice);
        prop_assert_eq!(
            post_spans_requests_by_process(&twice).len(),
            post_spans_requests_by_process(&batch).len()
        );
    }

    #[test]
    fn export_bytes_match_the_owned_path(req in request(), keep_seed in any::<u64>()) {
        let batch = SpanBatch::try_from_request(&req).expect("valid ids");
        assert_same_export(&batch);
        // The exporter sees subsets, re-encoded from the kept spans' bytes.
        let mut bits = keep_seed;
        let subset = batch.filter(|_| {
            bits = bits.rotate_left(1);
            bits & 1 == 1
        });
        assert_same_export(&subset);
    }

    #[test]
    fn export_bytes_match_the_owned_path_for_merged_layouts(req in request(), q in quirks()) {
        let bytes = assemble(&req, &q);
        let batch = SpanBatch::scan(bytes.into()).expect("valid");
        assert_same_export(&batch);
        assert_grouped_export(&batch);
    }
}

#[test]
fn export_of_an_empty_batch_sends_nothing() {
    assert!(post_spans_requests(&SpanBatch::default()).is_empty());
}

#[test]
fn each_request_names_its_resource() {
    let with_spans = |service: &str| ResourceSpans {
        resource: Some(Resource {
            attributes: vec![crate::otlp::string_kv("service.name", service)],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: vec![Span {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                ..Default::default()
            }],
            ..Default::default()
        }],
        schema_url: String::new(),
    };
    // The middle resource has neither attributes nor scopes: no request.
    let batch = SpanBatch::from_request(&ExportTraceServiceRequest {
        resource_spans: vec![with_spans("a"), ResourceSpans::default(), with_spans("c")],
    });
    let by_resource = post_spans_requests_by_resource(&batch);
    let resources: Vec<usize> = by_resource.iter().map(|(r, _)| *r).collect();
    assert_eq!(resources, vec![0, 2]);
    let requests: Vec<_> = by_resource.into_iter().map(|(_, b)| b).collect();
    assert_eq!(requests, post_spans_requests(&batch));
    let sent = PostSpansRequest::decode(requests[1].clone()).unwrap();
    assert_eq!(sent.batch.unwrap().process.unwrap().service_name, "c");
}

#[test]
fn only_byte_identical_attributes_share_a_process() {
    let resource = |attributes: &[(&str, &str)], span_id: u8| ResourceSpans {
        resource: Some(Resource {
            attributes: attributes
                .iter()
                .map(|(k, v)| crate::otlp::string_kv(k, v))
                .collect(),
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: vec![Span {
                trace_id: vec![1; 16],
                span_id: vec![span_id; 8],
                ..Default::default()
            }],
            ..Default::default()
        }],
        schema_url: String::new(),
    };
    let a = [("service.name", "a"), ("host.name", "h")];
    let a_reordered = [("host.name", "h"), ("service.name", "a")];
    let batch = SpanBatch::from_request(&ExportTraceServiceRequest {
        resource_spans: vec![
            resource(&a, 1),
            resource(&[("service.name", "b")], 2),
            resource(&a, 3),
            resource(&a_reordered, 4),
            resource(&a, 5),
        ],
    });
    let requests = post_spans_requests_by_process(&batch);
    let groups: Vec<&[usize]> = requests.iter().map(|(g, _)| &g[..]).collect();
    assert_eq!(groups, vec![&[0, 2, 4][..], &[1], &[3]]);
    let first = PostSpansRequest::decode(requests[0].1.clone())
        .unwrap()
        .batch
        .unwrap();
    let span_ids: Vec<u8> = first.spans.iter().map(|s| s.span_id[0]).collect();
    assert_eq!(span_ids, vec![1, 3, 5]);
    assert_eq!(first.process.unwrap().service_name, "a");
    assert_grouped_export(&batch);
}

#[test]
fn long_spans_and_logs_get_multi_byte_lengths() {
    let long = "x".repeat(20_000);
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: None,
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    name: long.clone(),
                    events: vec![Event {
                        name: long.clone(),
                        ..Default::default()
                    }],
                    attributes: vec![KeyValue {
                        key: "k".into(),
                        value: Some(AnyValue {
                            value: Some(V::StringValue(long)),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    assert_same_export(&SpanBatch::try_from_request(&req).unwrap());
}
/// `KeyValue`s whose fields repeat, as prost merges them: the last key,
/// values merged member by member, arrays concatenated.
#[test]
fn repeated_key_value_fields_merge_as_prost_merges() {
    let value = |v: V| AnyValue { value: Some(v) }.encode_to_vec();
    let array = |i: i64| {
        value(V::ArrayValue(ArrayValue {
            values: vec![AnyValue {
                value: Some(V::IntValue(i)),
            }],
        }))
    };
    let kv = |keys: &[&str], values: &[Vec<u8>]| {
        let mut out = Vec::new();
        for k in keys {
            field(&mut out, 1, k.as_bytes());
        }
        for v in values {
            field(&mut out, 2, v);
        }
        out
    };
    let x = value(V::StringValue("x".into()));
    let cases = [
        (kv(&["a"], &[x.clone(), Vec::new()]), stag("a", "x")),
        (kv(&["b"], &[x.clone(), value(V::IntValue(5))]), {
            proto::KeyValue {
                v_type: ValueType::Int64 as i32,
                v_int64: 5,
                ..stag("b", "")
            }
        }),
        (kv(&["c"], &[array(1), array(2)]), stag("c", "[1,2]")),
        (
            kv(&["d"], &[[array(1), x.clone()].concat()]),
            stag("d", "x"),
        ),
        (
            kv(&["e"], &[[x.clone(), array(1)].concat()]),
            stag("e", "[1]"),
        ),
        (kv(&["f", "g"], std::slice::from_ref(&x)), stag("g", "x")),
    ];
    let mut span = Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        ..Default::default()
    }
    .encode_to_vec();
    let mut event = Vec::new();
    let mut resource = Vec::new();
    for (kv, _) in &cases {
        field(&mut span, 9, kv);
        field(&mut event, 3, kv);
        field(&mut resource, 1, kv);
    }
    field(
        &mut resource,
        1,
        &kv(&["service.name"], &[x.clone(), Vec::new()]),
    );
    // A link typed by a merged value.
    let mut link = Vec::new();
    field(
        &mut link,
        4,
        &kv(
            &["opentracing.ref_type"],
            &[value(V::StringValue("child_of".into())), Vec::new()],
        ),
    );
    field(&mut span, 11, &event);
    field(&mut span, 13, &link);
    let mut scope_spans = Vec::new();
    field(&mut scope_spans, 2, &span);
    let mut resource_spans = Vec::new();
    field(&mut resource_spans, 1, &resource);
    field(&mut resource_spans, 2, &scope_spans);
    let mut request = Vec::new();
    field(&mut request, 1, &resource_spans);
    let batch = SpanBatch::scan(request.into()).unwrap();
    assert_same_export(&batch);

    let sent = PostSpansRequest::decode(post_spans_requests(&batch)[0].clone())
        .unwrap()
        .batch
        .unwrap();
    let want: Vec<proto::KeyValue> = cases.iter().map(|(_, tag)| tag.clone()).collect();
    assert_eq!(sent.spans[0].tags, want);
    assert_eq!(sent.spans[0].logs[0].fields, want);
    assert_eq!(
        sent.spans[0].references[0].ref_type,
        SpanRefType::ChildOf as i32
    );
    let process = sent.process.unwrap();
    assert_eq!((process.service_name.as_str(), process.tags), ("x", want));
}

fn stag(key: &str, value: &str) -> proto::KeyValue {
    proto::KeyValue {
        key: key.into(),
        v_str: value.into(),
        ..Default::default()
    }
}
