//! Compressing a request for the OTLP exporters, gRPC and HTTP alike: the
//! whole message at once, on tokio's blocking pool for a large message
//! ([`crate::offload`]), at the level of the exporter's
//! `compression_params`; by default gzip at level 1
//! ([`GZIP_EXPORT_LEVEL`](crate::compression::GZIP_EXPORT_LEVEL); the
//! collector and tonic use 6, several times the CPU for a few per cent
//! smaller OTLP) and zstd at its default level, 3.
//!
//! zstd keeps one compression context per thread and reuses it. A new
//! context per request (what `zstd::bulk::compress` and tonic's
//! `send_compressed` build) allocates and zeroes its window and match
//! tables every time, a fixed cost per request that outweighed compressing
//! the data at a GPU node's few requests per second (benches/RESULTS.md,
//! "GPU-node footprint"). The message's size is known, so the context's
//! tables are sized to it.

use std::cell::RefCell;

use bytes::Bytes;
use tracegate_model::{GzipRange, SpanBatch};

use super::delivery::{compression_level, Compression, CompressionParams};
use crate::config::ComponentError;
use crate::offload;

thread_local! {
    /// This thread's zstd context and the level it is set to.
    static ZSTD: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

impl Compression {
    /// The encoding's name on the wire (`Content-Encoding`,
    /// `grpc-encoding`); `None` when requests go uncompressed.
    pub(crate) fn wire_name(self) -> Option<&'static str> {
        match self {
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
            Compression::None => None,
        }
    }

    /// The encoder of this algorithm at the level of `params` (checked as
    /// [`compression_level`] checks it).
    pub(crate) fn encoder(self, params: CompressionParams) -> Result<Encoder, ComponentError> {
        Ok(Encoder {
            compression: self,
            level: compression_level(self, params)?,
        })
    }
}

/// How an exporter compresses its requests: the algorithm and its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Encoder {
    compression: Compression,
    level: i32,
}

impl Encoder {
    /// The algorithm at tracegate's level for it (gzip 1, zstd 3).
    #[cfg(test)]
    pub(crate) fn default_level(compression: Compression) -> Encoder {
        compression
            .encoder(CompressionParams::default())
            .expect("the default level is valid")
    }

