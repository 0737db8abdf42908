//! The `k8s` resolver: a fleet's members are the ready endpoints of a
//! Kubernetes Service, read from its EndpointSlices (`discovery.k8s.io/v1`,
//! label `kubernetes.io/service-name=<name>`) through the Kubernetes API
//! with the pod's service account ([`crate::kube`]).
//!
//! The protocol is the API's own list and watch: a LIST gives the slices
//! and the collection's `resourceVersion`; a WATCH from there
//! (`allowWatchBookmarks=true`) streams `ADDED` / `MODIFIED` / `DELETED` /
//! `BOOKMARK` / `ERROR` events, one JSON object per line. A watch the
//! server ends is resumed from the last resourceVersion seen; `410 Gone`
//! (as an HTTP status or an `ERROR` event) and any other failure lead to a
//! new LIST, after a backoff when failures repeat.
//!
//! Members: every endpoint of every slice of the Service whose conditions
//! are not `ready: false`, not `serving: false` and not
//! `terminating: true` (an absent condition reads as ready, serving and
//! not terminating, as the API defines). `serving` matters only for
//! Services with `publishNotReadyAddresses`, whose endpoints are always
//! `ready`: a pod failing its readiness probe is left out there too. One
//! address per endpoint (the first; the API defines no meaning for more),
//! times each configured port, as `host:port`, sorted. A pod listed in an
//! IPv4 and an IPv6 slice (dual stack) counts once, by its IPv4 address.
//! With `return_hostnames`, the host is `<hostname>.<service>.<namespace>`
//! as in the collector (resolvable for a StatefulSet whose `serviceName` is
//! the Service); endpoints without a hostname are left out with a warning.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::kube::{self, Auth, KubeApi};

const DEFAULT_PORT: u16 = 4317;
/// The collector's default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// A LIST larger than this is refused.
const LIST_LIMIT: usize = 32 << 20;
/// A watch event larger than this is refused.
const EVENT_LIMIT: usize = 16 << 20;
/// A watch asks the server to end it after this many seconds, plus up to
/// as many again at random so a fleet's watches do not renew together
/// (client-go does the same).
const WATCH_SECONDS: u64 = 300;
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// `loadbalancing: resolver: k8s:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sResolverConfig {
    /// The Service whose EndpointSlices list the members: `name.namespace`
    /// (also `name.namespace.svc[.<cluster domain>]`); a bare `name` is
    /// looked up in the pod's own namespace.
    #[serde(default)]
    pub service: String,
    /// The ports to send to on every endpoint. Default `[4317]`.
    #[serde(default = "default_ports")]
    pub ports: Vec<u16>,
    /// Bounds each API call: a LIST, and a WATCH until its response
    /// starts. Default `1s`, as the collector.
    #[serde(
        default = "default_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub timeout: Duration,
    /// Members as `<hostname>.<service>.<namespace>:<port>` instead of the
    /// pod's IP.
    #[serde(default)]
    pub return_hostnames: bool,
}

fn default_ports() -> Vec<u16> {
    vec![DEFAULT_PORT]
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

impl Default for K8sResolverConfig {
    fn default() -> Self {
        K8sResolverConfig {
            service: String::new(),
            ports: default_ports(),
            timeout: DEFAULT_TIMEOUT,
            return_hostnames: false,
        }
    }
}

impl K8sResolverConfig {
    /// Pure checks; messages start with the key.
    pub fn validate(&self) -> Result<(), String> {
        ServiceRef::parse(&self.service)?;
        if self.ports.is_empty() {
            return Err("ports: at least one port is needed (default [4317])".into());
        }
        let mut seen = BTreeSet::new();
        for &port in &self.ports {
            if port == 0 {
                return Err("ports: 0 is not a port".into());
            }
            if !seen.insert(port) {
                return Err(format!("ports: {port} is listed twice"));
            }
        }
        if self.timeout.is_zero() {
            return Err("timeout: must be more than 0".into());
        }
        Ok(())
    }
}

/// `service` split into its name and, where given, its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceRef {
    name: String,
    namespace: Option<String>,
}

impl ServiceRef {
    fn parse(service: &str) -> Result<ServiceRef, String> {
        if service.is_empty() {
            return Err(
                "service: required: the Service whose EndpointSlices list the \
                        backends, as name.namespace (a bare name means the pod's own namespace)"
                    .into(),
            );
        }
        let parts: Vec<&str> = service.split('.').collect();
        let (name, namespace) = match parts.as_slice() {
            [name] => (*name, None),
            [name, namespace] => (*name, Some(*namespace)),
            // The Service's DNS name: name.namespace.svc.cluster.local
            [name, namespace, "svc", ..] => (*name, Some(*namespace)),
            _ => {
                return Err(format!(
                    "service: {service:?} is not name.namespace (nor \
                     name.namespace.svc.<cluster domain>)"
                ))
            }
        };
        if !is_dns_label(name) || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(format!(
                "service: {name:?} is not a Service name (lower-case letters, digits and '-', \
                 starting with a letter, at most 63)"
            ));
        }
        if let Some(namespace) = namespace {
            if !is_dns_label(namespace) {
                return Err(format!(
                    "service: {namespace:?} is not a namespace name (lower-case letters, digits \
                     and '-', at most 63)"
                ));
            }
        }
        Ok(ServiceRef {
            name: name.to_string(),
            namespace: namespace.map(str::to_string),
        })
    }
}

