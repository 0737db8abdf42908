//! Merging a fixed set of attributes (the resource detection processor's
//! detected resource) into every resource of a batch, on the encoded bytes:
//! only each `Resource` message is re-encoded; scopes and spans keep their
//! bytes, shared with the batch merged into (not copied), and the index is
//! shifted instead of rebuilt
//! (docs/architecture.md, "Encoded-bytes batches").
//!
//! The semantics are the collector's `MergeResource`: for each attribute in
//! order, an existing key (its first occurrence) gets the new value when
//! overriding and stays otherwise; a missing key is appended.

use std::ops::Range;

use bytes::Bytes;
use prost::Message;

use crate::batch::{FieldLayout, Index, ResourceInfo, SpanBatch};
use crate::otlp::{ExportTraceServiceRequest, KeyValue, Resource};
use crate::wire::{len_key, put_varint, varint_len, Cursor, LEN};

const REQUEST_RESOURCE_SPANS: u32 = 1;
const RESOURCE_SPANS_RESOURCE: u32 = 1;
const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
const RESOURCE_ATTRIBUTES: u32 = 1;
const KEY_VALUE_KEY: u32 = 1;

/// Attributes to merge into resources, encoded once up front.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceAttributes {
    attributes: Vec<KeyValue>,
    /// Each attribute as a whole `Resource.attributes` field: key, length
    /// and the encoded `KeyValue`.
    fields: Vec<Vec<u8>>,
}

impl ResourceAttributes {
    /// The attributes in merge order. Should a key repeat, its first
    /// occurrence is kept (the first detector to set an attribute wins).
    pub fn new(attributes: impl IntoIterator<Item = KeyValue>) -> ResourceAttributes {
        let mut kept: Vec<KeyValue> = Vec::new();
        for kv in attributes {
            if !kept.iter().any(|k| k.key == kv.key) {
                kept.push(kv);
            }
        }
        let fields = kept
            .iter()
            .map(|kv| {
                let body = kv.encode_to_vec();
                let mut field = Vec::with_capacity(body.len() + 6);
                field.push(len_key(RESOURCE_ATTRIBUTES as u8));
                put_varint(&mut field, body.len() as u64);
                field.extend_from_slice(&body);
                field
            })
            .collect();
        ResourceAttributes {
            attributes: kept,
            fields,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.attributes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.attributes.len()
    }

    /// The attributes in merge order.
    pub fn attributes(&self) -> &[KeyValue] {
        &self.attributes
    }

    fn position(&self, key: &[u8]) -> Option<usize> {
        self.attributes
            .iter()
            .position(|kv| kv.key.as_bytes() == key)
    }

    /// The collector's `MergeResource` on an owned resource.
    pub fn merge_into(&self, resource: &mut Resource, override_existing: bool) {
        for kv in &self.attributes {
            match resource.attributes.iter_mut().find(|e| e.key == kv.key) {
                Some(existing) => {
                    if override_existing {
                        existing.value = kv.value.clone();
                    }
                }
                None => resource.attributes.push(kv.clone()),
            }
        }
    }
}

/// How one `ResourceSpans` changes: its `resource` field at `field` (a
/// range of the batch's bytes; empty where a missing one is inserted) is
/// replaced by a field holding `body`.
struct ResourceEdit {
    field: Range<usize>,
    body: Vec<u8>,
}

impl SpanBatch {
    /// Every resource of the batch with `attributes` merged in: with
    /// `override_existing` a detected value replaces the existing one, else
    /// existing attributes stay. Resources that do not change keep their
    /// bytes; a batch where none changes is returned as it came. Takes the
    /// batch by value (a processor owns what it is handed) so the index is
    /// shifted in place instead of copied.
    pub fn merge_resource_attributes(
        mut self,
        attributes: &ResourceAttributes,
        override_existing: bool,
    ) -> SpanBatch {
        if attributes.is_empty() || self.resources().is_empty() {
            return self;
        }
        let mut edits: Vec<Option<ResourceEdit>> = Vec::with_capacity(self.resources().len());
        for resource in self.resources() {
            match self.plan_edit(resource, attributes, override_existing) {
                Ok(edit) => edits.push(edit),
                // Repeated or misplaced resource fields: let prost merge them.
                Err(Unusual) => return self.merged_by_decoding(attributes, override_existing),
            }
        }
        if edits.iter().all(Option::is_none) {
            return self;
        }
        match self.apply_edits(&edits) {
            Ok(()) => self,
            Err(Unusual) => self.merged_by_decoding(attributes, override_existing),
        }
    }

