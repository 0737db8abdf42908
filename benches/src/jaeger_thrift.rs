//! Jaeger thrift request templates: one service's spans of a round as a
//! jaeger-client sends them, a `jaeger.thrift` `Batch` in the binary
//! protocol (the HTTP sender's `POST /api/traces` body) or an agent
//! `emitBatch` call in the compact protocol (the UDP sender's packet to
//! port 6831).
//!
//! The spans are the api_v2 template's (`jaeger.rs`: the OTLP spans as
//! tracegate-model maps them to Jaeger), carried over field by field as
//! the thrift model has them (times in microseconds, ids as signed 64-bit
//! halves, the parent in `parentSpanId`), and encoded with
//! tracegate-model's own thrift writers. As for api_v2, each span is kept
//! as its own encoding, once per class when its bytes depend on the class.
//! What changes per round are the trace ids (the span's own, and the linked
//! trace's in a reference) and the root's digits. In the binary protocol
//! an id half is 8 fixed bytes; in the compact protocol it is a zigzag
//! varint whose length varies, so a span is written as its bytes with
//! *holes*: the bytes between holes are copied, each hole written anew.

use std::ops::Range;

use bytes::{BufMut, BytesMut};
use tracegate_model::jaeger::proto;
use tracegate_model::thrift;

use crate::jaeger::{batches_by_class, find_all, range};
use crate::template::{link_target, placeholder, Class, Digits, Layout, Template};

/// The thrift protocol a template is encoded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// A bare `Batch`, binary protocol (`POST /api/traces`).
    Binary,
    /// A oneway `emitBatch` message, compact protocol (agent UDP 6831).
    Compact,
}

impl Wire {
    fn encode(self, batch: &thrift::Batch) -> Vec<u8> {
        match self {
            Wire::Binary => thrift::encode_batch_binary(batch),
            Wire::Compact => thrift::encode_agent_compact(batch),
        }
    }

    /// Bytes after the spans list: the batch's stop (and the call
    /// arguments' stop in an `emitBatch` message).
    fn trailer_len(self) -> usize {
        match self {
            Wire::Binary => 1,
            Wire::Compact => 2,
        }
    }

    /// Bytes between an id's low half and its high half: the high half's
    /// field header (type and 16-bit id in binary; one byte holding the
    /// field id delta and the type in compact).
    fn gap(self) -> usize {
        match self {
            Wire::Binary => 3,
            Wire::Compact => 1,
        }
    }

    fn put_i64(self, v: i64, out: &mut impl BufMut) {
        match self {
            Wire::Binary => out.put_i64(v),
            Wire::Compact => {
                let mut z = ((v << 1) ^ (v >> 63)) as u64;
                while z >= 0x80 {
                    out.put_u8(z as u8 | 0x80);
                    z >>= 7;
                }
                out.put_u8(z as u8);
            }
        }
    }

    fn i64_bytes(self, v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        self.put_i64(v, &mut out);
        out
    }
}

/// What a hole of a span's bytes is filled with.
#[derive(Clone, Copy)]
enum Fill {
    /// A trace id's high (first 8 bytes) or low half: of the span's own
    /// trace, or of the trace its reference links to.
    High {
        link: bool,
    },
    Low {
        link: bool,
    },
    Digits(Digits),
}

#[derive(Clone, Copy)]
struct Hole {
    /// Where it starts in the span's bytes.
    at: u32,
    /// Its length there (the placeholder's encoding).
    len: u32,
    fill: Fill,
}

#[derive(Clone)]
struct Encoded {
    /// The span's struct in `ThriftChunks::bytes`.
    bytes: Range<u32>,
    /// Its holes in `ThriftChunks::holes`, in order.
    holes: Range<u32>,
}

struct SpanChunk {
    trace: u32,
    link: u32,
    /// Indexed by `Class as usize`.
    by_class: [Encoded; 3],
}

/// One value draw of one part.
pub struct ThriftChunks {
    wire: Wire,
    spans: Vec<SpanChunk>,
    bytes: Vec<u8>,
    holes: Vec<Hole>,
    /// Everything before the first span: the batch's process and the
    /// spans list's header with its count (and the call's envelope).
    header: Vec<u8>,
    trailer: Vec<u8>,
}

fn halves(id: &[u8]) -> (i64, i64) {
    let mut padded = [0u8; 16];
    padded[16 - id.len()..].copy_from_slice(id);
    (
        i64::from_be_bytes(padded[..8].try_into().expect("8 bytes")),
        i64::from_be_bytes(padded[8..].try_into().expect("8 bytes")),
    )
}

