//! Where a config comes from, as the collector's confmap resolver reads it:
//! every `--config` in order, then every `--set`, each retrieved by its URI
//! scheme, parsed as YAML and merged into one document, which is then
//! expanded (`${...}`) and loaded.
//!
//! - A `--config` without a scheme (no `:`, or a drive letter) is a file
//!   path; otherwise `file:PATH`, `env:VAR` (the variable holds YAML),
//!   `yaml:TEXT` (`yaml:processors::batch::timeout: 2s`), `http://...` or
//!   `https://...` (the body of a GET answered 200).
//! - `--set a.b.c=value` is `yaml:a::b::c: value`, applied after every
//!   `--config`: the key's dots become `::`, both sides are trimmed, the
//!   value is read as YAML.
//! - In every source a key holding `::` is a path: `a::b: 1` is `a: {b: 1}`.
//! - Merging: mappings merge key by key, at any depth; anything else
//!   (a list, a scalar, null) from a later source replaces the earlier one.
//!   With the feature gate `confmap.enableMergeAppendOption`, the lists at
//!   `service::extensions` and `service::**::receivers` / `::exporters`
//!   are joined instead (earlier items first, duplicates dropped), as in
//!   the collector.
//! - `--feature-gates` takes the collector's syntax (`a,-b,+c`). tracegate
//!   honours only `confmap.enableMergeAppendOption`; any other gate is
//!   accepted with a warning.

use std::time::Duration;

use super::tree::{self, Entry, Node, Value};
use super::{ConfigError, Loaded, Problem};

/// The schemes `${scheme:...}` references may use besides `env`.
pub(crate) const REFERENCE_SCHEMES: [&str; 4] = ["file", "yaml", "http", "https"];

/// The feature gate whose behaviour tracegate implements.
pub const MERGE_APPEND_GATE: &str = "confmap.enableMergeAppendOption";

/// How long fetching an `http(s)` config or reference may take, in all.
/// The collector has no limit; a hung server should not hang startup.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest `http(s)` body accepted.
const HTTP_MAX_BODY: usize = 16 << 20;

/// Redirects followed, as Go's HTTP client does.
const HTTP_MAX_REDIRECTS: usize = 10;

/// What the command line says about the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// `--config` values in order; empty means the embedded default.
    pub configs: Vec<String>,
    /// `--set key=value` values in order.
    pub sets: Vec<String>,
    /// `--feature-gates` values (each a comma-separated list).
    pub feature_gates: Vec<String>,
}

/// A resolved, merged and expanded document with its load result.
pub struct Resolved {
    /// The merged document after `${...}` expansion, for `print-config`.
    pub(crate) document: Node,
    /// Whether any reference failed to resolve (the document is then not
    /// what the collector would run).
    pub expansion_failed: bool,
    pub loaded: Result<Loaded, ConfigError>,
    /// The sources, named for messages.
    pub origin: String,
}

impl Resolved {
    /// The document for `print-config`; an error when a reference could not
    /// be resolved (the collector prints nothing then either).
    pub fn print(
        &self,
        mode: super::PrintMode,
        format: super::PrintFormat,
    ) -> Result<String, String> {
        if self.expansion_failed {
            return Err(match &self.loaded {
                Err(e) => e.to_string(),
                Ok(_) => format!("{}: a reference could not be resolved", self.origin),
            });
        }
        super::print::render(&self.document, mode, format)
    }
}

/// A parsed `--config` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    File(String),
    Env(String),
    Yaml(String),
    Http(String),
}

impl Location {
    /// Reads a `--config` value as the collector's resolver does.
    pub(crate) fn parse(uri: &str) -> Result<Location, String> {
        let drive_letter =
            uri.len() >= 2 && uri.as_bytes()[0].is_ascii_alphabetic() && uri.as_bytes()[1] == b':';
        if drive_letter || !uri.contains(':') {
            return Ok(Location::File(uri.to_string()));
        }
        let (scheme, opaque) = uri.split_once(':').unwrap_or_default();
        if !super::expand::is_scheme(scheme) {
            return Err(format!("invalid uri: {uri:?}"));
        }
        match scheme {
            "file" => Ok(Location::File(opaque.to_string())),
            "env" => Ok(Location::Env(opaque.to_string())),
            "yaml" => Ok(Location::Yaml(opaque.to_string())),
            "http" | "https" => Ok(Location::Http(uri.to_string())),
            _ => Err(format!(
                "unsupported scheme on URI {uri:?} (tracegate reads file, env, yaml, http and https)"
            )),
        }
    }

