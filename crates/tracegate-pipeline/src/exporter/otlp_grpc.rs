//! The OTLP/gRPC exporter (`otlp`, alias `otlp_grpc`, and `tempo` as the
//! seed DaemonSet config names it), as the collector's `otlpexporter`: a lazily
//! connected tonic channel (one per resolved address with `round_robin`), the batch's encoded request sent as it is (no
//! re-encoding), gzip or zstd, headers as metadata, a per-request timeout, and
//! the collector's decision of which gRPC codes are worth a retry.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

use async_trait::async_trait;
use futures::future::BoxFuture;
use http::uri::{Authority, PathAndQuery};
use http::Uri;
use hyper_util::rt::TokioIo;
use prost::Message;
use rustls::pki_types::ServerName;
use serde::Deserialize;
use tokio::net::TcpStream;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tracegate_model::otlp::ExportTraceServiceResponse;
use tracegate_model::SpanBatch;

use super::compress::Encoder;
use super::delivery::{
    attempt_timeout, validate_transport, Compression, CompressionParams, QueueConfig, RetryConfig,
};
use super::{Delivered, ExportError, Exporter};
use crate::auth::{AuthConfig, ClientAuth};
use crate::config::{error, ComponentError};
use crate::grpc::direct::Direct;
use crate::grpc::{rpc_status, PassthroughCodec, TRACE_EXPORT_PATH};
use crate::tls::TlsClientConfig;

/// `exporters: otlp:` (also `otlp_grpc`, `tempo`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Backend address, `host:port` (the gRPC naming syntax; `dns:///host:port`
    /// is accepted too). An `https://` prefix forces TLS; an `http://` prefix
    /// means plaintext. Required.
    #[serde(default)]
    pub endpoint: String,
    /// Client TLS. As the collector, TLS is on unless `insecure: true` (and no
    /// `ca_file`); without `ca_file` the server is verified against the
    /// webpki (Mozilla) roots.
    #[serde(default)]
    pub tls: TlsClientConfig,
    /// Request compression: `gzip`, `zstd` or `none`. Default `gzip`.
    #[serde(default)]
    pub compression: Compression,
    /// The level `compression` writes at: `level: 0` (default) is
    /// tracegate's (gzip 1, zstd 3). The collector has this key on its
    /// HTTP client only; tracegate takes it on both OTLP exporters.
    #[serde(default)]
    pub compression_params: CompressionParams,
    /// gRPC metadata sent with every request. A mapping, or a list of
    /// `{name, value}` as the collector also takes it. Default none.
    #[serde(default, deserialize_with = "crate::config::header_map")]
    pub headers: BTreeMap<String, String>,
    /// Time limit of one attempt (sent as `grpc-timeout` too); `0` means
    /// none, as in the collector. Default `5s`.
    #[serde(
        default = "default_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub timeout: Duration,
    /// The exporter's queue. Default enabled, 10 consumers, 1000 batches.
    #[serde(default)]
    pub sending_queue: QueueConfig,
    /// Retry of retryable failures. Default enabled, 5s initial, 30s max
    /// interval, 300s max elapsed time.
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
    /// HTTP/2 keepalive pings. Default off (as the collector's OTLP exporter).
    pub keepalive: Option<KeepaliveConfig>,
    /// gRPC load-balancing policy. `round_robin`: one connection per
    /// address the endpoint's name resolves to (re-resolved every 30 s),
    /// calls taken in turn by the addresses that connect. `pick_first` (or
    /// `""`, which leaves the choice to grpc-go's default): one connection
    /// to the endpoint. Default `round_robin`, as the collector's `otlp`
    /// exporter since v0.145.0.
    #[serde(default = "default_balancer_name")]
    pub balancer_name: String,
    /// Overrides the `:authority` of requests. Default the endpoint.
    pub authority: Option<String>,
    /// Accepted for compatibility. tracegate always waits for the connection
    /// within the request `timeout`. Default `false`.
    #[serde(default)]
    pub wait_for_ready: bool,
    /// Accepted for compatibility; no effect. Default 512 KiB.
    pub write_buffer_size: Option<usize>,
    /// Accepted for compatibility; no effect. Default 0.
    pub read_buffer_size: Option<usize>,
    /// Send credentials with every request, from this authenticator
    /// extension. Requires TLS, as the collector's gRPC client does.
    /// Default: none.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Not a config key: the started authenticator `auth` names, put here
    /// when the exporter is built.
    #[serde(skip)]
    pub client_auth: Option<ClientAuth>,
    /// Not a config key: the local address connections are made from
    /// (tail sampling's hand-over sends from its advertised address).
    #[serde(skip)]
    pub local_address: Option<std::net::IpAddr>,
}

