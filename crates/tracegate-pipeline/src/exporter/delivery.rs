//! The delivery settings every queued exporter shares, as the collector's
//! exporterhelper spells them: `sending_queue`, `retry_on_failure`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{error, ComponentError};
use crate::tls::TlsClientConfig;

/// `sending_queue:` — the exporter's own bounded queue, in memory or, with
/// `storage`, on disk.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Queue batches and send them from background consumers. When `false`
    /// the pipeline waits for each export (with its retries), as the
    /// collector does. Default `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Number of consumers sending batches from the queue concurrently.
    /// Default 10.
    #[serde(default = "default_num_consumers")]
    pub num_consumers: usize,
    /// Capacity of the queue, in the unit of `sizer`; a batch that does not
    /// fit is refused and counted in `exporter_enqueue_failed_spans`.
    /// Default 1000.
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    /// The unit of `queue_size`: `requests` (batches), `items` (spans) or
    /// `bytes` (encoded OTLP protobuf). Default `requests`.
    #[serde(default)]
    pub sizer: Sizer,
    /// The collector's option to make the pipeline wait for each export
    /// while still using the queue's consumers. tracegate does not
    /// implement it yet; only `false` is accepted (`enabled: false` is how
    /// to make the pipeline wait). Default `false`.
    #[serde(default)]
    pub wait_for_result: bool,
    /// The collector's batching inside the queue. tracegate does not
    /// implement it yet (use the `batch` processor); only an empty value is
    /// accepted.
    #[serde(default)]
    pub batch: Option<serde_json::Value>,
    /// A storage extension's id (`file_storage/queue`): keep the queue on
    /// disk there, so that what was acknowledged to clients survives a
    /// crash or restart. Unset: in memory. Default unset.
    #[serde(default)]
    pub storage: Option<String>,
    /// When the queue is full, make the pipeline wait for room instead of
    /// refusing the data. Default `false`.
    #[serde(default)]
    pub block_on_overflow: bool,
}

/// The bytes (encoded OTLP) a memory sending queue holds at most, queued
/// or in flight, when `sizer` is `requests` or `items`; with `sizer: bytes`
/// `queue_size` is the bound. The pipelines feeding the exporter refuse
/// new data, retryably, from half of it (see `Admission`), so that what
/// they already hold still fits.
pub const DEFAULT_QUEUE_BYTES: usize = 128 << 20;

/// `sending_queue.sizer`: what `queue_size` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sizer {
    /// Batches, whatever their size.
    #[default]
    Requests,
    /// Spans.
    Items,
    /// Bytes of the encoded OTLP protobuf request.
    Bytes,
}

fn yes() -> bool {
    true
}
fn default_num_consumers() -> usize {
    10
}
fn default_queue_size() -> usize {
    1000
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            enabled: true,
            num_consumers: default_num_consumers(),
            queue_size: default_queue_size(),
            sizer: Sizer::Requests,
            wait_for_result: false,
            batch: None,
            storage: None,
            block_on_overflow: false,
        }
    }
}

impl QueueConfig {
    /// No queue: the pipeline waits for each export.
    pub fn off() -> Self {
        QueueConfig {
            enabled: false,
            ..QueueConfig::default()
        }
    }

    pub fn validate(&self) -> Result<(), ComponentError> {
        // Refused whether or not the queue is enabled: never ignored.
        if self.wait_for_result {
            return Err(error(
                "sending_queue.wait_for_result",
                "tracegate does not implement wait_for_result yet; set sending_queue.enabled: \
                 false to have the pipeline wait for each export",
            ));
        }
        if self.batch.is_some() {
            return Err(error(
                "sending_queue.batch",
                "tracegate does not batch inside the sending queue yet; remove \
                 sending_queue.batch and put a batch processor in the pipeline instead",
            ));
        }
        if !self.enabled {
            return Ok(());
        }
        if self.storage.as_deref().is_some_and(str::is_empty) {
            return Err(error(
                "sending_queue.storage",
                "storage must name a storage extension, e.g. file_storage",
            ));
        }
        if self.num_consumers == 0 {
            return Err(error(
                "sending_queue.num_consumers",
                "num_consumers must be positive",
            ));
        }
        if self.queue_size == 0 {
            return Err(error(
                "sending_queue.queue_size",
                "queue_size must be positive",
            ));
        }
        Ok(())
    }
}