    /// The slow path, for encodings the byte path does not handle. Reads
    /// only the bytes, never the index.
    fn merged_by_decoding(
        &self,
        attributes: &ResourceAttributes,
        override_existing: bool,
    ) -> SpanBatch {
        let mut request: ExportTraceServiceRequest = self.to_request();
        for rs in &mut request.resource_spans {
            attributes.merge_into(
                rs.resource.get_or_insert_with(Resource::default),
                override_existing,
            );
        }
        SpanBatch::from_request(&request)
    }

    fn plan_edit(
        &self,
        resource: &ResourceInfo,
        attributes: &ResourceAttributes,
        override_existing: bool,
    ) -> Result<Option<ResourceEdit>, Unusual> {
        let body = resource.body.start as usize..resource.body.end as usize;
        // Find the one `resource` field, which must precede every scope.
        let mut field = None;
        let mut seen_scope = false;
        let mut c = Cursor::new(&self.bytes, body.clone());
        while !c.at_end() {
            let at = c.pos;
            let (f, wt) = c.tag().map_err(|_| Unusual)?;
            if f == RESOURCE_SPANS_RESOURCE && wt == LEN {
                let inner = c.len_delimited().map_err(|_| Unusual)?;
                if field.is_some() || seen_scope {
                    return Err(Unusual);
                }
                field = Some((at..c.pos, inner));
            } else {
                if f == RESOURCE_SPANS_SCOPE_SPANS {
                    seen_scope = true;
                }
                c.skip(f, wt, 1).map_err(|_| Unusual)?;
            }
        }
        let (field, old_body) = match field {
            Some((field, inner)) => (field, Some(inner)),
            None => (body.start..body.start, None),
        };
        Ok(
            merged_resource_body(&self.bytes, old_body, attributes, override_existing)
                .map(|body| ResourceEdit { field, body }),
        )
    }

