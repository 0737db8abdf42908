//! The `jaeger` exporter: Jaeger's api_v2 `CollectorService/PostSpans` over
//! gRPC, as the collector's jaegerexporter (removed from the collector in
//! 2023) did: the kept spans are mapped by the collector's translator,
//! written straight from their OTLP bytes, one `PostSpans` call per
//! resource, several in flight. Connection, TLS, headers, compression,
//! timeout and the decision of what is retried are the OTLP gRPC
//! exporter's.

use super::delivery::QueueConfig;
use async_trait::async_trait;
use futures::{future, stream, StreamExt, TryStreamExt};
use tracegate_model::jaeger::post_spans_requests;
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
        // A failure part-way resends the resources already sent when the
        // batch is retried, as the collector's exporter did: Jaeger stores
        // spans by id, so a repeat overwrites rather than duplicates.
        // Several calls share the connection at once: one at a time, the
        // round trips (one per resource) set the exporter's pace.
        stream::iter(post_spans_requests(batch))
            .map(|request| self.grpc.unary(POST_SPANS_PATH, request))
            .buffer_unordered(POST_SPANS_IN_FLIGHT)
            // PostSpansResponse has no fields: nothing to read.
            .try_for_each(|_| future::ready(Ok(())))
            .await?;
        Ok(Delivered::default())
    }
}

impl super::BuildExporter for Config {
    fn sending_queue(&self) -> &QueueConfig {
        &self.0.sending_queue
    }

    fn build(&self, _: &str, _: &super::BuildContext) -> Result<super::Built<'_>, String> {
        let exporter = JaegerExporter::new(self)?;
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
