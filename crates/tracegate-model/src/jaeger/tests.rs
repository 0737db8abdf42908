//! Golden tests of the mapping, field by field, both directions, after the
//! collector's translator tests.

use prost_types::{Duration, Timestamp};

use super::from_otlp::base64_for_tests;
use super::proto::{self, SpanRefType, ValueType};
use super::*;
use crate::otlp::{
    any_value::Value as V, AnyValue, ArrayValue, Event, ExportTraceServiceRequest,
    InstrumentationScope, KeyValue, KeyValueList, Link, ProtoStatusCode, Resource, ResourceSpans,
    ScopeSpans, Span, SpanKind, Status,
};

const TRACE: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
const OTHER_TRACE: [u8; 16] = [0xff; 16];
const SPAN: [u8; 8] = [0xaa, 2, 3, 4, 5, 6, 7, 8];
const PARENT: [u8; 8] = [0xbb, 2, 3, 4, 5, 6, 7, 8];
const LINKED: [u8; 8] = [0xcc, 2, 3, 4, 5, 6, 7, 8];
// 2023-11-14T22:13:20.123456789Z, to the nanosecond.
const START: u64 = 1_700_000_000_123_456_789;
const END: u64 = START + 2_000_000_001;

fn kv(key: &str, value: V) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}
fn str_of(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(V::StringValue(s)) => s.clone(),
        other => panic!("not a string: {other:?}"),
    }
}
fn s(v: &str) -> V {
    V::StringValue(v.into())
}
fn tag(key: &str, v_type: ValueType) -> proto::KeyValue {
    proto::KeyValue {
        key: key.into(),
        v_type: v_type as i32,
        ..Default::default()
    }
}
fn stag(key: &str, value: &str) -> proto::KeyValue {
    proto::KeyValue {
        v_str: value.into(),
        ..tag(key, ValueType::String)
    }
}
fn btag(key: &str, value: bool) -> proto::KeyValue {
    proto::KeyValue {
        v_bool: value,
        ..tag(key, ValueType::Bool)
    }
}
fn itag(key: &str, value: i64) -> proto::KeyValue {
    proto::KeyValue {
        v_int64: value,
        ..tag(key, ValueType::Int64)
    }
}

