use super::*;
use crate::otlp::{any_value::Value as V, span::SpanKind, status::StatusCode};
use crate::test_support::{assert_attrs, attr, s};

/// A packet the real Python jaeger-client 4.8.0 (on Python 3.11) sent to
/// the agent's compact port: service `py-service` with tag
/// `deployment=test`, a root span `parent-op` (tags `http.method=GET`,
/// `count=7`, a log `event=cache-miss key=k1`) and its child `child-op`
/// tagged `error=true`.
pub(super) const PYTHON_CLIENT_PACKET: &[u8] =
    include_bytes!("testdata/python_jaeger_client_4.8_compact.bin");

#[test]
fn the_python_jaeger_clients_packet_arrives_with_its_fields() {
    let batch = decode_agent_compact(PYTHON_CLIENT_PACKET).unwrap();
    assert_eq!(batch.process.service_name, "py-service");
    assert_eq!(batch.spans.len(), 2);

    let request = batch_to_request(&batch);
    let rs = &request.resource_spans[0];
    let resource = &rs.resource.as_ref().unwrap().attributes;
    assert_eq!(attr(resource, "service.name"), Some(&s("py-service")));
    assert_eq!(attr(resource, "deployment"), Some(&s("test")));
    assert_eq!(
        attr(resource, "opencensus.exporterversion"),
        Some(&s("Jaeger-Python-4.8.0"))
    );
    assert!(attr(resource, "jaeger.version").is_none());
    assert!(
        attr(resource, "host.name").is_some(),
        "hostname → host.name"
    );
    assert!(attr(resource, "hostname").is_none());
    assert!(attr(resource, "ip").is_some());

    let spans = &rs.scope_spans[0].spans;
    let child = spans.iter().find(|s| s.name == "child-op").unwrap();
    let parent = spans.iter().find(|s| s.name == "parent-op").unwrap();
    assert_eq!(child.trace_id, parent.trace_id);
    assert_eq!(child.trace_id.len(), 16);
    assert_eq!(child.parent_span_id, parent.span_id);
    assert!(parent.parent_span_id.is_empty());
    assert!(child.links.is_empty(), "the parent reference is not a link");
    assert_eq!(
        child.status.as_ref().unwrap().code,
        StatusCode::Error as i32
    );
    assert!(attr(&child.attributes, "error").is_none());
    assert!(parent.status.is_none());
    assert_attrs(
        &parent.attributes,
        &[("http.method", s("GET")), ("count", V::IntValue(7))],
    );
    // Adaptive sampling relies on these.
    assert_eq!(attr(&parent.attributes, "sampler.type"), Some(&s("const")));
    assert!(attr(&parent.attributes, "sampler.param").is_some());
    assert_eq!(parent.events.len(), 1);
    let event = &parent.events[0];
    assert_eq!(event.name, "cache-miss");
    assert_eq!(attr(&event.attributes, "key"), Some(&s("k1")));
    assert!(event.time_unix_nano >= parent.start_time_unix_nano);
    assert!(parent.end_time_unix_nano >= child.end_time_unix_nano);
    assert_eq!(parent.start_time_unix_nano % 1000, 0, "microseconds");
}

