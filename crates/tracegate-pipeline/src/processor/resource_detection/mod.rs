//! The `resource_detection` processor (the collector's `resourcedetection`):
//! detects attributes of the host and cloud once at startup and merges them
//! into the resource of every span batch.
//!
//! All configured detectors run in parallel, each bounded by `timeout`, so a
//! machine with no cloud waits at most `timeout` in total. A detector that
//! fails (not on that cloud, endpoint unreachable) is logged once at info and
//! contributes nothing. Where two detectors set the same attribute, the one
//! listed first wins. Batches arriving before detection ends wait for it.

mod azure;
mod client;
mod docker;
mod ec2;
mod env;
mod gcp;
pub mod kubernetes;
mod system;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::watch;
use tracegate_model::otlp::{any_value, AnyValue, KeyValue};
use tracegate_model::{ResourceAttributes, SpanBatch};

use super::Processor;
use crate::config::{nearest, ComponentError};
use crate::consumer::{ConsumeError, Consumer, NextConsumer};

/// A detector, by the name `detectors` lists it under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum DetectorKind {
    #[serde(rename = "env")]
    Env,
    #[serde(rename = "system")]
    System,
    #[serde(rename = "docker")]
    Docker,
    #[serde(rename = "kubernetes", alias = "k8snode")]
    Kubernetes,
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
            DetectorKind::Kubernetes => "kubernetes",
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
            DetectorKind::Kubernetes => Some(kubernetes::ATTRIBUTES),
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

/// `resource_detection: system:`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    /// Where `host.name` comes from, tried in order: `dns` (the fully
    /// qualified name from the hosts file) and `os` (the kernel's host
    /// name). Default `[dns, os]`.
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
    /// Detectors to run, from `env`, `system`, `docker`, `kubernetes`
    /// (alias `k8snode`), `gcp`, `ec2` (alias `aws`), `eks`, `azure`. Where
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
    /// Settings of the `system` detector.
    #[serde(default)]
    pub system: SystemConfig,
    /// Settings of the `docker` detector.
    #[serde(default)]
    pub docker: DetectorConfig,
    /// Settings of the `kubernetes` detector (also accepted as `kubernetes:`).
    #[serde(default, alias = "kubernetes")]
    pub k8snode: kubernetes::Config,
    /// Settings of the `gcp` detector.
    #[serde(default)]
    pub gcp: DetectorConfig,
    /// Settings of the `ec2` detector (also accepted as `aws:`).
    #[serde(default, alias = "aws")]
    pub ec2: DetectorConfig,
    /// Settings of the `eks` detector.
    #[serde(default)]
    pub eks: DetectorConfig,
    /// Settings of the `azure` detector.
    #[serde(default)]
    pub azure: DetectorConfig,
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
            system: SystemConfig::default(),
            docker: DetectorConfig::default(),
            k8snode: kubernetes::Config::default(),
            gcp: DetectorConfig::default(),
            ec2: DetectorConfig::default(),
            eks: DetectorConfig::default(),
            azure: DetectorConfig::default(),
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
                        "unknown hostname source {source:?} (tracegate knows dns, os){hint}"
                    ),
                });
            }
        }
        let sections: [(&str, DetectorKind, &ResourceAttributesConfig); 7] = [
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
                DetectorKind::Kubernetes,
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
        let mut warnings = Vec::new();
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
            DetectorKind::Kubernetes => Some(&self.k8snode.resource_attributes),
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
        if let Some(switch) = self.switches(kind).and_then(|s| s.get(key)) {
            return switch.enabled;
        }
        known.iter().any(|(k, on)| *k == key && *on)
    }
}

/// What detectors read: environment variables and files. Captured from
/// the process at startup; tests inject their own.
#[derive(Debug, Clone)]
pub(crate) struct DetectContext {
    env: HashMap<String, String>,
    /// The file system root files are read under.
    root: PathBuf,
}

