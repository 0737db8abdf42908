//! Subset encoding: the kept spans of a batch written as a new valid request
//! from tags, lengths and the original byte slices, with the new index
//! built on the way instead of by rescanning (docs/architecture.md,
//! "Encoded-bytes batches").

use std::ops::Range;

use bytes::Bytes;

use crate::batch::{ResourceInfo, ScopeInfo, SpanBatch, SpanInfo};
use crate::scan::LayoutTracker;
use crate::trace_state::{rewrite_span, rewritten_len};
use crate::wire::{len_key, put_varint, varint_len, Cursor, LEN};

/// `ExportTraceServiceRequest.resource_spans`, `ResourceSpans.scope_spans`
/// and `ScopeSpans.spans` are the only fields the encoder writes itself.
const REQUEST_RESOURCE_SPANS: u8 = 1;
const CHILD_FIELD: u32 = 2;

/// Kept spans of one scope: a run of `kept`, and the encoded body length.
struct ScopeGroup {
    scope: u32,
    kept: Range<usize>,
    len: usize,
}

/// Kept scopes of one resource: a run of scope groups, and the body length.
struct ResourceGroup {
    resource: u32,
    groups: Range<usize>,
    len: usize,
}

/// The tracestate fields of [`SpanInfo`] for a span body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceStatePlace {
    pub at: u32,
    pub len: u32,
    pub slot: u32,
    pub header: u8,
}

impl TraceStatePlace {
    pub(crate) fn of(span: &SpanInfo) -> TraceStatePlace {
        TraceStatePlace {
            at: span.trace_state_at,
            len: span.trace_state_len,
            slot: span.trace_state_slot,
            header: span.trace_state_header,
        }
    }
}

/// Encodes the spans at `kept` (strictly ascending, in range) as a new batch.
pub(crate) fn encode_subset(batch: &SpanBatch, kept: &[u32]) -> SpanBatch {
    encode_subset_replacing(batch, kept, &[])
}

/// [`encode_subset`] where the span at `kept[j]` gets the tracestate
/// `new_trace_states[j]` instead of its own when that is `Some`, rewritten
/// straight into the new request. `new_trace_states` is as long as `kept`,
/// or empty when no span changes.
pub(crate) fn encode_subset_replacing(
    batch: &SpanBatch,
    kept: &[u32],
    new_trace_states: &[Option<&str>],
) -> SpanBatch {
    debug_assert!(new_trace_states.is_empty() || new_trace_states.len() == kept.len());
    let body_len = |j: usize| {
        let span = &batch.spans()[kept[j] as usize];
        match new_trace_states.get(j) {
            Some(Some(trace_state)) => rewritten_len(&batch.bytes, span, trace_state),
            _ => span_len(span),
        }
    };
    let spans = batch.spans();
    let scopes = batch.scopes();
    let resources = batch.resources();

    // Pass 1: group the kept spans by scope and resource and size every
    // message, since each length precedes its body.
    let mut scope_groups: Vec<ScopeGroup> = Vec::new();
    let mut i = 0;
    while i < kept.len() {
        let scope = spans[kept[i] as usize].scope;
        let start = i;
        let mut len = scopes[scope as usize].layout.other_len as usize;
        while i < kept.len() && spans[kept[i] as usize].scope == scope {
            len += framed_len(body_len(i));
            i += 1;
        }
        scope_groups.push(ScopeGroup {
            scope,
            kept: start..i,
            len,
        });
    }
    let mut resource_groups: Vec<ResourceGroup> = Vec::new();
    let mut total = 0;
    let mut g = 0;
    while g < scope_groups.len() {
        let resource = scopes[scope_groups[g].scope as usize].resource;
        let start = g;
        let mut len = resources[resource as usize].layout.other_len as usize;
        while g < scope_groups.len() && scopes[scope_groups[g].scope as usize].resource == resource
        {
            len += framed_len(scope_groups[g].len);
            g += 1;
        }
        total += framed_len(len);
        resource_groups.push(ResourceGroup {
            resource,
            groups: start..g,
            len,
        });
    }

    // Pass 2: write.
    let mut w = Writer {
        src: &batch.bytes,
        batch,
        kept,
        new_trace_states,
        scope_groups: &scope_groups,
        out: Vec::with_capacity(total),
        resources: Vec::with_capacity(resource_groups.len()),
        scopes: Vec::with_capacity(scope_groups.len()),
        spans: Vec::with_capacity(kept.len()),
    };
    for group in &resource_groups {
        w.resource(group);
    }
    debug_assert_eq!(w.out.len(), total, "subset size computed wrongly");
    SpanBatch::indexed(
        crate::batch::Encoded::whole(Bytes::from(w.out)),
        crate::batch::Index {
            resources: w.resources,
            scopes: w.scopes,
            spans: w.spans,
        },
    )
}

