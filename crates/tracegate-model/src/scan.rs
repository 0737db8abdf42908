//! The validating scanner over an encoded `ExportTraceServiceRequest`.
//! It parses untrusted input: it never panics, recurses at most
//! [`MAX_DEPTH`] levels, and allocates only the span
//! index, in proportion to the input's size. Asked not to index
//! ([`Indexing::Lazy`]), it validates the same and only counts the spans.
//!
//! What it accepts is what the OpenTelemetry Collector accepts: unknown fields
//! of any wire type are skipped, known fields must have their declared wire
//! type, strings must be UTF-8, and trace/span ids must be empty or exactly
//! 16/8 bytes (pdata's `TraceID.Unmarshal`). It is also never looser than
//! prost, so every scanned batch decodes with [`SpanBatch::to_request`].

use std::ops::Range;

use bytes::Bytes;

use crate::batch::{
    key_length_bit, Encoded, FieldLayout, Index, Indexing, ResourceInfo, ScopeInfo, SpanBatch,
    SpanInfo, StatusCode, TRACE_STATE_UNUSUAL,
};
use crate::wire::{Cursor, Fault, FaultKind, I32, I64, LEN, MAX_DEPTH, VARINT};

/// Why a request could not be scanned. The message is meant for the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScanError {
    #[error("malformed protobuf at byte {offset}: {what}")]
    Malformed { offset: usize, what: &'static str },
}

/// The protobuf message a fault happened in, for the error message.
#[derive(Debug, Clone, Copy)]
enum Msg {
    Request,
    ResourceSpans,
    Resource,
    EntityRef,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

macro_rules! fault_messages {
    ($($name:literal),* $(,)?) => {
        [$([
            concat!($name, ": truncated or overlong varint"),
            concat!($name, ": invalid field number"),
            concat!($name, ": invalid wire type (6 or 7)"),
            concat!($name, ": length-delimited field runs past the end of its message"),
            concat!($name, ": fixed32/fixed64 field runs past the end of its message"),
            concat!($name, ": end-group tag without a matching start-group"),
            concat!($name, ": groups nested too deep"),
        ]),*]
    };
}

/// `FAULT_MESSAGES[msg][fault kind]`, all static so errors cost no allocation.
const FAULT_MESSAGES: [[&str; FaultKind::COUNT]; 14] = fault_messages!(
    "ExportTraceServiceRequest",
    "ResourceSpans",
    "Resource",
    "EntityRef",
    "ScopeSpans",
    "InstrumentationScope",
    "Span",
    "Span.Event",
    "Span.Link",
    "Status",
    "KeyValue",
    "AnyValue",
    "ArrayValue",
    "KeyValueList",
);

impl Fault {
    #[cold]
    fn within(self, msg: Msg) -> ScanError {
        ScanError::Malformed {
            offset: self.offset,
            what: FAULT_MESSAGES[msg as usize][self.kind.index()],
        }
    }
}

#[cold]
fn malformed(offset: usize, what: &'static str) -> ScanError {
    ScanError::Malformed { offset, what }
}

/// Fails unless a known field has the wire type its declaration implies.
#[inline]
fn expect_wire_type(
    wire_type: u8,
    want: u8,
    at: usize,
    what: &'static str,
) -> Result<(), ScanError> {
    if wire_type == want {
        Ok(())
    } else {
        Err(malformed(at, what))
    }
}

/// Reads a 16-byte id; empty means all zero ("invalid" but accepted).
#[inline]
fn id<const N: usize>(
    buf: &[u8],
    range: Range<usize>,
    at: usize,
    what: &'static str,
) -> Result<[u8; N], ScanError> {
    let bytes = &buf[range];
    if bytes.is_empty() {
        return Ok([0; N]);
    }
    bytes.try_into().map_err(|_| malformed(at, what))
}

#[inline]
fn utf8(buf: &[u8], range: Range<usize>, at: usize, what: &'static str) -> Result<(), ScanError> {
    let bytes = &buf[range];
    // Attribute keys and values are nearly always ASCII, which a word at a
    // time checks several times faster than the full UTF-8 validator.
    if is_ascii(bytes) || std::str::from_utf8(bytes).is_ok() {
        Ok(())
    } else {
        Err(malformed(at, what))
    }
}

/// True for the `KeyValue` layout every encoder writes for a scalar
/// attribute: an ASCII key, then a value holding exactly one scalar member,
/// every length in one byte. Anything else (including everything malformed)
/// is false and goes through the field-by-field validation, so this only
/// ever saves time.
#[inline(always)]
fn key_value_is_plain(kv: &[u8]) -> bool {
    let [0x0a, key_len, rest @ ..] = kv else {
        return false;
    };
    let key_len = usize::from(*key_len);
    // A length byte of 0x80 or more starts a longer varint.
    if key_len >= 0x80 || rest.len() < key_len {
        return false;
    }
    let (key, rest) = rest.split_at(key_len);
    let [0x12, value_len, value @ ..] = rest else {
        return false;
    };
    if *value_len >= 0x80 || usize::from(*value_len) != value.len() {
        return false;
    }
    match value {
        // string_value: every framing byte here is below 0x80, so one pass
        // over the whole KeyValue checks the key and the string are ASCII.
        [0x0a, len, s @ ..] => *len < 0x80 && usize::from(*len) == s.len() && is_ascii(kv),
        // bool_value, int_value: one varint, up to 9 bytes (10-byte
        // varints need the overflow check of the general path).
        [0x10 | 0x18, v @ ..] => match v.split_last() {
            Some((last, init)) => {
                *last < 0x80 && init.len() < 9 && init.iter().all(|b| *b >= 0x80) && is_ascii(key)
            }
            None => false,
        },
        // double_value.
        [0x21, v @ ..] => v.len() == 8 && is_ascii(key),
        // bytes_value.
        [0x3a, len, b @ ..] => *len < 0x80 && usize::from(*len) == b.len() && is_ascii(key),
        _ => false,
    }
}

/// The [`key_length_bit`]s of every key field of a validated `KeyValue`
/// (protobuf keeps the last; all are counted, so the bits never miss one),
/// and of the empty key when it has none.
fn key_length_bits(buf: &[u8], kv: Range<usize>) -> u32 {
    let mut bits = 0;
    let mut keys = 0;
    let mut c = Cursor::new(buf, kv);
    while !c.at_end() {
        let Ok((field, wt)) = c.tag() else { break };
        if field == 1 && wt == LEN {
            let Ok(key) = c.len_delimited() else { break };
            bits |= key_length_bit(key.len());
            keys += 1;
        } else if c.skip(field, wt, 4).is_err() {
            break;
        }
    }
    if keys == 0 {
        bits |= key_length_bit(0);
    }
    bits
}

/// The key's length of a [`key_value_is_plain`] `KeyValue` (its second
/// byte), else `None`.
#[inline(always)]
fn plain_key_len(kv: &[u8]) -> Option<usize> {
    match kv {
        [_, key_len, ..] if key_value_is_plain(kv) => Some(usize::from(*key_len)),
        _ => None,
    }
}

/// ASCII check 16 bytes at a time with no per-byte loop: attribute strings
/// are short, where the standard library's version pays its setup each time.
/// Tails are covered by one overlapping read.
#[inline(always)]
pub(crate) fn is_ascii(bytes: &[u8]) -> bool {
    fn read<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
        let mut w = [0u8; N];
        w.copy_from_slice(&b[at..at + N]);
        w
    }
    let n = bytes.len();
    if n >= 16 {
        let mut high = u128::from_le_bytes(read(bytes, n - 16));
        for chunk in bytes.chunks_exact(16) {
            high |= u128::from_le_bytes(read(chunk, 0));
        }
        high & u128::from_le_bytes([0x80; 16]) == 0
    } else if n >= 8 {
        let high = u64::from_le_bytes(read(bytes, 0)) | u64::from_le_bytes(read(bytes, n - 8));
        high & 0x8080_8080_8080_8080 == 0
    } else if n >= 4 {
        let high = u32::from_le_bytes(read(bytes, 0)) | u32::from_le_bytes(read(bytes, n - 4));
        high & 0x8080_8080 == 0
    } else if n > 0 {
        (bytes[0] | bytes[n / 2] | bytes[n - 1]) < 0x80
    } else {
        true
    }
}

