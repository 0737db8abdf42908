//! An in-test Kubernetes API server that serves EndpointSlices
//! (`discovery.k8s.io/v1`) with the real list and watch protocol, on
//! 127.0.0.1 port 0, plain HTTP or TLS.
//!
//! - Any other object put with [`FakeKubeApi::put_object`], at its path.
//! - `GET /apis/discovery.k8s.io/v1/namespaces/<ns>/endpointslices`
//!   answers an `EndpointSliceList` with the collection's
//!   `resourceVersion`; `labelSelector` (equality terms) filters.
//! - The same with `watch=1` and `resourceVersion=N` streams, chunked, one
//!   JSON event per line (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` with
//!   `allowWatchBookmarks=true`, `ERROR`) from just after N, then live
//!   changes, until `timeoutSeconds` or [`FakeKubeApi::close_watches`].
//!   A resourceVersion older than the last compaction is answered as the
//!   API server does: an `ERROR` event with a 410 `Expired` Status (or, with
//!   [`FakeKubeApi::gone_as_http_status`], HTTP 410).
//! - With [`FakeKubeApi::require_token`], requests without that bearer
//!   token get 401.
//!
//! A test changes membership while watches run with
//! [`FakeKubeApi::put_slice`] / [`FakeKubeApi::set_endpoints`] /
//! [`FakeKubeApi::delete_slice`]. Built for the pipeline's tests and, with
//! the `test-support` feature, for the end-to-end tests.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, Notify};

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const COLLECTION_PREFIX: &str = "/apis/discovery.k8s.io/v1/namespaces/";

/// How an EndpointSlice's addresses are written (`addressType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressType {
    IPv4,
    IPv6,
    Fqdn,
}

impl AddressType {
    fn as_str(self) -> &'static str {
        match self {
            AddressType::IPv4 => "IPv4",
            AddressType::IPv6 => "IPv6",
            AddressType::Fqdn => "FQDN",
        }
    }
}

/// One endpoint of a slice, as the EndpointSlice controller writes it for
/// a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: String,
    /// `conditions.ready`; `None` leaves it out (read as ready).
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
    /// The pod's `spec.hostname` (a StatefulSet's pods have one).
    pub hostname: Option<String>,
    /// `targetRef`: the pod's name.
    pub pod: Option<String>,
}

impl Endpoint {
    /// A ready pod's endpoint.
    pub fn ready(address: &str) -> Endpoint {
        Endpoint {
            address: address.to_string(),
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
            hostname: None,
            pod: None,
        }
    }

    /// A pod that is running but fails its readiness probe.
    pub fn not_ready(address: &str) -> Endpoint {
        Endpoint {
            ready: Some(false),
            serving: Some(false),
            ..Endpoint::ready(address)
        }
    }

    /// A pod being deleted that still passes its readiness probe, as the
    /// controller reports it: not ready, serving, terminating.
    pub fn terminating(address: &str) -> Endpoint {
        Endpoint {
            ready: Some(false),
            serving: Some(true),
            terminating: Some(true),
            ..Endpoint::ready(address)
        }
    }

    pub fn hostname(mut self, hostname: &str) -> Endpoint {
        self.hostname = Some(hostname.to_string());
        self
    }

    pub fn pod(mut self, name: &str) -> Endpoint {
        self.pod = Some(name.to_string());
        self
    }

    fn to_json(&self, namespace: &str) -> Value {
        let mut conditions = serde_json::Map::new();
        for (key, value) in [
            ("ready", self.ready),
            ("serving", self.serving),
            ("terminating", self.terminating),
        ] {
            if let Some(value) = value {
                conditions.insert(key.into(), Value::Bool(value));
            }
        }
        let mut endpoint = json!({
            "addresses": [self.address],
            "conditions": conditions,
            "nodeName": "node-a",
            "zone": "zone-a",
        });
        if let Some(hostname) = &self.hostname {
            endpoint["hostname"] = json!(hostname);
        }
        if let Some(pod) = &self.pod {
            endpoint["targetRef"] = json!({
                "kind": "Pod",
                "namespace": namespace,
                "name": pod,
                "uid": fake_uid(&format!("pod/{namespace}/{pod}")),
            });
        }
        endpoint
    }
}

