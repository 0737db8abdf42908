//! Record framing: `len: u32 LE`, `crc: u32 LE`, payload; the checksum is
//! CRC-32C over the length bytes and the payload.

/// Bytes before a record's payload.
pub(crate) const HEADER: usize = 8;

/// The largest payload a record may have. Larger lengths in a file are
/// damage, not records.
pub(crate) const MAX_RECORD: usize = 1 << 30;

/// What a record made of `parts` takes on disk.
pub(crate) fn framed_len(parts: &[&[u8]]) -> usize {
    HEADER + parts.iter().map(|p| p.len()).sum::<usize>()
}

/// The header of one record made of `parts`: its length and checksum. The
/// caller has checked that the payload is at most [`MAX_RECORD`] bytes.
pub(crate) fn header(parts: &[&[u8]]) -> [u8; HEADER] {
    let len = parts.iter().map(|p| p.len()).sum::<usize>() as u32;
    let len_bytes = len.to_le_bytes();
    let mut crc = crc32c::crc32c(&len_bytes);
    for part in parts {
        crc = crc32c::crc32c_append(crc, part);
    }
    let mut header = [0u8; HEADER];
    header[..4].copy_from_slice(&len_bytes);
    header[4..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// The checksum of a record whose length bytes and payload are these.
pub(crate) fn checksum(len_bytes: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len_bytes), payload)
}

/// Appends the frame of one record made of `parts` to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, parts: &[&[u8]]) {
    out.extend_from_slice(&header(parts));
    for part in parts {
        out.extend_from_slice(part);
    }
}

/// What lies at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed<'a> {
    /// A whole, valid record and the bytes its frame takes.
    Record(&'a [u8], usize),
    /// Nothing: the buffer is empty.
    End,
    /// Not a valid record; why.
    Damaged(&'static str),
}

/// Reads the record at the start of `buf`, checking its length and checksum.
pub(crate) fn parse(buf: &[u8]) -> Parsed<'_> {
    if buf.is_empty() {
        return Parsed::End;
    }
    if buf.len() < HEADER {
        return Parsed::Damaged("record header cut short");
    }
    let len_bytes: [u8; 4] = buf[..4].try_into().expect("4 bytes");
    let len = u32::from_le_bytes(len_bytes) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if len > MAX_RECORD {
        return Parsed::Damaged("record length out of range");
    }
    let Some(payload) = buf.get(HEADER..HEADER + len) else {
        return Parsed::Damaged("record cut short");
    };
    let actual = checksum(&len_bytes, payload);
    if actual != crc {
        return Parsed::Damaged("checksum mismatch");
    }
    Parsed::Record(payload, HEADER + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_any_cut_or_flip_is_caught() {
        let mut buf = Vec::new();
        encode(&mut buf, &[b"hello ", b"world"]);
        assert_eq!(buf.len(), framed_len(&[b"hello ", b"world"]));
        assert_eq!(parse(&buf), Parsed::Record(b"hello world", buf.len()));
        for cut in 1..buf.len() {
            assert!(
                matches!(parse(&buf[..cut]), Parsed::Damaged(_)),
                "cut at {cut}"
            );
        }
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut flipped = buf.clone();
                flipped[byte] ^= 1 << bit;
                assert!(
                    matches!(parse(&flipped), Parsed::Damaged(_)),
                    "flip {byte}.{bit}"
                );
            }
        }
        assert_eq!(parse(&[]), Parsed::End);
    }

    #[test]
    fn zeroes_are_not_a_record() {
        // What a file extended but never written looks like after a crash.
        assert!(matches!(parse(&[0u8; 64]), Parsed::Damaged(_)));
        let mut empty = Vec::new();
        encode(&mut empty, &[]);
        assert_eq!(parse(&empty), Parsed::Record(b"", HEADER));
    }
}