/// Reads a field's key, naming `msg` if it is malformed.
macro_rules! next_tag {
    ($c:expr, $msg:expr) => {
        $c.tag().map_err(|f| f.within($msg))?
    };
}

pub(crate) fn scan(bytes: Bytes, indexing: Indexing) -> Result<SpanBatch, ScanError> {
    if bytes.len() > u32::MAX as usize {
        return Err(malformed(0, "request larger than 4 GiB"));
    }
    let buf: &[u8] = &bytes;
    match indexing {
        Indexing::Eager => {
            let mut scanner = Scanner::<true>::new(buf);
            // A typical span with a few attributes encodes to 200-400
            // bytes; growth past this is amortized.
            scanner.spans.reserve(buf.len() / 256);
            scanner.request()?;
            let Scanner {
                resources,
                scopes,
                spans,
                ..
            } = scanner;
            let index = Index {
                resources,
                scopes,
                spans,
            };
            Ok(SpanBatch::indexed(Encoded::whole(bytes), index))
        }
        Indexing::Lazy => {
            let mut scanner = Scanner::<false>::new(buf);
            scanner.request()?;
            let count = scanner.count;
            Ok(SpanBatch::unindexed(Encoded::whole(bytes), count))
        }
    }
}

/// Tracks where the non-child fields of a ResourceSpans/ScopeSpans sit
/// relative to its children, so subsets can copy them in one or two runs.
pub(crate) struct LayoutTracker {
    other_len: usize,
    first_child_at: Option<usize>,
    last_child_end: usize,
    other_after_child: bool,
    interleaved: bool,
}

