//! Readers and writers of the two thrift wire protocols Jaeger clients
//! use: compact (UDP 6831) and binary (UDP 6832, HTTP 14268).
//!
//! The readers take untrusted bytes: every length and count is checked
//! against the bytes left before anything is allocated, varints are
//! bounded, skipping unknown fields is bounded in depth, and nothing
//! panics.

use super::ThriftError;

/// Field and element types, common to both protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TType {
    Bool,
    Byte,
    I16,
    I32,
    I64,
    Double,
    Binary,
    List,
    Set,
    Map,
    Struct,
}

/// How deep unknown nested values may be skipped.
const MAX_SKIP_DEPTH: u32 = 32;

/// A cursor over one message or body.
pub(crate) trait Reader<'a> {
    fn struct_begin(&mut self) -> Result<(), ThriftError>;
    fn struct_end(&mut self);
    /// The next field's id and type, `None` at the struct's end.
    fn field(&mut self) -> Result<Option<(i16, TType)>, ThriftError>;
    fn bool(&mut self) -> Result<bool, ThriftError>;
    fn byte(&mut self) -> Result<i8, ThriftError>;
    fn i16(&mut self) -> Result<i16, ThriftError>;
    fn i32(&mut self) -> Result<i32, ThriftError>;
    fn i64(&mut self) -> Result<i64, ThriftError>;
    fn double(&mut self) -> Result<f64, ThriftError>;
    fn binary(&mut self) -> Result<&'a [u8], ThriftError>;
    /// Element type and count of a list or set.
    fn list(&mut self) -> Result<(TType, usize), ThriftError>;
    /// Key type, value type and count of a map.
    fn map(&mut self) -> Result<(TType, TType, usize), ThriftError>;

    fn string(&mut self) -> Result<String, ThriftError> {
        // Thrift strings are bytes; OTLP strings must be UTF-8.
        Ok(String::from_utf8_lossy(self.binary()?).into_owned())
    }

    /// Skips one value of type `ttype`.
    fn skip(&mut self, ttype: TType) -> Result<(), ThriftError> {
        self.skip_at(ttype, 0)
    }

    fn skip_at(&mut self, ttype: TType, depth: u32) -> Result<(), ThriftError> {
        if depth > MAX_SKIP_DEPTH {
            return Err(ThriftError::TooDeep);
        }
        match ttype {
            TType::Bool => self.bool().map(drop),
            TType::Byte => self.byte().map(drop),
            TType::I16 => self.i16().map(drop),
            TType::I32 => self.i32().map(drop),
            TType::I64 => self.i64().map(drop),
            TType::Double => self.double().map(drop),
            TType::Binary => self.binary().map(drop),
            TType::List | TType::Set => {
                let (elem, n) = self.list()?;
                for _ in 0..n {
                    self.skip_at(elem, depth + 1)?;
                }
                Ok(())
            }
            TType::Map => {
                let (k, v, n) = self.map()?;
                for _ in 0..n {
                    self.skip_at(k, depth + 1)?;
                    self.skip_at(v, depth + 1)?;
                }
                Ok(())
            }
            TType::Struct => {
                self.struct_begin()?;
                while let Some((_, t)) = self.field()? {
                    self.skip_at(t, depth + 1)?;
                }
                self.struct_end();
                Ok(())
            }
        }
    }
}

/// Refuses counts that cannot fit in what is left: every element takes at
/// least one byte in both protocols.
fn check_count(count: i64, remaining: usize) -> Result<usize, ThriftError> {
    if count < 0 {
        return Err(ThriftError::Invalid(format!("negative size {count}")));
    }
    let count = count as u64;
    if count > remaining as u64 {
        return Err(ThriftError::Invalid(format!(
            "size {count} exceeds the {remaining} bytes left"
        )));
    }
    Ok(count as usize)
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ThriftError> {
        let end = self.pos.checked_add(n).ok_or(ThriftError::Eof)?;
        let bytes = self.data.get(self.pos..end).ok_or(ThriftError::Eof)?;
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, ThriftError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ThriftError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
}

// ------------------------------------------------------------------ binary

fn binary_type(id: u8) -> Result<TType, ThriftError> {
    Ok(match id {
        2 => TType::Bool,
        3 => TType::Byte,
        4 => TType::Double,
        6 => TType::I16,
        8 => TType::I32,
        10 => TType::I64,
        11 => TType::Binary,
        12 => TType::Struct,
        13 => TType::Map,
        14 => TType::Set,
        15 => TType::List,
        other => return Err(ThriftError::Invalid(format!("unknown binary type {other}"))),
    })
}

fn binary_type_id(t: TType) -> u8 {
    match t {
        TType::Bool => 2,
        TType::Byte => 3,
        TType::Double => 4,
        TType::I16 => 6,
        TType::I32 => 8,
        TType::I64 => 10,
        TType::Binary => 11,
        TType::Struct => 12,
        TType::Map => 13,
        TType::Set => 14,
        TType::List => 15,
    }
}

/// TBinaryProtocol: big-endian fixed-width integers.
pub(crate) struct BinaryReader<'a>(Cursor<'a>);

