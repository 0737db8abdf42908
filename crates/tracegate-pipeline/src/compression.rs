//! Decompressing request bodies from the network with a hard cap on the
//! decompressed size, so a compression bomb is refused after at most `limit`
//! bytes of output have been held (docs/architecture.md, "Answers to
//! clients").

use std::io::Read;

use bytes::Bytes;

/// A `Content-Encoding` tracegate can decode, as the collector's `confighttp`
/// names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentEncoding {
    /// No encoding (`Content-Encoding` absent, empty or `identity`).
    Identity,
    /// `gzip` (also `x-gzip`); concatenated members are read as one stream,
    /// as Go's gzip reader does.
    Gzip,
    /// `zstd`; concatenated frames are read as one stream.
    Zstd,
    /// `deflate` or `zlib`: both mean the zlib format, as in the collector.
    Zlib,
    /// `snappy`: the block format, or the framing format when the body
    /// starts with the framing format's stream identifier (the collector
    /// once sent framed bodies under this name, and detects them so).
    Snappy,
    /// `x-snappy-framed`: the snappy framing format only.
    SnappyFramed,
    /// `lz4`: the LZ4 frame format; concatenated frames are one stream.
    Lz4,
}

impl ContentEncoding {
    /// Parses a `Content-Encoding` header value; `None` when unsupported.
    pub fn from_header(value: &str) -> Option<ContentEncoding> {
        let value = value.trim();
        if value.is_empty() || value.eq_ignore_ascii_case("identity") {
            Some(ContentEncoding::Identity)
        } else if value.eq_ignore_ascii_case("gzip") || value.eq_ignore_ascii_case("x-gzip") {
            Some(ContentEncoding::Gzip)
        } else if value.eq_ignore_ascii_case("zstd") {
            Some(ContentEncoding::Zstd)
        } else if value.eq_ignore_ascii_case("deflate") || value.eq_ignore_ascii_case("zlib") {
            Some(ContentEncoding::Zlib)
        } else if value.eq_ignore_ascii_case("snappy") {
            Some(ContentEncoding::Snappy)
        } else if value.eq_ignore_ascii_case("x-snappy-framed") {
            Some(ContentEncoding::SnappyFramed)
        } else if value.eq_ignore_ascii_case("lz4") {
            Some(ContentEncoding::Lz4)
        } else {
            None
        }
    }

    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            ContentEncoding::Identity => "identity",
            ContentEncoding::Gzip => "gzip",
            ContentEncoding::Zstd => "zstd",
            ContentEncoding::Zlib => "zlib",
            ContentEncoding::Snappy => "snappy",
            ContentEncoding::SnappyFramed => "x-snappy-framed",
            ContentEncoding::Lz4 => "lz4",
        }
    }
}

/// Why a body could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    /// The decompressed body would exceed the limit.
    #[error("decompressed body exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// The body is not valid data of its declared encoding (HTTP 400).
    #[error("invalid {encoding} body: {message}")]
    Corrupt {
        encoding: &'static str,
        message: String,
    },
}

/// Decodes `input` as `encoding`, holding at most `limit` bytes of output
/// (plus one byte to detect the overflow). Identity input is returned as is
/// (the caller has already capped the raw body).
pub fn decompress(
    encoding: ContentEncoding,
    input: Bytes,
    limit: usize,
) -> Result<Bytes, DecompressError> {
    let corrupt = |e: std::io::Error| DecompressError::Corrupt {
        encoding: encoding.name(),
        message: e.to_string(),
    };
    match encoding {
        ContentEncoding::Identity => {
            if input.len() > limit {
                return Err(DecompressError::TooLarge { limit });
            }
            Ok(input)
        }
        ContentEncoding::Gzip => gzip_whole(&input, limit),
        ContentEncoding::Zlib => read_capped(
            flate2::read::ZlibDecoder::new(&input[..]),
            limit,
            input.len(),
        )
        .map_err(|e| e.into_error(corrupt)),
        ContentEncoding::Zstd => {
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(&input[..]).map_err(corrupt)?;
            // The frame header names the window the decoder reserves. Its
            // pages are only touched as output is written, and output stops
            // at the cap, so this bounds address space, not memory held.
            decoder
                .window_log_max(zstd_window_log_max(limit))
                .map_err(corrupt)?;
            read_capped(decoder, limit, input.len()).map_err(|e| match e {
                CappedReadError::Io(io) if is_zstd_window_too_large(&io) => {
                    DecompressError::TooLarge { limit }
                }
                other => other.into_error(corrupt),
            })
        }
        ContentEncoding::Snappy if !input.starts_with(SNAPPY_STREAM_IDENTIFIER) => {
            snappy_block(&input, limit)
        }
        ContentEncoding::Snappy | ContentEncoding::SnappyFramed => read_capped(
            snap::read::FrameDecoder::new(&input[..]),
            limit,
            input.len(),
        )
        .map_err(|e| e.into_error(corrupt)),
        ContentEncoding::Lz4 => read_capped(
            lz4_flex::frame::FrameDecoder::new(&input[..]),
            limit,
            input.len(),
        )
        .map_err(|e| e.into_error(corrupt)),
    }
}