impl LayoutTracker {
    pub(crate) fn new() -> Self {
        LayoutTracker {
            other_len: 0,
            first_child_at: None,
            last_child_end: 0,
            other_after_child: false,
            interleaved: false,
        }
    }

    #[inline]
    pub(crate) fn other(&mut self, at: usize, end: usize) {
        self.other_len += end - at;
        if self.first_child_at.is_some() {
            self.other_after_child = true;
        }
    }

    #[inline]
    pub(crate) fn child(&mut self, at: usize, end: usize) {
        if self.other_after_child {
            self.interleaved = true;
        }
        self.first_child_at.get_or_insert(at);
        self.last_child_end = end;
    }

    pub(crate) fn finish(self, body_end: usize) -> FieldLayout {
        let (head_end, tail_start) = match self.first_child_at {
            Some(first) => (first, self.last_child_end),
            None => (body_end, body_end),
        };
        FieldLayout {
            other_len: self.other_len as u32,
            head_end: head_end as u32,
            tail_start: tail_start as u32,
            interleaved: self.interleaved,
        }
    }
}

/// What [`Scanner::span`] gathers of one span while it walks the fields.
struct SpanState {
    info: SpanInfo,
    /// Where the run of fields 1 to 3 at the start of the body ends, and
    /// whether they all are in that run.
    low_end: usize,
    low_run: bool,
    /// `trace_state` fields seen (an empty one counts 2).
    trace_states: u32,
}

/// The scanner; `INDEX` says whether it writes the index or only counts
/// the spans. Both validate the same, in the same code: only the writes
/// of the index depend on it.
struct Scanner<'a, const INDEX: bool> {
    buf: &'a [u8],
    resources: Vec<ResourceInfo>,
    scopes: Vec<ScopeInfo>,
    spans: Vec<SpanInfo>,
    /// Spans seen (when not indexing).
    count: usize,
}

impl<'a, const INDEX: bool> Scanner<'a, INDEX> {
    fn new(buf: &'a [u8]) -> Self {
        Scanner {
            buf,
            resources: Vec::new(),
            scopes: Vec::new(),
            spans: Vec::new(),
            count: 0,
        }
    }

    fn request(&mut self) -> Result<(), ScanError> {
        let mut c = Cursor::new(self.buf, 0..self.buf.len());
        while !c.at_end() {
            let at = c.pos;
            let (field, wt) = next_tag!(c, Msg::Request);
            if field == 1 {
                expect_wire_type(
                    wt,
                    LEN,
                    at,
                    "ExportTraceServiceRequest.resource_spans: wrong wire type",
                )?;
                let body = c.len_delimited().map_err(|f| f.within(Msg::Request))?;
                self.resource_spans(body)?;
            } else {
                c.skip(field, wt, 0).map_err(|f| f.within(Msg::Request))?;
            }
        }
        Ok(())
    }

    fn resource_spans(&mut self, body: Range<usize>) -> Result<(), ScanError> {
        const M: Msg = Msg::ResourceSpans;
        let index = self.resources.len() as u32;
        let first_scope = self.scopes.len() as u32;
        let mut resource = None;
        let mut layout = LayoutTracker::new();
        let mut c = Cursor::new(self.buf, body.clone());
        while !c.at_end() {
            let at = c.pos;
            let (field, wt) = next_tag!(c, M);
            match field {
                1 => {
                    expect_wire_type(wt, LEN, at, "ResourceSpans.resource: wrong wire type")?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    self.resource(r.clone())?;
                    resource = Some(r.start as u32..r.end as u32);
                    layout.other(at, c.pos);
                }
                2 => {
                    expect_wire_type(wt, LEN, at, "ResourceSpans.scope_spans: wrong wire type")?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    self.scope_spans(r, index)?;
                    layout.child(at, c.pos);
                }
                3 => {
                    expect_wire_type(wt, LEN, at, "ResourceSpans.schema_url: wrong wire type")?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    utf8(self.buf, r, at, "ResourceSpans.schema_url: invalid UTF-8")?;
                    layout.other(at, c.pos);
                }
                _ => {
                    c.skip(field, wt, 1).map_err(|f| f.within(M))?;
                    layout.other(at, c.pos);
                }
            }
        }
        if INDEX {
            self.resources.push(ResourceInfo {
                body: body.start as u32..body.end as u32,
                resource,
                scopes: first_scope..self.scopes.len() as u32,
                layout: layout.finish(body.end),
            });
        }
        Ok(())
    }

    /// `Resource` at depth 2.
    fn resource(&mut self, body: Range<usize>) -> Result<(), ScanError> {
        const M: Msg = Msg::Resource;
        let mut c = Cursor::new(self.buf, body);
        while !c.at_end() {
            let at = c.pos;
            let (field, wt) = next_tag!(c, M);
            match field {
                1 => {
                    expect_wire_type(wt, LEN, at, "Resource.attributes: wrong wire type")?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    self.key_value(r, 3)?;
                }
                2 => {
                    expect_wire_type(
                        wt,
                        VARINT,
                        at,
                        "Resource.dropped_attributes_count: wrong wire type",
                    )?;
                    c.varint().map_err(|f| f.within(M))?;
                }
                3 => {
                    expect_wire_type(wt, LEN, at, "Resource.entity_refs: wrong wire type")?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    self.entity_ref(r)?;
                }
                _ => c.skip(field, wt, 2).map_err(|f| f.within(M))?,
            }
        }
        Ok(())
    }

