//! The `jaeger` receiver, as the collector's `jaegerreceiver`: api_v2 gRPC
//! `CollectorService/PostSpans` (`protocols.grpc`, default `localhost:14250`)
//! and, in `thrift*.rs`, jaeger.thrift `Batch`es over HTTP and UDP
//! (`protocols.thrift_http`, `thrift_compact`, `thrift_binary`).

use serde::Deserialize;
use serde_json::Value;
use tokio_util::task::TaskTracker;

use super::grpc_ingest::BoundGrpc;
use super::otlp::GrpcConfig;
use super::{present_means_enabled, RunningReceiver, StartError};
use crate::config::{error, ComponentError};
use crate::consumer::NextConsumer;

mod grpc;
pub mod thrift_http;
pub mod thrift_udp;

pub use thrift_http::ThriftHttpConfig;
pub use thrift_udp::{ThriftProtocol, UdpConfig};

pub use grpc::POST_SPANS_PATH;

/// Where the gRPC protocol listens unless `endpoint` says otherwise.
pub const DEFAULT_GRPC_ENDPOINT: &str = "localhost:14250";

/// `receivers: jaeger:`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The protocols to serve. A protocol written with no value (`grpc:`)
    /// is served with its defaults; a protocol left out is not served. At
    /// least one is required.
    #[serde(default)]
    pub protocols: Protocols,
}

/// `protocols:` of the Jaeger receiver.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    /// api_v2 gRPC. The OTLP receiver's gRPC keys (`endpoint`, `tls`,
    /// `max_recv_msg_size_mib`, `keepalive`, ...); `endpoint` defaults to
    /// `localhost:14250` (put in by [`Config::from_value`]). Not served
    /// unless present.
    #[serde(default, deserialize_with = "present_means_enabled")]
    pub grpc: Option<GrpcConfig>,
    /// jaeger.thrift binary over HTTP (`POST /api/traces`), default
    /// `localhost:14268`. Not served unless present.
    #[serde(default, deserialize_with = "present_means_enabled")]
    pub thrift_http: Option<ThriftHttpConfig>,
    /// jaeger.thrift compact over UDP (agent `emitBatch`), default
    /// `localhost:6831`. Not served unless present.
    #[serde(default, deserialize_with = "present_means_enabled")]
    pub thrift_compact: Option<UdpConfig>,
    /// jaeger.thrift binary over UDP (agent `emitBatch`), default
    /// `localhost:6832`. Not served unless present.
    #[serde(default, deserialize_with = "present_means_enabled")]
    pub thrift_binary: Option<UdpConfig>,
}

impl Config {
    /// Reads `receivers: jaeger:` as every component is read
    /// ([`crate::config::from_value`]: a key with no value means its
    /// defaults, at any depth), with Jaeger's gRPC port where `grpc` names
    /// no endpoint. The port is put into the value before it is read,
    /// since the gRPC section's own default is OTLP's.
    pub fn from_value(mut value: Value) -> Result<Config, ComponentError> {
        if let Some(grpc) = value.pointer_mut("/protocols/grpc") {
            if grpc.is_null() {
                *grpc = Value::Object(Default::default());
            }
            if let Some(grpc) = grpc.as_object_mut() {
                let endpoint = grpc.entry("endpoint").or_insert(Value::Null);
                if endpoint.is_null() {
                    *endpoint = DEFAULT_GRPC_ENDPOINT.into();
                }
            }
        }
        crate::config::from_value(value)
    }

    /// Pure checks: at least one protocol, endpoints parse, TLS settings
    /// are consistent.
    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        let p = &self.protocols;
        if p.grpc.is_none()
            && p.thrift_http.is_none()
            && p.thrift_compact.is_none()
            && p.thrift_binary.is_none()
        {
            return Err(error(
                "protocols",
                "must specify at least one protocol when using the Jaeger receiver",
            ));
        }
        let mut warnings = Vec::new();
        if let Some(http) = &p.thrift_http {
            warnings.extend(http.validate("protocols.thrift_http")?);
        }
        for (protocol, udp) in [
            (ThriftProtocol::Compact, &p.thrift_compact),
            (ThriftProtocol::Binary, &p.thrift_binary),
        ] {
            if let Some(udp) = udp {
                let path = format!("protocols.{}", protocol.name());
                warnings.extend(udp.validate(protocol, &path)?);
            }
        }
        if let Some(grpc) = &p.grpc {
            grpc.validate(&mut warnings)?;
        }
        Ok(warnings)
    }
}

/// Starts the configured protocols of a validated config; see
/// [`super::ReceiverConfig::start`].
pub(crate) async fn start(
    config: &Config,
    id: &str,
    next: NextConsumer,
    ctx: &super::BuildContext,
) -> Result<RunningReceiver, StartError> {
    let shutdown = ctx.shutdown.clone();
    // The thrift ports are bound (and TLS loaded) before anything serves,
    // so a port in use leaves nothing running.
    let thrift_http = match &config.protocols.thrift_http {
        Some(http) => Some(thrift_http::bind(http, id, &ctx.authenticators).await?),
        None => None,
    };
    let mut thrift_udp = Vec::new();
    for (protocol, udp) in [
        (ThriftProtocol::Compact, &config.protocols.thrift_compact),
        (ThriftProtocol::Binary, &config.protocols.thrift_binary),
    ] {
        if let Some(udp) = udp {
            thrift_udp.push(thrift_udp::bind(udp, protocol, id).await?);
        }
    }
    let tasks = TaskTracker::new();
    let mut addresses = Vec::new();
    if let Some(grpc_config) = &config.protocols.grpc {
        let (bound, addr) = BoundGrpc::bind(grpc_config, id, &ctx.authenticators).await?;
        addresses.push(("grpc", addr));
        bound.serve(
            &grpc::POST_SPANS,
            id,
            next.clone(),
            None,
            shutdown.clone(),
            &tasks,
        );
    }
    if let Some(bound) = thrift_http {
        addresses.push(("thrift_http", bound.local_addr()));
        thrift_http::serve(bound, next.clone(), shutdown.clone(), &tasks);
    }
    for bound in thrift_udp {
        addresses.push((bound.protocol().name(), bound.local_addr()));
        thrift_udp::serve(bound, id, next.clone(), shutdown.clone(), &tasks);
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

#[cfg(test)]
mod tests;