/// `keepalive:` — HTTP/2 pings on an idle connection, read as the
/// collector's grpc-go reads them: the keys left out are zero, a `time`
/// under 10 s (0 included) is raised to 10 s, and a `timeout` of 0 is 20 s.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepaliveConfig {
    /// Ping after this long without activity; at least 10 s. Default `10s`.
    #[serde(default, deserialize_with = "crate::duration::deserialize")]
    pub time: Duration,
    /// Close the connection when a ping is not answered within this; `0`
    /// means `20s`. Default `20s`.
    #[serde(default, deserialize_with = "crate::duration::deserialize")]
    pub timeout: Duration,
    /// Ping even when no request is in flight. Default `false`.
    #[serde(default)]
    pub permit_without_stream: bool,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_balancer_name() -> String {
    "round_robin".into()
}
/// grpc-go's least ping interval (`KeepaliveMinPingTime`).
const MIN_KEEPALIVE_TIME: Duration = Duration::from_secs(10);
/// grpc-go's ping timeout when none is given.
const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

impl KeepaliveConfig {
    /// The ping interval grpc-go uses for `time`.
    fn interval(&self) -> Duration {
        self.time.max(MIN_KEEPALIVE_TIME)
    }

    /// The ping timeout grpc-go uses for `timeout`.
    fn ping_timeout(&self) -> Duration {
        if self.timeout.is_zero() {
            DEFAULT_KEEPALIVE_TIMEOUT
        } else {
            self.timeout
        }
    }
}

/// Where and how to connect, derived from `endpoint` and `tls`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    authority: Authority,
    plaintext: bool,
}

impl Config {
    fn target(&self) -> Result<Target, ComponentError> {
        let endpoint = self.endpoint.trim();
        if endpoint.is_empty() {
            return Err(error("endpoint", "endpoint is required"));
        }
        let (rest, scheme_plaintext) = if let Some(rest) = endpoint.strip_prefix("http://") {
            (rest, Some(true))
        } else if let Some(rest) = endpoint.strip_prefix("https://") {
            (rest, Some(false))
        } else if let Some(rest) = endpoint.strip_prefix("dns:///") {
            (rest, None)
        } else if let Some(rest) = endpoint.strip_prefix("dns://") {
            (rest, None)
        } else if endpoint.starts_with("unix://") {
            return Err(error(
                "endpoint",
                "unix socket endpoints are not supported by tracegate",
            ));
        } else {
            (endpoint, None)
        };
        let rest = rest.trim_end_matches('/');
        let authority: Authority = rest.parse().map_err(|_| {
            error(
                "endpoint",
                format!("{endpoint:?} is not a host:port address"),
            )
        })?;
        if authority.port_u16().is_none() || authority.as_str().contains('@') {
            return Err(error(
                "endpoint",
                format!("{endpoint:?} must be host:port, with a port"),
            ));
        }
        let plaintext = scheme_plaintext.unwrap_or_else(|| self.tls.is_plaintext());
        Ok(Target {
            authority,
            plaintext,
        })
    }

    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        let target = self.target()?;
        let mut warnings = validate_transport(!target.plaintext, &self.tls, &self.headers)?;
        if let Some(auth) = &self.auth {
            auth.validate("auth")?;
            if target.plaintext {
                return Err(error(
                    "auth",
                    "credentials are only sent over TLS, as the collector's gRPC client                      requires: drop tls.insecure (and any http:// prefix) or auth",
                ));
            }
        }
        for name in self.headers.keys() {
            if MetadataKey::<tonic::metadata::Ascii>::from_bytes(
                name.to_ascii_lowercase().as_bytes(),
            )
            .is_err()
            {
                return Err(error(
                    &format!("headers.{name}"),
                    "binary (-bin) metadata is not supported in headers",
                ));
            }
        }
        match self.balancer_name.as_str() {
            "" | "pick_first" => {}
            "round_robin" => {}
            other => {
                return Err(error(
                    "balancer_name",
                    format!("invalid balancer_name {other:?}; use pick_first or round_robin"),
                ))
            }
        }
        if let Some(authority) = &self.authority {
            authority.parse::<Authority>().map_err(|_| {
                error(
                    "authority",
                    format!("{authority:?} is not a valid authority"),
                )
            })?;
        }
        self.compression.encoder(self.compression_params)?;
        self.sending_queue.validate()?;
        self.retry_on_failure.validate()?;
        if let Some(keepalive) = &self.keepalive {
            if !keepalive.time.is_zero() && keepalive.time < MIN_KEEPALIVE_TIME {
                warnings.push(format!(
                    "keepalive.time {} is raised to 10s, the least grpc-go allows, as in the \
                     collector",
                    crate::duration::format(keepalive.time)
                ));
            }
        }
        Ok(warnings)
    }
}

/// A running OTLP/gRPC client.
pub struct OtlpGrpcExporter {
    channels: Channels,
    metadata: MetadataMap,
    compression: Encoder,
    /// `None`: no limit (`timeout: 0`).
    timeout: Option<Duration>,
    /// Adds its header to every call.
    auth: Option<ClientAuth>,
}

/// Where calls go.
enum Channels {
    /// `pick_first`: one channel to the endpoint.
    One(Channel),
    /// `round_robin`: one channel per address the endpoint's name resolves
    /// to, taken in turn.
    RoundRobin(Arc<RoundRobin>),
}

