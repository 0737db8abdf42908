//! Exporters: the fan-out (one `Arc`'d batch to every exporter of a
//! pipeline), each exporter's bounded queue with its own consumer tasks and
//! retry ([`ExporterHandle`]), and the exporters themselves: OTLP/gRPC,
//! OTLP/HTTP, Jaeger gRPC, `debug`, `file`, and `loadbalancing`, which
//! routes over OTLP/gRPC exporters of its own.

mod backoff;
mod backpressure;
mod compress;
pub mod debug;
pub mod delivery;
mod fanout;
pub mod file;
mod handle;
pub mod jaeger;
#[cfg(test)]
mod jaeger_flaky_tests;
pub mod loadbalancing;
pub mod otlp_grpc;
pub mod otlp_http;
#[cfg(test)]
mod partial_tests;
mod persistent;
#[cfg(test)]
mod persistent_tests;
mod queue;
mod sending_queue;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;
mod utc;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::context::BuildContext;
use crate::registry::component_registry;
use tracegate_model::SpanBatch;

pub use backpressure::Admission;
pub use delivery::{Compression, CompressionParams, QueueConfig, RetryConfig, DEFAULT_QUEUE_BYTES};
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
    /// Anything else with no status from the backend (cannot encode, file
    /// closed): the batch is dropped and counted.
    #[error("{0}")]
    Permanent(String),
    /// The backend refused the data for good with this status: a gRPC code,
    /// or an OTLP/HTTP status mapped to one as the collector maps it. The
    /// batch is dropped and counted; without a sending queue the client
    /// gets the same code (see [`crate::consumer::ConsumeError::Rejected`]).
    #[error("{message}")]
    Rejected { code: tonic::Code, message: String },
    /// Part of the batch was delivered and the rest was not: see
    /// [`PartialFailure`]. Built with [`ExportError::partial`].
    #[error("{0}")]
    Partial(Box<PartialFailure>),
}

impl ExportError {
    /// Some of a batch was delivered: `remaining` holds the spans that were
    /// not, and `error` says why (see [`PartialFailure`]).
    pub fn partial(delivered: Delivered, remaining: SpanBatch, error: ExportError) -> ExportError {
        ExportError::Partial(Box::new(PartialFailure {
            delivered,
            remaining,
            error,
        }))
    }
}

/// An export that went out as several requests (`jaeger`: one per
/// resource; a load balancer: one per backend) of which only some failed.
/// The spans of the batch not in `remaining` were delivered, and stay
/// delivered: only `remaining` is retried, so a retry repeats no request
/// the backend accepted. A persistent queue keeps `remaining` in place of
/// the batch.
///
/// `error` decides what happens to `remaining`, as it would to a whole
/// batch: `Retryable` retries it after the backoff (honouring
/// `retry_after`); `Permanent` or `Rejected` drops it and counts it. When
/// some requests failed retryably and others for good, an exporter reports
/// a retryable error for all of them: the ones refused for good are
/// refused again on the retry and dropped then.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error} ({} spans not delivered, the rest delivered)", remaining.len())]
pub struct PartialFailure {
    /// What the backend said about the requests it accepted (an OTLP
    /// backend's partial successes).
    pub delivered: Delivered,
    /// The spans not delivered, as a batch of their own.
    pub remaining: SpanBatch,
    /// Why `remaining` was not delivered.
    pub error: ExportError,
}

impl PartialEq for PartialFailure {
    fn eq(&self, other: &PartialFailure) -> bool {
        self.delivered == other.delivered
            && self.error == other.error
            && self.remaining.bytes() == other.remaining.bytes()
    }
}

impl Eq for PartialFailure {}

/// A send the backend accepted. OTLP allows a partial success: the request
/// was taken but some spans were rejected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Spans the backend rejected (`partial_success.rejected_spans`).
    pub rejected_spans: u64,
    /// The backend's explanation (`partial_success.error_message`).
    pub message: String,
}

impl Delivered {
    /// The backend said something about the request: spans rejected, or
    /// only a message (OTLP lets a server warn this way).
    pub fn is_partial(&self) -> bool {
        self.rejected_spans > 0 || !self.message.is_empty()
    }
}

/// One backend connection. Called only by the exporter's queue consumers
/// (or, without a queue, by the pipeline), possibly concurrently.
#[async_trait]
pub trait Exporter: Send + Sync + 'static {
    /// Sends `batch`. An exporter that sends it as several requests reports
    /// requests that failed beside others that succeeded as
    /// [`ExportError::Partial`], so that only those are retried.
    async fn export(&self, batch: &SpanBatch) -> Result<Delivered, ExportError>;

    /// Whether [`export`](Self::export) reads the span index, not only the
    /// batch's bytes and span count (see [`Consumer::reads_spans`]).
    ///
    /// [`Consumer::reads_spans`]: crate::consumer::Consumer::reads_spans
    fn reads_spans(&self) -> bool {
        true
    }

    /// Awaited once at startup, before any receiver listens: an exporter
    /// that must learn something first (the `loadbalancing` exporter its
    /// first member list) does so here. `Err` stops startup, saying why.
    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    /// Called once after the queue is drained: flush and close.
    async fn shutdown(&self) {}

    /// [`shutdown`](Self::shutdown), told what is left of the grace
    /// period; for exporters that drain queues of their own (the
    /// `loadbalancing` exporter's backends).
    async fn shutdown_within(&self, _grace: Duration) {
        self.shutdown().await
    }
}