    /// The encoding's name on the wire; `None` when uncompressed.
    pub(crate) fn wire_name(self) -> Option<&'static str> {
        self.compression.wire_name()
    }

    /// `message` compressed as one gzip member or one zstd frame; `None`
    /// when requests go uncompressed.
    pub(crate) fn compress(self, message: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        match self.compression {
            Compression::None => Ok(None),
            Compression::Gzip => {
                // OTLP compresses 4–6× at level 1: a quarter is rarely outgrown.
                let mut out = Vec::with_capacity(message.len() / 4);
                let level =
                    u32::try_from(self.level).unwrap_or(crate::compression::GZIP_EXPORT_LEVEL);
                crate::compression::gzip_into(&mut out, message, level);
                Ok(Some(out))
            }
            Compression::Zstd => ZSTD
                .with(|cell| {
                    let mut cell = cell.borrow_mut();
                    let (level, compressor) = match &mut *cell {
                        Some(context) => context,
                        empty => {
                            empty.insert((self.level, zstd::bulk::Compressor::new(self.level)?))
                        }
                    };
                    // Exporters of different levels may share this thread.
                    if *level != self.level {
                        compressor.set_compression_level(self.level)?;
                        *level = self.level;
                    }
                    compressor.compress(message)
                })
                .map(Some),
        }
    }

    /// A batch's request as sent, as consecutive segments. With gzip, a
    /// batch whose bytes arrived (in part or whole) as gzip members,
    /// unchanged since, is sent as one gzip member assembled from their
    /// deflate data, only the bytes between them compressed here
    /// ([`gzip_spliced`]); a batch the batch processor put together is read
    /// in its segments ([`SpanBatch::segments`]), never joined into one
    /// buffer first. Any other gzip batch is compressed whole from its
    /// segments too; zstd and uncompressed requests as
    /// [`Encoder::compress_message`] sends them.
    pub(crate) async fn compress_batch(self, batch: &SpanBatch) -> Result<Vec<Bytes>, String> {
        if self.compression != Compression::Gzip {
            return self
                .compress_message(batch.bytes().clone())
                .await
                .map(|message| vec![message]);
        }
        // The bytes and the members, not the batch's index.
        let segments = batch.segments().to_vec();
        let members = batch.gzip_members().to_vec();
        // What is left to compress decides whether the blocking pool is
        // worth it; copying the members' last blocks is a fraction of that.
        let arrived: usize = members.iter().map(|g| g.member.len()).sum();
        let to_compress = batch.encoded_len().saturating_sub(arrived);
        let level = u32::try_from(self.level).unwrap_or(crate::compression::GZIP_EXPORT_LEVEL);
        offload::by_size(to_compress, offload::COMPRESSED_BYTES, move || {
            if members.is_empty() {
                let mut out = Vec::with_capacity(to_compress / 4);
                crate::compression::gzip_segments_into(&mut out, &segments, level);
                vec![Bytes::from(out)]
            } else {
                gzip_spliced(&segments, &members, level)
            }
        })
        .await
    }

    /// The message as sent: compressed per [`Encoder::compress`], on the
    /// blocking pool when it is large ([`offload::COMPRESSED_BYTES`]).
    pub(crate) async fn compress_message(self, message: Bytes) -> Result<Bytes, String> {
        if self.compression == Compression::None {
            return Ok(message);
        }
        let size = message.len();
        offload::by_size(size, offload::COMPRESSED_BYTES, move || {
            match self.compress(&message) {
                Ok(Some(compressed)) => Ok(Bytes::from(compressed)),
                Ok(None) => Ok(message),
                Err(e) => Err(format!("cannot compress the request: {e}")),
            }
        })
        .await
        .and_then(|compressed| compressed)
    }
}

/// The request made of `segments` (in order) as one gzip member, in
/// segments: the `members` (ranges of the request that arrived
/// gzip-compressed, in order) reused as they came, the rest deflated at
/// `level`, segment after segment as one run. A member is used only if its
/// range still holds the data it arrived with: the range is the very
/// buffer it was inflated into ([`GzipRange::inflated`]; the usual case, no
/// byte read), or else the CRC-32 of the range is the member's. Bytes
/// changed (which nothing does) would be compressed afresh rather than
/// sent stale.
pub(crate) fn gzip_spliced(segments: &[Bytes], members: &[GzipRange], level: u32) -> Vec<Bytes> {
    let request = Request::new(segments);
    let mut pieces = Vec::with_capacity(members.len() * 2 + segments.len());
    let mut at = 0;
    for range in members {
        let (start, member) = (range.at, &range.member);
        let end = start + member.len();
        if start < at || end > request.len {
            debug_assert!(false, "gzip member out of place");
            continue;
        }
        if !still_holds(&request, range) {
            debug_assert!(false, "gzip member no longer matches its bytes");
            continue;
        }
        pieces.extend(request.slices(at..start).map(tracegate_gzip::Piece::Plain));
        pieces.push(tracegate_gzip::Piece::Member(member));
        at = end;
    }
    pieces.extend(
        request
            .slices(at..request.len)
            .map(tracegate_gzip::Piece::Plain),
    );
    tracegate_gzip::splice_segments(&pieces, level)
}

/// Whether the request's bytes in `range` are the member's data: the same
/// memory it was inflated into, or bytes with its CRC-32.
fn still_holds(request: &Request<'_>, range: &GzipRange) -> bool {
    let inflated = range.inflated();
    let span = range.at..range.at + range.member.len();
    let mut slices = request.slices(span.clone());
    let same_memory = match (slices.next(), slices.next()) {
        (Some(only), None) => only.as_ptr() == inflated.as_ptr() && only.len() == inflated.len(),
        (None, _) => inflated.is_empty(),
        _ => false,
    };
    if same_memory {
        return true;
    }
    let mut crc = crc32fast::Hasher::new();
    request.slices(span).for_each(|data| crc.update(data));
    crc.finalize() == range.member.crc()
}

