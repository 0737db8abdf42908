//! Every OpenTelemetry Collector config among the seed files (and those
//! embedded in the seed's Kubernetes ConfigMaps) loads, or fails only
//! because a component its traces pipeline uses is not implemented yet.
//!
//! The table lists, per config, every component its traces pipeline uses
//! and the issue that implements it. A component whose type is in its
//! typed config's `KINDS` must load cleanly; any other must be reported as
//! "not implemented yet (issue N)". Any other complaint about a seed config
//! is a loader bug. As issues land, the expected errors shrink on their own
//! and the configs start to load; run with `--nocapture` to see progress.

use std::path::PathBuf;

use tracegate::config::{self, ConfigError, Loaded};
use tracegate_pipeline::exporter::ExporterConfig;
use tracegate_pipeline::processor::ProcessorConfig;
use tracegate_pipeline::receiver::ReceiverConfig;

/// Where the config text comes from.
enum Source {
    /// The file is a collector config.
    File,
    /// A ConfigMap in the file holds the collector config under this key.
    ConfigMap(&'static str),
    /// Not a collector config (Tempo's own config, a Jaeger Deployment).
    NotCollector,
}

struct Seed {
    file: &'static str,
    source: Source,
    /// Components of the traces pipeline: (section, type, issue).
    uses: &'static [(&'static str, &'static str, u32)],
    /// Where the loaded config serves tracegate's metrics, and the namespace.
    metrics: (&'static str, &'static str),
}

const JAEGER_V2: &[(&str, &str, u32)] = &[
    ("receivers", "otlp", 2),
    ("receivers", "jaeger", 5),
    ("processors", "sampling", 4),
    ("processors", "resource_detection", 4),
    ("processors", "tail_sampling", 6),
    ("processors", "batch", 2),
    ("exporters", "jaeger", 5),
    ("exporters", "otlp", 2),
];

const DAEMONSET: &[(&str, &str, u32)] = &[
    ("receivers", "otlp", 2),
    ("processors", "memory_limiter", 4),
    ("processors", "batch", 2),
    ("exporters", "tempo", 2),
];

const SEEDS: &[Seed] = &[
    Seed {
        file: "jaeger-v2-collector.yaml",
        source: Source::File,
        uses: JAEGER_V2,
        // Its `prometheus` exporter takes over tracegate's own metrics.
        metrics: ("0.0.0.0:8888", "otel_collector"),
    },
    Seed {
        file: "jaeger-v2-k8s.yaml",
        source: Source::ConfigMap("otel-collector-config.yaml"),
        uses: JAEGER_V2,
        metrics: ("0.0.0.0:8888", "otel_collector"),
    },
    Seed {
        file: "otel-collector-daemonset.yaml",
        source: Source::File,
        uses: DAEMONSET,
        metrics: ("0.0.0.0:8889", "otelcol"),
    },
    Seed {
        file: "otel-collector-daemonset-k8s.yaml",
        source: Source::ConfigMap("otel-collector-config.yaml"),
        uses: DAEMONSET,
        metrics: ("0.0.0.0:8889", "otelcol"),
    },
    Seed {
        file: "tempo.yaml",
        source: Source::NotCollector,
        uses: &[],
        metrics: ("", ""),
    },
    Seed {
        file: "jaeger-all-in-one-k8s.yaml",
        source: Source::NotCollector,
        uses: &[],
        metrics: ("", ""),
    },
];

fn seed_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/seed-configs")
}

fn implemented(section: &str, kind: &str) -> bool {
    match section {
        "receivers" => ReceiverConfig::KINDS.contains(&kind),
        "processors" => ProcessorConfig::KINDS.contains(&kind),
        "exporters" => ExporterConfig::KINDS.contains(&kind),
        other => panic!("no section {other}"),
    }
}

/// The collector config a ConfigMap manifest carries under `key`.
fn from_config_map(text: &str, key: &str) -> String {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(text).expect("valid manifests");
    docs.iter()
        .filter(|d| d["kind"] == "ConfigMap")
        .find_map(|d| d["data"][key].as_str())
        .unwrap_or_else(|| panic!("no ConfigMap with data key {key}"))
        .to_string()
}