    /// `EntityRef` at depth 3: four string fields (two repeated).
    fn entity_ref(&mut self, body: Range<usize>) -> Result<(), ScanError> {
        const M: Msg = Msg::EntityRef;
        let mut c = Cursor::new(self.buf, body);
        while !c.at_end() {
            let at = c.pos;
            let (field, wt) = next_tag!(c, M);
            match field {
                1..=4 => {
                    expect_wire_type(wt, LEN, at, "EntityRef: wrong wire type for a string field")?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    utf8(self.buf, r, at, "EntityRef: invalid UTF-8")?;
                }
                _ => c.skip(field, wt, 3).map_err(|f| f.within(M))?,
            }
        }
        Ok(())
    }

    fn scope_spans(&mut self, body: Range<usize>, resource: u32) -> Result<(), ScanError> {
        const M: Msg = Msg::ScopeSpans;
        let index = self.scopes.len() as u32;
        let first_span = self.spans.len() as u32;
        let mut layout = LayoutTracker::new();
        let mut c = Cursor::new(self.buf, body.clone());
        while !c.at_end() {
            let at = c.pos;
            let (field, wt) = next_tag!(c, M);
            match field {
                1 => {
                    expect_wire_type(wt, LEN, at, "ScopeSpans.scope: wrong wire type")?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    self.scope(r)?;
                    layout.other(at, c.pos);
                }
                2 => {
                    expect_wire_type(wt, LEN, at, "ScopeSpans.spans: wrong wire type")?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    self.span(r, index)?;
                    layout.child(at, c.pos);
                }
                3 => {
                    expect_wire_type(wt, LEN, at, "ScopeSpans.schema_url: wrong wire type")?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    utf8(self.buf, r, at, "ScopeSpans.schema_url: invalid UTF-8")?;
                    layout.other(at, c.pos);
                }
                _ => {
                    c.skip(field, wt, 2).map_err(|f| f.within(M))?;
                    layout.other(at, c.pos);
                }
            }
        }
        if INDEX {
            self.scopes.push(ScopeInfo {
                resource,
                body: body.start as u32..body.end as u32,
                spans: first_span..self.spans.len() as u32,
                layout: layout.finish(body.end),
            });
        }
        Ok(())
    }

    /// `InstrumentationScope` at depth 3.
    fn scope(&mut self, body: Range<usize>) -> Result<(), ScanError> {
        const M: Msg = Msg::Scope;
        let mut c = Cursor::new(self.buf, body);
        while !c.at_end() {
            let at = c.pos;
            let (field, wt) = next_tag!(c, M);
            match field {
                1 => {
                    expect_wire_type(wt, LEN, at, "InstrumentationScope.name: wrong wire type")?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    utf8(self.buf, r, at, "InstrumentationScope.name: invalid UTF-8")?;
                }
                2 => {
                    expect_wire_type(wt, LEN, at, "InstrumentationScope.version: wrong wire type")?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    utf8(
                        self.buf,
                        r,
                        at,
                        "InstrumentationScope.version: invalid UTF-8",
                    )?;
                }
                3 => {
                    expect_wire_type(
                        wt,
                        LEN,
                        at,
                        "InstrumentationScope.attributes: wrong wire type",
                    )?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    self.key_value(r, 4)?;
                }
                4 => {
                    expect_wire_type(
                        wt,
                        VARINT,
                        at,
                        "InstrumentationScope.dropped_attributes_count: wrong wire type",
                    )?;
                    c.varint().map_err(|f| f.within(M))?;
                }
                _ => c.skip(field, wt, 3).map_err(|f| f.within(M))?,
            }
        }
        Ok(())
    }

