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

use bytes::{BufMut, BytesMut};
use opentelemetry_proto::tonic::trace::v1::status;
use tracegate_model::jaeger::batches_from_request;

use crate::template::{
    link_target, placeholder, Class, Digits, Layout, Template, TracePatches, Variant,
};

/// One value draw of one part.
pub struct Chunks {
    spans: Vec<SpanChunk>,
    /// The `Batch.process` field.
    process: Vec<u8>,
}

struct SpanChunk {
    trace: usize,
    link: Option<usize>,
    /// One encoding, or one per class in `Class::ALL` order.
    by_class: Vec<Encoded>,
}

struct Encoded {
    bytes: Vec<u8>,
    own: TracePatches,
    /// Where the linked trace's id is.
    link_ids: Vec<u32>,
}

impl SpanChunk {
    fn pick(&self, class: Class) -> &Encoded {
        match self.by_class.len() {
            1 => &self.by_class[0],
            _ => {
                &self.by_class[Class::ALL
                    .iter()
                    .position(|&c| c == class)
                    .expect("a class")]
            }
        }
    }
}

/// Offsets of every occurrence of `needle` in `hay`.
fn find_all(hay: &[u8], needle: &[u8]) -> Vec<u32> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i as u32)
        .collect()
}

impl Chunks {
    pub fn new(layout: &Layout, part: usize, values: usize, order: &[(usize, usize)]) -> Chunks {
        // Placeholders that cannot occur elsewhere in the bytes.
        let base = Variant {
            error_code: status::StatusCode::Unset,
            user_digit: 'U',
            path_digit: 'P',
            ..Variant::base(values)
        };
        let by_class = [
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
        });
        let process = by_class[0].process.as_ref().expect("a process");
        let mut chunks = Chunks {
            spans: Vec::with_capacity(order.len()),
            process: Vec::new(),
        };
        prost::encoding::message::encode(2, process, &mut chunks.process);
        let traces = layout.shape.traces_per_round;
        for (j, &(t, i)) in order.iter().enumerate() {
            let link = link_target(t, i, traces);
            let encoded: Vec<Encoded> = by_class
                .iter()
                .map(|batch| {
                    let mut bytes = Vec::new();
                    prost::encoding::message::encode(1, &batch.spans[j], &mut bytes);
                    let mut own = TracePatches::default();
                    own.ids = find_all(&bytes, &placeholder(t));
                    assert!(!own.ids.is_empty(), "the span's trace id");
                    for (mark, digits) in
                        [(b"UUUUUUUU", Digits::User), (b"PPPPPPPP", Digits::PathId)]
                    {
                        own.digits
                            .extend(find_all(&bytes, mark).into_iter().map(|o| (o, digits)));
                    }
                    let link_ids =
                        link.map_or_else(Vec::new, |l| find_all(&bytes, &placeholder(l)));
                    assert_eq!(link_ids.is_empty(), link.is_none(), "the link's trace id");
                    Encoded {
                        bytes,
                        own,
                        link_ids,
                    }
                })
                .collect();
            let same = encoded.iter().all(|e| e.bytes == encoded[0].bytes);
            chunks.spans.push(SpanChunk {
                trace: t,
                link,
                by_class: if same {
                    encoded.into_iter().take(1).collect()
                } else {
                    encoded
                },
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
                .map(|c| c.by_class[0].bytes.len())
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
                .map(|c| c.pick(traces[c.trace].2).bytes.len())
                .sum::<usize>();
        // PostSpansRequest { batch (field 1): Batch }.
        let message_len = 1 + prost::encoding::encoded_len_varint(batch_len as u64) + batch_len;
        out.reserve(5 + message_len);
        out.put_u8(0);
        out.put_u32(message_len as u32);
        out.put_u8(0x0a);
        prost::encoding::encode_varint(batch_len as u64, out);
        for c in &self.spans {
            let (seq, id, class) = traces[c.trace];
            let e = c.pick(class);
            let at = out.len();
            out.extend_from_slice(&e.bytes);
            e.own.apply(out, at, seq, &id, class, false);
            if let Some(l) = c.link {
                for &o in &e.link_ids {
                    out[at + o as usize..][..16].copy_from_slice(&traces[l].1);
                }
            }
        }
        out.extend_from_slice(&self.process);
    }
}
