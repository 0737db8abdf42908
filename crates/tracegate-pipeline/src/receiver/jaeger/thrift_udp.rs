//! The Jaeger agent's UDP ports: `emitBatch` from jaeger-client SDKs in
//! the thrift compact protocol (6831) or binary protocol (6832), as the
//! collector's jaeger receiver serves them: one datagram per batch, a
//! bounded packet queue drained by a pool of workers.
//!
//! Every packet that is not turned into spans is counted in
//! `receiver_rejected_requests` with its reason (`too_large`,
//! `queue_full`, `malformed`); spans the pipeline refuses are counted in
//! `receiver_refused_spans`. UDP has no way to answer the client.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{error, ComponentError};
use crate::consumer::NextConsumer;
use crate::receiver::counters::{RejectReason, TransportCounters, INGEST_REASONS};
use crate::receiver::split_host_port;
use crate::receiver::StartError;
use tracegate_model::thrift::{self, ThriftError};
use tracegate_model::{Indexing, SpanBatch};

/// Default `thrift_compact` endpoint, as the collector's.
pub const DEFAULT_COMPACT_ENDPOINT: &str = "localhost:6831";
/// Default `thrift_binary` endpoint, as the collector's.
pub const DEFAULT_BINARY_ENDPOINT: &str = "localhost:6832";
/// Default `queue_size`, as the collector's.
pub const DEFAULT_QUEUE_SIZE: usize = 1000;
/// Default `max_packet_size`, as the collector's (and the largest a
/// jaeger-client sends by default).
pub const DEFAULT_MAX_PACKET_SIZE: usize = 65_000;
/// Default `workers`, as the collector's.
pub const DEFAULT_WORKERS: usize = 10;
/// The largest UDP payload there is; a larger `max_packet_size` cannot help.
const MAX_UDP_PAYLOAD: usize = 65_507;

/// Which thrift protocol a UDP port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThriftProtocol {
    /// `thrift_compact` (6831).
    Compact,
    /// `thrift_binary` (6832).
    Binary,
}

impl ThriftProtocol {
    /// The config key and the `protocol`/`transport` label.
    pub fn name(self) -> &'static str {
        match self {
            ThriftProtocol::Compact => "thrift_compact",
            ThriftProtocol::Binary => "thrift_binary",
        }
    }

    fn default_endpoint(self) -> &'static str {
        match self {
            ThriftProtocol::Compact => DEFAULT_COMPACT_ENDPOINT,
            ThriftProtocol::Binary => DEFAULT_BINARY_ENDPOINT,
        }
    }

    fn decode(self, packet: &[u8], indexing: Indexing) -> Result<SpanBatch, ThriftError> {
        match self {
            ThriftProtocol::Compact => thrift::agent_compact_to_span_batch_with(packet, indexing),
            ThriftProtocol::Binary => thrift::agent_binary_to_span_batch_with(packet, indexing),
        }
    }
}

/// `protocols: thrift_compact:` and `protocols: thrift_binary:`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UdpConfig {
    /// `host:port` to listen on. Default `localhost:6831` for
    /// `thrift_compact`, `localhost:6832` for `thrift_binary`; use
    /// `0.0.0.0:<port>` to accept packets from other hosts.
    #[serde(default)]
    pub endpoint: String,
    /// Packets waiting for a worker; when full, new packets are dropped
    /// and counted (`reason="queue_full"`). Default 1000; 0 means the
    /// default.
    #[serde(default)]
    pub queue_size: usize,
    /// Largest packet accepted, in bytes; larger ones are dropped and
    /// counted (`reason="too_large"`). Default 65000; 0 means the default;
    /// at most 65507.
    #[serde(default)]
    pub max_packet_size: usize,
    /// Tasks decoding packets and handing them to the pipeline. Default
    /// 10; 0 means the default.
    #[serde(default)]
    pub workers: usize,
    /// The socket's receive buffer. Accepted for compatibility; tracegate
    /// keeps the operating system's default. Default 0.
    #[serde(default)]
    pub socket_buffer_size: usize,
}

impl UdpConfig {
    /// The endpoint, the protocol's default applied.
    pub fn endpoint(&self, protocol: ThriftProtocol) -> &str {
        if self.endpoint.is_empty() {
            protocol.default_endpoint()
        } else {
            &self.endpoint
        }
    }

    fn queue_size(&self) -> usize {
        if self.queue_size == 0 {
            DEFAULT_QUEUE_SIZE
        } else {
            self.queue_size
        }
    }

