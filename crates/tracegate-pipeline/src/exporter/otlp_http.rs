//! The OTLP/HTTP exporter (`otlphttp`, alias `otlp_http`), as the collector's
//! `otlphttpexporter`: `POST <endpoint>/v1/traces` with the protobuf request
//! (sent as it is) or OTLP/JSON, gzip/zstd, headers, a request timeout;
//! 429/502/503/504 are retried, `Retry-After` honoured on 429 and 503, every
//! other status is permanent.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use serde::Deserialize;
use tracegate_model::SpanBatch;

use super::compress::Encoder;
use super::delivery::{
    attempt_timeout, validate_transport, Compression, CompressionParams, QueueConfig, RetryConfig,
};
use super::utc::unix_time;
use super::{Delivered, ExportError, Exporter};
use crate::auth::{AuthConfig, ClientAuth};
use crate::config::{error, ComponentError};
use crate::grpc::rpc_status::RpcStatus;
use crate::tls::TlsClientConfig;

/// As the collector: at most this much of a response body is read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// `encoding:` of request bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Proto,
    Json,
}

/// `exporters: otlphttp:` (also `otlp_http`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Base URL, e.g. `https://tempo:4318`; traces go to `<endpoint>/v1/traces`.
    /// Required unless `traces_endpoint` is set.
    #[serde(default)]
    pub endpoint: String,
    /// Full URL for traces, used as given instead of `endpoint` + `/v1/traces`.
    pub traces_endpoint: Option<String>,
    /// Accepted for compatibility; tracegate exports traces only.
    pub metrics_endpoint: Option<String>,
    /// Accepted for compatibility; tracegate exports traces only.
    pub logs_endpoint: Option<String>,
    /// Accepted for compatibility; tracegate exports traces only.
    pub profiles_endpoint: Option<String>,
    /// Body encoding: `proto` (application/x-protobuf) or `json`
    /// (application/json, OTLP/JSON). Default `proto`.
    #[serde(default)]
    pub encoding: Encoding,
    /// Client TLS for `https://` URLs (`insecure` has no effect over HTTP:
    /// the URL scheme decides). Without `ca_file` the server is verified
    /// against the webpki (Mozilla) roots.
    #[serde(default)]
    pub tls: TlsClientConfig,
    /// Body compression: `gzip`, `zstd` or `none`. Default `gzip`.
    #[serde(default)]
    pub compression: Compression,
    /// The level `compression` writes at, as the collector's
    /// `compression_params`: `level: 0` (default) is tracegate's (gzip 1,
    /// zstd 3).
    #[serde(default)]
    pub compression_params: CompressionParams,
    /// HTTP headers sent with every request. A mapping, or a list of
    /// `{name, value}` as the collector also takes it. Default none.
    #[serde(default, deserialize_with = "crate::config::header_map")]
    pub headers: BTreeMap<String, String>,
    /// Time limit of one request, response included. Default `30s` (the
    /// collector's OTLP/HTTP default).
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
    /// Idle connections kept per host. Default unlimited.
    pub max_idle_conns_per_host: Option<usize>,
    /// Idle connections kept in all. The exporter talks to one host, so
    /// this caps the idle pool as `max_idle_conns_per_host` does; the lower
    /// of the two applies. Default unlimited.
    pub max_idle_conns: Option<usize>,
    /// Close each connection after its request instead of reusing it.
    /// Default `false`.
    #[serde(default)]
    pub disable_keep_alives: bool,
    /// On an HTTP/2 connection, ping the server after this long without
    /// a frame from it. `0` (the default) sends no pings.
    #[serde(default, deserialize_with = "crate::duration::deserialize_opt")]
    pub http2_read_idle_timeout: Option<Duration>,
    /// Close an HTTP/2 connection when a ping is not answered within this.
    /// Used only with `http2_read_idle_timeout`. Default `15s`.
    #[serde(default, deserialize_with = "crate::duration::deserialize_opt")]
    pub http2_ping_timeout: Option<Duration>,
    /// Close idle connections after this long. Default `90s`.
    #[serde(default, deserialize_with = "crate::duration::deserialize_opt")]
    pub idle_conn_timeout: Option<Duration>,
    /// Accepted for compatibility; no effect. Default 0.
    pub read_buffer_size: Option<usize>,
    /// Accepted for compatibility; no effect. Default 512 KiB.
    pub write_buffer_size: Option<usize>,
    /// Send credentials with every request, from this authenticator
    /// extension. Default: none.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Not a config key: the started authenticator `auth` names, put here
    /// when the exporter is built.
    #[serde(skip)]
    pub client_auth: Option<ClientAuth>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Config {
    /// The URL traces are posted to.
    fn traces_url(&self) -> Result<Uri, ComponentError> {
        let (key, url) = match &self.traces_endpoint {
            Some(url) => ("traces_endpoint", url.clone()),
            None if self.endpoint.is_empty() => {
                return Err(error(
                    "endpoint",
                    "either endpoint or traces_endpoint must be specified",
                ))
            }
            None if self.endpoint.ends_with('/') => {
                ("endpoint", format!("{}v1/traces", self.endpoint))
            }
            None => ("endpoint", format!("{}/v1/traces", self.endpoint)),
        };
        let uri: Uri = url
            .parse()
            .map_err(|_| error(key, format!("{url:?} is not a valid URL")))?;
        match uri.scheme_str() {
            Some("http") | Some("https") if uri.host().is_some() => Ok(uri),
            _ => Err(error(
                key,
                format!("{url:?} must be an http:// or https:// URL with a host"),
            )),
        }
    }

    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        let url = self.traces_url()?;
        let warnings =
            validate_transport(url.scheme_str() == Some("https"), &self.tls, &self.headers)?;
        if let Some(auth) = &self.auth {
            auth.validate("auth")?;
        }
        self.compression.encoder(self.compression_params)?;
        self.sending_queue.validate()?;
        self.retry_on_failure.validate()?;
        Ok(warnings)
    }
}

