//! A thrift `Batch` view → OTLP request bytes, written directly (the
//! receivers' path): no owned thrift structs, no owned OTLP messages, one
//! scan into a [`SpanBatch`] at the end, or none when the pipeline reads
//! no spans (`otlp_writer::written_batch`).
//!
//! The output is byte for byte what [`super::batch_to_request`] of the
//! owned batch encodes to, and the property tests (`ingest_tests.rs`)
//! compare the two; the mapping's rules are documented there.

use std::borrow::Cow;

use super::model::{SpanRef, TagType};
use super::view::{BatchView, SpanView, TagView};
use crate::jaeger::otlp_writer::{
    put_fixed64_nonzero, put_len_field, put_nonempty, span_kind, status, write_event, write_link,
    write_resource, write_status, written_batch, Attrs, Text, Val,
};
use crate::jaeger::tags;
use crate::scan::is_ascii;
use crate::wire::{close, open, put_varint};
use crate::{Indexing, SpanBatch};

const REF_CHILD_OF: i32 = 0;
const REF_FOLLOWS_FROM: i32 = 1;

/// The batch as a [`SpanBatch`] indexed as `indexing` says: the same
/// batch as `SpanBatch::from_request(&batch_to_request(&batch))` of its
/// owned copy. Lazily, the written request is not scanned at all
/// (`otlp_writer::written_batch`).
pub(crate) fn span_batch(batch: &BatchView<'_>, input_len: usize, indexing: Indexing) -> SpanBatch {
    // The OTLP request takes fewer bytes than the thrift one for typical
    // spans (~0.75 of compact, ~0.55 of binary); past this it grows.
    let mut out = Vec::with_capacity(input_len + input_len / 4 + 64);
    let spans = write_otlp(batch, &mut out);
    match written_batch(out, spans, indexing) {
        Some(batch) => batch,
        // Not expected: ids are always 16 and 8 bytes and nothing nests.
        // The owned path decides then.
        None => SpanBatch::from_request(&super::batch_to_request(&super::model::to_owned(batch))),
    }
}

/// Thrift strings are bytes; OTLP's must be UTF-8, so invalid sequences
/// are replaced, as the owned model's decoding does.
fn text(bytes: &[u8]) -> Text<'_> {
    if is_ascii(bytes) {
        return Cow::Borrowed(bytes);
    }
    match String::from_utf8_lossy(bytes) {
        Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
        Cow::Owned(s) => Cow::Owned(s.into_bytes()),
    }
}

/// Appends the encoded `ExportTraceServiceRequest`: one resource, one
/// scope, the batch's non-blank spans; nothing for a batch without any.
/// Returns the number of spans written.
pub(crate) fn write_otlp(batch: &BatchView<'_>, out: &mut Vec<u8>) -> usize {
    let mut spans = batch.spans.iter().filter(|s| !s.is_blank()).peekable();
    if spans.peek().is_none() {
        // The collector makes a resource with no spans, which counts as
        // nothing; the owned path returns an empty request.
        return 0;
    }
    let mut attrs = Attrs::default();
    let mut fields = Attrs::default();
    let rs = open(out, 0x0a, 3);
    resource_attributes(batch, &mut attrs);
    write_resource(out, &attrs);
    let ss = open(out, 0x12, 3);
    let mut written = 0;
    for span in spans {
        write_span(out, batch, span, &mut attrs, &mut fields);
        written += 1;
    }
    close(out, ss, 3);
    close(out, rs, 3);
    written
}

fn put_tags<'a>(attrs: &mut Attrs<'a>, tags: &[TagView<'a>]) {
    for tag in tags {
        let value = match tag.v_type {
            TagType::String => Val::Str(text(tag.v_str.unwrap_or_default())),
            TagType::Bool => Val::Bool(tag.v_bool.unwrap_or_default()),
            TagType::Long => Val::Int(tag.v_long.unwrap_or_default()),
            TagType::Double => Val::Double(tag.v_double.unwrap_or_default()),
            TagType::Binary => Val::Bytes(tag.v_binary.unwrap_or_default()),
            // What Go prints for an out-of-range TagType with %q.
            TagType::Unknown(_) => Val::Str(Cow::Borrowed(b"<Unknown Jaeger TagType \"<UNSET>\">")),
        };
        attrs.put(text(tag.key), value);
    }
}

