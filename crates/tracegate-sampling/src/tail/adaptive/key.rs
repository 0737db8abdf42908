//! A `dynamic` trace's key fields recorded as its spans arrive, so that
//! deciding a trace needs none of its spans: the buffer would otherwise
//! assemble every trace to read its root span, where the fixed policies
//! assemble only the traces they keep.
//!
//! [`KeyFields`] lists the attribute names the set's `dynamic` policies
//! read, each once. The buffer records their values
//! ([`KeyFields::record`]) from a trace's first span and again from its
//! first root span when that arrives, which is exactly the span
//! [`Dynamic::key_of`](super::dynamic::Dynamic::key_of) reads from the
//! assembled trace (the root first in arrival order, else the first
//! span). A policy builds its key from the recorded values
//! ([`RecordedKey::values`]) as it would from that span.
//!
//! A record is bounded: values longer than [`MAX_RECORDED_KEY_BYTES`] in
//! all are not kept; the trace is then marked, and its key read from its
//! assembled spans at the decision, as before, so the key is the same
//! either way.

use tracegate_model::SpanBatch;

use super::dynamic::push_value;

/// The most bytes a trace's recorded key values take (their text plus a
/// length byte each). Longer keys are read from the spans at the decision.
pub const MAX_RECORDED_KEY_BYTES: usize = 256;

/// Flag bits of a record's first byte.
const FROM_ROOT: u8 = 1;
const OVER_CAP: u8 = 2;

/// The attribute names every `dynamic` policy of a set reads, each once,
/// in the order they first appear.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyFields {
    names: Vec<String>,
}

impl KeyFields {
    /// Adds `name` if new; returns its index.
    pub(crate) fn index_of(&mut self, name: &str) -> usize {
        match self.names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                self.names.push(name.to_string());
                self.names.len() - 1
            }
        }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The fields' values at span `span` of `batch` (its attribute, else
    /// its resource's, written as a key writes them), `from_root` when the
    /// span is the trace's root.
    pub fn record(
        &self,
        batch: &SpanBatch,
        span: usize,
        from_root: bool,
        scratch: &mut KeyScratch,
    ) -> RecordedKey {
        let flags = if from_root { FROM_ROOT } else { 0 };
        let KeyScratch { bytes, text } = scratch;
        bytes.clear();
        bytes.push(flags);
        for field in &self.names {
            text.clear();
            let value = batch
                .span_attribute(span, field)
                .or_else(|| batch.resource_attribute(span, field));
            push_value(text, value);
            // The flags byte is not counted.
            if text.len() > u8::MAX as usize || bytes.len() + text.len() > MAX_RECORDED_KEY_BYTES {
                return RecordedKey(Box::new([flags | OVER_CAP]));
            }
            bytes.push(text.len() as u8);
            bytes.extend_from_slice(text.as_bytes());
        }
        RecordedKey(bytes.as_slice().into())
    }
}

/// Buffers [`KeyFields::record`] reuses.
#[derive(Debug, Default)]
pub struct KeyScratch {
    bytes: Vec<u8>,
    text: String,
}

/// A trace's key field values as recorded at arrival (see the module
/// docs): one flags byte, then per field a length byte and the value's
/// text. Over the cap, the flags byte alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedKey(Box<[u8]>);

impl RecordedKey {
    /// Recorded from the trace's root span (final: later spans do not
    /// change the key).
    pub fn from_root(&self) -> bool {
        self.0.first().is_some_and(|f| f & FROM_ROOT != 0)
    }

    /// The values were longer than [`MAX_RECORDED_KEY_BYTES`]: the key is
    /// read from the spans.
    pub fn over_cap(&self) -> bool {
        self.0.first().is_some_and(|f| f & OVER_CAP != 0)
    }

    /// Heap bytes the record holds.
    pub fn memory(&self) -> u64 {
        self.0.len() as u64
    }

    /// The values, when within the cap.
    pub fn values(&self) -> Option<RecordedValues<'_>> {
        (!self.over_cap()).then(|| RecordedValues(self.0.get(1..).unwrap_or_default()))
    }
}

/// The recorded values of a [`KeyFields`], by field index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedValues<'a>(&'a [u8]);

impl<'a> RecordedValues<'a> {
    /// The value of field `index` as a key writes it ("" when absent).
    pub fn get(&self, index: usize) -> &'a str {
        let mut at = 0usize;
        let mut n = 0usize;
        while at < self.0.len() {
            let len = self.0[at] as usize;
            let value = self.0.get(at + 1..at + 1 + len).unwrap_or_default();
            if n == index {
                // Written from `&str`s and cut only at their ends.
                return std::str::from_utf8(value).unwrap_or_default();
            }
            at += 1 + len;
            n += 1;
        }
        ""
    }
}