    /// How messages name the source: a file by its path, `--set` by the
    /// flag (its value may be a secret), others by their URI.
    fn name(&self) -> String {
        match self {
            Location::File(path) => path.clone(),
            Location::Env(var) => format!("env:{var}"),
            Location::Yaml(_) => "yaml:...".to_string(),
            Location::Http(uri) => uri.clone(),
        }
    }
}

/// `--set a.b=value` as the yaml URI the collector turns it into.
pub(crate) fn set_to_uri(set: &str) -> Result<String, String> {
    let Some((key, value)) = set.split_once('=') else {
        return Err(format!("--set {set:?}: missing equal sign"));
    };
    Ok(format!(
        "yaml:{}: {}",
        key.trim().replace('.', "::"),
        value.trim()
    ))
}

/// The feature gates asked for, and what tracegate makes of them.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Gates {
    pub merge_append: bool,
    pub warnings: Vec<String>,
}

/// Reads `--feature-gates` values: `id`, `+id` enable, `-id` disables.
/// An empty id is an error, as in the collector; a gate tracegate does not
/// have is a warning (the collector refuses gates it does not know, but
/// tracegate is given the collector's gates by charts and the Operator).
pub(crate) fn parse_gates(values: &[String]) -> Result<Gates, String> {
    let mut gates = Gates::default();
    for value in values {
        if value.is_empty() {
            continue;
        }
        for (i, id) in value.split(',').enumerate() {
            let (id, enabled) = match id.as_bytes().first() {
                None => {
                    return Err(format!(
                        "--feature-gates {value:?}: empty feature gate identifier at index {i}"
                    ))
                }
                Some(b'-') => (&id[1..], false),
                Some(b'+') => (&id[1..], true),
                Some(_) => (id, true),
            };
            if id == MERGE_APPEND_GATE {
                gates.merge_append = enabled;
            } else {
                gates.warnings.push(format!(
                    "feature gate {id:?} is not one tracegate has (it honours only {MERGE_APPEND_GATE}); ignored"
                ));
            }
        }
    }
    Ok(gates)
}

/// The text behind a `${scheme:...}` reference other than env.
pub(crate) fn retrieve_text(uri: &str) -> Result<String, String> {
    let (scheme, opaque) = uri.split_once(':').unwrap_or_default();
    match scheme {
        "file" => std::fs::read_to_string(opaque)
            .map_err(|e| format!("unable to read the file {uri}: {e}")),
        "yaml" => Ok(opaque.to_string()),
        "http" | "https" => fetch(uri, HTTP_TIMEOUT),
        _ => Err(format!(
            "scheme {scheme:?} is not supported for uri {uri:?}"
        )),
    }
}

/// Resolves `sources` (environment from the process) and loads the result.
pub fn load(sources: &Sources) -> Result<Loaded, ConfigError> {
    resolve(sources, &|name| std::env::var(name).ok()).loaded
}

/// Resolves, merges, expands and loads `sources`; `env` answers
/// environment lookups (`env:` sources and `${env:...}`).
pub fn resolve(sources: &Sources, env: &dyn Fn(&str) -> Option<String>) -> Resolved {
    match merge_sources(sources, env) {
        Ok((root, origin, warnings)) => {
            let document = super::load_document(root, &origin, env);
            let loaded = document.loaded.map(|mut loaded| {
                let mut all = warnings;
                all.append(&mut loaded.warnings);
                loaded.warnings = all;
                loaded
            });
            Resolved {
                document: document.expanded,
                expansion_failed: document.expansion_failed,
                loaded,
                origin,
            }
        }
        Err((e, origin)) => Resolved {
            document: Node::new(0, Value::Null),
            expansion_failed: true,
            loaded: Err(e),
            origin,
        },
    }
}

