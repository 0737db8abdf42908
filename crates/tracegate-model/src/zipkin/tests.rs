use super::*;
use crate::otlp::{any_value::Value as V, span::SpanKind, status::StatusCode};
use crate::test_support::{assert_attrs, attr, s};

/// The span of the Zipkin quickstart (zipkin-api's example body).
const QUICKSTART: &str = r#"[{
  "id": "352bff9a74ca9ad2",
  "traceId": "5af7183fb1d4cf5f",
  "parentId": "6b221d5bc9e6496c",
  "name": "get /api",
  "timestamp": 1556604172355737,
  "duration": 1431,
  "kind": "SERVER",
  "localEndpoint": {"serviceName": "backend", "ipv4": "192.168.99.1", "port": 3306},
  "remoteEndpoint": {"ipv4": "172.19.0.2", "port": 58648},
  "tags": {"http.method": "GET", "http.path": "/api"}
}]"#;

#[test]
fn quickstart_span_maps_every_field() {
    let request = v2_json_to_request(QUICKSTART.as_bytes(), false).unwrap();
    assert_eq!(request.resource_spans.len(), 1);
    let rs = &request.resource_spans[0];
    let resource = rs.resource.as_ref().unwrap();
    assert_eq!(
        attr(&resource.attributes, "service.name"),
        Some(&s("backend"))
    );
    assert_eq!(resource.attributes.len(), 1);
    assert_eq!(rs.scope_spans.len(), 1);
    let scope = rs.scope_spans[0].scope.as_ref().unwrap();
    assert_eq!(scope.name, "");
    let span = &rs.scope_spans[0].spans[0];
    assert_eq!(
        span.trace_id,
        [0, 0, 0, 0, 0, 0, 0, 0, 0x5a, 0xf7, 0x18, 0x3f, 0xb1, 0xd4, 0xcf, 0x5f]
    );
    assert_eq!(span.span_id, 0x352bff9a74ca9ad2u64.to_be_bytes());
    assert_eq!(span.parent_span_id, 0x6b221d5bc9e6496cu64.to_be_bytes());
    assert_eq!(span.name, "get /api");
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(span.start_time_unix_nano, 1_556_604_172_355_737_000);
    assert_eq!(
        span.end_time_unix_nano,
        1_556_604_172_355_737_000 + 1_431_000
    );
    assert_attrs(
        &span.attributes,
        &[
            ("http.method", s("GET")),
            ("http.path", s("/api")),
            ("network.local.address", s("192.168.99.1")),
            ("net.host.port", V::IntValue(3306)),
            ("network.peer.address", s("172.19.0.2")),
            ("net.peer.port", V::IntValue(58648)),
        ],
    );
    assert_eq!(span.attributes.len(), 6);
    assert!(span.status.is_none());
    assert!(span.events.is_empty());
}

/// A client span and the server's shared half with the same id, two
/// services, a 128-bit trace id, annotations, an error and a remote
/// service name.
const RPC: &str = r#"[
  {"traceId": "463ac35c9f6413ad48485a3953bb6124", "id": "a2fb4a1d1a96d312",
   "name": "get", "kind": "CLIENT", "timestamp": 1472470996199000, "duration": 207000,
   "localEndpoint": {"serviceName": "frontend", "ipv6": "2001:db8::c001"},
   "remoteEndpoint": {"serviceName": "backend", "ipv4": "192.168.99.101", "port": 9000},
   "annotations": [{"timestamp": 1472470996238000, "value": "ws"},
                   {"timestamp": 1472470996403000, "value": "wr"}],
   "tags": {"http.path": "/api", "clnt/finagle.version": "6.45.0", "error": "true"}},
  {"traceId": "463ac35c9f6413ad48485a3953bb6124", "id": "a2fb4a1d1a96d312",
   "parentId": "a2fb4a1d1a96d312", "shared": true,
   "name": "get", "kind": "SERVER", "timestamp": 1472470996250000, "duration": 100000,
   "localEndpoint": {"serviceName": "backend", "ipv4": "192.168.99.101", "port": 9000},
   "tags": {"http.status_code": "200", "otel.library.name": "lib", "otel.library.version": "1.2",
            "host.name": "box", "otel.status_code": "STATUS_CODE_OK",
            "otel.status_description": "fine"}}
]"#;

