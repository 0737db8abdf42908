//! A pre-encoded request template: `traces_per_request` traces of
//! `spans_per_trace` spans with `attributes` realistic attributes each,
//! spread over a few services. Per request only the trace ids change.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;

pub struct Shape {
    pub spans_per_trace: usize,
    pub traces_per_request: usize,
    pub attributes: usize,
}

pub struct Template {
    encoded: Vec<u8>,
    /// Offsets of each trace's id occurrences, per trace.
    trace_id_offsets: Vec<Vec<usize>>,
    pub spans: usize,
}

const SERVICES: [&str; 5] = ["frontend", "checkout", "payment", "inventory", "auth"];

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

/// A distinctive placeholder id per trace, found again after encoding.
fn placeholder(trace: usize) -> [u8; 16] {
    let mut id = [0xA5; 16];
    id[..8].copy_from_slice(&(trace as u64 | 0x5A5A_0000_0000_0000).to_be_bytes());
    id
}

fn attributes(n: usize, trace: usize, span: usize) -> Vec<KeyValue> {
    let pool = [
        kv("http.request.method", s(["GET", "POST", "PUT"][span % 3])),
        kv("http.route", s(&format!("/api/v1/items/{}", span % 7))),
        kv(
            "http.response.status_code",
            any_value::Value::IntValue([200, 201, 404, 500][span % 4]),
        ),
        kv("server.address", s("checkout.prod.svc.cluster.local")),
        kv("url.scheme", s("https")),
        kv(
            "user_agent.original",
            s("Mozilla/5.0 (X11; Linux x86_64) loadgen/1.0"),
        ),
        kv("db.system", s("postgresql")),
        kv(
            "db.statement",
            s("SELECT id, name FROM items WHERE id = $1"),
        ),
        kv("rpc.method", s("GetItem")),
        kv("net.peer.port", any_value::Value::IntValue(5432)),
        kv("customer.tier", s(["gold", "silver", "bronze"][trace % 3])),
        kv("retry", any_value::Value::BoolValue(span.is_multiple_of(5))),
    ];
    pool.into_iter().cycle().take(n).collect()
}

impl Template {
    pub fn new(shape: &Shape) -> Template {
        let base = 1_700_000_000_000_000_000u64;
        let mut resource_spans = Vec::new();
        for (svc_index, svc) in SERVICES.iter().enumerate() {
            let mut spans = Vec::new();
            for trace in 0..shape.traces_per_request {
                for i in 0..shape.spans_per_trace {
                    if i % SERVICES.len() != svc_index {
                        continue;
                    }
                    let start = base + (i as u64) * 1_000_000;
                    spans.push(Span {
                        trace_id: placeholder(trace).to_vec(),
                        span_id: ((trace * 1000 + i + 1) as u64).to_be_bytes().to_vec(),
                        parent_span_id: if i == 0 {
                            Vec::new()
                        } else {
                            ((trace * 1000 + (i - 1) / 2 + 1) as u64)
                                .to_be_bytes()
                                .to_vec()
                        },
                        name: format!("{svc} operation {}", i % 4),
                        kind: [
                            span::SpanKind::Server,
                            span::SpanKind::Client,
                            span::SpanKind::Internal,
                        ][i % 3] as i32,
                        start_time_unix_nano: start,
                        end_time_unix_nano: start + 5_000_000,
                        attributes: attributes(shape.attributes, trace, i),
                        status: Some(Status {
                            code: status::StatusCode::Unset as i32,
                            message: String::new(),
                        }),
                        ..Default::default()
                    });
                }
            }
            if spans.is_empty() {
                continue;
            }
            resource_spans.push(ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", s(svc)),
                        kv("service.version", s("1.4.2")),
                        kv("k8s.namespace.name", s("shop")),
                        kv("k8s.pod.name", s(&format!("{svc}-7d9f8c6b5-x2k4p"))),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "loadgen".into(),
                        version: "1.0".into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        let request = ExportTraceServiceRequest { resource_spans };
        let spans = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        let encoded = request.encode_to_vec();
        let trace_id_offsets = (0..shape.traces_per_request)
            .map(|t| {
                let needle = placeholder(t);
                encoded
                    .windows(16)
                    .enumerate()
                    .filter(|(_, w)| *w == needle)
                    .map(|(i, _)| i)
                    .collect()
            })
            .collect();
        Template {
            encoded,
            trace_id_offsets,
            spans,
        }
    }

    pub fn encoded_len(&self) -> usize {
        self.encoded.len()
    }

    /// Request number `n`: the template with fresh, random-looking trace ids.
    pub fn request(&self, n: u64) -> Bytes {
        let mut buf = self.encoded.clone();
        for (t, offsets) in self.trace_id_offsets.iter().enumerate() {
            let seq = n * self.trace_id_offsets.len() as u64 + t as u64;
            let id = [
                splitmix64(seq).to_be_bytes(),
                splitmix64(!seq).to_be_bytes(),
            ]
            .concat();
            for &o in offsets {
                buf[o..o + 16].copy_from_slice(&id);
            }
        }
        Bytes::from(buf)
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_decode_with_distinct_trace_ids() {
        let t = Template::new(&Shape {
            spans_per_trace: 10,
            traces_per_request: 10,
            attributes: 8,
        });
        assert_eq!(t.spans, 100);
        let a = ExportTraceServiceRequest::decode(t.request(0)).unwrap();
        let b = ExportTraceServiceRequest::decode(t.request(1)).unwrap();
        let ids = |r: &ExportTraceServiceRequest| {
            let mut ids: Vec<Vec<u8>> = r
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| &ss.spans)
                .map(|s| s.trace_id.clone())
                .collect();
            ids.sort();
            ids.dedup();
            ids
        };
        assert_eq!(ids(&a).len(), 10);
        assert!(ids(&a).iter().all(|id| !ids(&b).contains(id)));
        let span = &a.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.attributes.len(), 8);
    }
}
