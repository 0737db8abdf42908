//! Writing OTLP bytes for the Jaeger mappings: the attribute list with
//! pdata's map semantics, the values, events, links and status a Jaeger
//! span maps to. Shared by the api_v2 ingest (`ingest.rs`) and the thrift
//! one (`crate::thrift::ingest`), which read different wire formats into the
//! same OTLP output.

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::Bytes;

use super::tags;
use crate::batch::Encoded;
use crate::wire::{close, open, put_varint, varint_len};
use crate::{Indexing, SpanBatch};

/// A string as the mappings carry it: bytes already known to be UTF-8
/// (checked where they were read, or made so), so that neither mapping
/// pays for a second check to hold them as `str`.
pub(crate) type Text<'a> = Cow<'a, [u8]>;

/// A request one of the writers wrote, holding `spans` spans, as a batch
/// indexed as `indexing` says.
///
/// The writers write only what the scanner takes: every message is built
/// field by field with its length, every string was checked to be UTF-8
/// where it was read (api_v2) or made so (thrift), ids are 16 and 8 bytes,
/// nothing nests. So when nothing after the receiver reads spans
/// ([`Indexing::Lazy`]) the request is not scanned at all: the batch holds
/// the writer's span count and builds its index on first use, as after a
/// lazy scan. Debug builds (the tests) scan it anyway and check the count.
/// `None` when the scanner refuses an eagerly indexed request, which is
/// not expected; the caller's owned path decides then.
pub(crate) fn written_batch(out: Vec<u8>, spans: usize, indexing: Indexing) -> Option<SpanBatch> {
    let bytes = Bytes::from(out);
    if indexing == Indexing::Lazy {
        debug_assert_eq!(
            SpanBatch::scan_with(bytes.clone(), Indexing::Lazy)
                .map(|b| b.len())
                .ok(),
            Some(spans),
            "a written request scans, with the writer's span count"
        );
        return Some(SpanBatch::unindexed(Encoded::whole(bytes), spans));
    }
    let batch = SpanBatch::scan(bytes).ok()?;
    debug_assert_eq!(batch.len(), spans, "the writer miscounted its spans");
    Some(batch)
}

/// An attribute value as the mapping builds it.
#[derive(Clone)]
pub(crate) enum Val<'a> {
    Str(Text<'a>),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
}

impl Val<'_> {
    /// Length of the `AnyValue` body.
    fn len(&self) -> usize {
        match self {
            Val::Str(s) => len_field_len(s.len()),
            Val::Bool(_) => 2,
            Val::Int(i) => 1 + varint_len(*i as u64),
            Val::Double(_) => 9,
            Val::Bytes(b) => len_field_len(b.len()),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Val::Str(s) => put_len_field(out, 0x0a, s),
            Val::Bool(b) => out.extend_from_slice(&[0x10, u8::from(*b)]),
            Val::Int(i) => {
                out.push(0x18);
                put_varint(out, *i as u64);
            }
            Val::Double(d) => {
                out.push(0x21);
                out.extend_from_slice(&d.to_bits().to_le_bytes());
            }
            Val::Bytes(b) => put_len_field(out, 0x3a, b),
        }
    }
}

/// Up to this many attributes a key is looked up by scanning the list;
/// past it, through a hash index, so that a span with many tags costs
/// linear time, not quadratic.
const SCAN_MAX: usize = 16;

/// Attributes as the collector's `pcommon.Map` keeps them (see
/// `to_otlp::Attributes`): putting a key that exists replaces its value in
/// place, removing one keeps the others' order.
#[derive(Default)]
pub(crate) struct Attrs<'a> {
    list: Vec<(Text<'a>, Val<'a>)>,
    /// Key → position in `list`, kept once `list` outgrows [`SCAN_MAX`].
    index: HashMap<Text<'a>, usize>,
    /// The [`key_bit`]s of every key put since the last clear (removals
    /// leave theirs): a key whose bit is clear is not in the list, which
    /// spares the scan for nearly every new key and for the special keys
    /// most spans lack.
    seen: u64,
}

/// One of 64 bits for `key`, from its length and its first and last
/// bytes, which tell apart most keys one span carries.
#[inline]
fn key_bit(key: &[u8]) -> u64 {
    let (first, last) = match key {
        [] => (0, 0),
        [only] => (*only, *only),
        [first, .., last] => (*first, *last),
    };
    let h = (key.len() as u32).wrapping_mul(0x9e37_79b1)
        ^ u32::from(first).wrapping_mul(0x85eb_ca6b)
        ^ u32::from(last).wrapping_mul(0xc2b2_ae35);
    1 << (h >> 26)
}

