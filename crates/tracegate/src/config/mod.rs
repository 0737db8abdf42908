//! Loading and validating the config: the OpenTelemetry Collector's YAML
//! shape (docs/architecture.md, "Configuration is the collector's YAML").
//! The file is parsed into a tree that keeps lines, `${env:...}` references
//! are expanded, every component is parsed into its typed config and
//! validated, and the traces pipelines are checked. Everything found wrong
//! is reported at once, each problem with the key's path and line; valid
//! but surprising settings become warnings.
//!
//! What comes out holds only what the traces pipelines use: metrics and
//! logs pipelines are reported and skipped, and components used by nothing
//! else are not built.

mod catalog;
mod components;
mod configmap;
mod expand;
mod id;
mod print;
mod sources;
mod telemetry;
mod tree;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path as FsPath;

use serde::Deserialize;
use tracegate_pipeline::config::{from_value, nearest, ComponentError};
use tracegate_pipeline::exporter::ExporterConfig;
pub use tracegate_pipeline::extension::ExtensionConfig;
#[cfg(test)]
use tracegate_pipeline::health::HealthCheckConfig;
use tracegate_pipeline::processor::{Answer, ProcessorConfig};
use tracegate_pipeline::receiver::ReceiverConfig;

use catalog::{Known, Section};
pub use components::render as components_yaml;
pub use configmap::ConfigMapRef;
pub use id::ComponentId;
use id::{PipelineId, Signal};
pub use print::{Format as PrintFormat, Mode as PrintMode};
pub use sources::{load as load_sources, resolve as resolve_sources, Resolved, Sources};
use telemetry::{
    LogEncoding, MetricsLevel, PrometheusExporterSpec, TelemetrySpec, DEFAULT_METRICS_ADDRESS,
    DEFAULT_NAMESPACE,
};
pub use telemetry::{LogFormat, LogOutput, Telemetry};
use tree::{Node, Path, Value};

/// A loaded config and what was surprising about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub config: Config,
    /// Valid but surprising settings, each `path: message (line N)`.
    pub warnings: Vec<String>,
}

/// What the traces pipelines need, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Receivers used by a traces pipeline.
    pub receivers: BTreeMap<ComponentId, ReceiverConfig>,
    /// Processors used by a traces pipeline.
    pub processors: BTreeMap<ComponentId, ProcessorConfig>,
    /// Exporters used by a traces pipeline.
    pub exporters: BTreeMap<ComponentId, ExporterConfig>,
    /// Extensions listed in `service::extensions`.
    pub extensions: BTreeMap<ComponentId, ExtensionConfig>,
    pub service: Service,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Extensions to start, in the listed order.
    pub extensions: Vec<ComponentId>,
    /// The traces pipelines, in the file's order.
    pub pipelines: Vec<TracesPipeline>,
    pub telemetry: Telemetry,
}

/// One `traces[/name]` pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracesPipeline {
    /// `traces` or `traces/name`.
    pub id: String,
    pub receivers: Vec<ComponentId>,
    /// In pipeline order, first stage first.
    pub processors: Vec<ComponentId>,
    pub exporters: Vec<ComponentId>,
}

/// One thing wrong (or surprising) in a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: `receivers::otlp::protocols::grpc`; empty for the whole file.
    pub path: String,
    /// The line of that key in the file, when known.
    pub line: Option<u64>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

/// Why a config cannot be used. The Display is the whole message for the
/// user.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: not valid YAML: {message}")]
    Yaml { origin: String, message: String },
    /// Valid YAML, but several documents: most likely a Kubernetes manifest
    /// given where the collector config itself belongs.
    #[error(
        "{origin}: holds several YAML documents (the second starts at line {line}), \
         but a collector config is one document. If this is a Kubernetes manifest, \
         run tracegate with the config from its ConfigMap, or check that config \
         with `tracegate validate --config {origin} --from-configmap NAME[:KEY]`"
    )]
    SeveralDocuments { origin: String, line: u64 },
    /// `--from-configmap` named a config the manifest does not hold.
    #[error("{origin}: {message}")]
    Manifest { origin: String, message: String },
    #[error("{}", render_problems(origin, problems))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The problems found in a config that parsed as YAML; empty otherwise.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

fn render_problems(origin: &str, problems: &[Problem]) -> String {
    match problems {
        [one] => format!("{origin}: {one}"),
        many => {
            let mut s = format!("{origin}: {} errors:", many.len());
            for p in many {
                s.push_str("\n  ");
                s.push_str(&p.to_string());
            }
            s
        }
    }
}

/// Loads a config file; `${env:...}` references read the process
/// environment.
pub fn load_file(path: &FsPath) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    load_str(&text, &path.display().to_string(), &|name| {
        std::env::var(name).ok()
    })
}

/// Loads the collector config held in a ConfigMap of the Kubernetes
/// manifest at `path` (see [`ConfigMapRef`]); `${env:...}` references read
/// the process environment. Messages name the file, the ConfigMap and the
/// key, and count lines as the manifest does when the config is written
/// as a literal block (`key: |`).
pub fn load_configmap_file(path: &FsPath, which: &ConfigMapRef) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    load_configmap_str(&text, &path.display().to_string(), which, &|name| {
        std::env::var(name).ok()
    })
}

