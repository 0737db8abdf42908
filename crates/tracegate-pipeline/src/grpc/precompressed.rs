//! gRPC calls whose message the caller already compressed (the OTLP
//! exporter, with the compression its HTTP sibling uses:
//! `exporter::compress`), rather than through tonic's `send_compressed`,
//! which builds a new zstd context for every message. The wrapper names the
//! encoding in `grpc-encoding` and sets the message's compressed flag; the
//! bytes on the wire are what tonic would send.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use http_body::{Frame, SizeHint};
use tonic::body::Body;
use tonic::Status;

/// A gRPC service (a tonic channel) for calls whose message is already
/// compressed with `encoding` (`gzip`, `zstd`): it sends `grpc-encoding`
/// and sets the message's compressed flag, which tonic left at 0.
#[derive(Clone)]
pub(crate) struct Precompressed<S> {
    pub inner: S,
    pub encoding: &'static str,
}

impl<S> tower::Service<http::Request<Body>> for Precompressed<S>
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
        let (mut parts, body) = request.into_parts();
        parts
            .headers
            .insert("grpc-encoding", HeaderValue::from_static(self.encoding));
        let body = Body::new(Flagged {
            inner: body,
            at_start: true,
        });
        self.inner.call(http::Request::from_parts(parts, body))
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
