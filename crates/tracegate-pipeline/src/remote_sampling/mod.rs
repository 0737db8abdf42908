//! The Jaeger remote sampling extension (`jaegerremotesampling`, also
//! spelt `remote_sampling` as in Jaeger v2): serves head-sampling
//! strategies to the SDKs that poll for them, over HTTP
//! (`GET /sampling?service=NAME`, and the legacy `/`) as proto-JSON and
//! over gRPC (`SamplingManager/GetSamplingStrategy`), from a Jaeger
//! strategies file that is read again when it changes, or from Jaeger v2's
//! `adaptive` calculation over the root spans the receivers take.
//!
//! - [`config`]: the two spellings (the collector's, Jaeger v2's).
//! - [`adaptive`]: the `adaptive` source's calculation.
//! - [`counting`]: the root-span tallies it calculates from, and the
//!   consumer the binary puts in front of the receivers to make them.
//! - `run`: its loop, every `calculation_interval`.
//! - [`fleet`]: one set of probabilities across a fleet (the first member
//!   calculates, the others fetch).
//! - [`strategies`]: the file format and the JSON served.
//! - [`serve`]: the endpoints and their metrics.
//!
//! The strategies are one immutable value behind a lock held only to
//! clone an `Arc`: a reload builds the new value aside and swaps it in, so
//! a request sees either the old strategies or the new, and a file that
//! does not read keeps the old ones (logged, counted).

pub mod adaptive;
pub mod config;
pub mod counting;
pub mod fleet;
mod run;
pub mod serve;
pub mod strategies;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{
    from_value, AdaptiveSource, Config, FileSource, FleetConfig, Form, HttpConfig, Source,
};
pub use counting::{CountRoots, RootCounter};
pub use serve::{names, GET_SAMPLING_STRATEGY_PATH};
pub use strategies::{Strategies, DEFAULT_SAMPLING_PROBABILITY};

use crate::auth::ServerAuth;
use crate::context::BuildContext;
use crate::extension::{BuildExtension, RunningExtension, Started};
use crate::receiver::grpc_ingest::grpc_settings;
use crate::receiver::listener;
use crate::receiver::otlp::CorsPolicy;
use adaptive::Calculator;
use fleet::Fleet;
use run::Adaptive;
use serve::{GrpcService, HttpService, Served};

#[async_trait::async_trait]
impl BuildExtension for Config {
    async fn start(&self, id: &str, ctx: &BuildContext) -> Started {
        let tasks = TaskTracker::new();
        let mut root_counter = None;
        let served = match &self.source {
            Source::File(file) => self.start_file(id, file, ctx, &tasks)?,
            Source::Adaptive(adaptive) => {
                let calculator = Calculator::new(adaptive.options());
                let served = Arc::new(Served::new(id, calculator.strategies()));
                let fleet = match &adaptive.fleet {
                    Some(fleet) => {
                        let resolver = fleet
                            .resolver
                            .as_ref()
                            .ok_or("adaptive.fleet.resolver: required")?;
                        let members = resolver
                            .start(ctx.shutdown.clone())
                            .await
                            .map_err(|e| format!("adaptive.fleet.resolver: {e}"))?;
                        Some(Fleet::new(
                            members,
                            &fleet.advertised_endpoint,
                            fleet.timeout,
                        ))
                    }
                    None => None,
                };
                let counter = Arc::new(RootCounter::new());
                let run = Adaptive::new(calculator, counter.clone(), served.clone(), fleet);
                run.publish();
                tasks.spawn(run.run(ctx.shutdown.clone()));
                root_counter = Some(counter);
                tracing::info!(
                    extension = %id,
                    target_samples_per_second = adaptive.target_samples_per_second,
                    calculation_interval = ?adaptive.calculation_interval,
                    fleet = adaptive.fleet.is_some(),
                    "adaptive sampling strategies ready"
                );
                served
            }
            Source::Remote => return Err("the `remote` source is not supported".into()),
        };
        let mut addresses = Vec::new();
        if let Some(http) = &self.http {
            let tls = listener::tls_acceptor(http.tls.as_ref(), &[b"h2", b"http/1.1"], id, "http")
                .map_err(|e| format!("http: {e}"))?;
            let bound = listener::bind(&http.endpoint)
                .await
                .map_err(|e| format!("http: cannot listen on {}: {e}", http.endpoint))?;
            let address = bound.local_addr().map_err(|e| format!("http: {e}"))?;
            let auth = ServerAuth::resolve(
                &ctx.authenticators,
                http.auth.as_ref().map(|a| a.authenticator.as_str()),
                http.auth
                    .as_ref()
                    .map_or(&[][..], |a| a.request_params.as_slice()),
            )
            .map_err(|e| format!("http.auth: {e}"))?;
            let service = HttpService {
                served: served.clone(),
                cors: http.cors.as_ref().and_then(CorsPolicy::new).map(Arc::new),
                auth,
            };
            let settings = http.server_keys().connection_settings(tls);
            listener::spawn_accept_loop(bound, settings, service, ctx.shutdown.clone(), &tasks);
            addresses.push(("http", address));
        }
        if let Some(grpc) = &self.grpc {
            let tls = listener::tls_acceptor(grpc.tls.as_ref(), &[b"h2"], id, "grpc")
                .map_err(|e| format!("grpc: {e}"))?;
            let bound = listener::bind(&grpc.endpoint)
                .await
                .map_err(|e| format!("grpc: cannot listen on {}: {e}", grpc.endpoint))?;
            let address = bound.local_addr().map_err(|e| format!("grpc: {e}"))?;
            let auth = ServerAuth::resolve(
                &ctx.authenticators,
                grpc.auth.as_ref().map(|a| a.authenticator.as_str()),
                &[],
            )
            .map_err(|e| format!("grpc.auth: {e}"))?;
            let service = GrpcService {
                served: served.clone(),
                max_recv_msg_size: grpc.max_recv_msg_size(),
                auth,
            };
            let settings = grpc_settings(grpc, tls);
            listener::spawn_accept_loop(bound, settings, service, ctx.shutdown.clone(), &tasks);
            addresses.push(("grpc", address));
        }
        tasks.close();
        Ok(RunningExtension {
            addresses,
            root_counter,
            ..RunningExtension::default()
        })
    }
}

