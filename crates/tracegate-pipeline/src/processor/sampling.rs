//! The `sampling` processor of our seed config (`jaeger-v2-collector.yaml`):
//! stateless, trace-consistent head sampling by policies with
//! `fraction_on_match` and a baseline (`tracegate_sampling::head::policy`
//! has the semantics). Also the runtime shared with `probabilistic_sampler`:
//! [`HeadSamplingStage`] runs a head sampler over each batch, passes the
//! kept spans on (re-encoding only those whose tracestate changes) and
//! counts every span it drops.

use std::sync::Arc;

use async_trait::async_trait;
use metrics::Counter;
use tracegate_model::SpanBatch;
use tracegate_sampling::head::{sample_batch, ConfigError, HeadSampler};

use super::Processor;
use crate::config::ComponentError;
use crate::consumer::{ConsumeError, Consumer, NextConsumer};
use crate::telemetry::names;

/// `processors: sampling:` (its keys are documented on the type).
pub type Config = tracegate_sampling::head::SamplingConfig;

/// Spans decided by the `sampling` processor, labelled `processor`,
/// `policy` (the policy whose fraction decided, or `baseline`) and
/// `sampled`: tracegate's own, named after the collector's
/// `processor_probabilistic_sampler_count_traces_sampled`, which likewise
/// counts spans.
pub const COUNT_TRACES_SAMPLED: &str = "processor_sampling_count_traces_sampled";

/// The `reason` of `tracegate_dropped_spans` for spans head sampling drops.
pub const SAMPLED_OUT: &str = "sampled_out";

pub(crate) fn component_error(e: ConfigError) -> ComponentError {
    ComponentError {
        path: e.path,
        message: e.message,
    }
}

/// Checks the config; `Ok` carries warnings (a status_code policy listing
/// UNSET, a config that drops everything).
pub fn validate(config: &Config) -> Result<Vec<String>, ComponentError> {
    config.validate().map_err(component_error)
}

/// Starts the processor; `Err` for a config that [`validate`] rejects.
pub fn start(
    id: &str,
    config: &Config,
    next: NextConsumer,
) -> Result<Arc<dyn Processor>, ComponentError> {
    let (sampler, _) = config.build().map_err(component_error)?;
    Ok(Arc::new(HeadSamplingStage::new(
        id,
        Box::new(sampler),
        &[COUNT_TRACES_SAMPLED],
        next,
    )))
}

impl super::BuildProcessor for Config {
    fn build(&self, id: &str, next: NextConsumer, _: &super::BuildContext) -> super::Building {
        start(id, self, next)
    }
}

/// A running head sampler: decides each span, passes the kept ones on.
pub struct HeadSamplingStage {
    sampler: Box<dyn HeadSampler>,
    /// Per decided metric, then per label of the sampler: `[not sampled,
    /// sampled]`; `labels` rows per metric.
    decided: Vec<[Counter; 2]>,
    labels: usize,
    dropped: Counter,
    next: NextConsumer,
}

impl HeadSamplingStage {
    /// Registers the counters once: `{processor, policy, sampled}` per
    /// label of the sampler in each of `decided_metrics` (which count the
    /// same decisions under different names), and
    /// `tracegate_dropped_spans{component, reason="sampled_out"}`.
    pub fn new(
        id: &str,
        sampler: Box<dyn HeadSampler>,
        decided_metrics: &[&'static str],
        next: NextConsumer,
    ) -> HeadSamplingStage {
        let labels = sampler.labels();
        let decided = decided_metrics
            .iter()
            .flat_map(|&metric| {
                labels.iter().map(move |policy| {
                    [false, true].map(|sampled| {
                        metrics::counter!(
                            metric,
                            "processor" => id.to_string(),
                            "policy" => policy.clone(),
                            "sampled" => sampled.to_string()
                        )
                    })
                })
            })
            .collect();
        HeadSamplingStage {
            sampler,
            decided,
            labels: labels.len(),
            dropped: metrics::counter!(
                names::DROPPED_SPANS,
                "component" => id.to_string(),
                "reason" => SAMPLED_OUT
            ),
            next,
        }
    }
}

#[async_trait]
impl Consumer for HeadSamplingStage {
    async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
        if batch.is_empty() {
            return Ok(());
        }
        let sampled = sample_batch(self.sampler.as_ref(), self.labels, &batch);
        for metric in self.decided.chunks(self.labels.max(1)) {
            for (counters, [not_sampled, sampled]) in metric.iter().zip(&sampled.tally) {
                if *not_sampled > 0 {
                    counters[0].increment(*not_sampled);
                }
                if *sampled > 0 {
                    counters[1].increment(*sampled);
                }
            }
        }
        let dropped = sampled.dropped();
        if dropped > 0 {
            self.dropped.increment(dropped);
        }
        if sampled.kept.is_empty() {
            return Ok(());
        }
        self.next.consume(sampled.kept).await
    }
}

