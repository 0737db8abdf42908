//! OTLP/JSON: golden tests on the spec's example shape, the seed's curl
//! check, and the error messages.

use serde_json::{json, Value};

use super::*;
use crate::{AnyValueRef, JsonError, StatusCode};

/// The shape of `examples/trace.json` in opentelemetry-proto: uppercase hex
/// ids, times as strings, kind as a number, attributes at every level.
const SPEC_EXAMPLE: &str = r#"{
  "resourceSpans": [
    {
      "resource": {
        "attributes": [
          { "key": "service.name", "value": { "stringValue": "my.service" } }
        ]
      },
      "scopeSpans": [
        {
          "scope": {
            "name": "my.library",
            "version": "1.0.0",
            "attributes": [
              { "key": "my.scope.attribute", "value": { "stringValue": "some scope attribute" } }
            ]
          },
          "spans": [
            {
              "traceId": "5B8EFFF798038103D269B633813FC60C",
              "spanId": "EEE19B7EC3C1B174",
              "parentSpanId": "EEE19B7EC3C1B173",
              "name": "I'm a server span",
              "startTimeUnixNano": "1544712660000000000",
              "endTimeUnixNano": "1544712661000000000",
              "kind": 2,
              "attributes": [
                { "key": "my.span.attr", "value": { "stringValue": "some value" } }
              ]
            }
          ]
        }
      ]
    }
  ]
}"#;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn the_spec_example_parses_into_the_index() {
    let b = SpanBatch::from_json(SPEC_EXAMPLE.as_bytes()).unwrap();
    assert_eq!(b.len(), 1);
    let s = &b.spans()[0];
    assert_eq!(s.trace_id.to_vec(), hex("5B8EFFF798038103D269B633813FC60C"));
    assert_eq!(s.span_id.to_vec(), hex("EEE19B7EC3C1B174"));
    assert_eq!(s.parent_span_id.to_vec(), hex("EEE19B7EC3C1B173"));
    assert_eq!(s.start_time_unix_nano, 1_544_712_660_000_000_000);
    assert_eq!(s.end_time_unix_nano, 1_544_712_661_000_000_000);
    assert_eq!(s.kind, 2);
    assert_eq!(s.status, StatusCode::Unset);
    assert_eq!(b.span_name(0), "I'm a server span");
    assert_eq!(b.service_name(0), Some("my.service"));
    assert_eq!(
        b.span_attribute(0, "my.span.attr"),
        Some(AnyValueRef::String("some value"))
    );
    assert_eq!(
        b.scope_attribute(0, "my.scope.attribute"),
        Some(AnyValueRef::String("some scope attribute"))
    );
}

