//! The extension's config, in either of its two spellings: the collector's
//! `jaegerremotesampling` (`source: {file, reload_interval, remote}`, both
//! listeners on by default, gRPC on 14250) and Jaeger v2's
//! `remote_sampling` (`file: {path, reload_interval,
//! default_sampling_probability}` or `adaptive:`, a listener only where
//! `http:` or `grpc:` is written, gRPC on 5779). Which one a config uses is
//! told by its keys, whichever name the extension has.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::strategies::DEFAULT_SAMPLING_PROBABILITY;
use crate::config::{error, ComponentError};
use crate::receiver::otlp::{CorsConfig, GrpcConfig};
use crate::receiver::present_means_enabled;
use crate::receiver::server_keys::http_server_config;

http_server_config! {
    /// `http:` — the collector's `confighttp` server keys.
    pub struct HttpConfig {
        /// `host:port` to listen on. Default `localhost:5778` (the
        /// collector's `jaegerremotesampling`) or `:5778` (Jaeger v2).
        #[serde(default)]
        pub endpoint: String = String::new(),
        /// Cross-origin requests from browsers. Default: none allowed.
        #[serde(default)]
        pub cors: Option<CorsConfig> = None,
        /// Accepted for compatibility; nothing here reads request metadata.
        #[serde(default)]
        pub include_metadata: bool = false,
        /// Accepted for compatibility: requests have no body to decode.
        #[serde(default)]
        pub compression_algorithms: Option<Vec<String>> = None,
    }
}

/// The extension's typed config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Which spelling the config is written in.
    pub form: Form,
    /// The HTTP endpoint (`GET /sampling?service=`, and `/`), if served.
    /// Boxed, as the gRPC one, to keep the extension enum small.
    pub http: Option<Box<HttpConfig>>,
    /// The gRPC endpoint (`SamplingManager/GetSamplingStrategy`), if served.
    pub grpc: Option<Box<GrpcConfig>>,
    /// Where the strategies come from.
    pub source: Source,
}

/// The two spellings of the extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The collector's `jaegerremotesampling`: `source:`.
    Collector,
    /// Jaeger v2's `remote_sampling`: `file:` or `adaptive:`.
    Jaeger,
}

impl Form {
    fn default_http_endpoint(self) -> &'static str {
        match self {
            Form::Collector => "localhost:5778",
            Form::Jaeger => ":5778",
        }
    }

    fn default_grpc_endpoint(self) -> &'static str {
        match self {
            Form::Collector => "localhost:14250",
            Form::Jaeger => ":5779",
        }
    }
}

/// Where the strategies come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A strategies file, read at start and, with a `reload_interval`,
    /// again whenever it changes.
    File(FileSource),
    /// The collector's `source.remote`: another sampling server, asked
    /// over gRPC. Not supported; refused by `validate`.
    Remote,
    /// Jaeger v2's `adaptive`: probabilities computed from the traffic.
    /// Not supported yet; refused by `validate`.
    Adaptive,
}

/// A strategies file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSource {
    /// The file's path. Empty (Jaeger v2's `path:` left empty): no file,
    /// every service gets `default_sampling_probability`.
    pub path: String,
    /// How often the file is looked at again; zero: never.
    pub reload_interval: Duration,
    /// What a strategy without a `type`, and every service when the file
    /// has no `default_strategy`, is served. Jaeger's 0.001.
    pub default_sampling_probability: f64,
}

/// The collector's `source:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectorSource {
    #[serde(default)]
    file: String,
    #[serde(default, deserialize_with = "crate::duration::deserialize_opt")]
    reload_interval: Option<Duration>,
    #[serde(default)]
    remote: Option<Value>,
}

/// Jaeger v2's `file:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JaegerFile {
    #[serde(default)]
    path: String,
    #[serde(default, deserialize_with = "crate::duration::deserialize_opt")]
    reload_interval: Option<Duration>,
    #[serde(default = "default_probability")]
    default_sampling_probability: f64,
}

fn default_probability() -> f64 {
    DEFAULT_SAMPLING_PROBABILITY
}

/// Every key of both spellings; which are allowed together is checked
/// after.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default, deserialize_with = "present_means_enabled")]
    http: Option<HttpConfig>,
    #[serde(default, deserialize_with = "present_means_enabled")]
    grpc: Option<GrpcConfig>,
    #[serde(default, deserialize_with = "present_means_enabled")]
    source: Option<CollectorSource>,
    #[serde(default, deserialize_with = "present_means_enabled")]
    file: Option<JaegerFile>,
    #[serde(default, deserialize_with = "present_means_enabled")]
    adaptive: Option<Value>,
}

