//! `receivers: otlp:` as the collector's `otlpreceiver` spells it, with
//! its defaults (`configgrpc.ServerConfig`, `confighttp.ServerConfig`).

use std::time::Duration;

use serde::Deserialize;

use crate::auth::AuthConfig;
use crate::compression::ContentEncoding;
use crate::config::{error, ComponentError};
use crate::receiver::server_keys::http_server_config;
use crate::receiver::{present_means_enabled, split_host_port};
use crate::tls::TlsServerConfig;

/// Default gRPC endpoint, as the collector's.
pub const DEFAULT_GRPC_ENDPOINT: &str = "localhost:4317";
/// Default HTTP endpoint, as the collector's.
pub const DEFAULT_HTTP_ENDPOINT: &str = "localhost:4318";
/// Default `max_recv_msg_size_mib` (grpc-go's default, kept by the collector).
pub const DEFAULT_MAX_RECV_MSG_SIZE_MIB: u64 = 4;
pub use crate::receiver::http_ingest::DEFAULT_MAX_REQUEST_BODY_SIZE;

/// `receivers: otlp:`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The protocols to serve. A protocol written with no value (`grpc:`)
    /// is served with its defaults; a protocol left out is not served. At
    /// least one is required.
    #[serde(default)]
    pub protocols: Protocols,
}

/// `protocols:` of the OTLP receiver.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    /// OTLP/gRPC (`TraceService/Export`). Not served unless present.
    #[serde(default, deserialize_with = "present_means_enabled")]
    pub grpc: Option<GrpcConfig>,
    /// OTLP/HTTP (`POST /v1/traces`, protobuf and JSON). Not served unless
    /// present.
    #[serde(default, deserialize_with = "present_means_enabled")]
    pub http: Option<HttpConfig>,
}

/// `protocols: grpc:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// `host:port` to listen on. Default `localhost:4317`; use
    /// `0.0.0.0:4317` to accept connections from other hosts, port 0 for
    /// any free port.
    #[serde(default = "default_grpc_endpoint")]
    pub endpoint: String,
    /// Network transport. Only `tcp` (the default) is supported.
    #[serde(default)]
    pub transport: Option<String>,
    /// Server TLS (`cert_file`, `key_file`, optional `client_ca_file` for
    /// mTLS). Default: plaintext.
    #[serde(default)]
    pub tls: Option<TlsServerConfig>,
    /// Largest request message accepted, in MiB, measured after
    /// decompression. Default 4; larger requests get RESOURCE_EXHAUSTED.
    #[serde(default = "default_max_recv_msg_size_mib")]
    pub max_recv_msg_size_mib: u64,
    /// Concurrent HTTP/2 streams allowed per connection. Default: hyper's
    /// limit (200); 0 means the default.
    #[serde(default)]
    pub max_concurrent_streams: Option<u32>,
    /// Accepted for compatibility, no effect. In the collector (default
    /// 512 KiB) it is grpc-go's per-connection read buffer, the most one
    /// read call takes; tracegate's HTTP/2 server reads whole frames (up to
    /// 1 MiB) and unread data per connection is capped by HTTP/2 flow
    /// control at 1 MiB, so there is no such buffer to size.
    #[serde(default)]
    pub read_buffer_size: Option<u64>,
    /// Upper bound, in bytes, on data buffered per HTTP/2 stream for
    /// sending. Default: hyper's (400 KiB). In the collector it sizes
    /// grpc-go's per-connection write buffer instead; either way it only
    /// holds responses, which are a few bytes here.
    #[serde(default)]
    pub write_buffer_size: Option<u64>,
    /// gRPC keepalive, as grpc-go's server options. Default: none.
    #[serde(default)]
    pub keepalive: Option<KeepaliveConfig>,
    /// Propagate request headers to the pipeline. Accepted for
    /// compatibility; tracegate does not propagate request metadata yet.
    /// Default false.
    #[serde(default)]
    pub include_metadata: bool,
    /// Require credentials of every request, checked by this
    /// authenticator extension. Default: none required.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            endpoint: default_grpc_endpoint(),
            transport: None,
            tls: None,
            max_recv_msg_size_mib: DEFAULT_MAX_RECV_MSG_SIZE_MIB,
            max_concurrent_streams: None,
            read_buffer_size: None,
            write_buffer_size: None,
            keepalive: None,
            include_metadata: false,
            auth: None,
        }
    }
}

