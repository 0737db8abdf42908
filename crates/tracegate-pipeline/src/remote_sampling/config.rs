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
use crate::membership::{with_default_port, ResolverConfig};
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
    /// Jaeger v2's `adaptive`: probabilities computed from the root spans
    /// the receivers take.
    Adaptive(Box<AdaptiveSource>),
}

/// Jaeger v2's `adaptive:` (see [`super::adaptive`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveSource {
    /// Jaeger's storage extension for throughput and probabilities.
    /// Accepted and not used: tracegate keeps both in memory, and a fleet
    /// agrees through `fleet`.
    #[serde(default)]
    pub sampling_store: Option<String>,
    /// Sampled root spans per second wanted per operation. Default 1.
    #[serde(default = "defaults::target_samples_per_second")]
    pub target_samples_per_second: f64,
    /// How far (a fraction of the target) the measured rate may be from the
    /// target before a probability changes. Default 0.3.
    #[serde(default = "defaults::delta_tolerance")]
    pub delta_tolerance: f64,
    /// How often probabilities are calculated. Default 1m.
    #[serde(
        default = "defaults::calculation_interval",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub calculation_interval: Duration,
    /// Intervals an operation's history is kept: an operation without a
    /// root span for this many intervals is forgotten. Default 10.
    #[serde(default = "defaults::aggregation_buckets")]
    pub aggregation_buckets: u32,
    /// Intervals averaged for the rate (Jaeger v2's key; tracegate's
    /// earlier spelling `buckets_for_calculation` is read too). Only 1
    /// (Jaeger's default) is implemented; other values are accepted with a
    /// warning, 0 is refused as Jaeger refuses it.
    #[serde(
        default = "defaults::calculation_buckets",
        alias = "buckets_for_calculation"
    )]
    pub calculation_buckets: u32,
    /// Jaeger's lag of the data behind now. Accepted, not used: each
    /// calculation uses the interval that just ended.
    #[serde(default, deserialize_with = "crate::duration::deserialize_opt")]
    pub calculation_delay: Option<Duration>,
    /// Probability of an operation nothing was calculated for yet, and of
    /// every operation of a service not seen. Default 0.001.
    #[serde(default = "defaults::initial_sampling_probability")]
    pub initial_sampling_probability: f64,
    /// The lowest probability calculated. Default 1e-5.
    #[serde(default = "defaults::min_sampling_probability")]
    pub min_sampling_probability: f64,
    /// Traces per second every SDK keeps per operation whatever the
    /// probability. Default 1/60.
    #[serde(default = "defaults::min_samples_per_second")]
    pub min_samples_per_second: f64,
    /// Jaeger's leader-election leases over the sampling store. Accepted,
    /// not used: `fleet` decides the leader.
    #[serde(default, deserialize_with = "crate::duration::deserialize_opt")]
    pub leader_lease_refresh_interval: Option<Duration>,
    #[serde(default, deserialize_with = "crate::duration::deserialize_opt")]
    pub follower_lease_refresh_interval: Option<Duration>,
    /// tracegate's: the gateways that serve one set of probabilities.
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
}

/// `adaptive.fleet:` — how gateways agree (docs/architecture.md, "Jaeger
/// remote sampling"): the first member computes, the others fetch.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// The gateways' remote sampling HTTP endpoints (`host:port` of each
    /// one's `http.endpoint`), found as the agents' `loadbalancing`
    /// resolver finds the gateways (with the sampling port). Required.
    #[serde(default)]
    pub resolver: Option<ResolverConfig>,
    /// This gateway as the resolver lists it. Required.
    #[serde(default)]
    pub advertised_endpoint: String,
    /// How long a follower waits for the leader's probabilities. Default
    /// 5s.
    #[serde(
        default = "defaults::fetch_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub timeout: Duration,
}

