//! One gzip member assembled from deflate streams that arrived and data
//! compressed here, as zlib's `gzjoin` example joins gzip files: every
//! arrived stream's last block becomes an ordinary one (its BFINAL bit
//! cleared), each stream is brought to a byte boundary with an empty
//! stored block, data of our own is deflated afresh into blocks ending on
//! a byte boundary (a sync flush), and an empty final block closes the
//! stream. The CRC-32s are combined for the trailer. Deflate streams
//! concatenate this way because no stream refers back past its own start.

use flate2::{Compress, Compression, FlushCompress};

use crate::Member;

/// A part of the data a spliced member holds, in order.
#[derive(Debug, Clone, Copy)]
pub enum Piece<'a> {
    /// Bytes to compress here.
    Plain(&'a [u8]),
    /// A member that arrived; its deflate data is copied.
    Member(&'a Member),
}

/// The gzip header tracegate writes, as flate2's encoder does: no name, no
/// time, unknown OS.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// An empty final block with fixed Huffman codes: BFINAL 1, BTYPE 01, the
/// 7-bit end-of-block code 0.
const EMPTY_FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// One standard (single-member) gzip stream holding the data of `pieces`
/// in order; [`Piece::Plain`] data is deflated at `level`.
pub fn splice(pieces: &[Piece<'_>], level: u32) -> Vec<u8> {
    let capacity: usize = pieces
        .iter()
        .map(|p| match p {
            Piece::Plain(data) => data.len() / 3 + 64,
            Piece::Member(m) => m.data.len(),
        })
        .sum();
    let mut out = Vec::with_capacity(capacity + HEADER.len() + 8);
    out.extend_from_slice(&HEADER);
    let mut crc = crc32fast::Hasher::new();
    let mut size = 0u64;
    let mut compress: Option<Compress> = None;
    for piece in pieces {
        match *piece {
            Piece::Plain([]) => {}
            Piece::Plain(data) => {
                // A fresh window for every piece: back-references must not
                // reach across the members in between.
                let compress = match &mut compress {
                    Some(c) => {
                        c.reset();
                        c
                    }
                    empty => empty.insert(Compress::new(Compression::new(level), false)),
                };
                deflate_synced(compress, data, &mut out);
                crc.update(data);
                size += data.len() as u64;
            }
            Piece::Member(member) => {
                append_member(member, &mut out);
                crc.combine(&crc32fast::Hasher::new_with_initial_len(
                    member.crc,
                    member.len as u64,
                ));
                size += member.len as u64;
            }
        }
    }
    out.extend_from_slice(&EMPTY_FINAL_BLOCK);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&(size as u32).to_le_bytes());
    out
}

/// `data` as raw deflate blocks, none final, ending on a byte boundary.
fn deflate_synced(compress: &mut Compress, data: &[u8], out: &mut Vec<u8>) {
    let start = compress.total_in();
    loop {
        let done = (compress.total_in() - start) as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve((data.len() - done) / 2 + 64);
        }
        compress
            .compress_vec(&data[done..], out, FlushCompress::Sync)
            .expect("deflating into a vector cannot fail");
        // zlib has flushed everything once the input is consumed and the
        // output was not filled up.
        let consumed = (compress.total_in() - start) as usize == data.len();
        if consumed && out.len() < out.capacity() {
            break;
        }
    }
}

/// The member's deflate stream with its last block made an ordinary one,
/// padded to a byte boundary with an empty stored block when it does not
/// end on one.
fn append_member(member: &Member, out: &mut Vec<u8>) {
    let start = out.len();
    let first_bit = member.deflate_start as u64 * 8;
    let end_byte = member.end.div_ceil(8) as usize;
    out.extend_from_slice(&member.data[member.deflate_start..end_byte]);
    let final_bit = member.final_block - first_bit;
    out[start + (final_bit / 8) as usize] &= !(1u8 << (final_bit % 8));
    let used = (member.end % 8) as u32;
    if used != 0 {
        // Keep the last byte's used bits; an empty stored block's header
        // (BFINAL 0, BTYPE 00: three zero bits) follows them, then padding
        // to the byte boundary, LEN 0 and NLEN 0xffff.
        let last = out.len() - 1;
        out[last] &= (1u8 << used) - 1;
        if used + 3 > 8 {
            out.push(0);
        }
        out.extend_from_slice(&[0, 0, 0xff, 0xff]);
    }
}
