//! Receivers: network listeners that decode requests into `SpanBatch`es and
//! hand them to the pipeline.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ComponentError;
use crate::consumer::NextConsumer;

mod counters;
mod grpc_ingest;
mod http_ingest;
pub mod jaeger;
mod listener;
pub mod otlp;
#[cfg(test)]
mod test_support;
pub mod zipkin;

pub use listener::split_host_port;

/// A receiver's typed config, chosen by the component type.
// Built once per receiver at startup, so variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ReceiverConfig {
    /// `otlp`: OTLP over gRPC and HTTP.
    Otlp(otlp::Config),
    /// `zipkin`: Zipkin v2 JSON over HTTP.
    Zipkin(zipkin::Config),
    /// `jaeger`: Jaeger api_v2 gRPC (thrift protocols to come).
    Jaeger(jaeger::Config),
}

impl ReceiverConfig {
    /// Component types implemented here, aliases included.
    pub const KINDS: &'static [&'static str] = &["otlp", "zipkin", "jaeger"];

    /// `None` when `kind` is not a receiver type tracegate implements.
    pub fn from_value(
        kind: &str,
        value: serde_json::Value,
    ) -> Option<Result<ReceiverConfig, ComponentError>> {
        match kind {
            "otlp" => Some(crate::config::from_value(value).map(ReceiverConfig::Otlp)),
            "zipkin" => Some(crate::config::from_value(value).map(ReceiverConfig::Zipkin)),
            "jaeger" => Some(jaeger::Config::from_value(value).map(ReceiverConfig::Jaeger)),
            _ => None,
        }
    }

    /// Pure checks (no network, no disk): `Err` for an invalid config,
    /// `Ok(warnings)` for valid but surprising settings.
    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        match self {
            ReceiverConfig::Otlp(config) => config.validate(),
            ReceiverConfig::Zipkin(config) => config.validate(),
            ReceiverConfig::Jaeger(config) => config.validate(),
        }
    }

    /// Checks the config, binds every listener (so a port in use fails
    /// here, naming the receiver and address), loads TLS files, then serves
    /// until `shutdown` is cancelled. `id` is the component id (`otlp`, `otlp/internal`),
    /// used in errors and metric labels.
    pub async fn start(
        &self,
        id: &str,
        next: NextConsumer,
        shutdown: CancellationToken,
    ) -> Result<RunningReceiver, StartError> {
        self.validate().map_err(|source| StartError::Config {
            receiver: id.to_string(),
            source,
        })?;
        match self {
            ReceiverConfig::Otlp(config) => otlp::start(config, id, next, shutdown).await,
            ReceiverConfig::Zipkin(config) => zipkin::start(config, id, next, shutdown).await,
            ReceiverConfig::Jaeger(config) => jaeger::start(config, id, next, shutdown).await,
        }
    }
}

/// For a protocol's `Option` field: a key that is present, even with no
/// value (`grpc:`, which [`crate::config::from_value`] reads as an empty
/// section), turns the protocol on; left out (the field's `default`), it
/// stays off.
fn present_means_enabled<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// A started receiver.
#[derive(Debug)]
pub struct RunningReceiver {
    addresses: Vec<(&'static str, SocketAddr)>,
    tasks: TaskTracker,
}

impl RunningReceiver {
    /// The bound address of every protocol (`"grpc"`, `"http"`), in config
    /// order; with port 0 in the config these carry the port the OS chose.
    pub fn addresses(&self) -> &[(&'static str, SocketAddr)] {
        &self.addresses
    }

    /// Resolves once the servers have stopped after `shutdown` was
    /// cancelled: listeners closed, in-flight requests answered.
    pub async fn stopped(self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Why a receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("receiver {receiver}: cannot listen on {endpoint} ({protocol}): {source}")]
    Bind {
        receiver: String,
        protocol: &'static str,
        endpoint: String,
        source: std::io::Error,
    },
    #[error("receiver {receiver}: {protocol} TLS: {source}")]
    Tls {
        receiver: String,
        protocol: &'static str,
        source: crate::tls::TlsServerError,
    },
    #[error("receiver {receiver}: invalid config: {source}")]
    Config {
        receiver: String,
        source: ComponentError,
    },
}
