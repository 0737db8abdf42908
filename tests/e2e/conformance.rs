//! Conformance with the OpenTelemetry Collector: the examples of its
//! READMEs and the edge cases of its tests, restated as cases of tables and
//! run through the real binary. This module holds the `tail_sampling`
//! table (the traces kept); `resource_detection` (the attributes that
//! arrive) and `batch` (the batches sent on) hold theirs.
//!
//! A case is one policy list (with any processor settings), a handful of
//! traces described by their spans, and the trace ids the collector keeps
//! for them. Every case gets its own pipeline (`otlp/<case>` receiver,
//! `tail_sampling/<case>` processor) in one gateway, so the whole table
//! costs one process start and one `decision_wait`. When the collector
//! changes a behaviour, following it is one more entry in [`cases`].

mod batch;
mod resource_detection;

use crate::support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use support::gateway::{otlp_exporter_to, Gateway, TELEMETRY};
use support::raw::{grpc, wait_until_accounted, TRACE_EXPORT};
use support::sink::Sink;

/// A span attribute's value.
#[derive(Clone, Debug)]
enum V {
    S(&'static str),
    I(i64),
    B(bool),
}

/// One span of a test trace: its resource's `service.name`, attributes,
/// status, `tracestate`, timing (ms after a fixed epoch) and the request
/// (`batch`, sent in order) it travels in.
#[derive(Clone, Debug)]
struct Sp {
    service: &'static str,
    resource: Vec<(&'static str, V)>,
    attrs: Vec<(&'static str, V)>,
    status: status::StatusCode,
    trace_state: &'static str,
    offset_ms: u64,
    ms: u64,
    batch: usize,
}

fn sp() -> Sp {
    Sp {
        service: "api",
        resource: Vec::new(),
        attrs: Vec::new(),
        status: status::StatusCode::Unset,
        trace_state: "",
        offset_ms: 0,
        ms: 10,
        batch: 0,
    }
}

impl Sp {
    fn svc(mut self, service: &'static str) -> Sp {
        self.service = service;
        self
    }
    /// An attribute of the span's resource.
    fn res(mut self, key: &'static str, value: V) -> Sp {
        self.resource.push((key, value));
        self
    }
    fn s(mut self, key: &'static str, value: &'static str) -> Sp {
        self.attrs.push((key, V::S(value)));
        self
    }
    fn i(mut self, key: &'static str, value: i64) -> Sp {
        self.attrs.push((key, V::I(value)));
        self
    }
    fn b(mut self, key: &'static str, value: bool) -> Sp {
        self.attrs.push((key, V::B(value)));
        self
    }
    fn error(mut self) -> Sp {
        self.status = status::StatusCode::Error;
        self
    }
    fn ok(mut self) -> Sp {
        self.status = status::StatusCode::Ok;
        self
    }
    fn state(mut self, trace_state: &'static str) -> Sp {
        self.trace_state = trace_state;
        self
    }
    /// Starts `offset` ms after the epoch and lasts `ms` ms.
    fn time(mut self, offset: u64, ms: u64) -> Sp {
        self.offset_ms = offset;
        self.ms = ms;
        self
    }
    fn batch(mut self, batch: usize) -> Sp {
        self.batch = batch;
        self
    }
}

/// One conformance case.
struct Case {
    /// Also the pipeline's name: `[a-z0-9_]` only.
    name: &'static str,
    /// Extra `tail_sampling` settings, one `key: value` a line.
    settings: &'static str,
    /// The `policies:` list as the collector's README writes it, at column 0.
    policies: &'static str,
    /// Each trace as its spans; its index is its place here.
    traces: Vec<Vec<Sp>>,
    /// The indexes of the traces the collector keeps.
    kept: &'static [usize],
}

fn single(span: Sp) -> Vec<Sp> {
    vec![span]
}

/// The table. Each entry says where in the collector the fact comes from.
fn cases() -> Vec<Case> {
    vec![
        // README: `always_sample` samples every trace.
        Case {
            name: "always_sample",
            settings: "",
            policies: "
- name: test-policy-1
  type: always_sample
",
            traces: vec![
                single(sp()),
                single(sp().error()),
                single(sp().svc("health")),
            ],
            kept: &[0, 1, 2],
        },
        // README `latency: {threshold_ms: 5000}`, scaled down. The
        // duration runs from the earliest start to the latest end over the
        // whole trace; since the collector aligned the bounds (mid-2026)
        // `threshold_ms` is exclusive with or without an upper bound.
        Case {
            name: "latency",
            settings: "",
            policies: "
- name: test-policy-2
  type: latency
  latency: {threshold_ms: 1000}
",
            traces: vec![
                single(sp().time(0, 999)),
                single(sp().time(0, 1000)),
                single(sp().time(0, 1001)),
                single(sp().time(0, 5000)),
                // No span is long; the trace is (100 ms .. 1600 ms).
                vec![sp().time(100, 100), sp().time(1500, 100)],
            ],
            kept: &[2, 3, 4],
        },
        // `upper_threshold_ms`: threshold_ms < duration <= upper_threshold_ms.
        Case {
            name: "latency_upper",
            settings: "",
            policies: "
- name: band
  type: latency
  latency: {threshold_ms: 1000, upper_threshold_ms: 2000}
",
            traces: vec![
                single(sp().time(0, 1000)),
                single(sp().time(0, 1500)),
                single(sp().time(0, 2000)),
                single(sp().time(0, 2001)),
            ],
            kept: &[1, 2],
        },
        // README `numeric_attribute: {key: key1, min_value: 50, max_value:
        // 100}`: both bounds inclusive; a resource or span attribute.
        Case {
            name: "numeric_attribute",
            settings: "",
            policies: "
- name: test-policy-3
  type: numeric_attribute
  numeric_attribute: {key: key1, min_value: 50, max_value: 100}
",
            traces: vec![
                single(sp().i("key1", 49)),
                single(sp().i("key1", 50)),
                single(sp().i("key1", 100)),
                single(sp().i("key1", 101)),
                single(sp()),
                // One span in range is enough.
                vec![sp().i("key1", 10), sp().i("key1", 75)],
                // A resource attribute counts as well.
                single(sp().res("key1", V::I(60))),
            ],
            kept: &[1, 2, 5, 6],
        },
        // `invert_match` flips that policy's own vote.
        Case {
            name: "numeric_attribute_inverted",
            settings: "",
            policies: "
- name: outside
  type: numeric_attribute
  numeric_attribute: {key: key1, min_value: 50, max_value: 100, invert_match: true}
",
            traces: vec![
                single(sp().i("key1", 49)),
                single(sp().i("key1", 75)),
                single(sp().i("key1", 101)),
                // Nothing matches, so the flipped vote samples.
                single(sp()),
            ],
            kept: &[0, 2, 3],
        },
        // README `string_attribute: {key: key2, values: [value1, value2]}`:
        // exact matches only.
        Case {
            name: "string_attribute",
            settings: "",
            policies: "
- name: test-policy-4
  type: string_attribute
  string_attribute: {key: key2, values: [value1, value2]}
",
            traces: vec![
                single(sp().s("key2", "value1")),
                single(sp().s("key2", "value2")),
                single(sp().s("key2", "value")),
                single(sp().s("key2", "value12")),
                single(sp().s("other", "value1")),
                single(sp().res("key2", V::S("value2"))),
            ],
            kept: &[0, 1, 5],
        },
        // README `enabled_regex_matching`: the expressions search the value
        // (RE2 MatchString), they are not anchored unless written so.
        Case {
            name: "string_attribute_regex",
            settings: "",
            policies: r#"
- name: test-policy-5
  type: string_attribute
  string_attribute: {key: key2, values: ["value.*", "^/api/v[0-9]+/"], enabled_regex_matching: true}
"#,
            traces: vec![
                single(sp().s("key2", "value7")),
                single(sp().s("key2", "a-value")),
                single(sp().s("key2", "/api/v2/users")),
                single(sp().s("key2", "/x/api/v2/")),
                single(sp().s("key2", "valu")),
            ],
            kept: &[0, 1, 2],
        },
        // The issue's table: "every ERROR trace" plus "service.name not in
        // [health]". Since June 2026 invert_match only flips the policy's
        // own vote: no veto over the ERROR policy.
        Case {
            name: "invert_match_no_veto",
            settings: "",
            policies: "
- name: errors
  type: status_code
  status_code: {status_codes: [ERROR]}
- name: not-health
  type: string_attribute
  string_attribute: {key: service.name, values: [health], invert_match: true}
",
            traces: vec![
                single(sp().svc("api")),
                single(sp().svc("api").error()),
                single(sp().svc("health").error()),
                single(sp().svc("health")),
                vec![sp().svc("health"), sp().svc("health").error()],
                // A health span anywhere makes the inverted policy vote no.
                vec![sp().svc("api"), sp().svc("health")],
            ],
            kept: &[0, 1, 2, 4],
        },
        // README `status_code: {status_codes: [ERROR, UNSET]}`; any span
        // with a listed status.
        Case {
            name: "status_code",
            settings: "",
            policies: "
- name: test-policy-6
  type: status_code
  status_code: {status_codes: [ERROR, UNSET]}
",
            traces: vec![
                single(sp().error()),
                single(sp()),
                single(sp().ok()),
                vec![sp().ok(), sp().error()],
            ],
            kept: &[0, 1, 3],
        },
        Case {
            name: "status_code_ok",
            settings: "",
            policies: "
- name: ok-only
  type: status_code
  status_code: {status_codes: [OK]}
",
            traces: vec![single(sp().error()), single(sp()), single(sp().ok())],
            kept: &[2],
        },
        // README `boolean_attribute: {key: key4, value: true}`.
        Case {
            name: "boolean_attribute",
            settings: "",
            policies: "
- name: test-policy-7
  type: boolean_attribute
  boolean_attribute: {key: key4, value: true}
",
            traces: vec![
                single(sp().b("key4", true)),
                single(sp().b("key4", false)),
                single(sp().s("key4", "true")),
            ],
            kept: &[0],
        },
        // The collector reads the value with pdata's `Bool()`, which is
        // false for a value of any other type: `value: false` matches a
        // string attribute; a missing key matches nothing.
        Case {
            name: "boolean_attribute_false",
            settings: "",
            policies: "
- name: off
  type: boolean_attribute
  boolean_attribute: {key: key4, value: false}
",
            traces: vec![
                single(sp().b("key4", false)),
                single(sp().b("key4", true)),
                single(sp().s("key4", "yes")),
                single(sp()),
            ],
            kept: &[0, 2],
        },
        Case {
            name: "boolean_attribute_inverted",
            settings: "",
            policies: "
- name: not-true
  type: boolean_attribute
  boolean_attribute: {key: key4, value: true, invert_match: true}
",
            traces: vec![
                single(sp().b("key4", true)),
                single(sp().b("key4", false)),
                single(sp()),
                // One matching span makes the trace match: flipped, not sampled.
                vec![sp().b("key4", false), sp().b("key4", true)],
            ],
            kept: &[1, 2],
        },
        // README `span_count: {min_spans: 2, max_spans: 20}`, narrowed: both
        // bounds inclusive over all the trace's spans.
        Case {
            name: "span_count",
            settings: "",
            policies: "
- name: test-policy-8
  type: span_count
  span_count: {min_spans: 2, max_spans: 3}
",
            traces: vec![
                vec![sp(); 1],
                vec![sp(); 2],
                vec![sp(); 3],
                vec![sp(); 4],
                // Spans of one trace in two requests count together.
                vec![sp(), sp().batch(1)],
            ],
            kept: &[1, 2, 4],
        },
        // README `trace_state: {key: key3, values: [value1, value2]}`.
        Case {
            name: "trace_state",
            settings: "",
            policies: "
- name: test-policy-9
  type: trace_state
  trace_state: {key: key3, values: [value1, value2]}
",
            traces: vec![
                single(sp().state("key3=value1")),
                single(sp().state("other=x,key3=value2")),
                single(sp().state("key3=value3")),
                single(sp().state("key4=value1")),
                single(sp()),
            ],
            kept: &[0, 1],
        },
        // README `and`: numeric key1 in [50, 100] and string key2 in
        // [value1, value2], on any spans of the trace.
        Case {
            name: "and",
            settings: "",
            policies: "
- name: and-policy-1
  type: and
  and:
    and_sub_policy:
      - name: test-and-policy-1
        type: numeric_attribute
        numeric_attribute: {key: key1, min_value: 50, max_value: 100}
      - name: test-and-policy-2
        type: string_attribute
        string_attribute: {key: key2, values: [value1, value2]}
",
            traces: vec![
                single(sp().i("key1", 60).s("key2", "value1")),
                single(sp().i("key1", 60)),
                single(sp().s("key2", "value2")),
                vec![sp().i("key1", 100), sp().s("key2", "value2")],
                single(sp().i("key1", 10).s("key2", "value1")),
            ],
            kept: &[0, 3],
        },
        // A `not` inside `and`: errors of every service but health.
        Case {
            name: "and_not",
            settings: "",
            policies: "
- name: errors-but-health
  type: and
  and:
    and_sub_policy:
      - name: errors
        type: status_code
        status_code: {status_codes: [ERROR]}
      - name: not-health
        type: not
        not:
          not_sub_policy:
            name: health
            type: string_attribute
            string_attribute: {key: service.name, values: [health]}
",
            traces: vec![
                single(sp().svc("api").error()),
                single(sp().svc("health").error()),
                single(sp().svc("api")),
            ],
            kept: &[0],
        },
        // README `drop`: a matching drop policy discards the trace whatever
        // any other policy votes.
        Case {
            name: "drop",
            settings: "",
            policies: r#"
- name: keep-all
  type: always_sample
- name: drop-it
  type: drop
  drop:
    drop_sub_policy:
      - name: health-paths
        type: string_attribute
        string_attribute: {key: url.path, values: ["\/health", "\/metrics"], enabled_regex_matching: true}
"#,
            traces: vec![
                single(sp().s("url.path", "/health")),
                single(sp().s("url.path", "/metrics").error()),
                single(sp().s("url.path", "/orders")),
                vec![
                    sp().s("url.path", "/orders"),
                    sp().s("url.path", "/healthz"),
                ],
            ],
            kept: &[2],
        },
        // README `composite`, scaled from 1000 to 8 spans a second: the
        // first sub-policy that samples a trace decides it, within its share
        // of the second (50 % = 4 spans, 25 % = 2); `always_sample` has no
        // `rate_allocation` entry, so its share is 0 and it never samples.
        // A trace over its sub-policy's share is not sampled (no later
        // sub-policy gets it) and costs nothing, so a smaller one still
        // fits. One shard decides the traces in the order they arrive, as
        // the collector's single batcher does, all within one second.
        Case {
            name: "composite",
            settings: "shards: 1",
            policies: "
- name: composite-policy-1
  type: composite
  composite:
    max_total_spans_per_second: 8
    policy_order: [test-composite-policy-1, test-composite-policy-2, test-composite-policy-3]
    composite_sub_policy:
      - name: test-composite-policy-1
        type: numeric_attribute
        numeric_attribute: {key: key1, min_value: 50, max_value: 100}
      - name: test-composite-policy-2
        type: string_attribute
        string_attribute: {key: key2, values: [value1, value2]}
      - name: test-composite-policy-3
        type: always_sample
    rate_allocation:
      - {policy: test-composite-policy-1, percent: 50}
      - {policy: test-composite-policy-2, percent: 25}
",
            traces: vec![
                single(sp().i("key1", 60)),
                single(sp().i("key1", 70)),
                single(sp().s("key2", "value1")),
                // Only always_sample matches: a share of 0.
                single(sp()),
                // 2 + 3 spans > 4: not sampled, and key2 is not tried.
                vec![sp().i("key1", 80).s("key2", "value1"); 3],
                single(sp().i("key1", 90)),
                single(sp().i("key1", 10).s("key2", "value2")),
                // The 25 % share is spent.
                single(sp().s("key2", "value1")),
            ],
            kept: &[0, 1, 2, 5, 6],
        },
        // The collector's composite tests (OverflowAlwaysSampled): a
        // sub-policy that matches but has spent its share decides "not
        // sampled"; only a trace it does not match reaches the next.
        Case {
            name: "composite_no_fallthrough",
            settings: "shards: 1",
            policies: "
- name: overflow
  type: composite
  composite:
    max_total_spans_per_second: 3
    composite_sub_policy:
      - name: eval-1
        type: numeric_attribute
        numeric_attribute: {key: tag, min_value: 0, max_value: 100}
      - name: eval-2
        type: always_sample
    rate_allocation:
      - {policy: eval-1, percent: 34}
      - {policy: eval-2, percent: 34}
",
            traces: vec![
                single(sp().i("tag", 10)),
                single(sp().i("tag", 11)),
                single(sp().i("tag", 1001)),
                single(sp().i("tag", 1002)),
            ],
            kept: &[0, 2],
        },
        // Each sub-policy's own count is held against its share and against
        // max_total_spans_per_second, not the sub-policies' sum (the
        // collector's composite evaluator): `keyed` (100 % = 2 spans) keeps
        // two traces and `rest` (`percent: 0`, the even share: 2 / 2 = 1)
        // one more, three spans in a second whose total is 2.
        Case {
            name: "composite_total",
            settings: "shards: 1",
            policies: "
- name: total
  type: composite
  composite:
    max_total_spans_per_second: 2
    composite_sub_policy:
      - name: keyed
        type: string_attribute
        string_attribute: {key: key2, values: [value1]}
      - name: rest
        type: always_sample
    rate_allocation:
      - {policy: keyed, percent: 100}
      - {policy: rest, percent: 0}
",
            traces: vec![
                single(sp().s("key2", "value1")),
                single(sp().s("key2", "value1")),
                single(sp().s("key2", "value1")),
                // rest: 2 / 2 = 1 span a second.
                single(sp()),
                single(sp()),
            ],
            kept: &[0, 1, 3],
        },
        // `sampling_strategy: span-ingest`: each arriving request is judged
        // on its own, and a trace no request samples is not sampled. A
        // later request can still sample a trace (kept whole); a duration
        // only visible across requests is never seen.
        Case {
            name: "span_ingest",
            settings: "sampling_strategy: span-ingest",
            policies: "
- name: errors
  type: status_code
  status_code: {status_codes: [ERROR]}
- name: slow
  type: latency
  latency: {threshold_ms: 1000}
",
            traces: vec![
                single(sp().error()),
                single(sp()),
                vec![sp(), sp().error().batch(1)],
                single(sp().time(0, 1500)),
                vec![sp().time(100, 100), sp().time(1500, 100).batch(1)],
            ],
            kept: &[0, 2, 3],
        },
    ]
}

/// The trace id of trace `trace` of case `case`: distinct across the table.
fn trace_id(case: usize, trace: usize) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[0] = case as u8 + 1;
    id[1] = trace as u8 + 1;
    id[15] = 0x5a;
    id
}

fn span_id(case: usize, trace: usize, n: usize) -> [u8; 8] {
    [
        case as u8 + 1,
        trace as u8 + 1,
        n as u8 + 1,
        0,
        0,
        0,
        0,
        0x5a,
    ]
}

const EPOCH_NS: u64 = 1_700_000_000_000_000_000;

fn value(v: &V) -> AnyValue {
    AnyValue {
        value: Some(match v {
            V::S(s) => any_value::Value::StringValue((*s).into()),
            V::I(i) => any_value::Value::IntValue(*i),
            V::B(b) => any_value::Value::BoolValue(*b),
        }),
    }
}

fn key_value(key: &str, v: &V) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(value(v)),
        ..Default::default()
    }
}