/// `grpc: keepalive:`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeepaliveConfig {
    /// Connection lifetime and ping settings.
    #[serde(default)]
    pub server_parameters: Option<KeepaliveServerParameters>,
    /// How often clients may ping. Accepted for compatibility; not
    /// enforced (hyper's HTTP/2 server has no ping policy).
    #[serde(default)]
    pub enforcement_policy: Option<KeepaliveEnforcementPolicy>,
}

/// `keepalive: server_parameters:`. Durations like `30s`; unset means
/// grpc-go's default, noted per field.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeepaliveServerParameters {
    /// Close a connection with no request in flight for this long.
    /// Default: never.
    #[serde(default, deserialize_with = "crate::duration::deserialize_opt")]
    pub max_connection_idle: Option<Duration>,
    /// Close a connection this old, gracefully (GOAWAY, in-flight requests
    /// finish). Default: never.
    #[serde(default, deserialize_with = "crate::duration::deserialize_opt")]
    pub max_connection_age: Option<Duration>,
    /// After `max_connection_age`, how long in-flight requests may take
    /// before the connection is closed anyway. Default: no limit.
    #[serde(default, deserialize_with = "crate::duration::deserialize_opt")]
    pub max_connection_age_grace: Option<Duration>,
    /// Ping a connection after this long without activity. Default: unset,
    /// and then tracegate never pings (grpc-go would ping after 2h); `0` is
    /// the same as unset.
    #[serde(default, deserialize_with = "crate::duration::deserialize_opt")]
    pub time: Option<Duration>,
    /// Close the connection when a ping is not answered within this; only
    /// used with `time`. Default 20s (also for `0`).
    #[serde(default, deserialize_with = "crate::duration::deserialize_opt")]
    pub timeout: Option<Duration>,
}

/// `keepalive: enforcement_policy:` (accepted, not enforced).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeepaliveEnforcementPolicy {
    /// Shortest interval between client pings. Default 5m in grpc-go.
    #[serde(default, deserialize_with = "crate::duration::deserialize_opt")]
    pub min_time: Option<Duration>,
    /// Allow pings with no stream open. Default false.
    #[serde(default)]
    pub permit_without_stream: bool,
}

http_server_config! {
    /// `protocols: http:`.
    pub struct HttpConfig {
        /// `host:port` to listen on. Default `localhost:4318`; use
        /// `0.0.0.0:4318` to accept connections from other hosts, port 0 for
        /// any free port.
        #[serde(default = "default_http_endpoint")]
        pub endpoint: String = default_http_endpoint(),
        /// Cross-origin requests from browsers. Default: none allowed.
        #[serde(default)]
        pub cors: Option<CorsConfig> = None,
        /// Propagate request headers to the pipeline. Accepted for
        /// compatibility; tracegate does not propagate request metadata yet.
        /// Default false.
        #[serde(default)]
        pub include_metadata: bool = false,
        /// `Content-Encoding`s accepted. Default, as the collector's: `["",
        /// gzip, zstd, zlib, snappy, deflate, lz4, x-snappy-framed]`; `""` is
        /// an uncompressed body.
        #[serde(default)]
        pub compression_algorithms: Option<Vec<String>> = None,
        /// Path that receives traces. Default `/v1/traces`; a missing leading
        /// `/` is added.
        #[serde(default = "default_traces_url_path")]
        pub traces_url_path: String = default_traces_url_path(),
        /// Accepted for compatibility; tracegate has no metrics pipelines, so
        /// this path answers 404. Default `/v1/metrics`.
        #[serde(default = "default_metrics_url_path")]
        pub metrics_url_path: String = default_metrics_url_path(),
        /// Accepted for compatibility; tracegate has no logs pipelines, so
        /// this path answers 404. Default `/v1/logs`.
        #[serde(default = "default_logs_url_path")]
        pub logs_url_path: String = default_logs_url_path(),
    }
}

/// `http: cors:` (the collector's `confighttp.CORSConfig`). CORS is on
/// when `allowed_origins` is not empty.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed to send requests, e.g. `https://*.example.com`; one
    /// `*` per origin stands for any characters, `"*"` alone allows every
    /// origin. Default: none.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Request headers allowed besides `Accept`, `Accept-Language`,
    /// `Content-Type` and `Content-Language` (always allowed);
    /// `X-Requested-With` is also allowed when this is empty. `"*"` allows
    /// any. Default: none.
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    /// Seconds browsers may cache a preflight answer
    /// (`Access-Control-Max-Age`). Default 0: header not sent.
    #[serde(default)]
    pub max_age: i64,
}