/// A batch that exercises every field: all tag types, logs, both
/// reference kinds, 128-bit and negative ids.
pub(super) fn full_batch() -> Batch {
    Batch {
        process: Process {
            service_name: "checkout".into(),
            tags: Some(vec![
                Tag::string("hostname", "box-1"),
                Tag::string("jaeger.version", "Go-2.30.0"),
                Tag::string("ip", "10.0.0.7"),
                Tag::long("pid", 4242),
            ]),
        },
        spans: vec![
            Span {
                trace_id_low: -2,
                trace_id_high: 0x0102030405060708,
                span_id: 0x11,
                parent_span_id: 0x10,
                operation_name: "GET /cart".into(),
                references: Some(vec![
                    SpanRef {
                        ref_type: 0,
                        trace_id_low: -2,
                        trace_id_high: 0x0102030405060708,
                        span_id: 0x10,
                    },
                    SpanRef {
                        ref_type: 1,
                        trace_id_low: 5,
                        trace_id_high: 0,
                        span_id: 0x99,
                    },
                ]),
                flags: 1,
                start_time: 1_700_000_000_123_456,
                duration: 2_500,
                tags: Some(vec![
                    Tag::string("span.kind", "server"),
                    Tag::string("http.method", "GET"),
                    Tag::long("http.status_code", 503),
                    Tag::double("ratio", 0.25),
                    Tag::bool("cached", false),
                    Tag::binary("blob", &[0, 159, 255]),
                    Tag::string("sampler.type", "probabilistic"),
                    Tag::double("sampler.param", 0.001),
                    Tag {
                        key: "weird".into(),
                        v_type: TagType::Unknown(9),
                        value: TagValue::default(),
                    },
                ]),
                logs: Some(vec![
                    Log {
                        timestamp: 1_700_000_000_124_000,
                        fields: vec![Tag::string("event", "retry"), Tag::long("attempt", 2)],
                    },
                    Log {
                        timestamp: 1_700_000_000_125_000,
                        fields: vec![],
                    },
                ]),
            },
            Span {
                trace_id_low: 7,
                trace_id_high: 0,
                span_id: 8,
                parent_span_id: 0,
                operation_name: "db".into(),
                references: None,
                flags: 1,
                start_time: 1_700_000_000_000_000,
                duration: 10,
                tags: Some(vec![
                    Tag::string("span.kind", "client"),
                    Tag::string("otel.status_code", "ERROR"),
                    Tag::string("otel.status_description", "deadlock"),
                ]),
                logs: None,
            },
            // A blank span is skipped, as the collector does.
            Span::default(),
        ],
        seq_no: Some(3),
    }
}

fn check_full(request: &ExportTraceServiceRequest) {
    assert_eq!(request.resource_spans.len(), 1);
    let rs = &request.resource_spans[0];
    let resource = &rs.resource.as_ref().unwrap().attributes;
    let keys: Vec<_> = resource.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "service.name",
            "ip",
            "pid",
            "host.name",
            "opencensus.exporterversion"
        ]
    );
    assert_eq!(attr(resource, "host.name"), Some(&s("box-1")));
    assert_eq!(
        attr(resource, "opencensus.exporterversion"),
        Some(&s("Jaeger-Go-2.30.0"))
    );
    assert_eq!(attr(resource, "pid"), Some(&V::IntValue(4242)));

    let spans = &rs.scope_spans[0].spans;
    assert_eq!(spans.len(), 2, "the blank span is dropped");
    let a = &spans[0];
    assert_eq!(
        a.trace_id,
        [1, 2, 3, 4, 5, 6, 7, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]
    );
    assert_eq!(a.span_id, 0x11u64.to_be_bytes());
    assert_eq!(a.parent_span_id, 0x10u64.to_be_bytes());
    assert_eq!(a.name, "GET /cart");
    assert_eq!(a.kind, SpanKind::Server as i32);
    assert_eq!(a.start_time_unix_nano, 1_700_000_000_123_456_000);
    assert_eq!(a.end_time_unix_nano, 1_700_000_000_125_956_000);
    // 503 on a server span: an error.
    assert_eq!(a.status.as_ref().unwrap().code, StatusCode::Error as i32);
    assert_attrs(
        &a.attributes,
        &[
            ("http.status_code", V::IntValue(503)),
            ("ratio", V::DoubleValue(0.25)),
            ("cached", V::BoolValue(false)),
            ("blob", V::BytesValue(vec![0, 159, 255])),
            ("sampler.type", s("probabilistic")),
            ("sampler.param", V::DoubleValue(0.001)),
            ("weird", s("<Unknown Jaeger TagType \"<UNSET>\">")),
        ],
    );
    assert!(attr(&a.attributes, "span.kind").is_none());
    assert_eq!(a.events.len(), 2);
    assert_eq!(a.events[0].name, "retry");
    assert_eq!(a.events[0].time_unix_nano, 1_700_000_000_124_000_000);
    assert_eq!(
        attr(&a.events[0].attributes, "attempt"),
        Some(&V::IntValue(2))
    );
    assert!(attr(&a.events[0].attributes, "event").is_none());
    assert_eq!(a.events[1].name, "");
    assert_eq!(a.links.len(), 1, "the CHILD_OF parent is not a link");
    let link = &a.links[0];
    assert_eq!(
        link.trace_id,
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]
    );
    assert_eq!(link.span_id, 0x99u64.to_be_bytes());
    assert_eq!(
        attr(&link.attributes, "opentracing.ref_type"),
        Some(&s("follows_from"))
    );

    let b = &spans[1];
    assert_eq!(b.kind, SpanKind::Client as i32);
    assert!(b.parent_span_id.is_empty());
    let st = b.status.as_ref().unwrap();
    assert_eq!(
        (st.code, st.message.as_str()),
        (StatusCode::Error as i32, "deadlock")
    );
    assert!(b.attributes.is_empty());
}

