//! The `jaeger` exporter: Jaeger's api_v2 `CollectorService/PostSpans` over
//! gRPC, as the collector's jaegerexporter (removed from the collector in
//! 2023) did: the kept spans are mapped by the collector's translator,
//! written straight from their OTLP bytes, one `PostSpans` call per
//! process (resources whose attributes are byte for byte the same share
//! one), several in flight. Connection, TLS, headers, compression,
//! timeout and the decision of what is retried are the OTLP gRPC
//! exporter's. Unlike the collector's exporter, which sent the whole batch
//! again when one call failed, a retry repeats only the calls that failed.

use super::delivery::QueueConfig;
use async_trait::async_trait;
use futures::{future, stream, StreamExt};
use tracegate_model::jaeger::post_spans_requests_by_process;
use tracegate_model::SpanBatch;

use super::otlp_grpc::{self, OtlpGrpcExporter};
use super::{Delivered, ExportError, Exporter};
use crate::config::ComponentError;

/// `PostSpans` calls of one batch in flight at once.
const POST_SPANS_IN_FLIGHT: usize = 8;

/// The gRPC method every Jaeger collector serves for api_v2 spans.
pub const POST_SPANS_PATH: &str = "/jaeger.api_v2.CollectorService/PostSpans";

/// `exporters: jaeger:` takes the OTLP gRPC exporter's keys (endpoint, tls,
/// headers, compression, timeout, keepalive, sending_queue,
/// retry_on_failure, ...), with one difference: `compression` defaults to
/// `none`, as the collector's jaeger exporter did. A type of its own, not
/// an alias, because the registry builds a Jaeger exporter from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Config(pub otlp_grpc::Config);

impl Config {
    /// The `otlp` exporter's checks.
    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        self.0.validate()
    }
}

/// Reads `exporters: jaeger:`; an absent `compression` means `none`.
pub fn config_from_value(mut value: serde_json::Value) -> Result<Config, ComponentError> {
    if value.is_null() {
        value = serde_json::Value::Object(Default::default());
    }
    if let Some(map) = value.as_object_mut() {
        map.entry("compression")
            .or_insert_with(|| serde_json::Value::String("none".into()));
    }
    crate::config::from_value(value).map(Config)
}

/// A running Jaeger gRPC client.
pub struct JaegerExporter {
    grpc: OtlpGrpcExporter,
}

impl JaegerExporter {
    /// Builds the lazily connecting channel; must run inside a tokio runtime.
    pub fn new(config: &Config) -> Result<JaegerExporter, String> {
        Ok(JaegerExporter {
            grpc: OtlpGrpcExporter::new(&config.0)?,
        })
    }
}

#[async_trait]
impl Exporter for JaegerExporter {
    async fn export(&self, batch: &SpanBatch) -> Result<Delivered, ExportError> {
        let requests = post_spans_requests_by_process(batch);
        let calls = requests.len();
        // Several calls share the connection at once: one at a time, the
        // round trips (one per process) set the exporter's pace. Every
        // call runs to its answer, so that what arrived is known, and the
        // resources whose calls failed are all that is owed.
        let mut failed: Vec<(Vec<usize>, ExportError)> = stream::iter(requests)
            .map(|(resources, request)| async move {
                (resources, self.grpc.unary(POST_SPANS_PATH, request).await)
            })
            .buffer_unordered(POST_SPANS_IN_FLIGHT)
            // PostSpansResponse has no fields: nothing to read.
            .filter_map(|(resources, outcome)| future::ready(outcome.err().map(|e| (resources, e))))
            .collect()
            .await;
        // In the batch's order, whatever order the answers came in.
        failed.sort_unstable_by_key(|(resources, _)| resources[0]);
        let failed_calls = failed.len();
        let (resources, errors): (Vec<Vec<usize>>, Vec<ExportError>) = failed.into_iter().unzip();
        let mut resources: Vec<usize> = resources.into_iter().flatten().collect();
        resources.sort_unstable();
        let Some(error) = one_error(errors, calls) else {
            return Ok(Delivered::default());
        };
        if failed_calls == calls {
            return Err(error);
        }
        let remaining = batch.select_resources(&resources);
        if remaining.is_empty() {
            // Only calls for resources without spans failed: nothing is owed.
            return Ok(Delivered::default());
        }
        Err(ExportError::partial(Delivered::default(), remaining, error))
    }
}

/// The error of a batch's failed calls (none if none failed): retryable if
/// any of them is (with the longest delay a server asked for), as a retry
/// may deliver that one; else the first one's.
fn one_error(errors: Vec<ExportError>, calls: usize) -> Option<ExportError> {
    let failed = errors.len();
    let retry_after = errors
        .iter()
        .filter_map(|e| match e {
            ExportError::Retryable { retry_after, .. } => *retry_after,
            _ => None,
        })
        .max();
    let chosen = errors
        .iter()
        .position(|e| matches!(e, ExportError::Retryable { .. }))
        .unwrap_or(0);
    let of_calls = |message: String| {
        if calls > 1 {
            format!("{message} ({failed} of {calls} PostSpans calls failed)")
        } else {
            message
        }
    };
    Some(match errors.into_iter().nth(chosen)? {
        ExportError::Retryable { message, .. } => ExportError::Retryable {
            message: of_calls(message),
            retry_after,
        },
        ExportError::Rejected { code, message } => ExportError::Rejected {
            code,
            message: of_calls(message),
        },
        other => other,
    })
}

impl super::BuildExporter for Config {
    fn sending_queue(&self) -> &QueueConfig {
        &self.0.sending_queue
    }

    fn build(&self, _: &str, ctx: &super::BuildContext) -> Result<super::Built<'_>, String> {
        let mut config = self.clone();
        config.0.client_auth =
            crate::auth::ClientAuth::resolve(&ctx.authenticators, self.0.auth.as_ref())?;
        let exporter = JaegerExporter::new(&config)?;
        Ok(super::Built::new(
            exporter,
            &self.0.sending_queue,
            self.0.retry_on_failure.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporter::Compression;

    #[test]
    fn compression_defaults_to_none_and_keys_are_the_otlp_exporters() {
        let c = config_from_value(serde_json::json!({"endpoint": "jaeger:14250"})).unwrap();
        assert_eq!(c.0.compression, Compression::None);
        assert!(c.validate().unwrap().is_empty());
        let c = config_from_value(serde_json::json!({
            "endpoint": "jaeger:14250", "compression": "gzip", "tls": {"insecure": true},
            "headers": {"x-tenant": "a"}, "timeout": "2s",
            "sending_queue": {"queue_size": 10}, "retry_on_failure": {"enabled": false},
        }))
        .unwrap();
        assert_eq!(c.0.compression, Compression::Gzip);
        assert!(c.validate().is_ok());
        let err =
            config_from_value(serde_json::json!({"endpoint": "j:1", "endpont": "x"})).unwrap_err();
        assert!(err.message.contains("endpont"), "{err}");
        assert_eq!(
            config_from_value(serde_json::Value::Null)
                .unwrap()
                .validate()
                .unwrap_err()
                .path,
            "endpoint"
        );
    }
}