/// The gzip level tracegate's exporters compress with: level 1, whose
/// output every gzip reader decodes like any other level's. Level 6 (Go's
/// and tonic's default) cost about four times the CPU for requests about
/// 20 % smaller (benches/RESULTS.md, "The gzip path").
pub const GZIP_EXPORT_LEVEL: u32 = 1;

/// Appends one gzip member holding `data`, compressed at `level`, to
/// `out`.
pub fn gzip_into(out: &mut Vec<u8>, data: &[u8], level: u32) {
    gzip_segments_into(out, &[data], level);
}

/// Appends one gzip member holding the `segments` one after the other,
/// compressed at `level` as one stream (the data of [`gzip_into`] of them
/// joined, without joining them), to `out`.
pub fn gzip_segments_into(out: &mut Vec<u8>, segments: &[impl AsRef<[u8]>], level: u32) {
    use std::io::Write;
    let mut encoder =
        flate2::write::GzEncoder::new(std::mem::take(out), flate2::Compression::new(level));
    for segment in segments {
        encoder
            .write_all(segment.as_ref())
            .expect("writing to a Vec cannot fail");
    }
    *out = encoder.finish().expect("writing to a Vec cannot fail");
}

/// gzip, read whole ([`tracegate_gzip::gunzip`]): each member inflated in
/// one pass straight into the output, which starts at the size the last
/// member's trailer states (ISIZE, the whole body's size when there is one
/// member) and grows by doubling up to `limit + 1` bytes, so a trailer that
/// lies costs a regrowth, never more memory than the cap. Members follow
/// one another until the input ends, as Go's gzip reader reads them.
fn gzip_whole(input: &Bytes, limit: usize) -> Result<Bytes, DecompressError> {
    gunzip_members(input, limit).map(|(data, _)| data)
}

/// A gzip body inflated as [`decompress`] does, with the members it was
/// made of and where each one's data starts in the output, for a batch
/// that may be sent on compressed as it came
/// (`SpanBatch::set_gzip_members`).
pub fn gunzip_members(
    input: &Bytes,
    limit: usize,
) -> Result<(Bytes, Vec<(usize, tracegate_gzip::Member)>), DecompressError> {
    match tracegate_gzip::gunzip(input, limit) {
        Ok(gunzipped) => Ok((Bytes::from(gunzipped.data), gunzipped.members)),
        Err(tracegate_gzip::GunzipError::TooLarge) => Err(DecompressError::TooLarge { limit }),
        Err(tracegate_gzip::GunzipError::Corrupt(message)) => Err(DecompressError::Corrupt {
            encoding: ContentEncoding::Gzip.name(),
            message,
        }),
    }
}

/// The first chunk of every snappy framing-format stream: chunk type
/// 0xff, length 6, `sNaPpY`.
const SNAPPY_STREAM_IDENTIFIER: &[u8] = b"\xff\x06\x00\x00sNaPpY";

