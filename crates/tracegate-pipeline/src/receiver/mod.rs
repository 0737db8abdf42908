//! Receivers: network listeners that decode requests into `SpanBatch`es and
//! hand them to the pipeline.

use std::net::SocketAddr;

use tokio_util::task::TaskTracker;

use crate::config::ComponentError;
use crate::consumer::NextConsumer;
use crate::context::BuildContext;
use crate::registry::component_registry;

mod counters;
pub(crate) mod grpc_ingest;
pub(crate) mod http_ingest;
#[cfg(test)]
mod indexing_tests;
pub mod jaeger;
pub(crate) mod listener;
pub mod otlp;
pub(crate) mod server_keys;
#[cfg(test)]
pub(crate) mod test_support;
pub mod zipkin;

pub(crate) use listener::bind;

/// How a receiver feeding `next` indexes what it scans: eagerly, in the
/// validating pass, when a stage after it reads spans; otherwise on first
/// use (which a pipeline of byte-only stages never comes to). Asked once,
/// when the receiver starts.
pub(crate) fn indexing_for(next: &dyn crate::consumer::Consumer) -> tracegate_model::Indexing {
    if next.reads_spans() {
        tracegate_model::Indexing::Eager
    } else {
        tracegate_model::Indexing::Lazy
    }
}
pub use listener::split_host_port;
pub use server_keys::ResponseHeaders;

/// What makes a config a receiver type: implemented by each receiver's
/// `Config` in its own module, reached through [`ReceiverConfig`].
#[async_trait::async_trait]
pub trait BuildReceiver: Send + Sync {
    /// Binds every listener, loads TLS files, then serves until
    /// `ctx.shutdown` is cancelled. Called only after the config's
    /// `validate` passed.
    async fn start(&self, id: &str, next: NextConsumer, ctx: &BuildContext) -> Started;
}

/// A started receiver, or why it could not start.
pub type Started = Result<RunningReceiver, StartError>;

component_registry! {
    /// A receiver's typed config, chosen by the component type.
    // Built once per receiver at startup, so variant sizes do not matter.
    #[allow(clippy::large_enum_variant)]
    #[derive(Debug, Clone, PartialEq)]
    pub enum ReceiverConfig: "receiver", dyn BuildReceiver {
        Otlp(otlp::Config) = "otlp"
            => "OTLP over gRPC and HTTP (protobuf or JSON).",
        Zipkin(zipkin::Config) = "zipkin"
            => "Zipkin v2 over HTTP, JSON or protobuf.",
        Jaeger(jaeger::Config) = "jaeger", parse jaeger::Config::from_value
            => "Jaeger api_v2 over gRPC, and jaeger.thrift over HTTP and UDP.",
    }
    not built: [
        "prometheus",
        "hostmetrics",
        "kafka",
        "filelog",
        "opencensus",
        "fluentforward",
        "kubeletstats",
        "k8s_cluster",
        "k8sobjects",
        "journald",
        "syslog",
        "statsd",
        "otlpjsonfile",
        "nop",
    ]
}

impl ReceiverConfig {
    /// Checks the config, binds every listener (so a port in use fails
    /// here, naming the receiver and address), loads TLS files, then serves
    /// until the context's `shutdown` is cancelled (a bare
    /// `CancellationToken` is a context with nothing else). `id` is the
    /// component id (`otlp`, `otlp/internal`), used in errors and metric
    /// labels.
    pub async fn start(
        &self,
        id: &str,
        next: NextConsumer,
        ctx: impl Into<BuildContext>,
    ) -> Result<RunningReceiver, StartError> {
        self.validate().map_err(|source| StartError::Config {
            receiver: id.to_string(),
            source,
        })?;
        self.component().start(id, next, &ctx.into()).await
    }
}

impl ReceiverConfig {
    /// The authenticator extensions the receiver's protocols name, each
    /// with the path of its `authenticator` key.
    pub fn authenticators(&self) -> Vec<(String, &str)> {
        fn grpc(g: &Option<otlp::GrpcConfig>) -> Option<&str> {
            g.as_ref()
                .and_then(|g| g.auth.as_ref())
                .map(|a| a.authenticator.as_str())
        }
        let named: Vec<(&str, Option<&str>)> = match self {
            ReceiverConfig::Otlp(c) => vec![
                ("protocols.grpc.", grpc(&c.protocols.grpc)),
                (
                    "protocols.http.",
                    c.protocols
                        .http
                        .as_ref()
                        .and_then(|h| h.auth.as_ref())
                        .map(|a| a.authenticator.as_str()),
                ),
            ],
            ReceiverConfig::Jaeger(c) => vec![
                ("protocols.grpc.", grpc(&c.protocols.grpc)),
                (
                    "protocols.thrift_http.",
                    c.protocols
                        .thrift_http
                        .as_ref()
                        .and_then(|h| h.auth.as_ref())
                        .map(|a| a.authenticator.as_str()),
                ),
            ],
            ReceiverConfig::Zipkin(c) => {
                vec![("", c.auth.as_ref().map(|a| a.authenticator.as_str()))]
            }
        };
        named
            .into_iter()
            .filter_map(|(path, id)| Some((format!("{path}auth.authenticator"), id?)))
            .collect()
    }

    /// Whether a refused batch (overload, shutdown) gets a retry delay in
    /// this receiver's answer (gRPC `RetryInfo`, HTTP `Retry-After`), which
    /// the collector's receivers do not send: the OTLP receiver, and the
    /// Jaeger receiver's gRPC protocol.
    pub fn sends_retry_delay(&self) -> bool {
        match self {
            ReceiverConfig::Otlp(_) => true,
            ReceiverConfig::Jaeger(c) => c.protocols.grpc.is_some(),
            ReceiverConfig::Zipkin(_) => false,
        }
    }
}

/// For a protocol's `Option` field: a key that is present, even with no
/// value (`grpc:`, which [`crate::config::from_value`] reads as an empty
/// section), turns the protocol on; left out (the field's `default`), it
/// stays off.
pub(crate) fn present_means_enabled<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
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
    #[error("receiver {receiver}: {protocol} auth: {message}")]
    Auth {
        receiver: String,
        protocol: &'static str,
        message: String,
    },
    #[error("receiver {receiver}: invalid config: {source}")]
    Config {
        receiver: String,
        source: ComponentError,
    },
}