/// An exporter that could not start (a TLS file missing, a file path that
/// cannot be opened). The message names the exporter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("exporter {exporter}: {message}")]
pub struct StartError {
    pub exporter: String,
    pub message: String,
}

/// What makes a config an exporter type: implemented by each exporter's
/// `Config` in its own module, reached through [`ExporterConfig`].
pub trait BuildExporter {
    /// Builds the exporter (reading TLS files, opening output files; a
    /// backend is connected lazily, so an unreachable one never blocks
    /// startup), taking from `ctx` what it needs. Called only after the
    /// config's `validate` passed; `Err` is the message for the user.
    fn build(&self, id: &str, ctx: &BuildContext) -> Result<Built<'_>, String>;

    /// Its `sending_queue` settings.
    fn sending_queue(&self) -> &QueueConfig;
}

/// A built exporter and how its queue is to run it.
pub struct Built<'a> {
    pub exporter: Arc<dyn Exporter>,
    pub queue: &'a QueueConfig,
    pub retry: RetryConfig,
}

impl<'a> Built<'a> {
    pub fn new(exporter: impl Exporter, queue: &'a QueueConfig, retry: RetryConfig) -> Built<'a> {
        Built {
            exporter: Arc::new(exporter),
            queue,
            retry,
        }
    }
}

component_registry! {
    /// An exporter's typed config, chosen by the component type.
    // A config is parsed once and read at startup; its size does not
    // matter, and boxing the larger variants would only add indirection.
    #[allow(clippy::large_enum_variant)]
    #[derive(Debug, Clone, PartialEq)]
    pub enum ExporterConfig: "exporter", dyn BuildExporter {
        OtlpGrpc(otlp_grpc::Config) = "otlp" | "otlp_grpc" | "tempo"
            => "OTLP over gRPC.",
        OtlpHttp(otlp_http::Config) = "otlphttp" | "otlp_http"
            => "OTLP over HTTP, protobuf or JSON.",
        Debug(debug::Config) = "debug"
            => "Logs what passes through, at the verbosity asked for.",
        File(file::Config) = "file"
            => "Writes OTLP/JSON or protobuf records to a file, with rotation.",
        Jaeger(jaeger::Config) = "jaeger", parse jaeger::config_from_value
            => "Jaeger api_v2 over gRPC (`PostSpans`).",
        LoadBalancing(loadbalancing::Config) = "loadbalancing" | "load_balancing"
            => "Routes each trace (or service, resource, attributes) to one backend of a fleet over OTLP/gRPC.",
    }
    not built: [
        "kafka",
        "zipkin",
        "prometheusremotewrite",
        "logging",
        "nop",
    ]
}

impl ExporterConfig {
    /// The authenticator extension the exporter names, with the path of
    /// its `authenticator` key.
    pub fn authenticator(&self) -> Option<(&'static str, &str)> {
        let (path, auth) = match self {
            ExporterConfig::OtlpGrpc(c) => ("auth.authenticator", &c.auth),
            ExporterConfig::Jaeger(c) => ("auth.authenticator", &c.0.auth),
            ExporterConfig::OtlpHttp(c) => ("auth.authenticator", &c.auth),
            ExporterConfig::LoadBalancing(c) => {
                ("protocol.otlp.auth.authenticator", &c.protocol.otlp.auth)
            }
            ExporterConfig::Debug(_) | ExporterConfig::File(_) => return None,
        };
        auth.as_ref().map(|a| (path, a.authenticator.as_str()))
    }

    /// The exporter's `sending_queue` settings (the config loader checks
    /// that a `storage` there names a storage extension).
    pub fn sending_queue(&self) -> &QueueConfig {
        self.component().sending_queue()
    }

    /// Checks the config, builds the exporter and spawns its queue
    /// consumers. Must run inside a tokio runtime.
    pub fn start(&self, id: &str, ctx: &BuildContext) -> Result<ExporterHandle, StartError> {
        let fail = |message: String| StartError {
            exporter: id.to_string(),
            message,
        };
        self.validate().map_err(|e| fail(e.to_string()))?;
        let built = self.component().build(id, ctx).map_err(fail)?;
        let queue =
            sending_queue::SendingQueue::new(id, built.queue, &ctx.storages).map_err(fail)?;
        Ok(ExporterHandle::with_queue(
            id,
            built.exporter,
            queue,
            built.queue.num_consumers,
            &built.retry,
        ))
    }
}
