//! `tracegate components`: the component types this build implements, in
//! the shape of the collector's `components` output (YAML: `buildinfo`,
//! then `receivers`, `processors`, `exporters`, `connectors`,
//! `extensions`, each a list of `name`, `module`, `stability`, and the
//! config `providers` by scheme).
//!
//! tracegate handles traces only, so each component's `logs` and `metrics`
//! stability is `Undefined`, as the collector writes a signal a component
//! does not support. Aliases (`otlp_grpc`, `resourcedetection`, ...) are
//! listed as names of their own.

use serde::Serialize;

use super::catalog::Section;

/// The stability tracegate gives every component it builds, for traces.
const TRACES_STABILITY: &str = "Beta";
const UNDEFINED: &str = "Undefined";

#[derive(Serialize)]
struct Output {
    buildinfo: BuildInfo,
    receivers: Vec<Component>,
    processors: Vec<Component>,
    exporters: Vec<Component>,
    connectors: Vec<Component>,
    extensions: Vec<Component>,
    providers: Vec<Provider>,
}

#[derive(Serialize)]
struct BuildInfo {
    command: &'static str,
    description: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct Component {
    name: &'static str,
    module: String,
    stability: Stability,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Stability {
    Signals {
        logs: &'static str,
        metrics: &'static str,
        traces: &'static str,
    },
    Extension {
        extension: &'static str,
    },
}

#[derive(Serialize)]
struct Provider {
    scheme: &'static str,
    module: String,
}

/// The config providers: schemes a `--config` or `${...}` may use.
const PROVIDERS: [&str; 5] = ["env", "file", "http", "https", "yaml"];

/// The types tracegate implements in `section`, sorted. The one place this
/// module reads the catalogue.
fn implemented(section: Section) -> Vec<&'static str> {
    let mut kinds = section.implemented().to_vec();
    kinds.sort_unstable();
    kinds.dedup();
    kinds
}

/// The `components` output as YAML.
pub fn render() -> String {
    let version = env!("CARGO_PKG_VERSION");
    let module = format!("tracegate-pipeline v{version}");
    let list = |section: Section| -> Vec<Component> {
        implemented(section)
            .into_iter()
            .map(|name| Component {
                name,
                module: module.clone(),
                stability: if section == Section::Extensions {
                    Stability::Extension {
                        extension: TRACES_STABILITY,
                    }
                } else {
                    Stability::Signals {
                        logs: UNDEFINED,
                        metrics: UNDEFINED,
                        traces: TRACES_STABILITY,
                    }
                },
            })
            .collect()
    };
    let output = Output {
        buildinfo: BuildInfo {
            command: "tracegate",
            description: "tracegate trace-sampling gateway",
            version,
        },
        receivers: list(Section::Receivers),
        processors: list(Section::Processors),
        exporters: list(Section::Exporters),
        connectors: Vec::new(),
        extensions: list(Section::Extensions),
        providers: PROVIDERS
            .iter()
            .map(|scheme| Provider {
                scheme,
                module: format!("tracegate v{version}"),
            })
            .collect(),
    };
    serde_saphyr::to_string(&output).expect("the components list serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_what_is_implemented_in_the_collector_shape() {
        let text = render();
        let doc = crate::config::tree::parse(&text).unwrap().to_json();
        assert_eq!(doc["buildinfo"]["command"], "tracegate");
        assert_eq!(doc["buildinfo"]["version"], env!("CARGO_PKG_VERSION"));
        let names = |key: &str| -> Vec<String> {
            doc[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect()
        };
        for (key, section) in [
            ("receivers", Section::Receivers),
            ("processors", Section::Processors),
            ("exporters", Section::Exporters),
            ("extensions", Section::Extensions),
        ] {
            assert_eq!(names(key), implemented(section), "{key}");
        }
        assert!(names("receivers").contains(&"otlp".to_string()));
        assert!(names("processors").contains(&"tail_sampling".to_string()));
        assert_eq!(doc["connectors"], serde_json::json!([]));
        let otlp = &doc["receivers"].as_array().unwrap()[0];
        assert_eq!(otlp["stability"]["traces"], TRACES_STABILITY);
        assert_eq!(otlp["stability"]["logs"], UNDEFINED);
        assert_eq!(
            doc["extensions"][0]["stability"],
            serde_json::json!({"extension": TRACES_STABILITY})
        );
        let schemes: Vec<&str> = doc["providers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["scheme"].as_str().unwrap())
            .collect();
        assert_eq!(schemes, ["env", "file", "http", "https", "yaml"]);
    }
}
