//! Compact storage of a pending trace's spans.
//!
//! A request typically carries one resource and scope for many traces;
//! copying them into every trace would cost more than the spans of a small
//! trace (a resource with Kubernetes attributes is a few hundred bytes).
//! So a shard keeps each distinct resource+scope once ([`Headers`],
//! reference-counted) and a trace keeps only its span bodies, each tagged
//! with its header. At decision time the trace is written back as a request
//! (one `ResourceSpans` per run of spans sharing a header, in arrival
//! order, as the collector's per-arrival `ResourceSpans` are) and scanned
//! into a [`SpanBatch`] for the policies.
//!
//! Spans that have waited are packed ([`StoredSpans::pack`]): a trace's
//! bodies that arrived since it was last packed become one zstd block,
//! compressed against a dictionary the shard trains on the first span
//! bodies it packs ([`Packer`]). Span bodies repeat their attribute keys,
//! names and most values from trace to trace, so a block takes a fifth of
//! the bodies' bytes or less. A trace is unpacked once, when it is
//! assembled (kept, read by a policy, handed over).

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::HashMap;
use std::ops::Range;

use bytes::Bytes;
use foldhash::fast::RandomState;
use tracegate_model::SpanBatch;

/// Field numbers of the children that are not copied into a header.
const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
const SCOPE_SPANS_SPANS: u32 = 2;
/// Fixed cost of a header beyond its bytes (map entry, slot, `Bytes`).
const HEADER_OVERHEAD: u64 = 160;

#[derive(Debug)]
struct Header {
    /// The `ResourceSpans` fields other than `scope_spans`, encoded.
    resource: Bytes,
    /// The `ScopeSpans` fields other than `spans`, encoded.
    scope: Bytes,
    refs: u32,
}

/// A shard's distinct resource+scope pairs.
#[derive(Debug, Default)]
pub(crate) struct Headers {
    by_key: HashMap<(Bytes, Bytes), u32, RandomState>,
    slots: Vec<Option<Header>>,
    free: Vec<u32>,
    unreferenced: Vec<u32>,
    /// Memory of the headers held.
    pub(crate) memory: u64,
    /// Packs and unpacks the shard's span bodies.
    pub(crate) packer: Packer,
}

impl Headers {
    /// The id of this resource+scope pair, created if new (unreferenced
    /// until a trace acquires it).
    fn intern(&mut self, resource: Vec<u8>, scope: Vec<u8>) -> u32 {
        let key = (Bytes::from(resource), Bytes::from(scope));
        if let Some(&id) = self.by_key.get(&key) {
            return id;
        }
        let header = Header {
            resource: key.0.clone(),
            scope: key.1.clone(),
            refs: 0,
        };
        self.memory += (header.resource.len() + header.scope.len()) as u64 + HEADER_OVERHEAD;
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(header);
                id
            }
            None => {
                self.slots.push(Some(header));
                (self.slots.len() - 1) as u32
            }
        };
        self.by_key.insert(key, id);
        // Counted as unreferenced until acquired, so a header nobody takes
        // is swept too.
        self.unreferenced.push(id);
        id
    }

    fn acquire(&mut self, id: u32) {
        if let Some(Some(h)) = self.slots.get_mut(id as usize) {
            h.refs += 1;
        }
    }

    fn release(&mut self, id: u32) {
        if let Some(Some(h)) = self.slots.get_mut(id as usize) {
            h.refs = h.refs.saturating_sub(1);
            if h.refs == 0 {
                self.unreferenced.push(id);
            }
        }
    }

    /// Frees headers no trace refers to. Ids cached by a caller are
    /// invalid afterwards, so this runs only between batches.
    pub(crate) fn sweep(&mut self) {
        for id in std::mem::take(&mut self.unreferenced) {
            let unused = matches!(self.slots.get(id as usize), Some(Some(h)) if h.refs == 0);
            if !unused {
                continue;
            }
            if let Some(h) = self.slots[id as usize].take() {
                self.memory -= (h.resource.len() + h.scope.len()) as u64 + HEADER_OVERHEAD;
                self.by_key.remove(&(h.resource, h.scope));
                self.free.push(id);
            }
        }
    }

    fn get(&self, id: u32) -> Option<&Header> {
        self.slots.get(id as usize)?.as_ref()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }
}