#[test]
fn compact_packets_decode_to_every_field() {
    let packet = encode_agent_compact(&full_batch());
    assert_eq!(decode_agent_compact(&packet).unwrap(), full_batch());
    check_full(&agent_compact_to_request(&packet).unwrap());
}

#[test]
fn binary_packets_decode_to_every_field() {
    let packet = encode_agent_binary(&full_batch());
    assert_eq!(decode_agent_binary(&packet).unwrap(), full_batch());
    check_full(&agent_binary_to_request(&packet).unwrap());
}

#[test]
fn http_bodies_decode_to_every_field() {
    let body = encode_batch_binary(&full_batch());
    assert_eq!(decode_batch_binary(&body).unwrap(), full_batch());
    check_full(&batch_binary_to_request(&body).unwrap());
}

#[test]
fn old_style_binary_messages_are_read() {
    // Non-strict header: name length, name, type, sequence id.
    let strict = encode_agent_binary(&full_batch());
    let body = &strict[4 + 4 + EMIT_BATCH.len() + 4..];
    let mut packet = Vec::new();
    packet.extend_from_slice(&(EMIT_BATCH.len() as i32).to_be_bytes());
    packet.extend_from_slice(EMIT_BATCH.as_bytes());
    packet.push(MESSAGE_ONEWAY);
    packet.extend_from_slice(&7i32.to_be_bytes());
    packet.extend_from_slice(body);
    assert_eq!(decode_agent_binary(&packet).unwrap(), full_batch());
}

#[test]
fn parent_from_references_when_parent_span_id_is_zero() {
    let mut batch = full_batch();
    batch.spans.truncate(1);
    batch.spans[0].parent_span_id = 0;
    let request = batch_to_request(&batch);
    let span = &request.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(span.parent_span_id, 0x10u64.to_be_bytes());
    assert_eq!(span.links.len(), 1);
}

#[test]
fn status_rules_follow_the_collector() {
    let status_of = |tags: Vec<Tag>| {
        let batch = Batch {
            process: Process {
                service_name: "s".into(),
                tags: None,
            },
            spans: vec![Span {
                span_id: 1,
                tags: Some(tags),
                ..Default::default()
            }],
            seq_no: None,
        };
        let request = batch_to_request(&batch);
        let span = request.resource_spans[0].scope_spans[0].spans[0].clone();
        (
            span.status.map(|s| (s.code, s.message)),
            span.attributes
                .into_iter()
                .map(|kv| kv.key)
                .collect::<Vec<_>>(),
        )
    };
    let e = StatusCode::Error as i32;
    // error=true wins over otel.status_code, which is removed anyway.
    assert_eq!(
        status_of(vec![
            Tag::bool("error", true),
            Tag::string("otel.status_code", "OK"),
            Tag::string("otel.status_description", "boom"),
        ]),
        (Some((e, "boom".into())), vec![])
    );
    // error as a string is just an attribute.
    assert_eq!(
        status_of(vec![Tag::string("error", "true")]),
        (None, vec!["error".to_string()])
    );
    assert_eq!(
        status_of(vec![Tag::string("otel.status_code", "ok")]),
        (Some((StatusCode::Ok as i32, String::new())), vec![])
    );
    // 404: an error for clients, unset for servers.
    assert_eq!(
        status_of(vec![
            Tag::string("span.kind", "client"),
            Tag::string("http.status_code", "404"),
            Tag::string("http.status_message", "Not Found"),
        ])
        .0,
        Some((e, "Not Found".into()))
    );
    assert_eq!(
        status_of(vec![
            Tag::string("span.kind", "server"),
            Tag::long("http.status_code", 404),
        ])
        .0,
        None
    );
    assert_eq!(status_of(vec![Tag::long("http.status_code", 200)]).0, None);
    assert_eq!(
        status_of(vec![Tag::long("http.status_code", 399)]).0,
        Some((e, String::new()))
    );
}