/// An RFC 1123 label: what Kubernetes allows for namespace names.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Starts watching the Service's EndpointSlices. Returns once the first
/// LIST has answered (an error if it fails: no API to reach, a refused
/// token, no RBAC permission); the receiver then holds the sorted
/// `host:port` members and sees every change until `shutdown`.
pub async fn start(
    cfg: &K8sResolverConfig,
    shutdown: CancellationToken,
) -> Result<watch::Receiver<Arc<[String]>>, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    start_in(cfg, &var, Path::new("/"), shutdown).await
}

/// [`start`] with the environment and file system root given.
async fn start_in(
    cfg: &K8sResolverConfig,
    var: &(dyn Fn(&str) -> Option<String> + Sync),
    root: &Path,
    shutdown: CancellationToken,
) -> Result<watch::Receiver<Arc<[String]>>, String> {
    cfg.validate()?;
    let service = ServiceRef::parse(&cfg.service)?;
    let api = KubeApi::find(var, root, Auth::ServiceAccount)
        .map_err(|e| format!("k8s resolver: cannot reach the Kubernetes API: {e}"))?;
    let namespace = match service.namespace {
        Some(namespace) => namespace,
        None => kube::own_namespace(var, root).unwrap_or_else(|| {
            tracing::warn!(
                service = %service.name,
                "k8s resolver: no namespace given and the pod's own is unknown; using \"default\""
            );
            "default".to_string()
        }),
    };
    let watcher = Watcher {
        api,
        name: service.name,
        namespace,
        ports: cfg.ports.clone(),
        return_hostnames: cfg.return_hostnames,
        timeout: cfg.timeout,
    };
    let mut state = Membership::default();
    watcher.list(&mut state).await.map_err(|e| {
        format!(
            "k8s resolver: listing the EndpointSlices of service {} in namespace {} at {} \
             failed: {}",
            watcher.name,
            watcher.namespace,
            watcher.api.base_url(),
            watcher.describe(&e)
        )
    })?;
    let (members, missing) = watcher.members(&state);
    watcher.warn_missing_hostnames(&mut state, missing);
    tracing::info!(
        service = %watcher.name,
        namespace = %watcher.namespace,
        members = members.len(),
        "k8s resolver: watching EndpointSlices"
    );
    let (tx, rx) = watch::channel(Arc::from(members));
    tokio::spawn(watcher.run(state, tx, shutdown));
    Ok(rx)
}

/// What the API told so far.
#[derive(Default)]
struct Membership {
    /// By slice name (unique within the namespace).
    slices: HashMap<String, Slice>,
    /// Where a watch resumes.
    resource_version: String,
    /// Endpoints left out for want of a hostname, last counted.
    missing_hostnames: usize,
}

/// Why an API call failed.
#[derive(Debug)]
enum ApiError {
    /// 410: the resourceVersion was compacted away; list again.
    Gone,
    /// Another error status, with the Status message.
    Status { code: u16, message: String },
    /// No answer, a broken connection, an undecodable body.
    Failed(String),
}

struct Watcher {
    api: KubeApi,
    name: String,
    namespace: String,
    ports: Vec<u16>,
    return_hostnames: bool,
    timeout: Duration,
}

impl Watcher {
    fn collection(&self) -> String {
        format!(
            "/apis/discovery.k8s.io/v1/namespaces/{}/endpointslices?labelSelector=\
             kubernetes.io%2Fservice-name%3D{}",
            self.namespace, self.name
        )
    }

    async fn list(&self, state: &mut Membership) -> Result<(), ApiError> {
        let response =
            tokio::time::timeout(self.timeout, self.api.get(&self.collection(), LIST_LIMIT))
                .await
                .map_err(|_| ApiError::Failed(format!("no answer within {}", self.timeout_text())))?
                .map_err(ApiError::Failed)?;
        if response.status != http::StatusCode::OK {
            return Err(status_error(response.status.as_u16(), &response.body));
        }
        let list: SliceList = serde_json::from_slice(&response.body)
            .map_err(|e| ApiError::Failed(format!("undecodable EndpointSliceList: {e}")))?;
        state.slices = list
            .items
            .into_iter()
            .map(|slice| (slice.metadata.name.clone(), slice))
            .collect();
        state.resource_version = list.metadata.resource_version;
        Ok(())
    }