/// Header ids of a batch's scopes, filled as they are first needed.
pub(crate) struct ScopeHeaders(Vec<Option<u32>>);

impl ScopeHeaders {
    pub(crate) fn new(batch: &SpanBatch) -> ScopeHeaders {
        ScopeHeaders(vec![None; batch.scopes().len()])
    }

    fn of(&mut self, batch: &SpanBatch, scope: usize, headers: &mut Headers) -> u32 {
        if let Some(id) = self.0[scope] {
            return id;
        }
        let info = &batch.scopes()[scope];
        let resource = &batch.resources()[info.resource as usize];
        let buf = batch.bytes();
        let scopes = &batch.scopes()[range(&resource.scopes)];
        let spans = &batch.spans()[range(&info.spans)];
        let id = headers.intern(
            other_fields_around(
                buf,
                range(&resource.body),
                RESOURCE_SPANS_SCOPE_SPANS,
                scopes.iter().map(|s| range(&s.body)),
            ),
            other_fields_around(
                buf,
                range(&info.body),
                SCOPE_SPANS_SPANS,
                spans.iter().map(|s| range(&s.span)),
            ),
        );
        self.0[scope] = Some(id);
        id
    }
}

/// A pending trace's spans written back as a request the first time they
/// are read: at its decision a trace is assembled only when a policy reads
/// its spans or it is kept.
#[derive(Debug)]
pub(crate) struct AssembledOnDemand<'a> {
    stored: &'a StoredSpans,
    headers: &'a Headers,
    batch: OnceCell<SpanBatch>,
}

impl<'a> AssembledOnDemand<'a> {
    pub(crate) fn new(stored: &'a StoredSpans, headers: &'a Headers) -> Self {
        AssembledOnDemand {
            stored,
            headers,
            batch: OnceCell::new(),
        }
    }

    pub(crate) fn batch(&self) -> &SpanBatch {
        self.batch
            .get_or_init(|| self.stored.assemble(self.headers))
    }

    /// The assembled trace, assembling it now if nothing read it yet.
    pub(crate) fn into_batch(self) -> SpanBatch {
        match self.batch.into_inner() {
            Some(batch) => batch,
            None => self.stored.assemble(self.headers),
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Traces assembled on this thread, for tests of which traces are.
    pub(crate) static ASSEMBLED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The size of a shard's dictionary, and the span bodies it is trained on
/// (about 250 traces of 10 spans of the benchmarks' kind).
pub(crate) const DICTIONARY_BYTES: usize = 32 * 1024;
const TRAINING_BYTES: usize = 1024 * 1024;
/// zstd's level: its fastest regular one. With a dictionary, span bodies
/// pack to a fifth of their size or less.
const LEVEL: i32 = 1;

/// How a block of packed bodies is stored (its first byte).
const BLOCK_WITH_DICTIONARY: u8 = 0;
const BLOCK_STORED: u8 = 2;

/// A shard's dictionary, and its contexts for packing span bodies.
///
/// Until the dictionary is trained the shard's first [`TRAINING_BYTES`]
/// of packed bodies are kept as they are (and as training samples); then
/// a zstd dictionary of [`DICTIONARY_BYTES`] is trained on them (or, should
/// training fail, their last bytes serve as one) and stays: every block
/// packed against it needs it to unpack.
#[derive(Default)]
pub(crate) struct Packer {
    samples: Vec<u8>,
    sample_sizes: Vec<usize>,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    /// Locked only by the shard's owner (a `&self` reads packed traces).
    decompressor: Option<std::sync::Mutex<zstd::bulk::Decompressor<'static>>>,
    scratch: Vec<u8>,
    /// Bodies packed and the bytes they took.
    pub(crate) packed_in: u64,
    pub(crate) packed_out: u64,
}

impl std::fmt::Debug for Packer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packer")
            .field("trained", &self.compressor.is_some())
            .field("packed_in", &self.packed_in)
            .field("packed_out", &self.packed_out)
            .finish()
    }
}

impl Packer {
    fn pack(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        let packed = match self.compressor.as_mut() {
            Some(compressor) => {
                self.scratch.clear();
                self.scratch
                    .reserve(zstd::zstd_safe::compress_bound(raw.len()));
                compressor.compress_to_buffer(raw, &mut self.scratch).ok()
            }
            None => {
                self.samples.extend_from_slice(raw);
                self.sample_sizes.push(raw.len());
                None
            }
        };
        match packed {
            Some(n) if n + 4 < raw.len() => {
                out.reserve_exact(1 + 2 * 5 + n);
                out.push(BLOCK_WITH_DICTIONARY);
                put_varint(out, raw.len() as u64);
                put_varint(out, n as u64);
                out.extend_from_slice(&self.scratch[..n]);
            }
            _ => {
                out.reserve_exact(1 + 5 + raw.len());
                out.push(BLOCK_STORED);
                put_varint(out, raw.len() as u64);
                out.extend_from_slice(raw);
            }
        }
        self.packed_in += raw.len() as u64;
        self.packed_out += (out.len() - start) as u64;
        if self.compressor.is_none() && self.samples.len() >= TRAINING_BYTES {
            self.train();
        }
    }