/// A running OTLP/HTTP client.
pub struct OtlpHttpExporter {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
    encoding: Encoding,
    compression: Encoder,
    headers: HeaderMap,
    /// `None`: no limit (`timeout: 0`).
    timeout: Option<Duration>,
    /// Adds its header to every request.
    auth: Option<ClientAuth>,
}

impl OtlpHttpExporter {
    /// Builds the client; reads the TLS files for an `https://` URL. Must
    /// run inside a tokio runtime.
    pub fn new(config: &Config) -> Result<OtlpHttpExporter, String> {
        let url = config.traces_url().map_err(|e| e.to_string())?;
        if config.auth.is_some() && config.client_auth.is_none() {
            return Err("auth: the authenticator was not resolved (internal error)".into());
        }
        let https = url.scheme_str() == Some("https");
        let tls = if https {
            config.tls.load(&[]).map_err(|e| e.to_string())?
        } else {
            // Never used for http:// URLs; the connector type wants one.
            TlsClientConfig::default()
                .load(&[])
                .map_err(|e| e.to_string())?
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(attempt_timeout(config.timeout));
        let mut builder = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        if https {
            if let Some(name) = config.tls.server_name().map_err(|e| e.to_string())? {
                builder = builder.with_server_name_resolver(FixedServerNameResolver::new(name));
            }
        }
        let connector = builder.enable_all_versions().wrap_connector(http);
        let mut client = Client::builder(TokioExecutor::new());
        if let Some(idle) = config.idle_conn_timeout {
            client.pool_idle_timeout(idle);
        }
        let max_idle = if config.disable_keep_alives {
            Some(0)
        } else {
            match (config.max_idle_conns_per_host, config.max_idle_conns) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        if let Some(max) = max_idle {
            client.pool_max_idle_per_host(max);
        }
        if let Some(idle) = config.http2_read_idle_timeout.filter(|d| !d.is_zero()) {
            client
                .http2_keep_alive_interval(idle)
                .http2_keep_alive_timeout(
                    config
                        .http2_ping_timeout
                        .filter(|d| !d.is_zero())
                        .unwrap_or(Duration::from_secs(15)),
                )
                .http2_keep_alive_while_idle(true);
        }

        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers.{name}: invalid header name"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("headers.{name}: invalid header value"))?;
            headers.append(name, value);
        }
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(match config.encoding {
                Encoding::Proto => PROTOBUF,
                Encoding::Json => JSON,
            }),
        );
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("tracegate/", env!("CARGO_PKG_VERSION"))),
        );
        if let Some(encoding) = config.compression.wire_name() {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding));
        }
        Ok(OtlpHttpExporter {
            client: client.build(connector),
            url,
            encoding: config.encoding,
            compression: config
                .compression
                .encoder(config.compression_params)
                .map_err(|e| e.to_string())?,
            headers,
            timeout: attempt_timeout(config.timeout),
            auth: config.client_auth.clone(),
        })
    }

    async fn body(&self, batch: &SpanBatch) -> Result<Bytes, ExportError> {
        let compressed = match self.encoding {
            // The segments joined: compressed, they are a fraction of the
            // batch (uncompressed, the batch was joined to make them).
            Encoding::Proto => self
                .compression
                .compress_batch(batch)
                .await
                .map(|segments| match <[Bytes; 1]>::try_from(segments) {
                    Ok([one]) => one,
                    Err(segments) => Bytes::from(segments.concat()),
                }),
            Encoding::Json => {
                self.compression
                    .compress_message(Bytes::from(batch.to_json()))
                    .await
            }
        };
        compressed.map_err(ExportError::Permanent)
    }

    async fn post(&self, body: Bytes) -> Result<Delivered, ExportError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .body(Full::new(body))
            .map_err(|e| ExportError::Permanent(format!("cannot build the request: {e}")))?;
        *request.headers_mut() = self.headers.clone();
        if let Some(auth) = &self.auth {
            // Asked for every request: a token file replaced at run time is
            // sent from the next request on.
            let (name, value) = auth.0.header();
            request.headers_mut().insert(name, value);
        }
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| ExportError::Retryable {
                message: format!("failed to make an HTTP request to {}: {e}", self.url),
                retry_after: None,
            })?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes());
        if parts.status.is_success() {
            // As the collector: a 2xx whose body cannot be read, or that is
            // labelled an OTLP response and does not parse as one, is an
            // error, and like every error it has no status for, retried.
            let retry = |message: String| ExportError::Retryable {
                message: format!("{message} (from {}, status {})", self.url, parts.status),
                retry_after: None,
            };
            let body = body.map_err(|e| retry(format!("cannot read the response body: {e}")))?;
            let content_type = parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            return partial_success(&body, content_type).map_err(retry);
        }
        // On an error status the body only adds detail to the message.
        let body = body.unwrap_or_default();
        Err(classify(
            parts.status,
            &parts.headers,
            &body,
            &self.url,
            SystemTime::now(),
        ))
    }
}