struct RoundRobin {
    next: AtomicUsize,
    /// The resolved addresses and their channels, in resolution order.
    backends: RwLock<Vec<Arc<Backend>>>,
    /// The channel to the name itself, used until the name has resolved.
    fallback: Channel,
}

/// One resolved address of a `round_robin` exporter.
struct Backend {
    address: SocketAddr,
    channel: Channel,
    /// Set while the address sits out after failed connections, as grpc-go
    /// leaves a subchannel in TRANSIENT_FAILURE out of the rotation.
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    /// Connection failures in a row.
    failures: u32,
    /// Until when the address is left out of the rotation.
    out_until: Option<Instant>,
}

/// grpc-go's connection backoff: 1 s, times 1.6 per failure in a row, at
/// most 120 s (without its jitter).
fn reconnect_backoff(failures: u32) -> Duration {
    let secs = 1.6f64.powi(failures.saturating_sub(1).min(20) as i32);
    Duration::from_secs_f64(secs.min(120.0))
}

impl Backend {
    fn new(address: SocketAddr, channel: Channel) -> Backend {
        Backend {
            address,
            channel,
            health: Mutex::default(),
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn in_rotation(&self, now: Instant) -> bool {
        self.health().out_until.is_none_or(|until| until <= now)
    }

    fn connected(&self) {
        *self.health() = Health::default();
    }

    fn failed_to_connect(&self) {
        let mut health = self.health();
        health.failures += 1;
        health.out_until = Some(Instant::now() + reconnect_backoff(health.failures));
    }
}

impl RoundRobin {
    /// The backends to try for one call, in order: those in the rotation,
    /// from the next in turn; then those sitting out a failure, so a call
    /// still has somewhere to go when every address failed lately.
    fn candidates(&self) -> Vec<Arc<Backend>> {
        let backends = self.backends.read().unwrap_or_else(|e| e.into_inner());
        if backends.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % backends.len();
        let now = Instant::now();
        let (mut ready, resting): (Vec<_>, Vec<_>) = backends[start..]
            .iter()
            .chain(&backends[..start])
            .cloned()
            .partition(|b| b.in_rotation(now));
        ready.extend(resting);
        ready
    }
}

/// Resolves `host:port` to addresses; tests substitute their own.
pub(crate) type Resolver =
    Arc<dyn Fn(String) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> + Send + Sync>;

/// How often `round_robin` resolves the endpoint's name again, as grpc-go's
/// DNS resolver at most does: addresses added to or removed from a
/// headless Service are picked up within this.
const RERESOLVE_EVERY: Duration = Duration::from_secs(30);

impl OtlpGrpcExporter {
    /// Builds the (lazily connecting) channels. Reads the TLS files, so a
    /// missing one is an error here. Must run inside a tokio runtime.
    pub fn new(config: &Config) -> Result<OtlpGrpcExporter, String> {
        Self::with_resolver(
            config,
            Arc::new(|name: String| {
                Box::pin(async move { Ok(tokio::net::lookup_host(name).await?.collect()) })
            }),
        )
    }

    pub(crate) fn with_resolver(
        config: &Config,
        resolver: Resolver,
    ) -> Result<OtlpGrpcExporter, String> {
        let target = config.target().map_err(|e| e.to_string())?;
        let fallback = channel(config, &target, target.authority.as_str())?;
        let channels = if config.balancer_name == "round_robin" {
            let rr = Arc::new(RoundRobin {
                next: AtomicUsize::new(0),
                backends: RwLock::new(Vec::new()),
                fallback,
            });
            tokio::spawn(resolve_loop(
                Arc::downgrade(&rr),
                config.clone(),
                target,
                resolver,
            ));
            Channels::RoundRobin(rr)
        } else {
            Channels::One(fallback)
        };

        if config.auth.is_some() && config.client_auth.is_none() {
            return Err("auth: the authenticator was not resolved (internal error)".into());
        }
        let mut metadata = MetadataMap::new();
        for (name, value) in &config.headers {
            let key = MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("headers.{name}: invalid metadata key"))?;
            let value = MetadataValue::try_from(value.as_str())
                .map_err(|_| format!("headers.{name}: invalid metadata value"))?;
            metadata.append(key, value);
        }
        Ok(OtlpGrpcExporter {
            channels,
            metadata,
            compression: config
                .compression
                .encoder(config.compression_params)
                .map_err(|e| e.to_string())?,
            timeout: attempt_timeout(config.timeout),
            auth: config.client_auth.clone(),
        })
    }
}

/// Keeps a `round_robin` exporter's channels in step with what its name
/// resolves to: a channel per new address, the channel of an address that
/// went away dropped. Ends when the exporter is dropped.
async fn resolve_loop(rr: Weak<RoundRobin>, config: Config, target: Target, resolver: Resolver) {
    let name = target.authority.as_str().to_string();
    loop {
        let resolved = resolver(name.clone()).await;
        let Some(rr) = rr.upgrade() else { return };
        match resolved {
            Ok(mut addresses) if !addresses.is_empty() => {
                addresses.dedup();
                let old = rr
                    .backends
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let mut new = Vec::with_capacity(addresses.len());
                for address in addresses {
                    // An address still resolved keeps its connection and
                    // its standing.
                    if let Some(backend) = old.iter().find(|b| b.address == address) {
                        new.push(backend.clone());
                        continue;
                    }
                    match channel(&config, &target, &address.to_string()) {
                        Ok(channel) => new.push(Arc::new(Backend::new(address, channel))),
                        Err(e) => {
                            tracing::warn!(endpoint = %name, %address, error = %e, "cannot build a channel");
                        }
                    }
                }
                *rr.backends.write().unwrap_or_else(|e| e.into_inner()) = new;
            }
            Ok(_) => {
                tracing::warn!(endpoint = %name, "the name resolved to no address; keeping the previous ones")
            }
            Err(e) => {
                tracing::warn!(endpoint = %name, error = %e, "cannot resolve the endpoint; keeping the previous addresses")
            }
        }
        drop(rr);
        tokio::time::sleep(RERESOLVE_EVERY).await;
    }
}

/// A lazily connecting channel to `connect_to` (`host:port` or an
/// address), with the exporter's settings; requests name the configured
/// authority and TLS verifies the endpoint's host (or `server_name`).
fn channel(config: &Config, target: &Target, connect_to: &str) -> Result<Channel, String> {
    let authority = target.authority.as_str();
    let mut endpoint = Endpoint::from_shared(format!("http://{connect_to}"))
        .map_err(|e| format!("endpoint: {e}"))?
        .tcp_nodelay(true)
        .local_address(config.local_address)
        .user_agent(concat!("tracegate/", env!("CARGO_PKG_VERSION")))
        .map_err(|e| format!("user agent: {e}"))?;
    if let Some(keepalive) = &config.keepalive {
        endpoint = endpoint
            .http2_keep_alive_interval(keepalive.interval())
            .keep_alive_timeout(keepalive.ping_timeout())
            .keep_alive_while_idle(keepalive.permit_without_stream);
    }
    let scheme = if target.plaintext { "http" } else { "https" };
    let origin_authority = config.authority.as_deref().unwrap_or(authority);
    let origin: Uri = format!("{scheme}://{origin_authority}")
        .parse()
        .map_err(|e| format!("authority: {e}"))?;
    endpoint = endpoint.origin(origin);

    Ok(if target.plaintext {
        endpoint.connect_lazy()
    } else {
        let tls = config.tls.load(&[b"h2"]).map_err(|e| e.to_string())?;
        let server_name = match config.tls.server_name().map_err(|e| e.to_string())? {
            Some(name) => name,
            None => {
                ServerName::try_from(target.authority.host().trim_matches(['[', ']']).to_string())
                    .map_err(|_| {
                    format!(
                        "endpoint host {:?} is not a valid TLS server name",
                        target.authority.host()
                    )
                })?
            }
        };
        // tonic does TLS only for https URIs and only with its own settings;
        // connecting through our own connector to an http URI keeps one TLS
        // setup (versions, skip-verify, client certs) for every exporter.
        endpoint.connect_with_connector_lazy(TlsTcpConnector {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            server_name,
            local_address: config.local_address,
        })
    })
}

impl OtlpGrpcExporter {
    /// One unary call of `path` with an encoded request, within the
    /// timeout, failures classified as the collector does. The `jaeger`
    /// exporter calls Jaeger's PostSpans through this too.
    pub(crate) async fn unary(
        &self,
        path: &'static str,
        body: bytes::Bytes,
    ) -> Result<bytes::Bytes, ExportError> {
        let deadline = self.timeout.map(|t| Instant::now() + t);
        // Compressed here, as the HTTP exporter does (exporter::compress:
        // zstd with this thread's reused context), not by tonic.
        let body = self
            .compression
            .compress_message(body)
            .await
            .map_err(ExportError::Permanent)?;
        self.unary_message(path, vec![body], deadline).await
    }

