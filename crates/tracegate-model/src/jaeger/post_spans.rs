//! OTLP → Jaeger `PostSpansRequest` bytes written straight from a
//! [`SpanBatch`]'s encoded OTLP: the mapping of `from_otlp.rs`, field by
//! field, with no owned message in between (the exporter's hot path).
//!
//! The output is what prost writes for `from_otlp`'s messages, byte for
//! byte. Strings are copied as bytes (the scanner checked they are UTF-8).
//! An attribute holding an array or a map (JSON text) goes through
//! `from_otlp`'s owned path for that one attribute.

use std::ops::Range;

use bytes::Bytes;
use prost::Message;

use super::from_otlp::{duration, tag, timestamp, value_as_string};
use super::proto::{SpanRefType, ValueType};
use super::tags;
use crate::otlp::{KeyValue, SpanKind};
use crate::wire::{close, open, put_varint, varint_len, write_varint_at, Cursor, I64, LEN, VARINT};
use crate::SpanBatch;

// OTLP field numbers read here.
const RESOURCE_SPANS_RESOURCE: u32 = 1;
const RESOURCE_ATTRIBUTES: u32 = 1;
const SCOPE_SPANS_SCOPE: u32 = 1;
const SCOPE_NAME: u32 = 1;
const SCOPE_VERSION: u32 = 2;
const KEY_VALUE_KEY: u32 = 1;
const KEY_VALUE_VALUE: u32 = 2;

// Jaeger keys written here: (field number << 3) | wire type, all one byte.
const REQUEST_BATCH: u8 = 1 << 3 | LEN;
const BATCH_SPANS: u8 = 1 << 3 | LEN;
const BATCH_PROCESS: u8 = 2 << 3 | LEN;
const PROCESS_SERVICE_NAME: u8 = 1 << 3 | LEN;
const PROCESS_TAGS: u8 = 2 << 3 | LEN;
const SPAN_TRACE_ID: u8 = 1 << 3 | LEN;
const SPAN_SPAN_ID: u8 = 2 << 3 | LEN;
const SPAN_OPERATION_NAME: u8 = 3 << 3 | LEN;
const SPAN_REFERENCES: u8 = 4 << 3 | LEN;
const SPAN_START_TIME: u8 = 6 << 3 | LEN;
const SPAN_DURATION: u8 = 7 << 3 | LEN;
const SPAN_TAGS: u8 = 8 << 3 | LEN;
const SPAN_LOGS: u8 = 9 << 3 | LEN;
const REF_TRACE_ID: u8 = 1 << 3 | LEN;
const REF_SPAN_ID: u8 = 2 << 3 | LEN;
const REF_TYPE: u8 = 3 << 3 | VARINT;
const LOG_TIMESTAMP: u8 = 1 << 3 | LEN;
const LOG_FIELDS: u8 = 2 << 3 | LEN;
const KV_KEY: u8 = 1 << 3 | LEN;
const KV_TYPE: u8 = 2 << 3 | VARINT;
const KV_STR: u8 = 3 << 3 | LEN;
const KV_BOOL: u8 = 4 << 3 | VARINT;
const KV_INT64: u8 = 5 << 3 | VARINT;
const KV_FLOAT64: u8 = 6 << 3 | I64;
const KV_BINARY: u8 = 7 << 3 | LEN;
// Timestamp and Duration: seconds (int64) and nanos (int32).
const TIME_SECONDS: u8 = 1 << 3 | VARINT;
const TIME_NANOS: u8 = 2 << 3 | VARINT;

/// Room left before each request for its key and length, written once the
/// length is known: one key byte and a varint of up to 10.
const HEADER_ROOM: usize = 11;

/// One encoded `PostSpansRequest` per resource of the batch, in order: the
/// bytes `batches_from_span_batch` gives once each `Batch` is wrapped in a
/// request and encoded. All share one buffer.
pub fn post_spans_requests(batch: &SpanBatch) -> Vec<Bytes> {
    post_spans_requests_by_resource(batch)
        .into_iter()
        .map(|(_, request)| request)
        .collect()
}