#[test]
fn rpc_spans_group_by_service_with_shared_span_and_events() {
    let request = v2_json_to_request(RPC.as_bytes(), false).unwrap();
    // Sorted by service name: backend first.
    let services: Vec<_> = request
        .resource_spans
        .iter()
        .map(|rs| attr(&rs.resource.as_ref().unwrap().attributes, "service.name").cloned())
        .collect();
    assert_eq!(services, vec![Some(s("backend")), Some(s("frontend"))]);

    let backend = &request.resource_spans[0];
    assert_eq!(
        attr(&backend.resource.as_ref().unwrap().attributes, "host.name"),
        Some(&s("box"))
    );
    let scope = backend.scope_spans[0].scope.as_ref().unwrap();
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        ("lib", "1.2")
    );
    let server = &backend.scope_spans[0].spans[0];
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert!(
        server.parent_span_id.is_empty(),
        "a shared span is not its own parent"
    );
    let st = server.status.as_ref().unwrap();
    assert_eq!(
        (st.code, st.message.as_str()),
        (StatusCode::Ok as i32, "fine")
    );
    assert_eq!(
        attr(&server.attributes, "http.status_code"),
        Some(&s("200"))
    );
    for gone in [
        "host.name",
        "otel.library.name",
        "otel.status_code",
        "otel.status_description",
    ] {
        assert!(attr(&server.attributes, gone).is_none(), "{gone}");
    }

    let client = &request.resource_spans[1].scope_spans[0].spans[0];
    assert_eq!(
        client.trace_id,
        [
            0x46, 0x3a, 0xc3, 0x5c, 0x9f, 0x64, 0x13, 0xad, 0x48, 0x48, 0x5a, 0x39, 0x53, 0xbb,
            0x61, 0x24
        ]
    );
    assert_eq!(client.span_id, server.span_id);
    assert_eq!(client.kind, SpanKind::Client as i32);
    assert_eq!(
        client.status.as_ref().unwrap().code,
        StatusCode::Error as i32
    );
    assert!(attr(&client.attributes, "error").is_none());
    assert_attrs(
        &client.attributes,
        &[
            ("service.peer.name", s("backend")),
            ("network.peer.address", s("192.168.99.101")),
            ("net.peer.port", V::IntValue(9000)),
            ("network.local.address", s("2001:db8::c001")),
            ("clnt/finagle.version", s("6.45.0")),
        ],
    );
    let events: Vec<_> = client
        .events
        .iter()
        .map(|e| (e.name.as_str(), e.time_unix_nano))
        .collect();
    assert_eq!(
        events,
        vec![
            ("ws", 1_472_470_996_238_000_000),
            ("wr", 1_472_470_996_403_000_000)
        ]
    );
}

#[test]
fn kind_from_span_kind_tag_and_missing_timestamp() {
    let body = r#"[{"traceId": "1", "id": "2", "duration": 5,
        "tags": {"span.kind": "internal", "w3c.tracestate": "a=b", "error": "false"}}]"#;
    let request = v2_json_to_request(body.as_bytes(), false).unwrap();
    let rs = &request.resource_spans[0];
    assert!(rs.resource.as_ref().unwrap().attributes.is_empty());
    let span = &rs.scope_spans[0].spans[0];
    assert_eq!(span.kind, SpanKind::Internal as i32);
    assert_eq!(span.trace_state, "a=b");
    assert_eq!(
        (span.start_time_unix_nano, span.end_time_unix_nano),
        (0, 5000)
    );
    assert_eq!(
        attr(&span.attributes, START_TIME_ABSENT),
        Some(&V::BoolValue(true))
    );
    // Any `error` tag is an error, even "false" (the collector's rule);
    // only "true" is removed, so this one stays an attribute.
    assert_eq!(attr(&span.attributes, "error"), Some(&s("false")));
    let st = span.status.as_ref().unwrap();
    assert_eq!(
        (st.code, st.message.as_str()),
        (StatusCode::Error as i32, "")
    );
    assert!(attr(&span.attributes, "span.kind").is_none());
}

#[test]
fn parse_string_tags_types_values() {
    let body = r#"[{"traceId": "1", "id": "2", "timestamp": 1,
        "tags": {"i": "-42", "d": "1.5", "b": "true", "t": "text", "big": "99999999999999999999"}}]"#;
    let request = v2_json_to_request(body.as_bytes(), true).unwrap();
    let span = &request.resource_spans[0].scope_spans[0].spans[0];
    assert_attrs(
        &span.attributes,
        &[
            ("i", V::IntValue(-42)),
            ("d", V::DoubleValue(1.5)),
            ("b", V::BoolValue(true)),
            ("t", s("text")),
        ],
    );
    // Beyond i64: saturated, as Go's ParseInt result the collector keeps.
    assert_eq!(attr(&span.attributes, "big"), Some(&V::IntValue(i64::MAX)));
    let request = v2_json_to_request(body.as_bytes(), false).unwrap();
    let span = &request.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(attr(&span.attributes, "i"), Some(&s("-42")));
}

