//! Record framing: `len: u32 LE`, `crc: u32 LE`, payload. The checksum is
//! CRC-32C over the record's sequence number (eight bytes, little-endian,
//! not stored), the length bytes and the payload, so that a record is
//! valid only at its own place in the log: the bytes of a record left from
//! a segment file's earlier life (a recycled segment) fail the check.
//!
//! The end of what a segment holds is either the end of its file or an
//! end marker, a header whose length is [`END_LEN`] and whose checksum
//! binds the sequence number the next record would get. Every write ends
//! with one, and the next write starts over it, so a recycled segment's
//! stale tail after it is never read as records.

/// Bytes before a record's payload.
pub(crate) const HEADER: usize = 8;

/// The largest payload a record may have. Larger lengths in a file are
/// damage, not records.
pub(crate) const MAX_RECORD: usize = 1 << 30;

/// The length field of an end marker: larger than any record.
const END_LEN: u32 = u32::MAX;

fn seed(seq: u64) -> u32 {
    crc32c::crc32c(&seq.to_le_bytes())
}

/// What a record made of `parts` takes on disk.
pub(crate) fn framed_len(parts: &[&[u8]]) -> usize {
    HEADER + parts.iter().map(|p| p.len()).sum::<usize>()
}

/// The header of record `seq` made of `parts`: its length and checksum.
/// The caller has checked that the payload is at most [`MAX_RECORD`] bytes.
pub(crate) fn header(seq: u64, parts: &[&[u8]]) -> [u8; HEADER] {
    let len = parts.iter().map(|p| p.len()).sum::<usize>() as u32;
    let len_bytes = len.to_le_bytes();
    let mut crc = crc32c::crc32c_append(seed(seq), &len_bytes);
    for part in parts {
        crc = crc32c::crc32c_append(crc, part);
    }
    let mut header = [0u8; HEADER];
    header[..4].copy_from_slice(&len_bytes);
    header[4..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// The end marker after the records before `seq`.
pub(crate) fn end_marker(seq: u64) -> [u8; HEADER] {
    let len_bytes = END_LEN.to_le_bytes();
    let crc = crc32c::crc32c_append(seed(seq), &len_bytes);
    let mut marker = [0u8; HEADER];
    marker[..4].copy_from_slice(&len_bytes);
    marker[4..].copy_from_slice(&crc.to_le_bytes());
    marker
}

/// The checksum of record `seq` whose length bytes and payload are these.
pub(crate) fn checksum(seq: u64, len_bytes: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c_append(seed(seq), len_bytes), payload)
}

/// Appends the frame of record `seq` made of `parts` to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, seq: u64, parts: &[&[u8]]) {
    out.extend_from_slice(&header(seq, parts));
    for part in parts {
        out.extend_from_slice(part);
    }
}

/// What lies at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed<'a> {
    /// A whole, valid record and the bytes its frame takes.
    Record(&'a [u8], usize),
    /// No more records: the buffer is empty, holds this place's end
    /// marker (whatever follows it), or the start of that marker only.
    End,
    /// Not a valid record; why.
    Damaged(&'static str),
}

/// Reads record `seq` at the start of `buf`, checking its length and
/// checksum.
pub(crate) fn parse(buf: &[u8], seq: u64) -> Parsed<'_> {
    if buf.is_empty() {
        return Parsed::End;
    }
    if buf.len() < HEADER {
        // A write cut inside its end marker's checksum lost no record. (A
        // cut inside its length bytes cannot be told from a record's
        // header cut short, and is counted as one.)
        if buf.len() > 4 && end_marker(seq).starts_with(buf) {
            return Parsed::End;
        }
        return Parsed::Damaged("record header cut short");
    }
    let len_bytes: [u8; 4] = buf[..4].try_into().expect("4 bytes");
    let len = u32::from_le_bytes(len_bytes);
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if len == END_LEN && buf[..HEADER] == end_marker(seq) {
        return Parsed::End;
    }
    let len = len as usize;
    if len > MAX_RECORD {
        return Parsed::Damaged("record length out of range");
    }
    let Some(payload) = buf.get(HEADER..HEADER + len) else {
        return Parsed::Damaged("record cut short");
    };
    if checksum(seq, &len_bytes, payload) != crc {
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
        encode(&mut buf, 7, &[b"hello ", b"world"]);
        assert_eq!(buf.len(), framed_len(&[b"hello ", b"world"]));
        assert_eq!(parse(&buf, 7), Parsed::Record(b"hello world", buf.len()));
        for cut in 1..buf.len() {
            assert!(
                matches!(parse(&buf[..cut], 7), Parsed::Damaged(_)),
                "cut at {cut}"
            );
        }
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut flipped = buf.clone();
                flipped[byte] ^= 1 << bit;
                assert!(
                    matches!(parse(&flipped, 7), Parsed::Damaged(_)),
                    "flip {byte}.{bit}"
                );
            }
        }
        assert_eq!(parse(&[], 7), Parsed::End);
    }

    #[test]
    fn a_record_is_valid_only_at_its_own_sequence_number() {
        // What a recycled segment's stale tail holds: whole records of an
        // earlier life, and that life's end markers.
        let mut buf = Vec::new();
        encode(&mut buf, 7, &[b"from an earlier life"]);
        assert!(matches!(parse(&buf, 8), Parsed::Damaged(_)));
        assert!(matches!(parse(&buf, 7 + (1 << 32)), Parsed::Damaged(_)));
        let marker = end_marker(7);
        assert_eq!(parse(&marker, 7), Parsed::End);
        assert!(matches!(parse(&marker, 8), Parsed::Damaged(_)));
        // Whatever follows a valid marker is not read.
        let mut after = marker.to_vec();
        after.extend_from_slice(&buf);
        assert_eq!(parse(&after, 7), Parsed::End);
        // A marker cut inside its checksum is still the end; other short
        // bytes are not.
        for cut in 5..HEADER {
            assert_eq!(parse(&marker[..cut], 7), Parsed::End, "cut at {cut}");
        }
        for cut in 1..5 {
            assert!(matches!(parse(&marker[..cut], 7), Parsed::Damaged(_)));
        }
        assert!(matches!(parse(&end_marker(8)[..6], 7), Parsed::Damaged(_)));
    }

    #[test]
    fn zeroes_are_not_a_record() {
        // What a file extended but never written looks like after a crash.
        assert!(matches!(parse(&[0u8; 64], 0), Parsed::Damaged(_)));
        let mut empty = Vec::new();
        encode(&mut empty, 0, &[]);
        assert_eq!(parse(&empty, 0), Parsed::Record(b"", HEADER));
    }
}
