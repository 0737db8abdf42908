//! The `jaeger.thrift` structs (jaeger-idl), with the required fields the
//! generated Go code insists on (`view.rs` reads them), and their writers.

use super::protocol::{TType, Writer};
use super::view::BatchView;

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
    pub(crate) fn from_i32(v: i32) -> TagType {
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

/// The owned copy of a view; strings are made UTF-8 as OTLP needs them,
/// invalid sequences replaced.
pub(crate) fn to_owned(view: &BatchView<'_>) -> Batch {
    fn string(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }
    let tags = |range: &Option<std::ops::Range<u32>>| {
        range.as_ref().map(|_| {
            view.tags_of(range)
                .iter()
                .map(|t| Tag {
                    key: string(t.key),
                    v_type: t.v_type,
                    value: TagValue {
                        v_str: t.v_str.map(string),
                        v_double: t.v_double,
                        v_bool: t.v_bool,
                        v_long: t.v_long,
                        v_binary: t.v_binary.map(<[u8]>::to_vec),
                    },
                })
                .collect::<Vec<_>>()
        })
    };
    Batch {
        process: Process {
            service_name: string(view.service_name),
            tags: tags(&view.process_tags),
        },
        spans: view
            .spans
            .iter()
            .map(|s| Span {
                trace_id_low: s.trace_id_low,
                trace_id_high: s.trace_id_high,
                span_id: s.span_id,
                parent_span_id: s.parent_span_id,
                operation_name: string(s.operation_name),
                references: s
                    .references
                    .as_ref()
                    .map(|_| view.refs_of(&s.references).to_vec()),
                flags: s.flags,
                start_time: s.start_time,
                duration: s.duration,
                tags: tags(&s.tags),
                logs: s.logs.as_ref().map(|_| {
                    view.logs_of(&s.logs)
                        .iter()
                        .map(|l| Log {
                            timestamp: l.timestamp,
                            fields: tags(&Some(l.fields.clone())).unwrap_or_default(),
                        })
                        .collect()
                }),
            })
            .collect(),
        seq_no: view.seq_no,
    }
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