/// Retrieves every source and merges them in order; returns the document,
/// how messages name it, and warnings about the command line.
fn merge_sources(
    sources: &Sources,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Node, String, Vec<String>), (ConfigError, String)> {
    let cli_error = |message: String| {
        (
            ConfigError::Invalid {
                origin: "command line".into(),
                problems: vec![Problem {
                    path: String::new(),
                    line: None,
                    message,
                }],
            },
            "command line".to_string(),
        )
    };
    let gates = parse_gates(&sources.feature_gates).map_err(cli_error)?;
    let mut warnings = gates.warnings;

    let mut located: Vec<(Location, String)> = Vec::new();
    for uri in &sources.configs {
        let location = Location::parse(uri).map_err(cli_error)?;
        let name = location.name();
        located.push((location, name));
    }
    for set in &sources.sets {
        let uri = set_to_uri(set).map_err(cli_error)?;
        let location = Location::parse(&uri).map_err(cli_error)?;
        located.push((location, "--set".to_string()));
    }

    let origin = origin_of(&located, sources.configs.is_empty());
    let mut root = Node::new(0, Value::Map(Vec::new()));
    if sources.configs.is_empty() {
        root = parse_source(crate::DEFAULT_CONFIG, "embedded default config")
            .map_err(|e| (e, origin.clone()))?;
    }
    for (i, (location, name)) in located.iter().enumerate() {
        let text = match location {
            Location::File(path) => {
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })
            }
            Location::Env(opaque) => Ok(env_source(opaque, env, &mut warnings)),
            Location::Yaml(text) => Ok(text.clone()),
            Location::Http(uri) => fetch(uri, HTTP_TIMEOUT).map_err(|e| ConfigError::Read {
                path: uri.clone(),
                source: std::io::Error::other(e),
            }),
        }
        .map_err(|e| (e, origin.clone()))?;
        let mut node = parse_source(&text, name).map_err(|e| (e, origin.clone()))?;
        // Lines point into the first source only; the others' lines would
        // be read as lines of that one.
        let keeps_lines = i == 0 && !sources.configs.is_empty();
        if !keeps_lines {
            forget_lines(&mut node);
        }
        merge(&mut root, node, &mut Vec::new(), gates.merge_append);
    }
    Ok((root, origin, warnings))
}

/// `a.yaml`, or `a.yaml (merged with b.yaml, --set)`: line numbers in
/// messages refer to the first.
fn origin_of(located: &[(Location, String)], default: bool) -> String {
    let mut names: Vec<&str> = located.iter().map(|(_, n)| n.as_str()).collect();
    names.dedup();
    let first = if default {
        "embedded default config"
    } else if names.is_empty() {
        return "command line".into();
    } else {
        names.remove(0)
    };
    if names.is_empty() {
        first.to_string()
    } else {
        format!("{first} (merged with {})", names.join(", "))
    }
}

/// The YAML an `env:VAR[:-default]` source holds; an unset variable is an
/// empty document, with a warning.
fn env_source(
    opaque: &str,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> String {
    let (name, default) = match opaque.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (opaque, None),
    };
    match (env(name), default) {
        (Some(text), _) => text,
        (None, Some(default)) => default.to_string(),
        (None, None) => {
            warnings.push(format!(
                "--config env:{name}: environment variable {name} is not set; it holds no config"
            ));
            String::new()
        }
    }
}

/// Parses one source: a mapping (or nothing) with `::` keys split.
fn parse_source(text: &str, name: &str) -> Result<Node, ConfigError> {
    let mut node = tree::parse(text).map_err(|e| super::parse_error(name, e))?;
    match node.value {
        Value::Null => node.value = Value::Map(Vec::new()),
        Value::Map(_) => split_keys(&mut node),
        _ => {
            return Err(ConfigError::Invalid {
                origin: name.to_string(),
                problems: vec![Problem {
                    path: String::new(),
                    line: None,
                    message: format!(
                        "retrieved value is {}, not a mapping, so it cannot be used as a config",
                        node.kind_name()
                    ),
                }],
            })
        }
    }
    Ok(node)
}

/// Turns `a::b: v` into `a: {b: v}` in every mapping outside lists, merging
/// with siblings (`a::b: 1` beside `a: {c: 2}` is `a: {b: 1, c: 2}`), as
/// the collector's key delimiter does.
pub(crate) fn split_keys(node: &mut Node) {
    let Value::Map(entries) = &mut node.value else {
        return;
    };
    if entries.iter().any(|e| e.key.contains("::")) {
        let mut rebuilt = Node::new(node.line, Value::Map(Vec::new()));
        for entry in std::mem::take(entries) {
            let parts: Vec<&str> = entry.key.split("::").collect();
            let mut value = entry.value;
            for part in parts[1..].iter().rev() {
                value = Node::new(
                    value.line,
                    Value::Map(vec![Entry {
                        key: part.to_string(),
                        key_line: entry.key_line,
                        value,
                    }]),
                );
            }
            let single = Node::new(
                node.line,
                Value::Map(vec![Entry {
                    key: parts[0].to_string(),
                    key_line: entry.key_line,
                    value,
                }]),
            );
            merge(&mut rebuilt, single, &mut Vec::new(), false);
        }
        node.value = rebuilt.value;
    }
    if let Value::Map(entries) = &mut node.value {
        for entry in entries {
            split_keys(&mut entry.value);
        }
    }
}