/// The request carrying the spans of `case` in `batch`: one resource per
/// span, so each keeps its own `service.name`.
fn request(index: usize, case: &Case, batch: usize) -> Option<Vec<u8>> {
    let mut resource_spans = Vec::new();
    for (t, spans) in case.traces.iter().enumerate() {
        for (n, s) in spans.iter().enumerate().filter(|(_, s)| s.batch == batch) {
            let start = EPOCH_NS + s.offset_ms * 1_000_000;
            let span = Span {
                trace_id: trace_id(index, t).to_vec(),
                span_id: span_id(index, t, n).to_vec(),
                trace_state: s.trace_state.into(),
                name: format!("{}-{t}-{n}", case.name),
                start_time_unix_nano: start,
                end_time_unix_nano: start + s.ms * 1_000_000,
                attributes: s.attrs.iter().map(|(k, v)| key_value(k, v)).collect(),
                status: Some(Status {
                    code: s.status as i32,
                    message: String::new(),
                }),
                ..Default::default()
            };
            resource_spans.push(ResourceSpans {
                resource: Some(Resource {
                    attributes: std::iter::once(("service.name", V::S(s.service)))
                        .chain(s.resource.iter().cloned())
                        .map(|(k, v)| key_value(k, &v))
                        .collect(),
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
    }
    (!resource_spans.is_empty())
        .then(|| ExportTraceServiceRequest { resource_spans }.encode_to_vec())
}

/// `text`'s non-blank lines, each after `by`.
fn indent(text: &str, by: &str) -> String {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{by}{l}\n"))
        .collect()
}

/// One case's pipeline: an `otlp/<name>` receiver, the processor
/// `<processor>/<name>` with `settings` (its lines under it) and the
/// exporter `exporter`.
struct CasePipeline<'a> {
    name: &'a str,
    settings: String,
    exporter: String,
}

/// One gateway config holding a pipeline per case, each through its own
/// `processor`, with the `exporters:` section `exporters`.
fn config_per_case(pipelines: &[CasePipeline<'_>], processor: &str, exporters: &str) -> String {
    let mut receivers = String::from("receivers:\n");
    let mut processors = String::from("processors:\n");
    let mut service = String::from("service:\n  pipelines:\n");
    for CasePipeline {
        name,
        settings,
        exporter,
    } in pipelines
    {
        receivers.push_str(&format!(
            "  otlp/{name}:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:0\n"
        ));
        processors.push_str(&format!("  {processor}/{name}:\n{settings}"));
        service.push_str(&format!(
            "    traces/{name}:\n      receivers: [otlp/{name}]\n      processors: [{processor}/{name}]\n      exporters: [{exporter}]\n"
        ));
    }
    format!("{receivers}{processors}{exporters}{service}{TELEMETRY}")
}

/// One gateway config holding a pipeline per case.
fn config(cases: &[Case], sink: std::net::SocketAddr) -> String {
    let pipelines: Vec<CasePipeline> = cases
        .iter()
        .map(|case| CasePipeline {
            name: case.name,
            settings: format!(
                "    decision_wait: 200ms\n{}    policies:\n{}",
                indent(case.settings, "    "),
                indent(case.policies, "      "),
            ),
            exporter: "otlp".into(),
        })
        .collect();
    config_per_case(&pipelines, "tail_sampling", &otlp_exporter_to(sink))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_sampling_keeps_what_the_collector_keeps() {
    let cases = cases();
    let sink = Sink::start().await;
    let gw = Gateway::start(&config(&cases, sink.addr));

    // Each case's requests in batch order; the cases side by side.
    let sends = cases.iter().enumerate().map(|(i, case)| {
        let addr = gw.addr(&format!("otlp/{}", case.name), "grpc");
        async move {
            let batches = case.traces.iter().flatten().map(|s| s.batch).max();
            for batch in 0..=batches.unwrap_or(0) {
                if let Some(body) = request(i, case, batch) {
                    let reply = grpc(addr, TRACE_EXPORT, &body, None).await;
                    assert_eq!(reply.code, 0, "{}: {}", case.name, reply.message);
                }
            }
        }
    });
    futures::future::join_all(sends).await;

    let total: usize = cases.iter().flat_map(|c| &c.traces).map(Vec::len).sum();
    wait_until_accounted(
        gw.addr("telemetry", "metrics"),
        total,
        Duration::from_secs(10),
    )
    .await;

    // What arrived, trace by trace.
    let mut got: HashMap<[u8; 16], BTreeSet<Vec<u8>>> = HashMap::new();
    for s in sink.spans() {
        let id: [u8; 16] = s.span.trace_id.as_slice().try_into().expect("16-byte id");
        assert!(
            got.entry(id).or_default().insert(s.span.span_id.clone()),
            "span {:02x?} exported twice",
            s.span.span_id
        );
    }
    let mut wrong = BTreeMap::new();
    for (i, case) in cases.iter().enumerate() {
        let kept: Vec<usize> = (0..case.traces.len())
            .filter(|&t| got.contains_key(&trace_id(i, t)))
            .collect();
        if kept != case.kept {
            wrong.insert(
                case.name,
                format!("kept {kept:?}, the collector keeps {:?}", case.kept),
            );
        }
        for &t in case.kept {
            let want: BTreeSet<Vec<u8>> = (0..case.traces[t].len())
                .map(|n| span_id(i, t, n).to_vec())
                .collect();
            if got.get(&trace_id(i, t)).is_some_and(|spans| spans != &want) {
                wrong.insert(case.name, format!("trace {t} arrived incomplete"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "cases differing from the collector: {wrong:#?}"
    );
}