/// Reads the extension's settings (its registry row's parser): the
/// spelling from the keys, then each listener's endpoint defaulted as that
/// spelling's.
pub fn from_value(value: Value) -> Result<Config, ComponentError> {
    let mut map = match value {
        Value::Null => Map::new(),
        Value::Object(map) => map,
        other => {
            return Err(error(
                "",
                format!("expected a mapping of settings, not {other}"),
            ))
        }
    };
    let collector = map.contains_key("source");
    let jaeger = map.contains_key("file") || map.contains_key("adaptive");
    let form =
        match (collector, jaeger) {
            (true, true) => return Err(error(
                "",
                "`source` is the collector's jaegerremotesampling key, `file` and `adaptive` are \
                 Jaeger v2's remote_sampling keys: write the config in one of the two forms",
            )),
            (false, false) => return Err(error(
                "",
                "no sources specified: set `source.file` (the collector's form) or `file.path` \
                 (Jaeger v2's form)",
            )),
            (true, false) => Form::Collector,
            (false, true) => Form::Jaeger,
        };
    // The collector serves both protocols unless told otherwise; Jaeger v2
    // only those written.
    if form == Form::Collector {
        for key in ["http", "grpc"] {
            map.entry(key).or_insert(Value::Null);
        }
    }
    for (key, endpoint) in [
        ("http", form.default_http_endpoint()),
        ("grpc", form.default_grpc_endpoint()),
    ] {
        if let Some(section) = map.get_mut(key) {
            if section.is_null() {
                *section = Value::Object(Map::new());
            }
            if let Value::Object(section) = section {
                section
                    .entry("endpoint")
                    .or_insert_with(|| Value::String(endpoint.into()));
            }
        }
    }
    let raw: Raw = crate::config::from_value(Value::Object(map))?;
    if matches!(&raw.http, Some(http) if http.endpoint.is_empty()) {
        return Err(error("http.endpoint", "endpoint must not be empty"));
    }
    let source = match (raw.source, raw.file, raw.adaptive) {
        (Some(source), _, _) => {
            if source.remote.is_some() {
                if !source.file.is_empty() {
                    return Err(error(
                        "source",
                        "too many sources specified, has to be either 'file' or 'remote'",
                    ));
                }
                Source::Remote
            } else if source.file.is_empty() {
                return Err(error(
                    "source",
                    "no sources specified, has to be either 'file' or 'remote'",
                ));
            } else {
                Source::File(FileSource {
                    path: source.file,
                    reload_interval: source.reload_interval.unwrap_or_default(),
                    default_sampling_probability: DEFAULT_SAMPLING_PROBABILITY,
                })
            }
        }
        (None, Some(_), Some(_)) => {
            return Err(error(
                "",
                "only one sampling strategy provider can be specified, 'adaptive' or 'file'",
            ))
        }
        (None, Some(file), None) => Source::File(FileSource {
            path: file.path,
            reload_interval: file.reload_interval.unwrap_or_default(),
            default_sampling_probability: file.default_sampling_probability,
        }),
        (None, None, _) => Source::Adaptive,
    };
    Ok(Config {
        form,
        http: raw.http.map(Box::new),
        grpc: raw.grpc.map(Box::new),
        source,
    })
}

impl Config {
    /// Pure checks: what tracegate does not serve is refused here, with
    /// what to use instead.
    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        let mut warnings = Vec::new();
        match &self.source {
            Source::Remote => {
                return Err(error(
                    "source.remote",
                    "tracegate does not proxy another sampling server (the collector's \
                     `source.remote`); serve a strategies file with `source.file`",
                ))
            }
            Source::Adaptive => {
                return Err(error(
                    "adaptive",
                    "adaptive sampling strategies are not supported by tracegate yet; serve a \
                     strategies file with `file.path`",
                ))
            }
            Source::File(file) => {
                if file.path.starts_with("http://") || file.path.starts_with("https://") {
                    return Err(error(
                        self.path_key(),
                        "tracegate reads strategies from a local file only, not from a URL",
                    ));
                }
                if !(0.0..=1.0).contains(&file.default_sampling_probability) {
                    return Err(error(
                        "file.default_sampling_probability",
                        format!(
                            "must be between 0 and 1, not {}",
                            file.default_sampling_probability
                        ),
                    ));
                }
            }
        }
        if self.http.is_none() && self.grpc.is_none() {
            match self.form {
                Form::Collector => {
                    return Err(error(
                        "",
                        "no protocols selected to serve the strategies, use 'grpc', 'http', or \
                         both",
                    ))
                }
                Form::Jaeger => warnings.push(
                    "neither `http` nor `grpc` is set: the strategies are served nowhere".into(),
                ),
            }
        }
        if let Some(http) = &self.http {
            crate::receiver::split_host_port(&http.endpoint)
                .map_err(|e| error("http.endpoint", e))?;
            warnings.extend(http.server_keys().validate("http")?);
        }
        if let Some(grpc) = &self.grpc {
            crate::receiver::split_host_port(&grpc.endpoint)
                .map_err(|e| error("grpc.endpoint", e))?;
            if grpc.transport.as_deref().is_some_and(|t| t != "tcp") {
                return Err(error("grpc.transport", "only `tcp` is supported"));
            }
        }
        Ok(warnings)
    }

    /// The key that names the strategies file, in this config's spelling.
    pub fn path_key(&self) -> &'static str {
        match self.form {
            Form::Collector => "source.file",
            Form::Jaeger => "file.path",
        }
    }
}
