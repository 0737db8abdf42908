//! The `resource_detection` processor (the collector's `resourcedetection`):
//! detects attributes of the host and cloud at startup (and every
//! `refresh_interval`) and merges them into the resource of every span
//! batch.
//!
//! All configured detectors run in parallel within `timeout`. A detector
//! not on its platform (no metadata server) contributes nothing; one that
//! fails for real is retried within `timeout`, and if it still fails the
//! processor reports not ready, which stops startup — as in the collector.
//! Where two detectors set the same attribute, the one listed first wins.

mod azure;
mod docker;
mod ec2;
mod env;
mod gcp;
pub mod kubernetes;
mod resolve;
mod system;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::watch;
use tracegate_model::otlp::{any_value, AnyValue, KeyValue};
use tracegate_model::{ResourceAttributes, SpanBatch};

use super::Processor;
use crate::config::{nearest, ComponentError};
use crate::consumer::{ConsumeError, Consumer, NextConsumer};
use crate::http_client as client;

/// A detector, by the name `detectors` lists it under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum DetectorKind {
    #[serde(rename = "env")]
    Env,
    #[serde(rename = "system")]
    System,
    #[serde(rename = "docker")]
    Docker,
    /// The collector's current name for the node detector.
    #[serde(rename = "k8s_api")]
    K8sApi,
    /// The collector's deprecated name (and tracegate's `kubernetes`): the
    /// same detector, reading the `k8snode:` settings.
    #[serde(rename = "k8snode", alias = "kubernetes")]
    K8sNode,
    #[serde(rename = "gcp")]
    Gcp,
    #[serde(rename = "ec2", alias = "aws")]
    Ec2,
    #[serde(rename = "eks")]
    Eks,
    #[serde(rename = "azure")]
    Azure,
}

impl DetectorKind {
    pub fn name(self) -> &'static str {
        match self {
            DetectorKind::Env => "env",
            DetectorKind::System => "system",
            DetectorKind::Docker => "docker",
            DetectorKind::K8sApi => "k8s_api",
            DetectorKind::K8sNode => "k8snode",
            DetectorKind::Gcp => "gcp",
            DetectorKind::Ec2 => "ec2",
            DetectorKind::Eks => "eks",
            DetectorKind::Azure => "azure",
        }
    }

    /// The attributes the detector can set and whether each is on by
    /// default; `None` for `env`, which sets whatever the variable lists.
    fn attributes(self) -> Option<&'static [(&'static str, bool)]> {
        match self {
            DetectorKind::Env => None,
            DetectorKind::System => Some(system::ATTRIBUTES),
            DetectorKind::Docker => Some(docker::ATTRIBUTES),
            DetectorKind::K8sApi | DetectorKind::K8sNode => Some(kubernetes::ATTRIBUTES),
            DetectorKind::Gcp => Some(gcp::ATTRIBUTES),
            DetectorKind::Ec2 => Some(ec2::ATTRIBUTES),
            DetectorKind::Eks => Some(ec2::EKS_ATTRIBUTES),
            DetectorKind::Azure => Some(azure::ATTRIBUTES),
        }
    }
}

/// One attribute's switch: `resource_attributes: { host.id: { enabled: true } }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeSwitch {
    /// Whether the detector sets this attribute. Default: per attribute, as
    /// in the collector (see docs/configuration.md).
    pub enabled: bool,
}

/// Per-attribute switches of one detector, by attribute name.
pub type ResourceAttributesConfig = BTreeMap<String, AttributeSwitch>;

/// The settings of a detector that has only attribute switches.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// Per-attribute switches. Default: the collector's per attribute.
    #[serde(default)]
    pub resource_attributes: ResourceAttributesConfig,
}

/// `resource_detection: env:`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvConfig {
    /// Only these keys of `OTEL_RESOURCE_ATTRIBUTES` are set. Default: all.
    #[serde(default)]
    pub allow_list: Option<Vec<String>>,
}

