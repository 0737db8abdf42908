//! The collector's `probabilistic_sampler` processor for traces
//! (`tracegate_sampling::head::probabilistic` has the semantics): modes
//! `hash_seed` (the default, deciding exactly as the collector on every
//! trace id), `proportional` and `equalizing`, with `fail_closed`,
//! `sampling_precision` and the `sampling.priority` span attribute. Every
//! span decided is counted in the collector's
//! `processor_probabilistic_sampler_count_spans_processed{policy, sampled}`
//! and in its deprecated predecessor `..._count_traces_sampled`, every span
//! dropped also in `tracegate_dropped_spans{reason="sampled_out"}`.

use std::sync::Arc;

use tracegate_sampling::head::ProbabilisticSampler;

use super::sampling::{component_error, HeadSamplingStage};
use super::Processor;
use crate::config::ComponentError;
use crate::consumer::NextConsumer;

/// `processors: probabilistic_sampler:` (its keys are documented on the type).
pub type Config = tracegate_sampling::head::ProbabilisticSamplerConfig;

/// The collector's metric, without namespace (served with `_total`, as the
/// collector's `..._count_spans_processed_total`): every span decided,
/// labelled `policy` (the randomness source: `trace_id_hash`,
/// `trace_id_w3c`, `sampling_randomness`, `missing_randomness`,
/// `sampling_priority`) and `sampled`.
pub const COUNT_SPANS_PROCESSED: &str = "processor_probabilistic_sampler_count_spans_processed";

/// The same counts under the collector's older name, deprecated there in
/// favour of [`COUNT_SPANS_PROCESSED`] and still served by both, so that
/// dashboards written against either keep working. It counts spans,
/// despite its name.
pub const COUNT_TRACES_SAMPLED: &str = "processor_probabilistic_sampler_count_traces_sampled";

/// The collector's checks; `Ok` carries warnings.
pub fn validate(config: &Config) -> Result<Vec<String>, ComponentError> {
    config.validate().map_err(component_error)
}

/// Starts the processor. The config must have passed [`validate`].
pub fn start(id: &str, config: &Config, next: NextConsumer) -> Arc<dyn Processor> {
    Arc::new(HeadSamplingStage::new(
        id,
        Box::new(ProbabilisticSampler::new(config)),
        &[COUNT_SPANS_PROCESSED, COUNT_TRACES_SAMPLED],
        next,
    ))
}

impl super::BuildProcessor for Config {
    fn build(&self, id: &str, next: NextConsumer, _: &super::BuildContext) -> super::Building {
        Ok(start(id, self, next))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use tracegate_model::otlp::{ExportTraceServiceRequest, ResourceSpans, ScopeSpans, Span};
    use tracegate_model::SpanBatch;
    use tracegate_sampling::head::otep235::fnv1a32_seeded;

    use super::*;
    use crate::consumer::{ConsumeError, Consumer};

    #[derive(Default)]
    struct Collect(Mutex<Vec<SpanBatch>>);

    #[async_trait]
    impl Consumer for Collect {
        async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
            self.0.lock().unwrap().push(batch);
            Ok(())
        }
    }

    /// `n` spans, each of its own trace, in one resource.
    pub(crate) fn traces(n: u64) -> SpanBatch {
        let spans = (0..n)
            .map(|i| Span {
                trace_id: [i.to_le_bytes(), (!i).to_be_bytes()].concat(),
                span_id: (i + 1).to_be_bytes().to_vec(),
                ..Default::default()
            })
            .collect();
        SpanBatch::from_request(&ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    #[tokio::test]
    async fn hash_seed_mode_keeps_what_the_collector_keeps_and_counts_the_rest() {
        let config: Config = serde_json::from_value(
            serde_json::json!({"sampling_percentage": 15.3, "hash_seed": 22}),
        )
        .unwrap();
        assert!(validate(&config).unwrap().is_empty());
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let sink = Arc::new(Collect::default());
        let stage = metrics::with_local_recorder(&recorder, || {
            start("probabilistic_sampler", &config, sink.clone())
        });
        let batch = traces(2000);
        stage.consume(batch.clone()).await.unwrap();
        // uint32(15.3 * 163.84) in float32 = 2506 buckets of 16384.
        let expected: Vec<[u8; 16]> = batch
            .spans()
            .iter()
            .map(|s| s.trace_id)
            .filter(|id| fnv1a32_seeded(22, id) & 0x3fff < 2506)
            .collect();
        let kept = std::mem::take(&mut *sink.0.lock().unwrap());
        let kept_ids: Vec<[u8; 16]> = kept
            .iter()
            .flat_map(|b| b.spans().iter().map(|s| s.trace_id))
            .collect();
        assert_eq!(kept_ids, expected);
        let text = handle.render();
        let count = |labels: &[&str]| -> u64 {
            text.lines()
                .filter(|l| labels.iter().all(|lab| l.contains(lab)))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        };
        let dropped = 2000 - expected.len() as u64;
        // The current name and the deprecated one count the same spans,
        // with the same labels.
        for metric in [COUNT_SPANS_PROCESSED, COUNT_TRACES_SAMPLED] {
            let name = format!("{metric}{{");
            let id = "processor=\"probabilistic_sampler\"";
            assert_eq!(
                count(&[&name, id, "policy=\"trace_id_hash\"", "sampled=\"true\""]),
                expected.len() as u64,
                "{metric}"
            );
            assert_eq!(
                count(&[&name, id, "policy=\"trace_id_hash\"", "sampled=\"false\""]),
                dropped,
                "{metric}"
            );
            assert_eq!(count(&[&name]), 2000, "{metric}");
        }
        assert_eq!(
            count(&["tracegate_dropped_spans", "reason=\"sampled_out\""]),
            dropped
        );
    }

    #[test]
    fn the_collectors_config_errors() {
        let config: Config =
            serde_json::from_value(serde_json::json!({"sampling_precision": 15})).unwrap();
        assert_eq!(validate(&config).unwrap_err().path, "sampling_precision");
        let unknown: Result<Config, _> = serde_json::from_value(serde_json::json!({"rate": 1}));
        assert!(unknown.is_err());
    }
}