    /// Rewrites the request with `edits` applied (one per resource, in
    /// order), then shifts the index in place to match. On `Err` the batch
    /// is unchanged. Only the new headers and resource fields are written:
    /// the unchanged stretches between them (the scopes and spans, nearly
    /// all of the bytes) stay in the batch's buffer, which the result
    /// shares, and the request becomes those pieces in order, joined into
    /// one buffer only if something reads it as one ([`SpanBatch::segments`]).
    fn apply_edits(&mut self, edits: &[Option<ResourceEdit>]) -> Result<(), Unusual> {
        let source: Bytes = self.bytes.joined().clone();
        let src: &[u8] = &source;
        // Pass 1: where each `resource_spans` field is, and the output size.
        let mut fields: Vec<(Range<usize>, Range<usize>)> = Vec::with_capacity(edits.len());
        let mut total = src.len();
        let mut c = Cursor::new(src, 0..src.len());
        while !c.at_end() {
            let at = c.pos;
            let (f, wt) = c.tag().map_err(|_| Unusual)?;
            if f != REQUEST_RESOURCE_SPANS || wt != LEN {
                c.skip(f, wt, 0).map_err(|_| Unusual)?;
                continue;
            }
            let body = c.len_delimited().map_err(|_| Unusual)?;
            let edit = edits.get(fields.len()).ok_or(Unusual)?;
            if let Some(edit) = edit {
                let new_len = body.len() - edit.field.len() + framed_len(edit.body.len());
                total = total - (c.pos - at) + framed_len(new_len);
            }
            fields.push((at..c.pos, body));
        }
        if fields.len() != self.resources().len() || total > u32::MAX as usize {
            return Err(Unusual);
        }

        // Pass 2: write the new bytes, and share the unchanged stretches
        // between edited resources, one piece each.
        let mut out = Pieces::new(&source);
        let mut copied_to = 0;
        // Per resource: how far what follows its resource field moves, and
        // how much its non-child fields grew (both wrapping: edits may
        // shrink a resource).
        let mut moves: Vec<(u32, u32)> = Vec::with_capacity(edits.len());
        for ((field, body), edit) in fields.iter().zip(edits) {
            let Some(edit) = edit else {
                // Copied with the run it belongs to, moved as far as it.
                moves.push(((out.len() as u32).wrapping_sub(copied_to as u32), 0));
                continue;
            };
            out.share(copied_to..field.start);
            let new_field_len = framed_len(edit.body.len());
            let new_len = body.len() - edit.field.len() + new_field_len;
            out.fresh.push(len_key(REQUEST_RESOURCE_SPANS as u8));
            put_varint(&mut out.fresh, new_len as u64);
            out.share(body.start..edit.field.start);
            out.fresh.push(len_key(RESOURCE_SPANS_RESOURCE as u8));
            put_varint(&mut out.fresh, edit.body.len() as u64);
            out.fresh.extend_from_slice(&edit.body);
            moves.push((
                (out.len() as u32).wrapping_sub(edit.field.end as u32),
                (new_field_len as u32).wrapping_sub(edit.field.len() as u32),
            ));
            copied_to = edit.field.end;
        }
        out.share(copied_to..src.len());
        debug_assert_eq!(out.len(), total, "merged request sized wrongly");
        let parts = out.finish();

        let Index {
            resources,
            scopes,
            spans,
        } = self.index_mut();
        for (((info, edit), &(after, growth)), (field, _)) in
            resources.iter_mut().zip(edits).zip(&moves).zip(&fields)
        {
            match edit {
                None => {
                    info.body = shift(&info.body, after);
                    info.resource = info.resource.as_ref().map(|r| shift(r, after));
                    info.layout = shift_layout(info.layout, after, 0);
                }
                Some(edit) => {
                    // Written as: the new header, the body's fields before
                    // the resource field, the new resource field, the rest.
                    let resource_end = (edit.field.end as u32).wrapping_add(after);
                    let resource_start = resource_end - edit.body.len() as u32;
                    let field_header = (framed_len(edit.body.len()) - edit.body.len()) as u32;
                    let head = edit.field.start as u32 - info.body.start;
                    info.body = resource_start - field_header - head
                        ..(field.end as u32).wrapping_add(after);
                    info.resource = Some(resource_start..resource_end);
                    info.layout = shift_layout(info.layout, after, growth);
                }
            }
            let scope_range = info.scopes.start as usize..info.scopes.end as usize;
            if scope_range.is_empty() {
                continue;
            }
            let first_span = scopes[scope_range.start].spans.start as usize;
            let last_span = scopes[scope_range.end - 1].spans.end as usize;
            for scope in &mut scopes[scope_range] {
                scope.body = shift(&scope.body, after);
                scope.layout = shift_layout(scope.layout, after, 0);
            }
            for span in &mut spans[first_span..last_span] {
                span.span = shift(&span.span, after);
            }
        }
        self.bytes = crate::batch::Encoded::concatenation(parts);
        // New bytes: the gzip members they arrived in no longer hold them.
        self.gzip = None;
        Ok(())
    }
}

/// An encoding the byte path leaves to prost.
struct Unusual;

/// The merged request as it is built: pieces of the source buffer, shared,
/// and the bytes written between them.
struct Pieces<'a> {
    source: &'a Bytes,
    parts: Vec<Bytes>,
    /// New bytes since the last shared piece.
    fresh: Vec<u8>,
    /// Bytes in `parts`.
    done: usize,
}

impl<'a> Pieces<'a> {
    /// Below this a stretch of the source is copied with the new bytes
    /// around it rather than shared as a piece of its own.
    const SHARE_FROM: usize = 512;

