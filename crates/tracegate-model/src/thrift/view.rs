//! The `jaeger.thrift` structs read as borrowed views: strings and binaries
//! stay slices of the packet, and every list is a range of one arena per
//! element type, so reading a batch allocates a handful of vectors, not one
//! per tag. The owned model (`model.rs`) is built from a view; the direct
//! OTLP writer (`ingest.rs`) writes from one.
//!
//! The readers enforce what the generated Go code does: required fields,
//! fields of an unexpected type skipped, a list of the wrong element type
//! refused.

use std::ops::Range;

use super::model::{SpanRef, TagType};
use super::protocol::{Reader, TType};
use super::ThriftError;

/// A `Tag`, borrowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TagView<'a> {
    pub key: &'a [u8],
    pub v_type: TagType,
    pub v_str: Option<&'a [u8]>,
    pub v_double: Option<f64>,
    pub v_bool: Option<bool>,
    pub v_long: Option<i64>,
    pub v_binary: Option<&'a [u8]>,
}

/// A `Log`: its fields are a range of [`BatchView::tags`].
#[derive(Debug, Clone)]
pub(crate) struct LogView {
    pub timestamp: i64,
    pub fields: Range<u32>,
}

/// A `Span`: its lists are ranges of the batch's arenas, `None` when absent.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpanView<'a> {
    pub trace_id_low: i64,
    pub trace_id_high: i64,
    pub span_id: i64,
    pub parent_span_id: i64,
    pub operation_name: &'a [u8],
    pub references: Option<Range<u32>>,
    pub flags: i32,
    pub start_time: i64,
    pub duration: i64,
    pub tags: Option<Range<u32>>,
    pub logs: Option<Range<u32>>,
}

impl SpanView<'_> {
    /// Equal to the blank span, which the collector skips.
    pub fn is_blank(&self) -> bool {
        self.trace_id_low == 0
            && self.trace_id_high == 0
            && self.span_id == 0
            && self.parent_span_id == 0
            && self.operation_name.is_empty()
            && self.references.is_none()
            && self.flags == 0
            && self.start_time == 0
            && self.duration == 0
            && self.tags.is_none()
            && self.logs.is_none()
    }
}

/// A `Batch` and the arenas its lists point into.
#[derive(Debug, Default)]
pub(crate) struct BatchView<'a> {
    pub service_name: &'a [u8],
    pub process_tags: Option<Range<u32>>,
    pub spans: Vec<SpanView<'a>>,
    pub seq_no: Option<i64>,
    /// Process tags, span tags and log fields.
    pub tags: Vec<TagView<'a>>,
    pub refs: Vec<SpanRef>,
    pub logs: Vec<LogView>,
}

fn slice<'t, T>(arena: &'t [T], range: &Option<Range<u32>>) -> &'t [T] {
    range
        .as_ref()
        .map_or(&[], |r| &arena[r.start as usize..r.end as usize])
}

impl<'a> BatchView<'a> {
    pub fn tags_of(&self, range: &Option<Range<u32>>) -> &[TagView<'a>] {
        slice(&self.tags, range)
    }
    pub fn refs_of(&self, range: &Option<Range<u32>>) -> &[SpanRef] {
        slice(&self.refs, range)
    }
    pub fn logs_of(&self, range: &Option<Range<u32>>) -> &[LogView] {
        slice(&self.logs, range)
    }
}

fn at(v: usize) -> u32 {
    // Every element takes at least one byte of a packet or body that is
    // far smaller than 4 GiB.
    v as u32
}

/// Reads a list header and checks its element type (a list of another
/// type is read past, then refused); returns the declared count, which
/// the reader has already bounded by the bytes left.
fn list_of_structs<'a, R: Reader<'a>>(r: &mut R) -> Result<usize, ThriftError> {
    let (t, n) = r.list()?;
    if t != TType::Struct {
        for _ in 0..n {
            r.skip(t)?;
        }
        return Err(ThriftError::Invalid(format!(
            "list of {t:?} where {:?} was expected",
            TType::Struct
        )));
    }
    Ok(n)
}

