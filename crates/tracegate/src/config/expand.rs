//! References in string values, resolved as the collector's confmap does:
//! `${env:VAR}`, `${VAR}` (env is the default scheme) and
//! `${env:VAR:-default}`; `${file:PATH}` (the file's content, trailing
//! newline included), `${yaml:TEXT}` (the text itself) and
//! `${http://...}` / `${https://...}` (the body of a GET, see
//! `sources`); `$$` is a literal `$`.
//!
//! - The innermost reference (the last `${` before the first `}`) is
//!   resolved first, and the result is scanned again, so references may nest
//!   and a variable's value may itself hold references.
//! - A scalar that is exactly one reference is re-typed as YAML: `4317`
//!   becomes an int, `[a, b]` a list, an unset variable null. The text is
//!   kept too, for fields that want a string. A string result is the
//!   variable's (or file's) raw text (quotes, trailing newline and all), as
//!   the collector keeps it.
//! - A reference inside a longer string is replaced by the variable's text.
//! - An unset variable without a default expands to nothing, with a warning.
//! - `${` preceded by an odd number of `$` is escaped. After expansion
//!   every `$$` becomes `$`.
//!
//! One deliberate difference: the collector stops scanning a string at the
//! first escaped reference, leaving `${B}` in `$${A}${B}` unexpanded; here
//! later references are still expanded.
//!
//! Keys are never expanded.

use super::tree::{parse, Node, Path, Value};

/// Resolutions allowed while expanding one scalar: a variable that refers
/// to itself fails instead of looping (the collector's bound).
const MAX_EXPANSIONS: usize = 1000;

/// Nesting allowed for variables whose values are lists or mappings that
/// hold further references; bounds the recursion, not the work.
const MAX_NESTING: usize = 16;

/// The result of expanding a whole document.
#[derive(Debug, Default)]
pub(crate) struct Expansion {
    pub warnings: Vec<(Path, String)>,
    pub errors: Vec<(Path, String)>,
}

/// Expands every string value under `root` in place, then unescapes `$$`.
pub(crate) fn expand_document(root: &mut Node, env: &dyn Fn(&str) -> Option<String>) -> Expansion {
    let mut expander = Expander {
        env,
        budget: 0,
        nesting: 0,
        result: Expansion::default(),
    };
    expander.expand_node(root, &Path::root());
    unescape_node(root);
    expander.result
}

struct Expander<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Resolutions left for the scalar being expanded.
    budget: usize,
    /// Depth of typed values being expanded inside typed values.
    nesting: usize,
    result: Expansion,
}

/// What one string expanded to.
enum Outcome {
    Text(String),
    /// The string was one reference whose value is not a YAML string.
    Typed {
        value: Value,
        text: String,
    },
}

/// One resolved reference.
struct Resolved {
    /// The variable's text (or the default's, or the file's).
    text: String,
    /// An empty default is an empty string, never null (as the collector).
    empty_default: bool,
    /// The `file:` URI the text came from, for the trailing-newline warning.
    file: Option<String>,
}

