//! Tests of the whole crate: scanner edge cases, subsets, lookups, OTLP/JSON,
//! property tests against prost, and a bounded fuzz loop.

mod fuzz;
mod json_cases;
mod lazy;
mod lookups;
mod props;
mod scan_cases;
mod subsets;

use bytes::Bytes;
use prost::Message;

use crate::otlp::*;
use crate::wire::{put_varint, I32, I64, LEN, VARINT};
use crate::{ScanError, SpanBatch};

/// Hand-made protobuf, for layouts prost never writes.
#[derive(Default, Clone)]
pub(crate) struct Pb(pub Vec<u8>);

impl Pb {
    pub fn new() -> Self {
        Pb(Vec::new())
    }
    fn key(mut self, field: u32, wt: u8) -> Self {
        put_varint(&mut self.0, (u64::from(field) << 3) | u64::from(wt));
        self
    }
    pub fn len(self, field: u32, body: &[u8]) -> Self {
        let mut s = self.key(field, LEN);
        put_varint(&mut s.0, body.len() as u64);
        s.0.extend_from_slice(body);
        s
    }
    pub fn msg(self, field: u32, body: Pb) -> Self {
        self.len(field, &body.0)
    }
    pub fn varint(self, field: u32, v: u64) -> Self {
        let mut s = self.key(field, VARINT);
        put_varint(&mut s.0, v);
        s
    }
    pub fn fixed64(self, field: u32, v: u64) -> Self {
        let mut s = self.key(field, I64);
        s.0.extend_from_slice(&v.to_le_bytes());
        s
    }
    pub fn fixed32(self, field: u32, v: u32) -> Self {
        let mut s = self.key(field, I32);
        s.0.extend_from_slice(&v.to_le_bytes());
        s
    }
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    pub fn bytes(&self) -> Bytes {
        Bytes::from(self.0.clone())
    }
}

pub(crate) use crate::otlp::{kv, string_kv as str_kv};

pub(crate) fn span(trace: u8, id: u8, name: &str) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        name: name.into(),
        start_time_unix_nano: 1_000 + u64::from(id),
        end_time_unix_nano: 2_000 + u64::from(id),
        ..Default::default()
    }
}

pub(crate) fn request(
    resources: Vec<(Vec<KeyValue>, Vec<Vec<Span>>)>,
) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: resources
            .into_iter()
            .map(|(attributes, scopes)| ResourceSpans {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_spans: scopes
                    .into_iter()
                    .enumerate()
                    .map(|(i, spans)| ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: format!("scope-{i}"),
                            ..Default::default()
                        }),
                        spans,
                        schema_url: format!("https://schema/{i}"),
                    })
                    .collect(),
                schema_url: "https://schema/r".into(),
            })
            .collect(),
    }
}

pub(crate) fn scan_request(req: &ExportTraceServiceRequest) -> SpanBatch {
    SpanBatch::scan(Bytes::from(req.encode_to_vec())).expect("scan")
}

/// The error the scanner gives for `bytes`, the same whichever way it
/// indexes.
pub(crate) fn scan_err(bytes: &[u8]) -> (usize, &'static str) {
    let lazy = SpanBatch::scan_with(Bytes::copy_from_slice(bytes), crate::Indexing::Lazy);
    match SpanBatch::scan(Bytes::copy_from_slice(bytes)) {
        Err(e) if lazy.as_ref().err() != Some(&e) => {
            panic!("the lazy scan says {lazy:?} where the eager one says {e}")
        }
        Err(ScanError::Malformed { offset, what }) => (offset, what),
        Ok(b) => panic!("scanned {} spans from malformed input", b.len()),
    }
}

/// A span with its resource, the resource's schema url, its scope and the
/// scope's schema url.
pub(crate) type FlatSpan = (
    Option<Resource>,
    String,
    Option<InstrumentationScope>,
    String,
    Span,
);

/// The spans of a decoded request, flattened with their resource and scope.
pub(crate) fn flatten(req: &ExportTraceServiceRequest) -> Vec<FlatSpan> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                out.push((
                    rs.resource.clone(),
                    rs.schema_url.clone(),
                    ss.scope.clone(),
                    ss.schema_url.clone(),
                    s.clone(),
                ));
            }
        }
    }
    out
}

