//! What the model's conversion tests share: reading an OTLP attribute's
//! value and writing a string one, to compare the two.

use crate::otlp::{any_value::Value, KeyValue};

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
