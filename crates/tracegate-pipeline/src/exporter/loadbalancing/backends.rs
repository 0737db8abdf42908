//! The backends of one `loadbalancing` exporter: one OTLP exporter per
//! member, each behind its own [`ExporterHandle`] (queue, consumers, retry),
//! created and retired as the resolver's member list changes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracegate_model::SpanBatch;

use crate::exporter::otlp_grpc::{self, OtlpGrpcExporter};
use crate::exporter::{ExporterHandle, Refusal};
use crate::membership::hash::Rendezvous;
use crate::membership::{Members, ResolverConfig};
use crate::telemetry::names;

/// How long a backend that left the member list may take to send what its
/// queue still holds (to itself, never elsewhere: its traces are partly
/// there already) before the rest is counted as dropped.
pub(super) const REMOVED_BACKEND_GRACE: Duration = Duration::from_secs(30);

/// One member's exporter.
pub(super) struct Backend {
    pub endpoint: String,
    pub handle: ExporterHandle,
    latency: Histogram,
    success: Counter,
    failure: Counter,
}

impl Backend {
    /// Hands `part` to the backend's queue (or, without one, sends it),
    /// timed and counted per endpoint as the collector does.
    pub(super) async fn send(&self, part: Arc<SpanBatch>) -> Result<(), Refusal> {
        let started = Instant::now();
        let outcome = self.handle.send(part).await;
        self.latency
            .record(started.elapsed().as_secs_f64() * 1000.0);
        match outcome {
            Ok(()) => self.success.increment(1),
            Err(_) => self.failure.increment(1),
        }
        outcome
    }
}

/// The members as the exporter routes among them: the hash over their
/// endpoints and, in the same order, their backends.
pub(super) struct Snapshot {
    pub ring: Rendezvous,
    pub backends: Vec<Arc<Backend>>,
}

/// Where the exporter stands with its resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Phase {
    /// The resolver has not given a first member list yet.
    Starting,
    Running,
    /// The resolver could not start; the message says why.
    Failed(String),
}

pub(super) struct Backends {
    /// The exporter's id; each backend is `<id>/<endpoint>`.
    id: String,
    resolver: &'static str,
    /// The settings every backend gets, its endpoint aside.
    otlp: otlp_grpc::Config,
    current: RwLock<Arc<Snapshot>>,
    phase: watch::Sender<Phase>,
    /// Backends that left, sending what their queues still hold.
    retiring: TaskTracker,
    num_backends: Gauge,
    num_updates: Counter,
}

impl Backends {
    pub(super) fn new(id: &str, resolver: &'static str, otlp: otlp_grpc::Config) -> Backends {
        let label = [("resolver", resolver)];
        Backends {
            id: id.to_string(),
            resolver,
            otlp,
            current: RwLock::new(Arc::new(Snapshot {
                ring: Rendezvous::new(Vec::new().into()),
                backends: Vec::new(),
            })),
            phase: watch::Sender::new(Phase::Starting),
            retiring: TaskTracker::new(),
            num_backends: metrics::gauge!(names::LOADBALANCER_NUM_BACKENDS, &label),
            num_updates: metrics::counter!(names::LOADBALANCER_NUM_BACKEND_UPDATES, &label),
        }
    }

    pub(super) fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until the resolver has given its first list (`Ok`) or failed
    /// to start (`Err`, saying why).
    pub(super) async fn started(&self) -> Result<(), String> {
        let mut phase = self.phase.subscribe();
        let result = match &*phase
            .wait_for(|p| *p != Phase::Starting)
            .await
            .map_err(|_| "the resolver stopped before it started".to_string())?
        {
            Phase::Failed(e) => Err(e.clone()),
            _ => Ok(()),
        };
        result
    }

    /// The current members once the resolver has given its first list,
    /// waiting for that at most `within`.
    pub(super) async fn ready(&self, within: Duration) -> Result<Arc<Snapshot>, String> {
        let mut phase = self.phase.subscribe();
        let waited = tokio::time::timeout(within, phase.wait_for(|p| *p != Phase::Starting)).await;
        match waited {
            Ok(Ok(p)) => match &*p {
                Phase::Failed(e) => Err(e.clone()),
                _ => Ok(self.snapshot()),
            },
            _ => Err(format!(
                "the {} resolver has not found the backends yet",
                self.resolver
            )),
        }
    }

