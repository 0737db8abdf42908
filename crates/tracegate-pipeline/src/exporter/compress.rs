//! Compressing a request for the OTLP exporters, gRPC and HTTP alike: the
//! whole message at once, gzip at level 1
//! ([`GZIP_EXPORT_LEVEL`](crate::compression::GZIP_EXPORT_LEVEL); the
//! collector and tonic use 6, several times the CPU for a few per cent
//! smaller OTLP) or zstd at its default level, on tokio's blocking pool for
//! a large message ([`crate::offload`]).
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

use super::delivery::Compression;
use crate::offload;

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
                // OTLP compresses 4–6× at level 1: a quarter is rarely outgrown.
                let mut out = Vec::with_capacity(message.len() / 4);
                crate::compression::gzip_into(
                    &mut out,
                    message,
                    crate::compression::GZIP_EXPORT_LEVEL,
                );
                Ok(Some(out))
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

impl Compression {
    /// The message as sent: compressed per [`Compression::compress`], on
    /// the blocking pool when it is large ([`offload::COMPRESSED_BYTES`]).
    pub(crate) async fn compress_message(self, message: Bytes) -> Result<Bytes, String> {
        if self == Compression::None {
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

    #[tokio::test]
    async fn large_and_small_messages_compress_alike_wherever_they_run() {
        for message in messages() {
            let sent = Compression::Zstd
                .compress_message(Bytes::from(message.clone()))
                .await
                .unwrap();
            assert_eq!(zstd::stream::decode_all(&sent[..]).unwrap(), message);
        }
        let plain = Bytes::from_static(b"abc");
        assert_eq!(
            Compression::None.compress_message(plain.clone()).await,
            Ok(plain)
        );
    }

    #[test]
    fn none_leaves_the_message_alone() {
        assert_eq!(Compression::None.compress(b"abc").unwrap(), None);
        assert_eq!(Compression::None.wire_name(), None);
        assert_eq!(Compression::Gzip.wire_name(), Some("gzip"));
        assert_eq!(Compression::Zstd.wire_name(), Some("zstd"));
    }
}