/// [`load_configmap_file`] for a manifest's text, named `origin`.
pub fn load_configmap_str(
    manifest: &str,
    origin: &str,
    which: &ConfigMapRef,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let extracted =
        configmap::extract(manifest, which).map_err(|message| ConfigError::Manifest {
            origin: origin.to_string(),
            message,
        })?;
    let origin = format!("{origin} (ConfigMap {}, key {})", which.name, extracted.key);
    load_str(&extracted.text, &origin, env)
}

/// Loads a config from text. `origin` names it in messages; `env` resolves
/// environment references.
pub fn load_str(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let root = tree::parse(text).map_err(|e| parse_error(origin, e))?;
    load_document(root, origin, env).loaded
}

/// A parse failure as users read it.
pub(crate) fn parse_error(origin: &str, e: tree::ParseError) -> ConfigError {
    match e {
        tree::ParseError::SeveralDocuments { line } => ConfigError::SeveralDocuments {
            origin: origin.to_string(),
            line,
        },
        tree::ParseError::Invalid(message) => ConfigError::Yaml {
            origin: origin.to_string(),
            // The parser's message is written for programmers using it.
            message: message
                .trim_start_matches("error: ")
                .replace(", set DuplicateKeyPolicy in Options if acceptable", "")
                .replace("<input>", origin),
        },
    }
}

/// A document expanded and loaded.
pub(crate) struct Document {
    /// The document after `${...}` expansion.
    pub expanded: Node,
    pub expansion_failed: bool,
    pub loaded: Result<Loaded, ConfigError>,
}

