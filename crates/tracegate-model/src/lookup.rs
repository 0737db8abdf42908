//! Lazy reads from a scanned batch's bytes: attributes by key, names.
//!
//! The scanner validated these bytes, so none of these reads can meet a
//! malformed field; should one ever (a bug), it ends quietly instead of
//! panicking.

use std::ops::Range;

use crate::batch::AnyValueRef;
use crate::wire::{Cursor, I64, LEN, VARINT};

// Field numbers the lookups follow.
pub(crate) const SPAN_TRACE_STATE: u32 = 3;
pub(crate) const SPAN_NAME: u32 = 5;
pub(crate) const SPAN_ATTRIBUTES: u32 = 9;
pub(crate) const RESOURCE_SPANS_RESOURCE: u32 = 1;
pub(crate) const RESOURCE_ATTRIBUTES: u32 = 1;
pub(crate) const SCOPE_SPANS_SCOPE: u32 = 1;
pub(crate) const SCOPE_ATTRIBUTES: u32 = 3;
const KEY_VALUE_KEY: u32 = 1;
const KEY_VALUE_VALUE: u32 = 2;
const ARRAY_VALUES: u32 = 1;
const KVLIST_VALUES: u32 = 1;

/// Steps to the next length-delimited field numbered `field`, skipping the
/// others, and returns its body.
fn next_len_field(c: &mut Cursor<'_>, field: u32) -> Option<Range<usize>> {
    while !c.at_end() {
        let (f, wt) = c.tag().ok()?;
        if f == field && wt == LEN {
            return c.len_delimited().ok();
        }
        // Depth only bounds groups, which the scanner already walked.
        c.skip(f, wt, 0).ok()?;
    }
    None
}

/// The last occurrence of string field `field` in a message (protobuf: the
/// last value wins), or "".
pub(crate) fn last_string(buf: &[u8], body: Range<usize>, field: u32) -> &str {
    let mut c = Cursor::new(buf, body);
    let mut last = None;
    while let Some(r) = next_len_field(&mut c, field) {
        last = Some(r);
    }
    last.and_then(|r| std::str::from_utf8(&buf[r]).ok())
        .unwrap_or("")
}

/// Key-value attributes read lazily from encoded `KeyValue` fields, in
/// encoded order. Each item is the key and the value, `None` when the value
/// is empty.
#[derive(Clone)]
pub struct Attributes<'a> {
    buf: &'a [u8],
    /// Walks the message holding the attributes.
    inner: Cursor<'a>,
    /// The attributes' field number in that message.
    field: u32,
    /// When the attributes live in a sub-message that may repeat (a
    /// `Resource` inside `ResourceSpans`): the walk over the outer message
    /// and the sub-message's field number.
    outer: Option<(Cursor<'a>, u32)>,
}

impl<'a> Attributes<'a> {
    /// The attributes in field `field` of the message `body`.
    pub(crate) fn of_message(buf: &'a [u8], body: Range<usize>, field: u32) -> Self {
        Attributes {
            buf,
            inner: Cursor::new(buf, body),
            field,
            outer: None,
        }
    }

    /// The attributes in field `field` of every sub-message `sub` of `body`
    /// (repeated sub-messages merge, so their attributes concatenate).
    pub(crate) fn of_submessages(buf: &'a [u8], body: Range<usize>, sub: u32, field: u32) -> Self {
        Attributes {
            buf,
            inner: Cursor::new(buf, 0..0),
            field,
            outer: Some((Cursor::new(buf, body), sub)),
        }
    }

    /// The entries of an encoded `KeyValueList`.
    fn of_kvlist(buf: &'a [u8]) -> Self {
        Attributes::of_message(buf, 0..buf.len(), KVLIST_VALUES)
    }
}

impl<'a> Attributes<'a> {
    /// The next `KeyValue`'s key and value bodies.
    fn next_parts(&mut self) -> Option<(Range<usize>, Option<Range<usize>>)> {
        loop {
            if let Some(kv) = next_len_field(&mut self.inner, self.field) {
                return Some(key_value_parts(self.buf, kv));
            }
            let (outer, sub) = self.outer.as_mut()?;
            let body = next_len_field(outer, *sub)?;
            self.inner = Cursor::new(self.buf, body);
        }
    }

    /// The value of the first attribute named `key`, decoding no other value
    /// on the way; `None` when absent or empty.
    pub fn get(mut self, key: &str) -> Option<AnyValueRef<'a>> {
        let buf = self.buf;
        while let Some((k, v)) = self.next_parts() {
            if &buf[k] == key.as_bytes() {
                return v.and_then(|v| any_value(&buf[v]));
            }
        }
        None
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (&'a str, Option<AnyValueRef<'a>>);