/// `retry_on_failure:` — exponential backoff for retryable failures.
/// Delay *n* is `initial_interval × multiplier^(n-1)`, capped at
/// `max_interval`, then randomized by ± `randomization_factor`; a delay the
/// server asks for (gRPC RetryInfo, HTTP Retry-After) is used when longer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Retry retryable failures. When `false` the first failure drops the
    /// batch. Default `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Wait after the first failure. Default `5s`.
    #[serde(
        default = "default_initial_interval",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub initial_interval: Duration,
    /// Random spread of each wait, in [0, 1]. Default 0.5.
    #[serde(default = "default_randomization_factor")]
    pub randomization_factor: f64,
    /// Growth of the wait after each failure. Default 1.5.
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// Upper bound of the (unrandomized) wait. Default `30s`.
    #[serde(
        default = "default_max_interval",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub max_interval: Duration,
    /// Give up (and count the batch as dropped, reason `retries_exhausted`)
    /// when the next attempt would start later than this after the first.
    /// `0` retries forever. Default `300s`.
    #[serde(
        default = "default_max_elapsed_time",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub max_elapsed_time: Duration,
}

fn default_initial_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_randomization_factor() -> f64 {
    0.5
}
fn default_multiplier() -> f64 {
    1.5
}
fn default_max_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_max_elapsed_time() -> Duration {
    Duration::from_secs(300)
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: default_initial_interval(),
            randomization_factor: default_randomization_factor(),
            multiplier: default_multiplier(),
            max_interval: default_max_interval(),
            max_elapsed_time: default_max_elapsed_time(),
        }
    }
}

impl RetryConfig {
    /// No retries: every failure is final.
    pub fn disabled() -> Self {
        RetryConfig {
            enabled: false,
            ..RetryConfig::default()
        }
    }

    /// configretry's checks.
    pub fn validate(&self) -> Result<(), ComponentError> {
        if !self.enabled {
            return Ok(());
        }
        if !(0.0..=1.0).contains(&self.randomization_factor) {
            return Err(error(
                "retry_on_failure.randomization_factor",
                "randomization_factor must be within [0, 1]",
            ));
        }
        if !(self.multiplier >= 0.0 && self.multiplier.is_finite()) {
            return Err(error(
                "retry_on_failure.multiplier",
                "multiplier must be non-negative",
            ));
        }
        if !self.max_elapsed_time.is_zero() {
            if self.max_elapsed_time < self.initial_interval {
                return Err(error(
                    "retry_on_failure.max_elapsed_time",
                    "max_elapsed_time must not be less than initial_interval",
                ));
            }
            if self.max_elapsed_time < self.max_interval {
                return Err(error(
                    "retry_on_failure.max_elapsed_time",
                    "max_elapsed_time must not be less than max_interval",
                ));
            }
        }
        Ok(())
    }
}

/// `compression:` for OTLP exporters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    #[serde(alias = "")]
    None,
}

/// `compression_params:` of the OTLP exporters, as the collector's HTTP
/// client spells it: the level `compression` writes at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionParams {
    /// `0` (the default) is tracegate's level for the algorithm: gzip 1,
    /// zstd 3. gzip takes 1 (fastest) to 9 (smallest) and -1 (zlib's
    /// default, 6); zstd takes its negative "fast" levels down to
    /// [`zstd_min_level`] and 1 to 22. `none` takes only `0`.
    #[serde(default)]
    pub level: i32,
}

/// The lowest zstd level (the fastest of its negative "fast" levels).
pub fn zstd_min_level() -> i32 {
    zstd::zstd_safe::min_c_level()
}

