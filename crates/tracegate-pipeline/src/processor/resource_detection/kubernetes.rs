//! `k8s_api` (the collector's current name; also `k8snode`, its deprecated
//! one, and `kubernetes`, tracegate's): the identity of the NODE the gateway
//! runs on — `k8s.node.name` from the downward-API variable a DaemonSet
//! manifest sets; `k8s.node.uid` and `k8s.cluster.uid` (kube-system's UID)
//! from the Kubernetes API where the pod can reach it with its service
//! account (or unauthenticated with `auth_type: none`); and
//! `k8s.cluster.name` where configured.
//!
//! Never the gateway's own pod or namespace: with `override: true` those
//! would replace every application's `k8s.pod.name` and
//! `k8s.namespace.name` with the gateway's, so every span would claim to
//! come from the gateway's pod. The collector's detector sets node identity
//! only, and so does this one.

use serde::Deserialize;
use tracegate_model::otlp::KeyValue;

use super::{string_kv, DetectContext, DetectError, ResourceAttributesConfig};
use crate::config::ComponentError;
use crate::kube::{Auth, KubeApi, Unavailable};

pub(super) const ATTRIBUTES: &[(&str, bool)] = &[
    ("k8s.node.name", true),
    ("k8s.node.uid", true),
    ("k8s.cluster.uid", true),
    ("k8s.cluster.name", true),
];

/// How the collector authenticates to the Kubernetes API (`auth_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum AuthType {
    #[serde(rename = "none")]
    None,
    #[default]
    #[serde(rename = "serviceAccount")]
    ServiceAccount,
    #[serde(rename = "kubeConfig")]
    KubeConfig,
    #[serde(rename = "tls")]
    Tls,
}

/// `resource_detection: k8s_api:` (or `k8snode:` / `kubernetes:`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The environment variable holding the node's name (downward API
    /// `spec.nodeName`). Default `K8S_NODE_NAME`.
    #[serde(default = "default_node_var")]
    pub node_from_env_var: String,
    /// How to reach the Kubernetes API for `k8s.node.uid` and
    /// `k8s.cluster.uid`: `serviceAccount` (default) or `none`.
    #[serde(default)]
    pub auth_type: AuthType,
    /// The kubeconfig context (with `auth_type: kubeConfig`).
    #[serde(default)]
    pub context: Option<String>,
    /// Sets `k8s.cluster.name` (Kubernetes does not tell a pod its
    /// cluster's name). tracegate's own key. Default unset.
    #[serde(default)]
    pub cluster_name: Option<String>,
    /// Removed: tracegate set `k8s.pod.name` from it, which is the
    /// gateway's own pod, not the application's. Refused with the reason.
    #[serde(default)]
    pub pod_from_env_var: Option<serde_json::Value>,
    /// Removed, as `pod_from_env_var`.
    #[serde(default)]
    pub namespace_from_env_var: Option<serde_json::Value>,
    /// Per-attribute switches; all enabled by default.
    #[serde(default)]
    pub resource_attributes: ResourceAttributesConfig,
}

fn default_node_var() -> String {
    "K8S_NODE_NAME".into()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_from_env_var: default_node_var(),
            auth_type: AuthType::default(),
            context: None,
            cluster_name: None,
            pod_from_env_var: None,
            namespace_from_env_var: None,
            resource_attributes: ResourceAttributesConfig::default(),
        }
    }
}

impl Config {
    /// `section` is the key the settings sit under (`k8s_api`, `k8snode`).
    pub(super) fn validate(&self, section: &str) -> Result<Vec<String>, ComponentError> {
        for (key, attribute) in [
            ("pod_from_env_var", "k8s.pod.name"),
            ("namespace_from_env_var", "k8s.namespace.name"),
        ] {
            let given = match key {
                "pod_from_env_var" => &self.pod_from_env_var,
                _ => &self.namespace_from_env_var,
            };
            if given.is_some() {
                return Err(ComponentError {
                    path: format!("{section}.{key}"),
                    message: format!(
                        "no longer supported: it set {attribute} from the gateway's own \
                         environment, which is the gateway's pod, not the application's, and \
                         with override: true replaced every application's {attribute}; the \
                         collector's detector sets node identity only. Remove the key (to \
                         tag spans with their own pod, use the k8sattributes processor)"
                    ),
                });
            }
        }
        if self.node_from_env_var.is_empty() {
            return Err(ComponentError {
                path: format!("{section}.node_from_env_var"),
                message: "must name an environment variable".into(),
            });
        }
        match self.auth_type {
            AuthType::KubeConfig | AuthType::Tls => {
                let name = if self.auth_type == AuthType::KubeConfig {
                    "kubeConfig"
                } else {
                    "tls"
                };
                return Err(ComponentError {
                    path: format!("{section}.auth_type"),
                    message: format!(
                        "auth_type {name} is not implemented in tracegate; use serviceAccount \
                         (the default) or none"
                    ),
                });
            }
            AuthType::None | AuthType::ServiceAccount => {}
        }
        let mut warnings = Vec::new();
        if self.context.is_some() {
            warnings.push(format!(
                "{section}.context applies only to auth_type kubeConfig; it is ignored"
            ));
        }
        Ok(warnings)
    }
}

