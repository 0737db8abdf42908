//! api_v2 `CollectorService/PostSpans` over gRPC: the OTLP receiver's
//! listener, limits and counters, with the request decoded as a Jaeger
//! `PostSpansRequest` and mapped to OTLP by the collector's translator.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::Status;
use tracegate_model::jaeger::{proto::PostSpansRequest, span_batch_from_batches};

use crate::grpc::PassthroughCodec;
use crate::receiver::counters::RejectReason;
use crate::receiver::otlp::grpc::{consume_failure, GrpcReceiver};

/// The one method the Jaeger gRPC receiver serves.
pub const POST_SPANS_PATH: &str = "/jaeger.api_v2.CollectorService/PostSpans";
const SERVICE: &str = "jaeger.api_v2.CollectorService";

/// The hyper service of the Jaeger gRPC listener.
#[derive(Clone)]
pub(crate) struct PostSpansService(pub Arc<GrpcReceiver>);

impl hyper::service::Service<Request<Incoming>> for PostSpansService {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let receiver = self.0.clone();
        Box::pin(async move {
            let path = request.uri().path();
            if path != POST_SPANS_PATH {
                // What grpc-go answers for a method it does not serve.
                let mut parts = path.trim_start_matches('/').splitn(2, '/');
                let service = parts.next().unwrap_or_default();
                let status = match parts.next() {
                    Some(method) if service == SERVICE => Status::unimplemented(format!(
                        "unknown method {method} for service {service}"
                    )),
                    _ => Status::unimplemented(format!("unknown service {service}")),
                };
                return Ok(status.into_http());
            }
            let mut grpc = tonic::server::Grpc::new(PassthroughCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(receiver.max_recv_msg_size)
                .max_encoding_message_size(usize::MAX);
            let response = grpc.unary(PostSpans(receiver.clone()), request).await;
            Ok(receiver.account_transport_failure(response))
        })
    }
}

struct PostSpans(Arc<GrpcReceiver>);

impl tonic::server::UnaryService<Bytes> for PostSpans {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Bytes>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let receiver = self.0.clone();
        Box::pin(async move {
            let malformed = |message: String| {
                receiver.counters.rejected(RejectReason::Malformed);
                Err(Status::invalid_argument(message))
            };
            let request = match PostSpansRequest::decode(request.into_inner()) {
                Ok(request) => request,
                Err(e) => return malformed(format!("malformed PostSpansRequest: {e}")),
            };
            let batch = match span_batch_from_batches(request.batch) {
                Ok(batch) => batch,
                Err(e) => return malformed(format!("invalid Jaeger span: {e}")),
            };
            match receiver.counters.export(&receiver.next, batch).await {
                // An empty PostSpansResponse encodes to no bytes.
                Ok(()) => Ok(tonic::Response::new(Bytes::new())),
                Err(e) => Err(consume_failure(e).to_grpc()),
            }
        })
    }
}