    /// Trains the dictionary on the samples (their last bytes as a raw
    /// dictionary should training fail).
    fn train(&mut self) {
        let samples = std::mem::take(&mut self.samples);
        let sizes = std::mem::take(&mut self.sample_sizes);
        let dictionary = zstd::dict::from_continuous(&samples, &sizes, DICTIONARY_BYTES)
            .unwrap_or_else(|_| samples[samples.len().saturating_sub(DICTIONARY_BYTES)..].to_vec());
        let compressor =
            zstd::bulk::Compressor::with_dictionary(LEVEL, &dictionary).and_then(|mut c| {
                // The block records its own length.
                c.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(false))?;
                c.set_parameter(zstd::zstd_safe::CParameter::DictIdFlag(false))?;
                Ok(c)
            });
        let decompressor = zstd::bulk::Decompressor::with_dictionary(&dictionary);
        if let (Ok(c), Ok(d)) = (compressor, decompressor) {
            self.compressor = Some(c);
            self.decompressor = Some(std::sync::Mutex::new(d));
        }
    }

    /// Appends the bodies of `packed` (blocks written by [`Self::pack`])
    /// to `out`. `false` on a block that does not unpack (a bug): what
    /// unpacked stays in `out`.
    fn unpack(&self, mut packed: &[u8], out: &mut Vec<u8>) -> bool {
        while let Some((&kind, rest)) = packed.split_first() {
            let mut at = 0;
            let Some(raw_len) = read_varint(rest, &mut at) else {
                return false;
            };
            let raw_len = raw_len as usize;
            if kind == BLOCK_STORED {
                let Some(body) = rest.get(at..at + raw_len) else {
                    return false;
                };
                out.extend_from_slice(body);
                packed = &rest[at + raw_len..];
                continue;
            }
            let Some(len) = read_varint(rest, &mut at) else {
                return false;
            };
            let Some(block) = rest.get(at..at + len as usize) else {
                return false;
            };
            let Some(decompressor) = &self.decompressor else {
                return false;
            };
            let mut decompressor = decompressor.lock().unwrap_or_else(|e| e.into_inner());
            let start = out.len();
            out.resize(start + raw_len, 0);
            let unpacked = decompressor.decompress_to_buffer(block, &mut out[start..]);
            if unpacked.ok() != Some(raw_len) {
                out.truncate(start);
                return false;
            }
            packed = &rest[at + len as usize..];
        }
        true
    }
}