    /// [`Self::unary`] with the message as it goes on the wire (compressed
    /// already if the exporter compresses), in segments sent one after the
    /// other.
    async fn unary_message(
        &self,
        path: &'static str,
        body: Vec<bytes::Bytes>,
        deadline: Option<Instant>,
    ) -> Result<bytes::Bytes, ExportError> {
        let outcome = match &self.channels {
            Channels::One(channel) => self.call(channel, path, body, deadline).await,
            Channels::RoundRobin(rr) => {
                let candidates = rr.candidates();
                if candidates.is_empty() {
                    self.call(&rr.fallback, path, body, deadline).await
                } else {
                    self.call_first_that_connects(&candidates, path, body, deadline)
                        .await
                }
            }
        };
        match outcome {
            Ok(response) => Ok(response),
            Err(CallError::Status(status)) => Err(classify(&status)),
            Err(CallError::TimedOut) => Err(ExportError::Retryable {
                message: format!(
                    "gRPC DeadlineExceeded: no response within {}",
                    crate::duration::format(self.timeout.unwrap_or_default())
                ),
                retry_after: None,
            }),
        }
    }

    /// `round_robin`'s picker: the call goes to the first candidate that
    /// connects, as grpc-go's goes only to a READY subchannel. An address
    /// whose connection fails (or does not answer before the deadline)
    /// sits out for grpc-go's reconnect backoff.
    async fn call_first_that_connects(
        &self,
        candidates: &[Arc<Backend>],
        path: &'static str,
        body: Vec<bytes::Bytes>,
        deadline: Option<Instant>,
    ) -> Result<bytes::Bytes, CallError> {
        let mut last = None;
        for backend in candidates {
            match self
                .call(&backend.channel, path, body.clone(), deadline)
                .await
            {
                Err(CallError::Status(status)) if from_transport(&status) => {
                    backend.failed_to_connect();
                    last = Some(CallError::Status(status));
                }
                Err(CallError::TimedOut) => {
                    backend.failed_to_connect();
                    return Err(CallError::TimedOut);
                }
                outcome => {
                    backend.connected();
                    return outcome;
                }
            }
        }
        Err(last.unwrap_or(CallError::TimedOut))
    }

