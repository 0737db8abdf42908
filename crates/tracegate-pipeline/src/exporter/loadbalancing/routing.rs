//! `routing_key`: what decides which backend a span goes to, and the split
//! of a batch into one part per backend.

use serde::Deserialize;
use tracegate_model::{AnyValueRef, SpanBatch, SpanInfo};

use crate::membership::hash::{trace_id_key, KeyHasher, Rendezvous};

/// `routing_key:` — the collector's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum RoutingKey {
    /// Every span of a trace to one backend. The default.
    #[default]
    #[serde(rename = "traceID", alias = "")]
    TraceId,
    /// Every span of a service (the resource's `service.name`) to one
    /// backend.
    #[serde(rename = "service")]
    Service,
    /// Every span of a resource (its whole attribute set) to one backend.
    #[serde(rename = "resource")]
    Resource,
    /// By the values of `routing_attributes`.
    #[serde(rename = "attributes")]
    Attributes,
}

/// The pseudo attributes `routing_attributes` may name besides real ones.
const SPAN_NAME: &str = "span.name";
const SPAN_KIND: &str = "span.kind";

/// Splits batches by routing key.
#[derive(Debug, Clone)]
pub(super) struct Router {
    key: RoutingKey,
    attributes: Vec<String>,
}

impl Router {
    pub(super) fn new(key: RoutingKey, attributes: &[String]) -> Router {
        Router {
            key,
            attributes: attributes.to_vec(),
        }
    }

    /// `batch` split into one part per member of `ring`, in the ring's
    /// order (empty parts for members that get nothing). The ring must not
    /// be empty.
    pub(super) fn partition(&self, batch: &SpanBatch, ring: &Rendezvous) -> Vec<SpanBatch> {
        let members = ring.len();
        let owner = |key: u64| ring.owner(key).unwrap_or(0);
        match self.key {
            RoutingKey::TraceId => {
                // Spans of a trace usually sit together: one hash per run.
                let mut last: Option<([u8; 16], usize)> = None;
                batch.partition(members, |_, span| match last {
                    Some((id, part)) if id == span.trace_id => part,
                    _ => {
                        let part = owner(trace_id_key(&span.trace_id));
                        last = Some((span.trace_id, part));
                        part
                    }
                })
            }
            RoutingKey::Service | RoutingKey::Resource => {
                // A resource's spans are contiguous: one key per resource.
                let mut last: Option<(usize, usize)> = None;
                batch.partition(members, |i, _| {
                    let resource = batch.resource_index(i);
                    match last {
                        Some((r, part)) if r == resource => part,
                        _ => {
                            let key = if self.key == RoutingKey::Service {
                                service_key(batch, i)
                            } else {
                                resource_key(batch, i)
                            };
                            let part = owner(key);
                            last = Some((resource, part));
                            part
                        }
                    }
                })
            }
            RoutingKey::Attributes => batch.partition(members, |i, span| {
                owner(attributes_key(batch, i, span, &self.attributes))
            }),
        }
    }
}

/// `service.name=<value>|`, the collector's composite key for one
/// attribute; `service.name=|` when the resource has none.
fn service_key(batch: &SpanBatch, span: usize) -> u64 {
    let mut h = KeyHasher::default();
    h.write(b"service.name=");
    if let Some(value) = batch.resource_attribute(span, "service.name") {
        write_value(&mut h, &value);
    }
    h.write(b"|");
    h.finish()
}

