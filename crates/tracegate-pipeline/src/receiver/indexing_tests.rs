//! Which pipelines a receiver indexes eagerly for ([`super::indexing_for`]),
//! over processor chains and exporters built from configs as the service
//! builds them: lazily only when no stage reads spans.

use std::sync::Arc;

use serde_json::{json, Value};
use tracegate_model::Indexing;

use crate::consumer::NextConsumer;
use crate::context::BuildContext;
use crate::exporter::{Admission, ExporterConfig, ExporterHandle, Fanout};
use crate::processor::ProcessorConfig;

/// A pipeline's name, processors, exporters and how it should be indexed.
type Case = (
    &'static str,
    Vec<(&'static str, Value)>,
    Vec<ExporterHandle>,
    Indexing,
);

fn exporter(kind: &str, config: Value, ctx: &BuildContext) -> ExporterHandle {
    ExporterConfig::from_value(kind, config)
        .expect("known kind")
        .expect("valid config")
        .start(kind, ctx)
        .expect("starts")
}

/// `processors` in front of `exporters`, wired as a pipeline is.
fn pipeline(
    processors: &[(&str, Value)],
    exporters: Vec<ExporterHandle>,
    ctx: &BuildContext,
) -> NextConsumer {
    let mut next: NextConsumer = Arc::new(Fanout::new(exporters.clone()));
    for (kind, config) in processors.iter().rev() {
        let processor = ProcessorConfig::from_value(kind, config.clone())
            .expect("known kind")
            .expect("valid config")
            .build(kind, next, ctx)
            .expect("builds");
        next = processor;
    }
    Admission::wrap(exporters, next)
}

#[tokio::test]
async fn only_pipelines_of_byte_only_stages_are_indexed_lazily() {
    let ctx = BuildContext::default();
    // Backends are connected on first export: none is needed here.
    let otlp = exporter(
        "otlp",
        json!({"endpoint": "127.0.0.1:9", "tls": {"insecure": true}}),
        &ctx,
    );
    let otlphttp = exporter("otlphttp", json!({"endpoint": "http://127.0.0.1:9"}), &ctx);
    let debug = exporter("debug", json!({}), &ctx);
    let batch = (
        "batch",
        json!({"send_batch_size": 8192, "timeout": "200ms"}),
    );
    let limiter = (
        "memory_limiter",
        json!({"check_interval": "1s", "limit_mib": 512}),
    );
    let sampler = ("probabilistic_sampler", json!({"sampling_percentage": 30}));
    let split = (
        "batch",
        json!({"send_batch_size": 100, "send_batch_max_size": 200}),
    );
    let cases: Vec<Case> = vec![
        (
            "batch → otlp",
            vec![batch.clone()],
            vec![otlp.clone()],
            Indexing::Lazy,
        ),
        ("otlp alone", vec![], vec![otlp.clone()], Indexing::Lazy),
        (
            "memory_limiter → batch → otlp, otlphttp",
            vec![limiter.clone(), batch.clone()],
            vec![otlp.clone(), otlphttp.clone()],
            Indexing::Lazy,
        ),
        (
            "a sampler reads spans",
            vec![sampler.clone(), batch.clone()],
            vec![otlp.clone()],
            Indexing::Eager,
        ),
        (
            "a sampler after the batch processor too",
            vec![batch.clone(), sampler.clone()],
            vec![otlp.clone()],
            Indexing::Eager,
        ),
        (
            "send_batch_max_size splits by span",
            vec![split.clone()],
            vec![otlp.clone()],
            Indexing::Eager,
        ),
        (
            "the debug exporter reads spans",
            vec![batch.clone()],
            vec![otlp.clone(), debug.clone()],
            Indexing::Eager,
        ),
    ];
    for (name, processors, exporters, want) in cases {
        let next = pipeline(&processors, exporters, &ctx);
        assert_eq!(super::indexing_for(next.as_ref()), want, "{name}");
    }
}