/// [`post_spans_requests`], each with the index of the resource it carries
/// (into [`SpanBatch::resources`]; a resource with neither attributes nor
/// scopes has no request), so that a sender can tell which spans a failed
/// request held.
pub fn post_spans_requests_by_resource(batch: &SpanBatch) -> Vec<(usize, Bytes)> {
    let groups: Vec<[usize; 1]> = (0..batch.resources().len()).map(|r| [r]).collect();
    write_requests(batch, groups.iter().map(|g| &g[..]))
        .into_iter()
        .map(|(group, request)| (groups[group][0], request))
        .collect()
}

/// One encoded `PostSpansRequest` per distinct Jaeger `Process` of the
/// batch: resources whose attributes are byte for byte the same (as when
/// the batch processor joins many requests of one SDK) share one request,
/// their spans in the batch's order. Each request comes with the indices
/// of the resources it carries, ascending, so that a sender can tell which
/// spans a failed request held.
pub fn post_spans_requests_by_process(batch: &SpanBatch) -> Vec<(Vec<usize>, Bytes)> {
    let mut groups = process_groups(batch);
    let requests = write_requests(batch, groups.iter().map(Vec::as_slice));
    requests
        .into_iter()
        .map(|(group, request)| (std::mem::take(&mut groups[group]), request))
        .collect()
}

/// The batch's resources grouped by their attribute bytes, in the order
/// each group first appears.
fn process_groups(batch: &SpanBatch) -> Vec<Vec<usize>> {
    use std::collections::HashMap;
    use std::hash::{BuildHasher, Hasher};

    let buf: &[u8] = batch.bytes();
    let attributes = |r: usize| resource_attributes(buf, range(&batch.resources()[r].body));
    let same = |a: usize, b: usize| {
        attributes(a)
            .map(|r| &buf[r])
            .eq(attributes(b).map(|r| &buf[r]))
    };
    let hasher = std::hash::RandomState::new();
    // Hash of the attributes → the groups with that hash.
    let mut by_hash: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for resource in 0..batch.resources().len() {
        let mut h = hasher.build_hasher();
        for r in attributes(resource) {
            h.write_usize(r.len());
            h.write(&buf[r]);
        }
        let candidates = by_hash.entry(h.finish()).or_default();
        match candidates.iter().find(|&&g| same(groups[g][0], resource)) {
            Some(&g) => groups[g].push(resource),
            None => {
                candidates.push(groups.len());
                groups.push(vec![resource]);
            }
        }
    }
    groups
}

/// One request per group of resources (whose attributes are the same),
/// with the index of its group; a group without attributes or scopes has
/// none. All share one buffer.
fn write_requests<'g>(
    batch: &SpanBatch,
    groups: impl Iterator<Item = &'g [usize]>,
) -> Vec<(usize, Bytes)> {
    let buf: &[u8] = batch.bytes();
    // Jaeger's encoding of a span is about 1.2× OTLP's.
    let mut out = Vec::with_capacity(buf.len() + buf.len() / 4 + 64);
    let mut requests: Vec<(usize, Range<usize>)> = Vec::with_capacity(batch.resources().len());
    let mut scratch = Scratch::default();
    for (index, group) in groups.enumerate() {
        let resources = || group.iter().map(|&r| &batch.resources()[r]);
        let Some(first) = resources().next() else {
            continue;
        };
        let resource_body = range(&first.body);
        let has_attributes = resource_attributes(buf, resource_body.clone())
            .next()
            .is_some();
        if !has_attributes && resources().all(|r| r.scopes.is_empty()) {
            continue;
        }
        out.extend_from_slice(&[0; HEADER_ROOM]);
        let body_start = out.len();
        for resource in resources() {
            for scope in &batch.scopes()[range(&resource.scopes)] {
                let scope_tags = ScopeTags::read(buf, range(&scope.body));
                for span in &batch.spans()[range(&scope.spans)] {
                    write_span(&mut out, buf, range(&span.span), &scope_tags, &mut scratch);
                }
            }
        }
        write_process(&mut out, buf, resource_body, has_attributes);
        // The request's key and length, right before the body.
        let body_len = out.len() - body_start;
        let start = body_start - 1 - varint_len(body_len as u64);
        out[start] = REQUEST_BATCH;
        write_varint_at(&mut out, start + 1, body_len as u64);
        requests.push((index, start..out.len()));
    }
    let out = Bytes::from(out);
    requests
        .into_iter()
        .map(|(index, r)| (index, out.slice(r)))
        .collect()
}