    fn next(&mut self) -> Option<Self::Item> {
        let buf = self.buf;
        let (key, value) = self.next_parts()?;
        let key = std::str::from_utf8(&buf[key]).unwrap_or("");
        Some((key, value.and_then(|v| any_value(&buf[v]))))
    }
}

/// A `KeyValue`'s key and value bodies (last occurrences win).
fn key_value_parts(buf: &[u8], body: Range<usize>) -> (Range<usize>, Option<Range<usize>>) {
    // The layout every encoder writes: key then value, one-byte lengths.
    if let Some(&[0x0a, key_len]) = buf.get(body.start..body.start + 2) {
        let key_end = body.start + 2 + usize::from(key_len);
        if key_len < 0x80 {
            if let Some(&[0x12, value_len]) = buf.get(key_end..key_end + 2) {
                if value_len < 0x80 && key_end + 2 + usize::from(value_len) == body.end {
                    return (body.start + 2..key_end, Some(key_end + 2..body.end));
                }
            }
        }
    }
    let mut c = Cursor::new(buf, body);
    let mut key = 0..0;
    let mut value = None;
    while !c.at_end() {
        let Ok((f, wt)) = c.tag() else { break };
        match (f, wt) {
            (KEY_VALUE_KEY, LEN) => match c.len_delimited() {
                Ok(r) => key = r,
                Err(_) => break,
            },
            (KEY_VALUE_VALUE, LEN) => match c.len_delimited() {
                Ok(r) => value = Some(r),
                Err(_) => break,
            },
            _ => {
                if c.skip(f, wt, 0).is_err() {
                    break;
                }
            }
        }
    }
    (key, value)
}

/// Decodes an encoded `AnyValue`; `None` when it holds nothing (or only a
/// profiles string-table reference, which means nothing in traces).
pub(crate) fn any_value(body: &[u8]) -> Option<AnyValueRef<'_>> {
    let mut c = Cursor::new(body, 0..body.len());
    let mut value = None;
    // A oneof: the last member on the wire wins.
    while !c.at_end() {
        let (f, wt) = c.tag().ok()?;
        value = match (f, wt) {
            (1, LEN) => Some(AnyValueRef::String(
                std::str::from_utf8(&body[c.len_delimited().ok()?]).ok()?,
            )),
            (2, VARINT) => Some(AnyValueRef::Bool(c.varint().ok()? != 0)),
            (3, VARINT) => Some(AnyValueRef::Int(c.varint().ok()? as i64)),
            (4, I64) => Some(AnyValueRef::Double(f64::from_bits(c.fixed64().ok()?))),
            (5, LEN) => Some(AnyValueRef::Array(&body[c.len_delimited().ok()?])),
            (6, LEN) => Some(AnyValueRef::KvList(&body[c.len_delimited().ok()?])),
            (7, LEN) => Some(AnyValueRef::Bytes(&body[c.len_delimited().ok()?])),
            (8, VARINT) => {
                c.varint().ok()?;
                None
            }
            _ => {
                c.skip(f, wt, 0).ok()?;
                value
            }
        };
    }
    value
}

/// The elements of an encoded `ArrayValue`, `None` for empty elements.
#[derive(Clone)]
pub struct ArrayValues<'a> {
    buf: &'a [u8],
    cursor: Cursor<'a>,
}

impl<'a> Iterator for ArrayValues<'a> {
    type Item = Option<AnyValueRef<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        let r = next_len_field(&mut self.cursor, ARRAY_VALUES)?;
        Some(any_value(&self.buf[r]))
    }
}

impl<'a> AnyValueRef<'a> {
    /// The string, if this is a string value.
    pub fn as_str(&self) -> Option<&'a str> {
        match *self {
            AnyValueRef::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            AnyValueRef::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match *self {
            AnyValueRef::Int(i) => Some(i),
            _ => None,
        }
    }

    pub fn as_double(&self) -> Option<f64> {
        match *self {
            AnyValueRef::Double(d) => Some(d),
            _ => None,
        }
    }

    /// The elements, if this is an array (empty otherwise).
    pub fn array_values(&self) -> ArrayValues<'a> {
        let buf: &'a [u8] = match *self {
            AnyValueRef::Array(b) => b,
            _ => &[],
        };
        ArrayValues {
            buf,
            cursor: Cursor::new(buf, 0..buf.len()),
        }
    }

    /// The entries, if this is a key-value list (empty otherwise).
    pub fn kvlist_entries(&self) -> Attributes<'a> {
        match *self {
            AnyValueRef::KvList(b) => Attributes::of_kvlist(b),
            _ => Attributes::of_kvlist(&[]),
        }
    }
}
