//! The span data model of tracegate: a [`SpanBatch`] keeps an encoded OTLP
//! `ExportTraceServiceRequest` as bytes plus a compact per-span index, so the
//! hot path never decodes spans it is about to drop (docs/architecture.md,
//! "Encoded-bytes batches").
//! This crate does no I/O.
#![forbid(unsafe_code)]

pub mod batch;
mod encode;
pub mod jaeger;
pub mod json;
mod lookup;
pub mod otlp;
pub mod resource_edit;
pub mod scan;
pub mod thrift;
pub mod trace_state;
pub mod wire;
pub mod zipkin;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

pub use batch::{
    AnyValueRef, GzipRange, Indexing, ResourceInfo, ScopeInfo, SpanBatch, SpanInfo, StatusCode,
};
pub use json::JsonError;
pub use lookup::{ArrayValues, Attributes};
pub use resource_edit::ResourceAttributes;
pub use scan::ScanError;