fn span_id(id: &[u8]) -> i64 {
    let mut padded = [0u8; 8];
    padded[8 - id.len()..].copy_from_slice(id);
    i64::from_be_bytes(padded)
}

fn micros(seconds: i64, nanos: i32) -> i64 {
    seconds * 1_000_000 + i64::from(nanos) / 1_000
}

fn tag(kv: &proto::KeyValue) -> thrift::Tag {
    let mut value = thrift::TagValue::default();
    // api_v2's ValueType: STRING, BOOL, INT64, FLOAT64, BINARY.
    let v_type = match kv.v_type {
        1 => {
            value.v_bool = Some(kv.v_bool);
            thrift::TagType::Bool
        }
        2 => {
            value.v_long = Some(kv.v_int64);
            thrift::TagType::Long
        }
        3 => {
            value.v_double = Some(kv.v_float64);
            thrift::TagType::Double
        }
        4 => {
            value.v_binary = Some(kv.v_binary.clone());
            thrift::TagType::Binary
        }
        _ => {
            value.v_str = Some(kv.v_str.clone());
            thrift::TagType::String
        }
    };
    thrift::Tag {
        key: kv.key.clone(),
        v_type,
        value,
    }
}

fn tags(kvs: &[proto::KeyValue]) -> Vec<thrift::Tag> {
    kvs.iter().map(tag).collect()
}

/// An api_v2 span as a jaeger-client's thrift span: the first CHILD_OF
/// reference within the trace is the parent, the other references stay.
fn span(s: &proto::Span) -> thrift::Span {
    let (high, low) = halves(&s.trace_id);
    let parent = s
        .references
        .iter()
        .position(|r| r.ref_type == 0 && r.trace_id == s.trace_id);
    let references: Vec<thrift::SpanRef> = (s.references.iter().enumerate())
        .filter(|(i, _)| Some(*i) != parent)
        .map(|(_, r)| {
            let (high, low) = halves(&r.trace_id);
            thrift::SpanRef {
                ref_type: r.ref_type,
                trace_id_low: low,
                trace_id_high: high,
                span_id: span_id(&r.span_id),
            }
        })
        .collect();
    let time = |t: Option<(i64, i32)>| t.map_or(0, |(s, n)| micros(s, n));
    thrift::Span {
        trace_id_low: low,
        trace_id_high: high,
        span_id: span_id(&s.span_id),
        parent_span_id: parent.map_or(0, |i| span_id(&s.references[i].span_id)),
        operation_name: s.operation_name.clone(),
        references: (!references.is_empty()).then_some(references),
        flags: s.flags as i32,
        start_time: time(s.start_time.map(|t| (t.seconds, t.nanos))),
        duration: time(s.duration.map(|d| (d.seconds, d.nanos))),
        tags: Some(tags(&s.tags)),
        logs: (!s.logs.is_empty()).then(|| {
            s.logs
                .iter()
                .map(|l| thrift::Log {
                    timestamp: l.timestamp.map_or(0, |t| micros(t.seconds, t.nanos)),
                    fields: tags(&l.fields),
                })
                .collect()
        }),
    }
}