#[async_trait]
impl Exporter for OtlpHttpExporter {
    /// Sends the bytes (compressed, or as JSON) and counts the spans.
    fn reads_spans(&self) -> bool {
        false
    }

    async fn export(&self, batch: &SpanBatch) -> Result<Delivered, ExportError> {
        let body = self.body(batch).await?;
        let Some(timeout) = self.timeout else {
            return self.post(body).await;
        };
        match tokio::time::timeout(timeout, self.post(body)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(ExportError::Retryable {
                message: format!(
                    "no response from {} within {}",
                    self.url,
                    crate::duration::format(timeout)
                ),
                retry_after: None,
            }),
        }
    }
}

/// The partial success of a 2xx response, if its body carries one. A body
/// whose `Content-Type` is exactly OTLP's protobuf or JSON type must parse
/// as an `ExportTraceServiceResponse` (`Err` otherwise), as the collector
/// requires; with parameters (`application/json; charset=utf-8`), which the
/// collector does not read at all, a partial success is read when the body
/// has one and anything else is a plain success.
fn partial_success(body: &[u8], content_type: &str) -> Result<Delivered, String> {
    if body.is_empty() {
        return Ok(Delivered::default());
    }
    let strict = content_type == PROTOBUF || content_type == JSON;
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let parsed = match media_type.as_str() {
        PROTOBUF => tracegate_model::otlp::ExportTraceServiceResponse::decode(body)
            .map(|r| {
                r.partial_success
                    .map(|p| Delivered {
                        rejected_spans: p.rejected_spans.max(0) as u64,
                        message: p.error_message,
                    })
                    .unwrap_or_default()
            })
            .map_err(|e| format!("error parsing protobuf response: {e}")),
        JSON => json_partial_success(body).map_err(|e| format!("error parsing json response: {e}")),
        _ => Ok(Delivered::default()),
    };
    match parsed {
        Err(e) if strict => Err(e),
        parsed => Ok(parsed.unwrap_or_default()),
    }
}

