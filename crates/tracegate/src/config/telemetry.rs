//! `service::telemetry` (tracegate's own logs and metrics, in the
//! collector's keys) and the `prometheus` exporter, which in a collector
//! config serves a metrics pipeline and in tracegate serves tracegate's own
//! metrics instead.

use serde::Deserialize;

/// How tracegate's own logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the collector's `console` encoding).
    Text,
    /// One JSON object per line.
    Json,
}

/// One destination of tracegate's own logs (zap's `output_paths` entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOutput {
    Stderr,
    Stdout,
    /// A file, created if missing and appended to.
    File(std::path::PathBuf),
}

impl LogOutput {
    /// An `output_paths` entry as zap reads it: `stderr`, `stdout`, a path,
    /// or a `file:` URL. Other URL schemes need sinks zap registers
    /// elsewhere, which tracegate does not have.
    pub(crate) fn parse(entry: &str) -> Result<LogOutput, String> {
        match entry {
            "" => Err("an empty entry is not a path".into()),
            "stderr" => Ok(LogOutput::Stderr),
            "stdout" => Ok(LogOutput::Stdout),
            _ => {
                if let Some(rest) = entry.strip_prefix("file://") {
                    // file:///path or file://localhost/path, as Go's url.Parse.
                    let path = rest.strip_prefix("localhost").unwrap_or(rest);
                    if !path.starts_with('/') {
                        return Err(format!(
                            "{entry:?}: a file URL needs an absolute path and no host"
                        ));
                    }
                    return Ok(LogOutput::File(path.into()));
                }
                if let Some(path) = entry.strip_prefix("file:") {
                    return Ok(LogOutput::File(path.into()));
                }
                let scheme = entry.split_once("://").map(|(s, _)| s);
                if let Some(scheme) = scheme.filter(|s| {
                    !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                }) {
                    return Err(format!(
                        "{entry:?}: tracegate writes logs to stderr, stdout or files; the {scheme:?} sink is not supported"
                    ));
                }
                Ok(LogOutput::File(entry.into()))
            }
        }
    }
}

/// Where tracegate's own logs and metrics go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Telemetry {
    /// `debug`, `info`, `warn` or `error`.
    pub log_level: String,
    pub log_format: LogFormat,
    /// Every destination of the logs, each getting every line (the
    /// collector's default: stderr). Empty: no logs.
    pub log_outputs: Vec<LogOutput>,
    /// Listen address of the Prometheus `/metrics` endpoint; `None` when
    /// `metrics.level` is `none` or the readers written hold no pull reader.
    pub metrics_address: Option<String>,
    /// Prefix of every metric name (`otelcol` gives `otelcol_receiver_accepted_spans`).
    pub metrics_namespace: String,
}

/// The collector's default pull reader: `localhost`, port 8888.
pub(crate) const DEFAULT_METRICS_ADDRESS: &str = "localhost:8888";
pub(crate) const DEFAULT_NAMESPACE: &str = "otelcol";

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            log_level: "info".into(),
            log_format: LogFormat::Text,
            log_outputs: vec![LogOutput::Stderr],
            metrics_address: Some(DEFAULT_METRICS_ADDRESS.into()),
            metrics_namespace: DEFAULT_NAMESPACE.into(),
        }
    }
}

/// `service: telemetry:` as the collector spells it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TelemetrySpec {
    /// tracegate's own logs.
    #[serde(default)]
    pub logs: Option<LogsSpec>,
    /// tracegate's own metrics.
    #[serde(default)]
    pub metrics: Option<MetricsSpec>,
    /// The collector's self-tracing. Accepted and ignored: tracegate does
    /// not trace itself.
    #[serde(default)]
    pub traces: Option<serde_json::Value>,
    /// Resource attributes of the collector's own telemetry. Accepted and
    /// ignored.
    #[serde(default)]
    pub resource: Option<serde_json::Value>,
}

/// `service: telemetry: logs:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogsSpec {
    /// Lowest level logged: `debug`, `info`, `warn` or `error`. Default `info`.
    /// `RUST_LOG` overrides it.
    #[serde(default)]
    pub level: Option<LogLevel>,
    /// `console` (text lines) or `json`. Default `console`.
    #[serde(default)]
    pub encoding: Option<LogEncoding>,
    /// The collector's zap options below are accepted and ignored.
    #[serde(default)]
    pub development: Option<serde_json::Value>,
    /// Accepted and ignored.
    #[serde(default)]
    pub disable_caller: Option<serde_json::Value>,
    /// Accepted and ignored.
    #[serde(default)]
    pub disable_stacktrace: Option<serde_json::Value>,
    /// Accepted and ignored: tracegate does not sample its own logs.
    #[serde(default)]
    pub sampling: Option<serde_json::Value>,
    /// Where logs go: `stderr`, `stdout`, file paths (or `file:` URLs),
    /// each getting every line. Default `[stderr]`.
    #[serde(default)]
    pub output_paths: Option<Vec<String>>,
    /// Accepted and ignored: zap's own internal errors, which tracegate's
    /// logger does not have.
    #[serde(default)]
    pub error_output_paths: Option<serde_json::Value>,
    /// Accepted and ignored.
    #[serde(default)]
    pub initial_fields: Option<serde_json::Value>,
    /// Accepted and ignored.
    #[serde(default)]
    pub processors: Option<serde_json::Value>,
}

