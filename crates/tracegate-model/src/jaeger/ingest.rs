//! Jaeger `api_v2` `PostSpansRequest` bytes → OTLP request bytes, written
//! directly (the receiver's hot path): the wire bytes are read into
//! borrowed views (strings and ids stay slices of the request), mapped as
//! `to_otlp.rs` maps owned messages, and the OTLP request is written field
//! by field, then scanned once into a [`SpanBatch`], or not at all when
//! the pipeline reads no spans (`otlp_writer::written_batch`).
//!
//! The output is byte for byte what `to_otlp::request_from_batches`'
//! request encodes to; the property tests (`equivalence.rs`) compare the
//! two. What prost would refuse (a field of the wrong wire type, invalid
//! UTF-8 in a string, a truncated message) is refused here too; duplicate
//! singular fields merge as prost merges them (the last scalar wins,
//! embedded messages merge, repeated fields append).

use std::borrow::Cow;
use std::ops::Range;

use super::otlp_writer::{
    len_field_len, put_fixed64_nonzero, put_len_field, put_nonempty, span_kind, status,
    write_event, write_link, write_resource, write_status, written_batch, Attrs, Val,
};
use super::tags;
use super::to_otlp::JaegerError;
use crate::scan::is_ascii;
use crate::wire::{close, open, put_varint, Cursor, Fault, I64, LEN, VARINT};
use crate::{Indexing, SpanBatch};

/// Why a `PostSpansRequest` was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// Not a valid encoding of the message (what prost's decode refuses).
    #[error("malformed PostSpansRequest: {0}")]
    Malformed(String),
    /// A valid message tracegate cannot map.
    #[error("invalid Jaeger span: {0}")]
    Invalid(#[from] JaegerError),
}

fn malformed(what: &str) -> IngestError {
    IngestError::Malformed(what.to_string())
}

impl From<Fault> for IngestError {
    fn from(fault: Fault) -> Self {
        IngestError::Malformed(format!("{:?} at byte {}", fault.kind, fault.offset))
    }
}

/// An encoded `PostSpansRequest` as an OTLP [`SpanBatch`]: the same
/// batch as decoding it with prost and mapping it with
/// [`span_batch_from_batches`](super::span_batch_from_batches).
pub fn span_batch_from_post_spans(request: &[u8]) -> Result<SpanBatch, IngestError> {
    span_batch_from_post_spans_with(request, Indexing::Eager)
}

/// [`span_batch_from_post_spans`], indexed as `indexing` says. Lazily, the
/// written request is not scanned at all (`otlp_writer::written_batch`).
pub fn span_batch_from_post_spans_with(
    request: &[u8],
    indexing: Indexing,
) -> Result<SpanBatch, IngestError> {
    let (otlp, spans) = write_otlp(request)?;
    match written_batch(otlp, spans, indexing) {
        Some(batch) => Ok(batch),
        // Not expected: the writer writes only what the scanner takes. The
        // owned path decides then, as it always did.
        None => owned_path(request),
    }
}

fn owned_path(request: &[u8]) -> Result<SpanBatch, IngestError> {
    use prost::Message;
    let request = super::proto::PostSpansRequest::decode(request)
        .map_err(|e| IngestError::Malformed(e.to_string()))?;
    Ok(super::span_batch_from_batches(request.batch)?)
}

/// The encoded OTLP `ExportTraceServiceRequest` for an encoded
/// `PostSpansRequest`.
pub fn otlp_from_post_spans(request: &[u8]) -> Result<Vec<u8>, IngestError> {
    write_otlp(request).map(|(otlp, _)| otlp)
}

/// The OTLP request and the number of spans written into it.
fn write_otlp(request: &[u8]) -> Result<(Vec<u8>, usize), IngestError> {
    let mut parsed = Parsed::with_capacity(request.len());
    let mut batch_seen = false;
    let mut c = Cursor::new(request, 0..request.len());
    while !c.at_end() {
        let (field, wire_type) = c.tag()?;
        match field {
            1 => {
                let body = len_field(&mut c, wire_type)?;
                parsed.batch(request, body)?;
                batch_seen = true;
            }
            _ => c.skip(field, wire_type, 0)?,
        }
    }
    let mut out = Vec::with_capacity(request.len() + request.len() / 4 + 64);
    let mut spans = 0;
    if batch_seen && (parsed.batch_process.is_some() || !parsed.spans.is_empty()) {
        spans = parsed.write(&mut out)?;
    }
    Ok((out, spans))
}