impl<'a> Attrs<'a> {
    pub(crate) fn clear(&mut self) {
        self.list.clear();
        self.index.clear();
        self.seen = 0;
    }

    fn indexed(&self) -> bool {
        self.list.len() > SCAN_MAX
    }

    fn position(&self, key: &[u8]) -> Option<usize> {
        if self.indexed() {
            self.index.get(key).copied()
        } else if self.seen & key_bit(key) == 0 {
            None
        } else {
            self.list.iter().position(|(k, _)| **k == *key)
        }
    }

    pub(crate) fn put(&mut self, key: Text<'a>, value: Val<'a>) {
        match self.position(&key) {
            Some(at) => self.list[at].1 = value,
            None => {
                self.seen |= key_bit(&key);
                if self.indexed() {
                    self.index.insert(key.clone(), self.list.len());
                }
                self.list.push((key, value));
                if self.list.len() == SCAN_MAX + 1 {
                    self.index = (self.list.iter().enumerate())
                        .map(|(at, (k, _))| (k.clone(), at))
                        .collect();
                }
            }
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Val<'a>> {
        self.position(key.as_bytes()).map(|at| &self.list[at].1)
    }

    /// `Value.Str()`: the string, or empty for another type.
    pub(crate) fn str(&self, key: &str) -> Option<Text<'a>> {
        self.get(key).map(|v| match v {
            Val::Str(s) => s.clone(),
            _ => Cow::Borrowed(&[][..]),
        })
    }

    pub(crate) fn remove(&mut self, key: &str) {
        let Some(at) = self.position(key.as_bytes()) else {
            return;
        };
        let was_indexed = self.indexed();
        self.list.remove(at);
        if !was_indexed {
            return;
        }
        if self.indexed() {
            self.index.remove(key.as_bytes());
            for i in self.index.values_mut() {
                if *i > at {
                    *i -= 1;
                }
            }
        } else {
            self.index.clear();
        }
    }

    /// Writes each attribute as a `KeyValue` field with key `field_key`.
    pub(crate) fn write(&self, out: &mut Vec<u8>, field_key: u8) {
        for (key, value) in &self.list {
            put_key_value(out, field_key, key, value);
        }
    }
}

pub(crate) fn put_key_value(out: &mut Vec<u8>, field_key: u8, key: &[u8], value: &Val<'_>) {
    let value_len = value.len();
    let key_len = if key.is_empty() {
        0
    } else {
        len_field_len(key.len())
    };
    out.push(field_key);
    put_varint(out, (key_len + len_field_len(value_len)) as u64);
    if !key.is_empty() {
        put_len_field(out, 0x0a, key);
    }
    out.push(0x12);
    put_varint(out, value_len as u64);
    value.write(out);
}

pub(crate) fn len_field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

pub(crate) fn put_len_field(out: &mut Vec<u8>, key: u8, bytes: &[u8]) {
    out.push(key);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

pub(crate) fn put_nonempty(out: &mut Vec<u8>, key: u8, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_len_field(out, key, bytes);
    }
}