/// Checks the batch's bytes decode with prost and that its index agrees with
/// what prost decodes, span by span, and that ranges point where they claim.
/// What the index says about where a span's tracestate lies holds in its
/// body, as prost reads the pieces.
fn assert_trace_state_place(info: &crate::SpanInfo, body: &[u8], span: &Span) {
    if info.trace_state_header == crate::batch::TRACE_STATE_UNUSUAL {
        return;
    }
    let slot = info.trace_state_slot as usize;
    let (low, high) = body.split_at(slot);
    let low = Span::decode(low).expect("fields 1 to 3");
    let high = Span::decode(high).expect("the later fields");
    assert_eq!(
        (low.trace_id, low.span_id, &low.trace_state),
        (
            span.trace_id.clone(),
            span.span_id.clone(),
            &span.trace_state
        ),
        "fields 1 to 3 lie before the slot"
    );
    assert!(high.trace_id.is_empty() && high.span_id.is_empty() && high.trace_state.is_empty());
    let at = info.trace_state_at as usize;
    let end = at + info.trace_state_len as usize;
    if info.trace_state_header == 0 {
        assert!(span.trace_state.is_empty());
        return;
    }
    let start = at - usize::from(info.trace_state_header);
    let field = Span::decode(&body[start..end]).expect("one field");
    assert_eq!(field.trace_state, span.trace_state);
    let without = [&body[..start], &body[end..]].concat();
    assert_eq!(
        Span::decode(&without[..])
            .expect("span without it")
            .trace_state,
        "",
        "the span has only the one tracestate field"
    );
}

pub(crate) fn assert_index_consistent(batch: &SpanBatch) {
    let req = ExportTraceServiceRequest::decode(&batch.bytes()[..]).expect("prost decodes");
    let flat = flatten(&req);
    assert_eq!(flat.len(), batch.len());
    for (i, (info, (_, _, _, _, span))) in batch.spans().iter().zip(&flat).enumerate() {
        let expect_id = |v: &[u8], n: usize| if v.is_empty() { vec![0; n] } else { v.to_vec() };
        assert_eq!(
            info.trace_id.to_vec(),
            expect_id(&span.trace_id, 16),
            "span {i}"
        );
        assert_eq!(
            info.span_id.to_vec(),
            expect_id(&span.span_id, 8),
            "span {i}"
        );
        assert_eq!(
            info.parent_span_id.to_vec(),
            expect_id(&span.parent_span_id, 8)
        );
        assert_eq!(info.start_time_unix_nano, span.start_time_unix_nano);
        assert_eq!(info.end_time_unix_nano, span.end_time_unix_nano);
        let code = span.status.as_ref().map_or(0, |s| s.code);
        assert_eq!(
            info.status as i32,
            if (0..=2).contains(&code) { code } else { 0 }
        );
        let kind = if (0..=5).contains(&span.kind) {
            span.kind
        } else {
            0
        };
        assert_eq!(i32::from(info.kind), kind);
        let body = &batch.bytes()[info.span.start as usize..info.span.end as usize];
        assert_eq!(&Span::decode(body).expect("span body"), span);
        assert_eq!(batch.span_name(i), span.name);
        assert_eq!(batch.span_trace_state(i), span.trace_state, "span {i}");
        assert_trace_state_place(info, body, span);
        for kv in &span.attributes {
            assert!(
                info.may_have_attribute(&kv.key),
                "span {i}: key {:?}",
                kv.key
            );
        }
    }
    // Scope and resource tables are coherent with the span table.
    for (s, scope) in batch.scopes().iter().enumerate() {
        for i in scope.spans.clone() {
            assert_eq!(batch.spans()[i as usize].scope as usize, s);
        }
        assert!(batch.resources()[scope.resource as usize]
            .scopes
            .contains(&(s as u32)));
        ScopeSpans::decode(&batch.bytes()[scope.body.start as usize..scope.body.end as usize])
            .expect("scope body");
    }
    for r in batch.resources() {
        ResourceSpans::decode(&batch.bytes()[r.body.start as usize..r.body.end as usize])
            .expect("resource body");
        if let Some(res) = &r.resource {
            Resource::decode(&batch.bytes()[res.start as usize..res.end as usize])
                .expect("resource");
        }
    }
}