/// The level `compression` writes at, given `compression_params`, or why
/// that level is not one the algorithm has (reported at
/// `compression_params.level`).
pub(crate) fn compression_level(
    compression: Compression,
    params: CompressionParams,
) -> Result<i32, ComponentError> {
    let level = params.level;
    let out_of_range = |what: String| {
        Err(error(
            "compression_params.level",
            format!("{level} is not a {what}"),
        ))
    };
    match compression {
        Compression::Gzip => match level {
            0 => Ok(crate::compression::GZIP_EXPORT_LEVEL as i32),
            -1 => Ok(6),
            1..=9 => Ok(level),
            _ => out_of_range(
                "gzip level: use 1 (fastest) to 9 (smallest), -1 for zlib's default (6), or \
                 leave it out for tracegate's (1)"
                    .into(),
            ),
        },
        Compression::Zstd => {
            let (min, max) = (zstd_min_level(), zstd::zstd_safe::max_c_level());
            match level {
                0 => Ok(zstd::DEFAULT_COMPRESSION_LEVEL),
                _ if (min..=max).contains(&level) => Ok(level),
                _ => out_of_range(format!(
                    "zstd level: use 1 to {max} (higher is smaller and slower), a negative \
                     \"fast\" level down to {min}, or leave it out for the default (3)"
                )),
            }
        }
        Compression::None if level == 0 => Ok(0),
        Compression::None => Err(error(
            "compression_params.level",
            "requests go uncompressed (compression: none), so there is no level to set: \
             remove compression_params or choose gzip or zstd",
        )),
    }
}

/// The checks both OTLP exporters make of what they connect and send
/// with: `tls` (only when the connection uses TLS) and `headers`. Returns
/// the TLS warnings.
pub(crate) fn validate_transport(
    uses_tls: bool,
    tls: &TlsClientConfig,
    headers: &BTreeMap<String, String>,
) -> Result<Vec<String>, ComponentError> {
    let warnings = if uses_tls {
        tls.validate().map_err(|e| error("tls", e.to_string()))?
    } else {
        Vec::new()
    };
    validate_headers(headers)?;
    Ok(warnings)
}

/// `timeout` of one export attempt, as the collector's exporterhelper:
/// `0` means no timeout, `None` here.
pub(crate) fn attempt_timeout(timeout: Duration) -> Option<Duration> {
    (!timeout.is_zero()).then_some(timeout)
}