pub(crate) fn put_fixed64_nonzero(out: &mut Vec<u8>, key: u8, value: u64) {
    if value != 0 {
        out.push(key);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

// OTLP span kinds and status codes.
pub(crate) const KIND_SERVER: i32 = 2;
pub(crate) const KIND_CLIENT: i32 = 3;
const STATUS_UNSET: i32 = 0;
const STATUS_OK: i32 = 1;
const STATUS_ERROR: i32 = 2;

/// The OTLP span kind an OpenTracing `span.kind` tag names (0 for none).
pub(crate) fn span_kind(tag: &[u8]) -> i32 {
    match tag {
        b"client" => KIND_CLIENT,
        b"server" => KIND_SERVER,
        b"producer" => 4,
        b"consumer" => 5,
        b"internal" => 1,
        _ => 0,
    }
}

/// A span's `Resource` field (0x0a of `ResourceSpans`) holding `attrs`.
pub(crate) fn write_resource(out: &mut Vec<u8>, attrs: &Attrs<'_>) {
    let r = open(out, 0x0a, 2);
    attrs.write(out, 0x0a);
    close(out, r, 2);
}

/// A span's event (field 11) from a Jaeger log: `fields` are its
/// attributes before the `event` field names it.
pub(crate) fn write_event(out: &mut Vec<u8>, time_unix_nano: u64, fields: &mut Attrs<'_>) {
    let name = fields.str(tags::EVENT).unwrap_or_default();
    fields.remove(tags::EVENT);
    let e = open(out, 0x5a, 2);
    put_fixed64_nonzero(out, 0x09, time_unix_nano);
    put_nonempty(out, 0x12, &name);
    fields.write(out, 0x1a);
    close(out, e, 2);
}

/// A span's link (field 13) from a Jaeger reference that is not its parent.
pub(crate) fn write_link(
    out: &mut Vec<u8>,
    trace_id: &[u8; 16],
    span_id: &[u8; 8],
    child_of: bool,
) {
    let ref_type = Val::Str(Cow::Borrowed(if child_of {
        b"child_of"
    } else {
        b"follows_from"
    }));
    let l = open(out, 0x6a, 1);
    put_len_field(out, 0x0a, trace_id);
    put_len_field(out, 0x12, span_id);
    put_key_value(out, 0x22, tags::REF_TYPE.as_bytes(), &ref_type);
    close(out, l, 1);
}

/// A span's status (field 15), as [`status`] found it.
pub(crate) fn write_status(out: &mut Vec<u8>, status: Option<(i32, Text<'_>)>) {
    let Some((code, message)) = status else {
        return;
    };
    let body = (if message.is_empty() {
        0
    } else {
        len_field_len(message.len())
    }) + (if code == 0 {
        0
    } else {
        1 + varint_len(code as u64)
    });
    out.push(0x7a);
    put_varint(out, body as u64);
    put_nonempty(out, 0x12, &message);
    if code != 0 {
        out.push(0x18);
        put_varint(out, code as u64);
    }
}

/// The collector's `setInternalSpanStatus`, as `to_otlp::status`.
pub(crate) fn status<'a>(attrs: &mut Attrs<'a>, kind: i32) -> Option<(i32, Text<'a>)> {
    let mut code = STATUS_UNSET;
    let mut message: Text<'a> = Cow::Borrowed(&[][..]);
    let mut exists = false;
    let take_description = |attrs: &mut Attrs<'a>| {
        let description = attrs.str(tags::STATUS_DESCRIPTION);
        if description.is_some() {
            attrs.remove(tags::STATUS_DESCRIPTION);
        }
        description
    };
    if let Some(Val::Bool(true)) = attrs.get(tags::ERROR) {
        code = STATUS_ERROR;
        attrs.remove(tags::ERROR);
        exists = true;
        message = match take_description(attrs) {
            Some(description) => description,
            None => attrs.str(tags::HTTP_STATUS_MESSAGE).unwrap_or_default(),
        };
    }
    if let Some(status_code) = attrs.str(tags::STATUS_CODE) {
        if !exists {
            exists = true;
            if status_code.eq_ignore_ascii_case(b"OK") {
                code = STATUS_OK;
            } else if status_code.eq_ignore_ascii_case(b"ERROR") {
                code = STATUS_ERROR;
            }
            if let Some(description) = take_description(attrs) {
                message = description;
            }
        }
        attrs.remove(tags::STATUS_CODE);
    } else if !exists {
        let http_code = match attrs.get(tags::HTTP_STATUS_CODE) {
            Some(Val::Int(i)) => Some(*i),
            Some(Val::Str(s)) => std::str::from_utf8(s)
                .ok()
                .and_then(|s| s.parse::<i64>().ok()),
            _ => None,
        };
        if let Some(http_code) = http_code {
            let from_http = if (400..500).contains(&http_code) && kind == KIND_CLIENT {
                STATUS_ERROR
            } else if ((400..500).contains(&http_code) && kind == KIND_SERVER)
                // The collector's bound: 399 itself is an error there too.
                || (100..399).contains(&http_code)
            {
                STATUS_UNSET
            } else {
                STATUS_ERROR
            };
            if from_http != STATUS_UNSET {
                exists = true;
                code = from_http;
            }
            if let Some(m) = attrs.str(tags::HTTP_STATUS_MESSAGE) {
                message = m;
            }
        }
    }
    exists.then_some((code, message))
}
