//! Wiring a loaded [`Config`] into running components, and taking them down
//! in order on shutdown: report unhealthy, wait the drain delay, stop
//! accepting, flush processors, drain exporters, all within the grace
//! period.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tracegate_model::SpanBatch;
use tracegate_pipeline::auth::Authenticators;
use tracegate_pipeline::context::BuildContext;
use tracegate_pipeline::exporter::{Admission, ExporterHandle, Fanout};
use tracegate_pipeline::file_storage::Storages;
use tracegate_pipeline::health::Readiness;
use tracegate_pipeline::memory::Allocator;
use tracegate_pipeline::processor::Processor;
use tracegate_pipeline::receiver::RunningReceiver;
use tracegate_pipeline::remote_sampling::{CountRoots, RootCounter};
use tracegate_pipeline::telemetry::MetricsServer;
use tracegate_pipeline::{ConsumeError, Consumer};

use crate::config::{ComponentId, Config};

/// A component that could not start; the message names it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(String);

/// Everything the process runs, kept for an orderly shutdown.
pub struct Running {
    receivers: Vec<(ComponentId, RunningReceiver)>,
    /// Each pipeline's processors, first stage first.
    pipelines: Vec<Vec<(ComponentId, Arc<dyn Processor>)>>,
    exporters: Vec<(ComponentId, ExporterHandle)>,
    readiness: Readiness,
    stop_receivers: CancellationToken,
    stop_telemetry: CancellationToken,
    /// Bound addresses: (component, protocol, address).
    pub listening: Vec<(String, &'static str, SocketAddr)>,
}

/// A receiver feeding several pipelines hands each its own copy of the
/// batch (a reference-counted buffer and a copied index), as the collector's
/// fan-out consumer does.
struct PipelineFanout(Vec<Arc<dyn Consumer>>);

#[async_trait]
impl Consumer for PipelineFanout {
    fn reads_spans(&self) -> bool {
        self.0.iter().any(|next| next.reads_spans())
    }

    async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
        let mut result = Ok(());
        let (last, rest) = self.0.split_last().expect("a receiver feeds a pipeline");
        for next in rest {
            if let Err(e) = next.consume(batch.clone()).await {
                result = Err(e);
            }
        }
        last.consume(batch).await.and(result)
    }
}