/// Every attribute type, as OTLP attributes and as the tags they become.
fn every_type() -> (Vec<KeyValue>, Vec<proto::KeyValue>) {
    let map = V::KvlistValue(KeyValueList {
        values: vec![
            kv("z", V::IntValue(1)),
            kv("a", s("x")),
            kv("b", V::BytesValue(vec![0, 1, 2, 0xff])),
            kv("c", V::DoubleValue(1.5)),
        ],
    });
    let array = V::ArrayValue(ArrayValue {
        values: vec![
            AnyValue {
                value: Some(s("x")),
            },
            AnyValue {
                value: Some(V::BoolValue(true)),
            },
            AnyValue { value: None },
        ],
    });
    let attrs = vec![
        kv("str", s("hello")),
        kv("bool", V::BoolValue(true)),
        kv("int", V::IntValue(-7)),
        kv("double", V::DoubleValue(3.25)),
        kv("bytes", V::BytesValue(vec![1, 2, 3])),
        kv("map", map),
        kv("array", array),
        KeyValue {
            key: "empty".into(),
            value: None,
            ..Default::default()
        },
    ];
    let tags = vec![
        stag("str", "hello"),
        btag("bool", true),
        itag("int", -7),
        proto::KeyValue {
            v_float64: 3.25,
            ..tag("double", ValueType::Float64)
        },
        proto::KeyValue {
            v_binary: vec![1, 2, 3],
            ..tag("bytes", ValueType::Binary)
        },
        stag("map", r#"{"a":"x","b":"AAEC/w==","c":1.5,"z":1}"#),
        stag("array", r#"["x",true,null]"#),
        stag("empty", ""),
    ];
    (attrs, tags)
}

fn otlp_span() -> Span {
    Span {
        trace_id: TRACE.to_vec(),
        span_id: SPAN.to_vec(),
        parent_span_id: PARENT.to_vec(),
        trace_state: "rojo=00f067aa0ba902b7,ot=th:8".into(),
        name: "GET /orders".into(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: START,
        end_time_unix_nano: END,
        attributes: every_type().0,
        events: vec![
            Event {
                time_unix_nano: START + 5,
                name: "cache miss".into(),
                attributes: vec![kv("key", s("k1"))],
                ..Default::default()
            },
            Event {
                time_unix_nano: START + 6,
                name: String::new(),
                attributes: vec![kv("n", V::IntValue(3))],
                ..Default::default()
            },
        ],
        links: vec![
            Link {
                trace_id: OTHER_TRACE.to_vec(),
                span_id: LINKED.to_vec(),
                ..Default::default()
            },
            Link {
                trace_id: OTHER_TRACE.to_vec(),
                span_id: PARENT.to_vec(),
                attributes: vec![kv("opentracing.ref_type", s("child_of"))],
                ..Default::default()
            },
        ],
        status: Some(Status {
            code: ProtoStatusCode::Error as i32,
            message: "boom".into(),
        }),
        ..Default::default()
    }
}

fn otlp_request() -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s("checkout")),
                    kv("k8s.pod.name", s("pod-1")),
                    kv("sampler.type", s("probabilistic")),
                    kv("sampler.param", V::DoubleValue(0.25)),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "io.opentelemetry.http".into(),
                    version: "1.2.3".into(),
                    ..Default::default()
                }),
                spans: vec![otlp_span()],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn jaeger_span() -> proto::Span {
    let mut tags = vec![
        stag("otel.scope.name", "io.opentelemetry.http"),
        stag("otel.scope.version", "1.2.3"),
    ];
    tags.extend(every_type().1);
    tags.extend([
        stag("span.kind", "server"),
        stag("otel.status_code", "ERROR"),
        btag("error", true),
        stag("otel.status_description", "boom"),
        stag("w3c.tracestate", "rojo=00f067aa0ba902b7,ot=th:8"),
    ]);
    proto::Span {
        trace_id: TRACE.to_vec(),
        span_id: SPAN.to_vec(),
        operation_name: "GET /orders".into(),
        references: vec![
            proto::SpanRef {
                trace_id: TRACE.to_vec(),
                span_id: PARENT.to_vec(),
                ref_type: SpanRefType::ChildOf as i32,
            },
            proto::SpanRef {
                trace_id: OTHER_TRACE.to_vec(),
                span_id: LINKED.to_vec(),
                ref_type: SpanRefType::FollowsFrom as i32,
            },
            proto::SpanRef {
                trace_id: OTHER_TRACE.to_vec(),
                span_id: PARENT.to_vec(),
                ref_type: SpanRefType::ChildOf as i32,
            },
        ],
        start_time: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_789,
        }),
        duration: Some(Duration {
            seconds: 2,
            nanos: 1,
        }),
        tags,
        logs: vec![
            proto::Log {
                timestamp: Some(Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 123_456_794,
                }),
                fields: vec![stag("event", "cache miss"), stag("key", "k1")],
            },
            proto::Log {
                timestamp: Some(Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 123_456_795,
                }),
                fields: vec![itag("n", 3)],
            },
        ],
        ..Default::default()
    }
}

fn jaeger_batch() -> proto::Batch {
    proto::Batch {
        spans: vec![jaeger_span()],
        process: Some(proto::Process {
            service_name: "checkout".into(),
            tags: vec![
                stag("k8s.pod.name", "pod-1"),
                stag("sampler.type", "probabilistic"),
                proto::KeyValue {
                    v_float64: 0.25,
                    ..tag("sampler.param", ValueType::Float64)
                },
            ],
        }),
    }
}

#[test]
fn otlp_to_jaeger_every_field() {
    assert_eq!(batches_from_request(otlp_request()), vec![jaeger_batch()]);
    // The exporter's encoder, straight from the OTLP bytes.
    let batch = crate::SpanBatch::try_from_request(&otlp_request()).unwrap();
    let sent: Vec<proto::Batch> = post_spans_requests(&batch)
        .into_iter()
        .map(|request| {
            <proto::PostSpansRequest as prost::Message>::decode(request)
                .unwrap()
                .batch
                .unwrap()
        })
        .collect();
    assert_eq!(sent, vec![jaeger_batch()]);
}