    /// One call on `channel`, given up at `deadline`. The message goes to
    /// the connection as it is (`grpc::direct`), not copied into tonic's
    /// encode buffer.
    async fn call(
        &self,
        channel: &Channel,
        path: &'static str,
        body: Vec<bytes::Bytes>,
        deadline: Option<Instant>,
    ) -> Result<bytes::Bytes, CallError> {
        let grpc = tonic::client::Grpc::new(Direct {
            inner: channel.clone(),
            encoding: self.compression.wire_name(),
            message: body,
        });
        self.send(grpc, path, deadline).await
    }

    /// The call on `grpc`, given up at `deadline`.
    async fn send<S>(
        &self,
        mut grpc: tonic::client::Grpc<S>,
        path: &'static str,
        deadline: Option<Instant>,
    ) -> Result<bytes::Bytes, CallError>
    where
        S: tonic::client::GrpcService<tonic::body::Body, Error = tonic::transport::Error>,
        S::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        <S::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError>,
    {
        // An empty placeholder: `Direct` sends the message itself.
        let mut request = tonic::Request::new(bytes::Bytes::new());
        *request.metadata_mut() = match &self.auth {
            None => self.metadata.clone(),
            Some(auth) => {
                // Asked for every call: a token file replaced at run time
                // is sent from the next call on.
                let (name, value) = auth.0.header();
                let mut headers = self.metadata.clone().into_headers();
                headers.insert(name, value);
                MetadataMap::from_headers(headers)
            }
        };
        if let Some(deadline) = deadline {
            request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        }
        let call = async {
            grpc.ready().await.map_err(|e| {
                let mut status = Status::unavailable(format!("connection not ready: {e}"));
                status.set_source(Arc::new(e));
                status
            })?;
            grpc.unary(request, PathAndQuery::from_static(path), PassthroughCodec)
                .await
        };
        let outcome = match deadline {
            None => call.await,
            Some(deadline) => tokio::time::timeout_at(deadline, call)
                .await
                .map_err(|_| CallError::TimedOut)?,
        };
        outcome
            .map(tonic::Response::into_inner)
            .map_err(CallError::Status)
    }
}

/// How one call failed.
enum CallError {
    Status(Status),
    /// The attempt's time ran out.
    TimedOut,
}

/// Whether the failure came from the connection rather than the server: a
/// status the server sent never has a source.
fn from_transport(status: &Status) -> bool {
    std::error::Error::source(status).is_some()
}

#[async_trait]
impl Exporter for OtlpGrpcExporter {
    /// Sends the bytes (or their gzip members) and counts the spans.
    fn reads_spans(&self) -> bool {
        false
    }