/// Starts every component of `config`. Listeners are bound before this
/// returns, so a port in use is an error here, not later. The memory
/// limiter measures the `allocator`'s live bytes, if given (else the
/// resident set), and has it return freed memory where the collector
/// forces a GC.
pub async fn start(
    config: &Config,
    prometheus: PrometheusHandle,
    allocator: Option<Allocator>,
) -> Result<Running, StartError> {
    let stop_telemetry = CancellationToken::new();
    let stop_receivers = CancellationToken::new();
    let readiness = Readiness::default();
    let mut listening = Vec::new();
    // What the components share; extensions run until the very end,
    // receivers stop first.
    let mut ctx = BuildContext {
        allocator,
        readiness: readiness.clone(),
        shutdown: stop_telemetry.clone(),
        ..BuildContext::default()
    };

    if let Some(address) = &config.service.telemetry.metrics_address {
        let server = MetricsServer::start(
            address,
            config.service.telemetry.metrics_namespace.clone(),
            prometheus,
            stop_telemetry.clone(),
        )
        .await
        .map_err(|e| StartError(format!("telemetry: cannot listen on {address}: {e}")))?;
        listening.push(("telemetry".to_string(), "metrics", server.address));
    }
    let mut storages = Vec::new();
    let mut authenticators = Vec::new();
    let mut root_counters = Vec::new();
    // Authenticators start first, whatever the order listed, so that an
    // extension with servers of its own (remote sampling's `auth`) finds
    // them; the others start in the order listed.
    let mut listed = Vec::with_capacity(config.service.extensions.len());
    for id in &config.service.extensions {
        let extension = config
            .extensions
            .get(id)
            .ok_or_else(|| StartError(format!("service::extensions: {id} is not defined")))?;
        listed.push((id, extension));
    }
    listed.sort_by_key(|(_, extension)| extension.authenticates().is_none());
    let mut authenticators_started = false;
    for (id, extension) in listed {
        if extension.authenticates().is_none() && !authenticators_started {
            ctx.authenticators = Authenticators::new(authenticators.clone());
            authenticators_started = true;
        }
        let running = extension
            .start(&id.to_string(), &ctx)
            .await
            .map_err(StartError)?;
        for (protocol, address) in running.addresses {
            listening.push((id.to_string(), protocol, address));
        }
        storages.extend(running.storage);
        if let Some(authenticator) = running.authenticator {
            authenticators.push((id.to_string(), authenticator));
        }
        root_counters.extend(running.root_counter);
    }
    // An `adaptive` remote sampling source counts the root spans every
    // receiver takes; without one, receivers feed their pipelines directly.
    let root_counters: Option<Arc<[Arc<RootCounter>]>> =
        (!root_counters.is_empty()).then(|| root_counters.into());
    // Storage and authenticator extensions are started; what is built
    // from here on finds them by id.
    ctx.storages = Storages::new(storages);
    ctx.authenticators = Authenticators::new(authenticators);

    let mut exporters: BTreeMap<&ComponentId, ExporterHandle> = BTreeMap::new();
    for pipeline in &config.service.pipelines {
        for id in &pipeline.exporters {
            if exporters.contains_key(id) {
                continue;
            }
            let exporter = config.exporters.get(id).ok_or_else(|| {
                StartError(format!(
                    "exporters::{id} is used by {} but not defined",
                    pipeline.id
                ))
            })?;
            let handle = exporter
                .start(&id.to_string(), &ctx)
                .map_err(|e| StartError(e.to_string()))?;
            exporters.insert(id, handle);
        }
    }

    let mut pipelines = Vec::new();
    let mut to_ready: Vec<(&ComponentId, Arc<dyn Processor>)> = Vec::new();
    let mut entry_points: BTreeMap<&ComponentId, Vec<Arc<dyn Consumer>>> = BTreeMap::new();
    for pipeline in &config.service.pipelines {
        let handles: Vec<ExporterHandle> = pipeline
            .exporters
            .iter()
            .map(|id| exporters[id].clone())
            .collect();
        let mut next: Arc<dyn Consumer> = Arc::new(Fanout::new(handles.clone()));
        let mut stages = Vec::new();
        for id in pipeline.processors.iter().rev() {
            let processor = config.processors.get(id).ok_or_else(|| {
                StartError(format!(
                    "processors::{id} is used by {} but not defined",
                    pipeline.id
                ))
            })?;
            let stage = processor
                .build(&id.to_string(), next, &ctx)
                .map_err(|e| StartError(e.to_string()))?;
            next = stage.clone();
            stages.push((id.clone(), stage.clone()));
            to_ready.push((id, stage));
        }
        stages.reverse();
        pipelines.push(stages);
        // Refuses new data, retryably, while the exporters' memory queues
        // are past half of their byte limits (`exporter/backpressure.rs`).
        next = Admission::wrap(handles, next);
        for id in &pipeline.receivers {
            entry_points.entry(id).or_default().push(next.clone());
        }
    }

    // Processors and exporters that must finish something first (resource
    // detection, a load balancer's first member list) do so before any
    // receiver listens; a failure stops startup, as in the collector.
    let readies = to_ready.iter().map(|(id, stage)| async move {
        stage
            .ready()
            .await
            .map_err(|e| StartError(format!("processors::{id}: {e}")))
    });
    let exporters_ready = exporters.iter().map(|(id, handle)| async move {
        handle
            .ready()
            .await
            .map_err(|e| StartError(format!("exporters::{id}: {e}")))
    });
    for result in futures::future::join_all(exporters_ready).await {
        result?;
    }
    for result in futures::future::join_all(readies).await {
        result?;
    }

    let receiver_ctx = ctx.with_shutdown(stop_receivers.clone());
    let mut receivers = Vec::new();
    for (id, mut nexts) in entry_points {
        let receiver = config
            .receivers
            .get(id)
            .ok_or_else(|| StartError(format!("receivers::{id} is used but not defined")))?;
        let mut next: Arc<dyn Consumer> = if nexts.len() == 1 {
            nexts.pop().expect("one")
        } else {
            Arc::new(PipelineFanout(nexts))
        };
        if let Some(counters) = &root_counters {
            next = Arc::new(CountRoots::new(counters.clone(), next));
        }
        let running = receiver
            .start(&id.to_string(), next, receiver_ctx.clone())
            .await
            .map_err(|e| StartError(e.to_string()))?;
        for (protocol, address) in running.addresses() {
            listening.push((id.to_string(), *protocol, *address));
        }
        receivers.push((id.clone(), running));
    }

    readiness.set(true);
    Ok(Running {
        receivers,
        pipelines,
        exporters: exporters
            .into_iter()
            .map(|(id, h)| (id.clone(), h))
            .collect(),
        readiness,
        stop_receivers,
        stop_telemetry,
        listening,
    })
}

