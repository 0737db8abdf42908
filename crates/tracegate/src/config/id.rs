//! Component ids (`type[/name]`) and pipeline ids (`signal[/name]`), with
//! the collector's character rules: a type is an ASCII letter followed by
//! up to 62 ASCII letters, digits or `_`; a name is 1 to 1024 bytes with no
//! whitespace, control, format, private-use or symbol characters (Unicode
//! categories Z, C, S). Surrounding spaces are trimmed, as the collector
//! does.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// A component's id as written in the config: `otlp`, `otlp/tempo`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComponentId {
    /// The component type, e.g. `otlp`, `batch`.
    pub kind: String,
    /// The optional name after the `/`.
    pub name: Option<String>,
}

impl ComponentId {
    /// An id with no name.
    pub fn new(kind: &str) -> ComponentId {
        ComponentId {
            kind: kind.to_string(),
            name: None,
        }
    }

    /// Parses `type[/name]`; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<ComponentId, String> {
        let (kind, name) = split_id(text)?;
        if !is_type(kind) {
            return Err(format!(
                "in {text:?} id: invalid character(s) in type {kind:?}"
            ));
        }
        Ok(ComponentId {
            kind: kind.to_string(),
            name: name.map(str::to_string),
        })
    }
}

impl FromStr for ComponentId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ComponentId::parse(s)
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}/{}", self.kind, name),
            None => f.write_str(&self.kind),
        }
    }
}

/// The kinds of data a collector pipeline carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Signal {
    Traces,
    Metrics,
    Logs,
    Profiles,
}

impl Signal {
    pub const NAMES: [&'static str; 4] = ["traces", "metrics", "logs", "profiles"];

    pub fn name(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
            Signal::Profiles => "profiles",
        }
    }
}

/// `traces`, `metrics/internal`, ...
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct PipelineId {
    pub signal: Signal,
    pub name: Option<String>,
}

impl PipelineId {
    pub fn parse(text: &str) -> Result<PipelineId, String> {
        let (signal, name) = split_id(text)?;
        let signal = match signal {
            "traces" => Signal::Traces,
            "metrics" => Signal::Metrics,
            "logs" => Signal::Logs,
            "profiles" => Signal::Profiles,
            other => {
                let hint = tracegate_pipeline::config::nearest(other, Signal::NAMES)
                    .map(|s| format!(", did you mean {s:?}?"))
                    .unwrap_or_else(|| ": expected traces, metrics, logs or profiles".into());
                return Err(format!("pipeline {text:?}: unknown signal {other:?}{hint}"));
            }
        };
        Ok(PipelineId {
            signal,
            name: name.map(str::to_string),
        })
    }
}

impl fmt::Display for PipelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}/{}", self.signal.name(), name),
            None => f.write_str(self.signal.name()),
        }
    }
}

/// Splits `type[/name]` at the first `/`, trims both parts and checks the
/// name; the type is checked by the caller.
fn split_id(text: &str) -> Result<(&str, Option<&str>), String> {
    let (kind, name) = match text.split_once('/') {
        Some((kind, name)) => (kind.trim(), Some(name.trim())),
        None => (text.trim(), None),
    };
    if kind.is_empty() {
        return Err(match name {
            Some(_) => format!("in {text:?} id: the part before / should not be empty"),
            None => "id must not be empty".to_string(),
        });
    }
    if let Some(name) = name {
        if name.is_empty() {
            return Err(format!(
                "in {text:?} id: the part after / should not be empty"
            ));
        }
        if name.len() > 1024 {
            return Err(format!(
                "in {text:?} id: name is longer than 1024 characters ({} characters)",
                name.len()
            ));
        }
        if let Some(c) = name.chars().find(|c| is_forbidden_in_name(*c)) {
            return Err(format!(
                "in {text:?} id: invalid character(s) in name {name:?} ({c:?} is whitespace, a control character or a symbol)"
            ));
        }
    }
    Ok((kind, name))
}