    fn max_packet_size(&self) -> usize {
        if self.max_packet_size == 0 {
            DEFAULT_MAX_PACKET_SIZE
        } else {
            self.max_packet_size
        }
    }

    fn workers(&self) -> usize {
        if self.workers == 0 {
            DEFAULT_WORKERS
        } else {
            self.workers
        }
    }

    /// Pure checks; `path` is the config key (`protocols.thrift_compact`).
    pub fn validate(
        &self,
        protocol: ThriftProtocol,
        path: &str,
    ) -> Result<Vec<String>, ComponentError> {
        split_host_port(self.endpoint(protocol))
            .map_err(|e| error(&format!("{path}.endpoint"), e))?;
        if self.max_packet_size > MAX_UDP_PAYLOAD {
            return Err(error(
                &format!("{path}.max_packet_size"),
                format!(
                    "{} is larger than any UDP packet ({MAX_UDP_PAYLOAD} bytes)",
                    self.max_packet_size
                ),
            ));
        }
        let mut warnings = Vec::new();
        if self.socket_buffer_size != 0 {
            warnings.push(format!(
                "{path}.socket_buffer_size has no effect: tracegate keeps the operating system's default"
            ));
        }
        Ok(warnings)
    }
}

/// Binds `endpoint` for UDP; a name is resolved and its first IPv4
/// address preferred, an empty host is every interface.
async fn bind_udp(endpoint: &str) -> std::io::Result<UdpSocket> {
    let (host, port) = split_host_port(endpoint)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    let mut candidates: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    candidates.sort_by_key(|a| !a.is_ipv4());
    let mut last_error = None;
    for addr in candidates {
        match UdpSocket::bind(addr).await {
            Ok(socket) => return Ok(socket),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("{host:?} resolved to no address"),
        )
    }))
}

/// A bound UDP port, not yet serving.
pub struct BoundUdp {
    socket: UdpSocket,
    addr: SocketAddr,
    protocol: ThriftProtocol,
    config: UdpConfig,
}

impl BoundUdp {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn protocol(&self) -> ThriftProtocol {
        self.protocol
    }
}

/// Binds the port, so that a port in use fails the receiver's start before
/// anything serves.
pub async fn bind(
    config: &UdpConfig,
    protocol: ThriftProtocol,
    id: &str,
) -> Result<BoundUdp, StartError> {
    let endpoint = config.endpoint(protocol);
    let bind_error = |source| StartError::Bind {
        receiver: id.to_string(),
        protocol: protocol.name(),
        endpoint: endpoint.to_string(),
        source,
    };
    let socket = bind_udp(endpoint).await.map_err(bind_error)?;
    let addr = socket.local_addr().map_err(bind_error)?;
    Ok(BoundUdp {
        socket,
        addr,
        protocol,
        config: config.clone(),
    })
}

/// Serves a bound port until `shutdown`: one task reads packets into the
/// queue, `workers` tasks decode and export them; packets still queued at
/// shutdown are processed before the workers end.
pub fn serve(
    bound: BoundUdp,
    id: &str,
    next: NextConsumer,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) {
    let BoundUdp {
        socket,
        protocol,
        config,
        ..
    } = bound;
    let counters = TransportCounters::register(id, protocol.name(), INGEST_REASONS);
    let (tx, rx) = mpsc::channel::<Bytes>(config.queue_size());
    let max_packet = config.max_packet_size();
    {
        let counters = counters.clone();
        tasks.spawn(async move {
            // One byte more than allowed tells a too-large packet apart
            // from one exactly at the limit.
            let mut buf = vec![0u8; max_packet + 1];
            loop {
                let received = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    received = socket.recv_from(&mut buf) => received,
                };
                let len = match received {
                    Ok((len, _)) => len,
                    // ICMP errors and the like: keep serving.
                    Err(e) => {
                        tracing::debug!(error = %e, "jaeger thrift UDP read failed");
                        continue;
                    }
                };
                if len > max_packet {
                    counters.rejected(RejectReason::TooLarge);
                    continue;
                }
                if tx.try_send(Bytes::copy_from_slice(&buf[..len])).is_err() {
                    counters.rejected(RejectReason::QueueFull);
                }
            }
        });
    }
    let rx = Arc::new(Mutex::new(rx));
    let indexing = crate::receiver::indexing_for(next.as_ref());
    for _ in 0..config.workers() {
        let rx = rx.clone();
        let next = next.clone();
        let counters = counters.clone();
        tasks.spawn(async move {
            loop {
                let packet = { rx.lock().await.recv().await };
                let Some(packet) = packet else { break };
                handle_packet(protocol, indexing, &packet, &next, &counters).await;
            }
        });
    }
}

