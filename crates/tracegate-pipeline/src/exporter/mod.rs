//! Exporters: the fan-out (one `Arc`'d batch to every exporter of a
//! pipeline), each exporter's bounded queue with its own consumer tasks and
//! retry ([`ExporterHandle`]), and the exporters themselves: OTLP/gRPC,
//! OTLP/HTTP, Jaeger gRPC, `debug` and `file`.

mod backoff;
pub mod debug;
pub mod delivery;
mod fanout;
pub mod file;
mod handle;
pub mod jaeger;
pub mod otlp_grpc;
pub mod otlp_http;
mod queue;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;
mod utc;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{from_value, ComponentError};
use tracegate_model::SpanBatch;

pub use delivery::{Compression, QueueConfig, RetryConfig};
pub use fanout::Fanout;
pub use handle::{DropReason, ExporterHandle, QueueFull, Refusal};

/// Why a send failed, as the queue's retry loop needs to know it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ExportError {
    /// gRPC UNAVAILABLE / RESOURCE_EXHAUSTED (with RetryInfo), HTTP
    /// 429/502/503/504 (with Retry-After), connection failures, timeouts.
    #[error("{message}")]
    Retryable {
        message: String,
        /// The delay the server asked for; the retry waits at least this.
        retry_after: Option<Duration>,
    },
    /// Anything else: the batch is dropped and counted.
    #[error("{0}")]
    Permanent(String),
}

/// A send the backend accepted. OTLP allows a partial success: the request
/// was taken but some spans were rejected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Spans the backend rejected (`partial_success.rejected_spans`).
    pub rejected_spans: u64,
    /// The backend's explanation (`partial_success.error_message`).
    pub message: String,
}

/// One backend connection. Called only by the exporter's queue consumers
/// (or, without a queue, by the pipeline), possibly concurrently.
#[async_trait]
pub trait Exporter: Send + Sync + 'static {
    async fn export(&self, batch: &SpanBatch) -> Result<Delivered, ExportError>;

    /// Called once after the queue is drained: flush and close.
    async fn shutdown(&self) {}
}

/// An exporter that could not start (a TLS file missing, a file path that
/// cannot be opened). The message names the exporter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("exporter {exporter}: {message}")]
pub struct StartError {
    pub exporter: String,
    pub message: String,
}

/// An exporter's typed config, chosen by the component type.
#[derive(Debug, Clone, PartialEq)]
pub enum ExporterConfig {
    /// `otlp`, `otlp_grpc`, `tempo`.
    OtlpGrpc(otlp_grpc::Config),
    /// `otlphttp`, `otlp_http`.
    OtlpHttp(otlp_http::Config),
    Debug(debug::Config),
    File(file::Config),
    /// `jaeger`: Jaeger api_v2 gRPC.
    Jaeger(jaeger::Config),
}

impl ExporterConfig {
    /// Component types implemented here, aliases included.
    pub const KINDS: &'static [&'static str] = &[
        "otlp",
        "otlp_grpc",
        "tempo",
        "otlphttp",
        "otlp_http",
        "debug",
        "file",
        "jaeger",
    ];

    /// `None` when `kind` is not an exporter type tracegate implements.
    pub fn from_value(
        kind: &str,
        value: serde_json::Value,
    ) -> Option<Result<ExporterConfig, ComponentError>> {
        Some(match kind {
            "otlp" | "otlp_grpc" | "tempo" => from_value(value).map(ExporterConfig::OtlpGrpc),
            "otlphttp" | "otlp_http" => from_value(value).map(ExporterConfig::OtlpHttp),
            "debug" => from_value(value).map(ExporterConfig::Debug),
            "file" => from_value(value).map(ExporterConfig::File),
            "jaeger" => jaeger::config_from_value(value).map(ExporterConfig::Jaeger),
            _ => return None,
        })
    }

    /// Pure checks (no network, no disk): `Err` for an invalid config,
    /// `Ok(warnings)` for valid but surprising settings.
    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        match self {
            ExporterConfig::OtlpGrpc(c) => c.validate(),
            ExporterConfig::OtlpHttp(c) => c.validate(),
            ExporterConfig::Debug(c) => c.validate(),
            ExporterConfig::File(c) => c.validate(),
            ExporterConfig::Jaeger(c) => c.validate(),
        }
    }

    /// Builds the exporter (reading TLS files, opening output files; a
    /// backend is connected lazily, so an unreachable one never blocks
    /// startup) and spawns its queue consumers. Must run inside a tokio
    /// runtime.
    pub fn start(&self, id: &str) -> Result<ExporterHandle, StartError> {
        let fail = |message: String| StartError {
            exporter: id.to_string(),
            message,
        };
        self.validate().map_err(|e| fail(e.to_string()))?;
        let (exporter, queue, retry): (Arc<dyn Exporter>, &QueueConfig, RetryConfig) = match self {
            ExporterConfig::OtlpGrpc(c) => (
                Arc::new(otlp_grpc::OtlpGrpcExporter::new(c).map_err(fail)?),
                &c.sending_queue,
                c.retry_on_failure.clone(),
            ),
            ExporterConfig::OtlpHttp(c) => (
                Arc::new(otlp_http::OtlpHttpExporter::new(c).map_err(fail)?),
                &c.sending_queue,
                c.retry_on_failure.clone(),
            ),
            // Writing to the log cannot fail, so there is nothing to retry.
            ExporterConfig::Debug(c) => (
                Arc::new(debug::DebugExporter::new(id, c)),
                &c.sending_queue,
                RetryConfig::disabled(),
            ),
            // As the collector's file exporter: a failed write is not retried
            // (a retry could leave a half-written record before the whole one).
            ExporterConfig::File(c) => (
                Arc::new(file::FileExporter::new(id, c).map_err(fail)?),
                &c.sending_queue,
                RetryConfig::disabled(),
            ),
            ExporterConfig::Jaeger(c) => (
                Arc::new(jaeger::JaegerExporter::new(c).map_err(fail)?),
                &c.sending_queue,
                c.retry_on_failure.clone(),
            ),
        };
        Ok(ExporterHandle::start(id, exporter, queue, &retry))
    }
}