fn span_len(span: &SpanInfo) -> usize {
    span.span.len()
}

/// Bytes of a length-delimited child field with a one-byte key.
fn framed_len(body: usize) -> usize {
    1 + varint_len(body as u64) + body
}

struct Writer<'a> {
    src: &'a [u8],
    batch: &'a SpanBatch,
    kept: &'a [u32],
    new_trace_states: &'a [Option<&'a str>],
    scope_groups: &'a [ScopeGroup],
    out: Vec<u8>,
    resources: Vec<ResourceInfo>,
    scopes: Vec<ScopeInfo>,
    spans: Vec<SpanInfo>,
}

impl Writer<'_> {
    fn pos(&self) -> u32 {
        // The subset is never larger than its source, which fits in u32.
        self.out.len() as u32
    }

    fn frame(&mut self, key: u8, len: usize) {
        self.out.push(key);
        put_varint(&mut self.out, len as u64);
    }

    /// Copies non-child fields `src[run]`, noting where the indexed
    /// `Resource` body lands if it is among them.
    fn copy_run(
        &mut self,
        run: Range<usize>,
        old_resource: Option<&Range<u32>>,
        new_resource: &mut Option<Range<u32>>,
        layout: &mut LayoutTracker,
    ) {
        if run.is_empty() {
            return;
        }
        let at = self.out.len();
        if let Some(r) = old_resource {
            if run.start <= r.start as usize && r.end as usize <= run.end {
                let by = at as u32;
                let from = run.start as u32;
                *new_resource = Some(r.start - from + by..r.end - from + by);
            }
        }
        self.out.extend_from_slice(&self.src[run]);
        layout.other(at, self.out.len());
    }

    fn resource(&mut self, group: &ResourceGroup) {
        let batch = self.batch;
        let res = &batch.resources()[group.resource as usize];
        self.frame(len_key(REQUEST_RESOURCE_SPANS), group.len);
        let body_start = self.pos();
        let index = self.resources.len() as u32;
        let first_scope = self.scopes.len() as u32;
        let mut new_resource = None;
        let mut layout = LayoutTracker::new();
        let old_resource = res.resource.as_ref();
        if !res.layout.interleaved {
            let head = res.body.start as usize..res.layout.head_end as usize;
            let tail = res.layout.tail_start as usize..res.body.end as usize;
            self.copy_run(head, old_resource, &mut new_resource, &mut layout);
            for g in group.groups.clone() {
                let at = self.out.len();
                self.scope(g, index);
                layout.child(at, self.out.len());
            }
            self.copy_run(tail, old_resource, &mut new_resource, &mut layout);
        } else {
            let mut next_group = group.groups.start;
            let mut ordinal = res.scopes.start;
            let mut c = Cursor::new(self.src, res.body.start as usize..res.body.end as usize);
            while !c.at_end() {
                let at = c.pos;
                let Ok((field, wt)) = c.tag() else { break };
                if field == CHILD_FIELD && wt == LEN {
                    if c.len_delimited().is_err() {
                        break;
                    }
                    if next_group < group.groups.end
                        && self.scope_groups[next_group].scope == ordinal
                    {
                        let out_at = self.out.len();
                        self.scope(next_group, index);
                        layout.child(out_at, self.out.len());
                        next_group += 1;
                    }
                    ordinal += 1;
                } else {
                    if c.skip(field, wt, 1).is_err() {
                        break;
                    }
                    self.copy_run(at..c.pos, old_resource, &mut new_resource, &mut layout);
                }
            }
        }
        let end = self.pos();
        self.resources.push(ResourceInfo {
            body: body_start..end,
            resource: new_resource,
            scopes: first_scope..self.scopes.len() as u32,
            layout: layout.finish(end as usize),
        });
    }

    fn scope(&mut self, g: usize, resource: u32) {
        let batch = self.batch;
        let group = &self.scope_groups[g];
        let scope = &batch.scopes()[group.scope as usize];
        self.frame(len_key(CHILD_FIELD as u8), group.len);
        let body_start = self.pos();
        let index = self.scopes.len() as u32;
        let first_span = self.spans.len() as u32;
        let mut layout = LayoutTracker::new();
        let mut unused = None;
        let positions = group.kept.clone();
        if !scope.layout.interleaved {
            let head = scope.body.start as usize..scope.layout.head_end as usize;
            let tail = scope.layout.tail_start as usize..scope.body.end as usize;
            self.copy_run(head, None, &mut unused, &mut layout);
            for j in positions {
                self.span(j, index, &mut layout);
            }
            self.copy_run(tail, None, &mut unused, &mut layout);
        } else {
            let mut next_kept = positions.peekable();
            let mut ordinal = scope.spans.start;
            let mut c = Cursor::new(self.src, scope.body.start as usize..scope.body.end as usize);
            while !c.at_end() {
                let at = c.pos;
                let Ok((field, wt)) = c.tag() else { break };
                if field == CHILD_FIELD && wt == LEN {
                    if c.len_delimited().is_err() {
                        break;
                    }
                    if let Some(j) = next_kept.next_if(|&j| self.kept[j] == ordinal) {
                        self.span(j, index, &mut layout);
                    }
                    ordinal += 1;
                } else {
                    if c.skip(field, wt, 2).is_err() {
                        break;
                    }
                    self.copy_run(at..c.pos, None, &mut unused, &mut layout);
                }
            }
        }
        let end = self.pos();
        self.scopes.push(ScopeInfo {
            resource,
            body: body_start..end,
            spans: first_span..self.spans.len() as u32,
            layout: layout.finish(end as usize),
        });
    }

    /// Writes the kept span at position `j` of `kept`.
    fn span(&mut self, j: usize, scope: u32, layout: &mut LayoutTracker) {
        // Copies of the borrowed inputs, so writing to `self.out` is free.
        let (batch, src) = (self.batch, self.src);
        let old = &batch.spans()[self.kept[j] as usize];
        let at = self.out.len();
        let (start, place) = match self.new_trace_states.get(j) {
            Some(Some(trace_state)) => {
                let len = rewritten_len(src, old, trace_state);
                self.frame(len_key(CHILD_FIELD as u8), len);
                let start = self.pos();
                let place = rewrite_span(src, old, trace_state, &mut self.out);
                debug_assert_eq!(
                    self.pos() - start,
                    len as u32,
                    "rewritten span sized wrongly"
                );
                (start, place)
            }
            _ => {
                let body = &src[old.span.start as usize..old.span.end as usize];
                self.frame(len_key(CHILD_FIELD as u8), body.len());
                let start = self.pos();
                self.out.extend_from_slice(body);
                (start, TraceStatePlace::of(old))
            }
        };
        self.spans.push(SpanInfo {
            span: start..self.pos(),
            scope,
            trace_state_at: place.at,
            trace_state_len: place.len,
            trace_state_slot: place.slot,
            trace_state_header: place.header,
            ..old.clone()
        });
        layout.child(at, self.out.len());
    }
}