impl AdaptiveSource {
    /// The calculator's options.
    pub fn options(&self) -> super::adaptive::Options {
        super::adaptive::Options {
            target_samples_per_second: self.target_samples_per_second,
            delta_tolerance: self.delta_tolerance,
            calculation_interval: self.calculation_interval,
            initial_sampling_probability: self.initial_sampling_probability,
            min_sampling_probability: self.min_sampling_probability,
            min_samples_per_second: self.min_samples_per_second,
            aggregation_buckets: self.aggregation_buckets,
        }
    }

    fn validate(&self) -> Result<Vec<String>, ComponentError> {
        let mut warnings = Vec::new();
        let positive = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(error(
                    &format!("adaptive.{key}"),
                    format!("must be a number above 0, not {v}"),
                ))
            }
        };
        let probability = |key: &str, v: f64| {
            if v > 0.0 && v <= 1.0 {
                Ok(())
            } else {
                Err(error(
                    &format!("adaptive.{key}"),
                    format!("must be a probability in (0, 1], not {v}"),
                ))
            }
        };
        positive("target_samples_per_second", self.target_samples_per_second)?;
        positive("delta_tolerance", self.delta_tolerance)?;
        if !(self.min_samples_per_second.is_finite() && self.min_samples_per_second >= 0.0) {
            return Err(error(
                "adaptive.min_samples_per_second",
                format!("must be 0 or more, not {}", self.min_samples_per_second),
            ));
        }
        probability(
            "initial_sampling_probability",
            self.initial_sampling_probability,
        )?;
        probability("min_sampling_probability", self.min_sampling_probability)?;
        if self.min_sampling_probability > self.initial_sampling_probability {
            warnings.push(format!(
                "adaptive.initial_sampling_probability {} is below min_sampling_probability {}: \
                 new operations start below the lowest probability ever calculated",
                self.initial_sampling_probability, self.min_sampling_probability
            ));
        }
        if self.calculation_interval.is_zero() {
            return Err(error(
                "adaptive.calculation_interval",
                "must be more than 0",
            ));
        }
        if self.aggregation_buckets == 0 {
            return Err(error("adaptive.aggregation_buckets", "must be 1 or more"));
        }
        if self.calculation_buckets == 0 {
            return Err(error("adaptive.calculation_buckets", "must be 1 or more"));
        }
        if self.calculation_buckets != 1 {
            warnings.push(format!(
                "adaptive.calculation_buckets {} is not implemented: tracegate calculates \
                 from the last interval only (Jaeger's default, 1)",
                self.calculation_buckets
            ));
        }
        let ignored = [
            (
                "sampling_store",
                self.sampling_store.is_some(),
                "tracegate keeps throughput and probabilities in memory",
            ),
            (
                "calculation_delay",
                self.calculation_delay.is_some(),
                "each calculation uses the interval that just ended",
            ),
            (
                "leader_lease_refresh_interval",
                self.leader_lease_refresh_interval.is_some(),
                "`fleet` decides which gateway calculates",
            ),
            (
                "follower_lease_refresh_interval",
                self.follower_lease_refresh_interval.is_some(),
                "`fleet` decides which gateway calculates",
            ),
        ];
        for (key, set, why) in ignored {
            if set {
                warnings.push(format!("adaptive.{key} has no effect: {why}"));
            }
        }
        if let Some(fleet) = &self.fleet {
            let resolver = fleet.resolver.as_ref().ok_or_else(|| {
                error(
                    "adaptive.fleet.resolver",
                    "no resolver given; set the resolver that lists the gateways' remote \
                     sampling HTTP endpoints (static, dns or k8s)",
                )
            })?;
            resolver
                .validate()
                .map_err(|e| error(&format!("adaptive.fleet.{}", e.path), e.message))?;
            let me = with_default_port(&fleet.advertised_endpoint);
            let reachable = !fleet.advertised_endpoint.trim().is_empty()
                && crate::receiver::split_host_port(&me).is_ok_and(|(host, _)| {
                    !host.is_empty()
                        && !host
                            .parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_unspecified())
                });
            if !reachable {
                return Err(error(
                    "adaptive.fleet.advertised_endpoint",
                    format!(
                        "{:?} is not an address other gateways can reach: name this gateway's \
                         remote sampling HTTP endpoint as the resolver lists it (e.g. \
                         ${{env:POD_IP}}:5778)",
                        fleet.advertised_endpoint
                    ),
                ));
            }
            if fleet.timeout.is_zero() {
                return Err(error("adaptive.fleet.timeout", "must be more than 0"));
            }
        }
        Ok(warnings)
    }
}

