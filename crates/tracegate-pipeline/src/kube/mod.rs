//! The Kubernetes API as a pod reaches it: the API server's address from
//! `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT`, the service
//! account's token and the cluster's CA from
//! `/var/run/secrets/kubernetes.io/serviceaccount`. Used by the `k8s_api`
//! resource detector and the `k8s` membership resolver.
//!
//! Two variables of tracegate's own move it, for tests and for
//! `kubectl proxy`: `TRACEGATE_K8S_API_URL` (`http://` or `https://`, in
//! place of the two `KUBERNETES_SERVICE_*` variables) and
//! `TRACEGATE_K8S_SERVICE_ACCOUNT_DIR` (the directory holding `token`,
//! `ca.crt` and `namespace`).
//!
//! The token is read again for every request: the kubelet rotates
//! projected service account tokens, and a watch runs for the life of the
//! process.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{Method, Uri};

use crate::http_client::{self, Response, Streaming};
use crate::tls::TlsClientConfig;

#[cfg(any(test, feature = "test-support"))]
pub mod fake;

/// Where a pod finds its service account, under the file system root.
const SERVICE_ACCOUNT: &str = "var/run/secrets/kubernetes.io/serviceaccount";
/// Replaces `KUBERNETES_SERVICE_HOST`/`PORT`: the API's base URL.
pub const API_URL_VAR: &str = "TRACEGATE_K8S_API_URL";
/// Replaces the service account directory.
pub const SERVICE_ACCOUNT_DIR_VAR: &str = "TRACEGATE_K8S_SERVICE_ACCOUNT_DIR";

/// How requests authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    /// The pod's service account token, the server verified with the
    /// cluster's CA.
    ServiceAccount,
    /// No credentials, the server's certificate not verified (the
    /// collector's `auth_type: none`).
    None,
}

/// Why the API cannot be used from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unavailable {
    /// Not in a pod (no API address, or no service account token).
    NotInPod(String),
    /// In a pod, but what it was given is unusable.
    Invalid(String),
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::NotInPod(m) | Unavailable::Invalid(m) => f.write_str(m),
        }
    }
}

/// The API server and how to authenticate to it.
#[derive(Clone)]
pub(crate) struct KubeApi {
    host: String,
    port: u16,
    /// `None`: plain HTTP (only through `TRACEGATE_K8S_API_URL`).
    tls: Option<Arc<rustls::ClientConfig>>,
    token_file: Option<PathBuf>,
}

impl std::fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApi")
            .field("url", &self.base_url())
            .field("token_file", &self.token_file)
            .finish()
    }
}

/// The service account directory: `TRACEGATE_K8S_SERVICE_ACCOUNT_DIR`, else
/// the standard mount under `root`.
pub(crate) fn service_account_dir(var: &dyn Fn(&str) -> Option<String>, root: &Path) -> PathBuf {
    match var(SERVICE_ACCOUNT_DIR_VAR) {
        Some(dir) => PathBuf::from(dir),
        None => root.join(SERVICE_ACCOUNT),
    }
}

/// The namespace the pod runs in, from its service account; `None` outside
/// a pod.
pub(crate) fn own_namespace(var: &dyn Fn(&str) -> Option<String>, root: &Path) -> Option<String> {
    std::fs::read_to_string(service_account_dir(var, root).join("namespace"))
        .ok()
        .map(|ns| ns.trim().to_string())
        .filter(|ns| !ns.is_empty())
}

impl KubeApi {
    /// The API as this process finds it. `var` reads an environment
    /// variable (unset and empty alike); `root` is the file system root the
    /// service account is mounted under.
    pub(crate) fn find(
        var: &dyn Fn(&str) -> Option<String>,
        root: &Path,
        auth: Auth,
    ) -> Result<KubeApi, Unavailable> {
        let account = service_account_dir(var, root);
        let (https, host, port, moved) = match var(API_URL_VAR) {
            Some(url) => {
                let (https, host, port) = parse_url(&url)
                    .map_err(|e| Unavailable::Invalid(format!("{API_URL_VAR} {url:?}: {e}")))?;
                (https, host, port, true)
            }
            None => {
                let (Some(host), Some(port)) = (
                    var("KUBERNETES_SERVICE_HOST"),
                    var("KUBERNETES_SERVICE_PORT"),
                ) else {
                    return Err(Unavailable::NotInPod(format!(
                        "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (not \
                         running in a pod); {API_URL_VAR} can name the API instead"
                    )));
                };
                let port: u16 = port.parse().map_err(|_| {
                    Unavailable::Invalid(format!("KUBERNETES_SERVICE_PORT {port:?} is not a port"))
                })?;
                (true, host, port, false)
            }
        };
        let token_file = match auth {
            Auth::ServiceAccount => {
                let token = account.join("token");
                if token.is_file() {
                    Some(token)
                } else if moved {
                    // `kubectl proxy` authenticates for its clients.
                    None
                } else {
                    return Err(Unavailable::NotInPod(format!(
                        "no service account token at {} (automountServiceAccountToken: false?)",
                        token.display()
                    )));
                }
            }
            Auth::None => None,
        };
        let tls = if https {
            let config = match auth {
                Auth::ServiceAccount => {
                    let ca = account.join("ca.crt");
                    TlsClientConfig {
                        // Without the cluster's CA (an API named by
                        // TRACEGATE_K8S_API_URL), the system's trust store.
                        ca_file: ca.is_file().then_some(ca),
                        ..TlsClientConfig::default()
                    }
                }
                Auth::None => TlsClientConfig {
                    insecure_skip_verify: true,
                    ..TlsClientConfig::default()
                },
            };
            let config = config
                .load(&[b"http/1.1"])
                .map_err(|e| Unavailable::Invalid(format!("Kubernetes API TLS: {e}")))?;
            Some(Arc::new(config))
        } else {
            None
        };
        Ok(KubeApi {
            host,
            port,
            tls,
            token_file,
        })
    }

