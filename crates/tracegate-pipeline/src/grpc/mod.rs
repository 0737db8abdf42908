//! The OTLP/gRPC wire pieces both directions share: the trace `Export`
//! method's path, a codec that moves messages as encoded bytes, and the
//! `google.rpc` messages of error answers. The receiver serves with them,
//! the OTLP/gRPC exporter calls with them.

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

pub(crate) mod direct;
pub(crate) mod rpc_status;
pub use rpc_status::retry_info;

/// The one method tracegate serves and calls over gRPC.
pub const TRACE_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// A tonic codec that moves messages as encoded bytes: decoding hands over
/// the (decompressed) message without copying, encoding writes the bytes
/// as they are. The receiver decodes requests with it straight into the
/// scanner; the exporter encodes only an empty placeholder with it, which
/// [`direct::Direct`] replaces with the batch's encoded request, neither
/// re-encoded nor copied.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassthroughCodec;

/// [`PassthroughCodec`]'s encoder.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassthroughEncoder;

/// [`PassthroughCodec`]'s decoder.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassthroughDecoder;

impl Codec for PassthroughCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = PassthroughEncoder;
    type Decoder = PassthroughDecoder;

    fn encoder(&mut self) -> PassthroughEncoder {
        PassthroughEncoder
    }

    fn decoder(&mut self) -> PassthroughDecoder {
        PassthroughDecoder
    }
}

impl Encoder for PassthroughEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for PassthroughDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        // DecodeBuf over a BytesMut: this splits the buffer, no copy.
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