    /// `Span` at depth 3: indexed, and everything inside validated.
    fn span(&mut self, body: Range<usize>, scope: u32) -> Result<(), ScanError> {
        const M: Msg = Msg::Span;
        let mut st = SpanState {
            info: SpanInfo {
                trace_id: [0; 16],
                span_id: [0; 8],
                parent_span_id: [0; 8],
                start_time_unix_nano: 0,
                end_time_unix_nano: 0,
                status: StatusCode::Unset,
                kind: 0,
                span: body.start as u32..body.end as u32,
                scope,
                trace_state_at: 0,
                trace_state_len: 0,
                trace_state_slot: 0,
                trace_state_header: 0,
                attribute_key_lengths: 0,
            },
            low_end: body.start,
            low_run: true,
            trace_states: 0,
        };
        let mut c = Cursor::new(self.buf, body);
        // Every encoder writes the fields in field-number order. Taking
        // them in that order, each if its one-byte key is next, costs one
        // well-predicted test per field where the loop below pays a jump
        // through a table that mispredicts as the fields change. Each is
        // handled by the same `span_field` as in the loop, with the field
        // and wire type its key byte decodes to, so nothing is accepted or
        // refused differently: this only decides the order of dispatch.
        // `if` takes a field once, `while` every repeat that comes next.
        macro_rules! in_order {
            ($($take:tt $key:literal => $field:literal, $wt:expr;)*) => {$(
                $take c.peek() == Some($key) {
                    let at = c.pos;
                    c.pos += 1;
                    self.span_field(&mut c, &mut st, at, $field, $wt)?;
                }
            )*};
        }
        in_order! {
            if 0x0a => 1, LEN;
            if 0x12 => 2, LEN;
            if 0x1a => 3, LEN;
            if 0x22 => 4, LEN;
            if 0x2a => 5, LEN;
            if 0x30 => 6, VARINT;
            if 0x39 => 7, I64;
            if 0x41 => 8, I64;
            if 0x4a => 9, LEN;
            if 0x50 => 10, VARINT;
            while 0x5a => 11, LEN;
            if 0x60 => 12, VARINT;
            while 0x6a => 13, LEN;
            if 0x70 => 14, VARINT;
            if 0x7a => 15, LEN;
        }
        // Field 16 takes a two-byte key.
        if c.peek2() == Some([0x85, 0x01]) {
            let at = c.pos;
            c.pos += 2;
            self.span_field(&mut c, &mut st, at, 16, I32)?;
        }
        // Whatever else there is, in any order.
        while !c.at_end() {
            let at = c.pos;
            let (field, wt) = next_tag!(c, M);
            self.span_field(&mut c, &mut st, at, field, wt)?;
        }
        let SpanState {
            mut info,
            low_end,
            low_run,
            trace_states,
        } = st;
        if INDEX {
            info.trace_state_slot = (low_end - info.span.start as usize) as u32;
            if !low_run || trace_states > 1 {
                info.trace_state_header = TRACE_STATE_UNUSUAL;
            }
            self.spans.push(info);
        } else {
            self.count += 1;
        }
        Ok(())
    }