    /// `https://host:port`, for messages.
    pub(crate) fn base_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!(
            "{scheme}://{}",
            http_client::authority(&self.host, self.port)
        )
    }

    /// GETs `path` (with its query) and reads the whole body, refused
    /// beyond `limit` bytes.
    pub(crate) async fn get(&self, path: &str, limit: usize) -> Result<Response, String> {
        let response = self.open(path).await?;
        let status = response.status;
        let headers = response.headers.clone();
        let body = response
            .collect(limit)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// GETs `path` and returns once the response's head has arrived: a
    /// watch's body is read as it streams.
    pub(crate) async fn open(&self, path: &str) -> Result<Streaming, String> {
        let bearer = match &self.token_file {
            Some(file) => {
                let token = std::fs::read_to_string(file).map_err(|e| {
                    format!("reading the service account token {}: {e}", file.display())
                })?;
                Some(format!("Bearer {}", token.trim()))
            }
            None => None,
        };
        let user_agent = concat!("tracegate/", env!("CARGO_PKG_VERSION"));
        let mut headers = vec![("Accept", "application/json"), ("User-Agent", user_agent)];
        if let Some(bearer) = &bearer {
            headers.push(("Authorization", bearer.as_str()));
        }
        http_client::open(
            &self.host,
            self.port,
            self.tls.clone(),
            Method::GET,
            path,
            &headers,
        )
        .await
    }
}

/// `(https, host, port)` of an `http://` or `https://` base URL.
fn parse_url(url: &str) -> Result<(bool, String, u16), String> {
    let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("must start with http:// or https://".into()),
    };
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err("must not have a path".into());
    }
    let host = uri
        .host()
        .ok_or("has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    Ok((https, host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned().filter(|v| !v.is_empty())
    }

    #[test]
    fn in_cluster_needs_the_address_and_a_token() {
        let root = tempfile::tempdir().unwrap();
        let none = KubeApi::find(&vars(&[]), root.path(), Auth::ServiceAccount).unwrap_err();
        assert!(
            matches!(&none, Unavailable::NotInPod(m) if m.contains("KUBERNETES_SERVICE_HOST")),
            "{none}"
        );
        let in_pod = vars(&[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
        ]);
        let no_token = KubeApi::find(&in_pod, root.path(), Auth::ServiceAccount).unwrap_err();
        assert!(
            matches!(&no_token, Unavailable::NotInPod(m) if m.contains("token")),
            "{no_token}"
        );
        let bad_port = vars(&[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "https"),
        ]);
        assert!(matches!(
            KubeApi::find(&bad_port, root.path(), Auth::ServiceAccount),
            Err(Unavailable::Invalid(_))
        ));
        let sa = root.path().join(SERVICE_ACCOUNT);
        std::fs::create_dir_all(&sa).unwrap();
        std::fs::write(sa.join("token"), "t0ken\n").unwrap();
        std::fs::write(sa.join("namespace"), "observability").unwrap();
        let api = KubeApi::find(&in_pod, root.path(), Auth::ServiceAccount).unwrap();
        assert_eq!(api.base_url(), "https://10.96.0.1:443");
        assert_eq!(api.token_file, Some(sa.join("token")));
        assert_eq!(
            own_namespace(&in_pod, root.path()).as_deref(),
            Some("observability")
        );
        // IPv6 API addresses are bracketed in URLs.
        let v6 = vars(&[
            ("KUBERNETES_SERVICE_HOST", "fd00::1"),
            ("KUBERNETES_SERVICE_PORT", "6443"),
        ]);
        let api = KubeApi::find(&v6, root.path(), Auth::ServiceAccount).unwrap();
        assert_eq!(api.base_url(), "https://[fd00::1]:6443");
    }

    #[test]
    fn the_api_url_and_service_account_dir_can_be_moved() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("namespace"), "tracing\n").unwrap();
        let dir_str = dir.path().to_str().unwrap();
        let moved = vars(&[
            (API_URL_VAR, "http://127.0.0.1:8001"),
            (SERVICE_ACCOUNT_DIR_VAR, dir_str),
        ]);
        let root = Path::new("/nonexistent");
        // No token file: `kubectl proxy` authenticates for its clients.
        let api = KubeApi::find(&moved, root, Auth::ServiceAccount).unwrap();
        assert_eq!(api.base_url(), "http://127.0.0.1:8001");
        assert_eq!(api.token_file, None);
        assert_eq!(own_namespace(&moved, root).as_deref(), Some("tracing"));
        std::fs::write(dir.path().join("token"), "abc").unwrap();
        let api = KubeApi::find(&moved, root, Auth::ServiceAccount).unwrap();
        assert_eq!(api.token_file, Some(dir.path().join("token")));
        for bad in ["127.0.0.1:8001", "ftp://x", "http://x/api"] {
            let e = KubeApi::find(&vars(&[(API_URL_VAR, bad)]), root, Auth::ServiceAccount)
                .unwrap_err();
            assert!(
                matches!(&e, Unavailable::Invalid(m) if m.contains(API_URL_VAR)),
                "{bad}: {e}"
            );
        }
    }
}