#[test]
fn jaeger_to_otlp_every_field() {
    let got = request_from_batches([jaeger_batch()]).unwrap();
    let mut want = otlp_request();
    let span = &mut want.resource_spans[0].scope_spans[0].spans[0];
    // Jaeger keeps a reference's type only, as the link's one attribute.
    // The collector drops every CHILD_OF reference to the parent's span id,
    // whatever its trace: the second link does not come back.
    span.links.truncate(1);
    span.links[0].attributes = vec![kv("opentracing.ref_type", s("follows_from"))];
    // Maps and arrays come back as the JSON text they were sent as.
    for (attribute, tag) in span.attributes.iter_mut().zip(every_type().1) {
        if tag.v_type == ValueType::String as i32 {
            *attribute = kv(&tag.key, s(&tag.v_str));
        }
    }
    assert_eq!(got, want);
}

#[test]
fn otlp_round_trips_through_jaeger() {
    let request = otlp_request();
    let back = request_from_batches(batches_from_request(request.clone())).unwrap();
    let (a, b) = (
        &request.resource_spans[0].scope_spans[0].spans[0],
        &back.resource_spans[0].scope_spans[0].spans[0],
    );
    assert_eq!(
        back.resource_spans[0].resource,
        request.resource_spans[0].resource
    );
    assert_eq!(
        back.resource_spans[0].scope_spans[0].scope,
        request.resource_spans[0].scope_spans[0].scope
    );
    assert_eq!(
        (
            &a.trace_id,
            &a.span_id,
            &a.parent_span_id,
            &a.trace_state,
            &a.name,
            a.kind
        ),
        (
            &b.trace_id,
            &b.span_id,
            &b.parent_span_id,
            &b.trace_state,
            &b.name,
            b.kind
        )
    );
    assert_eq!(
        (a.start_time_unix_nano, a.end_time_unix_nano),
        (b.start_time_unix_nano, b.end_time_unix_nano)
    );
    assert_eq!((&a.status, &a.events), (&b.status, &b.events));
    // Maps and arrays come back as their JSON text (Jaeger has no such type).
    let scalar = |kvs: &[KeyValue]| -> Vec<KeyValue> {
        kvs.iter()
            .filter(|kv| !matches!(kv.key.as_str(), "map" | "array" | "empty"))
            .cloned()
            .collect()
    };
    assert_eq!(scalar(&a.attributes), scalar(&b.attributes));
}

#[test]
fn span_kinds_both_ways() {
    for (kind, name) in [
        (SpanKind::Client, Some("client")),
        (SpanKind::Server, Some("server")),
        (SpanKind::Producer, Some("producer")),
        (SpanKind::Consumer, Some("consumer")),
        (SpanKind::Internal, Some("internal")),
        (SpanKind::Unspecified, None),
    ] {
        let request = one_span(Span {
            kind: kind as i32,
            ..bare_span()
        });
        let batch = &batches_from_request(request.clone())[0];
        let tag = batch.spans[0].tags.iter().find(|t| t.key == "span.kind");
        assert_eq!(tag.map(|t| t.v_str.as_str()), name, "{kind:?}");
        let back = request_from_batches(batches_from_request(request)).unwrap();
        assert_eq!(
            back.resource_spans[0].scope_spans[0].spans[0].kind,
            kind as i32
        );
    }
}

fn bare_span() -> Span {
    Span {
        trace_id: TRACE.to_vec(),
        span_id: SPAN.to_vec(),
        name: "op".into(),
        start_time_unix_nano: START,
        end_time_unix_nano: END,
        ..Default::default()
    }
}

fn one_span(span: Span) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s("svc"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope::default()),
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn status_codes_to_jaeger() {
    let tags_of = |code: ProtoStatusCode, message: &str| {
        let request = one_span(Span {
            status: Some(Status {
                code: code as i32,
                message: message.into(),
            }),
            ..bare_span()
        });
        batches_from_request(request).remove(0).spans.remove(0).tags
    };
    assert_eq!(tags_of(ProtoStatusCode::Unset, ""), vec![]);
    assert_eq!(
        tags_of(ProtoStatusCode::Ok, "fine"),
        vec![
            stag("otel.status_code", "OK"),
            stag("otel.status_description", "fine")
        ]
    );
    assert_eq!(
        tags_of(ProtoStatusCode::Error, ""),
        vec![stag("otel.status_code", "ERROR"), btag("error", true)]
    );
}

