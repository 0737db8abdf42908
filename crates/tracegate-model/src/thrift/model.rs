//! The `jaeger.thrift` structs (jaeger-idl), with the required fields the
//! generated Go code insists on, and their readers and writers.

use super::protocol::{Reader, TType, Writer};
use super::ThriftError;

/// `TagType`; a value outside the enum is kept as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagType {
    String,
    Double,
    Bool,
    Long,
    Binary,
    Unknown(i32),
}

impl TagType {
    fn from_i32(v: i32) -> TagType {
        match v {
            0 => TagType::String,
            1 => TagType::Double,
            2 => TagType::Bool,
            3 => TagType::Long,
            4 => TagType::Binary,
            other => TagType::Unknown(other),
        }
    }

    fn to_i32(self) -> i32 {
        match self {
            TagType::String => 0,
            TagType::Double => 1,
            TagType::Bool => 2,
            TagType::Long => 3,
            TagType::Binary => 4,
            TagType::Unknown(v) => v,
        }
    }
}

/// The optional value fields of a `Tag`; the one named by `v_type` is the
/// tag's value, a missing one reads as its zero value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TagValue {
    pub v_str: Option<String>,
    pub v_double: Option<f64>,
    pub v_bool: Option<bool>,
    pub v_long: Option<i64>,
    pub v_binary: Option<Vec<u8>>,
}

/// `Tag { 1: key, 2: vType, 3..7: values }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    pub key: String,
    pub v_type: TagType,
    pub value: TagValue,
}

impl Tag {
    pub fn string(key: &str, v: &str) -> Tag {
        Tag {
            key: key.into(),
            v_type: TagType::String,
            value: TagValue {
                v_str: Some(v.into()),
                ..Default::default()
            },
        }
    }
    pub fn long(key: &str, v: i64) -> Tag {
        Tag {
            key: key.into(),
            v_type: TagType::Long,
            value: TagValue {
                v_long: Some(v),
                ..Default::default()
            },
        }
    }
    pub fn double(key: &str, v: f64) -> Tag {
        Tag {
            key: key.into(),
            v_type: TagType::Double,
            value: TagValue {
                v_double: Some(v),
                ..Default::default()
            },
        }
    }
    pub fn bool(key: &str, v: bool) -> Tag {
        Tag {
            key: key.into(),
            v_type: TagType::Bool,
            value: TagValue {
                v_bool: Some(v),
                ..Default::default()
            },
        }
    }
    pub fn binary(key: &str, v: &[u8]) -> Tag {
        Tag {
            key: key.into(),
            v_type: TagType::Binary,
            value: TagValue {
                v_binary: Some(v.to_vec()),
                ..Default::default()
            },
        }
    }
}

/// `Log { 1: timestamp (µs), 2: fields }`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Log {
    pub timestamp: i64,
    pub fields: Vec<Tag>,
}

/// `SpanRef { 1: refType (0 CHILD_OF, 1 FOLLOWS_FROM), 2: traceIdLow,
/// 3: traceIdHigh, 4: spanId }`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanRef {
    pub ref_type: i32,
    pub trace_id_low: i64,
    pub trace_id_high: i64,
    pub span_id: i64,
}

/// `Span`: times in microseconds; optional lists are `None` when absent
/// (the collector skips a span equal to the blank one, absent lists
/// included).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Span {
    pub trace_id_low: i64,
    pub trace_id_high: i64,
    pub span_id: i64,
    pub parent_span_id: i64,
    pub operation_name: String,
    pub references: Option<Vec<SpanRef>>,
    pub flags: i32,
    pub start_time: i64,
    pub duration: i64,
    pub tags: Option<Vec<Tag>>,
    pub logs: Option<Vec<Log>>,
}

/// `Process { 1: serviceName, 2: tags }`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Process {
    pub service_name: String,
    pub tags: Option<Vec<Tag>>,
}

