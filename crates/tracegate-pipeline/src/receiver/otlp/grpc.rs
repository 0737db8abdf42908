//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`
//! served by tonic's unary handler with the pass-through codec, so the
//! request reaches the scanner as the bytes that came off the wire
//! (decompressed by tonic, capped at `max_recv_msg_size_mib`). The Jaeger
//! receiver serves its `PostSpans` with the same listener, limits and
//! counters, as another [`IngestMethod`].

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

/// The one unary method a gRPC listener serves, taking spans and
/// answering an empty message (which encodes to no bytes).
pub(crate) struct IngestMethod {
    /// `/package.Service/Method`.
    pub path: &'static str,
    /// The request message as spans; an error is the INVALID_ARGUMENT
    /// message.
    pub decode: fn(Bytes) -> Result<SpanBatch, String>,
}

/// OTLP's `TraceService/Export`: the request is scanned as it is.
pub(crate) const TRACE_EXPORT: IngestMethod = IngestMethod {
    path: TRACE_EXPORT_PATH,
    decode: |request| SpanBatch::scan(request).map_err(|e| e.to_string()),
};

/// State shared by every connection of one gRPC listener.
pub(crate) struct GrpcReceiver {
    pub method: &'static IngestMethod,
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
            if request.uri().path() != receiver.method.path {
                return Ok(unknown_method(receiver.method.path, request.uri().path()).into_http());
            }
            let mut grpc = tonic::server::Grpc::new(PassthroughCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(receiver.max_recv_msg_size)
                .max_encoding_message_size(usize::MAX);
            let response = grpc.unary(IngestHandler(receiver.clone()), request).await;
            Ok(receiver.account_transport_failure(response))
        })
    }
}

/// What grpc-go answers for a method it does not serve (`path`) when it
/// serves only `served`.
fn unknown_method(served: &str, path: &str) -> Status {
    match split_method(path) {
        (service, Some(method)) if service == split_method(served).0 => {
            Status::unimplemented(format!("unknown method {method} for service {service}"))
        }
        (service, _) => Status::unimplemented(format!("unknown service {service}")),
    }
}

/// `/package.Service/Method` as (`package.Service`, `Method`).
fn split_method(path: &str) -> (&str, Option<&str>) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    (parts.next().unwrap_or_default(), parts.next())
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

/// The unary handler of the listener's [`IngestMethod`].
struct IngestHandler(Arc<GrpcReceiver>);

impl tonic::server::UnaryService<Bytes> for IngestHandler {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Bytes>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let receiver = self.0.clone();
        Box::pin(async move {
            let batch = match (receiver.method.decode)(request.into_inner()) {
                Ok(batch) => batch,
                Err(message) => {
                    receiver.counters.rejected(RejectReason::Malformed);
                    return Err(Status::invalid_argument(message));
                }
            };
            match receiver.counters.export(&receiver.next, batch).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_methods_get_grpc_gos_answers() {
        let jaeger = "/jaeger.api_v2.CollectorService/PostSpans";
        let trace = "opentelemetry.proto.collector.trace.v1.TraceService";
        for (served, path, message) in [
            (
                TRACE_EXPORT_PATH,
                format!("/{trace}/Other"),
                format!("unknown method Other for service {trace}"),
            ),
            (
                TRACE_EXPORT_PATH,
                "/opentelemetry.proto.collector.logs.v1.LogsService/Export".into(),
                "unknown service opentelemetry.proto.collector.logs.v1.LogsService".into(),
            ),
            (
                jaeger,
                "/jaeger.api_v2.CollectorService/GetTrace".into(),
                "unknown method GetTrace for service jaeger.api_v2.CollectorService".into(),
            ),
            (
                jaeger,
                TRACE_EXPORT_PATH.into(),
                format!("unknown service {trace}"),
            ),
        ] {
            let status = unknown_method(served, &path);
            assert_eq!(status.code(), Code::Unimplemented);
            assert_eq!(status.message(), message, "{path}");
        }
    }
}