fn range(r: &Range<u32>) -> Range<usize> {
    r.start as usize..r.end as usize
}

/// Per-span lists, kept across spans so their memory is reused.
#[derive(Default)]
struct Scratch {
    attributes: Vec<Range<usize>>,
    events: Vec<Range<usize>>,
    links: Vec<LinkRef>,
}

/// What a link becomes: a reference's ids (raw OTLP bytes) and type.
struct LinkRef {
    trace_id: Range<usize>,
    span_id: Range<usize>,
    ref_type: SpanRefType,
}

/// A field of a message the scanner validated. Fixed32 fields and groups
/// are passed over: no field read here has those types.
enum Field {
    Len(u32, Range<usize>),
    Varint(u32, u64),
    Fixed64(u32, u64),
}

/// The fields of the message `body`, in order. A fault (a bug, as the
/// scanner validated these bytes) ends the walk quietly.
fn fields(buf: &[u8], body: Range<usize>) -> Fields<'_> {
    Fields(Cursor::new(buf, body))
}

struct Fields<'a>(Cursor<'a>);

impl Iterator for Fields<'_> {
    type Item = Field;

    #[inline]
    fn next(&mut self) -> Option<Field> {
        let c = &mut self.0;
        loop {
            if c.at_end() {
                return None;
            }
            let (number, wire_type) = c.tag().ok()?;
            match wire_type {
                LEN => return c.len_delimited().ok().map(|r| Field::Len(number, r)),
                VARINT => return c.varint().ok().map(|v| Field::Varint(number, v)),
                I64 => return c.fixed64().ok().map(|v| Field::Fixed64(number, v)),
                _ => c.skip(number, wire_type, 0).ok()?,
            }
        }
    }
}

/// Every length-delimited field numbered `number` of the message `body`.
fn len_fields(
    buf: &[u8],
    body: Range<usize>,
    number: u32,
) -> impl Iterator<Item = Range<usize>> + '_ {
    fields(buf, body).filter_map(move |f| match f {
        Field::Len(n, r) if n == number => Some(r),
        _ => None,
    })
}

/// The `KeyValue` bodies of a ResourceSpans' resource (a repeated
/// `resource` merges: its attributes concatenate).
fn resource_attributes(
    buf: &[u8],
    resource_spans: Range<usize>,
) -> impl Iterator<Item = Range<usize>> + '_ {
    len_fields(buf, resource_spans, RESOURCE_SPANS_RESOURCE)
        .flat_map(move |r| len_fields(buf, r, RESOURCE_ATTRIBUTES))
}

/// A scope's name and version (raw bytes; the last of each wins, as a
/// repeated `scope` merges).
struct ScopeTags {
    name: Range<usize>,
    version: Range<usize>,
}

impl ScopeTags {
    fn read(buf: &[u8], scope_spans: Range<usize>) -> ScopeTags {
        let mut tags = ScopeTags {
            name: 0..0,
            version: 0..0,
        };
        for scope in len_fields(buf, scope_spans, SCOPE_SPANS_SCOPE) {
            for field in fields(buf, scope) {
                match field {
                    Field::Len(SCOPE_NAME, r) => tags.name = r,
                    Field::Len(SCOPE_VERSION, r) => tags.version = r,
                    _ => {}
                }
            }
        }
        tags
    }
}

