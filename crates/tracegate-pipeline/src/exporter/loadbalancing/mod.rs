//! The `loadbalancing` exporter (also `load_balancing`), as the
//! collector's: it splits each batch by routing key (the trace id unless
//! configured otherwise), gives every key one owner among the members a
//! resolver finds (`crate::membership`), and hands each owner its part
//! through an OTLP/gRPC exporter of its own, built from `protocol.otlp`,
//! with its own queue and retry, so a slow or dead backend holds up only
//! its own part.
//!
//! A backend that cannot be reached keeps its part in its own queue and
//! retries it there (`protocol.otlp.retry_on_failure`); nothing is sent to
//! another backend, since that would split the trace between two tail
//! samplers. When its queue is full, its part of a batch whose other parts
//! went out is counted as dropped for that backend, or, with the outer
//! `retry_on_failure` on, retried alone and routed afresh (a partial
//! failure, so the parts taken are not sent again); a batch that no backend
//! would take is refused, so the sender can retry it whole. A backend that
//! leaves the member list sends what it still holds to itself, for up to
//! 30 s.

mod backends;
mod routing;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use tokio_util::sync::CancellationToken;
use tracegate_model::SpanBatch;

use self::backends::{Backend, Backends};
use self::routing::Router;
pub use self::routing::RoutingKey;
use super::handle::Refusal;
use super::otlp_grpc::{self, OtlpGrpcExporter};
use super::{Delivered, DropReason, ExportError, Exporter, QueueConfig, RetryConfig};
use crate::config::{error, ComponentError};
use crate::membership::ResolverConfig;

/// `exporters: loadbalancing:` (also `load_balancing`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What keeps spans together on one backend: `traceID` (default),
    /// `service`, `resource` or `attributes`.
    #[serde(default)]
    pub routing_key: RoutingKey,
    /// With `routing_key: attributes`: the attributes whose values make the
    /// key, looked up on the resource, then the scope, then the span
    /// (`span.name` and `span.kind` name the span's own).
    #[serde(default)]
    pub routing_attributes: Vec<String>,
    /// The exporter each backend gets.
    #[serde(default)]
    pub protocol: Protocol,
    /// Where the backends come from: `static`, `dns` or `k8s`. Required.
    #[serde(default)]
    pub resolver: Option<ResolverConfig>,
    /// Time limit of handing one batch to the backends; `0` (default)
    /// means none.
    #[serde(default, deserialize_with = "crate::duration::deserialize")]
    pub timeout: Duration,
    /// A queue in front of the routing. Off unless `enabled: true`, as in
    /// the collector; each backend has its own queue regardless.
    #[serde(default = "QueueConfig::off", deserialize_with = "off_unless_enabled")]
    pub sending_queue: QueueConfig,
    /// Retry of batches no backend would take, routed afresh each time.
    /// Off unless `enabled: true`, as in the collector.
    #[serde(
        default = "RetryConfig::disabled",
        deserialize_with = "off_unless_enabled"
    )]
    pub retry_on_failure: RetryConfig,
}

/// `protocol:`; only OTLP, as in the collector.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protocol {
    /// Every key of the `otlp` exporter; `endpoint` is each backend's.
    #[serde(default = "default_otlp")]
    pub otlp: otlp_grpc::Config,
}

impl Default for Protocol {
    fn default() -> Protocol {
        Protocol {
            otlp: default_otlp(),
        }
    }
}

fn default_otlp() -> otlp_grpc::Config {
    crate::config::from_value(serde_json::Value::Null).expect("the otlp exporter has defaults")
}

/// A `sending_queue` or `retry_on_failure` that is off unless it says
/// `enabled: true`, its other keys defaulting as anywhere else.
fn off_unless_enabled<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<T, D::Error> {
    let mut value = serde_json::Value::deserialize(d)?;
    if value.is_null() {
        value = serde_json::json!({});
    }
    if let Some(map) = value.as_object_mut() {
        map.entry("enabled").or_insert(false.into());
    }
    crate::config::from_value(value).map_err(|e| {
        if e.path.is_empty() {
            D::Error::custom(e.message)
        } else {
            D::Error::custom(format!("{}: {}", e.path, e.message))
        }
    })
}

/// The endpoint `protocol.otlp` is checked with: each backend's replaces it.
const PLACEHOLDER_ENDPOINT: &str = "placeholder:4317";