impl DetectContext {
    pub(crate) fn from_process() -> DetectContext {
        DetectContext {
            env: std::env::vars().collect(),
            root: PathBuf::from("/"),
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

async fn run_detector(
    kind: DetectorKind,
    config: &Config,
    ctx: &DetectContext,
) -> Result<Vec<KeyValue>, String> {
    match kind {
        DetectorKind::Env => env::detect(ctx),
        DetectorKind::System => system::detect(ctx, &config.system.hostname_sources),
        DetectorKind::Docker => docker::detect(ctx).await,
        DetectorKind::Kubernetes => kubernetes::detect(ctx, &config.k8snode),
        DetectorKind::Gcp => gcp::detect(ctx).await,
        DetectorKind::Ec2 => ec2::detect(ctx).await,
        DetectorKind::Eks => ec2::detect_eks(ctx).await,
        DetectorKind::Azure => azure::detect(ctx).await,
    }
}

/// Runs every configured detector in parallel, each bounded by the
/// timeout, and merges their attributes in the configured order.
pub(crate) async fn detect_all(
    id: &str,
    config: &Config,
    ctx: &DetectContext,
) -> ResourceAttributes {
    let runs = config.detectors.iter().map(|&kind| async move {
        let result = tokio::time::timeout(config.timeout, run_detector(kind, config, ctx)).await;
        (kind, result)
    });
    let mut merged = Vec::new();
    for (kind, result) in futures::future::join_all(runs).await {
        match result {
            Ok(Ok(attributes)) => merged.extend(
                attributes
                    .into_iter()
                    .filter(|kv| config.enabled(kind, &kv.key)),
            ),
            Ok(Err(reason)) => tracing::info!(
                processor = %id,
                detector = kind.name(),
                %reason,
                "resource detector detected nothing"
            ),
            Err(_) => tracing::info!(
                processor = %id,
                detector = kind.name(),
                timeout = ?config.timeout,
                "resource detector timed out; it detected nothing"
            ),
        }
    }
    let attributes = ResourceAttributes::new(merged);
    tracing::info!(
        processor = %id,
        attributes = ?attributes.attributes().iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
        "resource detection done"
    );
    attributes
}

/// The running processor.
pub struct ResourceDetector {
    next: NextConsumer,
    override_existing: bool,
    /// Set once when detection ends.
    detected: Arc<OnceLock<ResourceAttributes>>,
    /// Turns true when `detected` is set, for batches that arrive earlier.
    ready: watch::Receiver<bool>,
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
        let detected = Arc::new(OnceLock::new());
        let (ready_tx, ready) = watch::channel(false);
        let override_existing = config.override_existing;
        {
            let detected = detected.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                let attributes = detect_all(&id, &config, &ctx).await;
                let _ = detected.set(attributes);
                let _ = ready_tx.send(true);
            });
        }
        Arc::new(ResourceDetector {
            next,
            override_existing,
            detected,
            ready,
        })
    }

    /// The detected attributes, waiting for detection to end.
    async fn attributes(&self) -> Result<&ResourceAttributes, ConsumeError> {
        if let Some(attributes) = self.detected.get() {
            return Ok(attributes);
        }
        let mut ready = self.ready.clone();
        // An error means the detection task died (a panic); refuse rather
        // than pass on batches without the attributes the config promises.
        let _ = ready.wait_for(|done| *done).await;
        self.detected
            .get()
            .ok_or_else(|| ConsumeError::refused("resource detection did not complete"))
    }
}

#[async_trait]
impl Consumer for ResourceDetector {
    async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
        let attributes = self.attributes().await?;
        let batch = batch.merge_resource_attributes(attributes, self.override_existing);
        self.next.consume(batch).await
    }
}

#[async_trait]
impl Processor for ResourceDetector {
    async fn flush(&self) {}
}

impl super::BuildProcessor for Config {
    fn build(&self, id: &str, next: NextConsumer, _: &super::BuildContext) -> super::Building {
        Ok(ResourceDetector::start(id, self.clone(), next))
    }
}

#[cfg(test)]
pub(crate) mod tests;
