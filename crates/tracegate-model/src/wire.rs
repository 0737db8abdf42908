//! Protobuf wire-format primitives: varints, tags, length-delimited fields.
//!
//! A `Cursor` reads a window of the request with absolute offsets, so a
//! fault can say where in the request it happened. Every read is bounds
//! checked against the window's end; nothing here allocates.

use std::ops::Range;

/// Wire type of varint fields (int32, int64, uint32, bool, enum).
pub const VARINT: u8 = 0;
/// Wire type of 8-byte fields (fixed64, sfixed64, double).
pub const I64: u8 = 1;
/// Wire type of length-delimited fields (string, bytes, messages, packed).
pub const LEN: u8 = 2;
/// Wire type that opens a (deprecated) group.
pub const SGROUP: u8 = 3;
/// Wire type that closes a group.
pub const EGROUP: u8 = 4;
/// Wire type of 4-byte fields (fixed32, sfixed32, float).
pub const I32: u8 = 5;

/// How deep messages and groups may nest, counting the request as depth 0.
/// prost refuses more than 100 levels, and [`crate::SpanBatch::to_request`]
/// must be able to decode everything the scanner accepts.
pub const MAX_DEPTH: u32 = 64;

/// A low-level wire fault; the scanner turns it into a message that names the
/// enclosing protobuf message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fault {
    pub offset: usize,
    pub kind: FaultKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultKind {
    /// A varint runs past the end of its message or is longer than 10 bytes.
    Varint,
    /// A field number of 0 or above 2^29-1.
    FieldNumber,
    /// Wire type 6 or 7.
    WireType,
    /// A length-delimited field longer than what is left of its message.
    Length,
    /// A fixed32/fixed64 field cut by the end of its message.
    Fixed,
    /// An end-group tag with no open group, or closing a different group.
    EndGroup,
    /// A group nested deeper than [`MAX_DEPTH`].
    Depth,
}