/// The API server as a pod reaches it ([`crate::kube`]).
struct Api(KubeApi);

impl Api {
    /// `None` where the API cannot be reached from here (not in a pod, or
    /// no service account token mounted): the UIDs cannot be known.
    fn find(ctx: &DetectContext, config: &Config) -> Result<Option<Api>, DetectError> {
        let auth = match config.auth_type {
            AuthType::ServiceAccount => Auth::ServiceAccount,
            // As the collector's `none`: no credentials, no verification.
            _ => Auth::None,
        };
        let var = |name: &str| ctx.var(name).map(str::to_string);
        match KubeApi::find(&var, &ctx.root, auth) {
            Ok(api) => Ok(Some(Api(api))),
            Err(Unavailable::NotInPod(_)) => Ok(None),
            Err(Unavailable::Invalid(reason)) => Err(DetectError::Failed(reason)),
        }
    }

    /// `metadata.uid` of the object at `path`; the status on failure.
    async fn uid(&self, path: &str) -> Result<String, (Option<u16>, String)> {
        let response = self.0.get(path, 1 << 20).await.map_err(|e| (None, e))?;
        let status = response.status.as_u16();
        let body = response
            .ok_text(&format!("GET {path}"))
            .map_err(|e| (Some(status), e))?;
        #[derive(serde::Deserialize)]
        struct Object {
            metadata: Metadata,
        }
        #[derive(serde::Deserialize)]
        struct Metadata {
            uid: String,
        }
        serde_json::from_str::<Object>(&body)
            .map(|o| o.metadata.uid)
            .map_err(|e| (Some(status), format!("GET {path}: {e}")))
    }
}