    /// Follows the watch until it ends (`Ok`) or fails. `progress` is set
    /// once an event arrives.
    async fn watch(
        &self,
        state: &mut Membership,
        tx: &watch::Sender<Arc<[String]>>,
        progress: &mut bool,
    ) -> Result<(), ApiError> {
        let seconds = WATCH_SECONDS + jitter(WATCH_SECONDS);
        let path = format!(
            "{}&watch=1&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds={seconds}",
            self.collection(),
            query_escape(&state.resource_version)
        );
        let mut response = tokio::time::timeout(self.timeout, self.api.open(&path))
            .await
            .map_err(|_| ApiError::Failed(format!("no answer within {}", self.timeout_text())))?
            .map_err(ApiError::Failed)?;
        if response.status != http::StatusCode::OK {
            let code = response.status.as_u16();
            let body = tokio::time::timeout(self.timeout, response.collect(64 << 10))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            return Err(status_error(code, &body));
        }
        // The server ends the watch at timeoutSeconds; one that does not
        // is given up on a little later.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds) + self.timeout;
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let chunk = match tokio::time::timeout_at(deadline, response.chunk()).await {
                Err(_) | Ok(None) => return Ok(()),
                Ok(Some(Err(e))) => return Err(ApiError::Failed(format!("watch broke: {e}"))),
                Ok(Some(Ok(chunk))) => chunk,
            };
            pending.extend_from_slice(&chunk);
            let mut outcome = Ok(false);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                *progress = true;
                match self.apply(state, &line) {
                    Ok(changed) => {
                        outcome = outcome.map(|before| before || changed);
                    }
                    Err(e) => {
                        outcome = Err((outcome.unwrap_or(false), e));
                        break;
                    }
                }
            }
            match outcome {
                Ok(changed) => {
                    if changed {
                        self.publish(state, tx);
                    }
                }
                Err((changed, e)) => {
                    if changed {
                        self.publish(state, tx);
                    }
                    return Err(e);
                }
            }
            if pending.len() > EVENT_LIMIT {
                return Err(ApiError::Failed(format!(
                    "a watch event is larger than {} MiB",
                    EVENT_LIMIT >> 20
                )));
            }
        }
    }

    /// Applies one watch event; `Ok(true)` when the slices changed.
    fn apply(&self, state: &mut Membership, line: &[u8]) -> Result<bool, ApiError> {
        let event: WatchEvent = serde_json::from_slice(line)
            .map_err(|e| ApiError::Failed(format!("undecodable watch event: {e}")))?;
        let slice = |object: serde_json::Value| {
            serde_json::from_value::<Slice>(object).map_err(|e| {
                ApiError::Failed(format!("undecodable EndpointSlice in a watch event: {e}"))
            })
        };
        match event.kind.as_str() {
            "ADDED" | "MODIFIED" => {
                let slice = slice(event.object)?;
                state.resource_version = slice.metadata.resource_version.clone();
                state.slices.insert(slice.metadata.name.clone(), slice);
                Ok(true)
            }
            "DELETED" => {
                let slice = slice(event.object)?;
                state.resource_version = slice.metadata.resource_version;
                state.slices.remove(&slice.metadata.name);
                Ok(true)
            }
            "BOOKMARK" => {
                let bookmark: Bookmark = serde_json::from_value(event.object)
                    .map_err(|e| ApiError::Failed(format!("undecodable BOOKMARK: {e}")))?;
                state.resource_version = bookmark.metadata.resource_version;
                Ok(false)
            }
            "ERROR" => {
                let status: Status = serde_json::from_value(event.object).unwrap_or_default();
                Err(if status.code == 410 {
                    ApiError::Gone
                } else {
                    ApiError::Status {
                        code: status.code,
                        message: status.message,
                    }
                })
            }
            other => {
                tracing::debug!(event = other, "k8s resolver: ignoring a watch event");
                Ok(false)
            }
        }
    }

    /// Lists and watches until `shutdown` or until no one holds the
    /// receiver.
    async fn run(
        self,
        mut state: Membership,
        tx: watch::Sender<Arc<[String]>>,
        shutdown: CancellationToken,
    ) {
        let mut list_first = false;
        let mut failures: u32 = 0;
        loop {
            let mut progress = false;
            let cycle = async {
                if list_first {
                    self.list(&mut state).await?;
                    self.publish(&mut state, &tx);
                }
                self.watch(&mut state, &tx, &mut progress).await
            };
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                outcome = cycle => outcome,
            };
            if progress {
                failures = 0;
            }
            let delay = backoff(failures);
            failures = failures.saturating_add(1);
            match outcome {
                Ok(()) => {
                    list_first = false;
                    tracing::debug!("k8s resolver: the watch ended; resuming it");
                }
                Err(ApiError::Gone) => {
                    list_first = true;
                    tracing::info!(
                        "k8s resolver: the watch's resourceVersion expired (410 Gone); listing again"
                    );
                }
                Err(e) => {
                    list_first = true;
                    tracing::warn!(
                        service = %self.name,
                        namespace = %self.namespace,
                        error = %self.describe(&e),
                        retry_in = ?delay,
                        "k8s resolver: watching EndpointSlices failed; listing again"
                    );
                }
            }
            if !delay.is_zero() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }

    fn publish(&self, state: &mut Membership, tx: &watch::Sender<Arc<[String]>>) {
        let (members, missing) = self.members(state);
        self.warn_missing_hostnames(state, missing);
        tx.send_if_modified(|current| {
            if current[..] == members[..] {
                return false;
            }
            tracing::info!(
                service = %self.name,
                namespace = %self.namespace,
                members = members.len(),
                "k8s resolver: membership changed"
            );
            tracing::debug!(?members, "k8s resolver: members");
            *current = Arc::from(members);
            true
        });
    }

    fn warn_missing_hostnames(&self, state: &mut Membership, missing: usize) {
        if missing != state.missing_hostnames && missing > 0 {
            tracing::warn!(
                service = %self.name,
                endpoints = missing,
                "k8s resolver: return_hostnames is set but ready endpoints have no hostname; \
                 they are left out (give the pods a hostname and the Service's name as \
                 subdomain, as a StatefulSet does)"
            );
        }
        state.missing_hostnames = missing;
    }

    /// The sorted `host:port` members, and how many usable endpoints were
    /// left out for want of a hostname.
    fn members(&self, state: &Membership) -> (Vec<String>, usize) {
        let mut hosts: BTreeSet<String> = BTreeSet::new();
        let mut missing = 0;
        if self.return_hostnames {
            for endpoint in state.slices.values().flat_map(|s| &s.endpoints) {
                if !endpoint.usable() || endpoint.addresses.is_empty() {
                    continue;
                }
                match endpoint.hostname.as_deref().filter(|h| !h.is_empty()) {
                    Some(hostname) => {
                        hosts.insert(format!("{hostname}.{}.{}", self.name, self.namespace));
                    }
                    None => missing += 1,
                }
            }
        } else {
            // One member per pod: by its targetRef where there is one, the
            // IPv4 address before the IPv6 one.
            let mut by_target: HashMap<String, (u8, String)> = HashMap::new();
            for slice in state.slices.values() {
                let family = match slice.address_type.as_str() {
                    "IPv4" => 0,
                    "IPv6" => 1,
                    "FQDN" => 2,
                    _ => continue,
                };
                for endpoint in slice.endpoints.iter().filter(|e| e.usable()) {
                    let Some(address) = endpoint.addresses.first() else {
                        continue;
                    };
                    let host = if family == 2 {
                        address.to_ascii_lowercase()
                    } else {
                        match address.parse::<IpAddr>() {
                            Ok(ip) => ip.to_string(),
                            Err(_) => continue,
                        }
                    };
                    let key = match &endpoint.target_ref {
                        Some(t) if !t.uid.is_empty() => format!("uid/{}", t.uid),
                        Some(t) if !t.name.is_empty() => {
                            format!("{}/{}/{}", t.kind, t.namespace, t.name)
                        }
                        _ => format!("address/{host}"),
                    };
                    let candidate = (family, host);
                    by_target
                        .entry(key)
                        .and_modify(|kept| {
                            if candidate < *kept {
                                *kept = candidate.clone();
                            }
                        })
                        .or_insert(candidate);
                }
            }
            hosts.extend(by_target.into_values().map(|(_, host)| host));
        }
        let mut members: Vec<String> = hosts
            .iter()
            .flat_map(|host| {
                self.ports
                    .iter()
                    .map(move |&port| crate::http_client::authority(host, port))
            })
            .collect();
        members.sort();
        (members, missing)
    }

    fn describe(&self, error: &ApiError) -> String {
        match error {
            ApiError::Gone => "410 Gone".into(),
            ApiError::Failed(message) => message.clone(),
            ApiError::Status { code: 401, message } => {
                format!("HTTP 401 ({message}): the API refused the service account's token")
            }
            ApiError::Status { code: 403, message } => format!(
                "HTTP 403 ({message}): the service account needs get, list and watch on \
                 endpointslices (apiGroups: [discovery.k8s.io]) in namespace {}",
                self.namespace
            ),
            ApiError::Status { code: 404, message } => format!(
                "HTTP 404 ({message}): the API serves no discovery.k8s.io/v1 EndpointSlices \
                 (Kubernetes 1.21 or later is needed)"
            ),
            ApiError::Status { code, message } => format!("HTTP {code}: {message}"),
        }
    }

    fn timeout_text(&self) -> String {
        format!("timeout {}", crate::duration::format(self.timeout))
    }
}