impl<'a> BinaryReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        BinaryReader(Cursor { data, pos: 0 })
    }

    /// A message header, strict (versioned) or old-style; returns the
    /// method name and message type.
    pub fn message_begin(&mut self) -> Result<(String, u8), ThriftError> {
        let first = self.i32()?;
        if first < 0 {
            let version = (first as u32) & 0xffff_0000;
            if version != 0x8001_0000 {
                return Err(ThriftError::Invalid(format!(
                    "bad binary protocol version {version:#x}"
                )));
            }
            let kind = (first & 0xff) as u8;
            let name = self.string()?;
            self.i32()?; // sequence id
            Ok((name, kind))
        } else {
            let len = check_count(first.into(), self.0.remaining())?;
            let name = String::from_utf8_lossy(self.0.take(len)?).into_owned();
            let kind = self.0.u8()?;
            self.i32()?;
            Ok((name, kind))
        }
    }
}

impl<'a> Reader<'a> for BinaryReader<'a> {
    fn struct_begin(&mut self) -> Result<(), ThriftError> {
        Ok(())
    }
    fn struct_end(&mut self) {}
    fn field(&mut self) -> Result<Option<(i16, TType)>, ThriftError> {
        let t = self.0.u8()?;
        if t == 0 {
            return Ok(None);
        }
        let t = binary_type(t)?;
        Ok(Some((self.i16()?, t)))
    }
    fn bool(&mut self) -> Result<bool, ThriftError> {
        // As Go's TBinaryProtocol: only 1 is true.
        Ok(self.0.u8()? == 1)
    }
    fn byte(&mut self) -> Result<i8, ThriftError> {
        Ok(self.0.u8()? as i8)
    }
    fn i16(&mut self) -> Result<i16, ThriftError> {
        Ok(i16::from_be_bytes(self.0.array()?))
    }
    fn i32(&mut self) -> Result<i32, ThriftError> {
        Ok(i32::from_be_bytes(self.0.array()?))
    }
    fn i64(&mut self) -> Result<i64, ThriftError> {
        Ok(i64::from_be_bytes(self.0.array()?))
    }
    fn double(&mut self) -> Result<f64, ThriftError> {
        Ok(f64::from_be_bytes(self.0.array()?))
    }
    fn binary(&mut self) -> Result<&'a [u8], ThriftError> {
        let len = self.i32()?;
        let len = check_count(len.into(), self.0.remaining())?;
        self.0.take(len)
    }
    fn list(&mut self) -> Result<(TType, usize), ThriftError> {
        let t = binary_type(self.0.u8()?)?;
        let n = self.i32()?;
        Ok((t, check_count(n.into(), self.0.remaining())?))
    }
    fn map(&mut self) -> Result<(TType, TType, usize), ThriftError> {
        let k = binary_type(self.0.u8()?)?;
        let v = binary_type(self.0.u8()?)?;
        let n = self.i32()?;
        Ok((k, v, check_count(n.into(), self.0.remaining())?))
    }
}

// ----------------------------------------------------------------- compact

const COMPACT_PROTOCOL_ID: u8 = 0x82;
const COMPACT_VERSION: u8 = 1;

fn compact_type(id: u8) -> Result<TType, ThriftError> {
    Ok(match id {
        1 | 2 => TType::Bool,
        3 => TType::Byte,
        4 => TType::I16,
        5 => TType::I32,
        6 => TType::I64,
        7 => TType::Double,
        8 => TType::Binary,
        9 => TType::List,
        10 => TType::Set,
        11 => TType::Map,
        12 => TType::Struct,
        other => {
            return Err(ThriftError::Invalid(format!(
                "unknown compact type {other}"
            )))
        }
    })
}

