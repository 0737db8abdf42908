//! Compact storage of a pending trace's spans.
//!
//! A request typically carries one resource and scope for many traces;
//! copying them into every trace would cost more than the spans of a small
//! trace (a resource with Kubernetes attributes is a few hundred bytes).
//! So a shard keeps each distinct resource+scope once ([`Headers`],
//! reference-counted) and a trace keeps only its span bodies, each tagged
//! with its header. The bodies are not copied either: a trace keeps where
//! each lies in the request buffer it arrived in, and the buffer, shared
//! and reference-counted ([`Sources`]), stays alive until the last trace
//! holding a slice of it is decided. Spans arrive for traces first seen
//! then or earlier, so a buffer lives at most `decision_wait` (less when
//! its traces are decided early, oldest first), while a copy made at the
//! first of a trace's arrivals lived as long. At decision time the trace is written back as a request
//! (one `ResourceSpans` per run of spans sharing a header, in arrival
//! order, as the collector's per-arrival `ResourceSpans` are) and scanned
//! into a [`SpanBatch`] for the policies.
//!
//! Spans that have waited are packed ([`StoredSpans::pack`]): a trace's
//! bodies that arrived since it was last packed are copied out of their
//! buffers (which the trace then lets go) and become one zstd block,
//! compressed against a dictionary the shard trains on the first span
//! bodies it packs ([`Packer`]). Span bodies repeat their attribute keys,
//! names and most values from trace to trace, so a block takes a fifth of
//! the bodies' bytes or less. A trace is unpacked once, when it is
//! assembled (kept, read by a policy, handed over).

use std::cell::OnceCell;
use std::collections::HashMap;
use std::mem;
use std::ops::Range;

use bytes::Bytes;
use foldhash::fast::RandomState;
use tracegate_model::{Indexing, SpanBatch};

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

/// Values under small reusable ids: a removed value's id is handed out
/// again, so the ids stay dense (they index a vector) and fit in a `u32`.
#[derive(Debug)]
struct Slots<T> {
    slots: Vec<Option<T>>,
    free: Vec<u32>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slots<T> {
    fn insert(&mut self, value: T) -> u32 {
        match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(value);
                id
            }
            None => {
                self.slots.push(Some(value));
                (self.slots.len() - 1) as u32
            }
        }
    }

    fn get(&self, id: u32) -> Option<&T> {
        self.slots.get(id as usize)?.as_ref()
    }

    fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        self.slots.get_mut(id as usize)?.as_mut()
    }

    /// Takes the value out; its id is free for the next insert.
    fn remove(&mut self, id: u32) -> Option<T> {
        let value = self.slots.get_mut(id as usize)?.take()?;
        self.free.push(id);
        Some(value)
    }

    /// Values held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

/// A shard's distinct resource+scope pairs.
#[derive(Debug, Default)]
pub(crate) struct Headers {
    by_key: HashMap<(Bytes, Bytes), u32, RandomState>,
    slots: Slots<Header>,
    unreferenced: Vec<u32>,
    /// Memory of the headers held.
    pub(crate) memory: u64,
    /// Packs and unpacks the shard's span bodies.
    pub(crate) packer: Packer,
    /// The request buffers pending span bodies are slices of.
    pub(crate) sources: Sources,
    /// Reused to gather a trace's bodies for packing.
    gather: Vec<u8>,
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
        let id = self.slots.insert(header);
        self.by_key.insert(key, id);
        // Counted as unreferenced until acquired, so a header nobody takes
        // is swept too.
        self.unreferenced.push(id);
        id
    }

    fn acquire(&mut self, id: u32) {
        if let Some(h) = self.slots.get_mut(id) {
            h.refs += 1;
        }
    }

    fn release(&mut self, id: u32) {
        if let Some(h) = self.slots.get_mut(id) {
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
            let unused = matches!(self.slots.get(id), Some(h) if h.refs == 0);
            if !unused {
                continue;
            }
            if let Some(h) = self.slots.remove(id) {
                self.memory -= (h.resource.len() + h.scope.len()) as u64 + HEADER_OVERHEAD;
                self.by_key.remove(&(h.resource, h.scope));
            }
        }
    }

    fn get(&self, id: u32) -> Option<&Header> {
        self.slots.get(id)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }
}