impl FaultKind {
    pub(crate) const COUNT: usize = 7;

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

#[inline]
fn fault<T>(offset: usize, kind: FaultKind) -> Result<T, Fault> {
    Err(Fault { offset, kind })
}

/// A reader over `buf[pos..end]` that keeps offsets absolute.
#[derive(Clone)]
pub(crate) struct Cursor<'a> {
    /// The whole buffer truncated at the window's end, so `buf.len()` is the end.
    buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor over `buf[range]`. The range must lie inside `buf`.
    #[inline]
    pub fn new(buf: &'a [u8], range: Range<usize>) -> Cursor<'a> {
        let end = range.end.min(buf.len());
        Cursor {
            buf: &buf[..end],
            pos: range.start.min(end),
        }
    }

    #[inline(always)]
    pub fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The end of the window.
    #[inline(always)]
    pub fn end(&self) -> usize {
        self.buf.len()
    }

    /// The next byte, not consumed.
    #[inline(always)]
    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// The next two bytes, not consumed.
    #[inline(always)]
    pub fn peek2(&self) -> Option<[u8; 2]> {
        match self.buf.get(self.pos..self.pos + 2) {
            Some(&[a, b]) => Some([a, b]),
            _ => None,
        }
    }

    #[inline(always)]
    pub fn varint(&mut self) -> Result<u64, Fault> {
        match self.buf.get(self.pos) {
            Some(&b) if b < 0x80 => {
                self.pos += 1;
                Ok(u64::from(b))
            }
            // Two bytes: the lengths of spans and of long strings.
            Some(&b0) => match self.buf.get(self.pos + 1) {
                Some(&b1) if b1 < 0x80 => {
                    self.pos += 2;
                    Ok(u64::from(b0 & 0x7f) | u64::from(b1) << 7)
                }
                _ => self.varint_slow(),
            },
            None => self.varint_slow(),
        }
    }

    #[cold]
    fn varint_slow(&mut self) -> Result<u64, Fault> {
        let start = self.pos;
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(start + i) else {
                return fault(start, FaultKind::Varint);
            };
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                // The 10th byte may only carry the top bit of a u64, as in
                // protobuf-go's ConsumeVarint and prost.
                if i == 9 && b > 1 {
                    return fault(start, FaultKind::Varint);
                }
                self.pos = start + i + 1;
                return Ok(value);
            }
        }
        fault(start, FaultKind::Varint)
    }

    /// Reads a field key: (field number, wire type).
    #[inline(always)]
    pub fn tag(&mut self) -> Result<(u32, u8), Fault> {
        // Fields 1-15 with a valid wire type: one byte, one test.
        if let Some(&b) = self.buf.get(self.pos) {
            if (8..0x80).contains(&b) && b & 7 <= I32 {
                self.pos += 1;
                return Ok((u32::from(b >> 3), b & 7));
            }
            // Fields 16-2047 (Span.flags is 16): two bytes.
            if b >= 0x80 && b & 7 <= I32 {
                if let Some(&b1) = self.buf.get(self.pos + 1) {
                    if (1..0x80).contains(&b1) {
                        self.pos += 2;
                        let key = u32::from(b & 0x7f) | u32::from(b1) << 7;
                        return Ok((key >> 3, b & 7));
                    }
                }
            }
        }
        self.tag_slow()
    }

    #[inline(never)]
    fn tag_slow(&mut self) -> Result<(u32, u8), Fault> {
        let at = self.pos;
        let key = self.varint()?;
        let wire_type = (key & 7) as u8;
        if key > u64::from(u32::MAX) || key >> 3 == 0 {
            return fault(at, FaultKind::FieldNumber);
        }
        if wire_type > I32 {
            return fault(at, FaultKind::WireType);
        }
        Ok(((key >> 3) as u32, wire_type))
    }

    /// Reads the length of a length-delimited field and steps over its body,
    /// returning the body's range.
    #[inline(always)]
    pub fn len_delimited(&mut self) -> Result<Range<usize>, Fault> {
        let at = self.pos;
        let len = self.varint()?;
        let start = self.pos;
        let remaining = (self.buf.len() - start) as u64;
        if len > remaining {
            return fault(at, FaultKind::Length);
        }
        self.pos = start + len as usize;
        Ok(start..self.pos)
    }

    #[inline(always)]
    pub fn fixed64(&mut self) -> Result<u64, Fault> {
        match self.buf.get(self.pos..self.pos + 8) {
            Some(b) => {
                self.pos += 8;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Ok(u64::from_le_bytes(a))
            }
            None => fault(self.pos, FaultKind::Fixed),
        }
    }

    #[inline]
    pub fn fixed32(&mut self) -> Result<u32, Fault> {
        match self.buf.get(self.pos..self.pos + 4) {
            Some(b) => {
                self.pos += 4;
                let mut a = [0u8; 4];
                a.copy_from_slice(b);
                Ok(u32::from_le_bytes(a))
            }
            None => fault(self.pos, FaultKind::Fixed),
        }
    }

    /// Steps over the value of a field this reader does not interpret, as
    /// protobuf requires for unknown fields. `depth` is the depth of the
    /// message holding the field; groups nest one level deeper each.
    pub fn skip(&mut self, field: u32, wire_type: u8, depth: u32) -> Result<(), Fault> {
        match wire_type {
            VARINT => self.varint().map(drop),
            I64 => self.fixed64().map(drop),
            LEN => self.len_delimited().map(drop),
            I32 => self.fixed32().map(drop),
            SGROUP => self.skip_group(field, depth + 1),
            // An end-group tag is only valid inside skip_group.
            _ => fault(self.pos, FaultKind::EndGroup),
        }
    }

    fn skip_group(&mut self, field: u32, depth: u32) -> Result<(), Fault> {
        if depth > MAX_DEPTH {
            return fault(self.pos, FaultKind::Depth);
        }
        loop {
            let at = self.pos;
            let (inner, wire_type) = self.tag()?;
            if wire_type == EGROUP {
                if inner != field {
                    return fault(at, FaultKind::EndGroup);
                }
                return Ok(());
            }
            self.skip(inner, wire_type, depth)?;
        }
    }
}

