//! api_v2 `CollectorService/PostSpans` over gRPC: the listener, limits and
//! counters every gRPC receiver shares (`receiver::grpc_ingest`), with the
//! request decoded as a Jaeger `PostSpansRequest` and mapped to OTLP by the
//! collector's translator.

use bytes::Bytes;
use prost::Message;
use tracegate_model::jaeger::{proto::PostSpansRequest, span_batch_from_batches};
use tracegate_model::SpanBatch;

use crate::receiver::grpc_ingest::IngestMethod;

/// The one method the Jaeger gRPC receiver serves.
pub const POST_SPANS_PATH: &str = "/jaeger.api_v2.CollectorService/PostSpans";

/// `PostSpans` as the gRPC listener serves it.
pub(crate) const POST_SPANS: IngestMethod = IngestMethod {
    path: POST_SPANS_PATH,
    decode: post_spans_to_batch,
};

fn post_spans_to_batch(request: Bytes) -> Result<SpanBatch, String> {
    let request = PostSpansRequest::decode(request)
        .map_err(|e| format!("malformed PostSpansRequest: {e}"))?;
    span_batch_from_batches(request.batch).map_err(|e| format!("invalid Jaeger span: {e}"))
}