    fn new(source: &'a Bytes) -> Pieces<'a> {
        Pieces {
            source,
            parts: Vec::new(),
            fresh: Vec::new(),
            done: 0,
        }
    }

    /// Bytes so far.
    fn len(&self) -> usize {
        self.done + self.fresh.len()
    }

    /// Appends `source[range]`.
    fn share(&mut self, range: Range<usize>) {
        if range.len() < Self::SHARE_FROM {
            self.fresh.extend_from_slice(&self.source[range]);
            return;
        }
        self.end_fresh();
        self.done += range.len();
        self.parts.push(self.source.slice(range));
    }

    fn end_fresh(&mut self) {
        if !self.fresh.is_empty() {
            self.done += self.fresh.len();
            self.parts
                .push(Bytes::from(std::mem::take(&mut self.fresh)));
        }
    }

    fn finish(mut self) -> Vec<Bytes> {
        self.end_fresh();
        self.parts
    }
}

/// The `Resource` body with `attributes` merged in, or `None` when it
/// would not change. `old` is the existing body, if any.
fn merged_resource_body(
    src: &[u8],
    old: Option<Range<usize>>,
    attributes: &ResourceAttributes,
    override_existing: bool,
) -> Option<Vec<u8>> {
    let old_len = old.as_ref().map_or(0, |r| r.len());
    let mut out =
        Vec::with_capacity(old_len + attributes.fields.iter().map(Vec::len).sum::<usize>());
    // Small sets (a few dozen at most): a linear scan beats hashing.
    let mut present = vec![false; attributes.len()];
    let mut changed = false;
    if let Some(old) = old {
        let mut c = Cursor::new(src, old);
        while !c.at_end() {
            let at = c.pos;
            let Ok((f, wt)) = c.tag() else { break };
            if f == RESOURCE_ATTRIBUTES && wt == LEN {
                let Ok(kv) = c.len_delimited() else { break };
                let field = &src[at..c.pos];
                match attributes.position(key_value_key(src, kv)) {
                    Some(i) if !present[i] => {
                        present[i] = true;
                        let new = &attributes.fields[i];
                        if override_existing && field != new.as_slice() {
                            out.extend_from_slice(new);
                            changed = true;
                        } else {
                            out.extend_from_slice(field);
                        }
                    }
                    _ => out.extend_from_slice(field),
                }
            } else {
                if c.skip(f, wt, 2).is_err() {
                    break;
                }
                out.extend_from_slice(&src[at..c.pos]);
            }
        }
    }
    for (field, present) in attributes.fields.iter().zip(present) {
        if !present {
            out.extend_from_slice(field);
            changed = true;
        }
    }
    changed.then_some(out)
}

/// The key of an encoded `KeyValue` (the last one, as protobuf merges).
fn key_value_key(src: &[u8], kv: Range<usize>) -> &[u8] {
    let mut key: &[u8] = &[];
    let mut c = Cursor::new(src, kv);
    while !c.at_end() {
        let Ok((f, wt)) = c.tag() else { break };
        if f == KEY_VALUE_KEY && wt == LEN {
            let Ok(r) = c.len_delimited() else { break };
            key = &src[r];
        } else if c.skip(f, wt, 3).is_err() {
            break;
        }
    }
    key
}

fn framed_len(body: usize) -> usize {
    1 + varint_len(body as u64) + body
}

fn shift(r: &Range<u32>, by: u32) -> Range<u32> {
    r.start.wrapping_add(by)..r.end.wrapping_add(by)
}

/// A layout whose non-child fields grew by `other_growth` (wrapping) and
/// whose children moved by `by`: the resource field sits before them all.
fn shift_layout(layout: FieldLayout, by: u32, other_growth: u32) -> FieldLayout {
    FieldLayout {
        other_len: layout.other_len.wrapping_add(other_growth),
        head_end: layout.head_end.wrapping_add(by),
        tail_start: layout.tail_start.wrapping_add(by),
        interleaved: layout.interleaved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{string_kv as kv, ResourceSpans, ScopeSpans, Span};

    fn span(n: u8) -> Span {
        Span {
            trace_id: vec![n; 16],
            span_id: vec![n; 8],
            name: format!("span-{n}"),
            ..Default::default()
        }
    }

    fn resource_spans(resource: Option<Vec<KeyValue>>, spans: &[u8]) -> ResourceSpans {
        ResourceSpans {
            resource: resource.map(|attributes| Resource {
                attributes,
                dropped_attributes_count: 3,
                ..Default::default()
            }),
            scope_spans: vec![
                ScopeSpans {
                    spans: spans.iter().map(|&n| span(n)).collect(),
                    schema_url: "scope-schema".into(),
                    ..Default::default()
                },
                ScopeSpans {
                    spans: vec![span(200)],
                    ..Default::default()
                },
            ],
            schema_url: "https://example.com/schema".into(),
        }
    }

    fn request() -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![
                resource_spans(
                    Some(vec![
                        kv("service.name", "checkout"),
                        kv("host.name", "app-host"),
                    ]),
                    &[1, 2],
                ),
                resource_spans(None, &[3]),
                resource_spans(Some(vec![]), &[4, 5, 6]),
                resource_spans(
                    Some(vec![
                        kv("host.name", "detected-host"),
                        kv("cloud.provider", "gcp"),
                    ]),
                    &[7],
                ),
            ],
        }
    }

