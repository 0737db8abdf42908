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

/// A shipped config as YAML values.
fn yaml(relative: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo().join(relative)).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The gateway tier's configs agree on who owns a trace: the agents route
/// by trace id over the members their resolver lists, the gateways hand
/// traces over by the same resolver (key for key), and the GPU nodes' dns
/// resolver reads the same headless Service, on the same port. Agents and
/// GPU nodes keep the same share of traces, so a trace that crosses both
/// is kept on both sides or on neither.
#[test]
fn the_fleet_configs_agree_on_the_members() {
    let agent = yaml("config/agent.yaml");
    let gateway = yaml("config/gateway.yaml");
    let gpu = yaml("config/gpu-node.yaml");
    let routing = &agent["exporters"]["loadbalancing"];
    assert_eq!(routing["routing_key"], "traceID");
    let handover = &gateway["processors"]["tail_sampling"]["handover"];
    assert_eq!(routing["resolver"], handover["resolver"]);
    let k8s = &handover["resolver"]["k8s"];
    let port = k8s["ports"][0].as_str().expect("a port variable");
    assert_eq!(k8s["ports"].as_array().unwrap().len(), 1);
    let advertised = handover["advertised_endpoint"].as_str().unwrap();
    assert!(
        advertised.starts_with("${env:POD_IP") && advertised.ends_with(&format!(":{port}")),
        "{advertised}: the pod IP and the members' port"
    );

    let gpu_routing = &gpu["exporters"]["loadbalancing"];
    assert_eq!(gpu_routing["routing_key"], "traceID");
    let dns = &gpu_routing["resolver"]["dns"];
    assert_eq!(dns["port"].as_str(), Some(port));
    let service = k8s["service"].as_str().unwrap();
    let hostname = dns["hostname"].as_str().unwrap();
    assert!(
        hostname.contains(&format!(":-{service}.tracegate.svc.")),
        "{hostname}: the DNS name of {service} (namespace tracegate)"
    );
    assert_eq!(
        agent["processors"]["probabilistic_sampler"],
        gpu["processors"]["probabilistic_sampler"]
    );
}

/// The GPU node's backlog survives a restart: the `loadbalancing`
/// exporter's own queue (which stores each batch before routing) is on
/// disk, in a `file_storage` extension that is started, under the
/// directory systemd hands the unit (`STATE_DIRECTORY`, from its
/// `StateDirectory=tracegate`), and no per-gateway memory queue takes
/// batches off the disk before a gateway has them.
#[test]
fn the_gpu_node_queue_is_on_disk_in_the_units_state_directory() {
    use tracegate_pipeline::extension::ExtensionConfig;

    let gpu = yaml("config/gpu-node.yaml");
    let lb = &gpu["exporters"]["loadbalancing"];
    assert_eq!(lb["sending_queue"]["enabled"], true);
    assert_eq!(lb["retry_on_failure"]["enabled"], true);
    assert_eq!(lb["protocol"]["otlp"]["sending_queue"]["enabled"], false);
    let storage = lb["sending_queue"]["storage"].as_str().expect("storage");

    let text = std::fs::read_to_string(repo().join("config/gpu-node.yaml")).unwrap();
    let directory = |env: &dyn Fn(&str) -> Option<String>| {
        let loaded =
            config::load_str(&text, "config/gpu-node.yaml", env).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            loaded
                .config
                .service
                .extensions
                .iter()
                .any(|id| id.to_string() == storage),
            "{storage} is started"
        );
        let (_, extension) = loaded
            .config
            .extensions
            .iter()
            .find(|(id, _)| id.to_string() == storage)
            .expect("the storage extension");
        match extension {
            ExtensionConfig::FileStorage(c) => {
                assert!(c.create_directory, "the queue's directory is created");
                c.directory.clone()
            }
            other => panic!("{storage} is {other:?}"),
        }
    };
    // Under systemd: the unit's state directory.
    let unit = |name: &str| (name == "STATE_DIRECTORY").then(|| "/var/lib/tracegate".to_string());
    assert_eq!(directory(&unit), "/var/lib/tracegate/queue");
    let moved = |name: &str| (name == "STATE_DIRECTORY").then(|| "/srv/state".to_string());
    assert_eq!(directory(&moved), "/srv/state/queue");
    // Outside systemd: the same place.
    assert_eq!(directory(&no_env), "/var/lib/tracegate/queue");

    let unit = std::fs::read_to_string(repo().join("deploy/systemd/tracegate.service")).unwrap();
    assert!(
        unit.lines().any(|l| l.trim() == "StateDirectory=tracegate"),
        "the unit's StateDirectory is /var/lib/tracegate"
    );
}