fn default_grpc_endpoint() -> String {
    DEFAULT_GRPC_ENDPOINT.into()
}
fn default_http_endpoint() -> String {
    DEFAULT_HTTP_ENDPOINT.into()
}
fn default_max_recv_msg_size_mib() -> u64 {
    DEFAULT_MAX_RECV_MSG_SIZE_MIB
}
fn default_traces_url_path() -> String {
    "/v1/traces".into()
}
fn default_metrics_url_path() -> String {
    "/v1/metrics".into()
}
fn default_logs_url_path() -> String {
    "/v1/logs".into()
}

/// The collector's `SanitizedURLPath`: keeps the URL's path and makes it
/// absolute. A first segment with `:` would parse as a URL scheme, which
/// the collector rejects.
pub(crate) fn sanitize_url_path(raw: &str) -> Result<String, String> {
    let path = raw.split(['?', '#']).next().unwrap_or_default();
    if path.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!(
            "invalid HTTP URL path {raw:?}: contains spaces or control characters"
        ));
    }
    let first_segment = path.split('/').next().unwrap_or_default();
    if first_segment.contains(':') {
        return Err(format!(
            "invalid HTTP URL path {raw:?}: the first segment cannot contain ':'"
        ));
    }
    Ok(if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    })
}

impl GrpcConfig {
    /// `max_recv_msg_size_mib` in bytes (0 means the default).
    pub fn max_recv_msg_size(&self) -> usize {
        let mib = if self.max_recv_msg_size_mib == 0 {
            DEFAULT_MAX_RECV_MSG_SIZE_MIB
        } else {
            self.max_recv_msg_size_mib
        };
        usize::try_from(mib.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
    }

    pub(crate) fn validate(&self, warnings: &mut Vec<String>) -> Result<(), ComponentError> {
        split_host_port(&self.endpoint).map_err(|e| error("protocols.grpc.endpoint", e))?;
        if let Some(transport) = &self.transport {
            if transport != "tcp" {
                return Err(error(
                    "protocols.grpc.transport",
                    format!("transport {transport:?} is not supported; only \"tcp\" is"),
                ));
            }
        }
        if let Some(tls) = &self.tls {
            tls.validate()
                .map_err(|e| error("protocols.grpc.tls", e.to_string()))?;
        }
        if let Some(auth) = &self.auth {
            auth.validate("protocols.grpc.auth")?;
        }
        if self.max_recv_msg_size_mib > (usize::MAX / (1024 * 1024)) as u64 {
            return Err(error(
                "protocols.grpc.max_recv_msg_size_mib",
                format!("{} MiB is too large", self.max_recv_msg_size_mib),
            ));
        }
        if self.include_metadata {
            warnings.push(
                "protocols.grpc.include_metadata has no effect: tracegate does not propagate request metadata yet"
                    .into(),
            );
        }
        if let Some(keepalive) = &self.keepalive {
            if keepalive.enforcement_policy.is_some() {
                warnings.push(
                    "protocols.grpc.keepalive.enforcement_policy is accepted but not enforced"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

impl HttpConfig {
    /// The traces path as served (always absolute).
    pub fn traces_path(&self) -> String {
        sanitize_url_path(&self.traces_url_path).unwrap_or_else(|_| default_traces_url_path())
    }

    /// The accepted encodings, in config order.
    pub fn encodings(&self) -> Vec<ContentEncoding> {
        match &self.compression_algorithms {
            None => vec![
                ContentEncoding::Identity,
                ContentEncoding::Gzip,
                ContentEncoding::Zstd,
                ContentEncoding::Zlib,
                ContentEncoding::Snappy,
                ContentEncoding::Lz4,
                ContentEncoding::SnappyFramed,
            ],
            Some(names) => names
                .iter()
                .filter_map(|n| ContentEncoding::from_header(n))
                .collect(),
        }
    }

    fn validate(&self, warnings: &mut Vec<String>) -> Result<(), ComponentError> {
        split_host_port(&self.endpoint).map_err(|e| error("protocols.http.endpoint", e))?;
        warnings.extend(self.server_keys().validate("protocols.http")?);
        if let Some(tls) = &self.tls {
            tls.validate()
                .map_err(|e| error("protocols.http.tls", e.to_string()))?;
        }
        for (key, value) in [
            ("traces_url_path", &self.traces_url_path),
            ("metrics_url_path", &self.metrics_url_path),
            ("logs_url_path", &self.logs_url_path),
        ] {
            sanitize_url_path(value).map_err(|e| error(&format!("protocols.http.{key}"), e))?;
        }
        if let Some(names) = &self.compression_algorithms {
            for name in names {
                if ContentEncoding::from_header(name).is_none() {
                    return Err(error(
                        "protocols.http.compression_algorithms",
                        format!("unknown compression algorithm {name:?} (expected one of \"\", gzip, zstd, zlib, snappy, deflate, lz4, x-snappy-framed)"),
                    ));
                }
            }
        }
        if let Some(cors) = &self.cors {
            if cors.allowed_origins.is_empty() && !cors.allowed_headers.is_empty() {
                warnings.push(
                    "protocols.http.cors lists allowed_headers but no allowed_origins, so CORS stays off"
                        .into(),
                );
            }
        }
        if self.include_metadata {
            warnings.push(
                "protocols.http.include_metadata has no effect: tracegate does not propagate request metadata yet"
                    .into(),
            );
        }
        Ok(())
    }
}

impl Config {
    /// Pure checks: endpoints parse, TLS settings are consistent, at least
    /// one protocol. Returns warnings for accepted-but-inert settings.
    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        let mut warnings = Vec::new();
        if self.protocols.grpc.is_none() && self.protocols.http.is_none() {
            return Err(error(
                "protocols",
                "must specify at least one protocol when using the OTLP receiver",
            ));
        }
        if let Some(grpc) = &self.protocols.grpc {
            grpc.validate(&mut warnings)?;
        }
        if let Some(http) = &self.protocols.http {
            http.validate(&mut warnings)?;
        }
        Ok(warnings)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::receiver::ReceiverConfig;

    fn parse(value: serde_json::Value) -> Result<Config, ComponentError> {
        match ReceiverConfig::from_value("otlp", value) {
            Some(Ok(ReceiverConfig::Otlp(config))) => Ok(config),
            Some(Ok(other)) => panic!("otlp parsed as another receiver: {other:?}"),
            Some(Err(e)) => Err(e),
            None => panic!("otlp is a receiver kind"),
        }
    }

    #[test]
    fn a_protocol_with_no_value_is_enabled_with_defaults() {
        let config = parse(json!({"protocols": {"grpc": null, "http": null}})).unwrap();
        assert_eq!(config.protocols.grpc, Some(GrpcConfig::default()));
        assert_eq!(config.protocols.http, Some(HttpConfig::default()));
        let grpc = config.protocols.grpc.as_ref().unwrap();
        assert_eq!(grpc.endpoint, "localhost:4317");
        assert_eq!(grpc.max_recv_msg_size(), 4 * 1024 * 1024);
        let http = config.protocols.http.as_ref().unwrap();
        assert_eq!(http.endpoint, "localhost:4318");
        assert_eq!(http.max_request_body_size(), 20 * 1024 * 1024);
        assert_eq!(http.traces_path(), "/v1/traces");
        assert_eq!(config.validate(), Ok(vec![]));
    }

    #[test]
    fn nested_keys_with_no_value_are_their_defaults() {
        let config = parse(json!({"protocols": {
            "grpc": {"endpoint": null, "tls": null, "keepalive": null, "max_recv_msg_size_mib": null},
            "http": {"cors": null, "tls": null, "compression_algorithms": null, "traces_url_path": null},
        }}))
        .unwrap();
        assert_eq!(config.protocols.grpc, Some(GrpcConfig::default()));
        assert_eq!(config.protocols.http, Some(HttpConfig::default()));
        let e = parse(json!({"protocols": {"grpc": {"endpiont": null}}})).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            (
                "protocols.grpc",
                r#"unknown field "endpiont", did you mean "endpoint"?"#
            )
        );
    }

    #[test]
    fn an_absent_protocol_is_disabled_and_one_is_required() {
        let config = parse(json!({"protocols": {"http": {}}})).unwrap();
        assert!(config.protocols.grpc.is_none());
        assert!(config.protocols.http.is_some());

        for empty in [
            json!(null),
            json!({}),
            json!({"protocols": null}),
            json!({"protocols": {}}),
        ] {
            let config = parse(empty.clone()).unwrap();
            let err = config.validate().unwrap_err();
            assert_eq!(err.path, "protocols", "{empty}");
            assert!(err.message.contains("at least one protocol"));
        }
    }

    #[test]
    fn parses_the_collectors_full_example() {
        let config = parse(json!({"protocols": {
            "grpc": {
                "endpoint": "0.0.0.0:4317",
                "tls": {"cert_file": "test.crt", "key_file": "test.key"},
                "max_recv_msg_size_mib": 32,
                "max_concurrent_streams": 16,
                "read_buffer_size": 1024,
                "write_buffer_size": 1024,
                "keepalive": {
                    "server_parameters": {
                        "max_connection_idle": "11s",
                        "max_connection_age": "12s",
                        "max_connection_age_grace": "13s",
                        "time": "30s",
                        "timeout": "5s"
                    },
                    "enforcement_policy": {"min_time": "10s", "permit_without_stream": true}
                }
            },
            "http": {
                "tls": {"cert_file": "test.crt", "key_file": "test.key"},
                "cors": {
                    "allowed_origins": ["https://*.test.com", "https://test.com"],
                    "max_age": 7200
                },
                "traces_url_path": "traces",
                "metrics_url_path": "/v2/metrics",
                "logs_url_path": "log/ingest"
            }
        }}))
        .unwrap();
        let grpc = config.protocols.grpc.as_ref().unwrap();
        assert_eq!(grpc.max_recv_msg_size(), 32 << 20);
        let params = grpc
            .keepalive
            .as_ref()
            .unwrap()
            .server_parameters
            .as_ref()
            .unwrap();
        assert_eq!(params.max_connection_idle, Some(Duration::from_secs(11)));
        assert_eq!(params.timeout, Some(Duration::from_secs(5)));
        let http = config.protocols.http.as_ref().unwrap();
        assert_eq!(http.traces_path(), "/traces");
        assert_eq!(http.cors.as_ref().unwrap().max_age, 7200);
        let warnings = config.validate().unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("enforcement_policy"));
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let err = parse(json!({"protocols": {"grpc": {"endpont": "x:1"}}})).unwrap_err();
        assert_eq!(err.path, "protocols.grpc");
        assert!(err.message.contains("endpont"), "{}", err.message);

        let err =
            parse(json!({"protocols": {"http": {"cors": {"allowed_origin": []}}}})).unwrap_err();
        assert_eq!(err.path, "protocols.http.cors");

        let err = parse(json!({"protocols": {"thrift": {}}})).unwrap_err();
        assert_eq!(err.path, "protocols");
    }

    #[test]
    fn validate_names_the_bad_key() {
        let cases = [
            (
                json!({"grpc": {"endpoint": "localhost"}}),
                "protocols.grpc.endpoint",
            ),
            (
                json!({"http": {"endpoint": "host:port"}}),
                "protocols.http.endpoint",
            ),
            (
                json!({"grpc": {"tls": {"cert_file": "c.pem"}}}),
                "protocols.grpc.tls",
            ),
            (
                json!({"http": {"tls": {"key_file": "k.pem"}}}),
                "protocols.http.tls",
            ),
            (
                json!({"http": {"tls": {"cert_file": "c", "key_file": "k", "min_version": "1.1"}}}),
                "protocols.http.tls",
            ),
            (
                json!({"http": {"traces_url_path": ":invalid"}}),
                "protocols.http.traces_url_path",
            ),
            (
                json!({"http": {"compression_algorithms": ["brotli"]}}),
                "protocols.http.compression_algorithms",
            ),
            (
                json!({"grpc": {"transport": "unix"}}),
                "protocols.grpc.transport",
            ),
        ];
        for (protocols, path) in cases {
            let config = parse(json!({ "protocols": protocols })).unwrap();
            let err = config.validate().unwrap_err();
            assert_eq!(err.path, path, "{protocols}: {err}");
        }
    }

    #[test]
    fn inert_settings_warn() {
        let config = parse(json!({"protocols": {
            "grpc": {"include_metadata": true},
            "http": {
                "include_metadata": true,
                "compression_algorithms": ["", "gzip", "lz4"],
                "cors": {"allowed_headers": ["X-Custom"]}
            }
        }}))
        .unwrap();
        let warnings = config.validate().unwrap();
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        let http = config.protocols.http.unwrap();
        assert_eq!(
            http.encodings(),
            vec![
                ContentEncoding::Identity,
                ContentEncoding::Gzip,
                ContentEncoding::Lz4
            ]
        );
    }

    #[test]
    fn url_paths_are_sanitized_like_the_collector() {
        assert_eq!(sanitize_url_path("traces").unwrap(), "/traces");
        assert_eq!(sanitize_url_path("/v2/traces").unwrap(), "/v2/traces");
        assert_eq!(sanitize_url_path("log/ingest?x=1").unwrap(), "/log/ingest");
        assert_eq!(sanitize_url_path("").unwrap(), "/");
        assert!(sanitize_url_path(":invalid").is_err());
        assert!(sanitize_url_path("a b").is_err());
        // A colon after the first slash is an ordinary path character.
        assert_eq!(sanitize_url_path("/a:b").unwrap(), "/a:b");
    }
}