/// An attribute's value as this module maps it.
#[derive(Clone, Copy)]
enum Value<'a> {
    /// No value, an empty one, or a profile string-table reference.
    Empty,
    Str(&'a [u8]),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    /// An array or map: mapped by `from_otlp`.
    Owned,
}

/// A `KeyValue`'s key (the last one) and value. A repeated value merges
/// into the one before: its members apply in turn, the last one winning.
fn key_value(buf: &[u8], body: Range<usize>) -> (&[u8], Value<'_>) {
    // The layout every encoder writes: key, then value, one-byte lengths.
    let kv = &buf[body.clone()];
    if let [0x0a, key_len @ 0..0x80, ..] = *kv {
        let key_end = 2 + usize::from(key_len);
        if let Some(&[0x12, value_len @ 0..0x80]) = kv.get(key_end..key_end + 2) {
            let value = &kv[key_end + 2..];
            if value.len() == usize::from(value_len) {
                let key = &kv[2..key_end];
                return match *value {
                    // A string alone.
                    [0x0a, len, ref s @ ..] if s.len() == usize::from(len) => (key, Value::Str(s)),
                    _ => {
                        let at = body.start + key_end + 2;
                        (key, any_value(buf, at..body.end, Value::Empty))
                    }
                };
            }
        }
    }
    let mut key = &buf[0..0];
    let mut value = Value::Empty;
    for field in fields(buf, body) {
        match field {
            Field::Len(KEY_VALUE_KEY, r) => key = &buf[r],
            Field::Len(KEY_VALUE_VALUE, r) => value = any_value(buf, r, value),
            _ => {}
        }
    }
    (key, value)
}

/// An `AnyValue` merged into `value`: the oneof's last member wins (an
/// array or map member, which prost would merge with an earlier one, is
/// left to the owned path).
fn any_value<'a>(buf: &'a [u8], body: Range<usize>, value: Value<'a>) -> Value<'a> {
    fields(buf, body).fold(value, |value, field| match field {
        Field::Len(1, r) => Value::Str(&buf[r]),
        Field::Varint(2, v) => Value::Bool(v != 0),
        Field::Varint(3, v) => Value::Int(v as i64),
        Field::Fixed64(4, v) => Value::Double(f64::from_bits(v)),
        Field::Len(5 | 6, _) => Value::Owned,
        Field::Len(7, r) => Value::Bytes(&buf[r]),
        // A profile string-table reference: no value in traces.
        Field::Varint(8, _) => Value::Empty,
        _ => value,
    })
}

/// The collector's `Value.Str()` of an attribute: its string, or empty.
fn attribute_str<'a>(buf: &'a [u8], body: Range<usize>) -> std::borrow::Cow<'a, [u8]> {
    match key_value(buf, body.clone()).1 {
        Value::Str(s) => s.into(),
        Value::Owned => {
            let kv = KeyValue::decode(&buf[body]).unwrap_or_default();
            value_as_string(kv.value.as_ref()).into_bytes().into()
        }
        _ => (&[][..]).into(),
    }
}

fn put_len_field(out: &mut Vec<u8>, key: u8, bytes: &[u8]) {
    out.push(key);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A proto3 bytes/string field: omitted when empty.
fn put_nonempty(out: &mut Vec<u8>, key: u8, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_len_field(out, key, bytes);
    }
}

/// A proto3 varint field: omitted when 0.
fn put_varint_field(out: &mut Vec<u8>, key: u8, value: u64) {
    if value != 0 {
        out.push(key);
        put_varint(out, value);
    }
}