/// `node_uid` / `cluster_uid`: whether those attributes are switched on
/// (each costs an API call).
pub(super) async fn detect(
    ctx: &DetectContext,
    config: &Config,
    node_uid: bool,
    cluster_uid: bool,
) -> Result<Vec<KeyValue>, DetectError> {
    let node = ctx.var(&config.node_from_env_var).ok_or_else(|| {
        DetectError::Absent(format!(
            "not running on Kubernetes ({} is not set)",
            config.node_from_env_var
        ))
    })?;
    let mut out = vec![string_kv("k8s.node.name", node)];
    if let Some(cluster) = config.cluster_name.as_deref().filter(|c| !c.is_empty()) {
        out.push(string_kv("k8s.cluster.name", cluster));
    }
    if !(node_uid || cluster_uid) {
        return Ok(out);
    }
    let Some(api) = Api::find(ctx, config)? else {
        tracing::info!(
            "not in a pod with a service account: k8s.node.uid and k8s.cluster.uid are not set"
        );
        return Ok(out);
    };
    if node_uid {
        // As in the collector: a node UID that cannot be read is a failure
        // (the service account needs `get` on nodes).
        let uid = api
            .uid(&format!("/api/v1/nodes/{node}"))
            .await
            .map_err(|(_, e)| DetectError::Failed(format!("k8s.node.uid: {e}")))?;
        out.push(string_kv("k8s.node.uid", uid));
    }
    if cluster_uid {
        // The cluster's UID is kube-system's. Without permission it is
        // skipped with a warning, as in the collector.
        match api.uid("/api/v1/namespaces/kube-system").await {
            Ok(uid) => out.push(string_kv("k8s.cluster.uid", uid)),
            Err((Some(401 | 403), e)) => tracing::warn!(
                reason = %e,
                "no permission to get namespace kube-system: k8s.cluster.uid is not set"
            ),
            Err((_, e)) => return Err(DetectError::Failed(format!("k8s.cluster.uid: {e}"))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::resource_detection::tests::as_pairs;

    #[tokio::test]
    async fn node_identity_only_never_the_gateways_own_pod() {
        let ctx = DetectContext::for_test(&[
            ("K8S_NODE_NAME", "node-a"),
            ("K8S_POD_NAME", "agent-x7"),
            ("K8S_NAMESPACE", "observability"),
            ("K8S_POD_NAMESPACE", "observability"),
            ("POD_NAME", "agent-x7"),
        ]);
        let config = Config {
            cluster_name: Some("prod-eu".into()),
            ..Config::default()
        };
        let detected = detect(&ctx, &config, true, true).await.unwrap();
        assert_eq!(
            as_pairs(&detected),
            [("k8s.node.name", "node-a"), ("k8s.cluster.name", "prod-eu")]
        );
        assert!(matches!(
            detect(
                &DetectContext::for_test(&[]),
                &Config::default(),
                true,
                true
            )
            .await,
            Err(DetectError::Absent(_))
        ));
    }

    #[test]
    fn removed_and_unimplemented_keys_are_refused_with_the_reason() {
        let pod: Config =
            crate::config::from_value(serde_json::json!({"pod_from_env_var": "K8S_POD_NAME"}))
                .unwrap();
        let e = pod.validate("k8snode").unwrap_err();
        assert_eq!(e.path, "k8snode.pod_from_env_var");
        assert!(e.message.contains("gateway's own"), "{e}");
        let ns: Config = crate::config::from_value(
            serde_json::json!({"namespace_from_env_var": "K8S_NAMESPACE"}),
        )
        .unwrap();
        assert!(ns
            .validate("k8s_api")
            .unwrap_err()
            .message
            .contains("k8s.namespace.name"));
        let kubeconfig: Config =
            crate::config::from_value(serde_json::json!({"auth_type": "kubeConfig"})).unwrap();
        assert!(kubeconfig
            .validate("k8s_api")
            .unwrap_err()
            .message
            .contains("not implemented"));
        let none: Config = crate::config::from_value(serde_json::json!({
            "auth_type": "none", "node_from_env_var": "MY_NODE"
        }))
        .unwrap();
        assert!(none.validate("k8s_api").unwrap().is_empty());
        assert!(
            crate::config::from_value::<Config>(serde_json::json!({"auth_type": "token"})).is_err()
        );
    }

    /// The node's and the cluster's UIDs from a fake API server speaking
    /// HTTPS with the cluster CA, the service account's bearer token
    /// required, as a pod sees the real one.
    #[tokio::test]
    async fn uids_from_the_api_with_the_service_account() {
        use crate::exporter::test_support::TestPki;
        use crate::processor::resource_detection::tests::FakeServer;
        let pki = TestPki::new();
        let server = FakeServer::start_tls(&pki, |req| {
            if req.header("authorization") != Some("Bearer sa-token") {
                return (401, vec![], r#"{"kind":"Status","code":401}"#.into());
            }
            match req.path.as_str() {
                "/api/v1/nodes/node-a" => (
                    200,
                    vec![],
                    r#"{"kind":"Node","metadata":{"name":"node-a","uid":"2f8c0c6e-node"}}"#.into(),
                ),
                "/api/v1/namespaces/kube-system" => {
                    (403, vec![], r#"{"kind":"Status","code":403}"#.into())
                }
                _ => (404, vec![], String::new()),
            }
        })
        .await;
        let root = tempfile::tempdir().unwrap();
        let sa = root
            .path()
            .join("var/run/secrets/kubernetes.io/serviceaccount");
        std::fs::create_dir_all(&sa).unwrap();
        std::fs::write(sa.join("token"), "sa-token\n").unwrap();
        std::fs::write(sa.join("ca.crt"), &pki.ca_pem).unwrap();
        let port = server.authority().rsplit(':').next().unwrap().to_string();
        let ctx = DetectContext::for_test(&[
            ("K8S_NODE_NAME", "node-a"),
            ("KUBERNETES_SERVICE_HOST", "localhost"),
            ("KUBERNETES_SERVICE_PORT", &port),
        ])
        .with_root(root.path());
        let detected = detect(&ctx, &Config::default(), true, true).await.unwrap();
        // kube-system forbidden: the cluster UID is skipped, not an error.
        assert_eq!(
            as_pairs(&detected),
            [
                ("k8s.node.name", "node-a"),
                ("k8s.node.uid", "2f8c0c6e-node")
            ]
        );
        // A node the API does not know: a failure.
        let unknown = DetectContext::for_test(&[
            ("K8S_NODE_NAME", "node-b"),
            ("KUBERNETES_SERVICE_HOST", "localhost"),
            ("KUBERNETES_SERVICE_PORT", &port),
        ])
        .with_root(root.path());
        assert!(matches!(
            detect(&unknown, &Config::default(), true, false).await,
            Err(DetectError::Failed(_))
        ));
        // Switched off: no API call at all.
        let off = detect(&unknown, &Config::default(), false, false)
            .await
            .unwrap();
        assert_eq!(as_pairs(&off), [("k8s.node.name", "node-b")]);
        // Not in a pod: the UIDs cannot be known, the name still is.
        let outside = DetectContext::for_test(&[("K8S_NODE_NAME", "node-a")]);
        let detected = detect(&outside, &Config::default(), true, true)
            .await
            .unwrap();
        assert_eq!(as_pairs(&detected), [("k8s.node.name", "node-a")]);
    }
}