fn compact_type_id(t: TType) -> u8 {
    match t {
        TType::Bool => 1,
        TType::Byte => 3,
        TType::I16 => 4,
        TType::I32 => 5,
        TType::I64 => 6,
        TType::Double => 7,
        TType::Binary => 8,
        TType::List => 9,
        TType::Set => 10,
        TType::Map => 11,
        TType::Struct => 12,
    }
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

/// TCompactProtocol: zigzag varints, field-id deltas, booleans folded
/// into field headers, little-endian doubles.
pub(crate) struct CompactReader<'a> {
    cursor: Cursor<'a>,
    last_field: i16,
    /// The enclosing structs' last field ids.
    stack: Vec<i16>,
    /// A boolean field's value, carried by its header.
    pending_bool: Option<bool>,
}

impl<'a> CompactReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        CompactReader {
            cursor: Cursor { data, pos: 0 },
            last_field: 0,
            stack: Vec::new(),
            pending_bool: None,
        }
    }

    pub fn message_begin(&mut self) -> Result<(String, u8), ThriftError> {
        let id = self.cursor.u8()?;
        if id != COMPACT_PROTOCOL_ID {
            return Err(ThriftError::Invalid(format!(
                "bad compact protocol id {id:#x}"
            )));
        }
        let version_and_type = self.cursor.u8()?;
        if version_and_type & 0x1f != COMPACT_VERSION {
            return Err(ThriftError::Invalid(format!(
                "bad compact protocol version {}",
                version_and_type & 0x1f
            )));
        }
        let kind = (version_and_type >> 5) & 0x07;
        self.varint(5)?; // sequence id
        let name = self.string()?;
        Ok((name, kind))
    }

    fn varint(&mut self, max_bytes: u32) -> Result<u64, ThriftError> {
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let b = self.cursor.u8()?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ThriftError::Invalid("varint too long".into()))
    }
}

impl<'a> Reader<'a> for CompactReader<'a> {
    fn struct_begin(&mut self) -> Result<(), ThriftError> {
        if self.stack.len() as u32 > MAX_SKIP_DEPTH {
            return Err(ThriftError::TooDeep);
        }
        self.stack.push(self.last_field);
        self.last_field = 0;
        Ok(())
    }
    fn struct_end(&mut self) {
        self.last_field = self.stack.pop().unwrap_or(0);
    }
    fn field(&mut self) -> Result<Option<(i16, TType)>, ThriftError> {
        let header = self.cursor.u8()?;
        if header == 0 {
            return Ok(None);
        }
        let type_id = header & 0x0f;
        let t = compact_type(type_id)?;
        let delta = header >> 4;
        let id = if delta == 0 {
            self.i16()?
        } else {
            self.last_field.wrapping_add(i16::from(delta))
        };
        self.last_field = id;
        if t == TType::Bool {
            self.pending_bool = Some(type_id == 1);
        }
        Ok(Some((id, t)))
    }
    fn bool(&mut self) -> Result<bool, ThriftError> {
        match self.pending_bool.take() {
            Some(b) => Ok(b),
            // A list element: its own byte, 1 for true.
            None => Ok(self.cursor.u8()? == 1),
        }
    }
    fn byte(&mut self) -> Result<i8, ThriftError> {
        Ok(self.cursor.u8()? as i8)
    }
    fn i16(&mut self) -> Result<i16, ThriftError> {
        let v = unzigzag(self.varint(3)?);
        i16::try_from(v).map_err(|_| ThriftError::Invalid(format!("i16 out of range: {v}")))
    }
    fn i32(&mut self) -> Result<i32, ThriftError> {
        let v = unzigzag(self.varint(5)?);
        i32::try_from(v).map_err(|_| ThriftError::Invalid(format!("i32 out of range: {v}")))
    }
    fn i64(&mut self) -> Result<i64, ThriftError> {
        Ok(unzigzag(self.varint(10)?))
    }
    fn double(&mut self) -> Result<f64, ThriftError> {
        Ok(f64::from_le_bytes(self.cursor.array()?))
    }
    fn binary(&mut self) -> Result<&'a [u8], ThriftError> {
        let len = self.varint(5)?;
        let len = check_count(len as i64, self.cursor.remaining())?;
        self.cursor.take(len)
    }
    fn list(&mut self) -> Result<(TType, usize), ThriftError> {
        let header = self.cursor.u8()?;
        let t = compact_type(header & 0x0f)?;
        let n = match header >> 4 {
            15 => self.varint(5)? as i64,
            small => i64::from(small),
        };
        Ok((t, check_count(n, self.cursor.remaining())?))
    }
    fn map(&mut self) -> Result<(TType, TType, usize), ThriftError> {
        let n = self.varint(5)? as i64;
        if n == 0 {
            return Ok((TType::Byte, TType::Byte, 0));
        }
        let kv = self.cursor.u8()?;
        let n = check_count(n, self.cursor.remaining())?;
        Ok((compact_type(kv >> 4)?, compact_type(kv & 0x0f)?, n))
    }
}