fn len_field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// A Jaeger `KeyValue` with the given key and value, as field `field_key`.
fn put_tag(out: &mut Vec<u8>, field_key: u8, key: &[u8], value: Value<'_>) {
    let key_len = if key.is_empty() {
        0
    } else {
        len_field_len(key.len())
    };
    let (v_type, value_len) = match value {
        Value::Empty | Value::Owned => (ValueType::String, 0),
        Value::Str(s) => (
            ValueType::String,
            if s.is_empty() {
                0
            } else {
                len_field_len(s.len())
            },
        ),
        Value::Bool(b) => (ValueType::Bool, if b { 2 } else { 0 }),
        Value::Int(i) => (
            ValueType::Int64,
            if i != 0 { 1 + varint_len(i as u64) } else { 0 },
        ),
        Value::Double(d) => (ValueType::Float64, if d != 0.0 { 9 } else { 0 }),
        Value::Bytes(b) => (
            ValueType::Binary,
            if b.is_empty() {
                0
            } else {
                len_field_len(b.len())
            },
        ),
    };
    let type_len = if v_type == ValueType::String { 0 } else { 2 };
    out.push(field_key);
    put_varint(out, (key_len + type_len + value_len) as u64);
    put_nonempty(out, KV_KEY, key);
    put_varint_field(out, KV_TYPE, v_type as u64);
    match value {
        Value::Empty | Value::Owned => {}
        Value::Str(s) => put_nonempty(out, KV_STR, s),
        Value::Bool(b) => put_varint_field(out, KV_BOOL, u64::from(b)),
        Value::Int(i) => put_varint_field(out, KV_INT64, i as u64),
        Value::Double(d) => {
            if d != 0.0 {
                out.push(KV_FLOAT64);
                out.extend_from_slice(&d.to_bits().to_le_bytes());
            }
        }
        Value::Bytes(b) => put_nonempty(out, KV_BINARY, b),
    }
}

/// An OTLP attribute (a `KeyValue` body) as a Jaeger tag.
fn put_attribute(out: &mut Vec<u8>, field_key: u8, buf: &[u8], body: Range<usize>) {
    match key_value(buf, body.clone()) {
        (_, Value::Owned) => {
            let kv = KeyValue::decode(&buf[body]).unwrap_or_default();
            out.push(field_key);
            // Writing to a Vec cannot fail.
            let _ = tag(kv).encode_length_delimited(out);
        }
        (key, value) => put_tag(out, field_key, key, value),
    }
}

fn put_string_tag(out: &mut Vec<u8>, field_key: u8, key: &str, value: &[u8]) {
    put_tag(out, field_key, key.as_bytes(), Value::Str(value));
}

/// A Timestamp or Duration message.
fn put_time(out: &mut Vec<u8>, key: u8, seconds: i64, nanos: i32) {
    let len = if seconds != 0 {
        1 + varint_len(seconds as u64)
    } else {
        0
    } + if nanos != 0 {
        1 + varint_len(i64::from(nanos) as u64)
    } else {
        0
    };
    out.push(key);
    put_varint(out, len as u64);
    put_varint_field(out, TIME_SECONDS, seconds as u64);
    put_varint_field(out, TIME_NANOS, i64::from(nanos) as u64);
}

fn put_timestamp(out: &mut Vec<u8>, key: u8, unix_nanos: u64) {
    let t = timestamp(unix_nanos);
    put_time(out, key, t.seconds, t.nanos);
}

/// An OTLP id as Jaeger's fixed-size id: all zeros unless exactly `N` bytes.
fn put_id<const N: usize>(out: &mut Vec<u8>, key: u8, raw: &[u8]) {
    out.push(key);
    out.push(N as u8);
    if raw.len() == N {
        out.extend_from_slice(raw);
    } else {
        out.extend_from_slice(&[0; N]);
    }
}

fn put_reference(out: &mut Vec<u8>, trace_id: &[u8], span_id: &[u8], ref_type: SpanRefType) {
    let type_len = if ref_type as i32 != 0 { 2 } else { 0 };
    out.push(SPAN_REFERENCES);
    out.push((18 + 10 + type_len) as u8);
    put_id::<16>(out, REF_TRACE_ID, trace_id);
    put_id::<8>(out, REF_SPAN_ID, span_id);
    put_varint_field(out, REF_TYPE, ref_type as u64);
}