/// Seed configs must not depend on the environment of whoever runs tests.
fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn every_seed_file_is_in_the_table() {
    let mut files: Vec<String> = std::fs::read_dir(seed_dir())
        .expect("the seed configs are at ../shared/seed-configs")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    files.sort();
    let mut listed: Vec<&str> = SEEDS.iter().map(|s| s.file).collect();
    listed.sort();
    assert_eq!(files, listed, "add new seed files to SEEDS");
}

#[test]
fn seed_configs_start_or_wait_only_on_planned_components() {
    let mut report = Vec::new();
    for seed in SEEDS {
        let path = seed_dir().join(seed.file);
        let text = std::fs::read_to_string(&path).unwrap();
        let text = match seed.source {
            Source::File => text,
            Source::ConfigMap(key) => from_config_map(&text, key),
            Source::NotCollector => {
                report.push(format!("{:<36} not a collector config", seed.file));
                continue;
            }
        };
        let result = config::load_str(&text, seed.file, &no_env);

        let mut expected: Vec<String> = seed
            .uses
            .iter()
            .filter(|(section, kind, _)| !implemented(section, kind))
            .map(|(section, kind, issue)| {
                format!("{section}::{kind}: {kind} is not implemented yet (issue {issue}); used by service::pipelines::traces")
            })
            .collect();
        expected.sort();

        match result {
            Ok(loaded) => {
                assert!(
                    expected.is_empty(),
                    "{}: loaded, but these should be reported: {expected:?}",
                    seed.file
                );
                check_loaded(seed, &loaded);
                report.push(format!("{:<36} starts", seed.file));
            }
            Err(e) => {
                let mut found: Vec<String> = e
                    .problems()
                    .iter()
                    .map(|p| format!("{}: {}", p.path, p.message))
                    .collect();
                found.sort();
                assert!(
                    matches!(e, ConfigError::Invalid { .. }),
                    "{}: {e}",
                    seed.file
                );
                assert_eq!(
                    found, expected,
                    "{}: only planned components may fail:\n{e}",
                    seed.file
                );
                report.push(format!(
                    "{:<36} waits on {}",
                    seed.file,
                    e.problems()
                        .iter()
                        .map(|p| p.path.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    eprintln!("seed configs:\n  {}", report.join("\n  "));
}

/// What a seed config that loads must look like.
fn check_loaded(seed: &Seed, loaded: &Loaded) {
    let config = &loaded.config;
    assert_eq!(config.service.pipelines.len(), 1, "{}", seed.file);
    let pipeline = &config.service.pipelines[0];
    assert_eq!(pipeline.id, "traces");
    let listed = |section: &str| -> Vec<String> {
        seed.uses
            .iter()
            .filter(|(s, _, _)| *s == section)
            .map(|(_, kind, _)| kind.to_string())
            .collect()
    };
    let ids = |v: &[config::ComponentId]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(
        ids(&pipeline.receivers),
        listed("receivers"),
        "{}",
        seed.file
    );
    assert_eq!(
        ids(&pipeline.processors),
        listed("processors"),
        "{}",
        seed.file
    );
    assert_eq!(
        ids(&pipeline.exporters),
        listed("exporters"),
        "{}",
        seed.file
    );
    assert_eq!(config.receivers.len(), pipeline.receivers.len());
    assert_eq!(config.processors.len(), pipeline.processors.len());
    assert_eq!(config.exporters.len(), pipeline.exporters.len());

    let telemetry = &config.service.telemetry;
    assert_eq!(
        (
            telemetry.metrics_address.as_deref(),
            telemetry.metrics_namespace.as_str()
        ),
        (Some(seed.metrics.0), seed.metrics.1),
        "{}",
        seed.file
    );
    // Both seeds carry a metrics pipeline, which tracegate skips.
    assert!(
        loaded.warnings.iter().any(
            |w| w.starts_with("service::pipelines::metrics: metrics pipelines are not handled")
        ),
        "{}: {:?}",
        seed.file,
        loaded.warnings
    );
}