#[test]
fn the_spec_example_round_trips_to_the_canonical_json() {
    let b = SpanBatch::from_json(SPEC_EXAMPLE.as_bytes()).unwrap();
    let out: Value = serde_json::from_slice(&b.to_json()).unwrap();
    let span = &out["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    // Ids come out lowercase hex, 64-bit times as strings, enums as numbers.
    assert_eq!(span["traceId"], json!("5b8efff798038103d269b633813fc60c"));
    assert_eq!(span["spanId"], json!("eee19b7ec3c1b174"));
    assert_eq!(span["parentSpanId"], json!("eee19b7ec3c1b173"));
    assert_eq!(span["startTimeUnixNano"], json!("1544712660000000000"));
    assert_eq!(span["endTimeUnixNano"], json!("1544712661000000000"));
    assert_eq!(span["kind"], json!(2));
    assert_eq!(span["name"], json!("I'm a server span"));
    assert_eq!(
        span["attributes"],
        json!([{ "key": "my.span.attr", "value": { "stringValue": "some value" } }])
    );
    let scope = &out["resourceSpans"][0]["scopeSpans"][0]["scope"];
    assert_eq!(scope["name"], json!("my.library"));
    assert_eq!(scope["version"], json!("1.0.0"));
    assert_eq!(
        out["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
        json!("my.service")
    );
    // Keys are lowerCamelCase only.
    let text = String::from_utf8(b.to_json()).unwrap();
    assert!(!text.contains('_'), "snake_case key in {text}");
    // And the output parses back to the same batch.
    let again = SpanBatch::from_json(&b.to_json()).unwrap();
    assert_eq!(again.to_request(), b.to_request());
    assert_eq!(again.spans(), b.spans());
}

#[test]
fn the_seed_curl_check_body_parses() {
    // The body the seed's curl check posts (tests/fixtures/otlp-json-check.sh),
    // its `$(date +%s)` filled in.
    let script = include_str!("../../../../tests/fixtures/otlp-json-check.sh");
    let quoted = script
        .split_once("-d '")
        .and_then(|(_, rest)| rest.rsplit_once('\''))
        .map(|(body, _)| body)
        .expect("the check posts a single-quoted body");
    let body = quoted.replace("'$(date +%s)'", "1718000000");
    assert_ne!(body, quoted, "the check fills in the time");
    let b = SpanBatch::from_json(body.as_bytes()).unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b.service_name(0), Some("test-service"));
    assert_eq!(b.span_name(0), "test-span");
    assert_eq!(
        b.spans()[0].trace_id.to_vec(),
        hex("5b8aa5a2d2c872e8321cf37308d69df2")
    );
    assert_eq!(b.spans()[0].end_time_unix_nano, 1_718_000_000_000_000_001);
    assert!(b.spans()[0].is_root());
}

#[test]
fn integers_are_accepted_as_numbers_or_strings_and_written_as_strings() {
    let body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "0102030405060708090a0b0c0d0e0f10",
        "spanId": "0102030405060708",
        "startTimeUnixNano": 5,
        "endTimeUnixNano": "6",
        "status": {"code": 2, "message": "bad"},
        "attributes": [
            {"key": "n", "value": {"intValue": 12}},
            {"key": "s", "value": {"intValue": "-13"}},
            {"key": "d", "value": {"doubleValue": 1.5}},
            {"key": "b", "value": {"boolValue": true}},
            {"key": "y", "value": {"bytesValue": "AP8="}},
            {"key": "a", "value": {"arrayValue": {"values": [{"stringValue": "x"}]}}},
            {"key": "m", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"intValue": "1"}}]}}}
        ]
    }]}]}]});
    let b = SpanBatch::from_json(body.to_string().as_bytes()).unwrap();
    let s = &b.spans()[0];
    assert_eq!((s.start_time_unix_nano, s.end_time_unix_nano), (5, 6));
    assert_eq!(s.status, StatusCode::Error);
    assert_eq!(b.span_attribute(0, "n"), Some(AnyValueRef::Int(12)));
    assert_eq!(b.span_attribute(0, "s"), Some(AnyValueRef::Int(-13)));
    assert_eq!(b.span_attribute(0, "d"), Some(AnyValueRef::Double(1.5)));
    assert_eq!(b.span_attribute(0, "b"), Some(AnyValueRef::Bool(true)));
    assert_eq!(
        b.span_attribute(0, "y"),
        Some(AnyValueRef::Bytes(&[0, 255]))
    );
    let out: Value = serde_json::from_slice(&b.to_json()).unwrap();
    let span = &out["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["startTimeUnixNano"], json!("5"));
    assert_eq!(span["attributes"][0]["value"], json!({"intValue": "12"}));
    assert_eq!(
        span["attributes"][4]["value"],
        json!({"bytesValue": "AP8="})
    );
    assert_eq!(span["status"], json!({"code": 2, "message": "bad"}));
}

fn err(body: &str) -> JsonError {
    match SpanBatch::from_json(body.as_bytes()) {
        Err(e) => e,
        Ok(b) => panic!("accepted {body}: {} spans", b.len()),
    }
}

#[test]
fn errors_say_what_is_wrong_and_where() {
    let e = err("not json");
    assert!(matches!(e, JsonError::Invalid { .. }), "{e}");
    assert!(e.to_string().contains("expected"), "{e}");

    let e =
        err(r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": "SPAN_KIND_SERVER"}]}]}]}"#);
    let text = e.to_string();
    assert!(
        text.contains("resourceSpans[0].scopeSpans[0].spans[0].kind"),
        "{text}"
    );

    let e = err(r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}"#);
    assert!(e.to_string().contains("spans[0].traceId"), "{e}");

    let e = err(r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{}, {"traceId": "0102"}]}]}]}"#);
    assert_eq!(
        e,
        JsonError::Value {
            path: "resourceSpans[0].scopeSpans[0].spans[1].traceId".into(),
            what: "a trace id must be 32 hex digits (16 bytes) or empty",
        }
    );
    let e =
        err(r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"links": [{"spanId": "01"}]}]}]}]}"#);
    assert_eq!(
        e.to_string(),
        "invalid OTLP/JSON at resourceSpans[0].scopeSpans[0].spans[0].links[0].spanId: a span id must be 16 hex digits (8 bytes) or empty"
    );

    // A list is not a message, even an empty one (serde alone would read
    // it as a struct with its fields by position).
    for body in ["[]", " \n[]", "[[]]", r#"[{"resourceSpans": []}]"#] {
        let e = err(body);
        assert!(matches!(e, JsonError::Invalid { .. }), "{body}: {e}");
        assert!(e.to_string().contains("array"), "{body}: {e}");
    }

    // A bare `null` is an empty request, as the collector reads it; other
    // scalars are not requests.
    for body in ["null", " null\n"] {
        let batch = SpanBatch::from_json(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
        assert!(batch.is_empty(), "{body}");
    }
    for body in ["nul", "null null", "true", "0", "\"x\""] {
        assert!(matches!(err(body), JsonError::Invalid { .. }), "{body}");
    }

    let e = err(r#"{"resourceSpans": []} trailing"#);
    assert!(e.to_string().contains("trailing"), "{e}");

    let e =
        err(r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "-1"}]}]}]}"#);
    assert!(e.to_string().contains("startTimeUnixNano"), "{e}");
}