    /// One field of a `Span`, its key (at `at`) read: `field` with wire
    /// type `wt`.
    #[inline(always)]
    fn span_field(
        &mut self,
        c: &mut Cursor<'a>,
        st: &mut SpanState,
        at: usize,
        field: u32,
        wt: u8,
    ) -> Result<(), ScanError> {
        const M: Msg = Msg::Span;
        /// The key of `Span.attributes` (field 9, length-delimited).
        const SPAN_ATTRIBUTE_KEY: u8 = 0x4a;
        let buf = self.buf;
        let info = &mut st.info;
        match field {
            1 => {
                expect_wire_type(wt, LEN, at, "Span.trace_id: wrong wire type")?;
                let r = c.len_delimited().map_err(|f| f.within(M))?;
                info.trace_id = id(buf, r, at, "Span.trace_id: must be 16 bytes or empty")?;
                // Fields 1 to 3 as one run at the start of the body (what
                // every encoder writes): it ends at `low_end`. Only their
                // arms track it, so the many other fields cost nothing.
                st.low_run &= at == st.low_end;
                st.low_end = c.pos;
            }
            2 => {
                expect_wire_type(wt, LEN, at, "Span.span_id: wrong wire type")?;
                let r = c.len_delimited().map_err(|f| f.within(M))?;
                info.span_id = id(buf, r, at, "Span.span_id: must be 8 bytes or empty")?;
                st.low_run &= at == st.low_end;
                st.low_end = c.pos;
            }
            3 => {
                expect_wire_type(wt, LEN, at, "Span.trace_state: wrong wire type")?;
                let r = c.len_delimited().map_err(|f| f.within(M))?;
                // The last one wins; an empty one reads as unset.
                (info.trace_state_at, info.trace_state_len) = if r.is_empty() {
                    (0, 0)
                } else {
                    ((r.start - info.span.start as usize) as u32, r.len() as u32)
                };
                // An empty one makes the span unusual (it is not indexed).
                st.trace_states += if r.is_empty() { 2 } else { 1 };
                info.trace_state_header = (r.start - at) as u8;
                utf8(buf, r, at, "Span.trace_state: invalid UTF-8")?;
                st.low_run &= at == st.low_end;
                st.low_end = c.pos;
            }
            4 => {
                expect_wire_type(wt, LEN, at, "Span.parent_span_id: wrong wire type")?;
                let r = c.len_delimited().map_err(|f| f.within(M))?;
                info.parent_span_id =
                    id(buf, r, at, "Span.parent_span_id: must be 8 bytes or empty")?;
            }
            5 => {
                expect_wire_type(wt, LEN, at, "Span.name: wrong wire type")?;
                let r = c.len_delimited().map_err(|f| f.within(M))?;
                utf8(buf, r, at, "Span.name: invalid UTF-8")?;
            }
            6 => {
                expect_wire_type(wt, VARINT, at, "Span.kind: wrong wire type")?;
                let v = c.varint().map_err(|f| f.within(M))? as i32;
                // Open enum: unknown kinds pass through in the bytes but
                // index as unspecified.
                info.kind = if (0..=5).contains(&v) { v as u8 } else { 0 };
            }
            7 => {
                expect_wire_type(wt, I64, at, "Span.start_time_unix_nano: wrong wire type")?;
                info.start_time_unix_nano = c.fixed64().map_err(|f| f.within(M))?;
            }
            8 => {
                expect_wire_type(wt, I64, at, "Span.end_time_unix_nano: wrong wire type")?;
                info.end_time_unix_nano = c.fixed64().map_err(|f| f.within(M))?;
            }
            9 => {
                expect_wire_type(wt, LEN, at, "Span.attributes: wrong wire type")?;
                let r = c.len_delimited().map_err(|f| f.within(M))?;
                info.attribute_key_lengths |= match plain_key_len(&buf[r.clone()]) {
                    Some(key_len) => key_length_bit(key_len),
                    None => {
                        self.key_value_fields(r.clone(), 4)?;
                        if INDEX {
                            key_length_bits(buf, r)
                        } else {
                            0
                        }
                    }
                };
                // Attributes come in a run: take the plain ones without
                // going back through the field dispatch.
                let end = c.end();
                while let Some(&[SPAN_ATTRIBUTE_KEY, len]) = buf.get(c.pos..c.pos + 2) {
                    let body = c.pos + 2..c.pos + 2 + usize::from(len);
                    if len >= 0x80 || body.end > end {
                        break;
                    }
                    let Some(key_len) = plain_key_len(&buf[body.clone()]) else {
                        break;
                    };
                    info.attribute_key_lengths |= key_length_bit(key_len);
                    c.pos = body.end;
                }
            }
            10 | 12 | 14 => {
                expect_wire_type(wt, VARINT, at, "Span: wrong wire type for a dropped count")?;
                c.varint().map_err(|f| f.within(M))?;
            }
            11 => {
                expect_wire_type(wt, LEN, at, "Span.events: wrong wire type")?;
                let r = c.len_delimited().map_err(|f| f.within(M))?;
                self.event(r)?;
            }
            13 => {
                expect_wire_type(wt, LEN, at, "Span.links: wrong wire type")?;
                let r = c.len_delimited().map_err(|f| f.within(M))?;
                self.link(r)?;
            }
            15 => {
                expect_wire_type(wt, LEN, at, "Span.status: wrong wire type")?;
                let r = c.len_delimited().map_err(|f| f.within(M))?;
                // A repeated Status merges into the first, so a code
                // seen earlier survives a later Status without one.
                if let Some(code) = self.status(r)? {
                    info.status = code;
                }
            }
            16 => {
                expect_wire_type(wt, I32, at, "Span.flags: wrong wire type")?;
                c.fixed32().map_err(|f| f.within(M))?;
            }
            _ => c.skip(field, wt, 3).map_err(|f| f.within(M))?,
        }
        Ok(())
    }

    /// `Span.Event` at depth 4.
    fn event(&mut self, body: Range<usize>) -> Result<(), ScanError> {
        const M: Msg = Msg::Event;
        let mut c = Cursor::new(self.buf, body);
        while !c.at_end() {
            let at = c.pos;
            let (field, wt) = next_tag!(c, M);
            match field {
                1 => {
                    expect_wire_type(wt, I64, at, "Span.Event.time_unix_nano: wrong wire type")?;
                    c.fixed64().map_err(|f| f.within(M))?;
                }
                2 => {
                    expect_wire_type(wt, LEN, at, "Span.Event.name: wrong wire type")?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    utf8(self.buf, r, at, "Span.Event.name: invalid UTF-8")?;
                }
                3 => {
                    expect_wire_type(wt, LEN, at, "Span.Event.attributes: wrong wire type")?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    self.key_value(r, 5)?;
                }
                4 => {
                    expect_wire_type(
                        wt,
                        VARINT,
                        at,
                        "Span.Event.dropped_attributes_count: wrong wire type",
                    )?;
                    c.varint().map_err(|f| f.within(M))?;
                }
                _ => c.skip(field, wt, 4).map_err(|f| f.within(M))?,
            }
        }
        Ok(())
    }