mod defaults {
    use std::time::Duration;

    pub fn target_samples_per_second() -> f64 {
        1.0
    }
    pub fn delta_tolerance() -> f64 {
        0.3
    }
    pub fn calculation_interval() -> Duration {
        Duration::from_secs(60)
    }
    pub fn aggregation_buckets() -> u32 {
        10
    }
    pub fn calculation_buckets() -> u32 {
        1
    }
    pub fn initial_sampling_probability() -> f64 {
        0.001
    }
    pub fn min_sampling_probability() -> f64 {
        1e-5
    }
    pub fn min_samples_per_second() -> f64 {
        1.0 / 60.0
    }
    pub fn fetch_timeout() -> Duration {
        Duration::from_secs(5)
    }
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
    adaptive: Option<AdaptiveSource>,
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
    // `adaptive:` (or `file:`) written with nothing under it: every default.
    for key in ["adaptive", "file"] {
        if let Some(section) = map.get_mut(key) {
            if section.is_null() {
                *section = Value::Object(Map::new());
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
        (None, None, Some(adaptive)) => Source::Adaptive(Box::new(adaptive)),
        (None, None, None) => {
            return Err(error("", "no sources specified: set `file` or `adaptive`"))
        }
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
            Source::Adaptive(adaptive) => {
                warnings.extend(adaptive.validate()?);
                if adaptive.fleet.is_some() {
                    match &self.http {
                        None => {
                            return Err(error(
                                "adaptive.fleet",
                                "a fleet's gateways fetch the leader's probabilities over HTTP: \
                                 set `http`",
                            ))
                        }
                        Some(http) if http.tls.is_some() => {
                            return Err(error(
                                "adaptive.fleet",
                                "a fleet's gateways fetch the leader's probabilities over plain \
                                 HTTP; `http.tls` with `fleet` is not supported",
                            ))
                        }
                        Some(http) if http.auth.is_some() => {
                            return Err(error(
                                "adaptive.fleet",
                                "a fleet's gateways fetch the leader's probabilities without \
                                 credentials; `http.auth` with `fleet` is not supported",
                            ))
                        }
                        Some(_) => {}
                    }
                }
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
            if let Some(auth) = &grpc.auth {
                auth.validate("grpc.auth")?;
            }
            if grpc.transport.as_deref().is_some_and(|t| t != "tcp") {
                return Err(error("grpc.transport", "only `tcp` is supported"));
            }
        }
        Ok(warnings)
    }

    /// The authenticators the endpoints' `auth` names, with the key that
    /// names each (`http.auth.authenticator`).
    pub fn authenticators(&self) -> Vec<(&'static str, &str)> {
        let http = self.http.as_ref().and_then(|h| h.auth.as_ref());
        let grpc = self.grpc.as_ref().and_then(|g| g.auth.as_ref());
        let mut named = Vec::new();
        if let Some(auth) = http {
            named.push(("http.auth.authenticator", auth.authenticator.as_str()));
        }
        if let Some(auth) = grpc {
            named.push(("grpc.auth.authenticator", auth.authenticator.as_str()));
        }
        named
    }

    /// The key that names the strategies file, in this config's spelling.
    pub fn path_key(&self) -> &'static str {
        match self.form {
            Form::Collector => "source.file",
            Form::Jaeger => "file.path",
        }
    }
}