/// An EndpointSlice of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSlice {
    pub namespace: String,
    pub name: String,
    /// The `kubernetes.io/service-name` label.
    pub service: String,
    pub address_type: AddressType,
    pub endpoints: Vec<Endpoint>,
    /// `(name, port)`; default `("otlp-grpc", 4317)`.
    pub ports: Vec<(String, u16)>,
}

impl EndpointSlice {
    /// An empty IPv4 slice named `name` of `service` in `namespace`.
    pub fn new(namespace: &str, service: &str, name: &str) -> EndpointSlice {
        EndpointSlice {
            namespace: namespace.to_string(),
            name: name.to_string(),
            service: service.to_string(),
            address_type: AddressType::IPv4,
            endpoints: Vec::new(),
            ports: vec![("otlp-grpc".to_string(), 4317)],
        }
    }

    pub fn address_type(mut self, address_type: AddressType) -> EndpointSlice {
        self.address_type = address_type;
        self
    }

    pub fn endpoint(mut self, endpoint: Endpoint) -> EndpointSlice {
        self.endpoints.push(endpoint);
        self
    }

    fn to_json(&self, resource_version: u64, generation: u64, uid: &str) -> Value {
        // The API writes an empty slice's endpoints as null.
        let endpoints = if self.endpoints.is_empty() {
            Value::Null
        } else {
            Value::Array(
                self.endpoints
                    .iter()
                    .map(|e| e.to_json(&self.namespace))
                    .collect(),
            )
        };
        json!({
            "kind": "EndpointSlice",
            "apiVersion": "discovery.k8s.io/v1",
            "metadata": {
                "name": self.name,
                "generateName": format!("{}-", self.service),
                "namespace": self.namespace,
                "uid": uid,
                "resourceVersion": resource_version.to_string(),
                "generation": generation,
                "creationTimestamp": "2025-01-01T00:00:00Z",
                "labels": {
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                    SERVICE_NAME_LABEL: self.service,
                },
                "ownerReferences": [{
                    "apiVersion": "v1",
                    "kind": "Service",
                    "name": self.service,
                    "uid": fake_uid(&format!("service/{}/{}", self.namespace, self.service)),
                    "controller": true,
                    "blockOwnerDeletion": true,
                }],
            },
            "addressType": self.address_type.as_str(),
            "endpoints": endpoints,
            "ports": self.ports.iter().map(|(name, port)| json!({
                "name": name, "protocol": "TCP", "port": port,
            })).collect::<Vec<_>>(),
        })
    }
}

/// What the server saw of one request.
#[derive(Debug, Clone)]
pub struct FakeRequest {
    pub method: String,
    pub path: String,
    /// Query parameters, percent-decoded.
    pub query: Vec<(String, String)>,
    pub authorization: Option<String>,
    pub user_agent: Option<String>,
}

impl FakeRequest {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_watch(&self) -> bool {
        matches!(self.param("watch"), Some("1" | "true"))
    }
}

/// A change, as the watch reports it.
struct Change {
    resource_version: u64,
    kind: &'static str,
    namespace: String,
    labels: BTreeMap<String, String>,
    object: Value,
}

#[derive(Clone)]
enum Signal {
    Change(Arc<Change>),
    Bookmark(u64),
    /// Open watches end, as at the server's timeout.
    Close,
    /// Open watches end with 410 Gone: their resourceVersion was compacted.
    Expire,
}

struct Stored {
    slice: EndpointSlice,
    resource_version: u64,
    generation: u64,
    uid: String,
}

#[derive(Default)]
struct State {
    last_resource_version: u64,
    objects: BTreeMap<(String, String), Stored>,
    history: Vec<Arc<Change>>,
    /// A watch from below this resourceVersion is gone.
    floor: u64,
    token: Option<String>,
    gone_as_http_status: bool,
    requests: Vec<FakeRequest>,
    failures: VecDeque<u16>,
    created: u64,
    /// Other objects, served as they are at their path (a node, say).
    others: BTreeMap<String, Value>,
}

struct Shared {
    state: Mutex<State>,
    signals: broadcast::Sender<Signal>,
    requested: Notify,
}

/// The server; it stops when dropped.
pub struct FakeKubeApi {
    address: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.shared.signals.send(Signal::Close);
    }
}

impl FakeKubeApi {
    /// Plain HTTP on 127.0.0.1, port 0.
    pub async fn start() -> FakeKubeApi {
        FakeKubeApi::start_with(None).await
    }

