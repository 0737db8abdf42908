//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`
//! served by tonic's unary handler with the pass-through codec, so the
//! request reaches the scanner as the bytes that came off the wire
//! (decompressed by tonic, capped at `max_recv_msg_size_mib`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Status};

use super::status::{ExportFailure, DEFAULT_RETRY_AFTER};
use crate::consumer::{ConsumeError, NextConsumer};
use crate::grpc::{PassthroughCodec, TRACE_EXPORT_PATH};
use crate::receiver::counters::{RejectReason, TransportCounters};
use tracegate_model::SpanBatch;

/// State shared by every connection of one gRPC listener.
pub(crate) struct GrpcReceiver {
    pub next: NextConsumer,
    pub counters: TransportCounters,
    pub max_recv_msg_size: usize,
}

/// The hyper service of one gRPC listener.
#[derive(Clone)]
pub(crate) struct GrpcService(pub Arc<GrpcReceiver>);

impl hyper::service::Service<Request<Incoming>> for GrpcService {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let receiver = self.0.clone();
        Box::pin(async move {
            if request.uri().path() != TRACE_EXPORT_PATH {
                return Ok(unknown_method(request.uri().path()).into_http());
            }
            let mut grpc = tonic::server::Grpc::new(PassthroughCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(receiver.max_recv_msg_size)
                .max_encoding_message_size(usize::MAX);
            let response = grpc.unary(ExportHandler(receiver.clone()), request).await;
            Ok(receiver.account_transport_failure(response))
        })
    }
}

/// What grpc-go answers for a method it does not serve; tracegate serves
/// no metrics, logs or profiles services.
fn unknown_method(path: &str) -> Status {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default();
    match parts.next() {
        Some(method) if service == "opentelemetry.proto.collector.trace.v1.TraceService" => {
            Status::unimplemented(format!("unknown method {method} for service {service}"))
        }
        _ => Status::unimplemented(format!("unknown service {service}")),
    }
}

impl GrpcReceiver {
    /// Counts requests tonic refused before the handler ran, and maps
    /// tonic's OUT_OF_RANGE for an oversized message to RESOURCE_EXHAUSTED,
    /// which grpc-go (and so the collector) answers. The handler itself
    /// only ever answers OK, INVALID_ARGUMENT or UNAVAILABLE, so any other
    /// code here came from tonic's framing or decompression.
    pub(crate) fn account_transport_failure(
        &self,
        mut response: Response<tonic::body::Body>,
    ) -> Response<tonic::body::Body> {
        let Some(code) = response
            .headers()
            .get(Status::GRPC_STATUS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map(Code::from_i32)
        else {
            return response;
        };
        let reason = match code {
            Code::OutOfRange => {
                response.headers_mut().insert(
                    Status::GRPC_STATUS,
                    HeaderValue::from(Code::ResourceExhausted as i32),
                );
                RejectReason::TooLarge
            }
            Code::ResourceExhausted => RejectReason::TooLarge,
            Code::Unimplemented => RejectReason::UnsupportedEncoding,
            Code::Internal => RejectReason::Malformed,
            _ => return response,
        };
        self.counters.rejected(reason);
        response
    }
}

/// The unary `Export` handler.
struct ExportHandler(Arc<GrpcReceiver>);

impl tonic::server::UnaryService<Bytes> for ExportHandler {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Bytes>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let receiver = self.0.clone();
        Box::pin(async move {
            let batch = match SpanBatch::scan(request.into_inner()) {
                Ok(batch) => batch,
                Err(e) => {
                    receiver.counters.rejected(RejectReason::Malformed);
                    return Err(Status::invalid_argument(e.to_string()));
                }
            };
            match receiver.counters.export(&receiver.next, batch).await {
                // An empty ExportTraceServiceResponse encodes to no bytes.
                Ok(()) => Ok(tonic::Response::new(Bytes::new())),
                Err(e) => Err(consume_failure(e).to_grpc()),
            }
        })
    }
}

/// The answer for a batch the pipeline did not take (DESIGN.md §6).
pub(crate) fn consume_failure(error: ConsumeError) -> ExportFailure {
    match error {
        ConsumeError::Refused {
            reason,
            retry_after,
        } => ExportFailure {
            code: Code::Unavailable,
            message: reason,
            retry_after: Some(retry_after.unwrap_or(DEFAULT_RETRY_AFTER)),
        },
        ConsumeError::Rejected(message) => ExportFailure::new(Code::InvalidArgument, message),
    }
}