fn expect(wire_type: u8, want: u8) -> Result<(), IngestError> {
    if wire_type == want {
        Ok(())
    } else {
        Err(malformed("invalid wire type"))
    }
}

/// A length-delimited field's range, its wire type checked.
fn len_field(c: &mut Cursor<'_>, wire_type: u8) -> Result<Range<usize>, IngestError> {
    expect(wire_type, LEN)?;
    Ok(c.len_delimited()?)
}

/// A varint field's value, its wire type checked.
fn varint_field(c: &mut Cursor<'_>, wire_type: u8) -> Result<u64, IngestError> {
    expect(wire_type, VARINT)?;
    Ok(c.varint()?)
}

/// A string field's bytes, checked to be UTF-8 as prost checks them; kept
/// as bytes ([`Text`]) so the check is the only pass. Nearly every string
/// here is ASCII, which a word at a time confirms.
fn string(buf: &[u8], range: Range<usize>) -> Result<&[u8], IngestError> {
    let bytes = &buf[range];
    if is_ascii(bytes) || std::str::from_utf8(bytes).is_ok() {
        Ok(bytes)
    } else {
        Err(malformed("invalid string value: data is not UTF-8 encoded"))
    }
}

/// A `jaeger.api_v2.KeyValue`, borrowed.
#[derive(Clone, Copy, Default)]
struct Tag<'a> {
    key: &'a [u8],
    v_type: i32,
    v_str: &'a [u8],
    v_bool: bool,
    v_int64: i64,
    v_float64: f64,
    v_binary: &'a [u8],
}

impl Tag<'_> {
    /// As prost's derived `PartialEq` (so a NaN is unequal to itself).
    fn same(&self, other: &Tag<'_>) -> bool {
        self.key == other.key
            && self.v_type == other.v_type
            && self.v_str == other.v_str
            && self.v_bool == other.v_bool
            && self.v_int64 == other.v_int64
            && self.v_float64 == other.v_float64
            && self.v_binary == other.v_binary
    }
}

/// A `Process`: its service name and its tags in an arena.
#[derive(Clone, Default)]
struct Process<'a> {
    service_name: &'a [u8],
    tags: Range<u32>,
}

#[derive(Clone, Copy)]
struct Ref<'a> {
    trace_id: &'a [u8],
    span_id: &'a [u8],
    ref_type: i32,
}

struct Log {
    timestamp: Option<(i64, i32)>,
    fields: Range<u32>,
}

#[derive(Default)]
struct SpanIn<'a> {
    trace_id: &'a [u8],
    span_id: &'a [u8],
    operation_name: &'a [u8],
    refs: Range<u32>,
    flags: u32,
    start_time: Option<(i64, i32)>,
    duration: Option<(i64, i32)>,
    tags: Range<u32>,
    logs: Range<u32>,
    process: Option<Process<'a>>,
    process_id: &'a [u8],
    warnings: bool,
}

impl SpanIn<'_> {
    /// Every field at its default once the process is taken out (the
    /// owned path skips such a span).
    fn is_empty(&self) -> bool {
        self.trace_id.is_empty()
            && self.span_id.is_empty()
            && self.operation_name.is_empty()
            && self.refs.start == self.refs.end
            && self.flags == 0
            && self.start_time.is_none()
            && self.duration.is_none()
            && self.tags.start == self.tags.end
            && self.logs.start == self.logs.end
            && self.process_id.is_empty()
            && !self.warnings
    }
}

/// The request read into borrowed views; each list of a message's
/// children is a range of one arena.
#[derive(Default)]
struct Parsed<'a> {
    batch_process: Option<Process<'a>>,
    /// The batch's process's tags.
    batch_tags: Vec<Tag<'a>>,
    spans: Vec<SpanIn<'a>>,
    span_tags: Vec<Tag<'a>>,
    /// The tags of spans' own processes.
    process_tags: Vec<Tag<'a>>,
    refs: Vec<Ref<'a>>,
    logs: Vec<Log>,
    log_fields: Vec<Tag<'a>>,
}