/// Fixed cost of a retained request buffer beyond its bytes (its slot,
/// the `Bytes` and its shared header).
const SOURCE_OVERHEAD: u64 = 96;

/// A request buffer that pending span bodies are slices of.
#[derive(Debug)]
struct Source {
    bytes: Bytes,
    /// Traces of this shard holding slices of it, plus one while the batch
    /// it came with is being taken in.
    refs: u32,
    /// What the shard counts for it while it holds it.
    charged: u64,
}

/// The request buffers a shard's pending spans refer to.
///
/// A trace's span bodies are not copied out of the request: the trace
/// keeps (buffer, offset, length) and the buffer stays alive, shared,
/// until the last trace of this shard holding a slice of it is decided
/// (or packs its bodies). A buffer is counted as this shard's share of
/// the whole request ([`ScopeHeaders::finish`]), not as the slices'
/// lengths: the framing, the other traces' spans and the resources in it
/// are held as long as any slice is.
#[derive(Debug, Default)]
pub(crate) struct Sources {
    slots: Slots<Source>,
    /// What the buffers held count, as the byte budget counts it.
    pub(crate) memory: u64,
}

impl Sources {
    /// Takes `bytes` as a source with one reference (the batch's own).
    fn add(&mut self, bytes: Bytes) -> u32 {
        self.slots.insert(Source {
            bytes,
            refs: 1,
            charged: 0,
        })
    }

    fn acquire(&mut self, id: u32) {
        if let Some(s) = self.slots.get_mut(id) {
            s.refs += 1;
        }
    }

    /// Drops a reference; the last one frees the buffer at once.
    fn release(&mut self, id: u32) {
        let Some(s) = self.slots.get_mut(id) else {
            return;
        };
        s.refs = s.refs.saturating_sub(1);
        if s.refs == 0 {
            self.memory -= s.charged;
            self.slots.remove(id);
        }
    }

    /// Counts `bytes` for a source still held.
    fn charge(&mut self, id: u32, bytes: u64) {
        if let Some(s) = self.slots.get_mut(id) {
            self.memory = self.memory - s.charged + bytes;
            s.charged = bytes;
        }
    }

    fn get(&self, id: u32) -> &[u8] {
        match self.slots.get(id) {
            Some(s) => &s.bytes,
            None => &[],
        }
    }

    /// Request buffers held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}

/// Header ids of a batch's scopes, filled as they are first needed, and
/// the batch's buffer as a source once a trace takes a slice of it.
pub(crate) struct ScopeHeaders {
    ids: Vec<Option<u32>>,
    source: Option<u32>,
}

impl ScopeHeaders {
    pub(crate) fn new(batch: &SpanBatch) -> ScopeHeaders {
        ScopeHeaders {
            ids: vec![None; batch.scopes().len()],
            source: None,
        }
    }

    fn source(&mut self, batch: &SpanBatch, headers: &mut Headers) -> u32 {
        *self
            .source
            .get_or_insert_with(|| headers.sources.add(batch.bytes().clone()))
    }

    /// Ends the batch: if a trace kept a slice of its buffer, the shard
    /// counts its share of the request — the buffer's length in the
    /// proportion of the batch's spans it was given (`given` of `total`;
    /// the other shards count the rest) — until the last such trace lets
    /// go; then drops the batch's own reference.
    pub(crate) fn finish(self, batch: &SpanBatch, given: usize, headers: &mut Headers) {
        let Some(id) = self.source else {
            return;
        };
        let total = batch.len().max(1) as u128;
        let len = batch.bytes().len() as u128;
        let share = (len * (given as u128).min(total) / total) as u64;
        headers.sources.charge(id, share + SOURCE_OVERHEAD);
        headers.sources.release(id);
    }