impl LogsSpec {
    pub fn ignored_keys(&self) -> Vec<&'static str> {
        let keys = [
            ("development", &self.development),
            ("disable_caller", &self.disable_caller),
            ("disable_stacktrace", &self.disable_stacktrace),
            ("sampling", &self.sampling),
            ("error_output_paths", &self.error_output_paths),
            ("initial_fields", &self.initial_fields),
            ("processors", &self.processors),
        ];
        keys.iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| *k)
            .collect()
    }
}

/// A zap level name as the collector takes it, in any case. zap's
/// `dpanic`, `panic` and `fatal` log only errors, so they mean `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(match name.to_ascii_lowercase().as_str() {
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" => LogLevel::Warn,
            "error" | "dpanic" | "panic" | "fatal" => LogLevel::Error,
            _ => {
                return Err(serde::de::Error::unknown_variant(
                    &name,
                    &["debug", "info", "warn", "error"],
                ))
            }
        })
    }
}

impl LogLevel {
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogEncoding {
    Console,
    Json,
}

/// `service: telemetry: metrics:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetricsSpec {
    /// `none` turns the metrics endpoint off; `basic`, `normal` and
    /// `detailed` serve every metric tracegate has. Default `normal`.
    #[serde(default)]
    pub level: Option<MetricsLevel>,
    /// Listen address of `/metrics` (the collector's older key, which it no
    /// longer accepts). Default `localhost:8888`.
    #[serde(default)]
    pub address: Option<String>,
    /// The collector's newer form: `- pull: {exporter: {prometheus: {host,
    /// port}}}`. The first Prometheus pull reader sets the address; readers
    /// without one serve nothing.
    #[serde(default)]
    pub readers: Option<Vec<ReaderSpec>>,
    /// Accepted and ignored.
    #[serde(default)]
    pub views: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum MetricsLevel {
    None,
    Basic,
    Normal,
    Detailed,
}

/// One metric reader.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReaderSpec {
    /// A reader scraped over HTTP.
    #[serde(default)]
    pub pull: Option<PullSpec>,
    /// A reader that pushes (OTLP, console). Not supported: ignored with a
    /// warning.
    #[serde(default)]
    pub periodic: Option<serde_json::Value>,
}

/// `pull:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PullSpec {
    /// `exporter: {prometheus: ...}`
    pub exporter: PullExporterSpec,
}

/// `pull: exporter:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PullExporterSpec {
    /// A Prometheus scrape endpoint.
    pub prometheus: PrometheusReaderSpec,
}

/// `pull: exporter: prometheus:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PrometheusReaderSpec {
    /// Host to listen on, e.g. `0.0.0.0`. Required, as in the collector.
    pub host: String,
    /// Port to listen on, e.g. `8888`. Required, as in the collector.
    pub port: u16,
    /// Accepted and ignored.
    #[serde(default)]
    pub without_units: Option<serde_json::Value>,
    /// Accepted and ignored.
    #[serde(default)]
    pub without_type_suffix: Option<serde_json::Value>,
    /// Accepted and ignored.
    #[serde(default)]
    pub without_scope_info: Option<serde_json::Value>,
    /// Accepted and ignored.
    #[serde(default)]
    pub with_resource_constant_labels: Option<serde_json::Value>,
    /// Accepted and ignored.
    #[serde(default)]
    pub translation_strategy: Option<serde_json::Value>,
}

impl PrometheusReaderSpec {
    pub fn ignored_keys(&self) -> Vec<&'static str> {
        let keys = [
            ("without_units", &self.without_units),
            ("without_type_suffix", &self.without_type_suffix),
            ("without_scope_info", &self.without_scope_info),
            (
                "with_resource_constant_labels",
                &self.with_resource_constant_labels,
            ),
            ("translation_strategy", &self.translation_strategy),
        ];
        keys.iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| *k)
            .collect()
    }

    pub fn address(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `exporters: prometheus:` with the collector's prometheusexporter keys.
/// tracegate serves its own metrics at `endpoint` under `namespace`; the
/// metrics pipeline it would have served is not handled.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PrometheusExporterSpec {
    /// Address to serve `/metrics` on, e.g. `0.0.0.0:8889`. Required.
    pub endpoint: String,
    /// Prefix of every metric name. Default: tracegate's `otelcol`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Accepted and ignored.
    #[serde(default)]
    pub const_labels: Option<serde_json::Value>,
    /// Accepted and ignored.
    #[serde(default)]
    pub send_timestamps: Option<serde_json::Value>,
    /// Accepted and ignored.
    #[serde(default)]
    pub metric_expiration: Option<serde_json::Value>,
    /// Accepted and ignored.
    #[serde(default)]
    pub resource_to_telemetry_conversion: Option<serde_json::Value>,
    /// Accepted and ignored.
    #[serde(default)]
    pub enable_open_metrics: Option<serde_json::Value>,
    /// Accepted and ignored.
    #[serde(default)]
    pub add_metric_suffixes: Option<serde_json::Value>,
}

impl PrometheusExporterSpec {
    pub fn ignored_keys(&self) -> Vec<&'static str> {
        let keys = [
            ("const_labels", &self.const_labels),
            ("send_timestamps", &self.send_timestamps),
            ("metric_expiration", &self.metric_expiration),
            (
                "resource_to_telemetry_conversion",
                &self.resource_to_telemetry_conversion,
            ),
            ("enable_open_metrics", &self.enable_open_metrics),
            ("add_metric_suffixes", &self.add_metric_suffixes),
        ];
        keys.iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| *k)
            .collect()
    }
}

/// A Prometheus metric-name prefix: a letter or `_`, then letters, digits
/// or `_`.
pub(crate) fn is_metric_namespace(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
