//! What a component is handed when it is built: the services it shares
//! with the rest of the process. Components never reach for process-wide
//! state; what one needs from another comes through here, and a test
//! builds a context with exactly what it needs (`BuildContext::default()`
//! when that is nothing).

use tokio_util::sync::CancellationToken;

use crate::auth::Authenticators;
use crate::file_storage::Storages;
use crate::health::Readiness;
use crate::memory::{Allocator, MemoryPressure};
use crate::processor::tail_sampling::handover::HandoverExchange;

/// Handed to every component's build function by the registry of its kind
/// (see [`crate::registry`]). Cloning it is cheap, and clones share the
/// same services.
#[derive(Debug, Clone, Default)]
pub struct BuildContext {
    /// What memory limiters ask of components holding data: limiters
    /// report into it, the tail sampler decides pending traces early when
    /// asked. All processors of one process share it, whatever their
    /// pipeline.
    pub memory: MemoryPressure,
    /// The allocator's statistics and release, which the memory limiter
    /// measures and calls (the binary's jemalloc). `None`: the limiter
    /// measures the resident set and has nothing to release.
    pub allocator: Option<Allocator>,
    /// Whether every pipeline is up, as the `health_check` extension reports.
    pub readiness: Readiness,
    /// Cancelled when the component must stop: for receivers when shutdown
    /// begins (stop accepting), for extensions at its end.
    pub shutdown: CancellationToken,
    /// The storage extensions (`file_storage`) started before the
    /// pipelines, by id: where a persistent sending queue keeps its data.
    pub storages: Storages,
    /// The authenticator extensions (`bearertokenauth`, `basicauth`)
    /// started before the pipelines, by id: what a receiver's or
    /// exporter's `auth: authenticator:` names.
    pub authenticators: Authenticators,
    /// Where `tail_sampling` processors with `handover` take traces other
    /// gateways hand them: they register, the OTLP/gRPC receivers deliver.
    pub handover: HandoverExchange,
}

impl BuildContext {
    /// The same services, with `shutdown` as the stop signal.
    pub fn with_shutdown(&self, shutdown: CancellationToken) -> BuildContext {
        BuildContext {
            shutdown,
            ..self.clone()
        }
    }
}

/// A context whose only service is the stop signal, for starting a
/// receiver on its own (`config.start(id, next, shutdown.clone())`).
impl From<CancellationToken> for BuildContext {
    fn from(shutdown: CancellationToken) -> BuildContext {
        BuildContext {
            shutdown,
            ..BuildContext::default()
        }
    }
}
