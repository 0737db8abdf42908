//! Jaeger api_v2 request templates: a `PostSpansRequest` whose batch holds
//! one service's spans of a round (Jaeger clients send one process per
//! batch). The OTLP spans a part would hold are mapped by tracegate-model's
//! translator, so they read back exactly as tracegate's Jaeger receiver
//! reads them: an error span carries `error=true` and
//! `otel.status_code=ERROR`.
//!
//! Those tags and a slow root's `Duration` change a span's encoded length,
//! so a request cannot be patched in place like an OTLP one. Each span is
//! kept as its own encoded `Batch.spans` field instead, once per class when
//! its bytes depend on the class; a request is written by copying the
//! spans its traces' classes pick behind the two length prefixes, then
//! patching ids and digits as OTLP templates do.

use std::ops::Range;

use bytes::{BufMut, BytesMut};
use opentelemetry_proto::tonic::trace::v1::status;
use tracegate_model::jaeger::{batches_from_request, proto};

use crate::template::{link_target, placeholder, Class, Digits, Layout, Template, Variant};

/// One value draw of one part. The spans' bytes and patch offsets live in
/// two flat arrays, read in order as a request is written.
pub struct Chunks {
    spans: Vec<SpanChunk>,
    /// Every span encoding, back to back.
    bytes: Vec<u8>,
    /// Every id offset (relative to its span encoding), back to back.
    offsets: Vec<u32>,
    /// The `Batch.process` field.
    process: Vec<u8>,
}

struct SpanChunk {
    trace: u32,
    link: u32,
    /// Indexed by `Class as usize`; classes the span does not depend on
    /// share one encoding.
    by_class: [Encoded; 3],
}

#[derive(Clone)]
struct Encoded {
    /// The span's `Batch.spans` field in `Chunks::bytes`.
    bytes: Range<u32>,
    /// Where its own trace's id is, in `Chunks::offsets`.
    ids: Range<u32>,
    /// Where the linked trace's id is, in `Chunks::offsets`.
    link_ids: Range<u32>,
    /// Per-trace digits (the root's user and path ids).
    digits: Vec<(u32, Digits)>,
}

pub(crate) fn range(r: &Range<u32>) -> Range<usize> {
    r.start as usize..r.end as usize
}

/// Offsets of every occurrence of `needle` in `hay`.
pub(crate) fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// The one Jaeger batch of request `part`, once per class, in `Class`
/// order (normal, error, slow), written with placeholders that cannot
/// occur elsewhere in the bytes, for the encoders to find and replace.
pub(crate) fn batches_by_class(layout: &Layout, part: usize, values: usize) -> [proto::Batch; 3] {
    let base = Variant {
        error_code: status::StatusCode::Unset,
        user_digit: 'U',
        path_digit: 'P',
        ..Variant::base(values)
    };
    [
        base,
        Variant {
            error_code: status::StatusCode::Error,
            http_error: true,
            ..base
        },
        Variant { slow: true, ..base },
    ]
    .map(|v| {
        let mut batches = batches_from_request(layout.request(part, &v));
        assert_eq!(batches.len(), 1, "one service per Jaeger request");
        batches.pop().expect("one batch")
    })
}

impl Chunks {
    pub fn new(layout: &Layout, part: usize, values: usize, order: &[(usize, usize)]) -> Chunks {
        let by_class = batches_by_class(layout, part, values);
        let process = by_class[0].process.as_ref().expect("a process");
        let mut chunks = Chunks {
            spans: Vec::with_capacity(order.len()),
            bytes: Vec::new(),
            offsets: Vec::new(),
            process: Vec::new(),
        };
        prost::encoding::message::encode(2, process, &mut chunks.process);
        let traces = layout.shape.traces_per_round;
        for (j, &(t, i)) in order.iter().enumerate() {
            // A span without a link patches its own id in place of one.
            let link = link_target(t, i, traces);
            let mut encoded: Vec<Encoded> = Vec::with_capacity(3);
            let mut previous: Option<Vec<u8>> = None;
            for batch in &by_class {
                let mut bytes = Vec::new();
                prost::encoding::message::encode(1, &batch.spans[j], &mut bytes);
                if previous.as_ref() == Some(&bytes) {
                    encoded.push(encoded[0].clone());
                    continue;
                }
                let mut push = |offsets: Vec<usize>| {
                    let start = chunks.offsets.len() as u32;
                    chunks.offsets.extend(offsets.into_iter().map(|o| o as u32));
                    start..chunks.offsets.len() as u32
                };
                let ids = push(find_all(&bytes, &placeholder(t)));
                assert!(!ids.is_empty(), "the span's trace id");
                let link_ids =
                    push(link.map_or_else(Vec::new, |l| find_all(&bytes, &placeholder(l))));
                assert_eq!(link_ids.is_empty(), link.is_none(), "the link's trace id");
                let mut digits = Vec::new();
                for (mark, d) in [(b"UUUUUUUU", Digits::User), (b"PPPPPPPP", Digits::PathId)] {
                    digits.extend(find_all(&bytes, mark).into_iter().map(|o| (o as u32, d)));
                }
                let start = chunks.bytes.len() as u32;
                chunks.bytes.extend_from_slice(&bytes);
                encoded.push(Encoded {
                    bytes: start..chunks.bytes.len() as u32,
                    ids,
                    link_ids,
                    digits,
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

    /// Encoded length of the batch with every trace normal.
    pub fn len(&self) -> usize {
        self.process.len()
            + self
                .spans
                .iter()
                .map(|c| range(&c.by_class[0].bytes).len())
                .sum::<usize>()
    }

    /// Round `round`'s request, gRPC message prefix first, appended to `out`.
    pub fn write(&self, template: &Template, round: u64, out: &mut BytesMut) {
        let traces: Vec<(u64, [u8; 16], Class)> = (0..template.traces_per_round)
            .map(|t| template.trace(round, t))
            .collect();
        let batch_len = self.process.len()
            + self
                .spans
                .iter()
                .map(|c| range(&c.by_class[traces[c.trace as usize].2 as usize].bytes).len())
                .sum::<usize>();
        // PostSpansRequest { batch (field 1): Batch }.
        let message_len = 1 + prost::encoding::encoded_len_varint(batch_len as u64) + batch_len;
        out.reserve(5 + message_len);
        out.put_u8(0);
        out.put_u32(message_len as u32);
        out.put_u8(0x0a);
        prost::encoding::encode_varint(batch_len as u64, out);
        for c in &self.spans {
            let (seq, id, class) = &traces[c.trace as usize];
            let e = &c.by_class[*class as usize];
            let at = out.len();
            out.extend_from_slice(&self.bytes[range(&e.bytes)]);
            for &o in &self.offsets[range(&e.ids)] {
                out[at + o as usize..][..16].copy_from_slice(id);
            }
            let link = &traces[c.link as usize].1;
            for &o in &self.offsets[range(&e.link_ids)] {
                out[at + o as usize..][..16].copy_from_slice(link);
            }
            for &(o, d) in &e.digits {
                d.write(*seq, &mut out[at + o as usize..][..8]);
            }
        }
        out.extend_from_slice(&self.process);
    }
}