/// How long shutdown may take, and how it spends the time.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownTimes {
    /// Everything, from the signal to the end: the process exits within it.
    pub grace: Duration,
    /// The first part of `grace`: health reports 503 while receivers still
    /// take data, so that load balancers (a Kubernetes Service's endpoints)
    /// stop sending before the listeners close.
    pub drain_delay: Duration,
}

impl ShutdownTimes {
    /// The end of the grace period kept back for counting what is left and
    /// exiting: a tenth of it, at most a second.
    pub fn reserve(&self) -> Duration {
        (self.grace / 10).min(Duration::from_secs(1))
    }
}

impl Running {
    /// Takes the process down within `times.grace` (docs/architecture.md,
    /// "Startup and shutdown"): `health_check` reports 503 at once; the
    /// receivers keep taking data for `times.drain_delay`, or until
    /// `cut_short` resolves; then they stop accepting and finish what is in
    /// flight; every processor passes on what it holds; last the
    /// exporters get what is left of the period to deliver their queues, and
    /// count what they could not as dropped (`reason="shutdown"`). That
    /// last call, [`ExporterHandle::shutdown`], is where an exporter that
    /// keeps its queue on disk leaves there what it cannot deliver in time:
    /// nothing flows into it any more by then. Every step is bounded by the
    /// period less [`ShutdownTimes::reserve`].
    pub async fn shutdown(self, times: ShutdownTimes, cut_short: impl Future<Output = ()>) {
        let deadline = Instant::now() + times.grace.saturating_sub(times.reserve());
        let left = || deadline.saturating_duration_since(Instant::now());
        self.readiness.set(false);
        let drain = times.drain_delay.min(left());
        if !drain.is_zero() {
            tracing::info!(drain_delay = ?drain, "health check reports unavailable; receivers still take data until the drain delay is over");
            tokio::select! {
                _ = tokio::time::sleep(drain) => {}
                _ = cut_short => tracing::info!("a second signal: closing the listeners now"),
            }
        }
        tracing::info!("closing the listeners");
        self.stop_receivers.cancel();
        for (id, receiver) in self.receivers {
            if tokio::time::timeout(left(), receiver.stopped())
                .await
                .is_err()
            {
                tracing::warn!(receiver = %id, "receiver did not stop within the grace period");
            }
        }
        for stages in &self.pipelines {
            for (id, stage) in stages {
                if tokio::time::timeout(left(), stage.flush()).await.is_err() {
                    tracing::warn!(
                        processor = %id,
                        "processor did not pass on what it holds within the grace period"
                    );
                }
            }
        }
        let left = left();
        futures::future::join_all(self.exporters.iter().map(|(_, h)| h.shutdown(left))).await;
        self.stop_telemetry.cancel();
    }
}