/// `resource_detection: gcp:`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpConfig {
    /// Regexes of GCE instance label keys to set as
    /// `gcp.gce.instance.labels.<key>`.
    #[serde(default)]
    pub labels: Vec<String>,
    /// The collector's switch for `host.type` on GKE (a Compute API
    /// call). Refused when true: tracegate does not call the Compute API.
    #[serde(default)]
    pub gke_host_type: bool,
    /// Deprecated per-detector form of the top-level key.
    #[serde(default)]
    pub fail_on_missing_metadata: bool,
    /// Per-attribute switches.
    #[serde(default)]
    pub resource_attributes: ResourceAttributesConfig,
}

/// `resource_detection: ec2:`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2Config {
    /// Regexes of instance tag keys to set as `ec2.tag.<key>`; needs
    /// `tags_from_imds: true` here (the DescribeTags API is not called).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Read the tags from the instance metadata service.
    #[serde(default)]
    pub tags_from_imds: bool,
    /// Deprecated per-detector form of the top-level key.
    #[serde(default)]
    pub fail_on_missing_metadata: bool,
    /// The AWS SDK's IMDS retry settings: refused (tracegate retries
    /// within `timeout` instead).
    #[serde(default)]
    pub max_attempts: Option<serde_json::Value>,
    /// As `max_attempts`.
    #[serde(default)]
    pub max_backoff: Option<serde_json::Value>,
    /// Per-attribute switches.
    #[serde(default)]
    pub resource_attributes: ResourceAttributesConfig,
}

/// `resource_detection: azure:`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    /// Regexes of VM tag names to set as `azure.tag.<name>`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Deprecated per-detector form of the top-level key.
    #[serde(default)]
    pub fail_on_missing_metadata: bool,
    /// Per-attribute switches.
    #[serde(default)]
    pub resource_attributes: ResourceAttributesConfig,
}

/// `resource_detection: system:`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    /// Where `host.name` comes from, tried in order: `dns` (the fully
    /// qualified name: hosts file, then CNAME, then reverse lookup),
    /// `cname`, `lookup` (reverse lookup of the host's addresses) and `os`
    /// (the kernel's host name). Default `[dns, os]`.
    #[serde(default = "default_hostname_sources")]
    pub hostname_sources: Vec<String>,
    /// Per-attribute switches. Default: `host.name` and `os.type` on,
    /// `host.id` and `host.arch` off.
    #[serde(default)]
    pub resource_attributes: ResourceAttributesConfig,
}

fn default_hostname_sources() -> Vec<String> {
    vec!["dns".into(), "os".into()]
}

impl Default for SystemConfig {
    fn default() -> Self {
        SystemConfig {
            hostname_sources: default_hostname_sources(),
            resource_attributes: ResourceAttributesConfig::default(),
        }
    }
}

/// `processors: resource_detection:` (or `resourcedetection:`)
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Detectors to run, from `env`, `system`, `docker`, `k8s_api`,
    /// `k8snode` (alias `kubernetes`), `gcp`, `ec2` (alias `aws`), `eks`,
    /// `azure`. Where
    /// two set the same attribute, the one listed first wins. Default `[env]`.
    #[serde(default = "default_detectors")]
    pub detectors: Vec<DetectorKind>,
    /// Time each detector may take; they run in parallel, so this bounds
    /// detection as a whole. Default `2s` (the collector's is `5s`).
    #[serde(
        default = "default_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub timeout: Duration,
    /// Whether detected values replace attributes the resource already has.
    /// Default `true`.
    #[serde(default = "default_override", rename = "override")]
    pub override_existing: bool,
    /// Re-run detection this often (0: never). Default 0.
    #[serde(default, deserialize_with = "crate::duration::deserialize")]
    pub refresh_interval: Duration,
    /// Whether a cloud detector whose metadata service does not answer
    /// fails (retried within `timeout`, then startup stops) instead of
    /// contributing nothing. Default false.
    #[serde(default)]
    pub fail_on_missing_metadata: bool,
    /// Settings of the `env` detector.
    #[serde(default)]
    pub env: EnvConfig,
    /// Settings of the `system` detector.
    #[serde(default)]
    pub system: SystemConfig,
    /// Settings of the `docker` detector.
    #[serde(default)]
    pub docker: DetectorConfig,
    /// Settings of the `k8s_api` detector.
    #[serde(default)]
    pub k8s_api: kubernetes::Config,
    /// Settings of the `k8snode` detector (also accepted as `kubernetes:`).
    #[serde(default, alias = "kubernetes")]
    pub k8snode: kubernetes::Config,
    /// Settings of the `gcp` detector.
    #[serde(default)]
    pub gcp: GcpConfig,
    /// Settings of the `ec2` detector (also accepted as `aws:`).
    #[serde(default, alias = "aws")]
    pub ec2: Ec2Config,
    /// Settings of the `eks` detector.
    #[serde(default)]
    pub eks: DetectorConfig,
    /// Settings of the `azure` detector.
    #[serde(default)]
    pub azure: AzureConfig,
}