impl Parsed<'_> {
    /// Lists sized for a request of `len` bytes with typical spans (a tag
    /// takes 20–60 bytes on the wire, a span 300–600), so that most
    /// requests fill them without growing them (each growth copies the
    /// list, and large ones land on fresh pages). Capped, because the
    /// memory limiter counts what is reserved.
    fn with_capacity(len: usize) -> Self {
        let spans = (len / 256).clamp(4, 1024);
        Parsed {
            spans: Vec::with_capacity(spans),
            span_tags: Vec::with_capacity((len / 24).clamp(16, 8192)),
            refs: Vec::with_capacity(spans),
            ..Parsed::default()
        }
    }
}

fn at(v: usize) -> u32 {
    v as u32
}

/// Pushes one occurrence of a repeated field onto `arena` and extends
/// `range` (empty, or ending where the arena ended) to cover it, as a
/// repeated field's later occurrences append to it.
fn append<T>(arena: &mut Vec<T>, item: T, range: &mut Range<u32>) {
    let start = arena.len();
    arena.push(item);
    if range.start == range.end {
        *range = at(start)..at(arena.len());
    } else {
        range.end = at(arena.len());
    }
}

/// Reads a `KeyValue` into a new last element of `arena` and extends
/// `range` to cover it, as [`append`] does. The view is written where it
/// stays: returned by value it was copied through the stack (80 bytes),
/// and reading it back right after the callee's narrower stores stalled.
/// On an error the request is refused, so the element left behind does
/// not matter.
fn append_tag<'a>(
    arena: &mut Vec<Tag<'a>>,
    buf: &'a [u8],
    body: Range<usize>,
    range: &mut Range<u32>,
) -> Result<(), IngestError> {
    arena.push(Tag::default());
    let end = at(arena.len());
    read_tag(buf, body, arena.last_mut().expect("just pushed"))?;
    if range.start == range.end {
        *range = end - 1..end;
    } else {
        range.end = end;
    }
    Ok(())
}

fn read_tag<'a>(buf: &'a [u8], body: Range<usize>, tag: &mut Tag<'a>) -> Result<(), IngestError> {
    let mut c = Cursor::new(buf, body);
    while !c.at_end() {
        let (field, wire_type) = c.tag()?;
        match field {
            1 => {
                let r = len_field(&mut c, wire_type)?;
                tag.key = string(buf, r)?;
            }
            2 => {
                tag.v_type = varint_field(&mut c, wire_type)? as i32;
            }
            3 => {
                let r = len_field(&mut c, wire_type)?;
                tag.v_str = string(buf, r)?;
            }
            4 => {
                tag.v_bool = varint_field(&mut c, wire_type)? != 0;
            }
            5 => {
                tag.v_int64 = varint_field(&mut c, wire_type)? as i64;
            }
            6 => {
                expect(wire_type, I64)?;
                tag.v_float64 = f64::from_bits(c.fixed64()?);
            }
            7 => {
                let r = len_field(&mut c, wire_type)?;
                tag.v_binary = &buf[r];
            }
            _ => c.skip(field, wire_type, 2)?,
        }
    }
    Ok(())
}

/// A `Timestamp` or `Duration` merged into `into`.
fn read_time(
    buf: &[u8],
    body: Range<usize>,
    into: &mut Option<(i64, i32)>,
) -> Result<(), IngestError> {
    let mut t = into.unwrap_or((0, 0));
    let mut c = Cursor::new(buf, body);
    while !c.at_end() {
        let (field, wire_type) = c.tag()?;
        match field {
            1 => {
                t.0 = varint_field(&mut c, wire_type)? as i64;
            }
            2 => {
                t.1 = varint_field(&mut c, wire_type)? as i32;
            }
            _ => c.skip(field, wire_type, 4)?,
        }
    }
    *into = Some(t);
    Ok(())
}

