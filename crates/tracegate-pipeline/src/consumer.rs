//! The link between pipeline stages.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tracegate_model::SpanBatch;

/// Why a stage did not take a batch. Receivers map it to the protocol's
/// status (docs/architecture.md, "Answers to clients"): `Refused` is
/// retryable (gRPC UNAVAILABLE, HTTP 503 with Retry-After), `Rejected` is
/// permanent (the backend's code when it gave one, else gRPC INTERNAL,
/// HTTP 500, as the collector's receivers answer).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConsumeError {
    /// Overload or shutdown: the client should retry later.
    #[error("{reason}")]
    Refused {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The data cannot be taken; retrying will not help.
    #[error("{message}")]
    Rejected {
        message: String,
        /// The gRPC code a backend refused the data with (an OTLP/HTTP
        /// backend's HTTP status mapped to gRPC as the collector maps it),
        /// passed on to the client; `None` when no backend gave one.
        code: Option<tonic::Code>,
    },
}

impl ConsumeError {
    pub fn refused(reason: impl Into<String>) -> Self {
        ConsumeError::Refused {
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// A permanent failure with no backend status.
    pub fn rejected(message: impl Into<String>) -> Self {
        ConsumeError::Rejected {
            message: message.into(),
            code: None,
        }
    }
}

/// A stage that takes span batches: a processor or the exporters' fan-out.
/// Returning `Ok` means the stage has taken responsibility for the spans:
/// from then on every span either reaches an exporter or is counted with the
/// reason it did not.
#[async_trait]
pub trait Consumer: Send + Sync + 'static {
    async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError>;

    /// Whether this stage, or one after it, reads the batches' span index
    /// (ids, attributes, subsets) rather than only their bytes and span
    /// counts. A receiver asks once, when it starts: when nothing after it
    /// reads spans, it validates requests without building the index
    /// (`Indexing::Lazy`). That is only about speed: a batch builds its
    /// index on first use, so a stage that says `false` and reads spans
    /// anyway still reads them right. True unless a stage knows better.
    fn reads_spans(&self) -> bool {
        true
    }
}

/// A shared consumer handle, as the previous stage holds it.
pub type NextConsumer = Arc<dyn Consumer>;