/// Bytes needed to encode `value` as a varint.
#[inline]
pub fn varint_len(value: u64) -> usize {
    // 1 byte per started group of 7 significant bits; 0 needs one byte too.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends `value` as a varint.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The one-byte key of a length-delimited field with a number below 16.
#[inline]
pub const fn len_key(field: u8) -> u8 {
    (field << 3) | LEN
}

/// Opens a message field: its key and `reserved` bytes for its length.
pub(crate) fn open(out: &mut Vec<u8>, key: u8, reserved: usize) -> usize {
    out.push(key);
    out.resize(out.len() + reserved, 0);
    out.len()
}

/// Closes what [`open`] began at `body_start`: writes the length, moving
/// the body when it takes other than `reserved` bytes.
pub(crate) fn close(out: &mut Vec<u8>, body_start: usize, reserved: usize) {
    let len = out.len() - body_start;
    let needed = varint_len(len as u64);
    let len_at = body_start - reserved;
    if needed != reserved {
        let new_start = len_at + needed;
        if needed > reserved {
            out.resize(out.len() + needed - reserved, 0);
        }
        out.copy_within(body_start..body_start + len, new_start);
        out.truncate(new_start + len);
    }
    write_varint_at(out, len_at, len as u64);
}

/// Writes `v` as a varint over the bytes at `at`, which must have room.
pub(crate) fn write_varint_at(out: &mut [u8], mut at: usize, mut v: u64) {
    while v >= 0x80 {
        out[at] = (v as u8) | 0x80;
        v >>= 7;
        at += 1;
    }
    out[at] = v as u8;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(bytes: &[u8]) -> Cursor<'_> {
        Cursor::new(bytes, 0..bytes.len())
    }

    #[test]
    fn varint_round_trips_and_lengths_match_prost() {
        let values = [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            1 << 56,
            (1 << 63) - 1,
            u64::MAX,
        ];
        for v in values {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "len of {v}");
            assert_eq!(out.len(), prost::encoding::encoded_len_varint(v));
            let mut c = cursor(&out);
            assert_eq!(c.varint(), Ok(v));
            assert!(c.at_end());
        }
    }

    #[test]
    fn non_minimal_varints_are_accepted_like_protobuf_go() {
        // 1 encoded in 3 bytes.
        let mut c = cursor(&[0x81, 0x80, 0x00]);
        assert_eq!(c.varint(), Ok(1));
        assert_eq!(c.pos, 3);
    }

    #[test]
    fn overlong_and_truncated_varints_are_faults() {
        let eleven = [0x80u8; 10];
        let mut with_end = eleven.to_vec();
        with_end.push(0);
        assert_eq!(
            cursor(&with_end).varint().unwrap_err().kind,
            FaultKind::Varint
        );
        // 10th byte above 1 overflows u64.
        let mut overflow = [0xffu8; 10];
        overflow[9] = 0x02;
        assert_eq!(
            cursor(&overflow).varint().unwrap_err().kind,
            FaultKind::Varint
        );
        overflow[9] = 0x01;
        assert_eq!(cursor(&overflow).varint(), Ok(u64::MAX));
        assert_eq!(
            cursor(&[0x80, 0x80]).varint().unwrap_err().kind,
            FaultKind::Varint
        );
        assert_eq!(cursor(&[]).varint().unwrap_err().kind, FaultKind::Varint);
    }

    #[test]
    fn cursor_window_stops_at_its_end_not_the_buffer_end() {
        let bytes = [0x0a, 0x05, 1, 2, 3, 4, 5];
        // Window cuts the length-delimited body short.
        let mut c = Cursor::new(&bytes, 0..4);
        assert_eq!(c.tag(), Ok((1, LEN)));
        let f = c.len_delimited().unwrap_err();
        assert_eq!(
            f,
            Fault {
                offset: 1,
                kind: FaultKind::Length
            }
        );
        let mut c = Cursor::new(&bytes, 0..7);
        c.tag().unwrap();
        assert_eq!(c.len_delimited(), Ok(2..7));
        assert!(c.at_end());
    }

    #[test]
    fn bad_tags_are_faults() {
        // Field number 0.
        assert_eq!(
            cursor(&[0x02]).tag().unwrap_err().kind,
            FaultKind::FieldNumber
        );
        // Wire types 6 and 7.
        assert_eq!(cursor(&[0x0e]).tag().unwrap_err().kind, FaultKind::WireType);
        assert_eq!(cursor(&[0x0f]).tag().unwrap_err().kind, FaultKind::WireType);
        // Key above u32::MAX.
        let mut key = Vec::new();
        put_varint(&mut key, 1 << 35);
        assert_eq!(cursor(&key).tag().unwrap_err().kind, FaultKind::FieldNumber);
        // Largest field number is fine.
        let mut key = Vec::new();
        put_varint(&mut key, ((1u64 << 29) - 1) << 3);
        assert_eq!(cursor(&key).tag(), Ok(((1 << 29) - 1, VARINT)));
    }

    #[test]
    fn skip_handles_every_wire_type() {
        // varint, fixed64, len, fixed32, then a group holding a varint.
        let bytes = [
            0x08, 0x96, 0x01, // 1: varint 150
            0x11, 1, 2, 3, 4, 5, 6, 7, 8, // 2: fixed64
            0x1a, 0x02, b'h', b'i', // 3: len
            0x25, 1, 2, 3, 4, // 4: fixed32
            0x2b, 0x08, 0x01, 0x2c, // 5: group { 1: 1 }
        ];
        let mut c = cursor(&bytes);
        while !c.at_end() {
            let (field, wt) = c.tag().unwrap();
            c.skip(field, wt, 0).unwrap();
        }
        assert_eq!(c.pos, bytes.len());
    }

    #[test]
    fn mismatched_or_stray_end_groups_are_faults() {
        // group 5 closed by end-group 6.
        let mut c = cursor(&[0x2b, 0x34]);
        let (f, wt) = c.tag().unwrap();
        assert_eq!(c.skip(f, wt, 0).unwrap_err().kind, FaultKind::EndGroup);
        // A stray end-group.
        let mut c = cursor(&[0x2c]);
        let (f, wt) = c.tag().unwrap();
        assert_eq!(c.skip(f, wt, 0).unwrap_err().kind, FaultKind::EndGroup);
        // An unterminated group.
        let mut c = cursor(&[0x2b, 0x08, 0x01]);
        let (f, wt) = c.tag().unwrap();
        assert_eq!(c.skip(f, wt, 0).unwrap_err().kind, FaultKind::Varint);
    }

    #[test]
    fn deeply_nested_groups_are_refused_without_overflowing_the_stack() {
        let mut bytes = vec![0x0b; 100_000];
        bytes.extend(std::iter::repeat_n(0x0c, 100_000));
        let mut c = cursor(&bytes);
        let (f, wt) = c.tag().unwrap();
        assert_eq!(c.skip(f, wt, 0).unwrap_err().kind, FaultKind::Depth);
    }

    #[test]
    fn truncated_fixed_fields_are_faults() {
        assert_eq!(
            cursor(&[1, 2, 3]).fixed32().unwrap_err().kind,
            FaultKind::Fixed
        );
        assert_eq!(
            cursor(&[1, 2, 3, 4, 5, 6, 7]).fixed64().unwrap_err().kind,
            FaultKind::Fixed
        );
        assert_eq!(cursor(&[1, 0, 0, 0]).fixed32(), Ok(1));
    }
}
