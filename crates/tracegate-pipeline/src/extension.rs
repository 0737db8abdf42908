//! Extensions: components outside the pipelines, started when
//! `service::extensions` lists them, before any pipeline, and stopped after
//! the exporters have drained.

use std::net::SocketAddr;

use crate::auth::{self, Authenticator};
use crate::context::BuildContext;
use crate::file_storage::{self, FileStorage};
use crate::health::HealthCheckConfig;
use crate::registry::component_registry;
use crate::remote_sampling;
use crate::tail_storage;

/// What makes a config an extension type: implemented by each extension's
/// config in its own module, reached through [`ExtensionConfig`].
#[async_trait::async_trait]
pub trait BuildExtension: Send + Sync {
    /// Starts the extension, which runs until `ctx.shutdown` is cancelled.
    /// Called only after the config's `validate` passed; `Err` is the
    /// message for the user.
    async fn start(&self, id: &str, ctx: &BuildContext) -> Started;
}

/// A started extension, or why it could not start.
pub type Started = Result<RunningExtension, String>;

component_registry! {
    /// An extension's typed config, chosen by the component type.
    #[derive(Debug, Clone, PartialEq)]
    pub enum ExtensionConfig: "extension", dyn BuildExtension {
        HealthCheck(HealthCheckConfig) = "health_check"
            => "Answers health checks over HTTP: 200 once every pipeline is up.",
        FileStorage(file_storage::Config) = "file_storage"
            => "Keeps components' state on the local disk (the persistent sending queue).",
        BearerTokenAuth(auth::bearer::Config) = "bearertokenauth"
            => "Bearer tokens: required of clients by receivers, sent by exporters; a token file is reloaded when it changes.",
        BasicAuth(auth::basic::Config) = "basicauth"
            => "HTTP Basic authentication: checked against htpasswd by receivers, or sent by exporters.",
        RemoteSampling(remote_sampling::Config) = "jaegerremotesampling" | "remote_sampling",
            parse remote_sampling::from_value
            => "Serves Jaeger remote sampling strategies, from a file or calculated from the root spans received, to the SDKs that poll for them (HTTP and gRPC).",
        PebbleTailStorage(tail_storage::PebbleTailStorageConfig) = "pebble_tail_storage"
            => "Keeps the tail sampler's pending traces and decisions on the local disk across restarts (the collector's keys, tracegate's store).",
    }
    not built: [
        "pprof",
        "zpages",
        "memory_ballast",
        "oauth2client",
        "k8s_observer",
    ]
}

impl ExtensionConfig {
    /// For an authenticator extension, whether it authenticates servers
    /// (receivers) and clients (exporters); `None` for any other type.
    pub fn authenticates(&self) -> Option<(bool, bool)> {
        match self {
            ExtensionConfig::BearerTokenAuth(_) => Some((true, true)),
            ExtensionConfig::BasicAuth(c) => Some((c.htpasswd.is_some(), c.client_auth.is_some())),
            ExtensionConfig::HealthCheck(_)
            | ExtensionConfig::FileStorage(_)
            | ExtensionConfig::RemoteSampling(_)
            | ExtensionConfig::PebbleTailStorage(_) => None,
        }
    }

    /// Checks the config, then starts the extension. Must run inside a
    /// tokio runtime. The error names the extension.
    pub async fn start(&self, id: &str, ctx: &BuildContext) -> Result<RunningExtension, String> {
        let fail = |message: String| format!("extensions::{id}: {message}");
        self.validate().map_err(|e| fail(e.to_string()))?;
        self.component().start(id, ctx).await.map_err(fail)
    }
}

/// A started extension.
#[derive(Debug, Default)]
pub struct RunningExtension {
    /// Where it listens, as (protocol, address).
    pub addresses: Vec<(&'static str, SocketAddr)>,
    /// A storage extension's directory, which the binary hands to the
    /// components it builds next through [`BuildContext::storages`].
    pub storage: Option<FileStorage>,
    /// An authenticator extension's server and client sides, which the
    /// binary hands to receivers and exporters through
    /// [`BuildContext::authenticators`].
    pub authenticator: Option<Authenticator>,
    /// An `adaptive` remote sampling source's root-span counter, which the
    /// binary puts in front of every receiver's consumer.
    pub root_counter: Option<std::sync::Arc<remote_sampling::RootCounter>>,
}