impl Config {
    /// The `file` source: the strategies read, and their reloader spawned
    /// on `tasks`.
    fn start_file(
        &self,
        id: &str,
        file: &FileSource,
        ctx: &BuildContext,
        tasks: &TaskTracker,
    ) -> Result<Arc<Served>, String> {
        let (strategies, last_read) = if file.path.is_empty() {
            (
                Strategies::defaults(file.default_sampling_probability),
                None,
            )
        } else {
            let bytes = std::fs::read(&file.path)
                .map_err(|e| format!("{}: cannot read {}: {e}", self.path_key(), file.path))?;
            let parsed = Strategies::parse(&bytes, file.default_sampling_probability)
                .map_err(|e| format!("{}: {}: {e}", self.path_key(), file.path))?;
            for warning in &parsed.warnings {
                tracing::warn!(extension = %id, file = %file.path, "{warning}");
            }
            (parsed.strategies, Some(bytes))
        };
        let served = Arc::new(Served::new(id, strategies));
        served.count_reload(true);
        if !file.reload_interval.is_zero() && !file.path.is_empty() {
            let reloader = Reloader {
                extension: id.to_string(),
                path: PathBuf::from(&file.path),
                default_probability: file.default_sampling_probability,
                served: served.clone(),
                last_read,
                last_error: None,
            };
            tasks.spawn(reloader.run(file.reload_interval, ctx.shutdown.clone()));
        }
        tracing::info!(
            extension = %id, file = %file.path,
            reload_interval = ?file.reload_interval,
            "remote sampling strategies ready"
        );
        Ok(served)
    }
}

/// Reads the strategies file every interval and serves what it holds when
/// it changed and reads well.
struct Reloader {
    extension: String,
    path: PathBuf,
    default_probability: f64,
    served: Arc<Served>,
    /// The file's bytes last looked at, good or bad: the same bytes are
    /// not parsed (or complained about) again.
    last_read: Option<Vec<u8>>,
    /// The last read error logged, so a missing file is logged once, not
    /// every interval.
    last_error: Option<String>,
}

impl Reloader {
    async fn run(mut self, every: Duration, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let read = tokio::fs::read(&self.path).await;
            self.look_at(read);
        }
    }

    /// One look at the file (`read` is what reading it gave).
    fn look_at(&mut self, read: std::io::Result<Vec<u8>>) {
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) => {
                let message = e.to_string();
                if self.last_error.as_ref() != Some(&message) {
                    tracing::error!(
                        extension = %self.extension, file = %self.path.display(), error = %message,
                        "cannot read the sampling strategies file; still serving the strategies \
                         last read"
                    );
                    self.served.count_reload(false);
                    self.last_error = Some(message);
                }
                return;
            }
        };
        self.last_error = None;
        if self.last_read.as_ref() == Some(&bytes) {
            return;
        }
        match Strategies::parse(&bytes, self.default_probability) {
            Ok(parsed) => {
                for warning in &parsed.warnings {
                    tracing::warn!(extension = %self.extension, file = %self.path.display(), "{warning}");
                }
                self.served.replace(parsed.strategies);
                self.served.count_reload(true);
                tracing::info!(
                    extension = %self.extension, file = %self.path.display(),
                    "sampling strategies reloaded"
                );
            }
            Err(e) => {
                self.served.count_reload(false);
                tracing::error!(
                    extension = %self.extension, file = %self.path.display(), error = %e,
                    "the sampling strategies file changed but does not read; still serving the \
                     strategies last read"
                );
            }
        }
        self.last_read = Some(bytes);
    }
}