/// The partial success of an OTLP/JSON response: an object (or `null`,
/// which the collector's reader takes as an empty one).
fn json_partial_success(body: &[u8]) -> Result<Delivered, String> {
    let value = serde_json::from_slice::<serde_json::Value>(body).map_err(|e| e.to_string())?;
    if !(value.is_object() || value.is_null()) {
        return Err("expected an ExportTraceServiceResponse object".into());
    }
    // Protobuf's JSON mapping takes the lowerCamelCase name and the proto
    // field name alike, as the collector's decoder does.
    let field = |object: &'_ serde_json::Value, camel: &str, snake: &str| {
        object
            .get(camel)
            .or_else(|| object.get(snake))
            .cloned()
            .unwrap_or_default()
    };
    let partial = field(&value, "partialSuccess", "partial_success");
    // OTLP/JSON writes int64 as a string; accept a number too.
    let rejected = match field(&partial, "rejectedSpans", "rejected_spans") {
        serde_json::Value::String(s) => s.parse::<i64>().unwrap_or(0),
        serde_json::Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    };
    Ok(Delivered {
        rejected_spans: rejected.max(0) as u64,
        message: field(&partial, "errorMessage", "error_message")
            .as_str()
            .unwrap_or("")
            .to_string(),
    })
}

/// The gRPC code the collector gives an OTLP/HTTP backend's status
/// (`NewStatusFromMsgAndHTTPCode`): its exceptions to gRPC's HTTP mapping
/// (400 and 429), then gRPC's, and UNKNOWN for everything else.
fn grpc_code_of_http_status(status: StatusCode) -> tonic::Code {
    use tonic::Code;
    match status.as_u16() {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 => Code::ResourceExhausted,
        502..=504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// The collector's `otlphttpexporter` decision for a non-2xx response.
fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    url: &Uri,
    now: SystemTime,
) -> ExportError {
    let detail = RpcStatus::decode(body)
        .ok()
        .filter(|s| !s.message.is_empty())
        .map(|s| format!(", message: {}", s.message))
        .unwrap_or_default();
    let message = format!(
        "request to {url} responded with HTTP status {}{detail}",
        status.as_u16()
    );
    let retryable = matches!(status.as_u16(), 429 | 502 | 503 | 504);
    if !retryable {
        return ExportError::Rejected {
            code: grpc_code_of_http_status(status),
            message,
        };
    }
    // Only 429 and 503 are throttling answers (OTLP spec, OTLP/HTTP throttling).
    let throttled = matches!(status.as_u16(), 429 | 503);
    let retry_after = if throttled {
        headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now))
    } else {
        None
    };
    ExportError::Retryable {
        message,
        retry_after,
    }
}

/// `Retry-After`: delay-seconds, or an HTTP-date (RFC 1123) from which the
/// delay until then is taken (zero if it has passed).
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_http_date(value: &str) -> Option<SystemTime> {
    let (_weekday, rest) = value.split_once(", ")?;
    let mut fields = rest.split(' ');
    let day: u32 = fields.next()?.parse().ok()?;
    let month = match fields.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = fields.next()?.parse().ok()?;
    let mut clock = fields.next()?.split(':');
    let hour: u64 = clock.next()?.parse().ok()?;
    let minute: u64 = clock.next()?.parse().ok()?;
    let second: u64 = clock.next()?.parse().ok()?;
    if fields.next()? != "GMT" || fields.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 || year < 1970 {
        return None;
    }
    unix_time(year, month, day, hour, minute, second)
}

impl super::BuildExporter for Config {
    fn sending_queue(&self) -> &QueueConfig {
        &self.sending_queue
    }