/// A snappy block: its header states the decoded length, which is checked
/// against `limit` before anything is allocated.
fn snappy_block(input: &[u8], limit: usize) -> Result<Bytes, DecompressError> {
    let corrupt = |e: snap::Error| DecompressError::Corrupt {
        encoding: ContentEncoding::Snappy.name(),
        message: e.to_string(),
    };
    let len = snap::raw::decompress_len(input).map_err(corrupt)?;
    if len > limit {
        return Err(DecompressError::TooLarge { limit });
    }
    let mut out = vec![0; len];
    let written = snap::raw::Decoder::new()
        .decompress(input, &mut out)
        .map_err(corrupt)?;
    out.truncate(written);
    Ok(Bytes::from(out))
}

enum CappedReadError {
    TooLarge { limit: usize },
    Io(std::io::Error),
}

impl CappedReadError {
    fn into_error(self, corrupt: impl Fn(std::io::Error) -> DecompressError) -> DecompressError {
        match self {
            CappedReadError::TooLarge { limit } => DecompressError::TooLarge { limit },
            CappedReadError::Io(e) => corrupt(e),
        }
    }
}

/// Reads `reader` to the end into a buffer that never grows past
/// `limit + 1` bytes (grown by doubling with exact reservations, so the
/// allocator is never asked for more).
fn read_capped(
    mut reader: impl Read,
    limit: usize,
    input_len: usize,
) -> Result<Bytes, CappedReadError> {
    let max = limit.saturating_add(1);
    // Typical OTLP compresses 5-10x; start near that and double from there.
    let initial = input_len.saturating_mul(4).max(4096).min(max);
    let mut buf: Vec<u8> = Vec::new();
    buf.reserve_exact(initial);
    buf.resize(initial, 0);
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            if buf.len() >= max {
                return Err(CappedReadError::TooLarge { limit });
            }
            let grow = buf.len().min(max - buf.len());
            buf.reserve_exact(grow);
            buf.resize(buf.len() + grow, 0);
        }
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CappedReadError::Io(e)),
        }
    }
    if filled > limit {
        return Err(CappedReadError::TooLarge { limit });
    }
    buf.truncate(filled);
    Ok(Bytes::from(buf))
}

/// The largest zstd window accepted: what any standard level (1..=19,
/// window up to 2^23) or a body as large as `limit` needs, never more than
/// zstd's own default limit (2^27).
fn zstd_window_log_max(limit: usize) -> u32 {
    let ceil_log2 = usize::BITS - limit.max(2).saturating_sub(1).leading_zeros();
    ceil_log2.clamp(23, 27)
}

fn is_zstd_window_too_large(e: &std::io::Error) -> bool {
    // zstd reports ZSTD_error_frameParameter_windowTooLarge only as text.
    e.to_string().contains("too much memory")
}