/// Runs `on_field` for every field of a struct; fields it does not take
/// (it returns `false`) are skipped, as generated code skips unknown ids
/// and ids of the wrong type.
fn read_struct<'a, R: Reader<'a>>(
    r: &mut R,
    mut on_field: impl FnMut(&mut R, i16, TType) -> Result<bool, ThriftError>,
) -> Result<(), ThriftError> {
    r.struct_begin()?;
    while let Some((id, t)) = r.field()? {
        if !on_field(r, id, t)? {
            r.skip(t)?;
        }
    }
    r.struct_end();
    Ok(())
}

fn require<T>(value: Option<T>, name: &'static str) -> Result<T, ThriftError> {
    value.ok_or(ThriftError::MissingField(name))
}

fn read_tag<'a, R: Reader<'a>>(r: &mut R) -> Result<TagView<'a>, ThriftError> {
    let (mut key, mut v_type) = (None, None);
    let mut tag = TagView {
        key: &[],
        v_type: TagType::String,
        v_str: None,
        v_double: None,
        v_bool: None,
        v_long: None,
        v_binary: None,
    };
    read_struct(r, |r, id, t| {
        match (id, t) {
            (1, TType::Binary) => key = Some(r.binary()?),
            (2, TType::I32) => v_type = Some(TagType::from_i32(r.i32()?)),
            (3, TType::Binary) => tag.v_str = Some(r.binary()?),
            (4, TType::Double) => tag.v_double = Some(r.double()?),
            (5, TType::Bool) => tag.v_bool = Some(r.bool()?),
            (6, TType::I64) => tag.v_long = Some(r.i64()?),
            (7, TType::Binary) => tag.v_binary = Some(r.binary()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    tag.key = require(key, "Tag.key")?;
    tag.v_type = require(v_type, "Tag.vType")?;
    Ok(tag)
}

fn read_span_ref<'a, R: Reader<'a>>(r: &mut R) -> Result<SpanRef, ThriftError> {
    let (mut ref_type, mut low, mut high, mut span_id) = (None, None, None, None);
    read_struct(r, |r, id, t| {
        match (id, t) {
            (1, TType::I32) => ref_type = Some(r.i32()?),
            (2, TType::I64) => low = Some(r.i64()?),
            (3, TType::I64) => high = Some(r.i64()?),
            (4, TType::I64) => span_id = Some(r.i64()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(SpanRef {
        ref_type: require(ref_type, "SpanRef.refType")?,
        trace_id_low: require(low, "SpanRef.traceIdLow")?,
        trace_id_high: require(high, "SpanRef.traceIdHigh")?,
        span_id: require(span_id, "SpanRef.spanId")?,
    })
}

/// Reads a batch; what it holds is the owned `Batch`'s, field for field.
/// `input_len` is the packet's or body's length: the tag arena is sized
/// from it for typical spans (a tag takes 35-60 bytes on the wire), so
/// that most batches fill it without growing it (each growth copied the
/// whole arena, 100 bytes a tag, often onto fresh pages). Capped, because
/// the memory limiter counts what is reserved.
pub(crate) fn read_batch<'a, R: Reader<'a>>(
    r: &mut R,
    input_len: usize,
) -> Result<BatchView<'a>, ThriftError> {
    let mut batch = BatchView::default();
    batch.tags.reserve((input_len / 40).clamp(16, 8192));
    let (mut process, mut spans) = (None, false);
    read_struct(r, |r, id, t| {
        match (id, t) {
            (1, TType::Struct) => process = Some(batch.read_process(r)?),
            (2, TType::List) => {
                let n = list_of_structs(r)?;
                batch.spans.clear();
                batch.spans.reserve(n.min(1024));
                for _ in 0..n {
                    let span = batch.read_span(r)?;
                    batch.spans.push(span);
                }
                spans = true;
            }
            (3, TType::I64) => batch.seq_no = Some(r.i64()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let (service_name, process_tags) = require(process, "Batch.process")?;
    require(spans.then_some(()), "Batch.spans")?;
    batch.service_name = service_name;
    batch.process_tags = process_tags;
    Ok(batch)
}

impl<'a> BatchView<'a> {
    fn read_tags<R: Reader<'a>>(&mut self, r: &mut R) -> Result<Range<u32>, ThriftError> {
        read_list(r, &mut self.tags, read_tag)
    }

    fn read_refs<R: Reader<'a>>(&mut self, r: &mut R) -> Result<Range<u32>, ThriftError> {
        read_list(r, &mut self.refs, read_span_ref)
    }

    fn read_logs<R: Reader<'a>>(&mut self, r: &mut R) -> Result<Range<u32>, ThriftError> {
        // A log's fields go to the tag arena, never to the logs', so one
        // span's logs stay contiguous.
        read_list(r, &mut self.logs, |r| read_log(r, &mut self.tags))
    }
}

/// A list of structs appended to `arena`; returns where it went.
fn read_list<'a, R: Reader<'a>, T>(
    r: &mut R,
    arena: &mut Vec<T>,
    mut read: impl FnMut(&mut R) -> Result<T, ThriftError>,
) -> Result<Range<u32>, ThriftError> {
    let n = list_of_structs(r)?;
    let start = arena.len();
    for _ in 0..n {
        let element = read(r)?;
        arena.push(element);
    }
    Ok(at(start)..at(arena.len()))
}

fn read_log<'a, R: Reader<'a>>(
    r: &mut R,
    tags: &mut Vec<TagView<'a>>,
) -> Result<LogView, ThriftError> {
    let (mut timestamp, mut fields) = (None, None);
    read_struct(r, |r, id, t| {
        match (id, t) {
            (1, TType::I64) => timestamp = Some(r.i64()?),
            (2, TType::List) => fields = Some(read_list(r, tags, read_tag)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(LogView {
        timestamp: require(timestamp, "Log.timestamp")?,
        fields: require(fields, "Log.fields")?,
    })
}

impl<'a> BatchView<'a> {
    fn read_span<R: Reader<'a>>(&mut self, r: &mut R) -> Result<SpanView<'a>, ThriftError> {
        let mut span = SpanView::default();
        let mut seen = [false; 8];
        read_struct(r, |r, id, t| {
            match (id, t) {
                (1, TType::I64) => span.trace_id_low = r.i64()?,
                (2, TType::I64) => span.trace_id_high = r.i64()?,
                (3, TType::I64) => span.span_id = r.i64()?,
                (4, TType::I64) => span.parent_span_id = r.i64()?,
                (5, TType::Binary) => span.operation_name = r.binary()?,
                (6, TType::List) => {
                    span.references = Some(self.read_refs(r)?);
                    return Ok(true);
                }
                (7, TType::I32) => span.flags = r.i32()?,
                (8, TType::I64) => span.start_time = r.i64()?,
                (9, TType::I64) => span.duration = r.i64()?,
                (10, TType::List) => {
                    span.tags = Some(self.read_tags(r)?);
                    return Ok(true);
                }
                (11, TType::List) => {
                    span.logs = Some(self.read_logs(r)?);
                    return Ok(true);
                }
                _ => return Ok(false),
            }
            // Fields 1-5 and 7-9 are required.
            let slot = if id <= 5 { id - 1 } else { id - 2 };
            seen[slot as usize] = true;
            Ok(true)
        })?;
        const REQUIRED: [&str; 8] = [
            "Span.traceIdLow",
            "Span.traceIdHigh",
            "Span.spanId",
            "Span.parentSpanId",
            "Span.operationName",
            "Span.flags",
            "Span.startTime",
            "Span.duration",
        ];
        if let Some(missing) = seen.iter().position(|s| !s) {
            return Err(ThriftError::MissingField(REQUIRED[missing]));
        }
        Ok(span)
    }

    fn read_process<R: Reader<'a>>(
        &mut self,
        r: &mut R,
    ) -> Result<(&'a [u8], Option<Range<u32>>), ThriftError> {
        let (mut service_name, mut tags) = (None, None);
        read_struct(r, |r, id, t| {
            match (id, t) {
                (1, TType::Binary) => service_name = Some(r.binary()?),
                (2, TType::List) => tags = Some(self.read_tags(r)?),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok((require(service_name, "Process.serviceName")?, tags))
    }
}