/// A `Process` merged into `into`, its tags appended to `arena`.
fn read_process<'a>(
    buf: &'a [u8],
    body: Range<usize>,
    into: &mut Option<Process<'a>>,
    arena: &mut Vec<Tag<'a>>,
) -> Result<(), IngestError> {
    let mut process = into.take().unwrap_or_default();
    let mut c = Cursor::new(buf, body);
    while !c.at_end() {
        let (field, wire_type) = c.tag()?;
        match field {
            1 => {
                let r = len_field(&mut c, wire_type)?;
                process.service_name = string(buf, r)?;
            }
            2 => {
                let r = len_field(&mut c, wire_type)?;
                append_tag(arena, buf, r, &mut process.tags)?;
            }
            _ => c.skip(field, wire_type, 2)?,
        }
    }
    *into = Some(process);
    Ok(())
}

impl<'a> Parsed<'a> {
    fn batch(&mut self, buf: &'a [u8], body: Range<usize>) -> Result<(), IngestError> {
        let mut c = Cursor::new(buf, body);
        while !c.at_end() {
            let (field, wire_type) = c.tag()?;
            match field {
                1 => {
                    let r = len_field(&mut c, wire_type)?;
                    self.span(buf, r)?;
                }
                2 => {
                    let r = len_field(&mut c, wire_type)?;
                    read_process(buf, r, &mut self.batch_process, &mut self.batch_tags)?;
                }
                _ => c.skip(field, wire_type, 1)?,
            }
        }
        Ok(())
    }

    fn span(&mut self, buf: &'a [u8], body: Range<usize>) -> Result<(), IngestError> {
        let mut span = SpanIn::default();
        let mut c = Cursor::new(buf, body);
        while !c.at_end() {
            let (field, wire_type) = c.tag()?;
            match field {
                1 => {
                    span.trace_id = &buf[len_field(&mut c, wire_type)?];
                }
                2 => {
                    span.span_id = &buf[len_field(&mut c, wire_type)?];
                }
                3 => {
                    let r = len_field(&mut c, wire_type)?;
                    span.operation_name = string(buf, r)?;
                }
                4 => {
                    let r = len_field(&mut c, wire_type)?;
                    append(&mut self.refs, read_ref(buf, r)?, &mut span.refs);
                }
                5 => {
                    span.flags = varint_field(&mut c, wire_type)? as u32;
                }
                6 => {
                    let r = len_field(&mut c, wire_type)?;
                    read_time(buf, r, &mut span.start_time)?;
                }
                7 => {
                    let r = len_field(&mut c, wire_type)?;
                    read_time(buf, r, &mut span.duration)?;
                }
                8 => {
                    let r = len_field(&mut c, wire_type)?;
                    append_tag(&mut self.span_tags, buf, r, &mut span.tags)?;
                }
                9 => {
                    let r = len_field(&mut c, wire_type)?;
                    let log = self.log(buf, r)?;
                    append(&mut self.logs, log, &mut span.logs);
                }
                10 => {
                    let r = len_field(&mut c, wire_type)?;
                    read_process(buf, r, &mut span.process, &mut self.process_tags)?;
                }
                11 => {
                    let r = len_field(&mut c, wire_type)?;
                    span.process_id = string(buf, r)?;
                }
                12 => {
                    let r = len_field(&mut c, wire_type)?;
                    string(buf, r)?;
                    span.warnings = true;
                }
                _ => c.skip(field, wire_type, 3)?,
            }
        }
        self.spans.push(span);
        Ok(())
    }

    fn log(&mut self, buf: &'a [u8], body: Range<usize>) -> Result<Log, IngestError> {
        let mut log = Log {
            timestamp: None,
            fields: 0..0,
        };
        let mut c = Cursor::new(buf, body);
        while !c.at_end() {
            let (field, wire_type) = c.tag()?;
            match field {
                1 => {
                    let r = len_field(&mut c, wire_type)?;
                    read_time(buf, r, &mut log.timestamp)?;
                }
                2 => {
                    let r = len_field(&mut c, wire_type)?;
                    append_tag(&mut self.log_fields, buf, r, &mut log.fields)?;
                }
                _ => c.skip(field, wire_type, 4)?,
            }
        }
        Ok(log)
    }
}

