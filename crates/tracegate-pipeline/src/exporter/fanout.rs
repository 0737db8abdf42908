//! The end of a pipeline: one batch, wrapped in one `Arc`, handed to every
//! exporter of the pipeline. Queued exporters take it without waiting, so a
//! stalled backend never delays the others.

use std::sync::Arc;

use async_trait::async_trait;
use tracegate_model::SpanBatch;

use super::handle::{ExporterHandle, Refusal};
use crate::consumer::{ConsumeError, Consumer};

/// The exporters of one pipeline, as its last [`Consumer`].
pub struct Fanout {
    exporters: Vec<ExporterHandle>,
}

impl Fanout {
    pub fn new(exporters: Vec<ExporterHandle>) -> Fanout {
        Fanout { exporters }
    }
}

#[async_trait]
impl Consumer for Fanout {
    fn reads_spans(&self) -> bool {
        self.exporters.iter().any(ExporterHandle::reads_spans)
    }

    /// `Ok` when at least one exporter took the batch; exporters that did not
    /// then count the spans as dropped with their reason. When none took it
    /// the client is told to retry (`Refused`), or that the data was refused
    /// for good (`Rejected`) when every exporter failed permanently; nothing
    /// is counted as dropped then, since the client still holds the spans.
    async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
        if batch.is_empty() || self.exporters.is_empty() {
            return Ok(());
        }
        let spans = batch.len() as u64;
        let batch = Arc::new(batch);
        let mut taken = 0usize;
        let mut refused: Vec<(&ExporterHandle, Refusal)> = Vec::new();
        let mut synchronous: Vec<&ExporterHandle> = Vec::new();
        for exporter in &self.exporters {
            if !exporter.is_queued() {
                synchronous.push(exporter);
                continue;
            }
            match exporter.send(batch.clone()).await {
                Ok(()) => taken += 1,
                Err(refusal) => refused.push((exporter, refusal)),
            }
        }
        if !synchronous.is_empty() {
            let outcomes = futures::future::join_all(
                synchronous
                    .iter()
                    .map(|exporter| exporter.send(batch.clone())),
            )
            .await;
            for (exporter, outcome) in synchronous.into_iter().zip(outcomes) {
                match outcome {
                    Ok(()) => taken += 1,
                    Err(refusal) => refused.push((exporter, refusal)),
                }
            }
        }
        if taken > 0 {
            for (exporter, refusal) in &refused {
                exporter.record_dropped(refusal.drop_reason(), refusal.undelivered(spans));
            }
            return Ok(());
        }
        let describe = |(exporter, refusal): &(&ExporterHandle, Refusal)| match refusal {
            Refusal::QueueFull => format!("exporter {}: sending queue is full", exporter.id()),
            Refusal::ShuttingDown => format!("exporter {}: shutting down", exporter.id()),
            Refusal::Failed { message, .. } => format!("exporter {}: {message}", exporter.id()),
        };
        let reasons: Vec<String> = refused.iter().map(describe).collect();
        let all_permanent = refused.iter().all(|(_, r)| {
            matches!(r, Refusal::Failed { reason, .. } if *reason == super::DropReason::PermanentError)
        });
        if all_permanent {
            // The first backend status, as grpc-go's status.FromError finds
            // it in the collector's joined fan-out error.
            let code = refused.iter().find_map(|(_, r)| match r {
                Refusal::Failed { code, .. } => *code,
                _ => None,
            });
            Err(ConsumeError::Rejected {
                message: reasons.join("; "),
                code,
            })
        } else {
            Err(ConsumeError::refused(format!(
                "no exporter could take the data: {}",
                reasons.join("; ")
            )))
        }
    }
}