/// A link's `opentracing.ref_type` (its first) says CHILD_OF; anything
/// else, or none, is FOLLOWS_FROM.
fn link_ref(buf: &[u8], body: Range<usize>) -> LinkRef {
    let mut link = LinkRef {
        trace_id: 0..0,
        span_id: 0..0,
        ref_type: SpanRefType::FollowsFrom,
    };
    let mut typed = false;
    for field in fields(buf, body) {
        match field {
            Field::Len(1, r) => link.trace_id = r,
            Field::Len(2, r) => link.span_id = r,
            Field::Len(4, r)
                if !typed && key_value(buf, r.clone()).0 == tags::REF_TYPE.as_bytes() =>
            {
                typed = true;
                if *attribute_str(buf, r) == *b"child_of" {
                    link.ref_type = SpanRefType::ChildOf;
                }
            }
            _ => {}
        }
    }
    link
}

/// The fields of a span that are read before writing it (the last of each
/// wins; a repeated `status` merges field by field).
#[derive(Default)]
struct SpanFields {
    trace_id: Range<usize>,
    span_id: Range<usize>,
    trace_state: Range<usize>,
    parent_span_id: Range<usize>,
    name: Range<usize>,
    kind: i32,
    start: u64,
    end: u64,
    status_code: i32,
    status_message: Range<usize>,
}

