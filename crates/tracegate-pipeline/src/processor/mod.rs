//! Processors: pipeline stages between receivers and the exporters' fan-out.
//! Each is a [`Consumer`] that passes batches on to the next stage.

pub mod batch;
mod instrumented;
pub mod memory_limiter;
pub mod probabilistic_sampler;
pub mod resource_detection;
pub mod sampling;
pub mod tail_sampling;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::ComponentError;
use crate::consumer::{Consumer, NextConsumer};
use crate::context::BuildContext;
use crate::registry::component_registry;

/// A running processor.
#[async_trait]
pub trait Processor: Consumer {
    /// Passes on everything the processor still holds (on shutdown).
    async fn flush(&self);

    /// Waits until the processor can take data; an error stops startup
    /// before any receiver listens (the collector's `Start` failing).
    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

/// What makes a config a processor type: implemented by each processor's
/// `Config` in its own module, reached through [`ProcessorConfig`].
pub trait BuildProcessor {
    /// Starts the processor in front of `next`, taking from `ctx` what it
    /// needs. Called only after the config's `validate` passed.
    fn build(&self, id: &str, next: NextConsumer, ctx: &BuildContext) -> Building;
}

/// A started processor, or why its config cannot be built.
pub type Building = Result<Arc<dyn Processor>, ComponentError>;

component_registry! {
    /// A processor's typed config, chosen by the component type.
    // Built once per processor at startup, so variant sizes do not matter.
    #[allow(clippy::large_enum_variant)]
    #[derive(Debug, Clone, PartialEq)]
    pub enum ProcessorConfig: "processor", dyn BuildProcessor {
        Batch(batch::Config) = "batch"
            => "Groups spans into larger batches, by size and time.",
        MemoryLimiter(memory_limiter::Config) = "memory_limiter"
            => "Refuses data that would take the process's memory past its soft limit.",
        ProbabilisticSampler(probabilistic_sampler::Config) = "probabilistic_sampler",
            validate probabilistic_sampler::validate
            => "Keeps a share of traces, decided from the trace id (head sampling).",
        Sampling(sampling::Config) = "sampling", validate sampling::validate
            => "tracegate's head sampling by policies, trace-consistent (OTEP 235).",
        ResourceDetection(resource_detection::Config) = "resource_detection" | "resourcedetection"
            => "Adds the host's and its cloud's attributes to every resource.",
        TailSampling(tail_sampling::Config) = "tail_sampling"
            => "Holds each trace until it can be judged whole, then keeps or drops it.",
    }
    not built: [
        "attributes",
        "resource",
        "filter",
        "transform",
        "k8sattributes",
        "groupbytrace",
        "groupbyattrs",
        "span",
        "redaction",
        "cumulativetodelta",
        "metricstransform",
    ]
}

impl ProcessorConfig {
    /// Checks the config, then starts the processor in front of `next`,
    /// counting its incoming and outgoing items and its own time.
    /// Must run inside a tokio runtime.
    pub fn build(
        &self,
        id: &str,
        next: NextConsumer,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Processor>, StartError> {
        let invalid = |source| StartError {
            processor: id.to_string(),
            source,
        };
        self.validate().map_err(invalid)?;
        // The collector's per-processor metrics, for every processor alike
        // (`instrumented.rs`).
        let metrics = instrumented::ProcessorMetrics::register(id);
        let next = instrumented::outgoing(next, &metrics);
        let processor = self.component().build(id, next, ctx).map_err(invalid)?;
        Ok(Arc::new(instrumented::Instrumented::new(
            processor, metrics,
        )))
    }
}

/// What a processor does with a batch's answer, as far as the stage that
/// handed it the batch can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// It acknowledges once it holds the spans (`batch`, `tail_sampling`):
    /// nothing after it reaches the sender.
    Holds,
    /// It may refuse the batch itself (`memory_limiter`).
    MayRefuse,
    /// It answers with what the stages after it answer.
    PassesOn,
}

impl ProcessorConfig {
    /// How this processor answers the stage before it.
    pub fn answer(&self) -> Answer {
        match self {
            ProcessorConfig::Batch(_) | ProcessorConfig::TailSampling(_) => Answer::Holds,
            ProcessorConfig::MemoryLimiter(_) => Answer::MayRefuse,
            ProcessorConfig::ProbabilisticSampler(_)
            | ProcessorConfig::Sampling(_)
            | ProcessorConfig::ResourceDetection(_) => Answer::PassesOn,
        }
    }
}

/// A processor whose config is invalid; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("processor {processor}: invalid config: {source}")]
pub struct StartError {
    pub processor: String,
    pub source: ComponentError,
}
