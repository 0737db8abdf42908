//! The collector config inside a Kubernetes manifest: the text of one key
//! of a ConfigMap's `data`, as a Deployment or DaemonSet mounts it. The
//! manifest may hold several documents (`---`); the ConfigMap is picked by
//! `metadata.name`, the key by name or, when the ConfigMap has only one,
//! on its own. `tracegate validate --from-configmap NAME[:KEY]` reads a
//! config this way, so the deployments' manifests can be checked as they
//! are.

use std::fmt;
use std::str::FromStr;

use super::tree::{self, Node, Value};

/// `NAME[:KEY]`: a ConfigMap's `metadata.name` and, optionally, the key of
/// its `data` that holds the config. Neither a ConfigMap's name nor a data
/// key may hold a `:`, so the first one splits them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMapRef {
    pub name: String,
    pub key: Option<String>,
}

impl FromStr for ConfigMapRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, key) = match s.split_once(':') {
            Some((name, key)) => (name, Some(key)),
            None => (s, None),
        };
        if name.is_empty() {
            return Err("expected NAME or NAME:KEY, the ConfigMap's name first".into());
        }
        if key.is_some_and(str::is_empty) {
            return Err(format!(
                "expected a data key after \"{name}:\", or no colon to take the ConfigMap's only key"
            ));
        }
        Ok(ConfigMapRef {
            name: name.to_string(),
            key: key.map(str::to_string),
        })
    }
}

impl fmt::Display for ConfigMapRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(key) = &self.key {
            write!(f, ":{key}")?;
        }
        Ok(())
    }
}

/// A config found in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Extracted {
    /// The data key it came from.
    pub key: String,
    /// The config's text, preceded by as many empty lines as come before
    /// it in the manifest when it is a literal block (`key: |`), so that
    /// the lines in messages are the manifest's own.
    pub text: String,
}

/// Finds the config `which` names in the documents of `manifest`; the
/// error is the whole message after the file's name.
pub(crate) fn extract(manifest: &str, which: &ConfigMapRef) -> Result<Extracted, String> {
    let documents = tree::parse_documents(manifest).map_err(|e| format!("not valid YAML: {e}"))?;
    let config_maps: Vec<&Node> = documents
        .iter()
        .filter(|d| str_at(d, &["kind"]) == Some("ConfigMap"))
        .collect();
    let named: Vec<&&Node> = config_maps
        .iter()
        .filter(|d| str_at(d, &["metadata", "name"]) == Some(which.name.as_str()))
        .collect();
    let config_map = match named.as_slice() {
        [one] => *one,
        [] if config_maps.is_empty() => {
            return Err(format!(
                "no ConfigMap named {:?}: the file holds no ConfigMap",
                which.name
            ))
        }
        [] => {
            let names: Vec<String> = config_maps
                .iter()
                .map(|d| format!("{:?}", str_at(d, &["metadata", "name"]).unwrap_or("")))
                .collect();
            return Err(format!(
                "no ConfigMap named {:?}; the file's ConfigMaps: {}",
                which.name,
                names.join(", ")
            ));
        }
        several => {
            let namespaces: Vec<String> = several
                .iter()
                .map(|d| {
                    format!(
                        "{:?}",
                        str_at(d, &["metadata", "namespace"]).unwrap_or("default")
                    )
                })
                .collect();
            return Err(format!(
                "{} ConfigMaps are named {:?} (namespaces {}); keep one in the file",
                several.len(),
                which.name,
                namespaces.join(", ")
            ));
        }
    };
    let entries = match get(config_map, &["data"]).map(|d| &d.value) {
        Some(Value::Map(entries)) if !entries.is_empty() => entries,
        _ => return Err(format!("ConfigMap {:?} has no data", which.name)),
    };
    let keys = || {
        entries
            .iter()
            .map(|e| format!("{:?}", e.key))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let entry = match (&which.key, entries.as_slice()) {
        (Some(key), _) => entries.iter().find(|e| &e.key == key).ok_or_else(|| {
            format!(
                "ConfigMap {:?} has no data key {key:?}; its keys: {}",
                which.name,
                keys()
            )
        })?,
        (None, [one]) => one,
        (None, _) => {
            return Err(format!(
            "ConfigMap {:?} has {} data keys; name the one holding the config as {}:KEY (keys: {})",
            which.name,
            entries.len(),
            which.name,
            keys()
        ))
        }
    };
    let Value::Str(text) = &entry.value.value else {
        return Err(format!(
            "ConfigMap {:?}: data key {:?} holds {}, not the text of a config",
            which.name,
            entry.key,
            entry.value.kind_name()
        ));
    };
    let offset = block_offset(manifest, entry.key_line, text);
    Ok(Extracted {
        key: entry.key.clone(),
        text: "\n".repeat(offset) + text,
    })
}

/// How many manifest lines come before the first line of `text` when it
/// is written as a literal block under the key on line `key_line` (1-based),
/// every line of it on a line of its own; 0 when it is not (a quoted or
/// folded string), and messages then count lines from the config's start.
fn block_offset(manifest: &str, key_line: u64, text: &str) -> usize {
    let Ok(key_line) = usize::try_from(key_line) else {
        return 0;
    };
    let lines: Vec<&str> = manifest.lines().collect();
    let is_literal = |line: &str| {
        let indicator = line.rsplit_once(':').map_or("", |(_, rest)| rest.trim());
        indicator.starts_with('|')
    };
    if key_line == 0 || !lines.get(key_line - 1).is_some_and(|l| is_literal(l)) {
        return 0;
    }
    let matches = text.lines().enumerate().all(|(i, line)| {
        lines
            .get(key_line + i)
            .is_some_and(|l| l.trim() == line.trim())
    });
    if matches {
        key_line
    } else {
        0
    }
}

fn get<'a>(node: &'a Node, path: &[&str]) -> Option<&'a Node> {
    path.iter().try_fold(node, |node, key| match &node.value {
        Value::Map(entries) => entries.iter().find(|e| e.key == *key).map(|e| &e.value),
        _ => None,
    })
}