    /// `Span.Link` at depth 4.
    fn link(&mut self, body: Range<usize>) -> Result<(), ScanError> {
        const M: Msg = Msg::Link;
        let buf = self.buf;
        let mut c = Cursor::new(buf, body);
        while !c.at_end() {
            let at = c.pos;
            let (field, wt) = next_tag!(c, M);
            match field {
                1 => {
                    expect_wire_type(wt, LEN, at, "Span.Link.trace_id: wrong wire type")?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    id::<16>(buf, r, at, "Span.Link.trace_id: must be 16 bytes or empty")?;
                }
                2 => {
                    expect_wire_type(wt, LEN, at, "Span.Link.span_id: wrong wire type")?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    id::<8>(buf, r, at, "Span.Link.span_id: must be 8 bytes or empty")?;
                }
                3 => {
                    expect_wire_type(wt, LEN, at, "Span.Link.trace_state: wrong wire type")?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    utf8(buf, r, at, "Span.Link.trace_state: invalid UTF-8")?;
                }
                4 => {
                    expect_wire_type(wt, LEN, at, "Span.Link.attributes: wrong wire type")?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    self.key_value(r, 5)?;
                }
                5 => {
                    expect_wire_type(
                        wt,
                        VARINT,
                        at,
                        "Span.Link.dropped_attributes_count: wrong wire type",
                    )?;
                    c.varint().map_err(|f| f.within(M))?;
                }
                6 => {
                    expect_wire_type(wt, I32, at, "Span.Link.flags: wrong wire type")?;
                    c.fixed32().map_err(|f| f.within(M))?;
                }
                _ => c.skip(field, wt, 4).map_err(|f| f.within(M))?,
            }
        }
        Ok(())
    }

    /// `Status` at depth 4; returns the last code it sets, if any.
    fn status(&mut self, body: Range<usize>) -> Result<Option<StatusCode>, ScanError> {
        const M: Msg = Msg::Status;
        let mut code = None;
        let mut c = Cursor::new(self.buf, body);
        while !c.at_end() {
            let at = c.pos;
            let (field, wt) = next_tag!(c, M);
            match field {
                2 => {
                    expect_wire_type(wt, LEN, at, "Status.message: wrong wire type")?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    utf8(self.buf, r, at, "Status.message: invalid UTF-8")?;
                }
                3 => {
                    expect_wire_type(wt, VARINT, at, "Status.code: wrong wire type")?;
                    // Open enum: unknown codes pass through in the bytes but
                    // index as unset.
                    code = Some(match c.varint().map_err(|f| f.within(M))? as i32 {
                        1 => StatusCode::Ok,
                        2 => StatusCode::Error,
                        _ => StatusCode::Unset,
                    });
                }
                // Field 1 (deprecated_code) is reserved: skipped like any unknown.
                _ => c.skip(field, wt, 4).map_err(|f| f.within(M))?,
            }
        }
        Ok(code)
    }

    /// `KeyValue` at `depth`.
    #[inline(always)]
    fn key_value(&mut self, body: Range<usize>, depth: u32) -> Result<(), ScanError> {
        if depth < MAX_DEPTH && key_value_is_plain(&self.buf[body.clone()]) {
            return Ok(());
        }
        self.key_value_fields(body, depth)
    }

    /// `KeyValue` at `depth`, field by field.
    #[inline(never)]
    fn key_value_fields(&mut self, body: Range<usize>, depth: u32) -> Result<(), ScanError> {
        const M: Msg = Msg::KeyValue;
        if depth > MAX_DEPTH {
            return Err(malformed(
                body.start,
                "KeyValue: attributes nested too deep",
            ));
        }
        let mut c = Cursor::new(self.buf, body);
        while !c.at_end() {
            let at = c.pos;
            let (field, wt) = next_tag!(c, M);
            match field {
                1 => {
                    expect_wire_type(wt, LEN, at, "KeyValue.key: wrong wire type")?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    utf8(self.buf, r, at, "KeyValue.key: invalid UTF-8")?;
                }
                2 => {
                    expect_wire_type(wt, LEN, at, "KeyValue.value: wrong wire type")?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    self.any_value(r, depth + 1)?;
                }
                3 => {
                    expect_wire_type(wt, VARINT, at, "KeyValue.key_strindex: wrong wire type")?;
                    c.varint().map_err(|f| f.within(M))?;
                }
                _ => c.skip(field, wt, depth).map_err(|f| f.within(M))?,
            }
        }
        Ok(())
    }

    /// `AnyValue` at `depth`.
    fn any_value(&mut self, body: Range<usize>, depth: u32) -> Result<(), ScanError> {
        const M: Msg = Msg::AnyValue;
        if depth > MAX_DEPTH {
            return Err(malformed(body.start, "AnyValue: values nested too deep"));
        }
        let mut c = Cursor::new(self.buf, body);
        while !c.at_end() {
            let at = c.pos;
            let (field, wt) = next_tag!(c, M);
            match field {
                1 => {
                    expect_wire_type(wt, LEN, at, "AnyValue.string_value: wrong wire type")?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    utf8(self.buf, r, at, "AnyValue.string_value: invalid UTF-8")?;
                }
                2 | 3 | 8 => {
                    expect_wire_type(
                        wt,
                        VARINT,
                        at,
                        "AnyValue: wrong wire type for bool_value/int_value/string_value_strindex",
                    )?;
                    c.varint().map_err(|f| f.within(M))?;
                }
                4 => {
                    expect_wire_type(wt, I64, at, "AnyValue.double_value: wrong wire type")?;
                    c.fixed64().map_err(|f| f.within(M))?;
                }
                5 => {
                    expect_wire_type(wt, LEN, at, "AnyValue.array_value: wrong wire type")?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    self.array_value(r, depth + 1)?;
                }
                6 => {
                    expect_wire_type(wt, LEN, at, "AnyValue.kvlist_value: wrong wire type")?;
                    let r = c.len_delimited().map_err(|f| f.within(M))?;
                    self.key_value_list(r, depth + 1)?;
                }
                7 => {
                    expect_wire_type(wt, LEN, at, "AnyValue.bytes_value: wrong wire type")?;
                    c.len_delimited().map_err(|f| f.within(M))?;
                }
                _ => c.skip(field, wt, depth).map_err(|f| f.within(M))?,
            }
        }
        Ok(())
    }

