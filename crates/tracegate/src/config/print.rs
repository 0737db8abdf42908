//! `tracegate print-config`: the resolved document (every source merged,
//! every `${...}` expanded) as YAML or JSON, with secrets redacted unless
//! asked otherwise, as the collector's `print-config` does.
//!
//! The collector prints its typed config, so it redacts by type (each
//! `configopaque` field) and fills in defaults. tracegate prints the
//! document as written and redacts by key: the values of every `headers`
//! and `response_headers` mapping (or the `value` of each `{name, value}`
//! item), every item of a `tokens` list (`bearertokenauth`), and `ca_pem`, `cert_pem`, `key_pem`, `password`, `token`,
//! `client_secret`, `api_key` wherever they hold a scalar. Keys keep the
//! document's order.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use super::tree::{Node, Value};

/// What the collector prints instead of an opaque value.
pub const REDACTED: &str = "[REDACTED]";

/// Keys whose scalar values are secrets (the collector's `configopaque`
/// fields of the components it and tracegate know).
const SECRET_KEYS: [&str; 7] = [
    "ca_pem",
    "cert_pem",
    "key_pem",
    "password",
    "token",
    "client_secret",
    "api_key",
];

/// Mappings (and lists) whose every value is a secret.
const SECRET_MAPS: [&str; 3] = ["headers", "response_headers", "tokens"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Redacted,
    Unredacted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s.to_ascii_lowercase().as_str() {
            "redacted" => Ok(Mode::Redacted),
            "unredacted" => Ok(Mode::Unredacted),
            _ => Err(format!(
                "invalid mode {s:?}: modes are: redacted, unredacted"
            )),
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s.to_ascii_lowercase().as_str() {
            "yaml" => Ok(Format::Yaml),
            "json" => Ok(Format::Json),
            _ => Err(format!("unrecognized print format: {s}")),
        }
    }
}

/// The document as text.
pub(crate) fn render(document: &Node, mode: Mode, format: Format) -> Result<String, String> {
    let mut document = document.clone();
    if mode == Mode::Redacted {
        redact(&mut document);
    }
    let printable = Printable(&document);
    match format {
        Format::Yaml => serde_saphyr::to_string(&printable).map_err(|e| e.to_string()),
        Format::Json => serde_json::to_string_pretty(&printable)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| e.to_string()),
    }
}

fn redact(node: &mut Node) {
    match &mut node.value {
        Value::Map(entries) => {
            for entry in entries {
                if SECRET_MAPS.contains(&entry.key.as_str()) {
                    redact_all_values(&mut entry.value);
                } else if SECRET_KEYS.contains(&entry.key.as_str()) {
                    redact_scalar(&mut entry.value);
                } else {
                    redact(&mut entry.value);
                }
            }
        }
        Value::Seq(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// `headers: {k: v}` or `headers: [{name: k, value: v}]`.
fn redact_all_values(node: &mut Node) {
    match &mut node.value {
        Value::Map(entries) => entries.iter_mut().for_each(|e| redact_scalar(&mut e.value)),
        Value::Seq(items) => {
            for item in items {
                match &mut item.value {
                    Value::Map(entries) => {
                        for e in entries.iter_mut().filter(|e| e.key == "value") {
                            redact_scalar(&mut e.value);
                        }
                    }
                    _ => redact_scalar(item),
                }
            }
        }
        _ => redact_scalar(node),
    }
}

fn redact_scalar(node: &mut Node) {
    let secret = match &node.value {
        Value::Null | Value::Map(_) | Value::Seq(_) => false,
        Value::Str(s) => !s.is_empty(),
        _ => true,
    };
    if secret {
        node.value = Value::Str(REDACTED.into());
        node.expanded_text = None;
    }
}

/// Serializes a node keeping the mapping order.
struct Printable<'a>(&'a Node);

impl Serialize for Printable<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0.value {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(v) => s.serialize_str(v),
            Value::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Printable(item))?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for e in entries {
                    map.serialize_entry(&e.key, &Printable(&e.value))?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tree::parse;

    const DOC: &str = r#"
exporters:
  otlp:
    endpoint: tempo:4317
    headers:
      authorization: Bearer abc
      x-empty: ""
    tls:
      key_pem: PRIVATE
      ca_file: /ca.pem
  otlphttp:
    headers:
      - name: x-token
        value: t0k3n
extensions:
  basicauth:
    client_auth:
      username: me
      password: hunter2
  bearertokenauth:
    tokens: [first-t0k3n, second-t0k3n]
service:
  telemetry:
    metrics:
      level: "normal"
      readers:
        - pull:
            exporter:
              prometheus: {host: localhost, port: 8888}
"#;

    #[test]
    fn redacts_secrets_by_default_and_keeps_the_rest() {
        let doc = parse(DOC).unwrap();
        let text = render(&doc, Mode::Redacted, Format::Yaml).unwrap();
        for secret in ["Bearer abc", "PRIVATE", "t0k3n", "hunter2"] {
            assert!(!text.contains(secret), "{secret} in\n{text}");
        }
        // The printed YAML reads back as the same document, redacted.
        let back = parse(&text).unwrap().to_json();
        let exporters = &back["exporters"];
        assert_eq!(exporters["otlp"]["headers"]["authorization"], REDACTED);
        assert_eq!(exporters["otlp"]["headers"]["x-empty"], "");
        assert_eq!(exporters["otlp"]["tls"]["key_pem"], REDACTED);
        assert_eq!(exporters["otlp"]["tls"]["ca_file"], "/ca.pem");
        assert_eq!(exporters["otlp"]["endpoint"], "tempo:4317");
        assert_eq!(exporters["otlphttp"]["headers"][0]["name"], "x-token");
        assert_eq!(exporters["otlphttp"]["headers"][0]["value"], REDACTED);
        assert_eq!(
            back["extensions"]["basicauth"]["client_auth"]["username"],
            "me"
        );
        assert_eq!(
            back["extensions"]["bearertokenauth"]["tokens"],
            serde_json::json!([REDACTED, REDACTED])
        );
        assert_eq!(
            back["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]
                ["port"],
            8888
        );
        // Document order is kept.
        assert!(text.find("exporters").unwrap() < text.find("extensions").unwrap());
    }

    #[test]
    fn unredacted_and_json() {
        let doc = parse(DOC).unwrap();
        let text = render(&doc, Mode::Unredacted, Format::Json).unwrap();
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, doc.to_json());
        assert!(text.contains("hunter2"));
    }

    #[test]
    fn strings_that_look_like_other_types_stay_strings() {
        let doc = parse("a: '4317'\nb: 'true'\nc: '[x]'\nd: ''\ne: ~\nf: 'a: b'\n").unwrap();
        let text = render(&doc, Mode::Redacted, Format::Yaml).unwrap();
        assert_eq!(parse(&text).unwrap().to_json(), doc.to_json(), "{text}");
    }

    #[test]
    fn mode_and_format_names() {
        assert_eq!("Redacted".parse::<Mode>(), Ok(Mode::Redacted));
        assert!("raw".parse::<Mode>().unwrap_err().contains("modes are"));
        assert_eq!("JSON".parse::<Format>(), Ok(Format::Json));
    }
}