    fn detected() -> ResourceAttributes {
        ResourceAttributes::new([
            kv("host.name", "detected-host"),
            kv("cloud.provider", "gcp"),
            // A later detector's value for the same key loses.
            kv("host.name", "ignored"),
        ])
    }

    /// The byte path must equal the collector's semantics on owned
    /// messages, and its shifted index must equal a fresh scan.
    fn check(
        request: &ExportTraceServiceRequest,
        attrs: &ResourceAttributes,
        override_existing: bool,
    ) {
        let batch = SpanBatch::from_request(request);
        let merged = batch.merge_resource_attributes(attrs, override_existing);
        let mut expected = request.clone();
        // The collector's MergeResource returns early on an empty resource.
        if !attrs.is_empty() {
            for rs in &mut expected.resource_spans {
                attrs.merge_into(
                    rs.resource.get_or_insert_with(Resource::default),
                    override_existing,
                );
            }
        }
        assert_eq!(merged.to_request(), expected);
        let rescanned = SpanBatch::scan(merged.bytes().clone()).unwrap();
        assert_eq!(merged.resources(), rescanned.resources());
        assert_eq!(merged.scopes(), rescanned.scopes());
        assert_eq!(merged.spans(), rescanned.spans());
        // Subsets of the merged batch still encode correctly.
        let odd = merged.filter(|s| s.trace_id[0] % 2 == 1);
        assert_eq!(
            odd.to_request(),
            SpanBatch::scan(odd.bytes().clone()).unwrap().to_request()
        );
    }

    #[test]
    fn override_replaces_existing_values_and_appends_missing_ones() {
        let batch = SpanBatch::from_request(&request());
        let merged = batch.merge_resource_attributes(&detected(), true);
        let host = |span: usize| {
            merged
                .resource_attribute(span, "host.name")
                .unwrap()
                .as_str()
        };
        for span in 0..merged.len() {
            assert_eq!(host(span), Some("detected-host"));
        }
        // The existing order stays: service.name first, host.name in place.
        let first: Vec<_> = merged
            .resource_attributes(0)
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(first, ["service.name", "host.name", "cloud.provider"]);
        check(&request(), &detected(), true);
    }