/// A pending trace's spans.
#[derive(Debug, Default)]
pub(crate) struct StoredSpans {
    /// Span message bodies not packed yet, back to back: those that
    /// arrived since the trace was last packed.
    bytes: Vec<u8>,
    /// Blocks of the bodies that arrived before ([`Packer`]); unpacked,
    /// they come before `bytes`.
    packed: Vec<u8>,
    /// Per span: its header and the length of its body.
    spans: Vec<(u32, u32)>,
    /// Distinct headers referred to (each acquired once).
    headers: Vec<u32>,
}

impl StoredSpans {
    /// Copies the spans at `indices` (ascending) of `batch`. Returns the
    /// size the collector would count for them: their `ResourceSpans`
    /// (resource, scopes and spans of this trace only).
    pub(crate) fn append(
        &mut self,
        batch: &SpanBatch,
        indices: &[u32],
        scopes: &mut ScopeHeaders,
        headers: &mut Headers,
    ) -> (u64, u64) {
        let buf = batch.bytes();
        let added: usize = indices
            .iter()
            .map(|&i| {
                let r = &batch.spans()[i as usize].span;
                (r.end - r.start) as usize
            })
            .sum();
        self.bytes.reserve_exact(added);
        self.spans.reserve_exact(indices.len());
        // Sizes for maximum_trace_size_bytes, per resource then scope: the
        // `ResourceSpans` sizes, and (for bytes_limiting, as the collector's
        // TracesSize) the same framed as fields of a `TracesData`.
        let mut size = 0u64;
        let mut traces_size = 0u64;
        let mut current: Option<(u32, u32)> = None; // (resource, scope)
        let mut scope_len = 0u64;
        let mut resource_len = 0u64;
        let close_scope = |scope_len: u64, resource_len: &mut u64| {
            *resource_len += 1 + varint_len(scope_len) + scope_len;
        };
        for &i in indices {
            let span = &batch.spans()[i as usize];
            let scope = span.scope;
            let resource = batch.scopes()[scope as usize].resource;
            let header = scopes.of(batch, scope as usize, headers);
            let h = headers
                .get(header)
                .map_or((0, 0), |h| (h.resource.len(), h.scope.len()));
            match current {
                Some((r, s)) if r == resource && s == scope => {}
                Some((r, _)) if r == resource => {
                    close_scope(scope_len, &mut resource_len);
                    scope_len = h.1 as u64;
                }
                prev => {
                    if prev.is_some() {
                        close_scope(scope_len, &mut resource_len);
                        size += resource_len;
                        traces_size += 1 + varint_len(resource_len) + resource_len;
                    }
                    resource_len = h.0 as u64;
                    scope_len = h.1 as u64;
                }
            }
            current = Some((resource, scope));
            let body = &buf[span.span.start as usize..span.span.end as usize];
            scope_len += 1 + varint_len(body.len() as u64) + body.len() as u64;
            self.bytes.extend_from_slice(body);
            self.spans.push((header, body.len() as u32));
            if !self.headers.contains(&header) {
                self.headers.push(header);
                headers.acquire(header);
            }
        }
        if current.is_some() {
            close_scope(scope_len, &mut resource_len);
            size += resource_len;
            traces_size += 1 + varint_len(resource_len) + resource_len;
        }
        (size, traces_size)
    }

    /// Memory held, as the byte budget counts it.
    pub(crate) fn memory(&self) -> u64 {
        (self.bytes.capacity()
            + self.packed.capacity()
            + self.spans.capacity() * 8
            + self.headers.capacity() * 4) as u64
    }

    /// Whether bodies wait to be packed.
    pub(crate) fn has_unpacked(&self) -> bool {
        !self.bytes.is_empty()
    }

    /// Packs the bodies that arrived since the last call into a block.
    pub(crate) fn pack(&mut self, packer: &mut Packer) {
        if self.bytes.is_empty() {
            return;
        }
        packer.pack(&self.bytes, &mut self.packed);
        self.bytes = Vec::new();
    }