    /// `ArrayValue` at `depth`.
    fn array_value(&mut self, body: Range<usize>, depth: u32) -> Result<(), ScanError> {
        const M: Msg = Msg::ArrayValue;
        if depth > MAX_DEPTH {
            return Err(malformed(body.start, "ArrayValue: values nested too deep"));
        }
        let mut c = Cursor::new(self.buf, body);
        while !c.at_end() {
            let at = c.pos;
            let (field, wt) = next_tag!(c, M);
            if field == 1 {
                expect_wire_type(wt, LEN, at, "ArrayValue.values: wrong wire type")?;
                let r = c.len_delimited().map_err(|f| f.within(M))?;
                self.any_value(r, depth + 1)?;
            } else {
                c.skip(field, wt, depth).map_err(|f| f.within(M))?;
            }
        }
        Ok(())
    }

    /// `KeyValueList` at `depth`.
    fn key_value_list(&mut self, body: Range<usize>, depth: u32) -> Result<(), ScanError> {
        const M: Msg = Msg::KeyValueList;
        if depth > MAX_DEPTH {
            return Err(malformed(
                body.start,
                "KeyValueList: values nested too deep",
            ));
        }
        let mut c = Cursor::new(self.buf, body);
        while !c.at_end() {
            let at = c.pos;
            let (field, wt) = next_tag!(c, M);
            if field == 1 {
                expect_wire_type(wt, LEN, at, "KeyValueList.values: wrong wire type")?;
                let r = c.len_delimited().map_err(|f| f.within(M))?;
                self.key_value(r, depth + 1)?;
            } else {
                c.skip(field, wt, depth).map_err(|f| f.within(M))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn field_by_field_accepts(kv: &[u8]) -> bool {
        let mut s = Scanner::<true>::new(kv);
        s.key_value_fields(0..kv.len(), 4).is_ok()
    }

    /// The fast path is only an optimization: whatever it accepts, the
    /// general path accepts too, including near-misses built to fool it
    /// (long lengths, multi-byte varints, non-ASCII bytes).
    #[test]
    fn plain_key_value_fast_path_never_accepts_what_the_general_path_refuses() {
        let mut rng = StdRng::seed_from_u64(7);
        let plain: Vec<Vec<u8>> = vec![
            b"\x0a\x01k\x12\x03\x0a\x01v".to_vec(),
            b"\x0a\x01k\x12\x03\x18\x96\x01".to_vec(),
            b"\x0a\x01k\x12\x02\x10\x01".to_vec(),
            b"\x0a\x01k\x12\x09\x21\x00\x00\x00\x00\x00\x00\xf0\x3f".to_vec(),
            b"\x0a\x01k\x12\x04\x3a\x02\xff\x00".to_vec(),
        ];
        let mut accepted = 0;
        for _ in 0..200_000 {
            let mut kv = plain[rng.random_range(0..plain.len())].clone();
            for _ in 0..rng.random_range(0..4) {
                let at = rng.random_range(0..kv.len());
                match rng.random_range(0..4) {
                    0 => kv[at] = rng.random(),
                    1 => kv[at] |= 0x80,
                    2 => kv.insert(at, rng.random()),
                    _ => {
                        kv.remove(at);
                        if kv.is_empty() {
                            kv.push(0x0a);
                        }
                    }
                }
            }
            if key_value_is_plain(&kv) {
                accepted += 1;
                assert!(field_by_field_accepts(&kv), "fast path accepted {kv:02x?}");
            }
        }
        assert!(accepted > 1000);
        for kv in &plain {
            assert!(key_value_is_plain(kv), "{kv:02x?}");
        }
        // Long strings take the fast path too.
        let long = [&b"\x0a\x01k\x12\x42\x0a\x40"[..], &[b'x'; 64]].concat();
        assert!(key_value_is_plain(&long));
        let mut bad = long.clone();
        bad[40] = 0xc3;
        assert!(!key_value_is_plain(&bad));
    }

    #[test]
    fn ascii_check_covers_every_length_and_position() {
        for n in 0..70 {
            let clean = vec![b'a'; n];
            assert!(is_ascii(&clean), "{n}");
            for at in 0..n {
                let mut dirty = clean.clone();
                dirty[at] = 0x80;
                assert!(!is_ascii(&dirty), "len {n}, high byte at {at}");
            }
        }
    }
}
