//! Exporters: the fan-out (one `Arc`'d batch to every exporter of a
//! pipeline), each exporter's bounded queue with its own consumer tasks and
//! retry, and the exporters themselves.

use std::time::Duration;

use async_trait::async_trait;

use crate::config::ComponentError;
use tracegate_model::SpanBatch;

/// Why a send failed, as the queue's retry loop needs to know it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ExportError {
    /// gRPC UNAVAILABLE / RESOURCE_EXHAUSTED (with RetryInfo), HTTP
    /// 429/502/503/504 (with Retry-After), connection failures, timeouts.
    #[error("{message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Anything else: the batch is dropped and counted.
    #[error("{0}")]
    Permanent(String),
}

/// One backend connection. Called only by the exporter's queue consumers.
#[async_trait]
pub trait Exporter: Send + Sync + 'static {
    async fn export(&self, batch: &SpanBatch) -> Result<(), ExportError>;
}

/// An exporter's typed config, chosen by the component type.
#[derive(Debug, Clone, PartialEq)]
pub enum ExporterConfig {}

impl ExporterConfig {
    /// Component types implemented here, aliases included.
    pub const KINDS: &'static [&'static str] = &[];

    /// `None` when `kind` is not an exporter type tracegate implements.
    pub fn from_value(
        kind: &str,
        value: serde_json::Value,
    ) -> Option<Result<ExporterConfig, ComponentError>> {
        let _ = (kind, value);
        None
    }

    /// Pure checks (no network, no disk): `Err` for an invalid config,
    /// `Ok(warnings)` for valid but surprising settings.
    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        match *self {}
    }
}