/// Merges `overlay` into `base` (at `path`): mappings key by key, anything
/// else replaced. With `append`, the component lists the collector's
/// merge-append option names are joined instead.
pub(crate) fn merge(base: &mut Node, overlay: Node, path: &mut Vec<String>, append: bool) {
    match (&mut base.value, overlay.value) {
        (Value::Map(entries), Value::Map(incoming)) => {
            for entry in incoming {
                match entries.iter_mut().find(|e| e.key == entry.key) {
                    Some(existing) => {
                        path.push(entry.key);
                        merge(&mut existing.value, entry.value, path, append);
                        path.pop();
                    }
                    None => entries.push(entry),
                }
            }
        }
        (Value::Seq(items), Value::Seq(incoming)) if append && is_appended_list(path) => {
            for item in incoming {
                if !items.iter().any(|i| i.to_json() == item.to_json()) {
                    items.push(item);
                }
            }
        }
        (_, value) => {
            *base = Node {
                line: overlay.line,
                value,
                expanded_text: overlay.expanded_text,
            }
        }
    }
}

/// `service::extensions`, `service::**::receivers`, `service::**::exporters`.
fn is_appended_list(path: &[String]) -> bool {
    match path {
        [service, extensions] => service == "service" && extensions == "extensions",
        [service, .., last] if path.len() >= 3 => {
            service == "service" && (last == "receivers" || last == "exporters")
        }
        _ => false,
    }
}

fn forget_lines(node: &mut Node) {
    node.line = 0;
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(forget_lines),
        Value::Map(entries) => entries.iter_mut().for_each(|e| {
            e.key_line = 0;
            forget_lines(&mut e.value);
        }),
        _ => {}
    }
}

/// GETs `uri` (following redirects) and returns the body of a 200 answer
/// as text, all within `timeout`. Runs on its own thread and runtime, so it
/// works from inside an async context and out of one.
pub(crate) fn fetch(uri: &str, timeout: Duration) -> Result<String, String> {
    let uri = uri.to_string();
    let worker = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime to fetch {uri:?}: {e}"))?;
        runtime.block_on(async {
            match tokio::time::timeout(timeout, fetch_async(&uri)).await {
                Ok(result) => result,
                Err(_) => Err(format!(
                    "unable to download {uri:?}: no answer within {timeout:?}"
                )),
            }
        })
    });
    worker
        .join()
        .unwrap_or_else(|_| Err("the config fetch thread failed".into()))
}

async fn fetch_async(uri: &str) -> Result<String, String> {
    use http_body_util::{BodyExt, Empty, Limited};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let tls = tracegate_pipeline::tls::TlsClientConfig::default()
        .load(&[])
        .map_err(|e| format!("unable to configure TLS for {uri:?}: {e}"))?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);

    let mut current: http::Uri = uri
        .parse()
        .map_err(|e| format!("invalid uri {uri:?}: {e}"))?;
    for _ in 0..=HTTP_MAX_REDIRECTS {
        if !matches!(current.scheme_str(), Some("http" | "https")) || current.host().is_none() {
            return Err(format!("invalid uri {:?}", current.to_string()));
        }
        let response = client.get(current.clone()).await.map_err(|e| {
            format!(
                "unable to download the file via HTTP GET for uri {uri:?}: {}",
                error_chain(&e)
            )
        })?;
        let status = response.status();
        if status.is_redirection() {
            if let Some(location) = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
            {
                current = redirect_target(&current, location)?;
                continue;
            }
        }
        if status != http::StatusCode::OK {
            return Err(format!(
                "failed to load resource from uri {uri:?}. status code: {}",
                status.as_u16()
            ));
        }
        let body = Limited::new(response.into_body(), HTTP_MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("fail to read the response body from uri {uri:?}: {e}"))?
            .to_bytes();
        return String::from_utf8(body.to_vec())
            .map_err(|_| format!("the body from uri {uri:?} is not UTF-8 text"));
    }
    Err(format!("too many redirects fetching {uri:?}"))
}

/// Where a `Location` header points, relative to `from`.
fn redirect_target(from: &http::Uri, location: &str) -> Result<http::Uri, String> {
    let target: http::Uri = location
        .parse()
        .map_err(|e| format!("invalid redirect {location:?}: {e}"))?;
    if target.scheme().is_some() {
        return Ok(target);
    }
    let mut parts = from.clone().into_parts();
    parts.path_and_query = target.path_and_query().cloned();
    http::Uri::from_parts(parts).map_err(|e| format!("invalid redirect {location:?}: {e}"))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests;
