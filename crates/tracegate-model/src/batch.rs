//! `SpanBatch`: an encoded `ExportTraceServiceRequest` plus a per-span index.
//! Subsets are re-encoded by concatenating the original byte slices.

use std::ops::{Deref, Range};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use prost::Message;

use crate::json::JsonError;
use crate::lookup::{
    last_string, Attributes, RESOURCE_ATTRIBUTES, RESOURCE_SPANS_RESOURCE, SCOPE_ATTRIBUTES,
    SCOPE_SPANS_SCOPE, SPAN_ATTRIBUTES, SPAN_NAME,
};
use crate::otlp::ExportTraceServiceRequest;
use crate::scan::ScanError;

/// OTLP `Status.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum StatusCode {
    #[default]
    Unset = 0,
    Ok = 1,
    Error = 2,
}

/// What the scanner indexes for every span. Byte ranges are offsets into
/// [`SpanBatch::bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanInfo {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// All zero for a root span.
    pub parent_span_id: [u8; 8],
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub status: StatusCode,
    /// OTLP `Span.kind` (0 unspecified .. 5 consumer).
    pub kind: u8,
    /// The `Span` message body (without its tag and length).
    pub span: Range<u32>,
    /// Index into the batch's scope table.
    pub scope: u32,
    /// Where the span's `trace_state` value (the last occurrence, as
    /// protobuf merges) starts, relative to `span.start`; 0 with a length
    /// of 0 when it is unset or empty. Relative, so copying the span body
    /// elsewhere keeps it valid. Head sampling reads the tracestate of
    /// every span, and the scanner already passes over it.
    pub trace_state_at: u32,
    pub trace_state_len: u32,
    /// Where the fields numbered above `trace_state` (3) begin, relative to
    /// `span.start`: every field numbered 1 to 3 lies before it, so a new
    /// tracestate is written there without walking the span (head sampling
    /// rewrites the tracestate of every span it keeps).
    pub trace_state_slot: u32,
    /// Bytes of key and length before the value of the span's one
    /// `trace_state` field (which then starts at `trace_state_at` minus
    /// this); 0 when the span has none; [`TRACE_STATE_UNUSUAL`] when it has
    /// several or an empty one, or a field numbered 1 to 3 follows a higher
    /// one: rewriting such a span walks its fields.
    pub trace_state_header: u8,
    /// Bit `n % 32` is set when one of the span's own attributes has a key
    /// `n` bytes long: looking up a key whose bit is clear ends without
    /// reading the span (most lookups are of keys a span does not have).
    pub attribute_key_lengths: u32,
}

/// See [`SpanInfo::trace_state_header`].
pub const TRACE_STATE_UNUSUAL: u8 = u8::MAX;

/// The bit of [`SpanInfo::attribute_key_lengths`] for a key of `len` bytes.
#[inline]
pub(crate) fn key_length_bit(len: usize) -> u32 {
    1 << (len % 32)
}

impl SpanInfo {
    pub fn is_root(&self) -> bool {
        self.parent_span_id == [0; 8]
    }

    /// False when the span certainly has no attribute named `key`.
    #[inline]
    pub fn may_have_attribute(&self, key: &str) -> bool {
        self.attribute_key_lengths & key_length_bit(key.len()) != 0
    }

    /// The span's `trace_state` value: a range of [`SpanBatch::bytes`].
    pub fn trace_state(&self) -> Range<usize> {
        let start = self.span.start as usize + self.trace_state_at as usize;
        start..start + self.trace_state_len as usize
    }
}

/// One `ScopeSpans` of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeInfo {
    /// Index into the batch's resource table.
    pub resource: u32,
    /// The `ScopeSpans` message body.
    pub body: Range<u32>,
    /// This scope's spans: a range of indices into [`SpanBatch::spans`].
    pub spans: Range<u32>,
    pub(crate) layout: FieldLayout,
}

/// One `ResourceSpans` of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    /// The `ResourceSpans` message body.
    pub body: Range<u32>,
    /// The `Resource` message body inside it, if present. Should a request
    /// repeat the field, this is the last one (protobuf merges them; the
    /// attribute lookups read them all).
    pub resource: Option<Range<u32>>,
    /// This resource's scopes: a range of indices into [`SpanBatch::scopes`].
    pub scopes: Range<u32>,
    pub(crate) layout: FieldLayout,
}