    /// HTTPS on 127.0.0.1, port 0, with `config` (a certificate for
    /// `localhost`): reach it as [`FakeKubeApi::url`] says.
    pub async fn start_tls(config: Arc<rustls::ServerConfig>) -> FakeKubeApi {
        FakeKubeApi::start_with(Some(config)).await
    }

    async fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> FakeKubeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (signals, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                last_resource_version: 1000,
                ..State::default()
            }),
            signals,
            requested: Notify::new(),
        });
        let is_tls = tls.is_some();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let server = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = server.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(&shared, req)) }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        FakeKubeApi {
            address,
            tls: is_tls,
            shared,
            task,
        }
    }

    /// `http://127.0.0.1:port`, or `https://localhost:port` with TLS: the
    /// value for `TRACEGATE_K8S_API_URL`.
    pub fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.address.port())
        } else {
            format!("http://{}", self.address)
        }
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Requests without `Authorization: Bearer <token>` get 401.
    pub fn require_token(&self, token: &str) {
        self.state().token = Some(token.to_string());
    }

    /// Expired resourceVersions are refused with HTTP 410 rather than an
    /// `ERROR` event in a 200 stream (the API server does both).
    pub fn gone_as_http_status(&self, yes: bool) {
        self.state().gone_as_http_status = yes;
    }

    /// The next requests are answered with these statuses (a Status body),
    /// one each.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.state().failures.extend(statuses.iter().copied());
    }

    /// Creates or replaces the slice (an `ADDED` or `MODIFIED` event);
    /// returns its new resourceVersion.
    pub fn put_slice(&self, slice: &EndpointSlice) -> u64 {
        let mut state = self.state();
        let change = put(&mut state, slice);
        let resource_version = change.resource_version;
        let _ = self.shared.signals.send(Signal::Change(change));
        resource_version
    }

    /// Serves `object` at `path` (e.g. `/api/v1/nodes/node-1`) to a GET,
    /// as it is: for the other readers of the API a process has (the
    /// `k8s_api` resource detector).
    pub fn put_object(&self, path: &str, object: Value) {
        self.state().others.insert(path.to_string(), object);
    }

    /// Replaces the endpoints of `service`'s slice `<service>-main`.
    pub fn set_endpoints(&self, namespace: &str, service: &str, endpoints: &[Endpoint]) -> u64 {
        let mut slice = EndpointSlice::new(namespace, service, &format!("{service}-main"));
        slice.endpoints = endpoints.to_vec();
        self.put_slice(&slice)
    }

    /// Deletes the slice (a `DELETED` event); `None` if it did not exist.
    pub fn delete_slice(&self, namespace: &str, name: &str) -> Option<u64> {
        let mut state = self.state();
        let stored = state
            .objects
            .remove(&(namespace.to_string(), name.to_string()))?;
        state.last_resource_version += 1;
        let resource_version = state.last_resource_version;
        let change = Arc::new(Change {
            resource_version,
            kind: "DELETED",
            namespace: namespace.to_string(),
            labels: labels_of(&stored.slice),
            object: stored
                .slice
                .to_json(resource_version, stored.generation, &stored.uid),
        });
        state.history.push(change.clone());
        let _ = self.shared.signals.send(Signal::Change(change));
        Some(resource_version)
    }

    /// The slice as stored now.
    pub fn slice(&self, namespace: &str, name: &str) -> Option<EndpointSlice> {
        self.state()
            .objects
            .get(&(namespace.to_string(), name.to_string()))
            .map(|stored| stored.slice.clone())
    }

    /// Applies `slice` and compacts history right after it, as etcd's
    /// compaction does to a watcher that fell behind: open watches end with
    /// 410 Gone without seeing the change, a watch from any earlier
    /// resourceVersion is refused with 410, and only a new list shows it.
    pub fn put_slice_and_compact(&self, slice: &EndpointSlice) -> u64 {
        let mut state = self.state();
        let resource_version = put(&mut state, slice).resource_version;
        state.floor = resource_version;
        state.history.clear();
        let _ = self.shared.signals.send(if state.gone_as_http_status {
            Signal::Close
        } else {
            Signal::Expire
        });
        resource_version
    }

    /// Ends every open watch cleanly, as the server does at its timeout.
    pub fn close_watches(&self) {
        let _ = self.shared.signals.send(Signal::Close);
    }

    /// Sends a `BOOKMARK` with the current resourceVersion to watches that
    /// allow them.
    pub fn bookmark(&self) {
        let resource_version = self.state().last_resource_version;
        let _ = self.shared.signals.send(Signal::Bookmark(resource_version));
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<FakeRequest> {
        self.state().requests.clone()
    }

    /// The list requests (not watches) so far.
    pub fn lists(&self) -> Vec<FakeRequest> {
        self.requests()
            .into_iter()
            .filter(|r| !r.is_watch())
            .collect()
    }

    /// The watch requests so far.
    pub fn watches(&self) -> Vec<FakeRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_watch())
            .collect()
    }

    /// Waits until `n` watch requests have been made.
    pub async fn wait_for_watches(&self, n: usize) {
        loop {
            let notified = self.shared.requested.notified();
            if self.watches().len() >= n {
                return;
            }
            notified.await;
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }
}

