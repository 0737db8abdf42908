//! The `otlp` receiver: OTLP/gRPC and OTLP/HTTP, as the collector's
//! `otlpreceiver` (defaults, config keys, status codes), for traces only.

use tokio_util::task::TaskTracker;

use super::counters::{self, OTLP_REASONS};
use super::grpc_ingest::{BoundGrpc, IngestMethod};
use super::http_ingest::HttpService;
use super::listener;
use super::{RunningReceiver, StartError};
use crate::consumer::NextConsumer;
use tracegate_model::SpanBatch;

mod config;
mod cors;
pub(crate) use cors::CorsPolicy;
mod http;
pub(super) mod status;

#[cfg(test)]
mod tests;

pub use crate::grpc::{
    PassthroughCodec, PassthroughDecoder, PassthroughEncoder, TRACE_EXPORT_PATH,
};
pub use config::{
    Config, CorsConfig, GrpcConfig, HttpConfig, KeepaliveConfig, KeepaliveEnforcementPolicy,
    KeepaliveServerParameters, Protocols, DEFAULT_GRPC_ENDPOINT, DEFAULT_HTTP_ENDPOINT,
    DEFAULT_MAX_RECV_MSG_SIZE_MIB, DEFAULT_MAX_REQUEST_BODY_SIZE,
};

/// OTLP's `TraceService/Export`: the request is scanned as it is.
const TRACE_EXPORT: IngestMethod = IngestMethod {
    path: TRACE_EXPORT_PATH,
    decode: |request, indexing| SpanBatch::scan_with(request, indexing).map_err(|e| e.to_string()),
};

/// Starts the configured protocols of a validated config; see
/// [`super::ReceiverConfig::start`].
pub(crate) async fn start(
    config: &Config,
    id: &str,
    next: NextConsumer,
    ctx: &super::BuildContext,
) -> Result<RunningReceiver, StartError> {
    let shutdown = ctx.shutdown.clone();
    let handover = ctx.handover.clone();
    // Bind and load everything before serving anything, so a failure
    // leaves nothing running.
    let grpc = match &config.protocols.grpc {
        Some(grpc) => Some(BoundGrpc::bind(grpc, id, &ctx.authenticators).await?),
        None => None,
    };
    let http = match &config.protocols.http {
        Some(http) => {
            let counters = counters::TransportCounters::register_with_auth(
                id,
                "http",
                OTLP_REASONS,
                http.auth.is_some(),
            );
            let gate = http
                .server_keys()
                .auth_gate(&ctx.authenticators, &counters, id, "http")?;
            let tls = listener::tls_acceptor(http.tls.as_ref(), &[b"h2", b"http/1.1"], id, "http")?;
            let (listener, addr) = listener::bind_endpoint(id, "http", &http.endpoint).await?;
            Some((http, tls, listener, addr, counters, gate))
        }
        None => None,
    };

    let tasks = TaskTracker::new();
    let mut addresses = Vec::new();
    if let Some((bound, addr)) = grpc {
        addresses.push(("grpc", addr));
        bound.serve(
            &TRACE_EXPORT,
            id,
            next.clone(),
            Some(handover),
            shutdown.clone(),
            &tasks,
        );
    }
    if let Some((http_config, tls, listener, addr, counters, gate)) = http {
        addresses.push(("http", addr));
        let service = HttpService::new(
            http::HttpReceiver {
                indexing: super::indexing_for(next.as_ref()),
                next,
                counters,
                traces_path: http_config.traces_path(),
                max_body_size: http_config.max_request_body_size(),
                encodings: http_config.encodings(),
                cors: http_config.cors.as_ref().and_then(cors::CorsPolicy::new),
            },
            gate,
        );
        let settings = http_config.server_keys().connection_settings(tls);
        listener::spawn_accept_loop(listener, settings, service, shutdown.clone(), &tasks);
    }
    Ok(RunningReceiver { addresses, tasks })
}

#[async_trait::async_trait]
impl super::BuildReceiver for Config {
    async fn start(
        &self,
        id: &str,
        next: NextConsumer,
        cx: &super::BuildContext,
    ) -> super::Started {
        start(self, id, next, cx).await
    }
}