fn is_type(kind: &str) -> bool {
    let mut chars = kind.chars();
    kind.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Unicode categories Z, C (as Go's tables have it: Cc, Cf, Co, Cs) and S,
/// which the collector's `^[^\pZ\pC\pS]+$` excludes from names. The ranges
/// come from regex-syntax's Unicode tables.
fn is_forbidden_in_name(c: char) -> bool {
    static RANGES: OnceLock<Vec<(char, char)>> = OnceLock::new();
    let ranges = RANGES.get_or_init(|| {
        use regex_syntax::hir::{Class, HirKind};
        let hir = regex_syntax::Parser::new()
            .parse(r"[\p{Z}\p{Cc}\p{Cf}\p{Co}\p{S}]")
            .expect("a valid class");
        match hir.kind() {
            HirKind::Class(Class::Unicode(class)) => class
                .ranges()
                .iter()
                .map(|r| (r.start(), r.end()))
                .collect(),
            _ => unreachable!("a Unicode class parses to a class"),
        }
    });
    // Ranges are sorted and disjoint.
    let i = ranges.partition_point(|(_, end)| *end < c);
    ranges.get(i).is_some_and(|(start, _)| *start <= c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_type_and_name() {
        assert_eq!(
            ComponentId::parse("otlp").unwrap(),
            ComponentId::new("otlp")
        );
        let id = ComponentId::parse(" otlp / tempo ").unwrap();
        assert_eq!(id.kind, "otlp");
        assert_eq!(id.name.as_deref(), Some("tempo"));
        assert_eq!(id.to_string(), "otlp/tempo");
        // Only the first `/` separates: names may hold more.
        assert_eq!(
            ComponentId::parse("otlp/a/b").unwrap().name.as_deref(),
            Some("a/b")
        );
        // Punctuation, letters of any script and digits are fine in names.
        for name in ["tempo-eu.1", "日本", "a_b:c", "(x)", "#1"] {
            assert!(
                ComponentId::parse(&format!("otlp/{name}")).is_ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn rejects_what_the_collector_rejects() {
        let cases = [
            ("", "id must not be empty"),
            ("  ", "id must not be empty"),
            ("/x", "the part before / should not be empty"),
            ("otlp/", "the part after / should not be empty"),
            ("otlp/ ", "the part after / should not be empty"),
            ("1otlp", "invalid character(s) in type"),
            ("otlp-grpc", "invalid character(s) in type"),
            ("otlp/a b", "invalid character(s) in name"),
            ("otlp/a+b", "invalid character(s) in name"),
            ("otlp/a$", "invalid character(s) in name"),
            ("otlp/€", "invalid character(s) in name"),
            ("otlp/😀", "invalid character(s) in name"),
            ("otlp/a\u{200b}", "invalid character(s) in name"),
            ("otlp/a\u{7}", "invalid character(s) in name"),
        ];
        for (text, want) in cases {
            let e = ComponentId::parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let long_type = "a".repeat(64);
        assert!(ComponentId::parse(&long_type).is_err());
        assert!(ComponentId::parse(&"a".repeat(63)).is_ok());
        assert!(ComponentId::parse(&format!("a/{}", "n".repeat(1025))).is_err());
    }

    #[test]
    fn ids_order_by_kind_then_name() {
        let mut ids: Vec<ComponentId> = ["otlp/b", "batch", "otlp", "otlp/a"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        ids.sort();
        let shown: Vec<String> = ids.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["batch", "otlp", "otlp/a", "otlp/b"]);
    }

    #[test]
    fn pipeline_ids() {
        let id = PipelineId::parse("traces/tail").unwrap();
        assert_eq!(
            (id.signal, id.name.as_deref()),
            (Signal::Traces, Some("tail"))
        );
        assert_eq!(id.to_string(), "traces/tail");
        assert_eq!(PipelineId::parse("logs").unwrap().signal, Signal::Logs);
        let e = PipelineId::parse("trace").unwrap_err();
        assert!(
            e.contains(r#"unknown signal "trace", did you mean "traces"?"#),
            "{e}"
        );
        assert!(PipelineId::parse("spans")
            .unwrap_err()
            .contains("expected traces"));
        assert!(PipelineId::parse("traces/").is_err());
    }
}
