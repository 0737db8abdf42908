//! What a component is handed when it is built: the services it shares
//! with the rest of the process. Components never reach for process-wide
//! state; what one needs from another comes through here, and a test
//! builds a context with exactly what it needs (`BuildContext::default()`
//! when that is nothing).

use tokio_util::sync::CancellationToken;

use crate::file_storage::Storages;
use crate::health::Readiness;
use crate::memory::MemoryPressure;

/// Handed to every component's build function by the registry of its kind
/// (see [`crate::registry`]). Cloning it is cheap, and clones share the
/// same services.
#[derive(Debug, Clone, Default)]
pub struct BuildContext {
    /// Whether a memory limiter is above its hard limit: memory limiters
    /// report into it, the tail sampler sheds pending traces while it is
    /// set. All processors of one process share it, whatever their pipeline.
    pub memory: MemoryPressure,
    /// The allocator's way of giving freed memory back to the OS, which
    /// the memory limiter calls where the collector forces a GC (the binary
    /// purges jemalloc's arenas). `None`: nothing to call.
    pub release_memory: Option<fn()>,
    /// Whether every pipeline is up, as the `health_check` extension reports.
    pub readiness: Readiness,
    /// Cancelled when the component must stop: for receivers when shutdown
    /// begins (stop accepting), for extensions at its end.
    pub shutdown: CancellationToken,
    /// The storage extensions (`file_storage`) started before the
    /// pipelines, by id: where a persistent sending queue keeps its data.
    pub storages: Storages,
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
