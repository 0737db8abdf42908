//! The collector configs users run today (`tests/fixtures/`, as files and
//! inside their Kubernetes ConfigMaps) load as written: tracegate is a
//! drop-in for them. Each must load without error, build exactly the traces
//! pipeline it names, in order, take over the `prometheus` exporter's
//! address and namespace for tracegate's own metrics, and warn about just
//! what the table lists. A ConfigMap's config is the same config as
//! the file beside it.

use std::path::PathBuf;

use tracegate::config::{self, Loaded};

/// Where the config text comes from.
enum Source {
    /// The file is a collector config.
    File,
    /// A ConfigMap in the file holds the collector config under this key.
    ConfigMap(&'static str),
}

struct Seed {
    file: &'static str,
    source: Source,
    /// The traces pipeline, by section, in the config's order.
    uses: &'static [(&'static str, &'static str)],
    /// Where the loaded config serves tracegate's metrics, and the namespace.
    metrics: (&'static str, &'static str),
    /// The file whose config a ConfigMap carries.
    same_as: Option<&'static str>,
    /// The config paths tracegate warns about, in order.
    warnings: &'static [&'static str],
}

const JAEGER_V2: &[(&str, &str)] = &[
    ("receivers", "otlp"),
    ("receivers", "jaeger"),
    ("processors", "sampling"),
    ("processors", "resource_detection"),
    ("processors", "tail_sampling"),
    ("processors", "batch"),
    ("exporters", "jaeger"),
    ("exporters", "otlp"),
];

const DAEMONSET: &[(&str, &str)] = &[
    ("receivers", "otlp"),
    ("processors", "memory_limiter"),
    ("processors", "batch"),
    ("exporters", "tempo"),
];

/// The head sampler's UNSET policy matches nearly everything; the
/// `prometheus` exporter is taken over; the metrics pipeline is skipped, so
/// its undefined receiver does not matter.
const JAEGER_V2_WARNINGS: &[&str] = &[
    "processors::sampling",
    // `kubernetes` is an old name; `k8s_api` and `docker` skip what the
    // collector would refuse to start without.
    "processors::resource_detection",
    "processors::resource_detection",
    "processors::resource_detection",
    "exporters::prometheus",
    "service::pipelines::metrics",
    "service::pipelines::metrics::receivers[0]",
];

/// Its `memory_limiter` comes first, so its refusals reach the `otlp`
/// receiver, whose answers carry a retry delay the collector does not send.
const DAEMONSET_WARNINGS: &[&str] = &[
    "receivers::otlp",
    "exporters::prometheus",
    "service::pipelines::metrics",
];

const SEEDS: &[Seed] = &[
    Seed {
        file: "jaeger-v2-collector.yaml",
        source: Source::File,
        uses: JAEGER_V2,
        // Its `prometheus` exporter takes over tracegate's own metrics.
        metrics: ("0.0.0.0:8888", "otel_collector"),
        same_as: None,
        warnings: JAEGER_V2_WARNINGS,
    },
    Seed {
        file: "jaeger-v2-k8s.yaml",
        source: Source::ConfigMap("otel-collector-config.yaml"),
        uses: JAEGER_V2,
        metrics: ("0.0.0.0:8888", "otel_collector"),
        same_as: Some("jaeger-v2-collector.yaml"),
        warnings: JAEGER_V2_WARNINGS,
    },
    Seed {
        file: "otel-collector-daemonset.yaml",
        source: Source::File,
        uses: DAEMONSET,
        // No namespace given: the collector's default.
        metrics: ("0.0.0.0:8889", "otelcol"),
        same_as: None,
        warnings: DAEMONSET_WARNINGS,
    },
    Seed {
        file: "otel-collector-daemonset-k8s.yaml",
        source: Source::ConfigMap("otel-collector-config.yaml"),
        uses: DAEMONSET,
        metrics: ("0.0.0.0:8889", "otelcol"),
        same_as: Some("otel-collector-daemonset.yaml"),
        warnings: DAEMONSET_WARNINGS,
    },
];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
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

fn load(seed: &Seed) -> Loaded {
    let text = std::fs::read_to_string(fixtures().join(seed.file)).unwrap();
    let text = match seed.source {
        Source::File => text,
        Source::ConfigMap(key) => from_config_map(&text, key),
    };
    config::load_str(&text, seed.file, &no_env)
        .unwrap_or_else(|e| panic!("{} must load as written:\n{e}", seed.file))
}

#[test]
fn every_collector_config_fixture_is_in_the_table() {
    let mut files: Vec<String> = std::fs::read_dir(fixtures())
        .expect("tests/fixtures")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    files.sort();
    let mut listed: Vec<&str> = SEEDS.iter().map(|s| s.file).collect();
    listed.sort();
    assert_eq!(files, listed, "add new fixtures to SEEDS");
}

#[test]
fn seed_configs_load_as_written() {
    for seed in SEEDS {
        let loaded = load(seed);
        check_loaded(seed, &loaded);
        if let Some(file) = seed.same_as {
            let twin = SEEDS.iter().find(|s| s.file == file).unwrap();
            assert_eq!(
                loaded.config,
                load(twin).config,
                "{} carries {file}'s config",
                seed.file
            );
        }
    }
}

/// What a seed config must load as.
fn check_loaded(seed: &Seed, loaded: &Loaded) {
    let config = &loaded.config;
    assert_eq!(config.service.pipelines.len(), 1, "{}", seed.file);
    let pipeline = &config.service.pipelines[0];
    assert_eq!(pipeline.id, "traces");
    let listed = |section: &str| -> Vec<String> {
        seed.uses
            .iter()
            .filter(|(s, _)| *s == section)
            .map(|(_, kind)| kind.to_string())
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
    // What each seed is told about: where the path alone says which.
    let warned: Vec<&str> = loaded
        .warnings
        .iter()
        .map(|w| w.split_once(": ").map_or(w.as_str(), |(path, _)| path))
        .collect();
    assert_eq!(
        warned, seed.warnings,
        "{}: {:#?}",
        seed.file, loaded.warnings
    );
}