fn str_at<'a>(node: &'a Node, path: &[&str]) -> Option<&'a str> {
    match &get(node, path)?.value {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn which(s: &str) -> ConfigMapRef {
        s.parse().unwrap()
    }

    const MANIFEST: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: tracing
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: collector
data:
  config.yaml: |
    receivers:
      otlp:

    exporters:
      debug:
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: two-keys
data:
  a.yaml: \"receivers: {}\"
  b.yaml: |
    x: 1
";

    #[test]
    fn name_and_key_parse() {
        assert_eq!(
            which("collector"),
            ConfigMapRef {
                name: "collector".into(),
                key: None
            }
        );
        assert_eq!(
            which("collector:config.yaml"),
            ConfigMapRef {
                name: "collector".into(),
                key: Some("config.yaml".into())
            }
        );
        assert_eq!(
            which("collector:config.yaml").to_string(),
            "collector:config.yaml"
        );
        assert!("".parse::<ConfigMapRef>().is_err());
        assert!(":x".parse::<ConfigMapRef>().is_err());
        assert!("collector:".parse::<ConfigMapRef>().is_err());
    }

    #[test]
    fn the_only_key_is_taken_with_the_manifests_lines() {
        let got = extract(MANIFEST, &which("collector")).unwrap();
        assert_eq!(got.key, "config.yaml");
        let lines: Vec<&str> = got.text.lines().collect();
        // `receivers:` stands on line 12 of the manifest.
        assert_eq!(lines[11], "receivers:");
        assert!(lines[..11].iter().all(|l| l.is_empty()));
        assert_eq!(lines[15], "  debug:");
        let named = extract(MANIFEST, &which("collector:config.yaml")).unwrap();
        assert_eq!(named, got);
    }

    #[test]
    fn a_quoted_value_keeps_its_own_lines() {
        let got = extract(MANIFEST, &which("two-keys:a.yaml")).unwrap();
        assert_eq!(got.text, "receivers: {}");
        let got = extract(MANIFEST, &which("two-keys:b.yaml")).unwrap();
        assert_eq!(got.text.lines().count(), 25);
        assert!(got.text.ends_with("\nx: 1\n"));
    }

    #[test]
    fn what_cannot_be_found_is_named_with_what_there_is() {
        let cases = [
            (
                "missing",
                "no ConfigMap named \"missing\"; the file's ConfigMaps: \"collector\", \"two-keys\"",
            ),
            (
                "two-keys",
                "ConfigMap \"two-keys\" has 2 data keys; name the one holding the config as two-keys:KEY (keys: \"a.yaml\", \"b.yaml\")",
            ),
            (
                "collector:other.yaml",
                "ConfigMap \"collector\" has no data key \"other.yaml\"; its keys: \"config.yaml\"",
            ),
        ];
        for (selector, message) in cases {
            assert_eq!(
                extract(MANIFEST, &which(selector)).unwrap_err(),
                message,
                "{selector}"
            );
        }
        assert_eq!(
            extract("kind: Service\n", &which("x")).unwrap_err(),
            "no ConfigMap named \"x\": the file holds no ConfigMap"
        );
        assert_eq!(
            extract("kind: ConfigMap\nmetadata: {name: x}\n", &which("x")).unwrap_err(),
            "ConfigMap \"x\" has no data"
        );
        assert_eq!(
            extract(
                "kind: ConfigMap\nmetadata: {name: x}\ndata: {k: [1]}\n",
                &which("x")
            )
            .unwrap_err(),
            "ConfigMap \"x\": data key \"k\" holds a list, not the text of a config"
        );
        let twice = "kind: ConfigMap\nmetadata: {name: x, namespace: a}\ndata: {k: v}\n---\nkind: ConfigMap\nmetadata: {name: x}\ndata: {k: v}\n";
        assert_eq!(
            extract(twice, &which("x")).unwrap_err(),
            "2 ConfigMaps are named \"x\" (namespaces \"a\", \"default\"); keep one in the file"
        );
        assert!(extract("a: [1", &which("x"))
            .unwrap_err()
            .starts_with("not valid YAML: "));
    }
}