fn status_error(code: u16, body: &[u8]) -> ApiError {
    if code == 410 {
        return ApiError::Gone;
    }
    let message = serde_json::from_slice::<Status>(body)
        .ok()
        .map(|s| s.message)
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
            text.trim().to_string()
        });
    ApiError::Status { code, message }
}

/// A resourceVersion is opaque: escaped for the query string.
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Before the next attempt after `failures` in a row without an event.
fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    BACKOFF_FIRST
        .saturating_mul(1 << (failures - 1).min(16))
        .min(BACKOFF_MAX)
}

/// A number in `0..below`, different from call to call.
fn jitter(below: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u64::from(nanos) % below.max(1)
}

/// `null` (as the API writes empty lists) read as empty.
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

#[derive(Deserialize)]
struct SliceList {
    #[serde(default)]
    metadata: Metadata,
    #[serde(default, deserialize_with = "null_as_empty")]
    items: Vec<Slice>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(rename = "resourceVersion", default)]
    resource_version: String,
}

#[derive(Deserialize)]
struct Slice {
    #[serde(default)]
    metadata: Metadata,
    #[serde(rename = "addressType", default)]
    address_type: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    endpoints: Vec<SliceEndpoint>,
}

#[derive(Deserialize)]
struct SliceEndpoint {
    #[serde(default, deserialize_with = "null_as_empty")]
    addresses: Vec<String>,
    #[serde(default)]
    conditions: Option<Conditions>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(rename = "targetRef", default)]
    target_ref: Option<TargetRef>,
}