    #[test]
    fn without_override_existing_values_stay() {
        let batch = SpanBatch::from_request(&request());
        let merged = batch.merge_resource_attributes(&detected(), false);
        assert_eq!(
            merged.resource_attribute(0, "host.name").unwrap().as_str(),
            Some("app-host")
        );
        assert_eq!(
            merged
                .resource_attribute(0, "cloud.provider")
                .unwrap()
                .as_str(),
            Some("gcp")
        );
        // A resource that had none gets the detected values.
        let third = merged.resources()[1].scopes.start as usize;
        let span = merged.scopes()[third].spans.start as usize;
        assert_eq!(
            merged
                .resource_attribute(span, "host.name")
                .unwrap()
                .as_str(),
            Some("detected-host")
        );
        check(&request(), &detected(), false);
    }

    #[test]
    fn nothing_to_change_shares_the_bytes() {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![resource_spans(
                Some(vec![
                    kv("host.name", "detected-host"),
                    kv("cloud.provider", "gcp"),
                ]),
                &[1],
            )],
        };
        let batch = SpanBatch::from_request(&request);
        for override_existing in [true, false] {
            let merged = batch
                .clone()
                .merge_resource_attributes(&detected(), override_existing);
            assert_eq!(merged.bytes().as_ptr(), batch.bytes().as_ptr());
            assert_eq!(merged.spans(), batch.spans());
        }
        let empty = ResourceAttributes::new([]);
        assert_eq!(
            batch
                .clone()
                .merge_resource_attributes(&empty, true)
                .bytes()
                .as_ptr(),
            batch.bytes().as_ptr()
        );
    }

    #[test]
    fn shrinking_values_and_long_values_shift_the_index() {
        let long = "x".repeat(300);
        let request = ExportTraceServiceRequest {
            resource_spans: vec![
                resource_spans(Some(vec![kv("host.name", &long)]), &[1, 2]),
                resource_spans(Some(vec![kv("k", "v")]), &[3]),
            ],
        };
        check(
            &request,
            &ResourceAttributes::new([kv("host.name", "short")]),
            true,
        );
        check(&request, &ResourceAttributes::new([kv("k", &long)]), true);
        check(
            &request,
            &ResourceAttributes::new([kv("new", &long)]),
            false,
        );
    }

    #[test]
    fn duplicate_keys_only_the_first_is_overridden() {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![resource_spans(
                Some(vec![kv("host.name", "a"), kv("host.name", "b")]),
                &[1],
            )],
        };
        check(&request, &detected(), true);
    }

    #[test]
    fn unusual_encodings_take_the_decoding_path() {
        use crate::wire::put_varint;
        // A ResourceSpans with the resource after its scope, and one with the
        // resource field twice (protobuf merges them).
        let rs = resource_spans(Some(vec![kv("a", "1")]), &[1]);
        let resource = rs.resource.clone().unwrap().encode_to_vec();
        let scopes: Vec<Vec<u8>> = rs.scope_spans.iter().map(|s| s.encode_to_vec()).collect();
        let field = |out: &mut Vec<u8>, n: u8, body: &[u8]| {
            out.push(len_key(n));
            put_varint(out, body.len() as u64);
            out.extend_from_slice(body);
        };
        let mut late = Vec::new();
        field(&mut late, 2, &scopes[0]);
        field(&mut late, 1, &resource);
        let mut twice = Vec::new();
        field(&mut twice, 1, &resource);
        field(
            &mut twice,
            1,
            &Resource {
                attributes: vec![kv("b", "2")],
                ..Default::default()
            }
            .encode_to_vec(),
        );
        field(&mut twice, 2, &scopes[1]);
        let mut request = Vec::new();
        field(&mut request, 1, &late);
        field(&mut request, 1, &twice);
        let batch = SpanBatch::scan(Bytes::from(request)).unwrap();
        let decoded = batch.to_request();
        for override_existing in [true, false] {
            let merged = batch
                .clone()
                .merge_resource_attributes(&detected(), override_existing);
            let mut expected = decoded.clone();
            for rs in &mut expected.resource_spans {
                detected().merge_into(rs.resource.as_mut().unwrap(), override_existing);
            }
            assert_eq!(merged.to_request(), expected);
            assert_eq!(
                merged.resource_attribute(1, "b").unwrap().as_str(),
                Some("2")
            );
        }
    }

    /// Random requests (resources missing, empty, with keys the detectors
    /// set, repeated keys, several scopes) against the owned-message
    /// semantics, both ways, with the index checked against a rescan.
    #[test]
    fn random_requests_match_the_collector_semantics() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let keys = [
            "host.name",
            "cloud.provider",
            "service.name",
            "k",
            "os.type",
        ];
        let values = ["", "a", "detected-host", "gcp", &"long".repeat(40)];
        let mut rng = StdRng::seed_from_u64(4);
        let pick_kvs = |rng: &mut StdRng, n: usize| -> Vec<KeyValue> {
            (0..n)
                .map(|_| {
                    kv(
                        keys[rng.random_range(0..keys.len())],
                        values[rng.random_range(0..values.len())],
                    )
                })
                .collect()
        };
        for _ in 0..300 {
            let resources = rng.random_range(1..4);
            let mut next_span = 1u8;
            let request = ExportTraceServiceRequest {
                resource_spans: (0..resources)
                    .map(|_| {
                        let resource = match rng.random_range(0..3) {
                            0 => None,
                            1 => Some(vec![]),
                            _ => {
                                let n = rng.random_range(1..5);
                                Some(pick_kvs(&mut rng, n))
                            }
                        };
                        let spans: Vec<u8> = (0..rng.random_range(0..3))
                            .map(|_| {
                                next_span = next_span.wrapping_add(1).max(1);
                                next_span
                            })
                            .collect();
                        resource_spans(resource, &spans)
                    })
                    .collect(),
            };
            let n = rng.random_range(0..5);
            let attrs = ResourceAttributes::new(pick_kvs(&mut rng, n));
            check(&request, &attrs, rng.random_bool(0.5));
        }
    }

    /// Scopes and spans are not copied: the merged request is the new
    /// resource fields between pieces of the buffer merged into.
    #[test]
    fn the_spans_bytes_are_shared_not_copied() {
        let long = |n: u8| Span {
            name: format!("span-{n}-{}", "x".repeat(600)),
            ..span(n)
        };
        let mut request = request();
        for rs in &mut request.resource_spans {
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    *span = long(span.trace_id[0]);
                }
            }
        }
        // One resource that already has every detected attribute.
        let mut unchanged = resource_spans(
            Some(vec![
                kv("host.name", "detected-host"),
                kv("cloud.provider", "gcp"),
            ]),
            &[],
        );
        unchanged.scope_spans[0].spans = vec![long(90), long(91)];
        request.resource_spans.insert(1, unchanged);
        let batch = SpanBatch::from_request(&request);
        let source = batch.bytes().clone();
        let merged = batch.merge_resource_attributes(&detected(), false);
        let segments = merged.segments().to_vec();
        assert!(segments.len() > 2, "{} pieces", segments.len());
        let inside = |p: &Bytes| {
            let at = p.as_ptr() as usize;
            let start = source.as_ptr() as usize;
            at >= start && at + p.len() <= start + source.len()
        };
        let shared: usize = segments.iter().filter(|p| inside(p)).map(Bytes::len).sum();
        let spans: usize = merged.spans().iter().map(|s| s.span.len()).sum();
        assert!(shared >= spans, "{shared} bytes shared, {spans} of spans");
        assert_eq!(segments.concat(), &merged.bytes()[..]);
        check(&request, &detected(), false);
        check(&request, &detected(), true);
    }

    #[test]
    fn concatenated_and_subset_batches_merge_alike() {
        let a = SpanBatch::from_request(&request());
        let joined = SpanBatch::concat(&[a.clone(), a.filter(|s| s.trace_id[0] > 3)]);
        let merged = joined.merge_resource_attributes(&detected(), true);
        let rescanned = SpanBatch::scan(merged.bytes().clone()).unwrap();
        assert_eq!(merged.spans(), rescanned.spans());
        assert_eq!(merged.resources(), rescanned.resources());
        assert_eq!(merged.scopes(), rescanned.scopes());
    }
}