#[test]
fn malformed_packets_are_errors() {
    let good = encode_agent_compact(&full_batch());
    // Every truncation fails cleanly.
    for len in 0..good.len() {
        assert!(decode_agent_compact(&good[..len]).is_err(), "len {len}");
    }
    let good = encode_agent_binary(&full_batch());
    for len in 0..good.len() {
        assert!(decode_agent_binary(&good[..len]).is_err(), "len {len}");
    }
    // Another agent call.
    let mut w = protocol::CompactWriter::default();
    w.message_begin("emitZipkinBatch", MESSAGE_ONEWAY);
    let err = decode_agent_compact(&w.into_bytes()).unwrap_err();
    assert!(matches!(err, ThriftError::UnsupportedCall(_)), "{err}");
    // A span without its required fields.
    let mut w = protocol::BinaryWriter::default();
    w.field(1, TType::Struct);
    w.field(1, TType::Binary);
    w.binary(b"svc");
    w.stop();
    w.field(2, TType::List);
    w.list(TType::Struct, 1);
    w.field(1, TType::I64);
    w.i64(1);
    w.stop();
    w.stop();
    assert_eq!(
        decode_batch_binary(&w.into_bytes()).unwrap_err(),
        ThriftError::MissingField("Span.traceIdHigh")
    );
    // A count far past the packet's end is refused before allocating.
    let mut w = protocol::BinaryWriter::default();
    w.field(2, TType::List);
    w.list(TType::Struct, i32::MAX as usize);
    assert!(decode_batch_binary(&w.into_bytes()).is_err());
    // Unknown nested fields deeper than the limit.
    let mut deep = Vec::new();
    for _ in 0..100 {
        deep.extend_from_slice(&[12, 0, 99]); // struct field 99
    }
    assert_eq!(
        decode_batch_binary(&deep).unwrap_err(),
        ThriftError::TooDeep
    );
    let mut deep = vec![0x82, 0x81, 0, 9];
    deep.extend_from_slice(b"emitBatch");
    deep.extend(std::iter::repeat_n(0x1c, 1000)); // compact struct fields
    assert_eq!(
        decode_agent_compact(&deep).unwrap_err(),
        ThriftError::TooDeep
    );
}

/// The bounded fuzz loop: mutated valid packets and random bytes through
/// all three entry points and the OTLP conversion; nothing may panic, and
/// what decodes must convert.
#[test]
fn fuzz_decoders_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(6831);
    let seeds = [
        encode_agent_compact(&full_batch()),
        encode_agent_binary(&full_batch()),
        encode_batch_binary(&full_batch()),
        PYTHON_CLIENT_PACKET.to_vec(),
    ];
    let mut decoded = 0;
    for i in 0..20_000 {
        let mut data = seeds[i % seeds.len()].clone();
        match rng.random_range(0..4) {
            0 => {
                for _ in 0..rng.random_range(1..6) {
                    let at = rng.random_range(0..data.len());
                    data[at] = rng.random();
                }
            }
            1 => {
                let at = rng.random_range(0..data.len());
                data.truncate(at);
            }
            2 => {
                let at = rng.random_range(0..data.len());
                let extra: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                data.splice(at..at, extra);
            }
            _ => {
                data = (0..rng.random_range(0..256))
                    .map(|_| rng.random())
                    .collect();
            }
        }
        for request in [
            agent_compact_to_request(&data),
            agent_binary_to_request(&data),
            batch_binary_to_request(&data),
        ]
        .into_iter()
        .flatten()
        {
            decoded += 1;
            let _ = crate::SpanBatch::from_request(&request);
        }
    }
    assert!(decoded > 0, "some mutations still decode");
}