/// A request held in consecutive segments, read by ranges of the whole.
struct Request<'a> {
    segments: &'a [Bytes],
    /// Where each segment starts in the whole.
    starts: Vec<usize>,
    len: usize,
}

impl<'a> Request<'a> {
    fn new(segments: &'a [Bytes]) -> Request<'a> {
        let mut len = 0;
        let starts = segments
            .iter()
            .map(|s| {
                let start = len;
                len += s.len();
                start
            })
            .collect();
        Request {
            segments,
            starts,
            len,
        }
    }

    /// The parts of the segments that `range` (within the whole) covers,
    /// in order, none empty.
    fn slices(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = &'a [u8]> + '_ {
        // The segment holding the range's first byte.
        let first = self.starts.partition_point(|&s| s <= range.start).max(1) - 1;
        let segments: &'a [Bytes] = self.segments;
        segments
            .iter()
            .zip(&self.starts)
            .skip(first)
            .take_while(move |(_, &start)| start < range.end)
            .filter_map(move |(segment, &start)| {
                let from = range.start.max(start) - start;
                let to = range.end.min(start + segment.len()) - start;
                (from < to).then(|| &segment[from..to])
            })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn messages() -> [Vec<u8>; 3] {
        let large: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let small = b"a second, unrelated message".repeat(100);
        [large.clone(), small, large]
    }

    #[test]
    fn zstd_frames_read_back_with_the_context_reused() {
        for message in messages() {
            let compressed = Encoder::default_level(Compression::Zstd)
                .compress(&message)
                .unwrap()
                .unwrap();
            assert!(compressed.len() < message.len() / 4);
            assert_eq!(zstd::stream::decode_all(&compressed[..]).unwrap(), message);
        }
    }

    #[test]
    fn gzip_members_read_back() {
        for message in messages() {
            let compressed = Encoder::default_level(Compression::Gzip)
                .compress(&message)
                .unwrap()
                .unwrap();
            assert!(compressed.len() < message.len() / 4);
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&compressed[..])
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, message);
        }
    }

    #[tokio::test]
    async fn large_and_small_messages_compress_alike_wherever_they_run() {
        for message in messages() {
            let sent = Encoder::default_level(Compression::Zstd)
                .compress_message(Bytes::from(message.clone()))
                .await
                .unwrap();
            assert_eq!(zstd::stream::decode_all(&sent[..]).unwrap(), message);
        }
        let plain = Bytes::from_static(b"abc");
        assert_eq!(
            Encoder::default_level(Compression::None)
                .compress_message(plain.clone())
                .await,
            Ok(plain)
        );
    }

    /// A level changes what is written, not what is read back; and one
    /// thread's context serves exporters of different levels in turn.
    #[test]
    fn levels_are_honoured_and_read_back() {
        let message = &messages()[0];
        let at = |compression: Compression, level| {
            let encoder = compression.encoder(CompressionParams { level }).unwrap();
            encoder.compress(message).unwrap().unwrap()
        };
        for _ in 0..2 {
            let (fast, default, small) = (
                at(Compression::Zstd, -5),
                at(Compression::Zstd, 0),
                at(Compression::Zstd, 19),
            );
            assert!(
                fast.len() > default.len(),
                "{} {}",
                fast.len(),
                default.len()
            );
            assert!(
                small.len() < default.len(),
                "{} {}",
                small.len(),
                default.len()
            );
            assert_eq!(at(Compression::Zstd, 3), default);
            for frame in [fast, default, small] {
                assert_eq!(&zstd::stream::decode_all(&frame[..]).unwrap(), message);
            }
        }
        let (gzip1, gzip9) = (at(Compression::Gzip, 0), at(Compression::Gzip, 9));
        assert_eq!(at(Compression::Gzip, 1), gzip1);
        assert!(gzip9.len() < gzip1.len(), "{} {}", gzip9.len(), gzip1.len());
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gzip9[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(&out, message);
    }

    /// A batch as the gRPC receiver makes it of a request that arrived
    /// gzip-compressed at `level`, with the members recorded.
    fn arrived_gzip(resources: usize, spans: usize, level: u32) -> SpanBatch {
        let plain = crate::exporter::test_support::sample_batch(resources, spans);
        let mut body = Vec::new();
        crate::compression::gzip_into(&mut body, plain.bytes(), level);
        let (message, members) =
            crate::compression::gunzip_members(&Bytes::from(body), 64 << 20).unwrap();
        let mut batch = SpanBatch::scan(message.clone()).unwrap();
        batch.set_gzip_members(&message, members);
        assert_eq!(batch.gzip_members().len(), 1);
        batch
    }

    /// What a decoder that reads one member only (tonic's) makes of `gz`.
    fn first_member(gz: &[u8]) -> Vec<u8> {
        let mut decoder = flate2::bufread::GzDecoder::new(gz);
        let mut out = Vec::new();
        decoder.read_to_end(&mut out).unwrap();
        assert!(decoder.into_inner().is_empty(), "more than one member");
        out
    }

    #[tokio::test]
    async fn batches_of_whole_gzip_requests_are_sent_as_one_member_of_the_arrived_deflate_data() {
        let parts = [
            arrived_gzip(2, 30, 6),
            arrived_gzip(1, 1, 9),
            arrived_gzip(3, 400, 1),
        ];
        let merged = SpanBatch::concat(&parts);
        assert_eq!(merged.gzip_members().len(), 3);
        let sent = Encoder::default_level(Compression::Gzip)
            .compress_batch(&merged)
            .await
            .unwrap();
        // Read from the batch's segments: the batch was not joined.
        assert_eq!(merged.segments().len(), 3);
        // The arrived deflate blocks go out as the very bytes that arrived.
        let bodies: Vec<&[u8]> = parts
            .iter()
            .map(|p| &p.gzip_members()[0].member.data()[..])
            .collect();
        assert!(
            sent.iter()
                .any(|s| s.len() > 1000 && bodies.iter().any(|b| inside(s, b))),
            "no segment of the arrived bodies"
        );
        let sent = sent.concat();
        assert_eq!(first_member(&sent), &merged.bytes()[..]);
        // The arrived level-6 and level-9 deflate data was reused, not
        // recompressed at level 1: the whole is the members' size plus a few
        // bytes for each join.
        let arrived: usize = parts
            .iter()
            .map(|p| p.gzip_members()[0].member.compressed_len())
            .sum();
        assert!(sent.len() <= arrived + 32, "{} vs {arrived}", sent.len());
    }

    #[tokio::test]
    async fn anything_else_in_the_batch_is_compressed_between_the_members() {
        let gzipped = arrived_gzip(2, 50, 6);
        let plain = crate::exporter::test_support::sample_batch(1, 20);
        // A subset writes new bytes: no member survives it.
        let subset = gzipped.select(&[0, 2, 5, 99]);
        assert_eq!(subset.len(), 4);
        assert!(subset.gzip_members().is_empty());
        let merged = SpanBatch::concat(&[plain.clone(), gzipped.clone(), subset, plain]);
        assert_eq!(merged.gzip_members().len(), 1);
        let sent = Encoder::default_level(Compression::Gzip)
            .compress_batch(&merged)
            .await
            .unwrap()
            .concat();
        assert_eq!(merged.segments().len(), 4, "the batch was joined");
        assert_eq!(first_member(&sent), &merged.bytes()[..]);
        // zstd and none ignore the members.
        let zstd = Encoder::default_level(Compression::Zstd)
            .compress_batch(&merged)
            .await
            .unwrap();
        assert_eq!(
            zstd::stream::decode_all(&zstd.concat()[..]).unwrap(),
            &merged.bytes()[..]
        );
        let none = Encoder::default_level(Compression::None)
            .compress_batch(&merged)
            .await
            .unwrap();
        assert_eq!(none, [merged.bytes().clone()]);
    }

    #[test]
    fn a_member_that_no_longer_matches_its_bytes_is_compressed_afresh() {
        let batch = arrived_gzip(1, 10, 6);
        let mut changed = batch.bytes().to_vec();
        let n = changed.len();
        changed[n / 2] ^= 1;
        // In one segment, and split in three across the member's range.
        let whole = [Bytes::from(changed.clone())];
        let split = [
            Bytes::copy_from_slice(&changed[..n / 3]),
            Bytes::copy_from_slice(&changed[n / 3..n / 2 + 1]),
            Bytes::copy_from_slice(&changed[n / 2 + 1..]),
        ];
        for segments in [&whole[..], &split[..]] {
            let result =
                std::panic::catch_unwind(|| gzip_spliced(segments, batch.gzip_members(), 1));
            // Debug builds stop at the assertion; release builds compress
            // the bytes as they are.
            if let Ok(sent) = result {
                assert_eq!(first_member(&sent.concat()), changed);
            }
        }
    }

    /// Whether `segment` lies inside `buffer` (shares its memory).
    fn inside(segment: &[u8], buffer: &[u8]) -> bool {
        let (start, end) = (segment.as_ptr() as usize, buffer.as_ptr() as usize);
        start >= end && start + segment.len() <= end + buffer.len()
    }

    /// A member's range may lie across segments (nothing makes such a
    /// batch today, but nothing forbids it): it is checked and reused all
    /// the same, and the plain bytes around it are compressed across their
    /// segments.
    #[test]
    fn members_and_plain_bytes_are_read_across_segments() {
        // Large enough for several deflate blocks.
        let gzipped = arrived_gzip(2, 3000, 6);
        let arrived = gzipped.gzip_members()[0].member.data().clone();
        let plain = crate::exporter::test_support::sample_batch(1, 20);
        let merged = SpanBatch::concat(&[plain.clone(), gzipped, plain]);
        let whole = merged.bytes().clone();
        let n = whole.len();
        for cuts in [vec![], vec![1], vec![n / 2], vec![3, n / 3, n / 2, n - 2]] {
            let mut segments = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([n]) {
                segments.push(whole.slice(from..cut));
                from = cut;
            }
            let sent = gzip_spliced(&segments, merged.gzip_members(), 1);
            assert_eq!(first_member(&sent.concat()), &whole[..]);
            // The member was reused: its blocks went out as they came.
            assert!(sent.iter().any(|s| s.len() > 1000 && inside(s, &arrived)));
        }
    }

    /// A gzip batch without members (split, sampled, or arrived
    /// uncompressed) is compressed whole from its segments, not joined.
    #[tokio::test]
    async fn a_batch_without_members_is_compressed_from_its_segments() {
        let parts: Vec<SpanBatch> = (1..4)
            .map(|n| crate::exporter::test_support::sample_batch(n, 30 * n))
            .collect();
        let merged = SpanBatch::concat(&parts);
        assert!(merged.gzip_members().is_empty());
        let sent = Encoder::default_level(Compression::Gzip)
            .compress_batch(&merged)
            .await
            .unwrap();
        assert_eq!(merged.segments().len(), 3, "the batch was joined");
        assert_eq!(sent.len(), 1);
        assert_eq!(first_member(&sent[0]), &merged.bytes()[..]);
    }

    #[test]
    fn none_leaves_the_message_alone() {
        assert_eq!(
            Encoder::default_level(Compression::None)
                .compress(b"abc")
                .unwrap(),
            None
        );
        assert_eq!(Compression::None.wire_name(), None);
        assert_eq!(Compression::Gzip.wire_name(), Some("gzip"));
        assert_eq!(Compression::Zstd.wire_name(), Some("zstd"));
    }
}
