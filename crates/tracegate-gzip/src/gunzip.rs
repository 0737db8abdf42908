//! Inflating a gzip body whole, each member's deflate blocks located on the
//! way ([`Member`]).

use std::cell::RefCell;

use bytes::Bytes;

use crate::inflate::{BlockInflater, StepStatus};

/// One gzip member of a body as it arrived, with what [`crate::splice`]
/// needs to reuse its deflate data: where its deflate stream starts, where
/// its last block's header sits and where the stream ends (bit offsets
/// into the member), and the CRC-32 and size of the data it holds.
#[derive(Clone)]
pub struct Member {
    /// The member, header to trailer.
    pub(crate) data: Bytes,
    /// Byte offset of the deflate stream (the header's length).
    pub(crate) deflate_start: usize,
    /// Bit offset of the last block's 3-bit header (its first bit is
    /// BFINAL).
    pub(crate) final_block: u64,
    /// Bit offset just past the deflate stream's last bit.
    pub(crate) end: u64,
    pub(crate) crc: u32,
    pub(crate) len: usize,
}

impl Member {
    /// The size of the data the member holds.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The CRC-32 of the data the member holds, from its trailer (checked
    /// when it was inflated).
    pub fn crc(&self) -> u32 {
        self.crc
    }

    /// The member as it arrived, header to trailer.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The member's size as it arrived.
    pub fn compressed_len(&self) -> usize {
        self.data.len()
    }
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("compressed_len", &self.data.len())
            .field("len", &self.len)
            .field("crc", &format_args!("{:08x}", self.crc))
            .finish()
    }
}

/// Why a body could not be inflated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GunzipError {
    /// The data would exceed the limit.
    TooLarge,
    /// Not valid gzip; what is wrong.
    Corrupt(String),
}

/// A body inflated whole, and the members it was made of, each with the
/// offset of its data in the output. A member whose blocks could not be
/// located (which zlib does not do) is left out of the list, so the list
/// may cover less than the output.
pub struct Gunzipped {
    pub data: Vec<u8>,
    pub members: Vec<(usize, Member)>,
}

/// Inflates `input`, one gzip member after another until it ends (as Go's
/// gzip reader reads them), into an output that starts at the size the
/// last member's trailer states (and a byte more, so that inflate reaches
/// the trailer of a body that states its size truly without the output
/// being full, which would cost a regrowth: a copy of everything inflated)
/// and grows by doubling up to `limit + 1` bytes: a trailer that lies costs
/// a regrowth, never more memory than the cap. Trailers are checked
/// (CRC-32 and size).
pub fn gunzip(input: &Bytes, limit: usize) -> Result<Gunzipped, GunzipError> {
    thread_local! {
        /// This thread's inflater, kept for the next body: setting one up
        /// allocates zlib's state and its 32 KiB window every time.
        static INFLATER: RefCell<Option<BlockInflater>> = const { RefCell::new(None) };
    }
    INFLATER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut kept) => gunzip_with(kept.get_or_insert_with(BlockInflater::gzip), input, limit),
        // Not reentrant; a fresh one should it ever be.
        Err(_) => gunzip_with(&mut BlockInflater::gzip(), input, limit),
    })
}

fn gunzip_with(
    inflater: &mut BlockInflater,
    input: &Bytes,
    limit: usize,
) -> Result<Gunzipped, GunzipError> {
    let max = limit.saturating_add(1);
    let stated = match input.len() {
        // Header (10) and trailer (8) at least.
        n if n >= 18 => u32::from_le_bytes(input[n - 4..].try_into().expect("4 bytes")) as usize,
        _ => 0,
    };
    let mut out: Vec<u8> = Vec::new();
    out.reserve_exact(stated.saturating_add(1).max(4096).min(max));
    let mut members = Vec::new();
    let mut member_start = 0;
    loop {
        // Whatever the inflater did last (another body, which may have
        // failed halfway), it starts this member afresh.
        inflater.reset();
        let header = header_len(&input[member_start..]);
        let out_start = out.len();
        // Bit offsets within the member.
        let mut block_start = header.map(|h| h as u64 * 8);
        let mut final_block = None;
        let mut end = None;
        let mut consumed = 0usize;
        let mut position = 0u64;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= max {
                    return Err(GunzipError::TooLarge);
                }
                let grow = out.len().max(4096).min(max - out.len());
                out.reserve_exact(grow);
            }
            let out_before = out.len();
            let step = inflater.step(&input[member_start + consumed..], &mut out);
            consumed += step.consumed;
            match step.status {
                StepStatus::Error(message) => return Err(GunzipError::Corrupt(message)),
                StepStatus::StreamEnd => break,
                StepStatus::Ok => {}
            }
            let now = (consumed as u64 * 8).saturating_sub((step.data_type & 63) as u64);
            if step.data_type & 128 != 0 {
                // At a block boundary: the next block's header starts here,
                // or, after the last block, the stream ends here.
                if step.data_type & 64 != 0 {
                    final_block = block_start;
                    end = Some(now);
                } else {
                    block_start = Some(now);
                }
            }
            let progressed = now != position || out.len() != out_before;
            position = now;
            if !progressed && out.len() < out.capacity() {
                return Err(GunzipError::Corrupt("unexpected end of gzip stream".into()));
            }
        }
        if out.len() > limit {
            return Err(GunzipError::TooLarge);
        }
        if let (Some(header), Some(final_block), Some(end)) = (header, final_block, end) {
            let member = input.slice(member_start..member_start + consumed);
            let trailer = consumed.checked_sub(8).map(|at| &member[at..]);
            let located = final_block >= header as u64 * 8
                && final_block + 3 <= end
                && end <= (consumed as u64 - 8) * 8;
            if let (Some(trailer), true) = (trailer, located) {
                let crc = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes"));
                members.push((
                    out_start,
                    Member {
                        data: member,
                        deflate_start: header,
                        final_block,
                        end,
                        crc,
                        len: out.len() - out_start,
                    },
                ));
            }
        }
        member_start += consumed;
        if member_start >= input.len() {
            break;
        }
    }
    Ok(Gunzipped { data: out, members })
}

/// The length of the gzip header `member` starts with (RFC 1952, 2.3.1);
/// `None` when it is not one (inflate then says why).
fn header_len(member: &[u8]) -> Option<usize> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    if member.len() < 10 || member[..3] != [0x1f, 0x8b, 8] {
        return None;
    }
    let flags = member[3];
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let xlen = u16::from_le_bytes(member.get(at..at + 2)?.try_into().ok()?) as usize;
        at += 2 + xlen;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            at += member.get(at..)?.iter().position(|&b| b == 0)? + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    (at <= member.len()).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths_follow_the_flags() {
        let plain = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
        assert_eq!(header_len(&plain), Some(10));
        let mut named = plain.to_vec();
        named[3] = 8 | 2;
        named.extend_from_slice(b"name\0\x12\x34");
        assert_eq!(header_len(&named), Some(10 + 5 + 2));
        let mut extra = plain.to_vec();
        extra[3] = 4 | 16;
        extra.extend_from_slice(&[3, 0, 1, 2, 3]);
        extra.extend_from_slice(b"comment\0");
        assert_eq!(header_len(&extra), Some(10 + 5 + 8));
        assert_eq!(header_len(&named[..12]), None);
        assert_eq!(header_len(b"not gzip at all"), None);
    }
}