fn default_detectors() -> Vec<DetectorKind> {
    vec![DetectorKind::Env]
}
fn default_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_override() -> bool {
    true
}

impl Default for Config {
    fn default() -> Self {
        Config {
            detectors: default_detectors(),
            timeout: default_timeout(),
            override_existing: true,
            refresh_interval: Duration::ZERO,
            fail_on_missing_metadata: false,
            env: EnvConfig::default(),
            system: SystemConfig::default(),
            docker: DetectorConfig::default(),
            k8s_api: kubernetes::Config::default(),
            k8snode: kubernetes::Config::default(),
            gcp: GcpConfig::default(),
            ec2: Ec2Config::default(),
            eks: DetectorConfig::default(),
            azure: AzureConfig::default(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        for source in &self.system.hostname_sources {
            if !system::HOSTNAME_SOURCES.contains(&source.as_str()) {
                let hint = match nearest(source, system::HOSTNAME_SOURCES.iter().copied()) {
                    Some(n) => format!("; did you mean {n:?}?"),
                    None => String::new(),
                };
                return Err(ComponentError {
                    path: "system.hostname_sources".into(),
                    message: format!(
                        "unknown hostname source {source:?} (tracegate knows dns, cname, lookup, os){hint}"
                    ),
                });
            }
        }
        let refuse = |path: &str, message: String| {
            Err(ComponentError {
                path: path.into(),
                message,
            })
        };
        if self.gcp.gke_host_type {
            return refuse(
                "gcp.gke_host_type",
                "not implemented: host.type on GKE needs the Compute API, which tracegate does \
                 not call; remove the key"
                    .into(),
            );
        }
        if !self.ec2.tags.is_empty() && !self.ec2.tags_from_imds {
            return refuse(
                "ec2.tags",
                "tracegate reads instance tags only from the instance metadata service, not \
                 the EC2 DescribeTags API: set ec2.tags_from_imds: true (and enable instance \
                 metadata tags on the instance)"
                    .into(),
            );
        }
        for key in ["max_attempts", "max_backoff"] {
            let given = match key {
                "max_attempts" => &self.ec2.max_attempts,
                _ => &self.ec2.max_backoff,
            };
            if given.is_some() {
                return refuse(
                    &format!("ec2.{key}"),
                    "not implemented: tracegate retries a failing detector within timeout \
                     instead of the AWS SDK's retry settings; remove the key"
                        .into(),
                );
            }
        }
        for (path, patterns) in [
            ("gcp.labels", &self.gcp.labels),
            ("ec2.tags", &self.ec2.tags),
            ("azure.tags", &self.azure.tags),
        ] {
            for pattern in patterns {
                if let Err(e) = regex::Regex::new(pattern) {
                    return refuse(path, format!("invalid regex {pattern:?}: {e}"));
                }
            }
        }
        let mut warnings = Vec::new();
        warnings.extend(self.k8s_api.validate("k8s_api")?);
        warnings.extend(self.k8snode.validate("k8snode")?);
        let sections: [(&str, DetectorKind, &ResourceAttributesConfig); 8] = [
            (
                "k8s_api",
                DetectorKind::K8sApi,
                &self.k8s_api.resource_attributes,
            ),
            (
                "system",
                DetectorKind::System,
                &self.system.resource_attributes,
            ),
            (
                "docker",
                DetectorKind::Docker,
                &self.docker.resource_attributes,
            ),
            (
                "k8snode",
                DetectorKind::K8sNode,
                &self.k8snode.resource_attributes,
            ),
            ("gcp", DetectorKind::Gcp, &self.gcp.resource_attributes),
            ("ec2", DetectorKind::Ec2, &self.ec2.resource_attributes),
            ("eks", DetectorKind::Eks, &self.eks.resource_attributes),
            (
                "azure",
                DetectorKind::Azure,
                &self.azure.resource_attributes,
            ),
        ];
        for (section, kind, switches) in sections {
            let known = kind.attributes().unwrap_or(&[]);
            for name in switches.keys() {
                if !known.iter().any(|(k, _)| k == name) {
                    let names = known.iter().map(|(k, _)| *k);
                    let hint = match nearest(name, names) {
                        Some(n) => format!("; did you mean {n:?}?"),
                        None => String::new(),
                    };
                    return Err(ComponentError {
                        path: format!("{section}.resource_attributes"),
                        message: format!(
                            "the {} detector does not set {name:?}{hint}",
                            kind.name()
                        ),
                    });
                }
            }
        }
        for (name, switch) in &self.system.resource_attributes {
            if switch.enabled && system::NOT_IMPLEMENTED.contains(&name.as_str()) {
                return refuse(
                    "system.resource_attributes",
                    format!(
                        "{name} is not implemented in tracegate (it would not match the \
                         collector's value); remove the switch or set enabled: false"
                    ),
                );
            }
        }
        // Where the outcome differs from the collector's, say so.
        if self.detectors.contains(&DetectorKind::K8sNode) {
            warnings.push(
                "detector k8snode (or kubernetes) is the collector's deprecated name for k8s_api"
                    .into(),
            );
        }
        if self
            .detectors
            .iter()
            .any(|k| matches!(k, DetectorKind::K8sApi | DetectorKind::K8sNode))
        {
            warnings.push(
                "k8s_api: where the node-name variable is unset, or the Kubernetes API cannot be \
                 reached from a pod, tracegate skips what it cannot know; the collector refuses \
                 to start"
                    .into(),
            );
        }
        if self.detectors.contains(&DetectorKind::Docker) {
            warnings.push(
                "docker: where no Docker daemon answers, tracegate detects nothing; the \
                 collector refuses to start"
                    .into(),
            );
        }
        if self.detectors.contains(&DetectorKind::System)
            && self.enabled(DetectorKind::System, "host.ip")
        {
            warnings.push(
                "system.resource_attributes.host.ip: read from the kernel's address tables, \
                 which also hold the addresses of interfaces that are down; the collector lists \
                 only those of interfaces that are up"
                    .into(),
            );
        }
        if !self.gcp.labels.is_empty() {
            warnings.push(
                "gcp.labels: read from the instance's metadata attributes, not the Compute API \
                 as the collector first tries"
                    .into(),
            );
        }
        if self.timeout.is_zero() {
            warnings.push(
                "timeout is 0s: every detector but env, system and kubernetes times out at once"
                    .into(),
            );
        }
        Ok(warnings)
    }

    fn switches(&self, kind: DetectorKind) -> Option<&ResourceAttributesConfig> {
        match kind {
            DetectorKind::Env => None,
            DetectorKind::System => Some(&self.system.resource_attributes),
            DetectorKind::Docker => Some(&self.docker.resource_attributes),
            DetectorKind::K8sApi => Some(&self.k8s_api.resource_attributes),
            DetectorKind::K8sNode => Some(&self.k8snode.resource_attributes),
            DetectorKind::Gcp => Some(&self.gcp.resource_attributes),
            DetectorKind::Ec2 => Some(&self.ec2.resource_attributes),
            DetectorKind::Eks => Some(&self.eks.resource_attributes),
            DetectorKind::Azure => Some(&self.azure.resource_attributes),
        }
    }

    /// Whether `kind` may set `key`: its switch, else the default.
    fn enabled(&self, kind: DetectorKind, key: &str) -> bool {
        let Some(known) = kind.attributes() else {
            return true;
        };
        // Tags and labels the user asked for by regex.
        if ["azure.tag.", "ec2.tag.", "gcp.gce.instance.labels."]
            .iter()
            .any(|p| key.starts_with(p))
        {
            return true;
        }
        if let Some(switch) = self.switches(kind).and_then(|s| s.get(key)) {
            return switch.enabled;
        }
        known.iter().any(|(k, on)| *k == key && *on)
    }
}

/// What detectors read: environment variables, files and name lookups.
/// Captured from the process at startup; tests inject their own.
#[derive(Debug, Clone)]
pub(crate) struct DetectContext {
    env: HashMap<String, String>,
    /// The file system root files are read under.
    root: PathBuf,
    resolver: Arc<dyn resolve::Resolver>,
}

impl DetectContext {
    pub(crate) fn from_process() -> DetectContext {
        DetectContext {
            env: std::env::vars().collect(),
            root: PathBuf::from("/"),
            resolver: Arc::new(resolve::SystemResolver),
        }
    }

    /// A variable's value; unset and empty are alike.
    fn var(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A file's contents, `path` relative to the root.
    fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(path)).ok()
    }

    #[cfg(test)]
    pub(crate) fn for_test(vars: &[(&str, &str)]) -> DetectContext {
        DetectContext {
            env: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            root: PathBuf::from("/nonexistent/tracegate-test-root"),
            resolver: Arc::new(resolve::FakeResolver::default()),
        }
    }

    #[cfg(test)]
    pub(crate) fn with_root(mut self, root: &std::path::Path) -> DetectContext {
        self.root = root.to_path_buf();
        self
    }
}

fn string_kv(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// Why a detector detected nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DetectError {
    /// The platform is not there (no cloud metadata server, not on
    /// Kubernetes): the detector contributes nothing, as in the collector.
    Absent(String),
    /// The platform is there but answered wrongly: retried within
    /// `timeout`, then startup stops.
    Failed(String),
}

impl From<String> for DetectError {
    fn from(reason: String) -> Self {
        DetectError::Failed(reason)
    }
}

impl std::fmt::Display for DetectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DetectError::Absent(reason) | DetectError::Failed(reason) => f.write_str(reason),
        }
    }
}