fn read_ref<'a>(buf: &'a [u8], body: Range<usize>) -> Result<Ref<'a>, IngestError> {
    let mut r = Ref {
        trace_id: &[],
        span_id: &[],
        ref_type: 0,
    };
    let mut c = Cursor::new(buf, body);
    while !c.at_end() {
        let (field, wire_type) = c.tag()?;
        match field {
            1 => {
                r.trace_id = &buf[len_field(&mut c, wire_type)?];
            }
            2 => {
                r.span_id = &buf[len_field(&mut c, wire_type)?];
            }
            3 => {
                r.ref_type = varint_field(&mut c, wire_type)? as i32;
            }
            _ => c.skip(field, wire_type, 4)?,
        }
    }
    Ok(r)
}

fn tags_of<'t, 'a>(arena: &'t [Tag<'a>], range: &Range<u32>) -> &'t [Tag<'a>] {
    &arena[range.start as usize..range.end as usize]
}

/// Which process a group of spans shares: `None` for a batch without one.
#[derive(Clone, Copy)]
struct ProcessKey<'p, 'a> {
    service_name: &'a [u8],
    tags: &'p [Tag<'a>],
}

/// A tag's value as an attribute value.
fn val_of<'a>(tag: &Tag<'a>) -> Val<'a> {
    match tag.v_type {
        0 => Val::Str(Cow::Borrowed(tag.v_str)),
        1 => Val::Bool(tag.v_bool),
        2 => Val::Int(tag.v_int64),
        3 => Val::Double(tag.v_float64),
        4 => Val::Bytes(tag.v_binary),
        other => Val::Str(Cow::Owned(
            format!("<Unknown Jaeger TagType \"{other}\">").into_bytes(),
        )),
    }
}

/// Puts each tag but those at the `skip` positions.
fn put_tags<'a>(attrs: &mut Attrs<'a>, tags: &[Tag<'a>], skip: [Option<usize>; 2]) {
    for (i, tag) in tags.iter().enumerate() {
        if skip.contains(&Some(i)) {
            continue;
        }
        attrs.put(Cow::Borrowed(tag.key), val_of(tag));
    }
}

fn same_process(a: &Option<ProcessKey<'_, '_>>, b: &Option<ProcessKey<'_, '_>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.service_name == b.service_name
                && a.tags.len() == b.tags.len()
                && a.tags.iter().zip(b.tags).all(|(x, y)| x.same(y))
        }
        _ => false,
    }
}

/// A big-endian id shorter than `N` is the same number with leading zeros.
fn pad<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    if bytes.len() > N {
        return None;
    }
    let mut id = [0u8; N];
    id[N - bytes.len()..].copy_from_slice(bytes);
    Some(id)
}

fn trace_id(bytes: &[u8]) -> Result<[u8; 16], JaegerError> {
    pad(bytes).ok_or(JaegerError::TraceId(bytes.len()))
}

fn span_id(bytes: &[u8]) -> Result<[u8; 8], JaegerError> {
    pad(bytes).ok_or(JaegerError::SpanId(bytes.len()))
}

fn unix_nanos(t: Option<(i64, i32)>) -> i128 {
    t.map_or(0, |(s, n)| i128::from(s) * 1_000_000_000 + i128::from(n))
}

fn clamp(nanos: i128) -> u64 {
    nanos.clamp(0, i128::from(u64::MAX)) as u64
}

/// Per-request scratch lists, reused from span to span.
#[derive(Default)]
struct Scratch<'a> {
    attrs: Attrs<'a>,
    fields: Attrs<'a>,
}

impl<'a> Parsed<'a> {
    /// Writes the request; returns the number of spans written.
    fn write(&self, out: &mut Vec<u8>) -> Result<usize, IngestError> {
        // Spans grouped by process in first-seen order: the batch's first
        // (spans without their own join it), then each distinct own one.
        let batch_key = self.batch_process.as_ref().map(|p| ProcessKey {
            service_name: p.service_name,
            tags: tags_of(&self.batch_tags, &p.tags),
        });
        let mut groups: Vec<(Option<ProcessKey<'_, 'a>>, Vec<u32>)> = vec![(batch_key, Vec::new())];
        for (i, span) in self.spans.iter().enumerate() {
            let at = match &span.process {
                None => 0,
                Some(own) => {
                    let key = Some(ProcessKey {
                        service_name: own.service_name,
                        tags: tags_of(&self.process_tags, &own.tags),
                    });
                    match groups.iter().position(|(k, _)| same_process(k, &key)) {
                        Some(at) => at,
                        None => {
                            groups.push((key, Vec::new()));
                            groups.len() - 1
                        }
                    }
                }
            };
            groups[at].1.push(i as u32);
        }
        let mut scratch = Scratch::default();
        let mut written = 0;
        for (process, spans) in &groups {
            let rs = open(out, 0x0a, 3);
            self.write_resource(out, process, &mut scratch.attrs);
            written += self.write_scopes(out, spans, &mut scratch)?;
            close(out, rs, 3);
        }
        Ok(written)
    }