// ----------------------------------------------------------------- writers

/// The writing side, for tests, benchmarks and fuzz seeds.
pub(crate) trait Writer {
    fn message_begin(&mut self, name: &str, kind: u8);
    fn struct_begin(&mut self);
    fn struct_end(&mut self);
    fn field(&mut self, id: i16, t: TType);
    fn field_bool(&mut self, id: i16, value: bool);
    fn stop(&mut self);
    fn i32(&mut self, v: i32);
    fn i64(&mut self, v: i64);
    fn double(&mut self, v: f64);
    fn binary(&mut self, v: &[u8]);
    fn list(&mut self, elem: TType, n: usize);
    fn into_bytes(self) -> Vec<u8>;
}

#[derive(Default)]
pub(crate) struct BinaryWriter(Vec<u8>);

impl Writer for BinaryWriter {
    fn message_begin(&mut self, name: &str, kind: u8) {
        self.i32((0x8001_0000u32 | u32::from(kind)) as i32);
        self.binary(name.as_bytes());
        self.i32(0);
    }
    fn struct_begin(&mut self) {}
    fn struct_end(&mut self) {}
    fn field(&mut self, id: i16, t: TType) {
        self.0.push(binary_type_id(t));
        self.0.extend_from_slice(&id.to_be_bytes());
    }
    fn field_bool(&mut self, id: i16, value: bool) {
        self.field(id, TType::Bool);
        self.0.push(u8::from(value));
    }
    fn stop(&mut self) {
        self.0.push(0);
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn double(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn binary(&mut self, v: &[u8]) {
        self.i32(v.len() as i32);
        self.0.extend_from_slice(v);
    }
    fn list(&mut self, elem: TType, n: usize) {
        self.0.push(binary_type_id(elem));
        self.i32(n as i32);
    }
    fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

#[derive(Default)]
pub(crate) struct CompactWriter {
    out: Vec<u8>,
    last_field: i16,
    stack: Vec<i16>,
}

impl CompactWriter {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.out.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
    }

    fn header(&mut self, id: i16, type_id: u8) {
        let delta = id.wrapping_sub(self.last_field);
        if (1..=15).contains(&delta) {
            self.out.push(((delta as u8) << 4) | type_id);
        } else {
            self.out.push(type_id);
            self.varint(zigzag(id.into()));
        }
        self.last_field = id;
    }
}

impl Writer for CompactWriter {
    fn message_begin(&mut self, name: &str, kind: u8) {
        self.out.push(COMPACT_PROTOCOL_ID);
        self.out.push((kind << 5) | COMPACT_VERSION);
        self.varint(0);
        self.binary(name.as_bytes());
    }
    fn struct_begin(&mut self) {
        self.stack.push(self.last_field);
        self.last_field = 0;
    }
    fn struct_end(&mut self) {
        self.last_field = self.stack.pop().unwrap_or(0);
    }
    fn field(&mut self, id: i16, t: TType) {
        self.header(id, compact_type_id(t));
    }
    fn field_bool(&mut self, id: i16, value: bool) {
        self.header(id, if value { 1 } else { 2 });
    }
    fn stop(&mut self) {
        self.out.push(0);
    }
    fn i32(&mut self, v: i32) {
        self.varint(zigzag(v.into()));
    }
    fn i64(&mut self, v: i64) {
        self.varint(zigzag(v));
    }
    fn double(&mut self, v: f64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn binary(&mut self, v: &[u8]) {
        self.varint(v.len() as u64);
        self.out.extend_from_slice(v);
    }
    fn list(&mut self, elem: TType, n: usize) {
        if n < 15 {
            self.out.push(((n as u8) << 4) | compact_type_id(elem));
        } else {
            self.out.push(0xf0 | compact_type_id(elem));
            self.varint(n as u64);
        }
    }
    fn into_bytes(self) -> Vec<u8> {
        self.out
    }
}