/// Compiled regexes of a `tags` / `labels` list.
fn regexes(patterns: &[String]) -> Vec<regex::Regex> {
    // Validated at config time.
    patterns
        .iter()
        .filter_map(|p| regex::Regex::new(p).ok())
        .collect()
}

async fn run_detector(
    kind: DetectorKind,
    config: &Config,
    ctx: &DetectContext,
) -> Result<Vec<KeyValue>, DetectError> {
    match kind {
        DetectorKind::Env => Ok(env::detect(ctx, config.env.allow_list.as_deref())?),
        DetectorKind::System => {
            let ctx = ctx.clone();
            let sources = config.system.hostname_sources.clone();
            // Name lookups block: keep them off the async threads.
            let found = tokio::task::spawn_blocking(move || {
                system::detect(&ctx, &sources, ctx.resolver.as_ref())
            })
            .await
            .map_err(|e| DetectError::Failed(format!("system detector: {e}")))?;
            Ok(found?)
        }
        DetectorKind::Docker => docker::detect(ctx).await,
        DetectorKind::K8sApi | DetectorKind::K8sNode => {
            let section = if kind == DetectorKind::K8sApi {
                &config.k8s_api
            } else {
                &config.k8snode
            };
            kubernetes::detect(
                ctx,
                section,
                config.enabled(kind, "k8s.node.uid"),
                config.enabled(kind, "k8s.cluster.uid"),
            )
            .await
        }
        DetectorKind::Gcp => gcp::detect(ctx, &regexes(&config.gcp.labels)).await,
        DetectorKind::Ec2 => {
            let tags = regexes(&config.ec2.tags);
            ec2::detect(ctx, &tags).await
        }
        DetectorKind::Eks => ec2::detect_eks(ctx).await,
        DetectorKind::Azure => azure::detect(ctx, &regexes(&config.azure.tags)).await,
    }
}