impl Expander<'_> {
    fn expand_node(&mut self, node: &mut Node, path: &Path) {
        match &mut node.value {
            Value::Str(_) => {
                self.budget = MAX_EXPANSIONS;
                self.expand_scalar(node, path);
            }
            Value::Seq(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.expand_node(item, &path.index(i));
                }
            }
            Value::Map(entries) => {
                for entry in entries.iter_mut() {
                    let child = path.key(&entry.key);
                    self.expand_node(&mut entry.value, &child);
                }
            }
            _ => {}
        }
    }

    /// Expands a string node, possibly re-typing it; the budget is shared
    /// with everything the expansion produces.
    fn expand_scalar(&mut self, node: &mut Node, path: &Path) {
        let Value::Str(text) = &node.value else {
            return;
        };
        match self.expand_str(text.clone(), path) {
            Ok(Outcome::Text(t)) => node.value = Value::Str(t),
            Ok(Outcome::Typed { value, text }) => {
                if self.nesting == MAX_NESTING {
                    self.result
                        .errors
                        .push((path.clone(), "too many recursive expansions".into()));
                    return;
                }
                let mut typed = Node::new(node.line, value);
                set_lines(&mut typed, node.line);
                self.nesting += 1;
                self.expand_children(&mut typed, path);
                self.nesting -= 1;
                // The text form is expanded too: a field that wants a
                // string gets it fully resolved.
                let text = match self.expand_str(text.clone(), path) {
                    Ok(Outcome::Text(t)) | Ok(Outcome::Typed { text: t, .. }) => t,
                    Err(_) => text,
                };
                node.value = typed.value;
                node.expanded_text = Some(text);
            }
            Err(message) => self.result.errors.push((path.clone(), message)),
        }
    }

    /// Strings inside a value that came from a variable (a list or mapping
    /// written in YAML) are expanded as well.
    fn expand_children(&mut self, node: &mut Node, path: &Path) {
        match &mut node.value {
            Value::Str(_) => self.expand_scalar(node, path),
            Value::Seq(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.expand_children(item, &path.index(i));
                }
            }
            Value::Map(entries) => {
                for entry in entries.iter_mut() {
                    let child = path.key(&entry.key);
                    self.expand_children(&mut entry.value, &child);
                }
            }
            _ => {}
        }
    }

    fn expand_str(&mut self, mut current: String, path: &Path) -> Result<Outcome, String> {
        let mut warned_escape = false;
        loop {
            let Some((open, end)) = find_reference(&current) else {
                return Ok(Outcome::Text(current));
            };
            if !warned_escape && collector_stops_at_escape(&current) {
                warned_escape = true;
                self.result.warnings.push((
                    path.clone(),
                    format!(
                        "{} is expanded after an escaped $${{...}}; the collector stops expanding \
                         this value at the escaped reference and leaves the rest as written",
                        &current[open..end]
                    ),
                ));
            }
            if self.budget == 0 {
                return Err("too many recursive expansions".into());
            }
            self.budget -= 1;
            let resolved = self.resolve(&current[open + 2..end - 1], path)?;
            if open == 0 && end == current.len() {
                match retype(&resolved) {
                    Value::Str(t) => {
                        self.warn_newline(&resolved, path);
                        current = t
                    }
                    value => {
                        return Ok(Outcome::Typed {
                            value,
                            text: resolved.text,
                        })
                    }
                }
            } else {
                self.warn_newline(&resolved, path);
                current.replace_range(open..end, &resolved.text);
            }
        }
    }

    /// A file read as text keeps its trailing newline, as in the collector;
    /// in a password or a header that is rarely meant.
    fn warn_newline(&mut self, resolved: &Resolved, path: &Path) {
        if let Some(uri) = &resolved.file {
            if resolved.text.ends_with('\n') {
                self.result.warnings.push((
                    path.clone(),
                    format!("${{{uri}}} ends with a newline, which is part of the value (as in the collector)"),
                ));
            }
        }
    }

    /// Resolves the inside of one `${...}`.
    fn resolve(&mut self, inner: &str, path: &Path) -> Result<Resolved, String> {
        // Without a scheme the default one, env, applies.
        let uri = if inner.contains(':') {
            inner.to_string()
        } else {
            format!("env:{inner}")
        };
        let (scheme, opaque) = uri.split_once(':').unwrap_or((&uri, ""));
        if !is_scheme(scheme) {
            return Err(format!("invalid uri: {uri:?}"));
        }
        if opaque.contains('$') {
            return Err(format!(
                "the uri {uri:?} contains unsupported characters ('$')"
            ));
        }
        if scheme != "env" {
            if !super::sources::REFERENCE_SCHEMES.contains(&scheme) {
                return Err(format!(
                    "scheme {scheme:?} is not supported for uri {uri:?} (tracegate resolves env, file, yaml, http and https)"
                ));
            }
            let text = super::sources::retrieve_text(&uri)?;
            return Ok(Resolved {
                text,
                empty_default: false,
                file: (scheme == "file").then(|| uri.clone()),
            });
        }
        let (name, default) = match opaque.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (opaque, None),
        };
        if !is_env_name(name) {
            return Err(format!(
                "environment variable {name:?} has invalid name: must match regex ^[a-zA-Z_][a-zA-Z0-9_]*$"
            ));
        }
        match ((self.env)(name), default) {
            (Some(text), _) => Ok(Resolved {
                text,
                empty_default: false,
                file: None,
            }),
            (None, Some(default)) => Ok(Resolved {
                text: default.to_string(),
                empty_default: default.is_empty(),
                file: None,
            }),
            (None, None) => {
                self.result.warnings.push((
                    path.clone(),
                    format!("environment variable {name} is not set; it expands to nothing"),
                ));
                Ok(Resolved {
                    text: String::new(),
                    empty_default: false,
                    file: None,
                })
            }
        }
    }
}