    fn build(&self, _: &str, ctx: &super::BuildContext) -> Result<super::Built<'_>, String> {
        let mut config = self.clone();
        config.client_auth = ClientAuth::resolve(&ctx.authenticators, self.auth.as_ref())?;
        let exporter = OtlpHttpExporter::new(&config)?;
        Ok(super::Built::new(
            exporter,
            &self.sending_queue,
            self.retry_on_failure.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::config::from_value;
    use crate::exporter::test_support::valid_config;

    /// The collector's client connection keys tracegate implements, and
    /// `timeout: 0` meaning no timeout.
    #[tokio::test]
    async fn connection_keys_and_zero_timeout_are_taken() {
        let c: Config = valid_config(serde_json::json!({
            "endpoint": "http://backend:4318",
            "timeout": "0s",
            "max_idle_conns": 10,
            "max_idle_conns_per_host": 4,
            "disable_keep_alives": true,
            "http2_read_idle_timeout": "30s",
            "http2_ping_timeout": "5s",
        }));
        assert!(c.validate().unwrap().is_empty());
        assert_eq!(c.max_idle_conns, Some(10));
        assert!(c.disable_keep_alives);
        assert_eq!(c.http2_read_idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.http2_ping_timeout, Some(Duration::from_secs(5)));
        let exporter = OtlpHttpExporter::new(&c).unwrap();
        assert_eq!(exporter.timeout, None);
        let c: Config = valid_config(serde_json::json!({"endpoint": "http://backend:4318"}));
        assert_eq!(
            OtlpHttpExporter::new(&c).unwrap().timeout,
            Some(Duration::from_secs(30))
        );
        let err = from_value::<Config>(
            serde_json::json!({"endpoint": "http://b:4318", "proxy_url": "http://p:3128"}),
        )
        .unwrap_err();
        assert!(
            err.message
                .contains("tracegate does not implement proxies yet"),
            "{err}"
        );
    }

    #[test]
    fn defaults_and_urls_are_the_collectors() {
        let c: Config = valid_config(serde_json::json!({"endpoint": "https://tempo:4318"}));
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(c.encoding, Encoding::Proto);
        assert_eq!(c.traces_url().unwrap(), "https://tempo:4318/v1/traces");
        let slash: Config = valid_config(serde_json::json!({"endpoint": "http://tempo:4318/"}));
        assert_eq!(slash.traces_url().unwrap(), "http://tempo:4318/v1/traces");
        let given: Config = valid_config(serde_json::json!({
            "endpoint": "http://ignored:1", "traces_endpoint": "http://tempo:4318/custom/path"
        }));
        assert_eq!(given.traces_url().unwrap(), "http://tempo:4318/custom/path");
        assert!(c.validate().unwrap().is_empty());
    }

    #[test]
    fn validate_rejects_bad_settings() {
        for (value, path) in [
            (serde_json::json!({}), "endpoint"),
            (serde_json::json!({"endpoint": "tempo:4318"}), "endpoint"),
            (
                serde_json::json!({"traces_endpoint": "ftp://x/"}),
                "traces_endpoint",
            ),
            (
                serde_json::json!({"endpoint": "http://t:1", "headers": {"a b": "x"}}),
                "headers.a b",
            ),
            (
                serde_json::json!({"endpoint": "http://t:1", "retry_on_failure": {"randomization_factor": 2.0}}),
                "retry_on_failure.randomization_factor",
            ),
        ] {
            let err = valid_config::<Config>(value.clone())
                .validate()
                .unwrap_err();
            assert_eq!(err.path, path, "{value}: {err}");
        }
        assert!(from_value::<Config>(
            serde_json::json!({"endpoint": "http://t:1", "encoding": "xml"})
        )
        .is_err());
        assert!(from_value::<Config>(
            serde_json::json!({"endpoint": "http://t:1", "endpiont": "x"})
        )
        .is_err());
    }

    #[test]
    fn retryable_statuses_match_the_collector() {
        let url: Uri = "http://t:1/v1/traces".parse().unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        for code in [429u16, 503] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(matches!(
                classify(status, &headers, b"", &url, now),
                ExportError::Retryable { retry_after: Some(d), .. } if d == Duration::from_secs(7)
            ));
        }
        for code in [502u16, 504] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(
                    classify(status, &headers, b"", &url, now),
                    ExportError::Retryable {
                        retry_after: None,
                        ..
                    }
                ),
                "{code}: Retry-After only for throttling statuses"
            );
        }
        for (code, grpc) in [
            (400u16, tonic::Code::InvalidArgument),
            (401, tonic::Code::Unauthenticated),
            (403, tonic::Code::PermissionDenied),
            (404, tonic::Code::Unimplemented),
            (405, tonic::Code::Unknown),
            (413, tonic::Code::Unknown),
            (415, tonic::Code::Unknown),
            (500, tonic::Code::Unknown),
            (501, tonic::Code::Unknown),
        ] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(
                    classify(status, &headers, b"", &url, now),
                    ExportError::Rejected { code: c, .. } if c == grpc
                ),
                "{code}"
            );
        }
        let body = RpcStatus {
            code: 3,
            message: "bad span".into(),
            details: vec![],
        }
        .encode_to_vec();
        let err = classify(StatusCode::BAD_REQUEST, &HeaderMap::new(), &body, &url, now);
        assert!(
            err.to_string().contains("bad span") && err.to_string().contains("400"),
            "{err}"
        );
    }

    #[test]
    fn retry_after_seconds_or_http_date() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means no extra wait"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(
            parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(UNIX_EPOCH)
        );
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2000 12:00:00 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(951_825_600))
        );
    }

    #[test]
    fn partial_success_from_proto_and_json() {
        let response = tracegate_model::otlp::ExportTraceServiceResponse {
            partial_success: Some(tracegate_model::otlp::ExportTracePartialSuccess {
                rejected_spans: 3,
                error_message: "too old".into(),
            }),
        };
        let ok = |body: &[u8], content_type: &str| {
            partial_success(body, content_type)
                .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(body)))
        };
        let proto = ok(&response.encode_to_vec(), PROTOBUF);
        assert_eq!(
            (proto.rejected_spans, proto.message.as_str()),
            (3, "too old")
        );
        let json = ok(
            br#"{"partialSuccess":{"rejectedSpans":"2","errorMessage":"dup"}}"#,
            JSON,
        );
        assert_eq!((json.rejected_spans, json.message.as_str()), (2, "dup"));
        // The proto field names (snake_case) are read too, mixed or not.
        for body in [
            &br#"{"partial_success":{"rejected_spans":"2","error_message":"dup"}}"#[..],
            br#"{"partial_success":{"rejectedSpans":2,"error_message":"dup"}}"#,
            br#"{"partialSuccess":{"rejected_spans":"2","errorMessage":"dup"}}"#,
        ] {
            assert_eq!(
                ok(body, JSON),
                Delivered {
                    rejected_spans: 2,
                    message: "dup".into()
                },
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // A message alone is still a partial success worth logging.
        let warned = ok(
            br#"{"partial_success":{"error_message":"slow down"}}"#,
            JSON,
        );
        assert_eq!(warned.rejected_spans, 0);
        assert!(warned.is_partial());
        assert!(!Delivered::default().is_partial());
        assert_eq!(ok(b"{}", JSON), Delivered::default());
        assert_eq!(ok(b"null", JSON), Delivered::default());
        assert_eq!(ok(b"", PROTOBUF), Delivered::default());
        assert_eq!(ok(b"x", "text/plain"), Delivered::default());
        // With parameters the collector reads no body: a partial success is
        // still read here, and anything else is a success.
        let with_charset = "application/json; charset=utf-8";
        assert_eq!(
            ok(br#"{"partialSuccess":{"rejectedSpans":"1"}}"#, with_charset).rejected_spans,
            1
        );
        assert_eq!(ok(b"not json", with_charset), Delivered::default());
    }

    /// As the collector: a 2xx body labelled as an OTLP response that does
    /// not parse as one is an error, not a delivery.
    #[test]
    fn an_unparseable_otlp_response_is_an_error() {
        for (body, content_type, says) in [
            (
                &b"\xff\xff"[..],
                PROTOBUF,
                "error parsing protobuf response",
            ),
            (b"not json", JSON, "error parsing json response"),
            (b"[1]", JSON, "error parsing json response"),
        ] {
            let e = partial_success(body, content_type).unwrap_err();
            assert!(e.starts_with(says), "{content_type}: {e}");
        }
    }
}