fn status_from_tags(tags: Vec<proto::KeyValue>) -> (Option<Status>, Vec<KeyValue>) {
    let batch = proto::Batch {
        spans: vec![proto::Span {
            trace_id: TRACE.to_vec(),
            span_id: SPAN.to_vec(),
            tags,
            ..Default::default()
        }],
        process: None,
    };
    let mut request = request_from_batches([batch]).unwrap();
    let span = request.resource_spans[0].scope_spans[0].spans.remove(0);
    (span.status, span.attributes)
}

#[test]
fn status_from_jaeger_tags_as_the_collector() {
    let st = |code: ProtoStatusCode, message: &str| {
        Some(Status {
            code: code as i32,
            message: message.into(),
        })
    };
    // error=true wins over otel.status_code and takes the description.
    assert_eq!(
        status_from_tags(vec![
            btag("error", true),
            stag("otel.status_code", "OK"),
            stag("otel.status_description", "d")
        ]),
        (st(ProtoStatusCode::Error, "d"), vec![])
    );
    // error=false stays an attribute; otel.status_code decides, any case.
    assert_eq!(
        status_from_tags(vec![btag("error", false), stag("otel.status_code", "ok")]),
        (
            st(ProtoStatusCode::Ok, ""),
            vec![kv("error", V::BoolValue(false))]
        )
    );
    // Without either, an HTTP status: 5xx error, 4xx error for clients only.
    assert_eq!(
        status_from_tags(vec![
            itag("http.status_code", 503),
            stag("http.status_message", "down")
        ])
        .0,
        st(ProtoStatusCode::Error, "down")
    );
    assert_eq!(
        status_from_tags(vec![
            stag("http.status_code", "404"),
            stag("span.kind", "server")
        ])
        .0,
        None
    );
    assert_eq!(
        status_from_tags(vec![
            stag("http.status_code", "404"),
            stag("span.kind", "client")
        ])
        .0,
        st(ProtoStatusCode::Error, "")
    );
    assert_eq!(
        status_from_tags(vec![itag("http.status_code", 200)]).0,
        None
    );
    // error=true alone: the HTTP status message is the description.
    assert_eq!(
        status_from_tags(vec![
            btag("error", true),
            stag("http.status_message", "bad")
        ])
        .0,
        st(ProtoStatusCode::Error, "bad")
    );
}

#[test]
fn resource_without_attributes_has_the_placeholder_service() {
    let mut request = one_span(bare_span());
    request.resource_spans[0].resource = None;
    let batch = batches_from_request(request).remove(0);
    assert_eq!(
        batch.process.as_ref().unwrap().service_name,
        "OTLPResourceNoServiceName"
    );
    let back = request_from_batches([batch]).unwrap();
    assert!(back.resource_spans[0]
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .is_empty());
    // A resource with neither attributes nor scopes makes no batch.
    let empty = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans::default()],
    };
    assert!(batches_from_request(empty).is_empty());
}