/// Checks that configured headers are valid HTTP header names and values
/// (gRPC metadata keys are lowercase header names).
fn validate_headers(headers: &BTreeMap<String, String>) -> Result<(), ComponentError> {
    for (name, value) in headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(error(
                &format!("headers.{name}"),
                format!("{name:?} is not a valid header name"),
            ));
        }
        if http::HeaderValue::from_str(value).is_err() {
            return Err(error(
                &format!("headers.{name}"),
                "the value is not a valid header value",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_value;

    #[test]
    fn defaults_are_the_collectors() {
        let queue: QueueConfig = from_value(serde_json::Value::Null).unwrap();
        assert_eq!(queue, QueueConfig::default());
        assert!(queue.enabled);
        assert_eq!((queue.num_consumers, queue.queue_size), (10, 1000));
        let retry: RetryConfig = from_value(serde_json::Value::Null).unwrap();
        assert_eq!(retry, RetryConfig::default());
        assert_eq!(retry.initial_interval, Duration::from_secs(5));
        assert_eq!(retry.max_interval, Duration::from_secs(30));
        assert_eq!(retry.max_elapsed_time, Duration::from_secs(300));
        assert_eq!((retry.randomization_factor, retry.multiplier), (0.5, 1.5));
    }

    #[test]
    fn validation_follows_configretry() {
        let retry: RetryConfig =
            from_value(serde_json::json!({"randomization_factor": 1.5})).unwrap();
        assert!(retry.validate().is_err());
        let retry: RetryConfig =
            from_value(serde_json::json!({"max_elapsed_time": "10s", "max_interval": "30s"}))
                .unwrap();
        assert_eq!(
            retry.validate().unwrap_err().path,
            "retry_on_failure.max_elapsed_time"
        );
        let retry: RetryConfig =
            from_value(serde_json::json!({"max_elapsed_time": "0", "max_interval": "30s"}))
                .unwrap();
        assert!(retry.validate().is_ok(), "0 means retry forever");
        let retry: RetryConfig =
            from_value(serde_json::json!({"enabled": false, "multiplier": -1.0})).unwrap();
        assert!(retry.validate().is_ok(), "disabled retry is not checked");
        let queue: QueueConfig = from_value(serde_json::json!({"queue_size": 0})).unwrap();
        assert!(queue.validate().is_err());
        for (key, value) in [
            ("wait_for_result", serde_json::json!(true)),
            ("batch", serde_json::json!({"flush_timeout": "1s"})),
        ] {
            let queue: QueueConfig = from_value(serde_json::json!({ key: value })).unwrap();
            let err = queue.validate().unwrap_err();
            assert_eq!(err.path, format!("sending_queue.{key}"));
            assert!(err.message.contains("tracegate does not"), "{err}");
        }
        let queue: QueueConfig =
            from_value(serde_json::json!({"enabled": false, "wait_for_result": true})).unwrap();
        assert!(queue.validate().is_err(), "refused with the queue off too");
        let queue: QueueConfig =
            from_value(serde_json::json!({"wait_for_result": false, "batch": null})).unwrap();
        assert!(queue.validate().is_ok());
        for (name, want) in [
            ("requests", Sizer::Requests),
            ("items", Sizer::Items),
            ("bytes", Sizer::Bytes),
        ] {
            let queue: QueueConfig = from_value(serde_json::json!({ "sizer": name })).unwrap();
            assert_eq!(queue.sizer, want);
            assert!(queue.validate().is_ok());
        }
        assert!(from_value::<QueueConfig>(serde_json::json!({"sizer": "spans"})).is_err());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = from_value::<QueueConfig>(serde_json::json!({"queue_sise": 5})).unwrap_err();
        assert!(err.message.contains("queue_sise"), "{err}");
        assert!(from_value::<RetryConfig>(serde_json::json!({"max_retries": 5})).is_err());
    }

    #[test]
    fn compression_names() {
        for (text, want) in [
            ("gzip", Compression::Gzip),
            ("zstd", Compression::Zstd),
            ("none", Compression::None),
            ("", Compression::None),
        ] {
            assert_eq!(
                serde_json::from_value::<Compression>(serde_json::json!(text)).unwrap(),
                want
            );
        }
        assert!(serde_json::from_value::<Compression>(serde_json::json!("snappy")).is_err());
    }

    #[test]
    fn compression_levels_per_algorithm() {
        let level =
            |compression, level| compression_level(compression, CompressionParams { level });
        assert_eq!(level(Compression::Gzip, 0), Ok(1));
        assert_eq!(level(Compression::Gzip, -1), Ok(6));
        assert_eq!(level(Compression::Gzip, 9), Ok(9));
        assert_eq!(level(Compression::Zstd, 0), Ok(3));
        assert_eq!(level(Compression::Zstd, 1), Ok(1));
        assert_eq!(level(Compression::Zstd, 22), Ok(22));
        assert_eq!(level(Compression::Zstd, -5), Ok(-5));
        assert_eq!(level(Compression::None, 0), Ok(0));
        for (compression, bad, says) in [
            (Compression::Gzip, 10, "not a gzip level"),
            (Compression::Gzip, -2, "not a gzip level"),
            (Compression::Zstd, 23, "not a zstd level"),
            (Compression::Zstd, zstd_min_level() - 1, "not a zstd level"),
            (Compression::None, 1, "compression: none"),
        ] {
            let e = level(compression, bad).unwrap_err();
            assert_eq!(e.path, "compression_params.level");
            assert!(e.message.contains(says), "{bad}: {e}");
        }
        assert!(from_value::<CompressionParams>(serde_json::json!({"levl": 1})).is_err());
        assert_eq!(
            from_value::<CompressionParams>(serde_json::json!(null)).unwrap(),
            CompressionParams::default()
        );
    }
}