/// The value of a whole-scalar reference: the text read as YAML; a YAML
/// string (or text that is not YAML) stays the raw text.
fn retype(resolved: &Resolved) -> Value {
    if resolved.empty_default {
        return Value::Str(String::new());
    }
    match parse(&resolved.text) {
        Ok(node) => match node.value {
            Value::Str(_) => Value::Str(resolved.text.clone()),
            other => other,
        },
        Err(_) => Value::Str(resolved.text.clone()),
    }
}

/// Finds the next reference to resolve: for each `}` in turn, the last `${`
/// before it, unless that one is escaped. Returns its byte range.
fn find_reference(s: &str) -> Option<(usize, usize)> {
    if !s.contains("${") {
        return None;
    }
    for (close, _) in s.match_indices('}') {
        let Some(open) = s[..close].rfind("${") else {
            continue;
        };
        let dollars_before = s[..open].bytes().rev().take_while(|b| *b == b'$').count();
        if dollars_before & 1 == 0 {
            return Some((open, close + 1));
        }
    }
    None
}

/// Whether the collector's confmap would stop expanding `s` here: it takes
/// the reference closed by the first `}` that has a `${` before it (since
/// the previous `}`), and when that reference is escaped it expands
/// nothing more of the value, where [`find_reference`] moves on to a later
/// one.
fn collector_stops_at_escape(s: &str) -> bool {
    let mut from = 0;
    while let Some(close) = s[from..].find('}').map(|i| from + i) {
        if let Some(open) = s[from..close].rfind("${").map(|i| from + i) {
            let dollars_before = s[..open].bytes().rev().take_while(|b| *b == b'$').count();
            return dollars_before & 1 == 1;
        }
        from = close + 1;
    }
    false
}

/// A URI scheme: a letter, then at least one letter, digit, `+`, `.`, `-`.
pub(crate) fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn set_lines(node: &mut Node, line: u64) {
    node.line = line;
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|i| set_lines(i, line)),
        Value::Map(entries) => entries.iter_mut().for_each(|e| {
            e.key_line = line;
            set_lines(&mut e.value, line);
        }),
        _ => {}
    }
}

