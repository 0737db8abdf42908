//! One gzip member assembled from deflate streams that arrived and data
//! compressed here, as zlib's `gzjoin` example joins gzip files: every
//! arrived stream's last block becomes an ordinary one (its BFINAL bit
//! cleared), each stream is brought to a byte boundary with an empty
//! stored block, data of our own is deflated afresh into blocks ending on
//! a byte boundary (a sync flush), and an empty final block closes the
//! stream. The CRC-32s are combined for the trailer. Deflate streams
//! concatenate this way because no stream refers back past its own start.
//!
//! The result comes as segments ([`splice_segments`]): an arrived stream's
//! blocks before its last one are sent as the very bytes that arrived
//! (slices of the request body, not copies); only its last block, whose
//! first and last bytes change, and what is written here are copied, into
//! one buffer shared by the segments that are not arrived bytes.

use std::ops::Range;

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};

use crate::Member;

/// A part of the data a spliced member holds, in order.
#[derive(Debug, Clone, Copy)]
pub enum Piece<'a> {
    /// Bytes to compress here. Consecutive `Plain` pieces are compressed
    /// as one run (a window that goes on from one to the next), so data
    /// split over several buffers compresses as if it were one.
    Plain(&'a [u8]),
    /// A member that arrived; its deflate data is reused.
    Member(&'a Member),
}

/// The gzip header tracegate writes, as flate2's encoder does: no name, no
/// time, unknown OS.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// An empty final block with fixed Huffman codes: BFINAL 1, BTYPE 01, the
/// 7-bit end-of-block code 0.
const EMPTY_FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// Arrived bytes shorter than this are copied rather than sent as a
/// segment of their own (each segment costs the connection a frame or an
/// I/O vector entry).
const COPY_BELOW: usize = 1024;

/// One standard (single-member) gzip stream holding the data of `pieces`
/// in order, as one buffer; [`Piece::Plain`] data is deflated at `level`.
/// The bytes are those of [`splice_segments`], joined.
pub fn splice(pieces: &[Piece<'_>], level: u32) -> Vec<u8> {
    let segments = splice_segments(pieces, level);
    let mut out = Vec::with_capacity(segments.iter().map(Bytes::len).sum());
    for segment in &segments {
        out.extend_from_slice(segment);
    }
    out
}

/// One standard (single-member) gzip stream holding the data of `pieces`
/// in order, as consecutive segments (none empty) to be sent one after the
/// other: arrived deflate blocks as slices of the members' own buffers,
/// everything else in one new buffer. [`Piece::Plain`] data is deflated at
/// `level`.
pub fn splice_segments(pieces: &[Piece<'_>], level: u32) -> Vec<Bytes> {
    let own_capacity: usize = pieces
        .iter()
        .map(|p| match p {
            Piece::Plain(data) => data.len() / 3 + 64,
            Piece::Member(m) => copied_len(m) + 8,
        })
        .sum();
    let mut out = Segments {
        own: Vec::with_capacity(own_capacity + HEADER.len() + EMPTY_FINAL_BLOCK.len() + 8),
        own_from: 0,
        chunks: Vec::with_capacity(pieces.len() * 2 + 1),
    };
    out.own.extend_from_slice(&HEADER);
    let mut crc = crc32fast::Hasher::new();
    let mut size = 0u64;
    let mut compress: Option<Compress> = None;
    // Whether the compressor's window holds data from before a member.
    let mut stale_window = false;
    for piece in pieces {
        match *piece {
            Piece::Plain([]) => {}
            Piece::Plain(data) => {
                // A fresh window after a member: back-references must not
                // reach across it.
                let compress = match &mut compress {
                    Some(c) => {
                        if stale_window {
                            c.reset();
                        }
                        c
                    }
                    empty => empty.insert(Compress::new(Compression::new(level), false)),
                };
                stale_window = false;
                deflate_synced(compress, data, &mut out.own);
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
                stale_window = true;
            }
        }
    }
    out.own.extend_from_slice(&EMPTY_FINAL_BLOCK);
    out.own.extend_from_slice(&crc.finalize().to_le_bytes());
    out.own.extend_from_slice(&(size as u32).to_le_bytes());
    out.finish()
}

/// The spliced stream as it is built: the bytes written here (`own`) and
/// the order of the segments, ranges of `own` and arrived bytes.
struct Segments {
    own: Vec<u8>,
    /// Where the bytes of `own` not yet in a chunk start.
    own_from: usize,
    chunks: Vec<Chunk>,
}

enum Chunk {
    Own(Range<usize>),
    Arrived(Bytes),
}

impl Segments {
    /// Ends the current run of own bytes.
    fn cut(&mut self) {
        if self.own.len() > self.own_from {
            self.chunks.push(Chunk::Own(self.own_from..self.own.len()));
            self.own_from = self.own.len();
        }
    }

    fn arrived(&mut self, data: Bytes) {
        if data.len() < COPY_BELOW {
            self.own.extend_from_slice(&data);
        } else {
            self.cut();
            self.chunks.push(Chunk::Arrived(data));
        }
    }

    fn finish(mut self) -> Vec<Bytes> {
        self.cut();
        let own = Bytes::from(self.own);
        self.chunks
            .into_iter()
            .map(|chunk| match chunk {
                Chunk::Own(range) => own.slice(range),
                Chunk::Arrived(data) => data,
            })
            .collect()
    }
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

/// The bytes of the member's last block, which [`append_member`] copies
/// (and may add five to).
fn copied_len(member: &Member) -> usize {
    member.end.div_ceil(8) as usize - (member.final_block / 8) as usize
}

/// The member's deflate stream with its last block made an ordinary one,
/// padded to a byte boundary with an empty stored block when it does not
/// end on one: the blocks before the last as they arrived, the last one
/// copied and changed.
fn append_member(member: &Member, out: &mut Segments) {
    let final_byte = (member.final_block / 8) as usize;
    let end_byte = member.end.div_ceil(8) as usize;
    out.arrived(member.data.slice(member.deflate_start..final_byte));
    let start = out.own.len();
    out.own
        .extend_from_slice(&member.data[final_byte..end_byte]);
    out.own[start] &= !(1u8 << (member.final_block % 8));
    let used = (member.end % 8) as u32;
    if used != 0 {
        // Keep the last byte's used bits; an empty stored block's header
        // (BFINAL 0, BTYPE 00: three zero bits) follows them, then padding
        // to the byte boundary, LEN 0 and NLEN 0xffff.
        let last = out.own.len() - 1;
        out.own[last] &= (1u8 << used) - 1;
        if used + 3 > 8 {
            out.own.push(0);
        }
        out.own.extend_from_slice(&[0, 0, 0xff, 0xff]);
    }
}
