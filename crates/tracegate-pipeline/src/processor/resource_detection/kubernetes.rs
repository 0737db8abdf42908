//! `kubernetes` (also the collector's `k8snode`): the node, pod and
//! namespace from the downward-API environment variables a DaemonSet
//! manifest sets, and `k8s.cluster.name` where configured. The Kubernetes
//! API is not queried (so `k8s.node.uid` is not set).

use serde::Deserialize;
use tracegate_model::otlp::KeyValue;

use super::{string_kv, DetectContext, ResourceAttributesConfig};

pub(super) const ATTRIBUTES: &[(&str, bool)] = &[
    ("k8s.node.name", true),
    ("k8s.pod.name", true),
    ("k8s.namespace.name", true),
    ("k8s.cluster.name", true),
];

/// `resource_detection: k8snode:` (or `kubernetes:`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The environment variable holding the node's name (downward API
    /// `spec.nodeName`). Default `K8S_NODE_NAME`.
    #[serde(default = "default_node_var")]
    pub node_from_env_var: String,
    /// The environment variable holding the pod's name. Default `K8S_POD_NAME`.
    #[serde(default = "default_pod_var")]
    pub pod_from_env_var: String,
    /// The environment variable holding the pod's namespace. Default `K8S_NAMESPACE`.
    #[serde(default = "default_namespace_var")]
    pub namespace_from_env_var: String,
    /// Sets `k8s.cluster.name` (Kubernetes does not tell a pod its
    /// cluster's name). Default unset.
    #[serde(default)]
    pub cluster_name: Option<String>,
    /// Per-attribute switches; all enabled by default.
    #[serde(default)]
    pub resource_attributes: ResourceAttributesConfig,
}

fn default_node_var() -> String {
    "K8S_NODE_NAME".into()
}
fn default_pod_var() -> String {
    "K8S_POD_NAME".into()
}
fn default_namespace_var() -> String {
    "K8S_NAMESPACE".into()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_from_env_var: default_node_var(),
            pod_from_env_var: default_pod_var(),
            namespace_from_env_var: default_namespace_var(),
            cluster_name: None,
            resource_attributes: ResourceAttributesConfig::default(),
        }
    }
}

pub(super) fn detect(ctx: &DetectContext, config: &Config) -> Result<Vec<KeyValue>, String> {
    let node = ctx.var(&config.node_from_env_var).ok_or_else(|| {
        format!(
            "not running on Kubernetes ({} is not set)",
            config.node_from_env_var
        )
    })?;
    let mut out = vec![string_kv("k8s.node.name", node)];
    if let Some(pod) = ctx.var(&config.pod_from_env_var) {
        out.push(string_kv("k8s.pod.name", pod));
    }
    if let Some(namespace) = ctx.var(&config.namespace_from_env_var) {
        out.push(string_kv("k8s.namespace.name", namespace));
    }
    if let Some(cluster) = config.cluster_name.as_deref().filter(|c| !c.is_empty()) {
        out.push(string_kv("k8s.cluster.name", cluster));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::resource_detection::tests::as_pairs;

    #[test]
    fn downward_api_variables() {
        let ctx = DetectContext::for_test(&[
            ("K8S_NODE_NAME", "node-a"),
            ("K8S_POD_NAME", "agent-x7"),
            ("K8S_NAMESPACE", "observability"),
        ]);
        let config = Config {
            cluster_name: Some("prod-eu".into()),
            ..Config::default()
        };
        let detected = detect(&ctx, &config).unwrap();
        assert_eq!(
            as_pairs(&detected),
            [
                ("k8s.node.name", "node-a"),
                ("k8s.pod.name", "agent-x7"),
                ("k8s.namespace.name", "observability"),
                ("k8s.cluster.name", "prod-eu"),
            ]
        );
        assert!(detect(&DetectContext::for_test(&[]), &Config::default()).is_err());
    }
}