impl SliceEndpoint {
    fn usable(&self) -> bool {
        let c = self.conditions.as_ref();
        let ready = c.and_then(|c| c.ready).unwrap_or(true);
        let serving = c.and_then(|c| c.serving).unwrap_or(true);
        let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
        ready && serving && !terminating
    }
}

#[derive(Deserialize)]
struct Conditions {
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
}

#[derive(Deserialize)]
struct TargetRef {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    uid: String,
}

#[derive(Deserialize)]
struct WatchEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    object: serde_json::Value,
}

#[derive(Deserialize)]
struct Bookmark {
    metadata: Metadata,
}

#[derive(Deserialize, Default)]
struct Status {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    message: String,
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::kube::fake::{AddressType, Endpoint, EndpointSlice, FakeKubeApi};
    use crate::kube::{API_URL_VAR, SERVICE_ACCOUNT_DIR_VAR};

    const NS: &str = "observability";
    const TOKEN: &str = "sa-token-1";

    /// A pod's view: the fake API's URL and a service account directory with
    /// a token and the pod's namespace.
    struct Pod {
        vars: HashMap<String, String>,
        _account: tempfile::TempDir,
    }

    impl Pod {
        fn new(api: &FakeKubeApi) -> Pod {
            let account = tempfile::tempdir().unwrap();
            std::fs::write(account.path().join("token"), format!("{TOKEN}\n")).unwrap();
            std::fs::write(account.path().join("namespace"), NS).unwrap();
            let vars = HashMap::from([
                (API_URL_VAR.to_string(), api.url()),
                (
                    SERVICE_ACCOUNT_DIR_VAR.to_string(),
                    account.path().to_str().unwrap().to_string(),
                ),
            ]);
            Pod {
                vars,
                _account: account,
            }
        }

        async fn start(
            &self,
            cfg: &K8sResolverConfig,
            shutdown: CancellationToken,
        ) -> Result<watch::Receiver<Arc<[String]>>, String> {
            let var = |name: &str| self.vars.get(name).cloned();
            start_in(cfg, &var, Path::new("/nonexistent"), shutdown).await
        }
    }

