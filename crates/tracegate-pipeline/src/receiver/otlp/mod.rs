//! The `otlp` receiver: OTLP/gRPC and OTLP/HTTP, as the collector's
//! `otlpreceiver` (defaults, config keys, status codes), for traces only.

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::counters::{self, OTLP_REASONS};
use super::http_ingest::HttpService;
use super::listener::{self, ConnectionSettings};
use super::{RunningReceiver, StartError};
use crate::consumer::NextConsumer;

mod config;
mod cors;
pub(super) mod grpc;
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

/// The largest HTTP/2 frame gRPC clients may send (the protocol's default
/// is 16 KiB). A request that fits in one DATA frame reaches the scanner
/// without a copy, and fewer frames cost both sides less CPU (see
/// benches/RESULTS.md, "gRPC transport settings"). It adds no memory: a
/// peer can never have more unread data in flight than the connection's
/// flow-control window, hyper's 1 MiB, whatever the frame size.
pub(crate) const GRPC_MAX_FRAME_SIZE: u32 = 1024 * 1024;

pub(super) fn grpc_settings(config: &GrpcConfig, tls: Option<TlsAcceptor>) -> ConnectionSettings {
    let mut builder = listener::hyper_builder().http2_only();
    {
        let mut h2 = builder.http2();
        h2.max_frame_size(GRPC_MAX_FRAME_SIZE);
        if let Some(streams) = config.max_concurrent_streams.filter(|s| *s > 0) {
            h2.max_concurrent_streams(streams);
        }
        if let Some(size) = config.write_buffer_size.filter(|s| *s > 0) {
            h2.max_send_buf_size(usize::try_from(size).unwrap_or(usize::MAX));
        }
        if let Some(params) = config
            .keepalive
            .as_ref()
            .and_then(|k| k.server_parameters.as_ref())
        {
            if let Some(time) = params.time.filter(|t| !t.is_zero()) {
                h2.keep_alive_interval(time);
            }
            if let Some(timeout) = params.timeout.filter(|t| !t.is_zero()) {
                h2.keep_alive_timeout(timeout);
            }
        }
    }
    let mut settings = ConnectionSettings::new(builder, tls);
    if let Some(params) = config
        .keepalive
        .as_ref()
        .and_then(|k| k.server_parameters.as_ref())
    {
        settings.max_connection_age = params.max_connection_age;
        settings.max_connection_age_grace = params.max_connection_age_grace;
        settings.max_connection_idle = params.max_connection_idle;
    }
    settings
}

/// Starts the configured protocols of a validated config; see
/// [`super::ReceiverConfig::start`].
pub(crate) async fn start(
    config: &Config,
    id: &str,
    next: NextConsumer,
    shutdown: CancellationToken,
) -> Result<RunningReceiver, StartError> {
    // Bind and load everything before serving anything, so a failure
    // leaves nothing running.
    let grpc = match &config.protocols.grpc {
        Some(grpc) => {
            let tls = listener::tls_acceptor(grpc.tls.as_ref(), &[b"h2"], id, "grpc")?;
            let (listener, addr) = listener::bind_endpoint(id, "grpc", &grpc.endpoint).await?;
            Some((grpc, tls, listener, addr))
        }
        None => None,
    };
    let http = match &config.protocols.http {
        Some(http) => {
            let tls = listener::tls_acceptor(http.tls.as_ref(), &[b"h2", b"http/1.1"], id, "http")?;
            let (listener, addr) = listener::bind_endpoint(id, "http", &http.endpoint).await?;
            Some((http, tls, listener, addr))
        }
        None => None,
    };

    let tasks = TaskTracker::new();
    let mut addresses = Vec::new();
    if let Some((grpc_config, tls, listener, addr)) = grpc {
        addresses.push(("grpc", addr));
        let service = grpc::GrpcService(Arc::new(grpc::GrpcReceiver {
            method: &grpc::TRACE_EXPORT,
            next: next.clone(),
            counters: counters::TransportCounters::register(id, "grpc", OTLP_REASONS),
            max_recv_msg_size: grpc_config.max_recv_msg_size(),
        }));
        listener::spawn_accept_loop(
            listener,
            grpc_settings(grpc_config, tls),
            service,
            shutdown.clone(),
            &tasks,
        );
    }
    if let Some((http_config, tls, listener, addr)) = http {
        addresses.push(("http", addr));
        let service = HttpService(Arc::new(http::HttpReceiver {
            next,
            counters: counters::TransportCounters::register(id, "http", OTLP_REASONS),
            traces_path: http_config.traces_path(),
            max_body_size: http_config.max_request_body_size(),
            encodings: http_config.encodings(),
            cors: http_config.cors.as_ref().and_then(cors::CorsPolicy::new),
        }));
        let settings = ConnectionSettings::new(listener::hyper_builder(), tls);
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
        start(self, id, next, cx.shutdown.clone()).await
    }
}