    /// Every span body, back to back in arrival order.
    fn bodies(&self, packer: &Packer) -> Cow<'_, [u8]> {
        if self.packed.is_empty() {
            return Cow::Borrowed(&self.bytes);
        }
        let total = self.spans.iter().map(|s| s.1 as usize).sum::<usize>();
        let mut out = Vec::with_capacity(total);
        let whole = packer.unpack(&self.packed, &mut out);
        debug_assert!(whole, "packed span bodies failed to unpack");
        out.extend_from_slice(&self.bytes);
        Cow::Owned(out)
    }

    /// The spans written back as a request, in arrival order.
    pub(crate) fn assemble(&self, headers: &Headers) -> SpanBatch {
        #[cfg(test)]
        ASSEMBLED.with(|n| n.set(n.get() + 1));
        let bodies = self.bodies(&headers.packer);
        let mut out = Vec::with_capacity(bodies.len() + self.spans.len() * 6 + 512);
        let mut at = 0usize;
        let mut run_start = 0usize;
        while run_start < self.spans.len() {
            let header_id = self.spans[run_start].0;
            let mut run_end = run_start;
            let mut spans_len = 0u64;
            while run_end < self.spans.len() && self.spans[run_end].0 == header_id {
                let len = u64::from(self.spans[run_end].1);
                spans_len += 1 + varint_len(len) + len;
                run_end += 1;
            }
            let (resource, scope) = match headers.get(header_id) {
                Some(h) => (&h.resource[..], &h.scope[..]),
                None => (&[][..], &[][..]),
            };
            let scope_spans_len = scope.len() as u64 + spans_len;
            let resource_spans_len =
                resource.len() as u64 + 1 + varint_len(scope_spans_len) + scope_spans_len;
            out.push(0x0a); // ExportTraceServiceRequest.resource_spans
            put_varint(&mut out, resource_spans_len);
            out.extend_from_slice(resource);
            out.push(0x12); // ResourceSpans.scope_spans
            put_varint(&mut out, scope_spans_len);
            out.extend_from_slice(scope);
            for &(_, len) in &self.spans[run_start..run_end] {
                out.push(0x12); // ScopeSpans.spans
                put_varint(&mut out, u64::from(len));
                // Bodies that did not unpack (a bug) read as empty spans
                // rather than panicking.
                out.extend_from_slice(bodies.get(at..at + len as usize).unwrap_or_default());
                at += len as usize;
            }
            run_start = run_end;
        }
        // Every part came out of a scanned request, so this scans; should
        // it not (a bug), the trace reads as empty rather than panicking.
        SpanBatch::scan(Bytes::from(out)).unwrap_or_else(|e| {
            debug_assert!(false, "reassembled trace failed to scan: {e}");
            SpanBatch::default()
        })
    }

    /// Gives the headers back; the spans are dropped with `self`.
    pub(crate) fn release(self, headers: &mut Headers) {
        for id in self.headers {
            headers.release(id);
        }
    }
}

fn range(r: &Range<u32>) -> Range<usize> {
    r.start as usize..r.end as usize
}