/// Where the fields of a `ResourceSpans`/`ScopeSpans` that are not its
/// children (scope_spans/spans) sit, so a subset copies them without
/// re-reading the message. Encoders write children between the other fields
/// (`resource`/`scope` first, `schema_url` last); only hand-made or unusual
/// encoders interleave them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FieldLayout {
    /// Encoded bytes of all non-child fields together.
    pub other_len: u32,
    /// Non-child fields before the first child end here (body end if no child).
    pub head_end: u32,
    /// Non-child fields after the last child start here (body end if no child).
    pub tail_start: u32,
    /// A non-child field sits between two children: copy by walking fields.
    pub interleaved: bool,
}

impl FieldLayout {
    pub(crate) fn shifted(self, by: u32) -> FieldLayout {
        FieldLayout {
            head_end: self.head_end + by,
            tail_start: self.tail_start + by,
            ..self
        }
    }
}

/// A lazily read OTLP `AnyValue`, borrowing from the batch's bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AnyValueRef<'a> {
    String(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    /// Encoded `ArrayValue` body.
    Array(&'a [u8]),
    /// Encoded `KeyValueList` body.
    KvList(&'a [u8]),
}

/// A batch's encoded request: one buffer, or the buffers of the requests a
/// [`SpanBatch::concat`] put together, joined into one only when something
/// reads the request as one slice. A batch that only passes through to an
/// OTLP/gRPC exporter is written to the connection as its segments
/// ([`SpanBatch::segments`]) and never joined.
#[derive(Debug, Clone, Default)]
pub(crate) struct Encoded {
    /// The request as one buffer: set from the start unless the batch is a
    /// concatenation, then on first use.
    joined: OnceLock<Bytes>,
    /// A concatenation's parts, in order (none empty).
    parts: Option<Arc<[Bytes]>>,
    len: usize,
}

impl Encoded {
    pub(crate) fn whole(bytes: Bytes) -> Encoded {
        Encoded {
            len: bytes.len(),
            joined: OnceLock::from(bytes),
            parts: None,
        }
    }

    /// `parts` concatenated, not yet joined.
    pub(crate) fn concatenation(parts: Vec<Bytes>) -> Encoded {
        let parts: Vec<Bytes> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        match <[Bytes; 1]>::try_from(parts) {
            Ok([one]) => Encoded::whole(one),
            Err(parts) if parts.is_empty() => Encoded::default(),
            Err(parts) => Encoded {
                len: parts.iter().map(Bytes::len).sum(),
                joined: OnceLock::new(),
                parts: Some(parts.into()),
            },
        }
    }

    /// The request as one buffer (joining the parts, once, if need be).
    pub(crate) fn joined(&self) -> &Bytes {
        self.joined.get_or_init(|| {
            let mut out = Vec::with_capacity(self.len);
            for part in self.parts.iter().flat_map(|parts| parts.iter()) {
                out.extend_from_slice(part);
            }
            Bytes::from(out)
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn segments(&self) -> &[Bytes] {
        match (self.joined.get(), &self.parts) {
            (Some(joined), _) => std::slice::from_ref(joined),
            (None, Some(parts)) => parts,
            // Only the default (empty) value has neither.
            (None, None) => &[],
        }
    }
}

impl Deref for Encoded {
    type Target = Bytes;

    fn deref(&self) -> &Bytes {
        self.joined()
    }
}

/// A batch's span index: resources, scopes and spans in request order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Index {
    pub(crate) resources: Vec<ResourceInfo>,
    pub(crate) scopes: Vec<ScopeInfo>,
    pub(crate) spans: Vec<SpanInfo>,
}

impl Index {
    /// Appends `part`, the index of a request that follows `at` bytes of
    /// requests already indexed here (encoded requests concatenate into one
    /// request, so its tables continue these ones).
    fn append_shifted(&mut self, part: &Index, at: u32) {
        let resource_base = self.resources.len() as u32;
        let scope_base = self.scopes.len() as u32;
        let span_base = self.spans.len() as u32;
        self.resources
            .extend(part.resources.iter().map(|r| ResourceInfo {
                body: shift(&r.body, at),
                resource: r.resource.as_ref().map(|b| shift(b, at)),
                scopes: shift(&r.scopes, scope_base),
                layout: r.layout.shifted(at),
            }));
        self.scopes.extend(part.scopes.iter().map(|s| ScopeInfo {
            resource: s.resource + resource_base,
            body: shift(&s.body, at),
            spans: shift(&s.spans, span_base),
            layout: s.layout.shifted(at),
        }));
        self.spans.extend(part.spans.iter().map(|s| SpanInfo {
            span: shift(&s.span, at),
            scope: s.scope + scope_base,
            ..s.clone()
        }));
    }
}

/// When [`SpanBatch::scan_with`] builds the span index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Indexing {
    /// While validating, in the same pass: for pipelines that read spans.
    #[default]
    Eager,
    /// Not while validating: the scan only validates and counts the spans,
    /// and the index is built the first time something reads it (a second
    /// pass over the bytes). For pipelines that only pass bytes and counts
    /// on (receiver → batch → OTLP exporter).
    Lazy,
}

/// An encoded `ExportTraceServiceRequest` and its span index.
///
/// The index lists resources, scopes and spans in request order: a span's
/// scope and a scope's resource never decrease along the tables, so the spans
/// of one scope (and the scopes of one resource) are contiguous.
///
/// The index may be built after the batch ([`Indexing::Lazy`]): every
/// reader goes through [`Self::spans`], [`Self::scopes`] and
/// [`Self::resources`] (or the crate's `index()`), which build it from the
/// bytes on first use, so no reader can see it missing. The span count is
/// known from the scan either way.
#[derive(Debug, Clone, Default)]
pub struct SpanBatch {
    pub(crate) bytes: Encoded,
    /// Number of spans, equal to the index's once it is built.
    len: usize,
    /// Set by an eager scan, or on first use ([`Self::index`]).
    index: OnceLock<Index>,
    /// Ranges of `bytes` that arrived as gzip members, in order and apart
    /// (see [`SpanBatch::gzip_members`]). Kept by what shares the bytes
    /// (clones, a whole selection, concatenation); anything that writes new
    /// bytes leaves them behind.
    pub(crate) gzip: Option<Arc<[GzipRange]>>,
}

/// A range of a batch's bytes that arrived as one gzip member, unchanged.
#[derive(Debug, Clone)]
pub struct GzipRange {
    /// Where the member's data starts in [`SpanBatch::bytes`]; it is
    /// `member.len()` bytes long.
    pub at: usize,
    pub member: tracegate_gzip::Member,
    /// The member's data where it was inflated to: the very buffer the
    /// batch's bytes at `at` are (unless they were joined since).
    inflated: Bytes,
}

impl GzipRange {
    /// The member's data in the buffer it was inflated into. Bytes in that
    /// very memory (same address and length) are the member's data by
    /// construction, since the buffer is immutable and this handle keeps
    /// it alive; an exporter can check that instead of a CRC-32.
    pub fn inflated(&self) -> &Bytes {
        &self.inflated
    }
}

impl SpanBatch {
    /// Validates and indexes an encoded `ExportTraceServiceRequest`.
    pub fn scan(bytes: Bytes) -> Result<SpanBatch, ScanError> {
        crate::scan::scan(bytes, Indexing::Eager)
    }

    /// Validates an encoded `ExportTraceServiceRequest` exactly as
    /// [`Self::scan`] does (the same errors for the same input), indexing it
    /// now or on first use as `indexing` says.
    pub fn scan_with(bytes: Bytes, indexing: Indexing) -> Result<SpanBatch, ScanError> {
        crate::scan::scan(bytes, indexing)
    }

    /// A batch of `bytes` with its index.
    pub(crate) fn indexed(bytes: Encoded, index: Index) -> SpanBatch {
        SpanBatch {
            bytes,
            len: index.spans.len(),
            index: OnceLock::from(index),
            gzip: None,
        }
    }

    /// A batch of `bytes`, a request the scanner accepted (or requests it
    /// accepted, concatenated) holding `len` spans, indexed on first use.
    pub(crate) fn unindexed(bytes: Encoded, len: usize) -> SpanBatch {
        SpanBatch {
            bytes,
            len,
            index: OnceLock::new(),
            gzip: None,
        }
    }

    /// The span index, built from the bytes on first use if the scan left
    /// it out.
    pub(crate) fn index(&self) -> &Index {
        self.index.get_or_init(|| self.build_index())
    }

    /// The span index for changing in place (built first if need be).
    pub(crate) fn index_mut(&mut self) -> &mut Index {
        if self.index.get().is_none() {
            let index = self.build_index();
            self.index = OnceLock::from(index);
        }
        self.index.get_mut().expect("the index was just set")
    }

    /// Whether the index has been built (by the scan or since).
    pub fn is_indexed(&self) -> bool {
        self.index.get().is_some()
    }

    /// Indexes the bytes segment by segment, without joining them: each
    /// segment is a whole request the scanner accepted (a scanned buffer or
    /// an encoded subset, or a concatenation's parts, which are those), and
    /// indexing concatenated requests is indexing each and shifting.
    fn build_index(&self) -> Index {
        let mut index = Index::default();
        let mut at = 0u32;
        for segment in self.bytes.segments() {
            let part = match crate::scan::scan(segment.clone(), Indexing::Eager) {
                Ok(part) => part.index.into_inner().unwrap_or_default(),
                Err(e) => unreachable!("a batch's bytes no longer scan: {e}"),
            };
            if self.bytes.segments().len() == 1 {
                index = part;
            } else {
                index.append_shifted(&part, at);
            }
            at += segment.len() as u32;
        }
        debug_assert_eq!(index.spans.len(), self.len, "lazy index miscounted");
        index
    }

    /// The encoded request; always a valid `ExportTraceServiceRequest`.
    /// A batch made by [`Self::concat`] is joined into one buffer on the
    /// first call (a copy); [`Self::segments`] reads it without joining.
    pub fn bytes(&self) -> &Bytes {
        self.bytes.joined()
    }

    /// The encoded request as consecutive buffers, to be written out one
    /// after the other: the request's one buffer, or, for a batch made by
    /// [`Self::concat`] and not joined since, its parts' buffers, so that a
    /// batch passing through is never copied into one. None is empty.
    pub fn segments(&self) -> &[Bytes] {
        self.bytes.segments()
    }

    /// The span index (built now if the scan left it for later, as do
    /// [`Self::scopes`] and [`Self::resources`]).
    pub fn spans(&self) -> &[SpanInfo] {
        &self.index().spans
    }

    pub fn scopes(&self) -> &[ScopeInfo] {
        &self.index().scopes
    }

    pub fn resources(&self) -> &[ResourceInfo] {
        &self.index().resources
    }

    /// The gzip members these bytes arrived in, where they lie in
    /// [`Self::bytes`], so an exporter can send them compressed as they came
    /// (`tracegate_gzip::splice`). Empty unless the batch is made of whole
    /// requests a receiver took gzip-compressed, unchanged since.
    pub fn gzip_members(&self) -> &[GzipRange] {
        self.gzip.as_deref().unwrap_or_default()
    }

    /// Records that this batch's bytes are `message` as it was inflated from
    /// `members` (offsets into `message`). Nothing is recorded unless the
    /// batch holds exactly those bytes, the very buffer (the scanner keeps
    /// the request it indexes), so a decoder that re-encoded cannot claim
    /// them.
    pub fn set_gzip_members(
        &mut self,
        message: &Bytes,
        members: Vec<(usize, tracegate_gzip::Member)>,
    ) {
        let same = self.bytes.as_ptr() == message.as_ptr() && self.bytes.len() == message.len();
        let mut end = 0;
        let ordered = members.iter().all(|(at, m)| {
            let fits = *at >= end && at + m.len() <= message.len();
            end = at + m.len();
            fits
        });
        self.gzip = (same && ordered && !members.is_empty()).then(|| {
            members
                .into_iter()
                .map(|(at, member)| GzipRange {
                    at,
                    inflated: message.slice(at..at + member.len()),
                    member,
                })
                .collect()
        });
    }

    /// Number of spans (known without the index).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    /// The spans for which `keep` returns true, encoded as a new request in
    /// their original order. Resources and scopes left with no span are
    /// omitted; their other fields are copied as they are. Keeping every span
    /// returns a clone that shares these bytes.
    pub fn filter(&self, mut keep: impl FnMut(&SpanInfo) -> bool) -> SpanBatch {
        let kept: Vec<u32> = (0u32..)
            .zip(self.spans())
            .filter(|(_, span)| keep(span))
            .map(|(i, _)| i)
            .collect();
        self.encode_kept(&kept)
    }

    /// The spans at `span_indices`, encoded as a new request in the batch's
    /// order (the order of the indices and duplicates do not matter; indices
    /// past the end are ignored). Selecting every span returns a clone that
    /// shares these bytes; any other selection copies, so it does not keep
    /// this request's buffer alive.
    pub fn select(&self, span_indices: &[u32]) -> SpanBatch {
        let n = self.len as u64;
        let canonical = span_indices.windows(2).all(|w| w[0] < w[1])
            && span_indices.last().is_none_or(|&last| u64::from(last) < n);
        if canonical {
            return self.encode_kept(span_indices);
        }
        let mut kept: Vec<u32> = span_indices
            .iter()
            .copied()
            .filter(|&i| u64::from(i) < n)
            .collect();
        kept.sort_unstable();
        kept.dedup();
        self.encode_kept(&kept)
    }

    /// The spans of the resources at `resource_indices` (into
    /// [`Self::resources`]), as [`select`](Self::select) gives them: in the
    /// batch's order, whatever the order of the indices; indices past the end
    /// are ignored. For an exporter that sends each resource on its own and
    /// retries the ones that failed.
    pub fn select_resources(&self, resource_indices: &[usize]) -> SpanBatch {
        let mut spans: Vec<u32> = Vec::new();
        for resource in resource_indices
            .iter()
            .filter_map(|&r| self.resources().get(r))
        {
            // A resource's scopes, and their spans, are contiguous.
            let scopes =
                &self.scopes()[resource.scopes.start as usize..resource.scopes.end as usize];
            if let (Some(first), Some(last)) = (scopes.first(), scopes.last()) {
                spans.extend(first.spans.start..last.spans.end);
            }
        }
        self.select(&spans)
    }

    /// The spans split into `parts` batches by `part_of(span index, span)`,
    /// which must return a number below `parts`: element `p` of the result
    /// holds, in the batch's order, the spans sent to part `p` (empty when
    /// none was). A part that gets every span is a clone sharing these
    /// bytes, so routing a batch that goes to one place whole copies
    /// nothing; the others are encoded as [`Self::select`] does.
    ///
    /// # Panics
    /// If `part_of` returns `parts` or more.
    pub fn partition(
        &self,
        parts: usize,
        mut part_of: impl FnMut(usize, &SpanInfo) -> usize,
    ) -> Vec<SpanBatch> {
        // Sized for an even spread, which hashing gives.
        let even = self.len / parts.max(1) + 1;
        let mut indices: Vec<Vec<u32>> = (0..parts).map(|_| Vec::with_capacity(even)).collect();
        for (i, span) in self.spans().iter().enumerate() {
            let part = part_of(i, span);
            assert!(part < parts, "SpanBatch::partition: part {part} of {parts}");
            indices[part].push(i as u32);
        }
        indices
            .iter()
            .map(|kept| {
                if kept.is_empty() {
                    SpanBatch::default()
                } else {
                    self.encode_kept(kept)
                }
            })
            .collect()
    }

    /// Every span re-encoded into a new buffer of its own, even when nothing
    /// is dropped: for storage that must not keep the request's buffer (with
    /// anything else it holds) alive. Resources and scopes without spans and
    /// fields outside `resource_spans` are left out.
    pub fn copied(&self) -> SpanBatch {
        if self.is_empty() {
            return SpanBatch::default();
        }
        let all: Vec<u32> = (0..self.len as u32).collect();
        crate::encode::encode_subset(self, &all)
    }

    /// `kept` is strictly ascending and in range.
    fn encode_kept(&self, kept: &[u32]) -> SpanBatch {
        if kept.len() == self.len {
            return self.clone();
        }
        crate::encode::encode_subset(self, kept)
    }

    /// One request holding all `parts` in order: encoded requests concatenate
    /// into a valid request (`resource_spans` is a repeated field), so this
    /// keeps the parts' buffers as they are (see [`Self::segments`]) and
    /// shifts the index; the request is joined into one buffer only when
    /// something reads [`Self::bytes`].
    ///
    /// # Panics
    /// If the parts add up to more than 4 GiB, which no configured batch
    /// size comes near.
    pub fn concat(parts: &[SpanBatch]) -> SpanBatch {
        match parts {
            [] => return SpanBatch::default(),
            [one] => return one.clone(),
            _ => {}
        }
        let total: usize = parts.iter().map(|p| p.bytes.len()).sum();
        assert!(
            total <= u32::MAX as usize,
            "SpanBatch::concat: {total} bytes exceed the 4 GiB a batch can index"
        );
        let mut segments = Vec::with_capacity(parts.len());
        // The parts' indexes are shifted into one only when every part has
        // one; otherwise the result is indexed on first use, from its
        // segments (a pipeline that reads no spans never pays for it).
        let mut index = parts.iter().all(SpanBatch::is_indexed).then(|| Index {
            resources: Vec::with_capacity(parts.iter().map(|p| p.index().resources.len()).sum()),
            scopes: Vec::with_capacity(parts.iter().map(|p| p.index().scopes.len()).sum()),
            spans: Vec::with_capacity(parts.iter().map(SpanBatch::len).sum()),
        });
        let mut at = 0u32;
        let mut gzip = Vec::new();
        for part in parts {
            segments.extend(part.segments().iter().cloned());
            gzip.extend(part.gzip_members().iter().map(|g| GzipRange {
                at: g.at + at as usize,
                member: g.member.clone(),
                inflated: g.inflated.clone(),
            }));
            if let Some(index) = &mut index {
                index.append_shifted(part.index(), at);
            }
            at += part.bytes.len() as u32;
        }
        let bytes = Encoded::concatenation(segments);
        let mut out = match index {
            Some(index) => SpanBatch::indexed(bytes, index),
            None => SpanBatch::unindexed(bytes, parts.iter().map(SpanBatch::len).sum()),
        };
        if !gzip.is_empty() {
            out.gzip = Some(gzip.into());
        }
        out
    }

    /// Consecutive chunks of at most `max_spans` spans, in order (the batch
    /// processor's `send_batch_max_size`). A batch that already fits, or a
    /// `max_spans` of 0 (no limit), comes back whole as one chunk.
    pub fn split(&self, max_spans: usize) -> Vec<SpanBatch> {
        if max_spans == 0 || self.len <= max_spans {
            return vec![self.clone()];
        }
        let all: Vec<u32> = (0..self.len as u32).collect();
        all.chunks(max_spans)
            .map(|chunk| crate::encode::encode_subset(self, chunk))
            .collect()
    }

    /// The value of the span's attribute `key` (the first one, should the
    /// span repeat the key, as the collector's `Map.Get` does). An attribute
    /// whose value is empty reads as absent.
    ///
    /// # Panics
    /// If `span >= self.len()`, like slice indexing.
    pub fn span_attribute(&self, span: usize, key: &str) -> Option<AnyValueRef<'_>> {
        if !self.spans()[span].may_have_attribute(key) {
            return None;
        }
        find(self.span_attributes(span), key)
    }

    /// The attribute `key` of the span's resource; see [`Self::span_attribute`].
    pub fn resource_attribute(&self, span: usize, key: &str) -> Option<AnyValueRef<'_>> {
        find(self.resource_attributes(span), key)
    }

    /// The attribute `key` of the span's instrumentation scope; see
    /// [`Self::span_attribute`].
    pub fn scope_attribute(&self, span: usize, key: &str) -> Option<AnyValueRef<'_>> {
        find(self.scope_attributes(span), key)
    }

    /// The span's attributes in encoded order, read lazily.
    pub fn span_attributes(&self, span: usize) -> Attributes<'_> {
        Attributes::of_message(
            &self.bytes,
            range(&self.spans()[span].span),
            SPAN_ATTRIBUTES,
        )
    }

    /// The attributes of the span's resource in encoded order, read lazily.
    pub fn resource_attributes(&self, span: usize) -> Attributes<'_> {
        let resource = &self.resources()[self.resource_index(span)];
        Attributes::of_submessages(
            &self.bytes,
            range(&resource.body),
            RESOURCE_SPANS_RESOURCE,
            RESOURCE_ATTRIBUTES,
        )
    }

    /// The attributes of the span's instrumentation scope, read lazily.
    pub fn scope_attributes(&self, span: usize) -> Attributes<'_> {
        let scope = &self.scopes()[self.spans()[span].scope as usize];
        Attributes::of_submessages(
            &self.bytes,
            range(&scope.body),
            SCOPE_SPANS_SCOPE,
            SCOPE_ATTRIBUTES,
        )
    }

    /// The span's name ("" when unset).
    pub fn span_name(&self, span: usize) -> &str {
        last_string(&self.bytes, range(&self.spans()[span].span), SPAN_NAME)
    }

    /// The span's W3C `tracestate` ("" when unset), from the index: no walk
    /// over the span's fields (head sampling reads it for every span).
    pub fn span_trace_state(&self, span: usize) -> &str {
        let info = &self.spans()[span];
        if info.trace_state_len == 0 {
            // Most spans: nothing to check.
            return "";
        }
        // The scanner (or the encoder, from a scanned batch) checked that it
        // is UTF-8; ASCII, as W3C requires, validates quickly.
        std::str::from_utf8(&self.bytes[info.trace_state()]).unwrap_or("")
    }

    /// Index of the span's resource in [`Self::resources`].
    pub fn resource_index(&self, span: usize) -> usize {
        self.scopes()[self.spans()[span].scope as usize].resource as usize
    }

    /// The `service.name` resource attribute, when it is a string.
    pub fn service_name(&self, span: usize) -> Option<&str> {
        match self.resource_attribute(span, "service.name")? {
            AnyValueRef::String(name) => Some(name),
            _ => None,
        }
    }

    /// Decodes the whole request with prost (for exporters and processors
    /// that need owned messages). Everything the scanner accepts decodes.
    pub fn to_request(&self) -> ExportTraceServiceRequest {
        match ExportTraceServiceRequest::decode(&self.bytes[..]) {
            Ok(request) => request,
            Err(e) => {
                debug_assert!(false, "a scanned batch failed to decode: {e}");
                ExportTraceServiceRequest::default()
            }
        }
    }

    /// Encodes and indexes an owned request, refusing what a client's
    /// request would be refused for (ids of the wrong length, values nested
    /// too deep).
    pub fn try_from_request(request: &ExportTraceServiceRequest) -> Result<SpanBatch, ScanError> {
        SpanBatch::scan(Bytes::from(request.encode_to_vec()))
    }

    /// Encodes and indexes an owned request. Ids of the wrong length become
    /// empty (invalid) ids and values nested past the limit become empty
    /// values, so the result is always a request the scanner accepts; use
    /// [`Self::try_from_request`] to be told instead.
    pub fn from_request(request: &ExportTraceServiceRequest) -> SpanBatch {
        match SpanBatch::try_from_request(request) {
            Ok(batch) => batch,
            Err(_) => {
                let mut request = request.clone();
                crate::otlp::sanitize(&mut request);
                SpanBatch::try_from_request(&request).unwrap_or_default()
            }
        }
    }

    /// Parses an OTLP/JSON `ExportTraceServiceRequest`.
    pub fn from_json(json: &[u8]) -> Result<SpanBatch, JsonError> {
        crate::json::from_json(json)
    }

    /// The batch as OTLP/JSON (lowerCamelCase keys, hex ids, 64-bit integers
    /// as strings, enums as numbers).
    pub fn to_json(&self) -> Vec<u8> {
        crate::json::to_json(&self.to_request())
    }
}

fn shift(r: &Range<u32>, by: u32) -> Range<u32> {
    r.start + by..r.end + by
}

fn range(r: &Range<u32>) -> Range<usize> {
    r.start as usize..r.end as usize
}

fn find<'a>(attributes: Attributes<'a>, key: &str) -> Option<AnyValueRef<'a>> {
    attributes.get(key)
}