#[test]
fn links_and_event_attributes_from_the_collectors_exporter_encoding() {
    let body = r#"[{"traceId": "1", "id": "2", "timestamp": 1,
        "annotations": [{"timestamp": 7, "value": "ev|{\"k\":\"v\",\"n\":3,\"f\":0.5,\"b\":true}|2"}],
        "tags": {"otlp.link.0": "0102030405060708090a0b0c0d0e0f10|0102030405060708|x=y|{\"a\":\"b|c\"}|1"}}]"#;
    let request = v2_json_to_request(body.as_bytes(), false).unwrap();
    let span = &request.resource_spans[0].scope_spans[0].spans[0];
    let event = &span.events[0];
    assert_eq!(event.name, "ev");
    assert_eq!(event.time_unix_nano, 7000);
    assert_attrs(
        &event.attributes,
        &[
            ("k", s("v")),
            ("n", V::IntValue(3)),
            ("f", V::DoubleValue(0.5)),
            ("b", V::BoolValue(true)),
        ],
    );
    assert_eq!(event.dropped_attributes_count, 2);
    let link = &span.links[0];
    assert_eq!(link.trace_id, (1..=16).collect::<Vec<u8>>());
    assert_eq!(link.span_id, (1..=8).collect::<Vec<u8>>());
    assert_eq!(link.trace_state, "x=y");
    assert_eq!(attr(&link.attributes, "a"), Some(&s("b|c")));
    assert_eq!(link.dropped_attributes_count, 1);
    assert!(attr(&span.attributes, "otlp.link.0").is_none());
}

