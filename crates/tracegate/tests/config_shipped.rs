//! The configs tracegate ships load: the embedded default and every config
//! under `config/` and in the Kubernetes ConfigMaps under `deploy/`, each
//! without an error or a single warning. (The overlays' ConfigMaps are
//! generated from `config/`; `tests/e2e/deploy/` renders them and checks
//! them again as rendered, and checks the seed example under
//! `deploy/kubernetes/examples`, whose config keeps the seed's warnings.)

use std::path::{Path, PathBuf};

use tracegate::config;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn the_embedded_default_loads_cleanly() {
    let loaded = config::load_str(tracegate::DEFAULT_CONFIG, "config/tracegate.yaml", &no_env)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert!(!loaded.config.service.pipelines.is_empty());
}

/// Collector configs in `dir`: plain YAML files if `plain_is_config` (else
/// they are something else: alerting rules, say), and the values of
/// ConfigMap data keys ending in `.yaml` in manifests.
fn shipped_configs(dir: &Path, plain_is_config: bool) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "examples") {
                found.extend(shipped_configs(&path, plain_is_config));
            }
            continue;
        }
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path
            .strip_prefix(repo())
            .unwrap_or(&path)
            .display()
            .to_string();
        if text.contains("apiVersion:") {
            let docs: Vec<serde_json::Value> =
                serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            for doc in docs.iter().filter(|d| d["kind"] == "ConfigMap") {
                for (key, value) in doc["data"].as_object().into_iter().flatten() {
                    if key.ends_with(".yaml") || key.ends_with(".yml") {
                        found.push((
                            format!("{name} ({key})"),
                            value.as_str().unwrap_or_default().to_string(),
                        ));
                    }
                }
            }
        } else if plain_is_config {
            found.push((name, text));
        }
    }
    found
}

/// The warnings a shipped config gives on purpose: the node agent uses the
/// `k8s_api` detector, which tracegate notes starts where the collector's
/// would refuse to (an unset node variable, an unreachable API); and a
/// `memory_limiter` first in the pipeline, as recommended, makes refusals
/// carry a retry delay (issue 15's goodput hint), which the collector does
/// not send.
const RETRY_DELAY: &str =
    "receivers::otlp: when pipeline traces refuses spans (its memory_limiter refuses data)";
const EXPECTED_WARNINGS: &[(&str, &str)] = &[
    ("config/agent.yaml", RETRY_DELAY),
    (
        "config/agent.yaml",
        "processors::resource_detection: k8s_api: ",
    ),
    ("config/gateway.yaml", RETRY_DELAY),
    ("config/gpu-node.yaml", RETRY_DELAY),
];

#[test]
fn shipped_configs_load_cleanly() {
    let mut configs = shipped_configs(&repo().join("config"), true);
    configs.extend(shipped_configs(&repo().join("deploy"), false));
    let mut names: Vec<&str> = configs.iter().map(|(name, _)| name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "config/agent.yaml",
            "config/container.yaml",
            "config/gateway.yaml",
            "config/gpu-node.yaml",
            "config/tracegate.yaml",
        ],
        "every shipped config is found (add new ones here)"
    );
    for (name, text) in &configs {
        let loaded = config::load_str(text, name, &no_env).unwrap_or_else(|e| panic!("{e}"));
        let expected = EXPECTED_WARNINGS
            .iter()
            .filter(|(file, _)| file == name)
            .map(|(_, start)| *start);
        let mut warnings = loaded.warnings.clone();
        for start in expected {
            let at = warnings.iter().position(|w| w.starts_with(start));
            assert!(at.is_some(), "{name}: no warning {start:?}: {warnings:?}");
            warnings.remove(at.unwrap());
        }
        assert!(warnings.is_empty(), "{name}: {warnings:?}");
        assert!(!loaded.config.service.pipelines.is_empty(), "{name}");
    }
}