/// The resource's attributes, sorted by key (the first of a repeated key),
/// so two encodings of one resource agree.
fn resource_key(batch: &SpanBatch, span: usize) -> u64 {
    let mut attributes: Vec<(&str, Option<AnyValueRef<'_>>)> =
        batch.resource_attributes(span).collect();
    attributes.sort_by_key(|(key, _)| *key);
    attributes.dedup_by_key(|(key, _)| *key);
    let mut h = KeyHasher::default();
    for (key, value) in attributes {
        write_pair(&mut h, key, value.as_ref());
    }
    h.finish()
}

/// `name=<value>|` for each of `names`, the value from the resource, else
/// the scope, else the span (with the pseudo attributes `span.name` and
/// `span.kind`); `name=|` when none has it.
fn attributes_key(batch: &SpanBatch, span: usize, info: &SpanInfo, names: &[String]) -> u64 {
    let mut h = KeyHasher::default();
    for name in names {
        if let Some(v) = batch
            .resource_attribute(span, name)
            .or_else(|| batch.scope_attribute(span, name))
        {
            write_pair(&mut h, name, Some(&v));
        } else if name == SPAN_NAME {
            write_pair(
                &mut h,
                name,
                Some(&AnyValueRef::String(batch.span_name(span))),
            );
        } else if name == SPAN_KIND {
            write_pair(&mut h, name, Some(&AnyValueRef::Int(i64::from(info.kind))));
        } else {
            write_pair(&mut h, name, batch.span_attribute(span, name).as_ref());
        }
    }
    h.finish()
}

fn write_pair(h: &mut KeyHasher, key: &str, value: Option<&AnyValueRef<'_>>) {
    h.write(key.as_bytes());
    h.write(b"=");
    if let Some(value) = value {
        write_value(h, value);
    }
    h.write(b"|");
}

/// A value's bytes behind a tag of its type, so `1` and `"1"` differ.
fn write_value(h: &mut KeyHasher, value: &AnyValueRef<'_>) {
    match *value {
        AnyValueRef::String(s) => {
            h.write(b"s");
            h.write(s.as_bytes());
        }
        AnyValueRef::Bool(b) => h.write(if b { b"t" } else { b"f" }),
        AnyValueRef::Int(i) => {
            h.write(b"i");
            h.write(&i.to_le_bytes());
        }
        AnyValueRef::Double(d) => {
            h.write(b"d");
            h.write(&d.to_bits().to_le_bytes());
        }
        AnyValueRef::Bytes(b) => {
            h.write(b"b");
            h.write(b);
        }
        AnyValueRef::Array(b) => {
            h.write(b"a");
            h.write(b);
        }
        AnyValueRef::KvList(b) => {
            h.write(b"k");
            h.write(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use tracegate_model::otlp::{
        string_kv, ExportTraceServiceRequest, InstrumentationScope, Resource, ResourceSpans,
        ScopeSpans, Span,
    };

    use super::*;
    use crate::membership::members;

    fn ring(n: usize) -> Rendezvous {
        Rendezvous::new(members((0..n).map(|i| format!("10.0.0.{}:4317", i + 1))))
    }

    fn span(trace: u64, id: u64, name: &str, kind: i32) -> Span {
        let mut trace_id = [0u8; 16];
        trace_id[8..].copy_from_slice(&trace.to_be_bytes());
        Span {
            trace_id: trace_id.to_vec(),
            span_id: id.to_be_bytes().to_vec(),
            name: name.into(),
            kind,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            ..Default::default()
        }
    }

    /// 200 traces of 5 spans over 4 services, the spans of each trace
    /// spread over the services and interleaved with other traces'.
    fn batch() -> SpanBatch {
        let resource_spans = (0..4u64)
            .map(|svc| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        string_kv("service.name", &format!("svc-{svc}")),
                        string_kv("host.name", &format!("host-{}", svc % 2)),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "lib".into(),
                        ..Default::default()
                    }),
                    spans: (0..200u64)
                        .flat_map(|t| {
                            (0..5u64)
                                .filter(move |s| s % 4 == svc)
                                .map(move |s| span(t, t * 10 + s, &format!("op-{}", s % 3), 2))
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        SpanBatch::from_request(&ExportTraceServiceRequest { resource_spans })
    }

    fn owners_of(
        parts: &[SpanBatch],
        mut key: impl FnMut(&SpanBatch, usize) -> String,
    ) -> HashMap<String, HashSet<usize>> {
        let mut owners: HashMap<String, HashSet<usize>> = HashMap::new();
        for (p, part) in parts.iter().enumerate() {
            for i in 0..part.len() {
                owners.entry(key(part, i)).or_default().insert(p);
            }
        }
        owners
    }

    #[test]
    fn by_trace_id_every_trace_goes_whole_to_its_owner() {
        let batch = batch();
        let ring = ring(3);
        let parts = Router::new(RoutingKey::TraceId, &[]).partition(&batch, &ring);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.iter().map(SpanBatch::len).sum::<usize>(), batch.len());
        let owners = owners_of(&parts, |b, i| format!("{:?}", b.spans()[i].trace_id));
        assert_eq!(owners.len(), 200);
        for (trace, parts) in &owners {
            assert_eq!(parts.len(), 1, "trace {trace} split");
        }
        for (p, part) in parts.iter().enumerate() {
            for s in part.spans() {
                assert_eq!(ring.owner(trace_id_key(&s.trace_id)), Some(p));
            }
        }
        assert!(parts.iter().all(|p| p.len() > 100), "each gets a share");
    }

    #[test]
    fn by_service_and_by_resource() {
        let batch = batch();
        let ring = ring(3);
        let parts = Router::new(RoutingKey::Service, &[]).partition(&batch, &ring);
        let owners = owners_of(&parts, |b, i| b.service_name(i).unwrap().to_string());
        assert_eq!(owners.len(), 4);
        assert!(owners.values().all(|p| p.len() == 1));
        // One encoding or another of the same resource: the same owner.
        let by_resource = Router::new(RoutingKey::Resource, &[]);
        let parts = by_resource.partition(&batch, &ring);
        let owners = owners_of(&parts, |b, i| b.service_name(i).unwrap().to_string());
        assert!(owners.values().all(|p| p.len() == 1));
        let reordered = SpanBatch::from_request(&ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        string_kv("host.name", "host-0"),
                        string_kv("service.name", "svc-0"),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span(1, 1, "x", 1)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        let alone = by_resource.partition(&reordered, &ring);
        let svc0 = owners_of(&parts, |b, i| b.service_name(i).unwrap().to_string())["svc-0"]
            .iter()
            .copied()
            .next()
            .unwrap();
        assert_eq!(alone[svc0].len(), 1, "attribute order does not matter");
        // A resource without service.name still routes, consistently.
        let nameless = SpanBatch::from_request(&ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span(1, 1, "x", 1), span(2, 2, "y", 1)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        let parts = Router::new(RoutingKey::Service, &[]).partition(&nameless, &ring);
        assert_eq!(parts.iter().filter(|p| !p.is_empty()).count(), 1);
    }

    #[test]
    fn by_attributes_with_the_pseudo_attributes() {
        let batch = batch();
        let ring = ring(5);
        let router = Router::new(
            RoutingKey::Attributes,
            &["host.name".to_string(), "span.name".to_string()],
        );
        let parts = router.partition(&batch, &ring);
        assert_eq!(parts.iter().map(SpanBatch::len).sum::<usize>(), batch.len());
        let owners = owners_of(&parts, |b, i| {
            format!(
                "{:?}/{}",
                b.resource_attribute(i, "host.name"),
                b.span_name(i)
            )
        });
        // host-0 has op-0, op-1 and op-2; host-1 only op-0 and op-1.
        assert_eq!(owners.len(), 5);
        assert!(owners.values().all(|p| p.len() == 1));
        // span.kind: every span here is a server span, so one owner.
        let parts = Router::new(RoutingKey::Attributes, &["span.kind".to_string()])
            .partition(&batch, &ring);
        assert_eq!(parts.iter().filter(|p| !p.is_empty()).count(), 1);
        // An attribute nobody has: still one consistent owner.
        let parts =
            Router::new(RoutingKey::Attributes, &["absent".to_string()]).partition(&batch, &ring);
        assert_eq!(parts.iter().filter(|p| !p.is_empty()).count(), 1);
    }

    #[test]
    fn one_member_gets_the_batch_without_a_copy() {
        let batch = batch();
        let parts = Router::new(RoutingKey::TraceId, &[]).partition(&batch, &ring(1));
        assert_eq!(parts[0].bytes().as_ptr(), batch.bytes().as_ptr());
    }
}
