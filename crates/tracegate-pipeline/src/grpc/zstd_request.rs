//! gRPC requests whose message the exporter compressed with zstd itself,
//! rather than through tonic's `send_compressed`. tonic builds a new zstd
//! stream encoder for every message (level 3 with the size unknown: the
//! whole 2 MiB window and its match tables allocated and zeroed each
//! time); at a GPU node's rate of a request or two per second that setup
//! cost more than compressing the data. Here each thread keeps one
//! compression context and reuses it, and the message's size is known, so
//! the window and tables fit the message (benches/RESULTS.md, "GPU-node
//! footprint"). The bytes on the wire are a zstd frame at the same level
//! under `grpc-encoding: zstd`, as before.

use std::cell::RefCell;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use http_body::{Frame, SizeHint};
use tonic::body::Body;
use tonic::Status;

thread_local! {
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(None) };
}

/// `message` as one zstd frame at zstd's default level (3, tonic's), with
/// this thread's reused compression context.
pub(crate) fn compress(message: &[u8]) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let compressor = match &mut *cell {
            Some(compressor) => compressor,
            empty => empty.insert(zstd::bulk::Compressor::new(
                zstd::DEFAULT_COMPRESSION_LEVEL,
            )?),
        };
        compressor.compress(message)
    })
}

/// A gRPC service (a tonic channel) for calls whose message is already
/// compressed with zstd: it sends `grpc-encoding: zstd` and sets the
/// message's compressed flag, which tonic left at 0.
#[derive(Clone)]
pub(crate) struct ZstdMessages<S>(pub S);

impl<S> tower::Service<http::Request<Body>> for ZstdMessages<S>
where
    S: tower::Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        parts
            .headers
            .insert("grpc-encoding", HeaderValue::from_static("zstd"));
        let body = Body::new(Flagged {
            inner: body,
            at_start: true,
        });
        self.0.call(http::Request::from_parts(parts, body))
    }
}

/// A unary request's body with the compressed flag set: the first byte of
/// the 5-byte prefix tonic writes before the message.
struct Flagged {
    inner: Body,
    at_start: bool,
}

impl http_body::Body for Flagged {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        Poll::Ready(frame.map(|frame| {
            frame.map(|frame| {
                frame.map_data(|data| {
                    if !this.at_start || data.is_empty() {
                        return data;
                    }
                    this.at_start = false;
                    let mut data = BytesMut::from(data);
                    data[0] = 1;
                    data.freeze()
                })
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compresses_to_a_frame_any_decoder_reads_with_the_context_reused() {
        let first: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let second = b"a second, unrelated message".repeat(100);
        for message in [&first[..], &second[..], &first[..]] {
            let compressed = compress(message).unwrap();
            assert!(compressed.len() < message.len() / 4);
            assert_eq!(zstd::stream::decode_all(&compressed[..]).unwrap(), message);
        }
    }

    #[tokio::test]
    async fn sets_the_flag_of_the_message_only() {
        use http_body_util::BodyExt;
        let framed = Bytes::from_static(&[0, 0, 0, 0, 3, b'a', b'b', b'c']);
        let body = Flagged {
            inner: Body::new(http_body_util::Full::new(framed)),
            at_start: true,
        };
        let sent = body.collect().await.unwrap().to_bytes();
        assert_eq!(&sent[..], &[1, 0, 0, 0, 3, b'a', b'b', b'c']);
    }
}