/// Expands `${...}` references in a parsed (possibly merged) document and
/// loads it.
pub(crate) fn load_document(
    mut root: Node,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Document {
    let expansion = expand::expand_document(&mut root, env);
    let expanded = root.clone();
    let expansion_failed = !expansion.errors.is_empty();
    let mut loader = Loader {
        root,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    for (path, message) in expansion.errors {
        loader.error(&path, message);
    }
    for (path, message) in expansion.warnings {
        loader.warn(&path, message);
    }
    let config = loader.load();
    let mut problems = loader.problems;
    problems.sort_by_key(|p| p.line.unwrap_or(u64::MAX));
    let loaded = match config {
        Some(config) if problems.is_empty() => {
            let mut warnings = loader.warnings;
            warnings.sort_by_key(|p| p.line.unwrap_or(u64::MAX));
            let mut seen = BTreeSet::new();
            warnings.retain(|w| seen.insert(w.to_string()));
            Ok(Loaded {
                config,
                warnings: warnings.iter().map(ToString::to_string).collect(),
            })
        }
        _ => Err(ConfigError::Invalid {
            origin: origin.to_string(),
            problems,
        }),
    };
    Document {
        expanded,
        expansion_failed,
        loaded,
    }
}

const TOP_LEVEL_KEYS: [&str; 6] = [
    "receivers",
    "processors",
    "exporters",
    "connectors",
    "extensions",
    "service",
];
const SERVICE_KEYS: [&str; 3] = ["extensions", "pipelines", "telemetry"];

/// A component defined in one of the sections.
struct Defined {
    id: ComponentId,
    path: Path,
    known: Known,
    /// The typed config, when the type is implemented and its config valid.
    parsed: Option<Parsed>,
}

enum Parsed {
    Receiver(ReceiverConfig),
    Processor(ProcessorConfig),
    Exporter(ExporterConfig),
    Extension(ExtensionConfig),
    Prometheus(PrometheusExporterSpec),
}

/// Which pipelines use a component.
#[derive(Default)]
struct Usage {
    traces: Vec<String>,
    skipped: Vec<String>,
}

/// `service: pipelines: <id>:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineSpec {
    /// Receiver ids feeding the pipeline; at least one.
    #[serde(default)]
    receivers: Option<Vec<String>>,
    /// Processor ids, in order.
    #[serde(default)]
    processors: Option<Vec<String>>,
    /// Exporter ids the pipeline fans out to; at least one.
    #[serde(default)]
    exporters: Option<Vec<String>>,
}

struct Loader {
    root: Node,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Loader {
    fn problem(&self, path: &Path, message: String) -> Problem {
        Problem {
            path: path.to_string(),
            line: self.line_of(path),
            message,
        }
    }

    fn error(&mut self, path: &Path, message: impl Into<String>) {
        let p = self.problem(path, message.into());
        self.problems.push(p);
    }

    fn warn(&mut self, path: &Path, message: impl Into<String>) {
        let p = self.problem(path, message.into());
        self.warnings.push(p);
    }

    /// The line of the deepest key of `path` the file holds; `None` when
    /// not even its first key is there (pointing at line 1 would mislead).
    fn line_of(&self, path: &Path) -> Option<u64> {
        let mut prefix = path.clone();
        while !prefix.0.is_empty() {
            if let Some((_, line)) = self.root.lookup(&prefix) {
                return (line > 0).then_some(line);
            }
            prefix.0.pop();
        }
        None
    }

    fn node(&self, path: &Path) -> Option<&Node> {
        self.root.lookup(path).map(|(n, _)| n)
    }

    /// The keys of the mapping at `path`, or an error if it is something
    /// else. Null (a key with nothing after it) is an empty mapping.
    fn mapping_keys(&mut self, path: &Path) -> Vec<String> {
        match self.node(path).map(|n| (&n.value, n.kind_name())) {
            None | Some((Value::Null, _)) => Vec::new(),
            Some((Value::Map(entries), _)) => entries.iter().map(|e| e.key.clone()).collect(),
            Some((_, found)) => {
                self.error(path, format!("expected a mapping, found {found}"));
                Vec::new()
            }
        }
    }

    /// Rejects keys not in `allowed`, suggesting the nearest.
    fn check_keys(&mut self, path: &Path, allowed: &[&str]) {
        for key in self.mapping_keys(path) {
            if allowed.contains(&key.as_str()) {
                continue;
            }
            let message = match nearest(&key, allowed.iter().copied()) {
                Some(s) => format!("unknown field {key:?}, did you mean {s:?}?"),
                None => format!(
                    "unknown field {key:?}, expected one of {}",
                    allowed
                        .iter()
                        .map(|a| format!("{a:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let p = Problem {
                path: path.to_string(),
                line: self.line_of(&path.key(&key)),
                message,
            };
            self.problems.push(p);
        }
    }

    /// Deserializes the node at `path` with `parse`. A value that came from
    /// one whole `${...}` reference and was re-typed (a number) is retried
    /// as its text when the field wants a string, as the collector does.
    fn parse_typed<T>(
        &mut self,
        path: &Path,
        parse: impl Fn(serde_json::Value) -> Result<T, ComponentError>,
    ) -> Option<T> {
        let mut node = self
            .node(path)
            .cloned()
            .unwrap_or(Node::new(0, Value::Null));
        loop {
            match parse(node.to_json()) {
                Ok(v) => return Some(v),
                Err(e) => {
                    let relative = node.resolve_dotted(&e.path);
                    if !e.message.starts_with("unknown field") {
                        if let Some(n) = node.lookup_mut(&relative) {
                            if let Some(text) = n.expanded_text.take() {
                                n.value = Value::Str(text);
                                continue;
                            }
                        }
                    }
                    self.component_error(path, &node, &relative, e.message);
                    return None;
                }
            }
        }
    }

    /// Reports an error found inside the component at `base`.
    fn component_error(&mut self, base: &Path, node: &Node, relative: &Path, message: String) {
        let path = base.join(relative);
        // An unknown key's own line beats its mapping's.
        let unknown_key_line = node
            .lookup(relative)
            .and_then(|(n, _)| n.entries())
            .and_then(|entries| {
                entries
                    .iter()
                    .find(|e| message.starts_with(&format!("unknown field {:?}", e.key)))
            })
            .map(|e| e.key_line)
            .filter(|line| *line > 0);
        let p = Problem {
            path: path.to_string(),
            line: unknown_key_line.or_else(|| self.line_of(&path)),
            message,
        };
        self.problems.push(p);
    }

    fn load(&mut self) -> Option<Config> {
        let root = Path::root();
        if !matches!(self.root.value, Value::Map(_) | Value::Null) {
            let found = self.root.kind_name();
            self.error(
                &root,
                format!("expected a mapping of receivers, processors, exporters, extensions and service, found {found}"),
            );
            return None;
        }
        self.check_keys(&root, &TOP_LEVEL_KEYS);

        let mut defined: BTreeMap<Section, Vec<Defined>> = BTreeMap::new();
        for section in Section::ALL {
            let components = self.load_section(section);
            defined.insert(section, components);
        }
        self.reject_connectors();

        let service = root.key("service");
        self.check_keys(&service, &SERVICE_KEYS);
        let mut usage: BTreeMap<(Section, ComponentId), Usage> = BTreeMap::new();
        let pipelines = self.load_pipelines(&service, &defined, &mut usage);
        let extensions = self.load_service_extensions(&service, &defined, &mut usage);
        self.report_unused(&defined, &usage);
        let telemetry = self.load_telemetry(&service, &defined);

        let mut config = Config {
            receivers: BTreeMap::new(),
            processors: BTreeMap::new(),
            exporters: BTreeMap::new(),
            extensions: BTreeMap::new(),
            service: Service {
                extensions,
                pipelines,
                telemetry,
            },
        };
        let mut exporter_paths = Vec::new();
        let mut receiver_paths = Vec::new();
        let mut processor_paths = Vec::new();
        let mut extension_paths = Vec::new();
        for (section, components) in defined {
            for d in components {
                let used = usage
                    .get(&(section, d.id.clone()))
                    .is_some_and(|u| !u.traces.is_empty());
                let listed = config.service.extensions.contains(&d.id);
                match d.parsed {
                    Some(Parsed::Receiver(c)) if used => {
                        receiver_paths.push((d.id.clone(), d.path.clone()));
                        config.receivers.insert(d.id, c);
                    }
                    Some(Parsed::Processor(c)) if used => {
                        processor_paths.push((d.id.clone(), d.path.clone()));
                        config.processors.insert(d.id, c);
                    }
                    Some(Parsed::Exporter(c)) if used => {
                        exporter_paths.push((d.id.clone(), d.path.clone()));
                        config.exporters.insert(d.id, c);
                    }
                    Some(Parsed::Extension(c)) if listed => {
                        extension_paths.push((d.id.clone(), d.path.clone()));
                        config.extensions.insert(d.id, c);
                    }
                    _ => {}
                }
            }
        }
        self.warn_retry_delays(&config);
        for (id, path) in &receiver_paths {
            for (key, authenticator) in config.receivers[id].authenticators() {
                let at = key.split('.').fold(path.clone(), |p, k| p.key(k));
                self.check_authenticator(&config, authenticator, &at, true);
            }
        }
        for (id, path) in &extension_paths {
            if let ExtensionConfig::RemoteSampling(c) = &config.extensions[id] {
                for (key, authenticator) in c.authenticators() {
                    let at = key.split('.').fold(path.clone(), |p, k| p.key(k));
                    self.check_authenticator(&config, authenticator, &at, true);
                }
            }
        }
        for (id, path) in exporter_paths {
            self.check_queue_storage(&config, &id, &path);
            if let Some((key, authenticator)) = config.exporters[&id].authenticator() {
                let at = key.split('.').fold(path.clone(), |p, k| p.key(k));
                self.check_authenticator(&config, authenticator, &at, false);
            }
        }
        for (id, path) in processor_paths {
            self.check_tail_storage(&config, &id, &path);
        }
        Some(config)
    }

    /// `tail_sampling: tail_storage:` names a storage extension that is
    /// defined, listed in `service::extensions` and of a type that can hold
    /// the journal: `pebble_tail_storage` or `file_storage`.
    fn check_tail_storage(&mut self, config: &Config, id: &ComponentId, path: &Path) {
        let ProcessorConfig::TailSampling(tail) = &config.processors[id] else {
            return;
        };
        let Some(storage) = tail.tail_storage.as_deref() else {
            return;
        };
        let problem = self.storage_problem(
            config,
            storage,
            "a pebble_tail_storage or file_storage extension",
            |e| {
                matches!(
                    e,
                    ExtensionConfig::PebbleTailStorage(_) | ExtensionConfig::FileStorage(_)
                )
            },
        );
        if let Some(message) = problem {
            self.error(&path.key("tail_storage"), message);
        }
    }

    /// Where a refusal reaches a receiver that answers it with a retry
    /// delay the collector does not send, says so: a pipeline whose
    /// `memory_limiter` refuses, or without a stage that holds data (so
    /// full exporter queues refuse), before any `batch` or `tail_sampling`.
    fn warn_retry_delays(&mut self, config: &Config) {
        for pipeline in &config.service.pipelines {
            let mut refusal = None;
            let mut held = false;
            for id in &pipeline.processors {
                match config.processors.get(id).map(ProcessorConfig::answer) {
                    Some(Answer::MayRefuse) => {
                        refusal = Some(format!("its {id} refuses data"));
                        break;
                    }
                    Some(Answer::Holds) => {
                        held = true;
                        break;
                    }
                    Some(Answer::PassesOn) | None => {}
                }
            }
            if refusal.is_none() && !held {
                refusal = Some("every exporter's queue is full".to_string());
            }
            let Some(refusal) = refusal else { continue };
            for id in &pipeline.receivers {
                if config
                    .receivers
                    .get(id)
                    .is_some_and(ReceiverConfig::sends_retry_delay)
                {
                    self.warn(
                        &Path::root().key("receivers").key(&id.to_string()),
                        format!(
                            "when pipeline {} refuses spans ({refusal}), tracegate's answer asks \
                             the client to retry later (gRPC RetryInfo, HTTP Retry-After: 5 s \
                             unless the refusal names its own delay); the collector sends no \
                             delay, so clients that honour it wait longer here",
                            pipeline.id
                        ),
                    );
                }
            }
        }
    }

    /// An `auth: authenticator:` names an authenticator extension that is
    /// defined, listed in `service::extensions` and, as the collector
    /// resolves it, a server authenticator under a receiver (`server`) or
    /// a client one under an exporter.
    fn check_authenticator(&mut self, config: &Config, name: &str, at: &Path, server: bool) {
        let problem = match ComponentId::parse(name) {
            Err(e) => Some(e),
            Ok(id) => match config
                .extensions
                .get(&id)
                .map(ExtensionConfig::authenticates)
            {
                Some(Some((servers, clients))) => match (server, servers, clients) {
                    (true, false, _) => Some(format!(
                        "{name:?} is not a server authenticator (a basicauth extension \
                         authenticates receivers with htpasswd)"
                    )),
                    (false, _, false) => Some(format!(
                        "{name:?} is not a client authenticator (a basicauth extension \
                         authenticates exporters with client_auth)"
                    )),
                    _ => None,
                },
                Some(None) => Some(format!(
                    "{name:?} is not an authenticator; use a bearertokenauth or basicauth \
                     extension"
                )),
                None if self
                    .node(&Path::root().key("extensions").key(name))
                    .is_some() =>
                {
                    Some(format!(
                        "authenticator {name:?} is not listed in service::extensions, so it \
                         would not be started"
                    ))
                }
                None => Some(format!(
                    "authenticator {name:?} is not defined in extensions (define a \
                     bearertokenauth or basicauth extension and list it in \
                     service::extensions)"
                )),
            },
        };
        if let Some(message) = problem {
            self.error(at, message);
        }
    }

    /// A persistent sending queue names a storage extension that is
    /// defined, listed in `service::extensions` (extensions start before
    /// pipelines) and of a storage type.
    fn check_queue_storage(&mut self, config: &Config, id: &ComponentId, path: &Path) {
        let queue = config.exporters[id].sending_queue();
        let Some(storage) = queue.storage.as_deref().filter(|_| queue.enabled) else {
            return;
        };
        let at = path.key("sending_queue").key("storage");
        let problem = self.storage_problem(config, storage, "a file_storage extension", |e| {
            matches!(e, ExtensionConfig::FileStorage(_))
        });
        if let Some(message) = problem {
            self.error(&at, message);
        }
    }

    /// What is wrong with `storage` as the id of a storage extension of
    /// the types `accepts` takes (`kinds` names them for the message).
    fn storage_problem(
        &self,
        config: &Config,
        storage: &str,
        kinds: &str,
        accepts: fn(&ExtensionConfig) -> bool,
    ) -> Option<String> {
        match ComponentId::parse(storage) {
            Err(e) => Some(e),
            Ok(storage_id) => match config.extensions.get(&storage_id) {
                Some(extension) if accepts(extension) => None,
                Some(_) => Some(format!(
                    "{storage:?} is not a storage extension; use {kinds}"
                )),
                None if self
                    .node(&Path::root().key("extensions").key(storage))
                    .is_some() =>
                {
                    Some(format!(
                        "storage extension {storage:?} is not listed in service::extensions, so \
                         it would not be started"
                    ))
                }
                None => Some(format!(
                    "storage extension {storage:?} is not defined in extensions (define {kinds} \
                     and list it in service::extensions)"
                )),
            },
        }
    }

    /// Parses every component of a section, used or not, so a config error
    /// anywhere is found.
    fn load_section(&mut self, section: Section) -> Vec<Defined> {
        let section_path = Path::root().key(section.key());
        let mut components: Vec<Defined> = Vec::new();
        for key in self.mapping_keys(&section_path) {
            let path = section_path.key(&key);
            let id = match ComponentId::parse(&key) {
                Ok(id) => id,
                Err(e) => {
                    self.error(&path, e);
                    continue;
                }
            };
            if components.iter().any(|d| d.id == id) {
                self.error(&path, format!("duplicate {} id {id}", section.singular()));
                continue;
            }
            let known = catalog::lookup(section, &id.kind);
            let parsed = match known {
                Known::Implemented => self.parse_component(section, &id, &path),
                Known::SelfTelemetry => self
                    .parse_typed(&path, from_value::<PrometheusExporterSpec>)
                    .and_then(|spec| self.check_prometheus(&path, spec)),
                Known::NotBuilt => None,
                Known::Unknown => {
                    let kinds = catalog::all_kinds(section);
                    let hint = match nearest(&id.kind, kinds.iter().copied()) {
                        Some(s) => format!(", did you mean {s:?}?"),
                        None if section.implemented().is_empty() => String::new(),
                        None => format!(
                            "; tracegate implements {}",
                            section.implemented().join(", ")
                        ),
                    };
                    self.error(
                        &path,
                        format!("unknown {} type {:?}{hint}", section.singular(), id.kind),
                    );
                    None
                }
            };
            components.push(Defined {
                id,
                path,
                known,
                parsed,
            });
        }
        components
    }

    fn parse_component(
        &mut self,
        section: Section,
        id: &ComponentId,
        path: &Path,
    ) -> Option<Parsed> {
        let kind = id.kind.as_str();
        let (parsed, validation) = match section {
            Section::Receivers => self.parse_kind(
                path,
                kind,
                ReceiverConfig::from_value,
                ReceiverConfig::validate,
                Parsed::Receiver,
            )?,
            Section::Processors => self.parse_kind(
                path,
                kind,
                ProcessorConfig::from_value,
                ProcessorConfig::validate,
                Parsed::Processor,
            )?,
            Section::Exporters => self.parse_kind(
                path,
                kind,
                ExporterConfig::from_value,
                ExporterConfig::validate,
                Parsed::Exporter,
            )?,
            Section::Extensions => self.parse_kind(
                path,
                kind,
                ExtensionConfig::from_value,
                ExtensionConfig::validate,
                Parsed::Extension,
            )?,
        };
        match validation {
            Ok(warnings) => {
                for w in warnings {
                    self.warn(path, w);
                }
                Some(parsed)
            }
            Err(e) => {
                let node = self
                    .node(path)
                    .cloned()
                    .unwrap_or(Node::new(0, Value::Null));
                let relative = node.resolve_dotted(&e.path);
                self.component_error(path, &node, &relative, e.message);
                None
            }
        }
    }

    /// Parses a component of a type its kind's registry builds, and
    /// validates it.
    #[allow(clippy::type_complexity)]
    fn parse_kind<C>(
        &mut self,
        path: &Path,
        kind: &str,
        from_value: fn(&str, serde_json::Value) -> Option<Result<C, ComponentError>>,
        validate: fn(&C) -> Result<Vec<String>, ComponentError>,
        parsed: fn(C) -> Parsed,
    ) -> Option<(Parsed, Result<Vec<String>, ComponentError>)> {
        // The catalogue found `kind` among the registry's types, so the
        // registry parses it; `None` would be a bug, reported as such.
        let missing = || ComponentError {
            path: String::new(),
            message: format!("{kind} is listed as implemented but has no config parser"),
        };
        let c = self.parse_typed(path, |v| {
            from_value(kind, v).unwrap_or_else(|| Err(missing()))
        })?;
        let validation = validate(&c);
        Some((parsed(c), validation))
    }

    fn check_prometheus(&mut self, path: &Path, spec: PrometheusExporterSpec) -> Option<Parsed> {
        if let Some(ns) = &spec.namespace {
            if !ns.is_empty() && !telemetry::is_metric_namespace(ns) {
                self.error(
                    &path.key("namespace"),
                    format!("{ns:?} is not a valid metric name prefix (letters, digits and _, not starting with a digit)"),
                );
                return None;
            }
        }
        let ignored = spec.ignored_keys();
        if !ignored.is_empty() {
            self.warn(
                path,
                format!(
                    "{} accepted but ignored: tracegate serves only its own metrics here",
                    ignored.join(", ")
                ),
            );
        }
        Some(Parsed::Prometheus(spec))
    }

    fn reject_connectors(&mut self) {
        let path = Path::root().key("connectors");
        for key in self.mapping_keys(&path) {
            self.error(
                &path.key(&key),
                "connectors are not implemented yet: join pipelines by exporting to a receiver instead",
            );
        }
    }

    fn load_pipelines(
        &mut self,
        service: &Path,
        defined: &BTreeMap<Section, Vec<Defined>>,
        usage: &mut BTreeMap<(Section, ComponentId), Usage>,
    ) -> Vec<TracesPipeline> {
        let pipelines_path = service.key("pipelines");
        let mut traces = Vec::new();
        let mut seen = BTreeSet::new();
        let mut bad_ids = false;
        // Components tracegate does not build are reported once, however many
        // pipelines use them.
        let mut reported = BTreeSet::new();
        for key in self.mapping_keys(&pipelines_path) {
            let path = pipelines_path.key(&key);
            let id = match PipelineId::parse(&key) {
                Ok(id) => id,
                Err(e) => {
                    self.error(&path, e);
                    bad_ids = true;
                    continue;
                }
            };
            if !seen.insert(id.clone()) {
                self.error(&path, format!("duplicate pipeline id {id}"));
                continue;
            }
            let Some(spec) = self.parse_typed(&path, from_value::<PipelineSpec>) else {
                continue;
            };
            let is_traces = id.signal == Signal::Traces;
            let mut lists = [
                (Section::Receivers, "receivers", spec.receivers, Vec::new()),
                (
                    Section::Processors,
                    "processors",
                    spec.processors,
                    Vec::new(),
                ),
                (Section::Exporters, "exporters", spec.exporters, Vec::new()),
            ];
            for (section, list_key, written, resolved) in lists.iter_mut() {
                let list_path = path.key(list_key);
                for (i, raw) in written.take().unwrap_or_default().iter().enumerate() {
                    let item = list_path.index(i);
                    let cid = match ComponentId::parse(raw) {
                        Ok(cid) => cid,
                        Err(e) => {
                            self.error(&item, e);
                            continue;
                        }
                    };
                    let components = &defined[section];
                    let Some(d) = components.iter().find(|d| d.id == cid) else {
                        let hint =
                            nearest(&cid.to_string(), components.iter().map(|d| d.path_key()))
                                .map(|s| format!(", did you mean {s:?}?"))
                                .unwrap_or_default();
                        let message = format!(
                            "{} {:?} is not defined in {}{hint}",
                            section.singular(),
                            cid.to_string(),
                            section.key()
                        );
                        if is_traces {
                            self.error(&item, message);
                        } else {
                            self.warn(
                                &item,
                                format!("{message} (ignored: the pipeline is skipped)"),
                            );
                        }
                        continue;
                    };
                    if resolved.contains(&cid) {
                        if *section == Section::Processors {
                            // The collector refuses this too.
                            self.error(
                                &item,
                                format!(
                                    "references processor {:?} multiple times",
                                    cid.to_string()
                                ),
                            );
                        } else {
                            self.warn(
                                &item,
                                format!(
                                    "{} {:?} is listed twice; it is used once",
                                    section.singular(),
                                    cid.to_string()
                                ),
                            );
                        }
                        continue;
                    }
                    let entry = usage.entry((*section, cid.clone())).or_default();
                    if is_traces {
                        entry.traces.push(id.to_string());
                        match d.known {
                            Known::NotBuilt => {
                                if reported.insert((*section, cid.clone())) {
                                    let message = format!(
                                        "{}; used by service::pipelines::{}",
                                        catalog::not_built(*section, &cid.kind),
                                        id
                                    );
                                    self.error(&d.path, message);
                                }
                            }
                            Known::SelfTelemetry => self.error(
                                &item,
                                "the prometheus exporter serves metrics; it cannot be in a traces pipeline",
                            ),
                            Known::Implemented | Known::Unknown => {}
                        }
                    } else {
                        entry.skipped.push(id.to_string());
                    }
                    resolved.push(cid);
                }
            }
            let [(_, _, _, receivers), (_, _, _, processors), (_, _, _, exporters)] = lists;
            if !is_traces {
                self.warn(
                    &path,
                    format!(
                        "{} pipelines are not handled by tracegate (it handles traces); skipped",
                        id.signal.name()
                    ),
                );
                continue;
            }
            if !self.has_entries(&path, "receivers") {
                self.error(&path, "must have at least one receiver");
            }
            if !self.has_entries(&path, "exporters") {
                self.error(&path, "must have at least one exporter");
            }
            traces.push(TracesPipeline {
                id: id.to_string(),
                receivers,
                processors,
                exporters,
            });
        }
        // A misspelt pipeline id is reported already; its pipeline may be the
        // traces one.
        if traces.is_empty() && !bad_ids {
            self.error(
                &pipelines_path,
                "no traces pipeline: tracegate handles traces, so at least one `traces` pipeline is needed",
            );
        }
        traces
    }

    /// Whether the pipeline's list names anything (valid or not, so a bad
    /// id is not also reported as an empty list).
    fn has_entries(&self, pipeline: &Path, list: &str) -> bool {
        self.node(&pipeline.key(list))
            .is_some_and(|n| matches!(&n.value, Value::Seq(items) if !items.is_empty()))
    }

    fn load_service_extensions(
        &mut self,
        service: &Path,
        defined: &BTreeMap<Section, Vec<Defined>>,
        usage: &mut BTreeMap<(Section, ComponentId), Usage>,
    ) -> Vec<ComponentId> {
        let path = service.key("extensions");
        if self.node(&path).is_none_or(Node::is_null) {
            return Vec::new();
        }
        let Some(raw) = self.parse_typed(&path, from_value::<Vec<String>>) else {
            return Vec::new();
        };
        let mut listed = Vec::new();
        for (i, raw) in raw.iter().enumerate() {
            let item = path.index(i);
            let id = match ComponentId::parse(raw) {
                Ok(id) => id,
                Err(e) => {
                    self.error(&item, e);
                    continue;
                }
            };
            let extensions = &defined[&Section::Extensions];
            let Some(d) = extensions.iter().find(|d| d.id == id) else {
                let hint = nearest(raw, extensions.iter().map(|d| d.path_key()))
                    .map(|s| format!(", did you mean {s:?}?"))
                    .unwrap_or_default();
                self.error(
                    &item,
                    format!(
                        "extension {:?} is not defined in extensions{hint}",
                        id.to_string()
                    ),
                );
                continue;
            };
            if listed.contains(&id) {
                self.warn(
                    &item,
                    format!(
                        "extension {:?} is listed twice; it is started once",
                        id.to_string()
                    ),
                );
                continue;
            }
            if d.known == Known::NotBuilt {
                self.error(&d.path, catalog::not_built(Section::Extensions, &id.kind));
            }
            usage
                .entry((Section::Extensions, id.clone()))
                .or_default()
                .traces
                .push("service::extensions".into());
            listed.push(id);
        }
        listed
    }

    /// Warns about components nothing (or only a skipped pipeline) uses.
    fn report_unused(
        &mut self,
        defined: &BTreeMap<Section, Vec<Defined>>,
        usage: &BTreeMap<(Section, ComponentId), Usage>,
    ) {
        for (section, components) in defined {
            for d in components {
                if d.known == Known::SelfTelemetry || d.known == Known::Unknown {
                    continue;
                }
                let u = usage.get(&(*section, d.id.clone()));
                if u.is_some_and(|u| !u.traces.is_empty()) {
                    continue;
                }
                let not_built = match d.known {
                    Known::NotBuilt => format!("{}; ", catalog::not_built(*section, &d.id.kind)),
                    _ => String::new(),
                };
                let message = match (section, u) {
                    (Section::Extensions, _) => {
                        format!("{not_built}not listed in service::extensions, so not started")
                    }
                    (_, Some(u)) => format!(
                        "{not_built}used only by skipped pipeline(s) {}; not built",
                        u.skipped.join(", ")
                    ),
                    (_, None) => format!("{not_built}not used by any pipeline; not built"),
                };
                self.warn(&d.path, message);
            }
        }
    }

    fn load_telemetry(
        &mut self,
        service: &Path,
        defined: &BTreeMap<Section, Vec<Defined>>,
    ) -> Telemetry {
        let path = service.key("telemetry");
        let spec = self
            .parse_typed(&path, from_value::<Option<TelemetrySpec>>)
            .flatten()
            .unwrap_or_default();
        let mut telemetry = Telemetry::default();

        for (key, value) in [("traces", &spec.traces), ("resource", &spec.resource)] {
            if value.is_some() {
                self.warn(&path.key(key), "accepted but ignored by tracegate");
            }
        }
        if let Some(logs) = &spec.logs {
            if let Some(level) = logs.level {
                telemetry.log_level = level.name().to_string();
            }
            if logs.encoding == Some(LogEncoding::Json) {
                telemetry.log_format = LogFormat::Json;
            }
            if let Some(paths) = &logs.output_paths {
                let key = path.key("logs").key("output_paths");
                let mut outputs = Vec::with_capacity(paths.len());
                for (i, entry) in paths.iter().enumerate() {
                    match LogOutput::parse(entry) {
                        Ok(output) if !outputs.contains(&output) => outputs.push(output),
                        Ok(_) => {}
                        Err(message) => self.error(&key.index(i), message),
                    }
                }
                telemetry.log_outputs = outputs;
            }
            let ignored = logs.ignored_keys();
            if !ignored.is_empty() {
                self.warn(
                    &path.key("logs"),
                    format!("{} accepted but ignored by tracegate", ignored.join(", ")),
                );
            }
        }

        let metrics_path = path.key("metrics");
        let metrics = spec.metrics.unwrap_or_default();
        if metrics.views.is_some() {
            self.warn(
                &metrics_path.key("views"),
                "accepted but ignored by tracegate",
            );
        }
        // Where the metrics are served, most explicit first.
        let mut explicit: Option<String> = None;
        for (i, reader) in metrics.readers.iter().flatten().enumerate() {
            let reader_path = metrics_path.key("readers").index(i);
            if reader.periodic.is_some() {
                self.warn(
                    &reader_path,
                    "periodic readers (pushing metrics) are not supported; ignored",
                );
            }
            if let Some(pull) = &reader.pull {
                if explicit.is_some() {
                    self.warn(
                        &reader_path,
                        "tracegate serves one metrics endpoint; only the first pull reader is used",
                    );
                    continue;
                }
                let prometheus = &pull.exporter.prometheus;
                let ignored = prometheus.ignored_keys();
                if !ignored.is_empty() {
                    self.warn(
                        &reader_path.key("pull").key("exporter").key("prometheus"),
                        format!("{} accepted but ignored", ignored.join(", ")),
                    );
                }
                explicit = Some(prometheus.address());
            }
        }
        if let Some(address) = &metrics.address {
            if explicit.is_some() {
                self.warn(
                    &metrics_path.key("address"),
                    "ignored: readers set the metrics endpoint",
                );
            } else {
                explicit = Some(address.clone());
            }
        }

        // Readers written out replace the collector's default one
        // (localhost:8888): without a pull reader nothing is served, and an
        // empty list is refused unless the level is none, as in the collector.
        let readers_given = metrics.readers.is_some();
        if metrics.readers.as_ref().is_some_and(Vec::is_empty)
            && metrics.level != Some(MetricsLevel::None)
            && explicit.is_none()
        {
            self.error(
                &metrics_path.key("readers"),
                "collector telemetry metrics reader should exist when metric level is not none",
            );
        }

        let prometheus: Vec<(&Defined, &PrometheusExporterSpec)> = defined[&Section::Exporters]
            .iter()
            .filter_map(|d| match &d.parsed {
                Some(Parsed::Prometheus(spec)) => Some((d, spec)),
                _ => None,
            })
            .collect();
        let mut from_exporter = None;
        for (d, spec) in prometheus {
            if explicit.is_some() || readers_given {
                self.warn(&d.path, "ignored: service::telemetry::metrics sets where tracegate's metrics are served");
            } else if from_exporter.is_some() {
                self.warn(
                    &d.path,
                    "ignored: an earlier prometheus exporter already serves tracegate's metrics",
                );
            } else {
                let namespace = spec
                    .namespace
                    .clone()
                    .filter(|ns| !ns.is_empty())
                    .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
                self.warn(
                    &d.path,
                    format!(
                        "tracegate serves its own metrics here ({}, namespace {namespace}) instead of a metrics pipeline's",
                        spec.endpoint
                    ),
                );
                from_exporter = Some((spec.endpoint.clone(), namespace));
            }
        }

        match (explicit, from_exporter) {
            (Some(address), _) => telemetry.metrics_address = Some(address),
            (None, Some((address, namespace))) => {
                telemetry.metrics_address = Some(address);
                telemetry.metrics_namespace = namespace;
            }
            (None, _) if readers_given => telemetry.metrics_address = None,
            (None, None) => telemetry.metrics_address = Some(DEFAULT_METRICS_ADDRESS.into()),
        }
        if metrics.level == Some(MetricsLevel::None) {
            telemetry.metrics_address = None;
        }
        telemetry
    }
}

impl Defined {
    /// The id as written under its section, for suggestions.
    fn path_key(&self) -> &str {
        match self.path.0.last() {
            Some(tree::Segment::Key(k)) => k.as_str(),
            _ => "",
        }
    }
}

#[cfg(test)]
mod tests;