fn put(state: &mut State, slice: &EndpointSlice) -> Arc<Change> {
    state.last_resource_version += 1;
    let resource_version = state.last_resource_version;
    let key = (slice.namespace.clone(), slice.name.clone());
    let (kind, generation, uid) = match state.objects.get(&key) {
        Some(old) => ("MODIFIED", old.generation + 1, old.uid.clone()),
        None => {
            state.created += 1;
            ("ADDED", 1, fake_uid(&format!("slice/{}", state.created)))
        }
    };
    let change = Arc::new(Change {
        resource_version,
        kind,
        namespace: slice.namespace.clone(),
        labels: labels_of(slice),
        object: slice.to_json(resource_version, generation, &uid),
    });
    state.objects.insert(
        key,
        Stored {
            slice: slice.clone(),
            resource_version,
            generation,
            uid,
        },
    );
    state.history.push(change.clone());
    change
}

fn labels_of(slice: &EndpointSlice) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "endpointslice.kubernetes.io/managed-by".to_string(),
            "endpointslice-controller.k8s.io".to_string(),
        ),
        (SERVICE_NAME_LABEL.to_string(), slice.service.clone()),
    ])
}

/// A stable UUID-shaped id for `seed`.
fn fake_uid(seed: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in seed.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        hash >> 32,
        (hash >> 16) & 0xffff,
        hash & 0xfff,
        (hash >> 20) & 0xfff,
        hash & 0xffff_ffff_ffff
    )
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: u16, body: String) -> http::Response<Body> {
    http::Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap()
}

fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn status_response(code: u16, reason: &str, message: &str) -> http::Response<Body> {
    full(code, status_object(code, reason, message).to_string())
}