    /// A resolver for `cfg` started against `api`; it stops when dropped.
    struct Running {
        rx: watch::Receiver<Arc<[String]>>,
        shutdown: CancellationToken,
        _pod: Pod,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.shutdown.cancel();
        }
    }

    async fn running(api: &FakeKubeApi, cfg: &K8sResolverConfig) -> Running {
        let pod = Pod::new(api);
        let shutdown = CancellationToken::new();
        let rx = pod.start(cfg, shutdown.clone()).await.unwrap();
        Running {
            rx,
            shutdown,
            _pod: pod,
        }
    }

    fn config(service: &str) -> K8sResolverConfig {
        K8sResolverConfig {
            service: service.to_string(),
            ..K8sResolverConfig::default()
        }
    }

    fn now(rx: &watch::Receiver<Arc<[String]>>) -> Vec<String> {
        rx.borrow().to_vec()
    }

    /// The next membership the receiver sees.
    async fn next(rx: &mut watch::Receiver<Arc<[String]>>) -> Vec<String> {
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("no membership change within 5s")
            .expect("the resolver stopped");
        now(rx)
    }

    /// Waits (bounded) until the fake has seen `n` watch requests.
    async fn wait_watches(api: &FakeKubeApi, n: usize) {
        tokio::time::timeout(Duration::from_secs(5), api.wait_for_watches(n))
            .await
            .unwrap_or_else(|_| panic!("fewer than {n} watch requests within 5s"));
    }

    fn slice(name: &str) -> EndpointSlice {
        EndpointSlice::new(NS, "gateway", name)
    }

    #[tokio::test]
    async fn initial_list_merges_the_services_slices_and_keeps_only_ready_endpoints() {
        let api = FakeKubeApi::start().await;
        api.require_token(TOKEN);
        api.put_slice(
            &slice("gateway-abcde")
                .endpoint(Endpoint::ready("10.0.0.1"))
                .endpoint(Endpoint::not_ready("10.0.0.2"))
                .endpoint(Endpoint::terminating("10.0.0.3")),
        );
        let mut unknown = Endpoint::ready("10.0.0.5");
        (unknown.ready, unknown.serving, unknown.terminating) = (None, None, None);
        // publishNotReadyAddresses: ready is forced, serving tells.
        let mut published = Endpoint::ready("10.0.0.6");
        published.serving = Some(false);
        let mut published_terminating = Endpoint::terminating("10.0.0.8");
        published_terminating.ready = Some(true);
        api.put_slice(
            &slice("gateway-fghij")
                .endpoint(Endpoint::ready("10.0.0.4"))
                .endpoint(unknown)
                .endpoint(published)
                .endpoint(published_terminating),
        );
        // Another Service in the namespace, the same name in another one, and
        // an empty slice (its endpoints are null).
        api.put_slice(
            &EndpointSlice::new(NS, "other", "other-x").endpoint(Endpoint::ready("10.9.9.9")),
        );
        api.put_slice(
            &EndpointSlice::new("staging", "gateway", "gateway-s")
                .endpoint(Endpoint::ready("10.8.8.8")),
        );
        api.put_slice(&slice("gateway-empty"));

        let cfg = K8sResolverConfig {
            ports: vec![4317, 55690],
            ..config("gateway.observability")
        };
        let resolver = running(&api, &cfg).await;
        assert_eq!(
            now(&resolver.rx),
            [
                "10.0.0.1:4317",
                "10.0.0.1:55690",
                "10.0.0.4:4317",
                "10.0.0.4:55690",
                "10.0.0.5:4317",
                "10.0.0.5:55690",
            ]
        );
        let list = &api.lists()[0];
        assert_eq!(
            list.path,
            "/apis/discovery.k8s.io/v1/namespaces/observability/endpointslices"
        );
        assert_eq!(
            list.param("labelSelector"),
            Some("kubernetes.io/service-name=gateway")
        );
        assert_eq!(list.authorization.as_deref(), Some("Bearer sa-token-1"));
        assert!(list
            .user_agent
            .as_deref()
            .unwrap()
            .starts_with("tracegate/"));
        wait_watches(&api, 1).await;
        let watch = &api.watches()[0];
        assert_eq!(watch.param("allowWatchBookmarks"), Some("true"));
        assert_eq!(watch.authorization.as_deref(), Some("Bearer sa-token-1"));
        // From the list's resourceVersion.
        assert_eq!(watch.param("resourceVersion"), Some("1005"));
    }

    #[tokio::test]
    async fn watch_events_change_the_membership() {
        let api = FakeKubeApi::start().await;
        let a = slice("gateway-a")
            .endpoint(Endpoint::ready("10.0.0.1"))
            .endpoint(Endpoint::ready("10.0.0.2"));
        api.put_slice(&a);
        let mut resolver = running(&api, &config("gateway")).await;
        assert_eq!(now(&resolver.rx), ["10.0.0.1:4317", "10.0.0.2:4317"]);

        // ADDED: a second slice of the same Service.
        api.put_slice(&slice("gateway-b").endpoint(Endpoint::ready("10.0.0.3")));
        assert_eq!(
            next(&mut resolver.rx).await,
            ["10.0.0.1:4317", "10.0.0.2:4317", "10.0.0.3:4317"]
        );
        // MODIFIED: a pod stops being ready.
        let mut a2 = a.clone();
        a2.endpoints[1] = Endpoint::not_ready("10.0.0.2");
        api.put_slice(&a2);
        assert_eq!(
            next(&mut resolver.rx).await,
            ["10.0.0.1:4317", "10.0.0.3:4317"]
        );
        // MODIFIED: a pod is terminating (still serving).
        a2.endpoints[0] = Endpoint::terminating("10.0.0.1");
        api.put_slice(&a2);
        assert_eq!(next(&mut resolver.rx).await, ["10.0.0.3:4317"]);
        // ADDED to the slice: a new pod.
        a2.endpoints.push(Endpoint::ready("10.0.0.7"));
        api.put_slice(&a2);
        assert_eq!(
            next(&mut resolver.rx).await,
            ["10.0.0.3:4317", "10.0.0.7:4317"]
        );
        // DELETED: the second slice goes.
        api.delete_slice(NS, "gateway-b").unwrap();
        assert_eq!(next(&mut resolver.rx).await, ["10.0.0.7:4317"]);
        // All of it came over one watch.
        assert_eq!(api.lists().len(), 1);
        assert_eq!(api.watches().len(), 1);
    }

    #[tokio::test]
    async fn a_watch_the_server_ends_resumes_from_the_last_bookmark_without_listing() {
        let api = FakeKubeApi::start().await;
        api.put_slice(&slice("gateway-a").endpoint(Endpoint::ready("10.0.0.1")));
        let mut resolver = running(&api, &config("gateway")).await;
        wait_watches(&api, 1).await;
        // Another Service's change moves the collection's resourceVersion; the
        // bookmark carries it to this watch.
        let other = api.put_slice(&EndpointSlice::new(NS, "other", "other-a"));
        api.bookmark();
        api.close_watches();
        wait_watches(&api, 2).await;
        assert_eq!(
            api.watches()[1].param("resourceVersion"),
            Some(other.to_string().as_str())
        );
        api.put_slice(&slice("gateway-a").endpoint(Endpoint::ready("10.0.0.2")));
        assert_eq!(next(&mut resolver.rx).await, ["10.0.0.2:4317"]);
        assert_eq!(api.lists().len(), 1, "a clean end does not re-list");
    }

    /// A change the watch never delivers (history compacted right after it):
    /// only a new list can show it.
    async fn gone_relists(gone_as_http_status: bool) {
        let api = FakeKubeApi::start().await;
        api.gone_as_http_status(gone_as_http_status);
        api.put_slice(&slice("gateway-a").endpoint(Endpoint::ready("10.0.0.1")));
        let mut resolver = running(&api, &config("gateway")).await;
        wait_watches(&api, 1).await;
        api.put_slice_and_compact(
            &slice("gateway-a")
                .endpoint(Endpoint::ready("10.0.0.1"))
                .endpoint(Endpoint::ready("10.0.0.2")),
        );
        assert_eq!(
            next(&mut resolver.rx).await,
            ["10.0.0.1:4317", "10.0.0.2:4317"]
        );
        assert_eq!(api.lists().len(), 2, "410 Gone leads to a new list");
        // And watching goes on from the new list.
        api.put_slice(&slice("gateway-b").endpoint(Endpoint::ready("10.0.0.3")));
        assert_eq!(
            next(&mut resolver.rx).await,
            ["10.0.0.1:4317", "10.0.0.2:4317", "10.0.0.3:4317"]
        );
    }

    #[tokio::test]
    async fn gone_as_a_watch_error_event_triggers_a_relist() {
        gone_relists(false).await;
    }

    #[tokio::test]
    async fn gone_as_an_http_status_triggers_a_relist() {
        gone_relists(true).await;
    }

    #[tokio::test]
    async fn a_failed_watch_is_retried_with_a_new_list() {
        let api = FakeKubeApi::start().await;
        api.put_slice(&slice("gateway-a").endpoint(Endpoint::ready("10.0.0.1")));
        let mut resolver = running(&api, &config("gateway")).await;
        wait_watches(&api, 1).await;
        api.fail_next(&[500]);
        api.close_watches();
        wait_watches(&api, 2).await;
        api.put_slice(&slice("gateway-a").endpoint(Endpoint::ready("10.0.0.9")));
        assert_eq!(next(&mut resolver.rx).await, ["10.0.0.9:4317"]);
        assert_eq!(api.lists().len(), 2);
    }

    #[tokio::test]
    async fn return_hostnames_names_the_pods_in_the_pods_own_namespace() {
        let api = FakeKubeApi::start().await;
        api.put_slice(
            &slice("gateway-a")
                .endpoint(Endpoint::ready("10.0.0.1").hostname("gateway-0"))
                .endpoint(Endpoint::ready("10.0.0.2").hostname("gateway-1"))
                // No hostname yet: left out.
                .endpoint(Endpoint::ready("10.0.0.3"))
                .endpoint(Endpoint::not_ready("10.0.0.4").hostname("gateway-2")),
        );
        let cfg = K8sResolverConfig {
            return_hostnames: true,
            ..config("gateway")
        };
        let mut resolver = running(&api, &cfg).await;
        assert_eq!(
            now(&resolver.rx),
            [
                "gateway-0.gateway.observability:4317",
                "gateway-1.gateway.observability:4317"
            ]
        );
        api.put_slice(
            &slice("gateway-a")
                .endpoint(Endpoint::ready("10.0.0.1").hostname("gateway-0"))
                .endpoint(Endpoint::ready("10.0.0.5").hostname("gateway-1"))
                .endpoint(Endpoint::ready("10.0.0.3").hostname("gateway-3")),
        );
        assert_eq!(
            next(&mut resolver.rx).await,
            [
                "gateway-0.gateway.observability:4317",
                "gateway-1.gateway.observability:4317",
                "gateway-3.gateway.observability:4317"
            ]
        );
    }

    #[tokio::test]
    async fn a_dual_stack_pod_counts_once() {
        let api = FakeKubeApi::start().await;
        api.put_slice(&slice("gateway-v4").endpoint(Endpoint::ready("10.0.0.1").pod("gateway-0")));
        api.put_slice(
            &slice("gateway-v6")
                .address_type(AddressType::IPv6)
                .endpoint(Endpoint::ready("fd00::1").pod("gateway-0"))
                .endpoint(Endpoint::ready("fd00:0:0:0::2").pod("gateway-1")),
        );
        let resolver = running(&api, &config("gateway")).await;
        assert_eq!(now(&resolver.rx), ["10.0.0.1:4317", "[fd00::2]:4317"]);
    }

    #[tokio::test]
    async fn in_cluster_over_tls_with_the_service_account() {
        use crate::exporter::test_support::TestPki;
        let pki = TestPki::new();
        let api = FakeKubeApi::start_tls(Arc::new(pki.server_config())).await;
        api.require_token(TOKEN);
        api.put_slice(&slice("gateway-a").endpoint(Endpoint::ready("10.0.0.1")));
        // The standard mount under a root, the API from KUBERNETES_SERVICE_*.
        let root = tempfile::tempdir().unwrap();
        let account = root
            .path()
            .join("var/run/secrets/kubernetes.io/serviceaccount");
        std::fs::create_dir_all(&account).unwrap();
        std::fs::write(account.join("token"), TOKEN).unwrap();
        std::fs::write(account.join("ca.crt"), &pki.ca_pem).unwrap();
        std::fs::write(account.join("namespace"), NS).unwrap();
        let port = api.port().to_string();
        let vars = HashMap::from([
            ("KUBERNETES_SERVICE_HOST", "localhost".to_string()),
            ("KUBERNETES_SERVICE_PORT", port),
        ]);
        let var = |name: &str| vars.get(name).cloned();
        let shutdown = CancellationToken::new();
        let mut rx = start_in(&config("gateway"), &var, root.path(), shutdown.clone())
            .await
            .unwrap();
        assert_eq!(now(&rx), ["10.0.0.1:4317"]);
        wait_watches(&api, 1).await;
        // The token is read for every request: a rotated one is used.
        std::fs::write(account.join("token"), "rotated").unwrap();
        api.require_token("rotated");
        api.close_watches();
        wait_watches(&api, 2).await;
        api.put_slice(&slice("gateway-a").endpoint(Endpoint::ready("10.0.0.2")));
        assert_eq!(next(&mut rx).await, ["10.0.0.2:4317"]);
        assert_eq!(
            api.watches()[1].authorization.as_deref(),
            Some("Bearer rotated")
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn shutdown_stops_the_watch() {
        let api = FakeKubeApi::start().await;
        let mut resolver = running(&api, &config("gateway")).await;
        assert!(now(&resolver.rx).is_empty());
        resolver.shutdown.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(5), resolver.rx.changed())
            .await
            .expect("the resolver kept running after shutdown");
        assert!(ended.is_err(), "the sender is gone once the resolver stops");
    }

    #[tokio::test]
    async fn startup_failures_say_why() {
        let shutdown = CancellationToken::new();
        // Not in a pod.
        let nothing = |_: &str| None;
        let e = start_in(
            &config("gateway.observability"),
            &nothing,
            Path::new("/nonexistent"),
            shutdown.clone(),
        )
        .await
        .unwrap_err();
        assert!(e.contains("KUBERNETES_SERVICE_HOST"), "{e}");

        let api = FakeKubeApi::start().await;
        let pod = Pod::new(&api);
        // No RBAC permission.
        api.fail_next(&[403]);
        let e = pod
            .start(&config("gateway.observability"), shutdown.clone())
            .await
            .unwrap_err();
        assert!(
            e.contains("403") && e.contains("get, list and watch on endpointslices"),
            "{e}"
        );
        assert!(e.contains("namespace observability"), "{e}");
        // A token the API refuses.
        api.require_token("another");
        let e = pod
            .start(&config("gateway.observability"), shutdown.clone())
            .await
            .unwrap_err();
        assert!(e.contains("401") && e.contains("token"), "{e}");
        // Nothing answers within the timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let vars = HashMap::from([(
            API_URL_VAR,
            format!("http://{}", silent.local_addr().unwrap()),
        )]);
        let var = |name: &str| vars.get(name).cloned();
        let cfg = K8sResolverConfig {
            timeout: Duration::from_millis(200),
            ..config("gateway.observability")
        };
        let e = start_in(&cfg, &var, Path::new("/nonexistent"), shutdown.clone())
            .await
            .unwrap_err();
        assert!(e.contains("no answer within timeout 200ms"), "{e}");
        // A bad config is refused before anything is asked.
        let e = pod.start(&config("Gateway"), shutdown).await.unwrap_err();
        assert!(e.starts_with("service:"), "{e}");
    }

    #[test]
    fn config_defaults_as_the_collector() {
        let cfg: K8sResolverConfig =
            crate::config::from_value(serde_json::json!({"service": "gateway.observability"}))
                .unwrap();
        assert_eq!(cfg.ports, [4317]);
        assert_eq!(cfg.timeout, Duration::from_secs(1));
        assert!(!cfg.return_hostnames);
        assert_eq!(cfg.validate(), Ok(()));
        let cfg: K8sResolverConfig = crate::config::from_value(serde_json::json!({
            "service": "gateway", "ports": [4317, 4318], "timeout": "250ms", "return_hostnames": true
        }))
        .unwrap();
        assert_eq!(cfg.ports, [4317, 4318]);
        assert_eq!(cfg.timeout, Duration::from_millis(250));
        assert!(cfg.return_hostnames);
        assert!(crate::config::from_value::<K8sResolverConfig>(
            serde_json::json!({"service": "gateway", "port": 4317})
        )
        .is_err());
        assert!(crate::config::from_value::<K8sResolverConfig>(
            serde_json::json!({"service": "gateway", "ports": [70000]})
        )
        .is_err());
    }

    #[test]
    fn bad_config_is_refused_with_the_key() {
        let check = |cfg: K8sResolverConfig, wanted: &str| {
            let e = cfg.validate().unwrap_err();
            assert!(e.contains(wanted), "{e:?} should say {wanted:?}");
        };
        check(config(""), "service: required");
        check(
            config("gateway.observability.cluster"),
            "is not name.namespace",
        );
        check(config("Gateway.observability"), "not a Service name");
        check(config("1gateway"), "not a Service name");
        check(config("gateway.Observability"), "not a namespace name");
        check(config("gateway..svc"), "not a namespace name");
        check(
            K8sResolverConfig {
                ports: vec![],
                ..config("gateway")
            },
            "ports: at least one",
        );
        check(
            K8sResolverConfig {
                ports: vec![0],
                ..config("gateway")
            },
            "ports: 0",
        );
        check(
            K8sResolverConfig {
                ports: vec![4317, 4317],
                ..config("gateway")
            },
            "listed twice",
        );
        check(
            K8sResolverConfig {
                timeout: Duration::ZERO,
                ..config("gateway")
            },
            "timeout:",
        );
        // The Service's DNS name is taken too, as by the collector.
        for ok in [
            "gateway",
            "gateway.observability",
            "gateway.observability.svc",
            "gateway.observability.svc.cluster.local",
        ] {
            assert_eq!(config(ok).validate(), Ok(()), "{ok}");
        }
        assert_eq!(
            ServiceRef::parse("gateway.observability.svc.cluster.local").unwrap(),
            ServiceRef {
                name: "gateway".into(),
                namespace: Some("observability".into())
            }
        );
    }
}