async fn handle_packet(
    protocol: ThriftProtocol,
    indexing: Indexing,
    packet: &[u8],
    next: &NextConsumer,
    counters: &TransportCounters,
) {
    let batch = match protocol.decode(packet, indexing) {
        Ok(batch) => batch,
        Err(e) => {
            counters.rejected(RejectReason::Malformed);
            tracing::debug!(error = %e, protocol = protocol.name(), "dropped a malformed jaeger thrift packet");
            return;
        }
    };
    if let Err(e) = counters.export(next, batch).await {
        tracing::debug!(error = %e, protocol = protocol.name(), "the pipeline refused a jaeger thrift packet");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::receiver::test_support::Collect;
    use tracegate_model::thrift::{Batch, Process, Span, Tag};

    fn batch(spans: usize) -> Batch {
        Batch {
            process: Process {
                service_name: "udp-service".into(),
                tags: Some(vec![Tag::string("hostname", "h")]),
            },
            spans: (0..spans)
                .map(|i| Span {
                    trace_id_low: 1,
                    span_id: i as i64 + 1,
                    operation_name: format!("op-{i}"),
                    start_time: 1_700_000_000_000_000,
                    duration: 5,
                    tags: Some(vec![Tag::string("span.kind", "server")]),
                    ..Default::default()
                })
                .collect(),
            seq_no: None,
        }
    }

    async fn serve_on(
        protocol: ThriftProtocol,
        config: UdpConfig,
    ) -> (
        SocketAddr,
        mpsc::UnboundedReceiver<SpanBatch>,
        CancellationToken,
        TaskTracker,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let bound = bind(&config, protocol, "jaeger").await.unwrap();
        let addr = bound.local_addr();
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        serve(
            bound,
            "jaeger",
            Arc::new(Collect(tx)),
            shutdown.clone(),
            &tasks,
        );
        (addr, rx, shutdown, tasks)
    }

    fn local(max_packet_size: usize) -> UdpConfig {
        UdpConfig {
            endpoint: "127.0.0.1:0".into(),
            max_packet_size,
            ..Default::default()
        }
    }

    async fn client() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").await.unwrap()
    }

    #[tokio::test]
    async fn compact_and_binary_packets_become_batches() {
        for (protocol, packet) in [
            (
                ThriftProtocol::Compact,
                thrift::encode_agent_compact(&batch(3)),
            ),
            (
                ThriftProtocol::Binary,
                thrift::encode_agent_binary(&batch(3)),
            ),
        ] {
            let (addr, mut rx, shutdown, tasks) = serve_on(protocol, local(0)).await;
            let client = client().await;
            // Garbage first: it is dropped, the good packet still arrives.
            client.send_to(b"\x82\x81garbage", addr).await.unwrap();
            client.send_to(&packet, addr).await.unwrap();
            let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got.len(), 3);
            assert_eq!(got.service_name(0), Some("udp-service"));
            assert_eq!(got.span_name(2), "op-2");
            shutdown.cancel();
            tasks.close();
            tasks.wait().await;
        }
    }

    #[tokio::test]
    async fn packets_past_max_packet_size_are_dropped() {
        let small = thrift::encode_agent_compact(&batch(1));
        let big = thrift::encode_agent_compact(&batch(40));
        assert!(big.len() > small.len() + 10);
        let (addr, mut rx, shutdown, tasks) =
            serve_on(ThriftProtocol::Compact, local(small.len())).await;
        let client = client().await;
        client.send_to(&big, addr).await.unwrap();
        client.send_to(&small, addr).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.len(), 1, "only the packet within the limit arrives");
        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn config_defaults_and_checks() {
        let config = UdpConfig::default();
        assert_eq!(config.endpoint(ThriftProtocol::Compact), "localhost:6831");
        assert_eq!(config.endpoint(ThriftProtocol::Binary), "localhost:6832");
        assert_eq!(config.queue_size(), 1000);
        assert_eq!(config.max_packet_size(), 65_000);
        assert_eq!(config.workers(), 10);
        let too_big = UdpConfig {
            max_packet_size: 70_000,
            ..Default::default()
        };
        let err = too_big
            .validate(ThriftProtocol::Compact, "protocols.thrift_compact")
            .unwrap_err();
        assert_eq!(err.path, "protocols.thrift_compact.max_packet_size");
        let bad = UdpConfig {
            endpoint: "nope".into(),
            ..Default::default()
        };
        assert!(bad.validate(ThriftProtocol::Binary, "p").is_err());
    }
}
