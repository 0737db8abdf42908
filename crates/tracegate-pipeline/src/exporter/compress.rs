//! Compressing a request for the OTLP exporters, gRPC and HTTP alike: the
//! whole message at once, gzip or zstd at the level the collector (and
//! tonic) use by default.
//!
//! zstd keeps one compression context per thread and reuses it. A new
//! context per request (what `zstd::bulk::compress` and tonic's
//! `send_compressed` build) allocates and zeroes its window and match
//! tables every time, a fixed cost per request that outweighed compressing
//! the data at a GPU node's few requests per second (benches/RESULTS.md,
//! "GPU-node footprint"). The message's size is known, so the context's
//! tables are sized to it.

use std::cell::RefCell;
use std::io::Write;

use super::delivery::Compression;

thread_local! {
    static ZSTD: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
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

    /// `message` compressed as one gzip member or one zstd frame; `None`
    /// when requests go uncompressed.
    pub(crate) fn compress(self, message: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        match self {
            Compression::None => Ok(None),
            Compression::Gzip => {
                let mut encoder = flate2::write::GzEncoder::new(
                    Vec::with_capacity(message.len() / 4),
                    flate2::Compression::default(),
                );
                encoder.write_all(message)?;
                encoder.finish().map(Some)
            }
            Compression::Zstd => ZSTD
                .with(|cell| {
                    let mut cell = cell.borrow_mut();
                    let compressor = match &mut *cell {
                        Some(compressor) => compressor,
                        empty => empty.insert(zstd::bulk::Compressor::new(
                            zstd::DEFAULT_COMPRESSION_LEVEL,
                        )?),
                    };
                    compressor.compress(message)
                })
                .map(Some),
        }
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
            let compressed = Compression::Zstd.compress(&message).unwrap().unwrap();
            assert!(compressed.len() < message.len() / 4);
            assert_eq!(zstd::stream::decode_all(&compressed[..]).unwrap(), message);
        }
    }

    #[test]
    fn gzip_members_read_back() {
        for message in messages() {
            let compressed = Compression::Gzip.compress(&message).unwrap().unwrap();
            assert!(compressed.len() < message.len() / 4);
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&compressed[..])
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, message);
        }
    }

    #[test]
    fn none_leaves_the_message_alone() {
        assert_eq!(Compression::None.compress(b"abc").unwrap(), None);
        assert_eq!(Compression::None.wire_name(), None);
        assert_eq!(Compression::Gzip.wire_name(), Some("gzip"));
        assert_eq!(Compression::Zstd.wire_name(), Some("zstd"));
    }
}