fn varint_len(v: u64) -> u64 {
    u64::from((64 - (v | 1).leading_zeros()).div_ceil(7))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in 0..10 {
        let byte = *b.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The fields of the message `body` other than `child`, encoded as they
/// were (tags included).
fn other_fields(buf: &[u8], body: Range<usize>, child: u32) -> Vec<u8> {
    let mut out = Vec::new();
    copy_other_fields(&buf[body], child, &mut out);
    out
}

/// [`other_fields`] for a message whose `child` fields are `children` (the
/// value ranges the scanner indexed, in order): when they sit back to back
/// with minimal headers, as encoders write them, only the fields before
/// and after them are read — a scope's spans are not walked again for
/// every shard and batch. Anything else takes the full walk.
fn other_fields_around(
    buf: &[u8],
    body: Range<usize>,
    child: u32,
    mut children: impl Iterator<Item = Range<usize>>,
) -> Vec<u8> {
    let header = |r: &Range<usize>| 1 + varint_len((r.end - r.start) as u64) as usize;
    let Some(first) = children.next() else {
        return other_fields(buf, body, child);
    };
    // A gap of exactly a minimal header holds that header and nothing
    // else: any other field would need bytes of its own.
    let mut back_to_back = first.start >= body.start + header(&first);
    let mut end = first.end;
    for c in children {
        back_to_back &= c.start >= end && c.start - end == header(&c);
        end = c.end;
    }
    if back_to_back && end <= body.end {
        let mut out = Vec::new();
        let head = &buf[body.start..first.start - header(&first)];
        let tail = &buf[end..body.end];
        if copy_other_fields(head, child, &mut out) == Some(0)
            && copy_other_fields(tail, child, &mut out) == Some(0)
        {
            return out;
        }
    }
    other_fields(buf, body, child)
}

/// Appends the fields of `msg` other than `child` to `out`. Returns how
/// many `child` fields it stepped over, `None` when `msg` does not end on
/// a field boundary (what it copied until then stays in `out`).
fn copy_other_fields(msg: &[u8], child: u32, out: &mut Vec<u8>) -> Option<usize> {
    let mut at = 0usize;
    let mut children = 0;
    while at < msg.len() {
        let start = at;
        let tag = read_varint(msg, &mut at)?;
        if !skip_value(msg, &mut at, tag, 0) {
            return None;
        }
        if (tag >> 3) as u32 == child {
            children += 1;
        } else {
            out.extend_from_slice(&msg[start..at]);
        }
    }
    Some(children)
}

/// Steps over one field's value; `false` on anything malformed (which a
/// scanned batch does not contain).
fn skip_value(msg: &[u8], at: &mut usize, tag: u64, depth: u32) -> bool {
    match tag & 7 {
        0 => read_varint(msg, at).is_some(),
        1 => {
            *at += 8;
            *at <= msg.len()
        }
        2 => match read_varint(msg, at) {
            Some(len) => {
                *at += len as usize;
                *at <= msg.len()
            }
            None => false,
        },
        3 if depth < 64 => loop {
            let Some(inner) = read_varint(msg, at) else {
                return false;
            };
            if inner & 7 == 4 {
                return inner >> 3 == tag >> 3;
            }
            if !skip_value(msg, at, inner, depth + 1) {
                return false;
            }
        },
        5 => {
            *at += 4;
            *at <= msg.len()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A length-delimited field.
    fn field(out: &mut Vec<u8>, number: u32, value: &[u8]) -> Range<usize> {
        put_varint(out, u64::from(number << 3 | 2));
        put_varint(out, value.len() as u64);
        out.extend_from_slice(value);
        out.len() - value.len()..out.len()
    }

    #[test]
    fn stepping_over_indexed_children_reads_as_the_full_walk() {
        let big = [7u8; 200];
        // (fields before, children, fields between children, fields after)
        let layouts: [(&[u32], usize, bool, &[u32]); 5] = [
            (&[1], 3, false, &[3]),
            (&[], 2, false, &[]),
            (&[1, 3], 1, false, &[]),
            (&[1], 3, true, &[3]),
            (&[], 0, false, &[1, 3]),
        ];
        for (n, (before, count, interleaved, after)) in layouts.into_iter().enumerate() {
            let mut msg = Vec::new();
            for &f in before {
                field(&mut msg, f, b"head");
            }
            let mut children = Vec::new();
            for i in 0..count {
                if interleaved && i > 0 {
                    field(&mut msg, 3, b"between");
                }
                let value = if i == 1 { &big[..] } else { &b"span"[..] };
                children.push(field(&mut msg, 2, value));
            }
            for &f in after {
                field(&mut msg, f, b"tail");
            }
            let full = other_fields(&msg, 0..msg.len(), 2);
            let around = other_fields_around(&msg, 0..msg.len(), 2, children.iter().cloned());
            assert_eq!(around, full, "layout {n}");
            let expected =
                before.len() + after.len() + usize::from(interleaved) * count.saturating_sub(1);
            let mut fields = 0;
            let mut at = 0;
            while at < full.len() {
                let tag = read_varint(&full, &mut at).unwrap();
                assert!(skip_value(&full, &mut at, tag, 0));
                fields += 1;
            }
            assert_eq!(fields, expected, "layout {n}");
        }
    }
}