/// `Batch { 1: process, 2: spans, 3: seqNo, 4: stats }`; the client
/// statistics are read past.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub process: Process,
    pub spans: Vec<Span>,
    pub seq_no: Option<i64>,
}

/// Reads a list of `T`s, growing the vector as elements arrive rather than
/// trusting the declared count.
fn read_list<'a, R: Reader<'a>, T>(
    r: &mut R,
    elem: TType,
    mut read: impl FnMut(&mut R) -> Result<T, ThriftError>,
) -> Result<Vec<T>, ThriftError> {
    let (t, n) = r.list()?;
    if t != elem {
        for _ in 0..n {
            r.skip(t)?;
        }
        return Err(ThriftError::Invalid(format!(
            "list of {t:?} where {elem:?} was expected"
        )));
    }
    let mut out = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        out.push(read(r)?);
    }
    Ok(out)
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

fn read_tag<'a, R: Reader<'a>>(r: &mut R) -> Result<Tag, ThriftError> {
    let (mut key, mut v_type, mut value) = (None, None, TagValue::default());
    read_struct(r, |r, id, t| {
        match (id, t) {
            (1, TType::Binary) => key = Some(r.string()?),
            (2, TType::I32) => v_type = Some(TagType::from_i32(r.i32()?)),
            (3, TType::Binary) => value.v_str = Some(r.string()?),
            (4, TType::Double) => value.v_double = Some(r.double()?),
            (5, TType::Bool) => value.v_bool = Some(r.bool()?),
            (6, TType::I64) => value.v_long = Some(r.i64()?),
            (7, TType::Binary) => value.v_binary = Some(r.binary()?.to_vec()),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(Tag {
        key: require(key, "Tag.key")?,
        v_type: require(v_type, "Tag.vType")?,
        value,
    })
}

fn read_log<'a, R: Reader<'a>>(r: &mut R) -> Result<Log, ThriftError> {
    let (mut timestamp, mut fields) = (None, None);
    read_struct(r, |r, id, t| {
        match (id, t) {
            (1, TType::I64) => timestamp = Some(r.i64()?),
            (2, TType::List) => fields = Some(read_list(r, TType::Struct, read_tag)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(Log {
        timestamp: require(timestamp, "Log.timestamp")?,
        fields: require(fields, "Log.fields")?,
    })
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

fn read_span<'a, R: Reader<'a>>(r: &mut R) -> Result<Span, ThriftError> {
    let mut span = Span::default();
    let mut seen = [false; 8];
    read_struct(r, |r, id, t| {
        match (id, t) {
            (1, TType::I64) => span.trace_id_low = r.i64()?,
            (2, TType::I64) => span.trace_id_high = r.i64()?,
            (3, TType::I64) => span.span_id = r.i64()?,
            (4, TType::I64) => span.parent_span_id = r.i64()?,
            (5, TType::Binary) => span.operation_name = r.string()?,
            (6, TType::List) => {
                span.references = Some(read_list(r, TType::Struct, read_span_ref)?);
                return Ok(true);
            }
            (7, TType::I32) => span.flags = r.i32()?,
            (8, TType::I64) => span.start_time = r.i64()?,
            (9, TType::I64) => span.duration = r.i64()?,
            (10, TType::List) => {
                span.tags = Some(read_list(r, TType::Struct, read_tag)?);
                return Ok(true);
            }
            (11, TType::List) => {
                span.logs = Some(read_list(r, TType::Struct, read_log)?);
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

fn read_process<'a, R: Reader<'a>>(r: &mut R) -> Result<Process, ThriftError> {
    let (mut service_name, mut tags) = (None, None);
    read_struct(r, |r, id, t| {
        match (id, t) {
            (1, TType::Binary) => service_name = Some(r.string()?),
            (2, TType::List) => tags = Some(read_list(r, TType::Struct, read_tag)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(Process {
        service_name: require(service_name, "Process.serviceName")?,
        tags,
    })
}

pub(crate) fn read_batch<'a, R: Reader<'a>>(r: &mut R) -> Result<Batch, ThriftError> {
    let (mut process, mut spans, mut seq_no) = (None, None, None);
    read_struct(r, |r, id, t| {
        match (id, t) {
            (1, TType::Struct) => process = Some(read_process(r)?),
            (2, TType::List) => spans = Some(read_list(r, TType::Struct, read_span)?),
            (3, TType::I64) => seq_no = Some(r.i64()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(Batch {
        process: require(process, "Batch.process")?,
        spans: require(spans, "Batch.spans")?,
        seq_no,
    })
}

// ----------------------------------------------------------------- writing

fn write_tags<W: Writer>(w: &mut W, id: i16, tags: &[Tag]) {
    w.field(id, TType::List);
    w.list(TType::Struct, tags.len());
    for tag in tags {
        w.struct_begin();
        w.field(1, TType::Binary);
        w.binary(tag.key.as_bytes());
        w.field(2, TType::I32);
        w.i32(tag.v_type.to_i32());
        let v = &tag.value;
        if let Some(s) = &v.v_str {
            w.field(3, TType::Binary);
            w.binary(s.as_bytes());
        }
        if let Some(d) = v.v_double {
            w.field(4, TType::Double);
            w.double(d);
        }
        if let Some(b) = v.v_bool {
            w.field_bool(5, b);
        }
        if let Some(l) = v.v_long {
            w.field(6, TType::I64);
            w.i64(l);
        }
        if let Some(b) = &v.v_binary {
            w.field(7, TType::Binary);
            w.binary(b);
        }
        w.stop();
        w.struct_end();
    }
}

pub(crate) fn write_batch<W: Writer>(w: &mut W, batch: &Batch) {
    w.struct_begin();
    w.field(1, TType::Struct);
    w.struct_begin();
    w.field(1, TType::Binary);
    w.binary(batch.process.service_name.as_bytes());
    if let Some(tags) = &batch.process.tags {
        write_tags(w, 2, tags);
    }
    w.stop();
    w.struct_end();

    w.field(2, TType::List);
    w.list(TType::Struct, batch.spans.len());
    for span in &batch.spans {
        w.struct_begin();
        for (id, v) in [
            (1, span.trace_id_low),
            (2, span.trace_id_high),
            (3, span.span_id),
            (4, span.parent_span_id),
        ] {
            w.field(id, TType::I64);
            w.i64(v);
        }
        w.field(5, TType::Binary);
        w.binary(span.operation_name.as_bytes());
        if let Some(refs) = &span.references {
            w.field(6, TType::List);
            w.list(TType::Struct, refs.len());
            for r in refs {
                w.struct_begin();
                w.field(1, TType::I32);
                w.i32(r.ref_type);
                for (id, v) in [(2, r.trace_id_low), (3, r.trace_id_high), (4, r.span_id)] {
                    w.field(id, TType::I64);
                    w.i64(v);
                }
                w.stop();
                w.struct_end();
            }
        }
        w.field(7, TType::I32);
        w.i32(span.flags);
        w.field(8, TType::I64);
        w.i64(span.start_time);
        w.field(9, TType::I64);
        w.i64(span.duration);
        if let Some(tags) = &span.tags {
            write_tags(w, 10, tags);
        }
        if let Some(logs) = &span.logs {
            w.field(11, TType::List);
            w.list(TType::Struct, logs.len());
            for log in logs {
                w.struct_begin();
                w.field(1, TType::I64);
                w.i64(log.timestamp);
                write_tags(w, 2, &log.fields);
                w.stop();
                w.struct_end();
            }
        }
        w.stop();
        w.struct_end();
    }
    if let Some(seq) = batch.seq_no {
        w.field(3, TType::I64);
        w.i64(seq);
    }
    w.stop();
    w.struct_end();
}