    async fn export(&self, batch: &SpanBatch) -> Result<Delivered, ExportError> {
        let response = if self.compression.wire_name().is_none() {
            // A batch the batch processor put together is sent as the
            // requests it came from, not joined into one buffer first.
            let deadline = self.timeout.map(|t| Instant::now() + t);
            let segments = batch.segments().to_vec();
            self.unary_message(TRACE_EXPORT_PATH, segments, deadline)
                .await?
        } else {
            let deadline = self.timeout.map(|t| Instant::now() + t);
            let body = self
                .compression
                .compress_batch(batch)
                .await
                .map_err(ExportError::Permanent)?;
            self.unary_message(TRACE_EXPORT_PATH, body, deadline)
                .await?
        };
        // The response is small; only its partial success is read.
        let response = ExportTraceServiceResponse::decode(response).map_err(|e| {
            classify(&Status::internal(format!(
                "malformed ExportTraceServiceResponse: {e}"
            )))
        })?;
        let partial = response.partial_success.unwrap_or_default();
        Ok(Delivered {
            rejected_spans: partial.rejected_spans.max(0) as u64,
            message: partial.error_message,
        })
    }
}

/// The collector's `otlpexporter` decision: these codes are retried, and
/// RESOURCE_EXHAUSTED only when the server sent RetryInfo (it can recover);
/// a RetryInfo delay is honoured. Everything else is permanent.
fn classify(status: &Status) -> ExportError {
    let retry_info = rpc_status::retry_info(status.details());
    // tonic reports a connection that failed under the request (reset,
    // closed, TLS handshake refused) as UNKNOWN with the transport error as
    // source; grpc-go, whose codes the collector decides on, says UNAVAILABLE.
    // A status the server sent never has a source.
    let code = match status.code() {
        Code::Unknown if from_transport(status) => Code::Unavailable,
        code => code,
    };
    let message = format!("gRPC {code:?}: {}", status.message());
    let retryable = match code {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => true,
        Code::ResourceExhausted => retry_info.is_some(),
        _ => false,
    };
    if retryable {
        ExportError::Retryable {
            message,
            retry_after: retry_info.filter(|d| !d.is_zero()),
        }
    } else {
        ExportError::Rejected { code, message }
    }
}

/// TCP (with TCP_NODELAY) then TLS with our rustls config, for tonic.
#[derive(Clone)]
struct TlsTcpConnector {
    tls: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
    /// Connect from this address.
    local_address: Option<std::net::IpAddr>,
}

type TlsIo = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower::Service<Uri> for TlsTcpConnector {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<TlsIo, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        let server_name = self.server_name.clone();
        let local_address = self.local_address;
        Box::pin(async move {
            let address = uri
                .authority()
                .map(|a| a.as_str().to_string())
                .ok_or_else(|| std::io::Error::other("endpoint has no host:port"))?;
            let tcp = match local_address {
                None => TcpStream::connect(address).await?,
                Some(local) => connect_from(local, &address).await?,
            };
            tcp.set_nodelay(true)?;
            let stream = tls.connect(server_name, tcp).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// Connects to `address` (`host:port`) from `local`, to the first address
/// of its family.
async fn connect_from(local: std::net::IpAddr, address: &str) -> std::io::Result<TcpStream> {
    let target = tokio::net::lookup_host(address)
        .await?
        .find(|a| a.is_ipv4() == local.is_ipv4())
        .ok_or_else(|| {
            std::io::Error::other(format!("{address} has no address of {local}'s family"))
        })?;
    let socket = if local.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(local, 0))?;
    socket.connect(target).await
}

impl super::BuildExporter for Config {
    fn sending_queue(&self) -> &QueueConfig {
        &self.sending_queue
    }

    fn build(&self, _: &str, ctx: &super::BuildContext) -> Result<super::Built<'_>, String> {
        let mut config = self.clone();
        config.client_auth = ClientAuth::resolve(&ctx.authenticators, self.auth.as_ref())?;
        let exporter = OtlpGrpcExporter::new(&config)?;
        Ok(super::Built::new(
            exporter,
            &self.sending_queue,
            self.retry_on_failure.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_value;
    use crate::exporter::test_support::valid_config;

    #[test]
    fn defaults_are_the_collectors() {
        let c: Config = valid_config(serde_json::json!({"endpoint": "tempo:4317"}));
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.compression, Compression::Gzip);
        assert!(c.sending_queue.enabled);
        assert!(c.retry_on_failure.enabled);
        assert!(!c.target().unwrap().plaintext, "TLS unless insecure");
        assert_eq!(c.balancer_name, "round_robin", "since v0.145.0");
        assert!(c.validate().unwrap().is_empty());
    }

    #[test]
    fn plaintext_by_insecure_or_http_scheme() {
        let insecure: Config =
            valid_config(serde_json::json!({"endpoint": "tempo:4317", "tls": {"insecure": true}}));
        assert!(insecure.target().unwrap().plaintext);
        let http: Config = valid_config(serde_json::json!({"endpoint": "http://tempo:4317"}));
        assert!(http.target().unwrap().plaintext);
        let https: Config = valid_config(
            serde_json::json!({"endpoint": "https://tempo:4317", "tls": {"insecure": true}}),
        );
        assert!(!https.target().unwrap().plaintext);
        let dns: Config = valid_config(serde_json::json!({"endpoint": "dns:///tempo:4317"}));
        assert_eq!(dns.target().unwrap().authority.as_str(), "tempo:4317");
        let v6: Config =
            valid_config(serde_json::json!({"endpoint": "[::1]:4317", "tls": {"insecure": true}}));
        assert_eq!(v6.target().unwrap().authority.port_u16(), Some(4317));
    }

    /// As the collector's exporterhelper: `timeout: 0` means no timeout.
    #[tokio::test]
    async fn zero_timeout_means_no_timeout() {
        let c: Config = valid_config(
            serde_json::json!({"endpoint": "t:1", "tls": {"insecure": true}, "timeout": "0s"}),
        );
        assert!(c.validate().is_ok());
        assert_eq!(OtlpGrpcExporter::new(&c).unwrap().timeout, None);
        let c: Config =
            valid_config(serde_json::json!({"endpoint": "t:1", "tls": {"insecure": true}}));
        assert_eq!(
            OtlpGrpcExporter::new(&c).unwrap().timeout,
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn validate_rejects_bad_settings() {
        for (value, path) in [
            (serde_json::json!({}), "endpoint"),
            (serde_json::json!({"endpoint": "tempo"}), "endpoint"),
            (serde_json::json!({"endpoint": "unix:///tmp/s"}), "endpoint"),
            (
                serde_json::json!({"endpoint": "t:1", "headers": {"bad header": "x"}}),
                "headers.bad header",
            ),
            (
                serde_json::json!({"endpoint": "t:1", "balancer_name": "grpclb"}),
                "balancer_name",
            ),
            (
                serde_json::json!({"endpoint": "t:1", "sending_queue": {"num_consumers": 0}}),
                "sending_queue.num_consumers",
            ),
            (
                serde_json::json!({"endpoint": "t:1", "tls": {"cert_file": "/c"}}),
                "tls",
            ),
            // Credentials are sent over TLS only, as grpc-go requires.
            (
                serde_json::json!({"endpoint": "t:1", "tls": {"insecure": true},
                    "auth": {"authenticator": "bearertokenauth"}}),
                "auth",
            ),
            (
                serde_json::json!({"endpoint": "http://t:1",
                    "auth": {"authenticator": "bearertokenauth"}}),
                "auth",
            ),
            (
                serde_json::json!({"endpoint": "t:1", "auth": {"authenticator": ""}}),
                "auth.authenticator",
            ),
        ] {
            let err = valid_config::<Config>(value.clone())
                .validate()
                .unwrap_err();
            assert_eq!(err.path, path, "{value}: {err}");
        }
        let err =
            from_value::<Config>(serde_json::json!({"endpoint": "t:1", "compresion": "gzip"}))
                .unwrap_err();
        assert!(err.message.contains("compresion"), "{err}");
    }

    #[test]
    fn headers_as_a_mapping_or_a_list_of_name_and_value() {
        let map: Config = from_value(serde_json::json!({
            "endpoint": "t:1", "headers": {"x-tenant": "a", "authorization": "b"}
        }))
        .unwrap();
        let list: Config = from_value(serde_json::json!({
            "endpoint": "t:1",
            "headers": [{"name": "x-tenant", "value": "a"}, {"name": "authorization", "value": "b"}]
        }))
        .unwrap();
        assert_eq!(map.headers, list.headers);
        assert_eq!(list.headers.get("x-tenant").map(String::as_str), Some("a"));
        let twice = from_value::<Config>(serde_json::json!({
            "endpoint": "t:1",
            "headers": [{"name": "x", "value": "a"}, {"name": "x", "value": "b"}]
        }))
        .unwrap_err();
        assert!(twice.to_string().contains("given twice"), "{twice}");
        let http: crate::exporter::otlp_http::Config = from_value(serde_json::json!({
            "endpoint": "http://t:1", "headers": [{"name": "x-tenant", "value": "a"}]
        }))
        .unwrap();
        assert_eq!(
            http.headers,
            BTreeMap::from([("x-tenant".into(), "a".into())])
        );
    }

    #[test]
    fn accepts_the_collectors_other_client_keys() {
        let c: Config = valid_config(serde_json::json!({
            "endpoint": "t:1",
            "keepalive": {"time": "20s", "timeout": "5s", "permit_without_stream": true},
            "balancer_name": "round_robin",
            "wait_for_ready": true,
            "write_buffer_size": 524288,
            "read_buffer_size": 0,
            "authority": "tempo.example:443",
        }));
        assert!(
            c.validate().unwrap().is_empty(),
            "round_robin is implemented"
        );
    }

    /// A `round_robin` exporter on `config` whose endpoint's name resolves
    /// to `addresses`, once it has resolved.
    async fn resolving_to(
        config: serde_json::Value,
        addresses: Vec<SocketAddr>,
    ) -> OtlpGrpcExporter {
        let c: Config = valid_config(config);
        let name = c.target().unwrap().authority.to_string();
        let count = addresses.len();
        let exporter = OtlpGrpcExporter::with_resolver(
            &c,
            Arc::new(move |asked: String| {
                assert_eq!(asked, name);
                let resolved = addresses.clone();
                Box::pin(async move { Ok(resolved) })
            }),
        )
        .unwrap();
        let Channels::RoundRobin(rr) = &exporter.channels else {
            panic!("round_robin builds one channel per address")
        };
        crate::exporter::test_support::eventually("the name resolved", || {
            rr.backends.read().unwrap().len() == count
        })
        .await;
        exporter
    }

    /// `round_robin` over a name that resolves to two addresses (a
    /// headless Service): calls alternate between one connection to each.
    #[tokio::test]
    async fn round_robin_spreads_calls_over_the_addresses_of_the_name() {
        use crate::exporter::test_support::{sample_batch, GrpcSink};
        let first = GrpcSink::start_on("127.0.0.1:0".parse().unwrap()).await;
        let port = first.addr.port();
        let second = GrpcSink::start_on(SocketAddr::from(([127, 0, 0, 2], port))).await;
        let exporter = resolving_to(
            serde_json::json!({
                "endpoint": format!("collectors.test:{port}"),
                "tls": {"insecure": true},
                "balancer_name": "round_robin",
            }),
            vec![first.addr, second.addr],
        )
        .await;
        for _ in 0..6 {
            exporter.export(&sample_batch(1, 1)).await.unwrap();
        }
        assert_eq!(first.state.attempts(), 3);
        assert_eq!(second.state.attempts(), 3);
    }

    /// As grpc-go's picker, which only takes READY subchannels: an address
    /// that refuses connections (`localhost`'s `::1` where the backend
    /// listens on IPv4 only, a pod gone) costs no call; every call reaches
    /// the address that answers, and the refusing one sits out.
    #[tokio::test]
    async fn round_robin_calls_only_addresses_that_connect() {
        use crate::exporter::test_support::{sample_batch, GrpcSink};
        let live = GrpcSink::start().await;
        let refusing = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // round_robin is the default.
        let exporter = resolving_to(
            serde_json::json!({"endpoint": "collectors.test:4317", "tls": {"insecure": true}}),
            vec![refusing, live.addr],
        )
        .await;
        let Channels::RoundRobin(rr) = &exporter.channels else {
            unreachable!("resolving_to checked")
        };
        for _ in 0..4 {
            exporter.export(&sample_batch(1, 1)).await.unwrap();
        }
        assert_eq!(live.state.attempts(), 4);
        let backends = rr.backends.read().unwrap();
        let dead = backends.iter().find(|b| b.address == refusing).unwrap();
        assert_eq!(dead.health().failures, 1, "tried once, then left out");
        assert!(!dead.in_rotation(Instant::now()));
    }

    /// A `keepalive` mapping is read as grpc-go reads the collector's:
    /// keys left out are zero, `time` is at least 10 s, `timeout` 0 is 20 s.
    #[test]
    fn keepalive_as_grpc_go_reads_it() {
        let keepalive = |json: serde_json::Value| {
            let c: Config = valid_config(serde_json::json!({"endpoint": "t:1", "keepalive": json}));
            let k = c.keepalive.clone().expect("a keepalive mapping");
            (k.interval(), k.ping_timeout(), c.validate().unwrap())
        };
        let (time, timeout, warnings) = keepalive(serde_json::json!({}));
        assert_eq!(
            (time, timeout),
            (Duration::from_secs(10), Duration::from_secs(20))
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        let (time, timeout, warnings) =
            keepalive(serde_json::json!({"time": "5s", "timeout": "3s"}));
        assert_eq!(
            (time, timeout),
            (Duration::from_secs(10), Duration::from_secs(3))
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("keepalive.time 5s is raised to 10s"),
            "{warnings:?}"
        );
        let (time, _, _) = keepalive(serde_json::json!({"time": "30s"}));
        assert_eq!(time, Duration::from_secs(30));
        let none: Config = valid_config(serde_json::json!({"endpoint": "t:1", "keepalive": null}));
        assert_eq!(none.keepalive, None, "an empty keepalive: sends no pings");
    }

    #[test]
    fn reconnect_backoff_is_grpc_gos() {
        assert_eq!(reconnect_backoff(1), Duration::from_secs(1));
        assert_eq!(reconnect_backoff(2), Duration::from_millis(1600));
        assert_eq!(reconnect_backoff(40), Duration::from_secs(120));
    }

    #[test]
    fn retryable_codes_match_the_collector() {
        for code in [
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unavailable,
            Code::DataLoss,
        ] {
            assert!(
                matches!(
                    classify(&Status::new(code, "x")),
                    ExportError::Retryable {
                        retry_after: None,
                        ..
                    }
                ),
                "{code:?}"
            );
        }
        for code in [
            Code::Unknown,
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::FailedPrecondition,
            Code::Unimplemented,
            Code::Internal,
            Code::ResourceExhausted,
        ] {
            // The backend's code is kept, so a receiver can pass it on.
            assert!(
                matches!(
                    classify(&Status::new(code, "x")),
                    ExportError::Rejected { code: kept, .. } if kept == code
                ),
                "{code:?}"
            );
        }
        let transport = Status::from_error(Box::new(std::io::Error::other("connection reset")));
        assert_eq!(transport.code(), Code::Unknown);
        assert!(
            matches!(classify(&transport), ExportError::Retryable { .. }),
            "a transport failure is retried like UNAVAILABLE"
        );
        let throttled = Status::with_details(
            Code::ResourceExhausted,
            "slow down",
            rpc_status::encode_retry_info(Duration::from_secs(3)).into(),
        );
        assert_eq!(
            classify(&throttled),
            ExportError::Retryable {
                message: "gRPC ResourceExhausted: slow down".into(),
                retry_after: Some(Duration::from_secs(3)),
            }
        );
        let unavailable_with_delay = Status::with_details(
            Code::Unavailable,
            "later",
            rpc_status::encode_retry_info(Duration::from_millis(250)).into(),
        );
        assert!(matches!(
            classify(&unavailable_with_delay),
            ExportError::Retryable { retry_after: Some(d), .. } if d == Duration::from_millis(250)
        ));
    }
}