#[async_trait]
impl Processor for HeadSamplingStage {
    async fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tracegate_model::otlp::{
        ExportTraceServiceRequest, ResourceSpans, ScopeSpans, Span, Status,
    };

    use super::*;

    #[derive(Default)]
    pub(crate) struct Collect(pub Mutex<Vec<SpanBatch>>);

    #[async_trait]
    impl Consumer for Collect {
        async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
            self.0.lock().unwrap().push(batch);
            Ok(())
        }
    }

    /// Spans of random-looking traces; every tenth has status ERROR.
    pub(crate) fn spans(n: u64) -> SpanBatch {
        let spans = (0..n)
            .map(|i| {
                let mut trace_id = [0u8; 16];
                trace_id[8..]
                    .copy_from_slice(&(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_be_bytes());
                Span {
                    trace_id: trace_id.to_vec(),
                    span_id: (i + 1).to_be_bytes().to_vec(),
                    name: format!("s{i}"),
                    status: Some(Status {
                        code: if i % 10 == 0 { 2 } else { 1 },
                        ..Default::default()
                    }),
                    ..Default::default()
                }
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

    fn counter(rendered: &str, name: &str, labels: &[&str]) -> u64 {
        rendered
            .lines()
            .filter(|l| l.starts_with(name) && labels.iter().all(|lab| l.contains(lab)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    #[tokio::test]
    async fn drops_are_counted_and_kept_spans_carry_their_threshold() {
        let config: Config = serde_json::from_value(serde_json::json!({
            "sampling_percentage": 10,
            "policies": [{"name": "errors", "type": "status_code",
                          "status_code": {"status_codes": ["ERROR"]}}]
        }))
        .unwrap();
        assert_eq!(validate(&config).unwrap(), Vec::<String>::new());
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let sink = Arc::new(Collect::default());
        let stage = metrics::with_local_recorder(&recorder, || {
            start("sampling", &config, sink.clone()).unwrap()
        });
        stage.consume(spans(1000)).await.unwrap();
        let kept: Vec<SpanBatch> = std::mem::take(&mut sink.0.lock().unwrap());
        assert_eq!(kept.len(), 1);
        let kept = &kept[0];
        let errors = kept
            .spans()
            .iter()
            .filter(|s| s.status == tracegate_model::StatusCode::Error)
            .count();
        assert_eq!(errors, 100, "every error span is kept");
        for i in 0..kept.len() {
            let expected = if kept.spans()[i].status == tracegate_model::StatusCode::Error {
                "ot=th:0"
            } else {
                "ot=th:e666"
            };
            assert_eq!(kept.span_trace_state(i), expected);
        }
        let dropped = 1000 - kept.len() as u64;
        assert!(
            (50..=130).contains(&(900 - dropped)),
            "about 10 % of 900 kept"
        );
        let text = handle.render();
        assert_eq!(
            counter(
                &text,
                "tracegate_dropped_spans",
                &["reason=\"sampled_out\"", "component=\"sampling\""]
            ),
            dropped
        );
        assert_eq!(
            counter(
                &text,
                COUNT_TRACES_SAMPLED,
                &["policy=\"errors\"", "sampled=\"true\""]
            ),
            100
        );
        assert_eq!(
            counter(
                &text,
                COUNT_TRACES_SAMPLED,
                &["policy=\"baseline\"", "sampled=\"false\""]
            ),
            dropped
        );
        assert_eq!(
            counter(
                &text,
                COUNT_TRACES_SAMPLED,
                &["policy=\"baseline\"", "sampled=\"true\""]
            ),
            kept.len() as u64 - 100
        );
    }

    #[tokio::test]
    async fn a_batch_dropped_whole_is_not_passed_on() {
        let config: Config = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(
            validate(&config).unwrap().len(),
            1,
            "warns that everything is dropped"
        );
        let sink = Arc::new(Collect::default());
        let stage = start("sampling", &config, sink.clone()).unwrap();
        stage.consume(spans(10)).await.unwrap();
        assert!(sink.0.lock().unwrap().is_empty());
    }

    #[test]
    fn invalid_configs_name_the_key() {
        let config: Config = serde_json::from_value(serde_json::json!({
            "policies": [{"name": "x", "type": "status_code", "status_code": {"status_codes": []}}]
        }))
        .unwrap();
        assert_eq!(
            validate(&config).unwrap_err().path,
            "policies[0].status_code.status_codes"
        );
    }
}