#[test]
fn snake_case_keys_are_not_interpreted() {
    // OTLP/JSON requires lowerCamelCase; unknown keys are ignored, so a
    // snake_case id simply does not set the id.
    let b = SpanBatch::from_json(
        br#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"trace_id": "0102030405060708090a0b0c0d0e0f10"}]}]}]}"#,
    )
    .unwrap();
    assert_eq!(b.spans()[0].trace_id, [0; 16]);
    let b = SpanBatch::from_json(br#"{"resource_spans": [{}]}"#).unwrap();
    assert!(b.resources().is_empty());
}

#[test]
fn deeply_nested_json_values_are_refused_not_overflowing() {
    let mut v = String::from(r#"{"stringValue": "leaf"}"#);
    for _ in 0..200 {
        v = format!(r#"{{"arrayValue": {{"values": [{v}]}}}}"#);
    }
    let body = format!(
        r#"{{"resourceSpans": [{{"scopeSpans": [{{"spans": [{{"attributes": [{{"key": "k", "value": {v}}}]}}]}}]}}]}}"#
    );
    assert!(SpanBatch::from_json(body.as_bytes()).is_err());
}

#[test]
fn empty_request_objects_are_valid() {
    assert!(SpanBatch::from_json(b"{}").unwrap().is_empty());
    assert!(SpanBatch::from_json(br#"{"resourceSpans": []}"#)
        .unwrap()
        .is_empty());
    // Canonical OTLP/JSON leaves an empty list out.
    assert_eq!(SpanBatch::default().to_json(), b"{}");
}

#[test]
fn non_finite_doubles_come_out_as_null_and_read_back_empty() {
    let req = request(vec![(
        vec![kv("nan", any_value::Value::DoubleValue(f64::NAN))],
        vec![vec![span(1, 1, "x")]],
    )]);
    let b = scan_request(&req);
    let out: Value = serde_json::from_slice(&b.to_json()).unwrap();
    assert_eq!(
        out["resourceSpans"][0]["resource"]["attributes"][0]["value"],
        json!({"doubleValue": null})
    );
    let back = SpanBatch::from_json(&b.to_json()).unwrap();
    assert_eq!(back.resource_attribute(0, "nan"), None);
    assert_eq!(back.spans()[0].span_id, b.spans()[0].span_id);
}

#[test]
fn default_fields_are_left_out_and_oneof_values_kept() {
    // A span with nothing but its ids and name, in a scope and resource
    // with no name, version, schema URL or attributes but for empty and
    // zero attribute values.
    let mut req = request(vec![(
        vec![
            str_kv("empty", ""),
            kv("zero", any_value::Value::IntValue(0)),
            kv("false", any_value::Value::BoolValue(false)),
            kv("no.double", any_value::Value::DoubleValue(0.0)),
            kv(
                "no.items",
                any_value::Value::ArrayValue(crate::otlp::ArrayValue { values: vec![] }),
            ),
            KeyValue {
                key: "unset".into(),
                value: Some(AnyValue { value: None }),
                ..Default::default()
            },
        ],
        vec![vec![Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "bare".into(),
            ..Default::default()
        }]],
    )]);
    req.resource_spans[0].schema_url.clear();
    req.resource_spans[0].scope_spans[0].schema_url.clear();
    req.resource_spans[0].scope_spans[0].scope = None;
    let b = scan_request(&req);
    let text = String::from_utf8(b.to_json()).unwrap();
    for written_default in ["null", "\"\"", ":0", ":false", "[]", "\"0\""] {
        let without_oneof = text
            .replace(r#""values":[]"#, "")
            .replace(r#""stringValue":"""#, "")
            .replace(r#""intValue":"0""#, "")
            .replace(r#""boolValue":false"#, "")
            .replace(r#""doubleValue":0.0"#, "");
        assert!(
            !without_oneof.contains(written_default),
            "{written_default} written in {text}"
        );
    }
    let out: Value = serde_json::from_slice(text.as_bytes()).unwrap();
    assert_eq!(
        out,
        json!({"resourceSpans": [{
            "resource": {"attributes": [
                {"key": "empty", "value": {"stringValue": ""}},
                {"key": "zero", "value": {"intValue": "0"}},
                {"key": "false", "value": {"boolValue": false}},
                {"key": "no.double", "value": {"doubleValue": 0.0}},
                {"key": "no.items", "value": {"arrayValue": {"values": []}}},
                {"key": "unset"},
            ]},
            "scopeSpans": [{"spans": [{
                "traceId": "01010101010101010101010101010101",
                "spanId": "0202020202020202",
                "name": "bare",
            }]}],
        }]})
    );
    // What is left out reads back as the default it stood for.
    let back = SpanBatch::from_json(text.as_bytes()).unwrap();
    assert_eq!(back.spans()[0].span_id, b.spans()[0].span_id);
    assert_eq!(back.span_name(0), "bare");
    assert_eq!(
        back.resource_attribute(0, "empty"),
        Some(AnyValueRef::String(""))
    );
    assert_eq!(
        back.resource_attribute(0, "zero"),
        Some(AnyValueRef::Int(0))
    );
}