fn read_span(buf: &[u8], body: Range<usize>, scratch: &mut Scratch) -> SpanFields {
    scratch.attributes.clear();
    scratch.events.clear();
    scratch.links.clear();
    let mut s = SpanFields::default();
    for field in fields(buf, body) {
        match field {
            Field::Len(1, r) => s.trace_id = r,
            Field::Len(2, r) => s.span_id = r,
            Field::Len(3, r) => s.trace_state = r,
            Field::Len(4, r) => s.parent_span_id = r,
            Field::Len(5, r) => s.name = r,
            Field::Varint(6, v) => s.kind = v as i32,
            Field::Fixed64(7, v) => s.start = v,
            Field::Fixed64(8, v) => s.end = v,
            Field::Len(9, r) => scratch.attributes.push(r),
            Field::Len(11, r) => scratch.events.push(r),
            Field::Len(13, r) => scratch.links.push(link_ref(buf, r)),
            // A repeated status merges field by field.
            Field::Len(15, r) => {
                for field in fields(buf, r) {
                    match field {
                        Field::Len(2, r) => s.status_message = r,
                        Field::Varint(3, v) => s.status_code = v as i32,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    s
}

fn write_span(
    out: &mut Vec<u8>,
    buf: &[u8],
    body: Range<usize>,
    scope: &ScopeTags,
    scratch: &mut Scratch,
) {
    let s = read_span(buf, body, scratch);
    // Spans are 128 bytes to 16 KiB long: a two-byte length.
    let span_start = open(out, BATCH_SPANS, 2);
    let trace_id = &buf[s.trace_id.clone()];
    let parent = &buf[s.parent_span_id.clone()];
    put_id::<16>(out, SPAN_TRACE_ID, trace_id);
    put_id::<8>(out, SPAN_SPAN_ID, &buf[s.span_id.clone()]);
    put_nonempty(out, SPAN_OPERATION_NAME, &buf[s.name.clone()]);

    // The parent first; a link to it (same raw ids) gives it its type.
    let has_parent = parent.iter().any(|b| *b != 0);
    let is_parent = |l: &LinkRef| {
        has_parent && &buf[l.trace_id.clone()] == trace_id && &buf[l.span_id.clone()] == parent
    };
    if has_parent {
        let ref_type = scratch
            .links
            .iter()
            .rev()
            .find(|l| is_parent(l))
            .map_or(SpanRefType::ChildOf, |l| l.ref_type);
        put_reference(out, trace_id, parent, ref_type);
    }
    for link in scratch.links.iter().filter(|l| !is_parent(l)) {
        put_reference(
            out,
            &buf[link.trace_id.clone()],
            &buf[link.span_id.clone()],
            link.ref_type,
        );
    }

    put_timestamp(out, SPAN_START_TIME, s.start);
    let d = duration(s.start, s.end);
    put_time(out, SPAN_DURATION, d.seconds, d.nanos);

    put_nonempty_tag(out, tags::SCOPE_NAME, &buf[scope.name.clone()]);
    put_nonempty_tag(out, tags::SCOPE_VERSION, &buf[scope.version.clone()]);
    for attribute in &scratch.attributes {
        put_attribute(out, SPAN_TAGS, buf, attribute.clone());
    }
    let kind = match SpanKind::try_from(s.kind) {
        Ok(SpanKind::Client) => "client",
        Ok(SpanKind::Server) => "server",
        Ok(SpanKind::Producer) => "producer",
        Ok(SpanKind::Consumer) => "consumer",
        Ok(SpanKind::Internal) => "internal",
        _ => "",
    };
    put_nonempty_tag(out, tags::SPAN_KIND, kind.as_bytes());
    if s.status_code == crate::otlp::ProtoStatusCode::Error as i32 {
        put_string_tag(out, SPAN_TAGS, tags::STATUS_CODE, b"ERROR");
        put_tag(out, SPAN_TAGS, tags::ERROR.as_bytes(), Value::Bool(true));
    } else if s.status_code == crate::otlp::ProtoStatusCode::Ok as i32 {
        put_string_tag(out, SPAN_TAGS, tags::STATUS_CODE, b"OK");
    }
    put_nonempty_tag(
        out,
        tags::STATUS_DESCRIPTION,
        &buf[s.status_message.clone()],
    );
    put_nonempty_tag(out, tags::TRACE_STATE, &buf[s.trace_state.clone()]);

    for event in &scratch.events {
        write_log(out, buf, event.clone());
    }
    close(out, span_start, 2);
}

/// A span tag with a string value, unless the value is empty.
fn put_nonempty_tag(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    if !value.is_empty() {
        put_string_tag(out, SPAN_TAGS, key, value);
    }
}

/// An event as a log: its name as an `event` field unless an attribute
/// says it, then its attributes.
fn write_log(out: &mut Vec<u8>, buf: &[u8], body: Range<usize>) {
    let mut time = 0;
    let mut name = 0..0;
    let mut named_by_attribute = false;
    for field in fields(buf, body.clone()) {
        match field {
            Field::Fixed64(1, v) => time = v,
            Field::Len(2, r) => name = r,
            Field::Len(3, r) if !named_by_attribute => {
                named_by_attribute = key_value(buf, r).0 == tags::EVENT.as_bytes();
            }
            _ => {}
        }
    }
    let log_start = open(out, SPAN_LOGS, 1);
    put_timestamp(out, LOG_TIMESTAMP, time);
    if !name.is_empty() && !named_by_attribute {
        put_string_tag(out, LOG_FIELDS, tags::EVENT, &buf[name]);
    }
    for attribute in len_fields(buf, body, 3) {
        put_attribute(out, LOG_FIELDS, buf, attribute);
    }
    close(out, log_start, 1);
}

/// The resource as the batch's process: `service.name` (the last one) is
/// the service name, every other attribute a tag.
fn write_process(
    out: &mut Vec<u8>,
    buf: &[u8],
    resource_spans: Range<usize>,
    has_attributes: bool,
) {
    let process_start = open(out, BATCH_PROCESS, 1);
    if !has_attributes {
        put_len_field(out, PROCESS_SERVICE_NAME, tags::NO_SERVICE_NAME.as_bytes());
    } else {
        let is_service_name = |kv: &Range<usize>| key_value(buf, kv.clone()).0 == b"service.name";
        let service_name = resource_attributes(buf, resource_spans.clone())
            .filter(is_service_name)
            .last()
            .map(|kv| attribute_str(buf, kv))
            .unwrap_or_default();
        put_nonempty(out, PROCESS_SERVICE_NAME, &service_name);
        for kv in resource_attributes(buf, resource_spans).filter(|kv| !is_service_name(kv)) {
            put_attribute(out, PROCESS_TAGS, buf, kv);
        }
    }
    close(out, process_start, 1);
}