fn handle(shared: &Shared, req: http::Request<hyper::body::Incoming>) -> http::Response<Body> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let request = FakeRequest {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: parse_query(req.uri().query().unwrap_or("")),
        authorization: header("authorization"),
        user_agent: header("user-agent"),
    };
    let mut state = shared.state.lock().unwrap();
    state.requests.push(request.clone());
    shared.requested.notify_waiters();
    if let Some(code) = state.failures.pop_front() {
        return status_response(code, "InternalError", "injected failure");
    }
    if let Some(token) = &state.token {
        if request.authorization.as_deref() != Some(&format!("Bearer {token}")) {
            return status_response(401, "Unauthorized", "Unauthorized");
        }
    }
    if request.method != "GET" {
        return status_response(405, "MethodNotAllowed", "only GET is served");
    }
    if let Some(object) = state.others.get(&request.path) {
        return full(200, object.to_string());
    }
    let Some(namespace) = request
        .path
        .strip_prefix(COLLECTION_PREFIX)
        .and_then(|rest| rest.strip_suffix("/endpointslices"))
        .filter(|ns| !ns.is_empty() && !ns.contains('/'))
        .map(str::to_string)
    else {
        return status_response(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let selector = match parse_selector(request.param("labelSelector").unwrap_or("")) {
        Ok(selector) => selector,
        Err(message) => return status_response(400, "BadRequest", &message),
    };
    let matches = |ns: &str, labels: &BTreeMap<String, String>| {
        ns == namespace
            && selector
                .iter()
                .all(|(k, v)| labels.get(k).map(String::as_str) == Some(v.as_str()))
    };
    if !request.is_watch() {
        let items: Vec<Value> = state
            .objects
            .values()
            .filter(|s| matches(&s.slice.namespace, &labels_of(&s.slice)))
            .map(|s| {
                let mut item = s.slice.to_json(s.resource_version, s.generation, &s.uid);
                // A list's items carry no kind of their own.
                let object = item.as_object_mut().unwrap();
                object.remove("kind");
                object.remove("apiVersion");
                item
            })
            .collect();
        let list = json!({
            "kind": "EndpointSliceList",
            "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"resourceVersion": state.last_resource_version.to_string()},
            "items": items,
        });
        return full(200, list.to_string());
    }

    // A watch.
    let from = match request.param("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(v) => match v.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => {
                return status_response(400, "BadRequest", &format!("invalid resourceVersion {v}"))
            }
        },
    };
    let bookmarks = matches!(request.param("allowWatchBookmarks"), Some("true" | "1"));
    let seconds = request
        .param("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1800);
    let (lines, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1024);
    let mut backlog: Vec<Value> = Vec::new();
    let mut expired = false;
    match from {
        Some(from) if from < state.floor => {
            let message = format!("too old resource version: {from} ({})", state.floor);
            if state.gone_as_http_status {
                return status_response(410, "Expired", &message);
            }
            backlog
                .push(json!({"type": "ERROR", "object": status_object(410, "Expired", &message)}));
            expired = true;
        }
        Some(from) => {
            for change in state.history.iter().filter(|c| c.resource_version > from) {
                if matches(&change.namespace, &change.labels) {
                    backlog.push(json!({"type": change.kind, "object": change.object}));
                }
            }
        }
        None => {
            // No resourceVersion: the current objects as ADDED, then changes.
            for s in state.objects.values() {
                if matches(&s.slice.namespace, &labels_of(&s.slice)) {
                    backlog.push(json!({
                        "type": "ADDED",
                        "object": s.slice.to_json(s.resource_version, s.generation, &s.uid),
                    }));
                }
            }
        }
    }
    let mut signals = shared.signals.subscribe();
    drop(state);
    let namespace_owned = namespace.clone();
    tokio::spawn(async move {
        let send = |value: Value| {
            let lines = lines.clone();
            async move {
                let mut line = value.to_string();
                line.push('\n');
                lines.send(Ok(Frame::data(Bytes::from(line)))).await.is_ok()
            }
        };
        for event in backlog {
            if !send(event).await {
                return;
            }
        }
        if expired {
            return;
        }
        let deadline = tokio::time::sleep(Duration::from_secs(seconds));
        tokio::pin!(deadline);
        loop {
            let signal = tokio::select! {
                _ = &mut deadline => return,
                _ = lines.closed() => return,
                signal = signals.recv() => signal,
            };
            let event = match signal {
                Ok(Signal::Change(change)) => {
                    if change.namespace != namespace_owned
                        || !selector
                            .iter()
                            .all(|(k, v)| change.labels.get(k) == Some(v))
                    {
                        continue;
                    }
                    json!({"type": change.kind, "object": change.object})
                }
                Ok(Signal::Bookmark(resource_version)) if bookmarks => json!({
                    "type": "BOOKMARK",
                    "object": {
                        "kind": "EndpointSlice",
                        "apiVersion": "discovery.k8s.io/v1",
                        "metadata": {"resourceVersion": resource_version.to_string()},
                    },
                }),
                Ok(Signal::Bookmark(_)) => continue,
                Ok(Signal::Expire) => {
                    let gone = status_object(
                        410,
                        "Expired",
                        "The resourceVersion for the provided watch is too old.",
                    );
                    let _ = send(json!({"type": "ERROR", "object": gone})).await;
                    return;
                }
                // Closed, or this watcher fell behind the broadcast.
                Ok(Signal::Close) | Err(_) => return,
            };
            if !send(event).await {
                return;
            }
        }
    });
    http::Response::builder()
        .status(200)
        .header("Content-Type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
        .unwrap()
}

/// Equality terms `k=v` / `k==v`, comma-separated.
fn parse_selector(selector: &str) -> Result<Vec<(String, String)>, String> {
    let mut terms = Vec::new();
    for term in selector.split(',').filter(|t| !t.trim().is_empty()) {
        let (key, value) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .ok_or_else(|| format!("unable to parse requirement: {term:?}"))?;
        if key.ends_with('!') {
            return Err(format!("the fake serves equality selectors only: {term:?}"));
        }
        terms.push((key.trim().to_string(), value.trim().to_string()));
    }
    Ok(terms)
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