/// Bodies compressed as a client would send them, for tests here and of
/// the receivers.
#[cfg(test)]
pub(crate) mod test_encoders {
    use std::io::Write;

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    pub(crate) fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    pub(crate) fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 3).unwrap()
    }

    /// The snappy block format (`Content-Encoding: snappy`).
    pub(crate) fn snappy_block(data: &[u8]) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(data).unwrap()
    }

    /// The snappy framing format (`snappy` or `x-snappy-framed`).
    pub(crate) fn snappy_framed(data: &[u8]) -> Vec<u8> {
        let mut e = snap::write::FrameEncoder::new(Vec::new());
        e.write_all(data).unwrap();
        e.into_inner().unwrap()
    }

    /// The LZ4 frame format (`lz4`).
    pub(crate) fn lz4(data: &[u8]) -> Vec<u8> {
        let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::test_encoders::{gzip, lz4, snappy_block, snappy_framed, zlib};
    use super::*;

    #[test]
    fn parses_encodings_as_the_collector_names_them() {
        use ContentEncoding::*;
        for (header, want) in [
            ("", Some(Identity)),
            ("identity", Some(Identity)),
            ("gzip", Some(Gzip)),
            ("GZIP", Some(Gzip)),
            ("x-gzip", Some(Gzip)),
            ("zstd", Some(Zstd)),
            ("deflate", Some(Zlib)),
            ("zlib", Some(Zlib)),
            ("snappy", Some(Snappy)),
            ("x-snappy-framed", Some(SnappyFramed)),
            ("lz4", Some(Lz4)),
            ("LZ4", Some(Lz4)),
            ("br", None),
            ("gzip, zstd", None),
        ] {
            assert_eq!(ContentEncoding::from_header(header), want, "{header:?}");
        }
    }

    #[test]
    fn round_trips_every_encoding() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let cases = [
            (ContentEncoding::Gzip, gzip(&data)),
            (ContentEncoding::Zlib, zlib(&data)),
            (ContentEncoding::Zstd, test_encoders::zstd(&data)),
            (ContentEncoding::Snappy, snappy_block(&data)),
            (ContentEncoding::Snappy, snappy_framed(&data)),
            (ContentEncoding::SnappyFramed, snappy_framed(&data)),
            (ContentEncoding::Lz4, lz4(&data)),
            (ContentEncoding::Identity, data.clone()),
        ];
        for (encoding, compressed) in cases {
            let out = decompress(encoding, Bytes::from(compressed), data.len())
                .unwrap_or_else(|e| panic!("{encoding:?}: {e}"));
            assert_eq!(&out[..], &data[..], "{encoding:?}");
        }
    }

    #[test]
    fn concatenated_gzip_members_are_one_body() {
        let mut body = gzip(b"hello ");
        body.extend(gzip(b"world"));
        let out = decompress(ContentEncoding::Gzip, Bytes::from(body), 100).unwrap();
        assert_eq!(&out[..], b"hello world");
    }

    /// What flate2's streaming multi-member reader makes of `body`: the
    /// reference the whole-body gzip path must agree with.
    fn streaming_gunzip(body: &[u8]) -> Option<Vec<u8>> {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(body)
            .read_to_end(&mut out)
            .ok()
            .map(|_| out)
    }

    fn gzip_level(data: &[u8], level: u32) -> Vec<u8> {
        let mut out = Vec::new();
        gzip_into(&mut out, data, level);
        out
    }

    #[test]
    fn gzip_members_of_every_size_and_level_decode_as_the_streaming_reader_does() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 1000).to_le_bytes())
            .collect();
        let mut bodies = Vec::new();
        for level in [1, 6, 9] {
            bodies.push(gzip_level(&data, level));
            bodies.push(gzip_level(&[], level));
            // Three members: two large, one empty.
            let mut multi = gzip_level(&data[..500_000], level);
            multi.extend(gzip_level(&[], level));
            multi.extend(gzip_level(&data[500_000..], level));
            bodies.push(multi);
        }
        for body in bodies {
            let want = streaming_gunzip(&body).unwrap();
            let got = decompress(ContentEncoding::Gzip, Bytes::from(body), data.len()).unwrap();
            assert_eq!(&got[..], &want[..]);
        }
    }

    #[test]
    fn an_empty_gzip_body_is_read_as_the_streaming_reader_reads_it() {
        let got = decompress(ContentEncoding::Gzip, Bytes::new(), 100);
        match streaming_gunzip(b"") {
            Some(want) => assert_eq!(got.unwrap(), want),
            None => assert!(matches!(got, Err(DecompressError::Corrupt { .. }))),
        }
    }

    #[test]
    fn a_second_member_the_size_of_the_first_is_not_dropped() {
        // The last member's ISIZE equals the first member's size: a decoder
        // that stopped after one member would look done.
        let mut body = gzip(b"ab");
        body.extend(gzip(b"cd"));
        let out = decompress(ContentEncoding::Gzip, Bytes::from(body), 100).unwrap();
        assert_eq!(&out[..], b"abcd");
    }

    #[test]
    fn a_wrong_isize_trailer_costs_a_regrowth_or_is_refused_as_corrupt() {
        let data: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let good = gzip(&data);
        let n = good.len();
        for stated in [0u32, 1, 10, data.len() as u32 / 3, u32::MAX] {
            let mut body = good.clone();
            body[n - 4..].copy_from_slice(&stated.to_le_bytes());
            // The trailer is checked after inflating: a wrong ISIZE is a
            // corrupt body, whatever size it claimed, as for the streaming
            // reader; and a huge claim is not a reason to hold the cap.
            assert_eq!(streaming_gunzip(&body), None);
            assert!(
                matches!(
                    decompress(ContentEncoding::Gzip, Bytes::from(body), data.len()),
                    Err(DecompressError::Corrupt {
                        encoding: "gzip",
                        ..
                    })
                ),
                "stated {stated}"
            );
        }
    }

    #[test]
    fn gzip_bombs_stop_at_the_cap_whatever_the_trailer_says() {
        let zeros = vec![0u8; 8 << 20];
        let limit = 1 << 20;
        let one = gzip(&zeros);
        // The honest trailer (8 MiB), a lying small one, and many members.
        let mut lying = one.clone();
        let n = lying.len();
        lying[n - 4..].copy_from_slice(&100u32.to_le_bytes());
        let mut members = gzip(&zeros[..limit / 2]);
        members.extend(gzip(&zeros[..limit / 2]));
        members.extend(gzip(b"x"));
        for bomb in [one, lying, members] {
            assert_eq!(
                decompress(ContentEncoding::Gzip, Bytes::from(bomb), limit),
                Err(DecompressError::TooLarge { limit })
            );
        }
        // Exactly the cap over several members is accepted.
        let mut exact = gzip(&zeros[..limit / 2]);
        exact.extend(gzip(&zeros[..limit / 2]));
        assert_eq!(
            decompress(ContentEncoding::Gzip, Bytes::from(exact), limit)
                .unwrap()
                .len(),
            limit
        );
    }

    #[test]
    fn corrupt_truncated_or_trailing_gzip_is_refused_as_the_streaming_reader_refuses_it() {
        let data = b"spans spans spans".repeat(1000);
        let good = gzip(&data);
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 0x55;
        let mut bad_crc = good.clone();
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 1;
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"garbage after the member");
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", good[..good.len() - 10].to_vec()),
            ("header only", good[..10].to_vec()),
            ("flipped", flipped),
            ("bad crc", bad_crc),
            ("trailing garbage", trailing),
            (
                "not gzip",
                b"not compressed at all, and long enough".to_vec(),
            ),
        ];
        for (name, body) in cases {
            assert_eq!(
                streaming_gunzip(&body).map(|_| ()),
                None,
                "{name}: reference"
            );
            assert!(
                matches!(
                    decompress(ContentEncoding::Gzip, Bytes::from(body), 1 << 20),
                    Err(DecompressError::Corrupt {
                        encoding: "gzip",
                        ..
                    })
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn output_exactly_at_the_limit_is_accepted_and_one_more_byte_is_not() {
        let data = vec![7u8; 10_000];
        for (encoding, compressed) in [
            (ContentEncoding::Gzip, gzip(&data)),
            (ContentEncoding::Zlib, zlib(&data)),
            (
                ContentEncoding::Zstd,
                zstd::stream::encode_all(&data[..], 1).unwrap(),
            ),
            (ContentEncoding::Snappy, snappy_block(&data)),
            (ContentEncoding::Snappy, snappy_framed(&data)),
            (ContentEncoding::SnappyFramed, snappy_framed(&data)),
            (ContentEncoding::Lz4, lz4(&data)),
            (ContentEncoding::Identity, data.clone()),
        ] {
            let compressed = Bytes::from(compressed);
            assert_eq!(
                decompress(encoding, compressed.clone(), 10_000)
                    .unwrap()
                    .len(),
                10_000
            );
            assert_eq!(
                decompress(encoding, compressed, 9_999),
                Err(DecompressError::TooLarge { limit: 9_999 }),
                "{encoding:?}"
            );
        }
    }

    #[test]
    fn a_bomb_stops_at_the_cap() {
        // 64 MiB of zeros, compressed to a few KiB per encoding.
        let chunk = vec![0u8; 1 << 20];
        let one_member = gzip(&chunk);
        let bomb: Vec<u8> = one_member.repeat(64);
        let err = decompress(ContentEncoding::Gzip, Bytes::from(bomb), 1 << 20).unwrap_err();
        assert_eq!(err, DecompressError::TooLarge { limit: 1 << 20 });

        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        for _ in 0..64 {
            e.write_all(&chunk).unwrap();
        }
        let bomb = e.finish().unwrap();
        let err = decompress(ContentEncoding::Zstd, Bytes::from(bomb), 1 << 20).unwrap_err();
        assert_eq!(err, DecompressError::TooLarge { limit: 1 << 20 });
    }

    #[test]
    fn corrupt_input_is_reported_with_its_encoding() {
        for encoding in [
            ContentEncoding::Gzip,
            ContentEncoding::Zlib,
            ContentEncoding::Zstd,
            ContentEncoding::Snappy,
            ContentEncoding::SnappyFramed,
            ContentEncoding::Lz4,
        ] {
            match decompress(encoding, Bytes::from_static(b"not compressed at all"), 1000) {
                Err(DecompressError::Corrupt { encoding: name, .. }) => {
                    assert_eq!(name, encoding.name())
                }
                other => panic!("{encoding:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn snappy_is_read_as_framed_only_after_the_stream_identifier() {
        let data = b"spans spans spans spans spans".repeat(100);
        // A framed body under `snappy` is detected; a block body under
        // `x-snappy-framed` is not one.
        let framed = Bytes::from(snappy_framed(&data));
        assert!(framed.starts_with(SNAPPY_STREAM_IDENTIFIER));
        assert_eq!(
            decompress(ContentEncoding::Snappy, framed, data.len()).unwrap(),
            data
        );
        let block = Bytes::from(snappy_block(&data));
        assert!(!block.starts_with(SNAPPY_STREAM_IDENTIFIER));
        assert!(matches!(
            decompress(ContentEncoding::SnappyFramed, block, data.len()),
            Err(DecompressError::Corrupt { .. })
        ));
        // A block that stops early is corrupt, not a short body.
        let mut cut = snappy_block(&data);
        cut.truncate(cut.len() / 2);
        assert!(matches!(
            decompress(ContentEncoding::Snappy, Bytes::from(cut), data.len()),
            Err(DecompressError::Corrupt { .. })
        ));
    }

    #[test]
    fn snappy_and_lz4_bombs_stop_at_the_cap() {
        let zeros = vec![0u8; 64 << 20];
        let limit = 1 << 20;
        for (encoding, bomb) in [
            (ContentEncoding::Snappy, snappy_block(&zeros)),
            (ContentEncoding::Snappy, snappy_framed(&zeros)),
            (ContentEncoding::SnappyFramed, snappy_framed(&zeros)),
            (ContentEncoding::Lz4, lz4(&zeros)),
        ] {
            assert!(bomb.len() < 4 << 20, "{encoding:?}: {}", bomb.len());
            assert_eq!(
                decompress(encoding, Bytes::from(bomb), limit),
                Err(DecompressError::TooLarge { limit }),
                "{encoding:?}"
            );
        }
        // A block header that claims more than the cap is refused before
        // anything is allocated, whatever follows it.
        // The varint 0x80 0x80 0x80 0x80 0x0f: 3.75 GiB.
        let mut lying = vec![0x80, 0x80, 0x80, 0x80, 0x0f];
        lying.extend_from_slice(b"x");
        assert_eq!(
            decompress(ContentEncoding::Snappy, Bytes::from(lying), limit),
            Err(DecompressError::TooLarge { limit })
        );
    }

    #[test]
    fn zstd_window_is_bounded_by_the_cap() {
        assert_eq!(zstd_window_log_max(20 << 20), 25);
        assert_eq!(zstd_window_log_max(1 << 20), 23);
        assert_eq!(zstd_window_log_max((64 << 20) + 1), 27);
        assert_eq!(zstd_window_log_max(usize::MAX), 27);
        // A small body whose frame asks for a 2^26 window is refused before
        // any window is reserved.
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        e.window_log(26).unwrap();
        e.write_all(&[1u8; 1000]).unwrap();
        let compressed = e.finish().unwrap();
        assert_eq!(
            decompress(ContentEncoding::Zstd, Bytes::from(compressed), 1 << 20),
            Err(DecompressError::TooLarge { limit: 1 << 20 })
        );
    }
}