/// The resource: `service.name`, the process tags, `hostname` →
/// `host.name` (as a string) and `jaeger.version` →
/// `opencensus.exporterversion`, as `to_otlp::process_attributes`.
fn resource_attributes<'a>(batch: &BatchView<'a>, attrs: &mut Attrs<'a>) {
    attrs.clear();
    if batch.service_name.is_empty() && batch.process_tags.is_none() {
        return;
    }
    if !batch.service_name.is_empty() {
        attrs.put(
            Cow::Borrowed(b"service.name"),
            Val::Str(text(batch.service_name)),
        );
    }
    put_tags(attrs, batch.tags_of(&batch.process_tags));
    if let Some(hostname) = attrs.str("hostname") {
        if attrs.get("host.name").is_none() {
            attrs.remove("hostname");
            attrs.put(Cow::Borrowed(b"host.name"), Val::Str(hostname));
        }
    }
    if let Some(version) = attrs.str("jaeger.version") {
        if attrs.get("opencensus.exporterversion").is_none() {
            attrs.remove("jaeger.version");
            attrs.put(
                Cow::Borrowed(b"opencensus.exporterversion"),
                Val::Str(Cow::Owned([&b"Jaeger-"[..], &version].concat())),
            );
        }
    }
}

/// `parentSpanId`, else the first CHILD_OF reference into the same trace,
/// else the first FOLLOWS_FROM one.
fn parent_span_id(span: &SpanView<'_>, refs: &[SpanRef]) -> i64 {
    if span.parent_span_id != 0 {
        return span.parent_span_id;
    }
    let same_trace =
        |r: &&SpanRef| r.trace_id_high == span.trace_id_high && r.trace_id_low == span.trace_id_low;
    refs.iter()
        .filter(same_trace)
        .find(|r| r.ref_type == REF_CHILD_OF)
        .or_else(|| {
            refs.iter()
                .filter(same_trace)
                .find(|r| r.ref_type == REF_FOLLOWS_FROM)
        })
        .map_or(0, |r| r.span_id)
}

fn trace_id(high: i64, low: i64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&high.to_be_bytes());
    id[8..].copy_from_slice(&low.to_be_bytes());
    id
}

/// Epoch microseconds as Go converts them: `uint64(µs) * 1000`, wrapping.
fn micros_to_nanos(us: i64) -> u64 {
    (us as u64).wrapping_mul(1000)
}

fn write_span<'a>(
    out: &mut Vec<u8>,
    batch: &BatchView<'a>,
    span: &SpanView<'a>,
    attrs: &mut Attrs<'a>,
    fields: &mut Attrs<'a>,
) {
    let refs = batch.refs_of(&span.references);
    let parent = parent_span_id(span, refs);
    attrs.clear();
    put_tags(attrs, batch.tags_of(&span.tags));
    let mut kind = 0;
    if let Some(tag) = attrs.str(tags::SPAN_KIND) {
        kind = span_kind(&tag);
        attrs.remove(tags::SPAN_KIND);
    }
    let status = status(attrs, kind);

    let s = open(out, 0x12, 2);
    put_len_field(out, 0x0a, &trace_id(span.trace_id_high, span.trace_id_low));
    put_len_field(out, 0x12, &span.span_id.to_be_bytes());
    if parent != 0 {
        put_len_field(out, 0x22, &parent.to_be_bytes());
    }
    put_nonempty(out, 0x2a, &text(span.operation_name));
    if kind != 0 {
        out.push(0x30);
        put_varint(out, kind as u64);
    }
    put_fixed64_nonzero(out, 0x39, micros_to_nanos(span.start_time));
    put_fixed64_nonzero(
        out,
        0x41,
        micros_to_nanos(span.start_time.wrapping_add(span.duration)),
    );
    attrs.write(out, 0x4a);
    for log in batch.logs_of(&span.logs) {
        fields.clear();
        put_tags(fields, batch.tags_of(&Some(log.fields.clone())));
        write_event(out, micros_to_nanos(log.timestamp), fields);
    }
    for r in refs {
        let child_of = r.ref_type == REF_CHILD_OF;
        if child_of && r.span_id == parent {
            continue;
        }
        let id = trace_id(r.trace_id_high, r.trace_id_low);
        write_link(out, &id, &r.span_id.to_be_bytes(), child_of);
    }
    write_status(out, status);
    close(out, s, 2);
}
