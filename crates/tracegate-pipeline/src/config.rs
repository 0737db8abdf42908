//! Turning one component's YAML (already parsed into a generic value) into
//! its typed `Config`, with errors that name the key's path and, for a
//! misspelt key or value, the nearest valid one.

use serde::de::DeserializeOwned;

/// A config error inside one component; the loader prefixes the component's
/// own path (`receivers::otlp::`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ComponentError {
    /// Dotted path of the offending key inside the component, e.g.
    /// `protocols.grpc.endpoint`; list items as `policies[2]`. Empty for the
    /// component itself. For an unknown key it is the path of the mapping
    /// that holds it (the message names the key).
    pub path: String,
    pub message: String,
}

/// Deserializes a component's config. A `null` (a key written with no
/// value, as in `batch:`) means all defaults. Unknown keys and values are
/// reported with the nearest valid spelling.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ComponentError> {
    let value = if value.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        value
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let raw = e.inner().to_string();
        let mut path = e.path().to_string();
        if path == "." {
            path.clear();
        }
        match explain_unknown(&raw) {
            Some(unknown) => {
                // serde_path_to_error's path ends with the unknown key itself;
                // the error belongs to the mapping that holds it.
                if unknown.is_field {
                    path = parent_path(&path).to_string();
                }
                ComponentError {
                    path,
                    message: unknown.message,
                }
            }
            None => ComponentError { path, message: raw },
        }
    })
}

/// Drops the last segment of a dotted path (`a.b[2].c` → `a.b[2]`).
fn parent_path(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(i) => &path[..i],
        None => "",
    }
}

/// serde's "unknown field/variant" error, rewritten for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    /// A key (`true`) or a value such as an enum spelling (`false`).
    pub is_field: bool,
    /// What was written.
    pub name: String,
    /// The nearest valid spelling, if one is close enough to be a typo.
    pub suggestion: Option<String>,
    /// `unknown field "endpiont", did you mean "endpoint"?`
    pub message: String,
}

/// Recognises serde's `unknown field `x`, expected one of `a`, `b`` (and
/// the `unknown variant` form) and rewrites it with a suggestion. `None`
/// for any other message.
pub fn explain_unknown(message: &str) -> Option<UnknownName> {
    let (is_field, rest) = if let Some(rest) = message.strip_prefix("unknown field `") {
        (true, rest)
    } else if let Some(rest) = message.strip_prefix("unknown variant `") {
        (false, rest)
    } else {
        return None;
    };
    let end = rest.find('`')?;
    let name = &rest[..end];
    let expected: Vec<&str> = rest[end + 1..].split('`').skip(1).step_by(2).collect();
    let suggestion = nearest(name, expected.iter().copied()).map(str::to_string);
    let what = if is_field { "field" } else { "value" };
    let message = match (&suggestion, expected.is_empty()) {
        (Some(s), _) => format!("unknown {what} {name:?}, did you mean {s:?}?"),
        (None, true) if is_field => format!("unknown field {name:?}: this section takes no keys"),
        (None, true) => format!("unknown value {name:?}"),
        (None, false) => {
            let list: Vec<String> = expected.iter().map(|e| format!("{e:?}")).collect();
            format!(
                "unknown {what} {name:?}, expected one of {}",
                list.join(", ")
            )
        }
    };
    Some(UnknownName {
        is_field,
        name: name.to_string(),
        suggestion,
        message,
    })
}

/// The candidate closest to `word` by edit distance (a swap of two
/// neighbouring letters counts as one edit), if it is close enough to be a
/// typo: at most a third of the word's length, and at least one edit is
/// always allowed. Ties go to the first candidate.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let budget = (word.chars().count() / 3).max(1);
    let lowered = word.to_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        if candidate == word {
            continue;
        }
        // Case and `-`/`_` slips are the commonest typos; rank them first.
        let d = if candidate.to_lowercase() == lowered
            || candidate.replace('-', "_") == word.replace('-', "_")
        {
            0
        } else {
            edit_distance(word, candidate)
        };
        if d <= budget && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// Optimal string alignment distance: insertions, deletions, substitutions
/// and transpositions of adjacent characters each cost one.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for (i, row) in d.chunks_mut(width).enumerate() {
        row[0] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = v;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Grpc {
        endpoint: String,
        #[serde(default)]
        tls: Option<bool>,
    }

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Protocols {
        grpc: Grpc,
        #[serde(default)]
        verbosity: Option<Verbosity>,
        #[serde(default)]
        list: Vec<Grpc>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Verbosity {
        Basic,
        Detailed,
    }

    fn err(v: serde_json::Value) -> ComponentError {
        from_value::<Protocols>(v).unwrap_err()
    }

    #[test]
    fn unknown_key_names_the_mapping_and_the_nearest_key() {
        let e = err(serde_json::json!({"grpc": {"endpiont": "x"}}));
        assert_eq!(e.path, "grpc");
        assert_eq!(
            e.message,
            r#"unknown field "endpiont", did you mean "endpoint"?"#
        );
    }

    #[test]
    fn unknown_key_far_from_everything_lists_the_valid_keys() {
        let e = err(serde_json::json!({"grpc": {"endpoint": "x"}, "zzzzzz": 1}));
        assert_eq!(e.path, "");
        assert_eq!(
            e.message,
            r#"unknown field "zzzzzz", expected one of "grpc", "verbosity", "list""#
        );
    }

    #[test]
    fn unknown_key_inside_a_list_item_keeps_the_index() {
        let e = err(
            serde_json::json!({"grpc": {"endpoint": "x"}, "list": [{"endpoint": "a"}, {"tsl": true}]}),
        );
        assert_eq!(e.path, "list[1]");
        assert_eq!(e.message, r#"unknown field "tsl", did you mean "tls"?"#);
    }

    #[test]
    fn unknown_enum_value_gets_a_suggestion() {
        let e = err(serde_json::json!({"grpc": {"endpoint": "x"}, "verbosity": "detaild"}));
        assert_eq!(e.path, "verbosity");
        assert_eq!(
            e.message,
            r#"unknown value "detaild", did you mean "detailed"?"#
        );
    }

    #[test]
    fn other_errors_keep_the_full_path() {
        let e = err(serde_json::json!({"grpc": {"endpoint": 5}}));
        assert_eq!(e.path, "grpc.endpoint");
        assert!(
            e.message.starts_with("invalid type: integer `5`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn null_means_defaults() {
        #[derive(Debug, Deserialize, PartialEq, Default)]
        #[serde(deny_unknown_fields)]
        struct Batch {
            #[serde(default)]
            size: u32,
        }
        assert_eq!(
            from_value::<Batch>(serde_json::Value::Null),
            Ok(Batch::default())
        );
    }

    #[test]
    fn edit_distance_counts_swaps_as_one() {
        assert_eq!(edit_distance("endpiont", "endpoint"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn nearest_only_suggests_plausible_typos() {
        let keys = ["endpoint", "tls", "headers", "compression"];
        assert_eq!(nearest("endpiont", keys), Some("endpoint"));
        assert_eq!(nearest("Endpoint", keys), Some("endpoint"));
        assert_eq!(nearest("tsl", keys), Some("tls"));
        assert_eq!(nearest("compresion", keys), Some("compression"));
        assert_eq!(nearest("queue", keys), None);
        assert_eq!(
            nearest("resourcedetection", ["resource_detection", "batch"]),
            Some("resource_detection")
        );
        assert_eq!(
            nearest("otlp-http", ["otlp_http", "otlp"]),
            Some("otlp_http")
        );
    }
}