impl ThriftChunks {
    pub fn new(
        wire: Wire,
        layout: &Layout,
        part: usize,
        values: usize,
        order: &[(usize, usize)],
    ) -> ThriftChunks {
        let by_class = batches_by_class(layout, part, values);
        let process = by_class[0].process.as_ref().expect("a process");
        let process = thrift::Process {
            service_name: process.service_name.clone(),
            tags: Some(tags(&process.tags)),
        };
        let batch_of = |spans: Vec<thrift::Span>| thrift::Batch {
            process: process.clone(),
            spans,
            seq_no: None,
        };
        // The batch without spans is the header (with a count of 0) and
        // the trailer; a batch of one span is the same around the span.
        let empty = wire.encode(&batch_of(Vec::new()));
        let trailer_at = empty.len() - wire.trailer_len();
        let mut header = empty[..trailer_at].to_vec();
        let n = order.len();
        match wire {
            Wire::Binary => {
                // List header: element type, then the count as an i32.
                let count_at = header.len() - 4;
                assert_eq!(&header[count_at - 1..], &[12, 0, 0, 0, 0]);
                header[count_at..].copy_from_slice(&(n as i32).to_be_bytes());
            }
            Wire::Compact => {
                // Count and element type (12, struct) in one byte below 15.
                assert_eq!(header.pop(), Some(12));
                if n < 15 {
                    header.push((n as u8) << 4 | 12);
                } else {
                    header.push(0xf0 | 12);
                    let mut v = n as u64;
                    while v >= 0x80 {
                        header.push(v as u8 | 0x80);
                        v >>= 7;
                    }
                    header.push(v as u8);
                }
            }
        }
        let mut chunks = ThriftChunks {
            wire,
            spans: Vec::with_capacity(n),
            bytes: Vec::new(),
            holes: Vec::new(),
            header,
            trailer: empty[trailer_at..].to_vec(),
        };
        let traces = layout.shape.traces_per_round;
        for (j, &(t, i)) in order.iter().enumerate() {
            let link = link_target(t, i, traces);
            let mut encoded: Vec<Encoded> = Vec::with_capacity(3);
            let mut previous: Option<Vec<u8>> = None;
            for batch in &by_class {
                let one = wire.encode(&batch_of(vec![span(&batch.spans[j])]));
                let bytes = one[trailer_at..one.len() - wire.trailer_len()].to_vec();
                if previous.as_ref() == Some(&bytes) {
                    encoded.push(encoded[0].clone());
                    continue;
                }
                let mut holes = Vec::new();
                let mut ids = |trace: usize, link: bool| {
                    let (high, low) = halves(&placeholder(trace));
                    let (high, low) = (wire.i64_bytes(high), wire.i64_bytes(low));
                    let found = find_all(&bytes, &high);
                    for &at in &found {
                        let low_at = at - wire.gap() - low.len();
                        assert_eq!(&bytes[low_at..low_at + low.len()], &low[..], "low half");
                        holes.push(Hole {
                            at: low_at as u32,
                            len: low.len() as u32,
                            fill: Fill::Low { link },
                        });
                        holes.push(Hole {
                            at: at as u32,
                            len: high.len() as u32,
                            fill: Fill::High { link },
                        });
                    }
                    found.len()
                };
                assert!(ids(t, false) > 0, "the span's trace id");
                if let Some(l) = link.filter(|&l| l != t) {
                    assert!(ids(l, true) > 0, "the link's trace id");
                }
                for (mark, d) in [(b"UUUUUUUU", Digits::User), (b"PPPPPPPP", Digits::PathId)] {
                    holes.extend(find_all(&bytes, mark).into_iter().map(|at| Hole {
                        at: at as u32,
                        len: 8,
                        fill: Fill::Digits(d),
                    }));
                }
                holes.sort_by_key(|h| h.at);
                let start = chunks.holes.len() as u32;
                chunks.holes.extend(holes);
                let holes = start..chunks.holes.len() as u32;
                let start = chunks.bytes.len() as u32;
                chunks.bytes.extend_from_slice(&bytes);
                encoded.push(Encoded {
                    bytes: start..chunks.bytes.len() as u32,
                    holes,
                });
                previous.get_or_insert(bytes);
            }
            let [normal, error, slow] = <[Encoded; 3]>::try_from(encoded).ok().expect("three");
            chunks.spans.push(SpanChunk {
                trace: t as u32,
                link: link.unwrap_or(t) as u32,
                by_class: [normal, error, slow],
            });
        }
        chunks
    }

    /// Encoded length of the request with every trace normal.
    pub fn len(&self) -> usize {
        self.header.len()
            + self.trailer.len()
            + self
                .spans
                .iter()
                .map(|c| range(&c.by_class[0].bytes).len())
                .sum::<usize>()
    }

    /// Round `round`'s request, appended to `out`.
    pub fn write(&self, template: &Template, round: u64, out: &mut BytesMut) {
        let traces: Vec<(u64, [u8; 16], Class)> = (0..template.traces_per_round)
            .map(|t| template.trace(round, t))
            .collect();
        out.reserve(self.len() + self.len() / 8);
        out.extend_from_slice(&self.header);
        for c in &self.spans {
            let (seq, id, class) = &traces[c.trace as usize];
            let (own_high, own_low) = halves(id);
            let (link_high, link_low) = halves(&traces[c.link as usize].1);
            let e = &c.by_class[*class as usize];
            let bytes = &self.bytes[range(&e.bytes)];
            let mut from = 0;
            for h in &self.holes[range(&e.holes)] {
                out.extend_from_slice(&bytes[from..h.at as usize]);
                match h.fill {
                    Fill::High { link } => self
                        .wire
                        .put_i64(if link { link_high } else { own_high }, out),
                    Fill::Low { link } => self
                        .wire
                        .put_i64(if link { link_low } else { own_low }, out),
                    Fill::Digits(d) => {
                        let at = out.len();
                        out.put_bytes(b'0', 8);
                        d.write(*seq, &mut out[at..at + 8]);
                    }
                }
                from = (h.at + h.len) as usize;
            }
            out.extend_from_slice(&bytes[from..]);
        }
        out.extend_from_slice(&self.trailer);
    }
}
