//! Processors: pipeline stages between receivers and the exporters' fan-out.
//! Each is a [`Consumer`] that passes batches on to the next stage.

pub mod batch;
pub mod memory_limiter;
pub mod probabilistic_sampler;
pub mod resource_detection;
pub mod sampling;
pub mod tail_sampling;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::{from_value, ComponentError};
use crate::consumer::{Consumer, NextConsumer};

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

/// A processor's typed config, chosen by the component type.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcessorConfig {
    Batch(batch::Config),
    MemoryLimiter(memory_limiter::Config),
    ProbabilisticSampler(probabilistic_sampler::Config),
    Sampling(sampling::Config),
    /// Boxed: its per-detector settings make it far larger than the others.
    ResourceDetection(Box<resource_detection::Config>),
    TailSampling(tail_sampling::Config),
}

impl ProcessorConfig {
    /// Component types implemented here, aliases included.
    pub const KINDS: &'static [&'static str] = &[
        "batch",
        "memory_limiter",
        "probabilistic_sampler",
        "sampling",
        "resource_detection",
        "resourcedetection",
        "tail_sampling",
    ];

    /// `None` when `kind` is not a processor type tracegate implements.
    pub fn from_value(
        kind: &str,
        value: serde_json::Value,
    ) -> Option<Result<ProcessorConfig, ComponentError>> {
        match kind {
            "batch" => Some(from_value(value).map(ProcessorConfig::Batch)),
            "memory_limiter" => Some(from_value(value).map(ProcessorConfig::MemoryLimiter)),
            "probabilistic_sampler" => {
                Some(from_value(value).map(ProcessorConfig::ProbabilisticSampler))
            }
            "sampling" => Some(from_value(value).map(ProcessorConfig::Sampling)),
            "resource_detection" | "resourcedetection" => {
                Some(from_value(value).map(|c| ProcessorConfig::ResourceDetection(Box::new(c))))
            }
            "tail_sampling" => Some(from_value(value).map(ProcessorConfig::TailSampling)),
            _ => None,
        }
    }

    /// Pure checks (no network, no disk): `Err` for an invalid config,
    /// `Ok(warnings)` for valid but surprising settings.
    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        match self {
            ProcessorConfig::Batch(c) => c.validate(),
            ProcessorConfig::MemoryLimiter(c) => c.validate(),
            ProcessorConfig::ProbabilisticSampler(c) => probabilistic_sampler::validate(c),
            ProcessorConfig::Sampling(c) => sampling::validate(c),
            ProcessorConfig::ResourceDetection(c) => c.validate(),
            ProcessorConfig::TailSampling(c) => c.validate(),
        }
    }

    /// Starts the processor in front of `next`. Must run inside a tokio runtime.
    pub fn build(&self, id: &str, next: NextConsumer) -> Arc<dyn Processor> {
        match self {
            ProcessorConfig::Batch(c) => batch::Batcher::start(id, c.clone(), next),
            ProcessorConfig::MemoryLimiter(c) => memory_limiter::MemoryLimiter::start(id, c, next),
            ProcessorConfig::ProbabilisticSampler(c) => probabilistic_sampler::start(id, c, next),
            ProcessorConfig::Sampling(c) => sampling::start(id, c, next),
            ProcessorConfig::ResourceDetection(c) => {
                resource_detection::ResourceDetector::start(id, (**c).clone(), next)
            }
            ProcessorConfig::TailSampling(c) => {
                tail_sampling::TailSampler::start(id, c.clone(), next)
            }
        }
    }
}
