//! What the model's tests share: reading an OTLP attribute's value and
//! writing a string one, to compare the two, and comparing two batches'
//! indexes.

use crate::otlp::{any_value::Value, KeyValue};
use crate::SpanBatch;

/// `got` has `want`'s bytes and the same index (building it if `got` is
/// lazily indexed).
pub(crate) fn assert_same_index(got: &SpanBatch, want: &SpanBatch) {
    assert_eq!(got.len(), want.len());
    assert_eq!(got.spans(), want.spans());
    assert_eq!(got.scopes(), want.scopes());
    assert_eq!(got.resources(), want.resources());
    assert_eq!(got.bytes(), want.bytes());
}

/// The value of the attribute `key`, if it is there and has one.
pub(crate) fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// Asserts that `attrs` hold each `(key, value)` of `want`.
#[track_caller]
pub(crate) fn assert_attrs(attrs: &[KeyValue], want: &[(&str, Value)]) {
    for (key, value) in want {
        assert_eq!(attr(attrs, key), Some(value), "attribute {key}");
    }
}

/// A string value.
pub(crate) fn s(text: &str) -> Value {
    Value::StringValue(text.into())
}
