//! Unary gRPC calls whose message goes to the connection as the caller's
//! own buffers. tonic's encoder copies every message into its encode buffer
//! (a fresh one per call, grown to the message's size: a batch of a few
//! MiB is copied and its pages faulted in each time). Here tonic encodes an
//! empty placeholder, and [`Direct`], a service between tonic and the
//! channel, replaces that request body with [`MessageBody`]: the 5-byte
//! prefix as one chunk, then the message's segments as they are, which
//! hyper hands to the HTTP/2 connection without copying them. Everything
//! else (headers, deadline, the answer and its status) stays tonic's.
//!
//! The message may already be compressed (the OTLP exporter compresses
//! with the compression its HTTP sibling uses, `exporter::compress`,
//! rather than through tonic's `send_compressed`, which builds a new zstd
//! context for every message): then `grpc-encoding` names the encoding and
//! the prefix's compressed flag is set. The bytes on the wire are what
//! tonic would send.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderValue;
use http_body::{Frame, SizeHint};
use tonic::body::Body;
use tonic::Status;

/// A gRPC service (a tonic channel) for one unary call whose message is
/// `message`, sent in place of the (empty) message tonic encoded.
#[derive(Clone)]
pub(crate) struct Direct<S> {
    pub inner: S,
    /// `gzip` or `zstd` when `message` is compressed with it.
    pub encoding: Option<&'static str>,
    /// The message, in order; its segments are sent as they are.
    pub message: Vec<Bytes>,
}

impl<S> tower::Service<http::Request<Body>> for Direct<S>
where
    S: tower::Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // tonic's body holds only the empty placeholder: dropped unread.
        let (mut parts, _placeholder) = request.into_parts();
        if let Some(encoding) = self.encoding {
            parts
                .headers
                .insert("grpc-encoding", HeaderValue::from_static(encoding));
        }
        // Cloning the segments shares their buffers.
        let body = MessageBody::new(self.encoding.is_some(), self.message.clone());
        self.inner
            .call(http::Request::from_parts(parts, Body::new(body)))
    }
}

/// A unary request's body: the gRPC prefix (compressed flag and big-endian
/// length) as one chunk, then each segment of the message.
pub(crate) struct MessageBody {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl MessageBody {
    /// # Panics
    /// If the message is 4 GiB or more, which gRPC cannot frame; no batch
    /// comes near (a batch indexes at most 4 GiB, and the receivers' limits
    /// are far below).
    pub(crate) fn new(compressed: bool, message: Vec<Bytes>) -> MessageBody {
        let len: usize = message.iter().map(Bytes::len).sum();
        let len = u32::try_from(len).expect("a gRPC message is shorter than 4 GiB");
        let mut prefix = [0u8; 5];
        prefix[0] = u8::from(compressed);
        prefix[1..].copy_from_slice(&len.to_be_bytes());
        let mut chunks = VecDeque::with_capacity(message.len() + 1);
        chunks.push_back(Bytes::copy_from_slice(&prefix));
        chunks.extend(message.into_iter().filter(|segment| !segment.is_empty()));
        MessageBody {
            chunks,
            remaining: 5 + u64::from(len),
        }
    }
}

impl http_body::Body for MessageBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let chunk = self.chunks.pop_front();
        if let Some(chunk) = &chunk {
            self.remaining -= chunk.len() as u64;
        }
        Poll::Ready(chunk.map(|chunk| Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt;

    async fn frames(body: MessageBody) -> Vec<Bytes> {
        let mut body = std::pin::pin!(body);
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            out.push(frame.unwrap().into_data().unwrap());
        }
        out
    }

    #[tokio::test]
    async fn prefix_then_the_segments_unchanged() {
        let a = Bytes::from_static(b"abc");
        let b = Bytes::from(vec![7u8; 70_000]);
        let body = MessageBody::new(false, vec![a.clone(), Bytes::new(), b.clone()]);
        assert_eq!(body.size_hint().exact(), Some(5 + 3 + 70_000));
        let sent = frames(body).await;
        assert_eq!(sent.len(), 3, "prefix, then each non-empty segment");
        assert_eq!(&sent[0][..], &[0, 0, 1, 0x11, 0x73]);
        // The segments themselves, not copies of them.
        assert_eq!(sent[1].as_ptr(), a.as_ptr());
        assert_eq!(sent[2].as_ptr(), b.as_ptr());
        assert_eq!(sent[2], b);
    }

    #[tokio::test]
    async fn compressed_flag_and_the_whole_body_as_tonic_frames_it() {
        let body = MessageBody::new(true, vec![Bytes::from_static(b"xyz")]);
        let sent = body.collect().await.unwrap().to_bytes();
        assert_eq!(&sent[..], &[1, 0, 0, 0, 3, b'x', b'y', b'z']);
        let empty = MessageBody::new(false, Vec::new());
        assert!(!empty.is_end_stream(), "the prefix is still to come");
        assert_eq!(&frames(empty).await[..], &[Bytes::from_static(&[0; 5])]);
    }
}