/// How one detector ended.
enum Outcome {
    Detected(Vec<KeyValue>),
    /// Not on that platform (or its endpoint never answered).
    Absent(String),
    Failed(String),
}

impl Config {
    /// Whether a cloud detector's missing metadata service is a failure.
    fn strict(&self, kind: DetectorKind) -> bool {
        match kind {
            DetectorKind::Gcp => self.fail_on_missing_metadata || self.gcp.fail_on_missing_metadata,
            DetectorKind::Ec2 | DetectorKind::Eks => {
                self.fail_on_missing_metadata || self.ec2.fail_on_missing_metadata
            }
            DetectorKind::Azure => {
                self.fail_on_missing_metadata || self.azure.fail_on_missing_metadata
            }
            _ => false,
        }
    }
}

/// The collector's retry schedule for a failing detector: 1 s, doubling,
/// until the detection deadline.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Runs one detector, retrying failures until `deadline`.
async fn detect_one(
    id: &str,
    kind: DetectorKind,
    config: &Config,
    ctx: &DetectContext,
    deadline: tokio::time::Instant,
) -> Outcome {
    let strict = config.strict(kind);
    let mut wait = FIRST_RETRY;
    loop {
        let failure = match tokio::time::timeout_at(deadline, run_detector(kind, config, ctx)).await
        {
            Ok(Ok(attributes)) => return Outcome::Detected(attributes),
            Ok(Err(DetectError::Absent(reason))) if !strict => return Outcome::Absent(reason),
            Ok(Err(DetectError::Absent(reason))) => format!(
                "{reason} (fail_on_missing_metadata is set, so a missing metadata service is \
                 an error)"
            ),
            Ok(Err(DetectError::Failed(reason))) => reason,
            Err(_) if strict => {
                return Outcome::Failed(format!(
                    "no answer within timeout {:?} (fail_on_missing_metadata is set)",
                    config.timeout
                ))
            }
            Err(_) => {
                return Outcome::Absent(format!("no answer within timeout {:?}", config.timeout))
            }
        };
        let now = tokio::time::Instant::now();
        if now + wait >= deadline {
            return Outcome::Failed(failure);
        }
        tracing::warn!(
            processor = %id,
            detector = kind.name(),
            reason = %failure,
            retry_in = ?wait,
            "resource detector failed; retrying within timeout"
        );
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
}

/// Runs every configured detector in parallel, each retried until the
/// timeout, and merges their attributes in the configured order. An error
/// names every detector that failed for real.
pub(crate) async fn detect_all(
    id: &str,
    config: &Config,
    ctx: &DetectContext,
) -> Result<ResourceAttributes, String> {
    let deadline = tokio::time::Instant::now() + config.timeout;
    let runs = config
        .detectors
        .iter()
        .map(|&kind| async move { (kind, detect_one(id, kind, config, ctx, deadline).await) });
    let mut merged = Vec::new();
    let mut failures = Vec::new();
    for (kind, outcome) in futures::future::join_all(runs).await {
        match outcome {
            Outcome::Detected(attributes) => merged.extend(
                attributes
                    .into_iter()
                    .filter(|kv| config.enabled(kind, &kv.key)),
            ),
            Outcome::Absent(reason) if reason.starts_with("no answer within timeout") => {
                tracing::info!(
                    processor = %id,
                    detector = kind.name(),
                    timeout = ?config.timeout,
                    "resource detector timed out; it detected nothing"
                )
            }
            Outcome::Absent(reason) => tracing::info!(
                processor = %id,
                detector = kind.name(),
                %reason,
                "resource detector detected nothing"
            ),
            Outcome::Failed(reason) => failures.push(format!("detector {}: {reason}", kind.name())),
        }
    }
    if !failures.is_empty() {
        return Err(format!(
            "resource detection failed within timeout {:?}: {}",
            config.timeout,
            failures.join("; ")
        ));
    }
    let attributes = ResourceAttributes::new(merged);
    tracing::info!(
        processor = %id,
        attributes = ?attributes.attributes().iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
        "resource detection done"
    );
    Ok(attributes)
}

/// The running processor.
pub struct ResourceDetector {
    next: NextConsumer,
    override_existing: bool,
    /// The first detection's outcome, set once.
    first: Arc<OnceLock<Result<(), String>>>,
    /// The attributes merged into batches; replaced on refresh.
    current: Arc<RwLock<Arc<ResourceAttributes>>>,
    /// Turns true when `first` is set, for batches that arrive earlier.
    ready: watch::Receiver<bool>,
    /// Detection, then the refresh loop.
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ResourceDetector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ResourceDetector {
    /// Starts detection in the background. Must run inside a tokio runtime.
    pub fn start(id: &str, config: Config, next: NextConsumer) -> Arc<ResourceDetector> {
        Self::start_with(id, config, next, DetectContext::from_process())
    }

    pub(crate) fn start_with(
        id: &str,
        config: Config,
        next: NextConsumer,
        ctx: DetectContext,
    ) -> Arc<ResourceDetector> {
        let first = Arc::new(OnceLock::new());
        let current = Arc::new(RwLock::new(Arc::new(ResourceAttributes::new(Vec::new()))));
        let (ready_tx, ready) = watch::channel(false);
        let override_existing = config.override_existing;
        let task = {
            let first = first.clone();
            let current = current.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                let outcome = detect_all(&id, &config, &ctx).await;
                let failed = outcome.is_err();
                let _ = first.set(outcome.map(|attributes| {
                    *current.write().expect("not poisoned") = Arc::new(attributes);
                }));
                let _ = ready_tx.send(true);
                if failed || config.refresh_interval.is_zero() {
                    return;
                }
                let mut ticks = tokio::time::interval_at(
                    tokio::time::Instant::now() + config.refresh_interval,
                    config.refresh_interval,
                );
                loop {
                    ticks.tick().await;
                    match detect_all(&id, &config, &ctx).await {
                        Ok(attributes) => {
                            *current.write().expect("not poisoned") = Arc::new(attributes)
                        }
                        Err(reason) => tracing::warn!(
                            processor = %id,
                            %reason,
                            "resource refresh failed; keeping the previous attributes"
                        ),
                    }
                }
            })
        };
        Arc::new(ResourceDetector {
            next,
            override_existing,
            first,
            current,
            ready,
            task,
        })
    }

    /// The first detection's outcome, waiting for it.
    async fn first_outcome(&self) -> Result<(), String> {
        if let Some(outcome) = self.first.get() {
            return outcome.clone();
        }
        let mut ready = self.ready.clone();
        // An error means the detection task died (a panic).
        let _ = ready.wait_for(|done| *done).await;
        self.first
            .get()
            .cloned()
            .unwrap_or_else(|| Err("resource detection did not complete".into()))
    }

    /// The attributes to merge, waiting for the first detection.
    async fn attributes(&self) -> Result<Arc<ResourceAttributes>, ConsumeError> {
        self.first_outcome().await.map_err(ConsumeError::refused)?;
        Ok(self.current.read().expect("not poisoned").clone())
    }
}

#[async_trait]
impl Consumer for ResourceDetector {
    async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
        let attributes = self.attributes().await?;
        let batch = batch.merge_resource_attributes(&attributes, self.override_existing);
        self.next.consume(batch).await
    }
}

#[async_trait]
impl Processor for ResourceDetector {
    async fn flush(&self) {}

    async fn ready(&self) -> Result<(), String> {
        self.first_outcome().await
    }
}

impl super::BuildProcessor for Config {
    fn build(&self, id: &str, next: NextConsumer, _: &super::BuildContext) -> super::Building {
        Ok(ResourceDetector::start(id, self.clone(), next))
    }
}

#[cfg(test)]
pub(crate) mod tests;