fn unescape_node(node: &mut Node) {
    if let Some(text) = &mut node.expanded_text {
        *text = text.replace("$$", "$");
    }
    match &mut node.value {
        Value::Str(s) if s.contains("$$") => *s = s.replace("$$", "$"),
        Value::Seq(items) => items.iter_mut().for_each(unescape_node),
        Value::Map(entries) => entries.iter_mut().for_each(|e| unescape_node(&mut e.value)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Expands `yaml` and returns the resulting JSON and the expansion's
    /// warnings and errors.
    fn run(yaml: &str, env: &HashMap<String, String>) -> (Node, Expansion) {
        let mut root = parse(yaml).unwrap();
        let lookup = |k: &str| env.get(k).cloned();
        let result = expand_document(&mut root, &lookup);
        (root, result)
    }

    fn value_of(yaml: &str, env: &[(&str, &str)]) -> serde_json::Value {
        let (root, result) = run(yaml, &env_of(env));
        assert!(result.errors.is_empty(), "{:?}", result.errors);
        root.to_json()["v"].clone()
    }

    #[test]
    fn both_spellings_and_defaults() {
        let env = [("HOST", "tempo"), ("EMPTY", "")];
        assert_eq!(value_of("v: ${env:HOST}:4317", &env), "tempo:4317");
        assert_eq!(value_of("v: ${HOST}:4317", &env), "tempo:4317");
        assert_eq!(
            value_of("v: ${env:NOPE:-jaeger}:14250", &env),
            "jaeger:14250"
        );
        assert_eq!(value_of("v: ${env:HOST:-jaeger}", &env), "tempo");
        // A set-but-empty variable is used as it is, not replaced by the default.
        assert_eq!(value_of("v: x${env:EMPTY:-d}x", &env), "xx");
    }

    #[test]
    fn a_whole_reference_is_retyped_as_yaml() {
        let env = [
            ("PORT", "4317"),
            ("ON", "true"),
            ("LIST", "[a, b]"),
            ("QUOTED", "\"x\""),
            ("RATIO", "0.25"),
        ];
        assert_eq!(value_of("v: ${env:PORT}", &env), 4317);
        assert_eq!(value_of("v: ${env:ON}", &env), true);
        assert_eq!(
            value_of("v: ${env:LIST}", &env),
            serde_json::json!(["a", "b"])
        );
        assert_eq!(value_of("v: ${env:RATIO}", &env), 0.25);
        // A YAML string keeps its raw text, quotes included, as the collector does.
        assert_eq!(value_of("v: ${env:QUOTED}", &env), "\"x\"");
        // Embedded, it is always text.
        assert_eq!(value_of("v: port ${env:PORT}", &env), "port 4317");
        // The text survives beside the typed value.
        let (root, _) = run("v: ${env:PORT}", &env_of(&env));
        assert_eq!(
            root.get("v").unwrap().value.expanded_text.as_deref(),
            Some("4317")
        );
    }

    #[test]
    fn unset_variable_expands_to_nothing_with_a_warning() {
        let (root, result) = run("a:\n  v: ${env:MISSING}\n  w: x${MISSING}y\n", &env_of(&[]));
        assert!(result.errors.is_empty());
        let json = root.to_json();
        assert_eq!(json["a"]["v"], serde_json::Value::Null);
        assert_eq!(json["a"]["w"], "xy");
        let v = root.get("a").unwrap().value.get("v").unwrap();
        assert_eq!(v.value.expanded_text.as_deref(), Some(""));
        assert_eq!(result.warnings.len(), 2);
        assert_eq!(result.warnings[0].0.to_string(), "a::v");
        assert!(result.warnings[0].1.contains("MISSING is not set"));
        // An empty default is an empty string, not null.
        assert_eq!(value_of("v: ${env:MISSING:-}", &[]), "");
    }

    /// After an escaped reference the collector expands nothing more of
    /// the value; tracegate goes on, and says so.
    #[test]
    fn a_reference_after_an_escaped_one_warns() {
        let env = [("B", "b")];
        let (root, result) = run("v: $${A}-${env:B}\nw: ${env:B}-$${A}\n", &env_of(&env));
        let json = root.to_json();
        assert_eq!(json["v"], "${A}-b");
        assert_eq!(json["w"], "b-${A}");
        assert_eq!(result.warnings.len(), 1, "{:?}", result.warnings);
        assert_eq!(result.warnings[0].0.to_string(), "v");
        assert!(
            result.warnings[0]
                .1
                .starts_with("${env:B} is expanded after an escaped $${...}"),
            "{:?}",
            result.warnings
        );
        // A reference nested in an escaped one is expanded there too.
        let (_, result) = run("v: $${env:${env:B}}\n", &env_of(&env));
        assert!(result.warnings.is_empty(), "{:?}", result.warnings);
    }

    #[test]
    fn escapes_follow_the_collector() {
        // The collector's own escaping cases (confmap e2e testdata).
        let env = [("ENV_VALUE", "some expanded value")];
        let cases = [
            ("$$ENV_VALUE", "$ENV_VALUE"),
            ("$$$$ENV_VALUE", "$$ENV_VALUE"),
            ("$$${ENV_VALUE}", "$some expanded value"),
            ("some${ENV_VALUE}text", "somesome expanded valuetext"),
            ("some$${ENV_VALUE}text", "some${ENV_VALUE}text"),
            ("$${ONE}$${TWO}", "${ONE}${TWO}"),
            ("text$$", "text$"),
            ("$$", "$"),
            ("$${1}$${env:2}", "${1}${env:2}"),
            ("some$${env:ENV_VALUE}text", "some${env:ENV_VALUE}text"),
            ("$${env:${ENV_VALUE}}", "${env:some expanded value}"),
            ("$${env:$${ENV_VALUE}}", "${env:${ENV_VALUE}}"),
            (
                "env:MAP_VALUE_2}$${ENV_VALUE}{",
                "env:MAP_VALUE_2}${ENV_VALUE}{",
            ),
            ("$$${env:ENV_VALUE}", "$some expanded value"),
            ("$ENV_VALUE", "$ENV_VALUE"),
        ];
        for (input, want) in cases {
            let yaml = format!("v: '{input}'");
            assert_eq!(value_of(&yaml, &env), want, "input {input}");
        }
    }

    #[test]
    fn values_of_variables_are_expanded_and_unescaped() {
        let env = [
            ("ENV_VALUE", "some expanded value"),
            ("NESTED", "${env:ENV_VALUE} came from nested expansion"),
            ("ONE_DOLLAR", "here is 1 $$"),
            ("TWO_DOLLARS", "here are 2 $$$"),
            (
                "LIST",
                "['$$ESCAPE_ME','$${ESCAPE_ME}','$${env:ESCAPE_ME}']",
            ),
        ];
        assert_eq!(
            value_of("v: ${env:NESTED}", &env),
            "some expanded value came from nested expansion"
        );
        assert_eq!(value_of("v: ${env:ONE_DOLLAR}", &env), "here is 1 $");
        assert_eq!(value_of("v: ${env:TWO_DOLLARS}", &env), "here are 2 $$");
        assert_eq!(
            value_of("v: ${env:LIST}", &env),
            serde_json::json!(["$ESCAPE_ME", "${ESCAPE_ME}", "${env:ESCAPE_ME}"])
        );
    }

    #[test]
    fn later_references_after_an_escaped_one_are_expanded() {
        assert_eq!(value_of("v: $${A}${B}", &[("B", "b")]), "${A}b");
    }

    #[test]
    fn keys_are_never_expanded() {
        let (root, _) = run("${env:K}: ${env:K}", &env_of(&[("K", "v")]));
        assert_eq!(root.to_json(), serde_json::json!({"${env:K}": "v"}));
    }

    #[test]
    fn bad_references_are_errors_naming_the_path() {
        let cases = [
            ("${env:A B}", "has invalid name"),
            ("${1}", "has invalid name"),
            ("${s3:bucket/x}", "scheme \"s3\" is not supported"),
            (
                "${file:/nonexistent/tracegate/x}",
                "unable to read the file",
            ),
            ("${FOO:-bar}", "scheme \"FOO\" is not supported"),
            ("${a:b}", "invalid uri"),
            ("${env:A$B}", "unsupported characters"),
        ];
        for (input, want) in cases {
            let (_, result) = run(&format!("x:\n  v: '{input}'"), &env_of(&[]));
            assert_eq!(result.errors.len(), 1, "{input}");
            assert_eq!(result.errors[0].0.to_string(), "x::v");
            assert!(
                result.errors[0].1.contains(want),
                "{input}: {}",
                result.errors[0].1
            );
        }
    }

    #[test]
    fn self_reference_fails_instead_of_looping() {
        for value in ["${env:LOOP}", "x${env:LOOP}", "[${env:LOOP}]"] {
            let (_, result) = run("v: ${env:LOOP}", &env_of(&[("LOOP", value)]));
            assert_eq!(result.errors.len(), 1, "{value}");
            assert!(result.errors[0].1.contains("too many recursive expansions"));
        }
    }

    #[test]
    fn non_strings_and_unreferenced_text_are_untouched() {
        assert_eq!(
            value_of("v: [1, true, plain, '}{', '${']", &[]),
            serde_json::json!([1, true, "plain", "}{", "${"])
        );
    }
}