impl Config {
    fn otlp_template(&self) -> otlp_grpc::Config {
        let mut otlp = self.protocol.otlp.clone();
        otlp.endpoint = PLACEHOLDER_ENDPOINT.to_string();
        otlp
    }

    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        let mut warnings = Vec::new();
        let resolver = self.resolver.as_ref().ok_or_else(|| {
            error(
                "resolver",
                "no resolver given; set one of static, dns or k8s",
            )
        })?;
        resolver.validate()?;
        match (self.routing_key, self.routing_attributes.is_empty()) {
            (RoutingKey::Attributes, true) => {
                return Err(error(
                    "routing_attributes",
                    "routing_key attributes needs at least one attribute in routing_attributes",
                ))
            }
            (RoutingKey::Attributes, false) | (_, true) => {}
            (_, false) => warnings.push(
                "routing_attributes is ignored unless routing_key is attributes; the collector \
                 refuses to start with it"
                    .to_string(),
            ),
        }
        if matches!(self.routing_key, RoutingKey::Resource) {
            warnings.push(
                "routing_key resource: tracegate routes spans by their resource's attributes; the \
                 collector takes it for logs and metrics only and refuses to start with it in a \
                 traces pipeline"
                    .to_string(),
            );
        }
        // The collector's exporter-level queue is on once the key is
        // written (unless `enabled: false`); tracegate's only with
        // `enabled: true`.
        if !self.sending_queue.enabled && self.sending_queue != QueueConfig::off() {
            warnings.push(
                "sending_queue has settings but not enabled: true: tracegate leaves the queue in \
                 front of the routing off (each backend keeps its own, protocol.otlp.sending_queue); \
                 the collector turns it on when the key is written"
                    .to_string(),
            );
        }
        if !self.protocol.otlp.endpoint.trim().is_empty() {
            warnings.push(
                "protocol.otlp.endpoint is ignored: each backend's endpoint comes from the resolver"
                    .to_string(),
            );
        }
        let otlp_warnings = self.otlp_template().validate().map_err(|e| {
            let path = if e.path.is_empty() {
                "protocol.otlp".to_string()
            } else {
                format!("protocol.otlp.{}", e.path)
            };
            error(&path, e.message)
        })?;
        warnings.extend(otlp_warnings);
        if self.protocol.otlp.sending_queue.storage.is_some() {
            return Err(error(
                "protocol.otlp.sending_queue.storage",
                "a persistent queue per backend is not implemented yet; set \
                 sending_queue.storage on the loadbalancing exporter itself, which stores \
                 each batch before it is routed",
            ));
        }
        self.sending_queue.validate()?;
        self.retry_on_failure.validate()?;
        Ok(warnings)
    }
}

/// How long an export waits for the resolver's first member list.
const STARTUP_WAIT: Duration = Duration::from_secs(5);

/// A running `loadbalancing` exporter.
pub struct LoadBalancer {
    router: Router,
    backends: Arc<Backends>,
    timeout: Option<Duration>,
    /// `retry_on_failure.enabled`: parts refused beside parts taken are
    /// then handed back for retry, else dropped.
    retry: bool,
    /// Stops following the member list.
    stop: CancellationToken,
}

impl super::BuildExporter for Config {
    fn build(&self, id: &str, ctx: &super::BuildContext) -> Result<super::Built<'_>, String> {
        let resolver = self
            .resolver
            .clone()
            .ok_or("no resolver given; set one of static, dns or k8s")?;
        let mut template = self.otlp_template();
        template.client_auth =
            crate::auth::ClientAuth::resolve(&ctx.authenticators, template.auth.as_ref())
                .map_err(|e| format!("protocol.otlp.{e}"))?;
        // Reads the TLS files now, so a missing one stops startup rather
        // than every backend later. `pick_first`: this probe must not start
        // a `round_robin` lookup of the placeholder name (a blocking
        // getaddrinfo on a name that resolves nowhere).
        let mut probe = template.clone();
        probe.balancer_name = "pick_first".into();
        drop(OtlpGrpcExporter::new(&probe).map_err(|e| format!("protocol.otlp: {e}"))?);
        let backends = Arc::new(Backends::new(id, resolver.name(), template));
        let stop = ctx.shutdown.child_token();
        tokio::spawn(backends.clone().follow(resolver, stop.clone()));
        let exporter = LoadBalancer {
            router: Router::new(self.routing_key, &self.routing_attributes),
            backends,
            timeout: super::delivery::attempt_timeout(self.timeout),
            retry: self.retry_on_failure.enabled,
            stop,
        };
        Ok(super::Built::new(
            exporter,
            &self.sending_queue,
            self.retry_on_failure.clone(),
        ))
    }

    fn sending_queue(&self) -> &QueueConfig {
        &self.sending_queue
    }
}

/// A part a backend did not take, and why.
struct Refused {
    backend: Arc<Backend>,
    part: Arc<SpanBatch>,
    refusal: Refusal,
}

