//! api_v2 `CollectorService/PostSpans` over gRPC: the listener, limits and
//! counters every gRPC receiver shares (`receiver::grpc_ingest`), with the
//! `PostSpansRequest` mapped to OTLP as the collector's translator maps it,
//! written straight from the request's bytes.

use bytes::Bytes;
use tracegate_model::jaeger::span_batch_from_post_spans_with;
use tracegate_model::{Indexing, SpanBatch};

use crate::receiver::grpc_ingest::IngestMethod;

/// The one method the Jaeger gRPC receiver serves.
pub const POST_SPANS_PATH: &str = "/jaeger.api_v2.CollectorService/PostSpans";

/// `PostSpans` as the gRPC listener serves it.
pub(crate) const POST_SPANS: IngestMethod = IngestMethod {
    path: POST_SPANS_PATH,
    decode: post_spans_to_batch,
};

/// The request's bytes written straight into OTLP bytes, with no owned
/// message in between (`tracegate_model::jaeger::span_batch_from_post_spans`),
/// then scanned for the index when the pipeline reads spans, and not
/// scanned at all when it does not ([`Indexing::Lazy`]).
fn post_spans_to_batch(request: Bytes, indexing: Indexing) -> Result<SpanBatch, String> {
    span_batch_from_post_spans_with(&request, indexing).map_err(|e| e.to_string())
}