    fn write_resource(
        &self,
        out: &mut Vec<u8>,
        process: &Option<ProcessKey<'_, 'a>>,
        attrs: &mut Attrs<'a>,
    ) {
        attrs.clear();
        if let Some(process) =
            process.filter(|p| p.service_name != tags::NO_SERVICE_NAME.as_bytes())
        {
            if !process.service_name.is_empty() {
                attrs.put(
                    Cow::Borrowed(b"service.name"),
                    Val::Str(Cow::Borrowed(process.service_name)),
                );
            }
            put_tags(attrs, process.tags, [None, None]);
            if attrs.get("host.name").is_none() {
                if let Some(hostname) = attrs.get("hostname").cloned() {
                    attrs.remove("hostname");
                    attrs.put(Cow::Borrowed(b"host.name"), hostname);
                }
            }
            if attrs.get("opencensus.exporterversion").is_none() {
                if let Some(version) = attrs.str("jaeger.version") {
                    attrs.remove("jaeger.version");
                    attrs.put(
                        Cow::Borrowed(b"opencensus.exporterversion"),
                        Val::Str(Cow::Owned([&b"Jaeger-"[..], &version].concat())),
                    );
                }
            }
        }
        write_resource(out, attrs);
    }

    /// The spans of one resource, one ScopeSpans per `otel.scope.*` pair;
    /// returns how many were written.
    fn write_scopes(
        &self,
        out: &mut Vec<u8>,
        spans: &[u32],
        scratch: &mut Scratch<'a>,
    ) -> Result<usize, IngestError> {
        // (name, version, the two tags that named them) per span.
        struct Scoped<'a> {
            span: u32,
            name: &'a [u8],
            version: &'a [u8],
            skip: [Option<usize>; 2],
        }
        let mut scoped: Vec<Scoped<'a>> = Vec::with_capacity(spans.len());
        let mut scopes: Vec<(&'a [u8], &'a [u8])> = Vec::new();
        let mut scope_of: Vec<u32> = Vec::with_capacity(spans.len());
        for &i in spans {
            let span = &self.spans[i as usize];
            if span.is_empty() {
                continue;
            }
            let tags = tags_of(&self.span_tags, &span.tags);
            let first = |key: &str, skip: Option<usize>| {
                tags.iter()
                    .enumerate()
                    .find(|(j, t)| Some(*j) != skip && t.key == key.as_bytes())
                    .map(|(j, t)| (j, t.v_str))
            };
            let (name, version, skip) = match first(tags::SCOPE_NAME, None) {
                Some((n, name)) => match first(tags::SCOPE_VERSION, Some(n)) {
                    Some((v, version)) => (name, version, [Some(n), Some(v)]),
                    None => (name, &b""[..], [Some(n), None]),
                },
                None => (&b""[..], &b""[..], [None, None]),
            };
            let scope = match scopes.iter().position(|s| *s == (name, version)) {
                Some(at) => at,
                None => {
                    scopes.push((name, version));
                    scopes.len() - 1
                }
            };
            scope_of.push(scope as u32);
            scoped.push(Scoped {
                span: i,
                name,
                version,
                skip,
            });
        }
        for (s, &(name, version)) in scopes.iter().enumerate() {
            let ss = open(out, 0x12, 3);
            let scope_len = (if name.is_empty() {
                0
            } else {
                len_field_len(name.len())
            }) + (if version.is_empty() {
                0
            } else {
                len_field_len(version.len())
            });
            out.push(0x0a);
            put_varint(out, scope_len as u64);
            put_nonempty(out, 0x0a, name);
            put_nonempty(out, 0x12, version);
            for (entry, _) in scoped
                .iter()
                .zip(&scope_of)
                .filter(|(_, &of)| of as usize == s)
            {
                debug_assert_eq!((entry.name, entry.version), (name, version));
                self.write_span(out, &self.spans[entry.span as usize], entry.skip, scratch)?;
            }
            close(out, ss, 3);
        }
        Ok(scoped.len())
    }

    fn write_span(
        &self,
        out: &mut Vec<u8>,
        span: &SpanIn<'a>,
        skip: [Option<usize>; 2],
        scratch: &mut Scratch<'a>,
    ) -> Result<(), IngestError> {
        let own_trace_id = trace_id(span.trace_id)?;
        let start = unix_nanos(span.start_time);
        let end = start + unix_nanos(span.duration);
        let refs = &self.refs[span.refs.start as usize..span.refs.end as usize];

        // The parent: the first CHILD_OF reference within the same trace,
        // else the first FOLLOWS_FROM one (to_otlp.rs says why).
        let mut child_of = None;
        let mut follows_from = None;
        for r in refs {
            if trace_id(r.trace_id)? != own_trace_id {
                continue;
            }
            if r.ref_type == 0 {
                child_of = Some(span_id(r.span_id)?);
                break;
            }
            if follows_from.is_none() && r.ref_type == 1 {
                follows_from = Some(span_id(r.span_id)?);
            }
        }
        let parent = child_of.or(follows_from).unwrap_or([0u8; 8]);
        let has_parent = parent.iter().any(|b| *b != 0);

        let attrs = &mut scratch.attrs;
        attrs.clear();
        put_tags(attrs, tags_of(&self.span_tags, &span.tags), skip);
        let mut kind = 0;
        if let Some(tag) = attrs.str(tags::SPAN_KIND) {
            kind = span_kind(&tag);
            attrs.remove(tags::SPAN_KIND);
        }
        let status = status(attrs, kind);
        let trace_state = attrs.str(tags::TRACE_STATE).unwrap_or_default();
        attrs.remove(tags::TRACE_STATE);

        // Links are checked before the span id, as the owned path checks.
        let mut link_ids: [([u8; 16], [u8; 8], bool); 4] = [([0; 16], [0; 8], false); 4];
        let mut more_links: Vec<([u8; 16], [u8; 8], bool)> = Vec::new();
        let mut links = 0usize;
        for r in refs {
            let ref_span_id = span_id(r.span_id)?;
            let child_of = r.ref_type == 0;
            if child_of && ref_span_id == parent {
                continue;
            }
            let link = (trace_id(r.trace_id)?, ref_span_id, child_of);
            if links < link_ids.len() {
                link_ids[links] = link;
            } else {
                more_links.push(link);
            }
            links += 1;
        }
        let own_span_id = span_id(span.span_id)?;

        let s = open(out, 0x12, 2);
        put_len_field(out, 0x0a, &own_trace_id);
        put_len_field(out, 0x12, &own_span_id);
        put_nonempty(out, 0x1a, &trace_state);
        if has_parent {
            put_len_field(out, 0x22, &parent);
        }
        put_nonempty(out, 0x2a, span.operation_name);
        if kind != 0 {
            out.push(0x30);
            put_varint(out, kind as u64);
        }
        put_fixed64_nonzero(out, 0x39, clamp(start));
        put_fixed64_nonzero(out, 0x41, clamp(end));
        attrs.write(out, 0x4a);
        for log in &self.logs[span.logs.start as usize..span.logs.end as usize] {
            let fields = &mut scratch.fields;
            fields.clear();
            put_tags(fields, tags_of(&self.log_fields, &log.fields), [None, None]);
            write_event(out, clamp(unix_nanos(log.timestamp)), fields);
        }
        for (trace, span_id, child_of) in link_ids[..links.min(link_ids.len())]
            .iter()
            .chain(&more_links)
        {
            write_link(out, trace, span_id, *child_of);
        }
        write_status(out, status);
        close(out, s, 2);
        Ok(())
    }
}