impl LoadBalancer {
    async fn route(&self, batch: &SpanBatch) -> Result<Delivered, ExportError> {
        let retryable = |message: String| ExportError::Retryable {
            message,
            retry_after: None,
        };
        let snapshot = self.backends.ready(STARTUP_WAIT).await.map_err(retryable)?;
        if snapshot.backends.is_empty() {
            return Err(retryable(
                "no backends to send to: the resolver found none".into(),
            ));
        }
        let mut pending: Vec<(Arc<Backend>, Arc<SpanBatch>)> = snapshot
            .backends
            .iter()
            .cloned()
            .zip(self.router.partition(batch, &snapshot.ring))
            .filter(|(_, part)| !part.is_empty())
            .map(|(backend, part)| (backend, Arc::new(part)))
            .collect();
        let mut taken = 0usize;
        let mut refused: Vec<Refused> = Vec::new();
        // A backend that left the member list since the snapshot was taken
        // refuses as shutting down: its part goes to the new owner instead,
        // which is where the rest of its traces now go too.
        for round in 0..3 {
            let outcomes = futures::future::join_all(
                pending
                    .iter()
                    .map(|(backend, part)| backend.send(part.clone())),
            )
            .await;
            let mut moved = Vec::new();
            for ((backend, part), outcome) in pending.into_iter().zip(outcomes) {
                match outcome {
                    Ok(()) => taken += part.len(),
                    Err(Refusal::ShuttingDown) if round < 2 && !self.stop.is_cancelled() => {
                        moved.push((backend, part))
                    }
                    Err(refusal) => refused.push(Refused {
                        backend,
                        part,
                        refusal,
                    }),
                }
            }
            let snapshot = self.backends.snapshot();
            if moved.is_empty() || snapshot.backends.is_empty() {
                refused.extend(moved.into_iter().map(|(backend, part)| Refused {
                    backend,
                    part,
                    refusal: Refusal::ShuttingDown,
                }));
                break;
            }
            pending = Vec::new();
            for (_, part) in moved {
                pending.extend(
                    snapshot
                        .backends
                        .iter()
                        .cloned()
                        .zip(self.router.partition(&part, &snapshot.ring))
                        .filter(|(_, part)| !part.is_empty())
                        .map(|(backend, part)| (backend, Arc::new(part))),
                );
            }
        }
        if refused.is_empty() {
            return Ok(Delivered::default());
        }
        if taken == 0 {
            return Err(refusal_error(&refused));
        }
        if self.retry {
            // Only the refused parts are retried, routed afresh each time.
            let remaining: Vec<SpanBatch> = refused.iter().map(|r| (*r.part).clone()).collect();
            return Err(ExportError::partial(
                Delivered::default(),
                SpanBatch::concat(&remaining),
                refusal_error(&refused),
            ));
        }
        // The client is answered OK for what was taken; what was not is
        // lost, and counted for the backend that refused it.
        for r in &refused {
            let spans = r.refusal.undelivered(r.part.len() as u64);
            r.backend
                .handle
                .record_dropped(r.refusal.drop_reason(), spans);
            tracing::warn!(
                exporter = %r.backend.handle.id(), spans,
                reason = %r.refusal.drop_reason(),
                "a backend did not take its part of a batch; dropping it"
            );
        }
        Ok(Delivered::default())
    }
}

/// The error for a batch no backend took: permanent when every backend
/// failed permanently (with the first backend status), else retryable.
fn refusal_error(refused: &[Refused]) -> ExportError {
    let describe = |r: &Refused| match &r.refusal {
        Refusal::QueueFull => format!("{}: sending queue is full", r.backend.endpoint),
        Refusal::ShuttingDown => format!("{}: shutting down", r.backend.endpoint),
        Refusal::Failed { message, .. } => format!("{}: {message}", r.backend.endpoint),
    };
    let message = refused.iter().map(describe).collect::<Vec<_>>().join("; ");
    let permanent = !refused.is_empty()
        && refused.iter().all(|r| {
            matches!(r.refusal, Refusal::Failed { reason, .. } if reason == DropReason::PermanentError)
        });
    if !permanent {
        let message = if message.is_empty() {
            "no backend to send to".to_string()
        } else {
            message
        };
        return ExportError::Retryable {
            message,
            retry_after: None,
        };
    }
    match refused.iter().find_map(|r| match &r.refusal {
        Refusal::Failed { code, .. } => *code,
        _ => None,
    }) {
        Some(code) => ExportError::Rejected { code, message },
        None => ExportError::Permanent(message),
    }
}

#[async_trait]
impl Exporter for LoadBalancer {
    async fn export(&self, batch: &SpanBatch) -> Result<Delivered, ExportError> {
        match self.timeout {
            None => self.route(batch).await,
            Some(limit) => tokio::time::timeout(limit, self.route(batch))
                .await
                .unwrap_or_else(|_| {
                    Err(ExportError::Retryable {
                        message: format!(
                            "the backends did not take the batch within {}",
                            crate::duration::format(limit)
                        ),
                        retry_after: None,
                    })
                }),
        }
    }

    /// Waits for the resolver's first member list: a resolver that cannot
    /// start (the `k8s` one without access to the API) stops startup.
    async fn ready(&self) -> Result<(), String> {
        self.backends.started().await
    }

    async fn shutdown_within(&self, grace: Duration) {
        self.stop.cancel();
        self.backends.shutdown(grace).await;
    }
}