    fn of(&mut self, batch: &SpanBatch, scope: usize, headers: &mut Headers) -> u32 {
        if let Some(id) = self.ids[scope] {
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
        self.ids[scope] = Some(id);
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
            .get_or_init(|| self.stored.assemble(self.headers, Indexing::Eager))
    }

    /// The assembled trace, assembling it now if nothing read it yet.
    pub(crate) fn into_batch(self) -> SpanBatch {
        self.into_batch_with(Indexing::Eager)
    }

    /// [`Self::into_batch`], indexing a trace assembled now as `indexing`
    /// says: lazily when nothing after the shard reads spans (the batch
    /// is validated either way, and builds its index on first use).
    pub(crate) fn into_batch_with(self, indexing: Indexing) -> SpanBatch {
        match self.batch.into_inner() {
            Some(batch) => batch,
            None => self.stored.assemble(self.headers, indexing),
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

/// Where a span's body is: a slice of a request buffer, or (`source` is
/// [`PACKED`]) in the trace's packed blocks.
#[derive(Debug, Clone, Copy)]
struct SpanRef {
    header: u32,
    source: u32,
    start: u32,
    len: u32,
}

/// [`SpanRef::source`] of a body in the packed blocks.
const PACKED: u32 = u32::MAX;

/// Marks a request buffer's id in [`StoredSpans::held`].
const SOURCE_BIT: u32 = 1 << 31;

/// A pending trace's spans.
#[derive(Debug, Default)]
pub(crate) struct StoredSpans {
    /// Per span, in arrival order: its header and where its body is.
    /// The packed ones come first, the rest are slices of the request
    /// buffers they arrived in ([`Sources`]).
    spans: Vec<SpanRef>,
    /// The packed bodies, once the trace has been packed (boxed: cold
    /// unless `pack_pending_spans` is on).
    packed: Option<Box<Packed>>,
    /// Distinct headers referred to, and distinct request buffers (their
    /// ids with [`SOURCE_BIT`]), each acquired once.
    held: Vec<u32>,
}

#[derive(Debug, Default)]
struct Packed {
    /// Blocks of the bodies of the first `spans` spans ([`Packer`]), in
    /// order.
    blocks: Vec<u8>,
    spans: u32,
}

impl StoredSpans {
    /// Takes the spans at `indices` (ascending) of `batch`, as slices of
    /// its buffer. Returns the size the collector would count for them:
    /// their `ResourceSpans` (resource, scopes and spans of this trace
    /// only).
    pub(crate) fn append(
        &mut self,
        batch: &SpanBatch,
        indices: &[u32],
        scopes: &mut ScopeHeaders,
        headers: &mut Headers,
    ) -> (u64, u64) {
        if indices.is_empty() {
            return (0, 0);
        }
        let source = scopes.source(batch, headers);
        if !self.held.contains(&(source | SOURCE_BIT)) {
            self.held.push(source | SOURCE_BIT);
            headers.sources.acquire(source);
        }
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
            let len = span.span.end - span.span.start;
            scope_len += 1 + varint_len(u64::from(len)) + u64::from(len);
            self.spans.push(SpanRef {
                header,
                source,
                start: span.span.start,
                len,
            });
            if !self.held.contains(&header) {
                self.held.push(header);
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

    /// Memory held by the trace itself, as the byte budget counts it. The
    /// request buffers its unpacked bodies are slices of are counted by
    /// [`Sources`].
    pub(crate) fn memory(&self) -> u64 {
        let packed = self
            .packed
            .as_ref()
            .map_or(0, |p| mem::size_of::<Packed>() + p.blocks.capacity());
        (packed + self.spans.capacity() * mem::size_of::<SpanRef>() + self.held.capacity() * 4)
            as u64
    }

    /// Spans whose bodies are packed (the first ones).
    fn packed_spans(&self) -> usize {
        self.packed.as_ref().map_or(0, |p| p.spans as usize)
    }

    /// Whether bodies wait to be packed.
    pub(crate) fn has_unpacked(&self) -> bool {
        self.packed_spans() < self.spans.len()
    }

    /// Packs the bodies that arrived since the last call into a block
    /// (copied out of their request buffers, which the trace then lets go).
    pub(crate) fn pack(&mut self, headers: &mut Headers) {
        if !self.has_unpacked() {
            return;
        }
        let mut raw = mem::take(&mut headers.gather);
        raw.clear();
        let from = self.packed_spans();
        for s in &mut self.spans[from..] {
            let body = headers.sources.get(s.source);
            raw.extend_from_slice(
                body.get(s.start as usize..(s.start + s.len) as usize)
                    .unwrap_or_default(),
            );
            s.source = PACKED;
            s.start = 0;
        }
        let packed = self.packed.get_or_insert_with(Box::default);
        headers.packer.pack(&raw, &mut packed.blocks);
        packed.spans = self.spans.len() as u32;
        self.held.retain(|&id| {
            let source = id & SOURCE_BIT != 0;
            if source {
                headers.sources.release(id & !SOURCE_BIT);
            }
            !source
        });
        // A huge trace once should not stay in the scratch buffer.
        if raw.capacity() <= 1 << 20 {
            headers.gather = raw;
        }
    }

    /// The spans written back as a request, in arrival order, scanned
    /// with `indexing`.
    pub(crate) fn assemble(&self, headers: &Headers, indexing: Indexing) -> SpanBatch {
        #[cfg(test)]
        ASSEMBLED.with(|n| n.set(n.get() + 1));
        let unpacked = match &self.packed {
            None => Vec::new(),
            Some(packed) => {
                let total = self.spans[..packed.spans as usize]
                    .iter()
                    .map(|s| s.len as usize)
                    .sum::<usize>();
                let mut out = Vec::with_capacity(total);
                let whole = headers.packer.unpack(&packed.blocks, &mut out);
                debug_assert!(whole, "packed span bodies failed to unpack");
                out
            }
        };
        // Bodies with their tags and lengths, and each run's headers with
        // theirs: enough that the buffer never grows.
        let mut capacity = 0usize;
        let mut last_header = None;
        for s in &self.spans {
            capacity += s.len as usize + 6;
            if last_header != Some(s.header) {
                last_header = Some(s.header);
                capacity += headers
                    .get(s.header)
                    .map_or(0, |h| h.resource.len() + h.scope.len())
                    + 22;
            }
        }
        let mut out = Vec::with_capacity(capacity);
        let mut at = 0usize;
        let mut run_start = 0usize;
        while run_start < self.spans.len() {
            let header_id = self.spans[run_start].header;
            let mut run_end = run_start;
            let mut spans_len = 0u64;
            while run_end < self.spans.len() && self.spans[run_end].header == header_id {
                let len = u64::from(self.spans[run_end].len);
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
            for s in &self.spans[run_start..run_end] {
                let len = s.len as usize;
                out.push(0x12); // ScopeSpans.spans
                put_varint(&mut out, u64::from(s.len));
                // Bodies that did not unpack (a bug) read as empty spans
                // rather than panicking.
                let body = if s.source == PACKED {
                    let body = unpacked.get(at..at + len);
                    at += len;
                    body
                } else {
                    let start = s.start as usize;
                    headers.sources.get(s.source).get(start..start + len)
                };
                out.extend_from_slice(body.unwrap_or_default());
            }
            run_start = run_end;
        }
        // Every part came out of a scanned request, so this scans; should
        // it not (a bug), the trace reads as empty rather than panicking.
        SpanBatch::scan_with(Bytes::from(out), indexing).unwrap_or_else(|e| {
            debug_assert!(false, "reassembled trace failed to scan: {e}");
            SpanBatch::default()
        })
    }

    /// Gives the headers and request buffers back; the rest is dropped
    /// with `self`.
    pub(crate) fn release(self, headers: &mut Headers) {
        for id in self.held {
            if id & SOURCE_BIT != 0 {
                headers.sources.release(id & !SOURCE_BIT);
            } else {
                headers.release(id);
            }
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