    /// Starts the resolver and follows its member list until `stop`.
    pub(super) async fn follow(self: Arc<Self>, resolver: ResolverConfig, stop: CancellationToken) {
        let started = tokio::select! {
            _ = stop.cancelled() => return,
            started = resolver.start(stop.clone()) => started,
        };
        let mut members = match started {
            Ok(members) => members,
            Err(e) => {
                tracing::error!(
                    exporter = %self.id, resolver = self.resolver, error = %e,
                    "the resolver could not start; nothing can be exported"
                );
                self.phase.send_replace(Phase::Failed(format!(
                    "the {} resolver could not start: {e}",
                    self.resolver
                )));
                return;
            }
        };
        loop {
            let list = members.borrow_and_update().clone();
            self.apply(list);
            self.phase.send_if_modified(|p| {
                let first = *p == Phase::Starting;
                *p = Phase::Running;
                first
            });
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = members.changed() => if changed.is_err() {
                    // The resolver stopped: keep the last list.
                    return;
                },
            }
        }
    }

    /// Makes `list` the members: a backend for each new one, the
    /// departed ones retired (their queues drain to them in the
    /// background, for at most [`REMOVED_BACKEND_GRACE`]).
    pub(super) fn apply(&self, list: Members) {
        let old = self.snapshot();
        if old.ring.members()[..] == list[..] {
            return;
        }
        let mut existing: HashMap<&str, &Arc<Backend>> = old
            .backends
            .iter()
            .map(|b| (b.endpoint.as_str(), b))
            .collect();
        let mut endpoints = Vec::with_capacity(list.len());
        let mut backends = Vec::with_capacity(list.len());
        let mut added = Vec::new();
        for endpoint in list.iter() {
            let backend = match existing.remove(endpoint.as_str()) {
                Some(backend) => backend.clone(),
                None => match self.start_backend(endpoint) {
                    Ok(backend) => {
                        added.push(endpoint.as_str());
                        Arc::new(backend)
                    }
                    Err(e) => {
                        tracing::error!(
                            exporter = %self.id, %endpoint, error = %e,
                            "cannot create the exporter for a backend; leaving it out"
                        );
                        continue;
                    }
                },
            };
            endpoints.push(endpoint.clone());
            backends.push(backend);
        }
        let removed: Vec<Arc<Backend>> = existing.into_values().cloned().collect();
        let snapshot = Arc::new(Snapshot {
            ring: Rendezvous::new(endpoints.into()),
            backends,
        });
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = snapshot.clone();
        self.num_backends.set(snapshot.backends.len() as f64);
        self.num_updates.increment(1);
        tracing::info!(
            exporter = %self.id, resolver = self.resolver,
            backends = ?&snapshot.ring.members()[..], ?added,
            removed = ?removed.iter().map(|b| b.endpoint.as_str()).collect::<Vec<_>>(),
            "the backends changed"
        );
        for backend in removed {
            self.retiring.spawn(async move {
                backend.handle.shutdown(REMOVED_BACKEND_GRACE).await;
            });
        }
    }

    fn start_backend(&self, endpoint: &str) -> Result<Backend, String> {
        let mut config = self.otlp.clone();
        config.endpoint = endpoint.to_string();
        let exporter = OtlpGrpcExporter::new(&config)?;
        let handle = ExporterHandle::start(
            &format!("{}/{endpoint}", self.id),
            Arc::new(exporter),
            &config.sending_queue,
            &config.retry_on_failure,
        );
        let endpoint_label = ("endpoint", endpoint.to_string());
        let outcome = |success: &'static str| {
            metrics::counter!(
                names::LOADBALANCER_BACKEND_OUTCOME,
                &[endpoint_label.clone(), ("success", success.to_string())]
            )
        };
        Ok(Backend {
            endpoint: endpoint.to_string(),
            handle,
            latency: metrics::histogram!(
                names::LOADBALANCER_BACKEND_LATENCY,
                std::slice::from_ref(&endpoint_label)
            ),
            success: outcome("true"),
            failure: outcome("false"),
        })
    }

    /// Drains every backend, current and retiring, within `grace`.
    pub(super) async fn shutdown(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let snapshot = self.snapshot();
        futures::future::join_all(
            snapshot
                .backends
                .iter()
                .map(|backend| backend.handle.shutdown(grace)),
        )
        .await;
        self.retiring.close();
        if tokio::time::timeout_at(deadline, self.retiring.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                exporter = %self.id,
                "backends that left were still draining when the grace period ended"
            );
        }
    }
}