#[test]
fn malformed_bodies_are_refused_with_a_path() {
    let cases = [
        ("{", "invalid Zipkin v2 JSON"),
        (r#"{"traceId": "1"}"#, "$"),
        (r#"[{"id": "2"}]"#, "valid traceId required"),
        (r#"[{"traceId": "1"}]"#, "valid span id required"),
        (r#"[{"traceId": "xyz", "id": "2"}]"#, "$[0].traceId"),
        (r#"[{"traceId": "1", "id": "+2"}]"#, "$[0].id"),
        (r#"[{"traceId": "1", "id": "é2"}]"#, "$[0].id"),
        (
            r#"[{"traceId": "1", "id": "11111111111111111"}]"#,
            "$[0].id",
        ),
        (
            r#"[{"traceId": "111111111111111111111111111111111", "id": "2"}]"#,
            "traceId",
        ),
        (
            r#"[{"traceId": "1", "id": "2", "timestamp": -1}]"#,
            "$[0].timestamp",
        ),
        (
            r#"[{"traceId": "1", "id": "2", "timestamp": 1.5}]"#,
            "$[0].timestamp",
        ),
        (
            r#"[{"traceId": "1", "id": "2", "tags": {"a": 1}}]"#,
            "$[0].tags.a",
        ),
        (
            r#"[{"traceId": "1", "id": "2", "localEndpoint": {"ipv4": "1.2.3"}}]"#,
            "ipv4",
        ),
        (
            r#"[{"traceId": "1", "id": "2", "localEndpoint": {"port": 70000}}]"#,
            "port",
        ),
        (
            r#"[{"traceId": "1", "id": "2", "annotations": [{"value": "x"}]}]"#,
            "annotation timestamp",
        ),
        (r#"[{"traceId": "1", "id": "2", "name": 3}]"#, "$[0].name"),
    ];
    for (body, expected) in cases {
        let err = v2_json_to_request(body.as_bytes(), false).unwrap_err();
        assert!(err.to_string().contains(expected), "{body}: {err}");
    }
}

#[test]
fn empty_bodies_are_empty_requests() {
    for body in ["[]", "null", "[null]"] {
        let request = v2_json_to_request(body.as_bytes(), false).unwrap();
        assert!(request.resource_spans.is_empty(), "{body}");
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(9411);
    let seeds = [QUICKSTART.as_bytes(), RPC.as_bytes()];
    for i in 0..3000 {
        let mut body = seeds[i % 2].to_vec();
        for _ in 0..rng.random_range(1..8) {
            let at = rng.random_range(0..body.len());
            body[at] = rng.random();
        }
        let _ = v2_json_to_request(&body, i % 3 == 0);
    }
}

#[test]
fn proto3_spans_map_like_json() {
    use prost::Message;
    use proto::{ListOfSpans, ProtoAnnotation, ProtoEndpoint, ProtoSpan};
    let list = ListOfSpans {
        spans: vec![ProtoSpan {
            trace_id: 0x5af7183fb1d4cf5fu64.to_be_bytes().to_vec(),
            parent_id: 0x6b221d5bc9e6496cu64.to_be_bytes().to_vec(),
            id: 0x352bff9a74ca9ad2u64.to_be_bytes().to_vec(),
            kind: 2,
            name: "get /api".into(),
            timestamp: 1_556_604_172_355_737,
            duration: 1431,
            local_endpoint: Some(ProtoEndpoint {
                service_name: "backend".into(),
                ipv4: vec![192, 168, 99, 1],
                ipv6: vec![],
                port: 3306,
            }),
            remote_endpoint: Some(ProtoEndpoint {
                ipv6: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1].to_vec(),
                ..Default::default()
            }),
            annotations: vec![ProtoAnnotation {
                timestamp: 1_556_604_172_356_000,
                value: "ws".into(),
            }],
            tags: [("http.method".to_string(), "GET".to_string())].into(),
            debug: false,
            shared: false,
        }],
    };
    let from_proto = v2_proto_to_request(&list.encode_to_vec(), false).unwrap();
    let json = r#"[{"id": "352bff9a74ca9ad2", "traceId": "5af7183fb1d4cf5f",
      "parentId": "6b221d5bc9e6496c", "name": "get /api", "timestamp": 1556604172355737,
      "duration": 1431, "kind": "SERVER",
      "localEndpoint": {"serviceName": "backend", "ipv4": "192.168.99.1", "port": 3306},
      "remoteEndpoint": {"ipv6": "2001:db8::1"},
      "annotations": [{"timestamp": 1556604172356000, "value": "ws"}],
      "tags": {"http.method": "GET"}}]"#;
    let from_json = v2_json_to_request(json.as_bytes(), false).unwrap();
    assert_eq!(from_proto, from_json);
    let span = &from_proto.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(
        attr(&span.attributes, "network.peer.address"),
        Some(&s("2001:db8::1"))
    );

    // Ids of the wrong length and garbage are refused.
    let mut bad = list.clone();
    bad.spans[0].id = vec![1, 2, 3];
    let err = v2_proto_to_request(&bad.encode_to_vec(), false).unwrap_err();
    assert!(err.to_string().contains("spans[0].id"), "{err}");
    let mut bad = list.clone();
    bad.spans[0].trace_id = vec![1; 12];
    assert!(v2_proto_to_request(&bad.encode_to_vec(), false).is_err());
    assert!(v2_proto_to_request(b"\x0a\xff\xff", false).is_err());
}

/// One span's status and `error` attribute after mapping the tags given
/// as JSON, through both the JSON and the proto3 decoder (which must
/// agree).
fn status_and_error_attr(tags: &str, parse_string_tags: bool) -> (Option<Status>, Option<V>) {
    use prost::Message;
    let body = format!(r#"[{{"traceId": "1", "id": "2", "timestamp": 1, "tags": {tags}}}]"#);
    let request = v2_json_to_request(body.as_bytes(), parse_string_tags).unwrap();
    let span = &request.resource_spans[0].scope_spans[0].spans[0];
    let from_json = (
        span.status.clone(),
        attr(&span.attributes, "error").cloned(),
    );

    let tag_map: std::collections::BTreeMap<String, String> = serde_json::from_str(tags).unwrap();
    let list = proto::ListOfSpans {
        spans: vec![proto::ProtoSpan {
            trace_id: 1u64.to_be_bytes().to_vec(),
            id: 2u64.to_be_bytes().to_vec(),
            timestamp: 1,
            tags: tag_map,
            ..Default::default()
        }],
    };
    let request = v2_proto_to_request(&list.encode_to_vec(), parse_string_tags).unwrap();
    let span = &request.resource_spans[0].scope_spans[0].spans[0];
    let from_proto = (
        span.status.clone(),
        attr(&span.attributes, "error").cloned(),
    );
    assert_eq!(from_json, from_proto, "tags {tags:?}");
    from_json
}

fn error_status() -> Option<Status> {
    Some(Status {
        code: StatusCode::Error as i32,
        ..Default::default()
    })
}

#[test]
fn any_error_tag_is_an_error_status_as_in_the_collector() {
    // What Brave, zipkin-go and py_zipkin send for a failed span: the
    // message. ERROR, no status message, the tag kept as an attribute.
    assert_eq!(
        status_and_error_attr(r#"{"error": "ValueError: boom"}"#, false),
        (error_status(), Some(s("ValueError: boom")))
    );
    // The plain marker: ERROR, and the tag is consumed.
    assert_eq!(
        status_and_error_attr(r#"{"error": "true"}"#, false),
        (error_status(), None)
    );
    // Empty and "false" are still errors (the tag's presence decides).
    assert_eq!(
        status_and_error_attr(r#"{"error": ""}"#, false),
        (error_status(), Some(s("")))
    );
    assert_eq!(
        status_and_error_attr(r#"{"error": "false"}"#, false),
        (error_status(), Some(s("false")))
    );
    // With parse_string_tags the kept tag is typed like any other.
    assert_eq!(
        status_and_error_attr(r#"{"error": "false"}"#, true),
        (error_status(), Some(V::BoolValue(false)))
    );
    assert_eq!(
        status_and_error_attr(r#"{"error": "500"}"#, true),
        (error_status(), Some(V::IntValue(500)))
    );
    // No error tag: no status.
    assert_eq!(
        status_and_error_attr(r#"{"http.path": "/"}"#, false),
        (None, None)
    );
}

#[test]
fn error_tag_overrides_otel_status_code_but_keeps_its_description() {
    // The collector applies otel.status_code first, then the error tag.
    assert_eq!(
        status_and_error_attr(
            r#"{"otel.status_code": "STATUS_CODE_OK", "otel.status_description": "fine",
                "error": "timeout"}"#,
            false
        ),
        (
            Some(Status {
                code: StatusCode::Error as i32,
                message: "fine".into()
            }),
            Some(s("timeout"))
        )
    );
    // A description without a code is an ordinary attribute, not a message.
    let body = r#"[{"traceId": "1", "id": "2", "timestamp": 1,
        "tags": {"otel.status_description": "why", "error": "x"}}]"#;
    let request = v2_json_to_request(body.as_bytes(), false).unwrap();
    let span = &request.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(span.status, error_status());
    assert_eq!(
        attr(&span.attributes, "otel.status_description"),
        Some(&s("why"))
    );
}

/// Each tag value with `parse_string_tags`, typed as the collector's three
/// patterns do (`^-?\d+$`, `^-?\d+\.\d+$`, `^(true|false)$`).
#[test]
fn parse_string_tags_uses_exactly_the_collectors_patterns() {
    let out_of_range = format!("{}.0", "9".repeat(400));
    let cases: Vec<(&str, V)> = vec![
        ("0", V::IntValue(0)),
        ("-0", V::IntValue(0)),
        ("007", V::IntValue(7)),
        ("1", V::IntValue(1)),
        ("9223372036854775807", V::IntValue(i64::MAX)),
        ("9223372036854775808", V::IntValue(i64::MAX)),
        ("-9223372036854775808", V::IntValue(i64::MIN)),
        ("-9223372036854775809", V::IntValue(i64::MIN)),
        ("-99999999999999999999999999", V::IntValue(i64::MIN)),
        ("1.5", V::DoubleValue(1.5)),
        ("-0.25", V::DoubleValue(-0.25)),
        ("00.10", V::DoubleValue(0.1)),
        (
            "123456789012345678901234567890.5",
            V::DoubleValue(1.234_567_890_123_456_8e29),
        ),
        // 400 digits before the point: out of range, Go's +Inf.
        (&out_of_range, V::DoubleValue(f64::INFINITY)),
        ("true", V::BoolValue(true)),
        ("false", V::BoolValue(false)),
        // Not one of the patterns: the string as sent.
        ("+1", s("+1")),
        ("1e3", s("1e3")),
        ("1.", s("1.")),
        (".5", s(".5")),
        ("-", s("-")),
        ("--1", s("--1")),
        ("1_000", s("1_000")),
        (" 1", s(" 1")),
        ("1\n", s("1\n")),
        // An Arabic-Indic one: not `\d` in Go's RE2.
        ("\u{0661}", s("\u{0661}")),
        ("inf", s("inf")),
        ("NaN", s("NaN")),
        ("0x10", s("0x10")),
        ("True", s("True")),
        ("TRUE", s("TRUE")),
        ("t", s("t")),
        ("", s("")),
        (r#"{"a":1}"#, s(r#"{"a":1}"#)),
        ("[1,2]", s("[1,2]")),
    ];
    for (text, want) in cases {
        assert_eq!(
            typed_tag_value(text.to_string()),
            want,
            "tag value {text:?}"
        );
    }
}

#[test]
fn otel_status_code_spellings_as_the_collector_reads_them() {
    let code = |value: &str| {
        let tags = format!(r#"{{"otel.status_code": "{value}", "otel.status_description": "d"}}"#);
        status_and_error_attr(&tags, false).0
    };
    let st = |code: StatusCode| {
        Some(Status {
            code: code as i32,
            message: "d".into(),
        })
    };
    assert_eq!(code("STATUS_CODE_OK"), st(StatusCode::Ok));
    assert_eq!(code("STATUS_CODE_ERROR"), st(StatusCode::Error));
    assert_eq!(code("STATUS_CODE_UNSET"), st(StatusCode::Unset));
    // What the collector's Zipkin exporter used to write.
    assert_eq!(code("Ok"), st(StatusCode::Ok));
    assert_eq!(code("Error"), st(StatusCode::Error));
    assert_eq!(code("Unset"), st(StatusCode::Unset));
    // Other spellings are Unset, the description still the message.
    assert_eq!(code("OK"), st(StatusCode::Unset));
    assert_eq!(code("ERROR"), st(StatusCode::Unset));
    assert_eq!(code("error"), st(StatusCode::Unset));
}

#[test]
fn proto3_span_without_timestamp_is_not_marked_absent() {
    use prost::Message;
    let list = proto::ListOfSpans {
        spans: vec![proto::ProtoSpan {
            trace_id: 1u64.to_be_bytes().to_vec(),
            id: 2u64.to_be_bytes().to_vec(),
            duration: 5,
            ..Default::default()
        }],
    };
    let request = v2_proto_to_request(&list.encode_to_vec(), false).unwrap();
    let span = &request.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(
        (span.start_time_unix_nano, span.end_time_unix_nano),
        (0, 5000)
    );
    assert!(span.attributes.is_empty(), "{:?}", span.attributes);
    // The same span as JSON is marked.
    let body = r#"[{"traceId": "1", "id": "2", "duration": 5}]"#;
    let request = v2_json_to_request(body.as_bytes(), false).unwrap();
    let span = &request.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(
        (span.start_time_unix_nano, span.end_time_unix_nano),
        (0, 5000)
    );
    assert_eq!(
        attr(&span.attributes, START_TIME_ABSENT),
        Some(&V::BoolValue(true))
    );
}

#[test]
fn endpoints_use_the_network_conventions_and_no_older_names() {
    let body = r#"[{"traceId": "1", "id": "2", "timestamp": 1,
        "localEndpoint": {"serviceName": "a", "ipv4": "10.0.0.1", "ipv6": "::ffff:10.0.0.9", "port": 80},
        "remoteEndpoint": {"serviceName": "b", "ipv4": "10.0.0.2", "port": 5432}}]"#;
    let request = v2_json_to_request(body.as_bytes(), false).unwrap();
    let span = &request.resource_spans[0].scope_spans[0].spans[0];
    let mut keys: Vec<&str> = span.attributes.iter().map(|kv| kv.key.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "net.host.port",
            "net.peer.port",
            "network.local.address",
            "network.peer.address",
            "service.peer.name"
        ]
    );
    // IPv6, written after IPv4, wins; a v4-mapped address prints as IPv4.
    assert_attrs(
        &span.attributes,
        &[
            ("network.local.address", s("10.0.0.9")),
            ("network.peer.address", s("10.0.0.2")),
            ("service.peer.name", s("b")),
            ("net.peer.port", V::IntValue(5432)),
        ],
    );
    // The endpoint wins over a tag of the same name.
    let body = r#"[{"traceId": "1", "id": "2", "timestamp": 1,
        "remoteEndpoint": {"serviceName": "b"}, "tags": {"service.peer.name": "tag"}}]"#;
    let request = v2_json_to_request(body.as_bytes(), false).unwrap();
    let span = &request.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(attr(&span.attributes, "service.peer.name"), Some(&s("b")));
    assert_eq!(span.attributes.len(), 1);
}