#[test]
fn jaeger_process_tags_renamed_as_the_collector() {
    let batch = proto::Batch {
        spans: vec![],
        process: Some(proto::Process {
            service_name: "api".into(),
            tags: vec![
                stag("hostname", "h1"),
                stag("jaeger.version", "Go-2.30.0"),
                stag("ip", "10.0.0.1"),
            ],
        }),
    };
    let request = request_from_batches([batch]).unwrap();
    assert_eq!(
        request.resource_spans[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes,
        vec![
            kv("service.name", s("api")),
            kv("ip", s("10.0.0.1")),
            kv("host.name", s("h1")),
            kv("opencensus.exporterversion", s("Jaeger-Go-2.30.0")),
        ]
    );
}

#[test]
fn spans_are_grouped_by_process_and_scope() {
    let process = |name: &str| {
        Some(proto::Process {
            service_name: name.into(),
            tags: vec![],
        })
    };
    let span = |id: u8, scope: Option<&str>, own: Option<proto::Process>| proto::Span {
        trace_id: TRACE.to_vec(),
        span_id: vec![id; 8],
        tags: scope
            .map(|n| vec![stag("otel.scope.name", n)])
            .unwrap_or_default(),
        process: own,
        ..Default::default()
    };
    let batches = [
        proto::Batch {
            spans: vec![
                span(1, Some("s1"), None),
                span(2, None, process("b")),
                span(3, Some("s1"), None),
                proto::Span::default(),
            ],
            process: process("a"),
        },
        proto::Batch {
            spans: vec![span(4, Some("s2"), None)],
            process: process("a"),
        },
    ];
    let request = request_from_batches(batches).unwrap();
    type Shape = Vec<(String, Vec<(String, Vec<u8>)>)>;
    let shape: Shape = request
        .resource_spans
        .iter()
        .map(|rs| {
            (
                str_of(&rs.resource.as_ref().unwrap().attributes[0]),
                rs.scope_spans
                    .iter()
                    .map(|ss| {
                        (
                            ss.scope.as_ref().unwrap().name.clone(),
                            ss.spans.iter().map(|s| s.span_id[0]).collect(),
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (
                "a".to_string(),
                vec![("s1".to_string(), vec![1, 3]), ("s2".to_string(), vec![4])]
            ),
            ("b".to_string(), vec![(String::new(), vec![2])]),
        ]
    );
}

#[test]
fn ids_and_times() {
    // Shorter big-endian ids are the same number; longer ones are refused.
    let mut span = jaeger_span();
    span.trace_id = vec![7];
    span.references.clear();
    let request = request_from_batches([proto::Batch {
        spans: vec![span.clone()],
        process: None,
    }])
    .unwrap();
    let mut want = vec![0; 16];
    want[15] = 7;
    assert_eq!(
        request.resource_spans[0].scope_spans[0].spans[0].trace_id,
        want
    );
    span.trace_id = vec![1; 17];
    assert_eq!(
        request_from_batches([proto::Batch {
            spans: vec![span],
            process: None
        }]),
        Err(JaegerError::TraceId(17))
    );
    // A span that ends before it starts keeps its (negative) duration.
    let request = one_span(Span {
        start_time_unix_nano: 5_000_000_000,
        end_time_unix_nano: 3_500_000_000,
        ..bare_span()
    });
    let batch = batches_from_request(request).remove(0);
    assert_eq!(
        batch.spans[0].duration,
        Some(Duration {
            seconds: -1,
            nanos: -500_000_000
        })
    );
    let back = request_from_batches([batch]).unwrap();
    assert_eq!(
        back.resource_spans[0].scope_spans[0].spans[0].end_time_unix_nano,
        3_500_000_000
    );
}

#[test]
fn event_attribute_named_event_is_kept_as_is() {
    let request = one_span(Span {
        events: vec![Event {
            name: "ignored".into(),
            attributes: vec![kv("event", s("from-attr"))],
            ..Default::default()
        }],
        ..bare_span()
    });
    let batch = batches_from_request(request).remove(0);
    assert_eq!(
        batch.spans[0].logs[0].fields,
        vec![stag("event", "from-attr")]
    );
}

#[test]
fn base64_matches_the_standard_alphabet() {
    for (raw, encoded) in [
        (&b""[..], ""),
        (b"f", "Zg=="),
        (b"fo", "Zm8="),
        (b"foo", "Zm9v"),
        (b"foob", "Zm9vYg=="),
        (&[0xfb, 0xff][..], "+/8="),
    ] {
        assert_eq!(base64_for_tests(raw), encoded);
    }
}

#[test]
fn span_batch_conversions_keep_every_span() {
    let batch = span_batch_from_batches([jaeger_batch()]).unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch.service_name(0), Some("checkout"));
    let mut want = jaeger_batch();
    // The parent's span id under another trace was no link (see above).
    want.spans[0].references.truncate(2);
    assert_eq!(batches_from_span_batch(&batch), vec![want]);
}

#[test]
fn maps_and_arrays_are_json_as_go_writes_it() {
    let text = |value: V| {
        let request = one_span(Span {
            attributes: vec![kv("v", value)],
            ..bare_span()
        });
        batches_from_request(request).remove(0).spans.remove(0).tags[0]
            .v_str
            .clone()
    };
    let array = |values: Vec<V>| {
        V::ArrayValue(ArrayValue {
            values: values
                .into_iter()
                .map(|v| AnyValue { value: Some(v) })
                .collect(),
        })
    };
    // HTML characters, controls and line separators escaped as encoding/json does.
    assert_eq!(
        text(array(vec![s("<a&b>\"\\\n\t\u{8}\u{c}\u{1}\u{2028}é")])),
        r#"["\u003ca\u0026b\u003e\"\\\n\t\b\f\u0001\u2028é"]"#
    );
    // Go's float forms.
    assert_eq!(
        text(array(vec![
            V::DoubleValue(1e21),
            V::DoubleValue(1e20),
            V::DoubleValue(1.5e-7),
            V::DoubleValue(0.000001),
            V::DoubleValue(-0.0),
            V::DoubleValue(2.5e-10),
            V::IntValue(i64::MIN),
        ])),
        "[1e+21,100000000000000000000,1.5e-7,0.000001,-0,2.5e-10,-9223372036854775808]"
    );
    // json.Marshal refuses NaN, and AsString is then empty.
    assert_eq!(text(array(vec![V::DoubleValue(f64::NAN)])), "");
    // A repeated key keeps its last value; keys sorted.
    assert_eq!(
        text(V::KvlistValue(KeyValueList {
            values: vec![
                kv("b", V::IntValue(1)),
                kv("a", s("x")),
                kv("b", V::IntValue(2))
            ],
        })),
        r#"{"a":"x","b":2}"#
    );
}

/// The parent and links of a span with these references (the span is in
/// `TRACE`).
fn parent_and_links(references: Vec<proto::SpanRef>) -> (Vec<u8>, Vec<(Vec<u8>, String)>) {
    let mut span = jaeger_span();
    span.references = references;
    let request = request_from_batches([proto::Batch {
        spans: vec![span],
        process: None,
    }])
    .unwrap();
    let span = &request.resource_spans[0].scope_spans[0].spans[0];
    let links = span
        .links
        .iter()
        .map(|l| (l.span_id.clone(), str_of(&l.attributes[0])))
        .collect();
    (span.parent_span_id.clone(), links)
}

fn reference(trace: [u8; 16], span: [u8; 8], ref_type: SpanRefType) -> proto::SpanRef {
    proto::SpanRef {
        trace_id: trace.to_vec(),
        span_id: span.to_vec(),
        ref_type: ref_type as i32,
    }
}

#[test]
fn follows_from_in_the_same_trace_is_the_parent_when_no_child_of_is() {
    use SpanRefType::{ChildOf, FollowsFrom};
    // Only a FOLLOWS_FROM into the span's trace: it is the parent, and
    // (not being a CHILD_OF) stays a link as well, as in the collector.
    assert_eq!(
        parent_and_links(vec![reference(TRACE, PARENT, FollowsFrom)]),
        (
            PARENT.to_vec(),
            vec![(PARENT.to_vec(), "follows_from".into())]
        )
    );
    // A CHILD_OF into the trace wins, even after the FOLLOWS_FROM.
    assert_eq!(
        parent_and_links(vec![
            reference(TRACE, LINKED, FollowsFrom),
            reference(TRACE, PARENT, ChildOf),
        ]),
        (
            PARENT.to_vec(),
            vec![(LINKED.to_vec(), "follows_from".into())]
        )
    );
    // The first of several FOLLOWS_FROM; one into another trace is no parent.
    assert_eq!(
        parent_and_links(vec![
            reference(OTHER_TRACE, SPAN, FollowsFrom),
            reference(TRACE, LINKED, FollowsFrom),
            reference(TRACE, PARENT, FollowsFrom),
        ])
        .0,
        LINKED.to_vec()
    );
    assert_eq!(
        parent_and_links(vec![reference(OTHER_TRACE, PARENT, FollowsFrom)]).0,
        Vec::<u8>::new()
    );
}
