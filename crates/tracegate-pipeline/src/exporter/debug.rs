//! The `debug` exporter, as the collector's: writes what it receives to the
//! log. `basic` logs one summary line per batch, `normal` one line per span
//! (name, ids, attributes), `detailed` every field of every span. Output is
//! sampled per second (`sampling_initial`, then every `sampling_thereafter`-th).

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use serde::Deserialize;
use tokio::time::Instant;
use tracegate_model::otlp::{any_value, AnyValue, KeyValue};
use tracegate_model::SpanBatch;

use super::delivery::QueueConfig;
use super::utc::UtcTime;
use super::{Delivered, ExportError, Exporter};
use crate::config::{error, ComponentError};

/// `verbosity:`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    #[default]
    Basic,
    Normal,
    Detailed,
}

/// `exporters: debug:`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `basic` (a summary line per batch), `normal` (a line per span) or
    /// `detailed` (every span field). Default `basic`.
    #[serde(default)]
    pub verbosity: Verbosity,
    /// Batches logged in full each second before sampling starts. Default 2.
    #[serde(default = "default_sampling_initial")]
    pub sampling_initial: u64,
    /// After `sampling_initial` in a second, log every n-th batch; 0 logs no
    /// more that second. Default 1 (all).
    #[serde(default = "default_sampling_thereafter")]
    pub sampling_thereafter: u64,
    /// Write through tracegate's log (`true`) or as plain text to stdout.
    /// Default `true`.
    #[serde(default = "yes")]
    pub use_internal_logger: bool,
    /// The exporter's queue. Default enabled (tracegate gives every exporter
    /// its own queue; the collector's debug exporter has none by default).
    #[serde(default)]
    pub sending_queue: QueueConfig,
}

fn default_sampling_initial() -> u64 {
    2
}
fn default_sampling_thereafter() -> u64 {
    1
}
fn yes() -> bool {
    true
}

impl Default for Config {
    fn default() -> Self {
        Config {
            verbosity: Verbosity::Basic,
            sampling_initial: default_sampling_initial(),
            sampling_thereafter: default_sampling_thereafter(),
            use_internal_logger: true,
            sending_queue: QueueConfig::default(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        self.sending_queue.validate()?;
        let mut warnings = Vec::new();
        if self.sampling_initial == 0 && self.sampling_thereafter == 0 {
            warnings
                .push("sampling_initial and sampling_thereafter are 0: nothing is logged".into());
        }
        if self.sampling_initial > u32::MAX as u64 {
            return Err(error("sampling_initial", "sampling_initial is too large"));
        }
        Ok(warnings)
    }
}

/// Per-second sampling as zap's sampler: the first `initial` entries of
/// each second pass, then every `thereafter`-th.
struct Sampler {
    initial: u64,
    thereafter: u64,
    window: Mutex<(Instant, u64)>,
}

impl Sampler {
    fn admit(&self, now: Instant) -> bool {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(window.0) >= Duration::from_secs(1) {
            *window = (now, 0);
        }
        window.1 += 1;
        let n = window.1;
        n <= self.initial
            || (self.thereafter > 0 && (n - self.initial).is_multiple_of(self.thereafter))
    }
}

pub struct DebugExporter {
    id: String,
    verbosity: Verbosity,
    use_internal_logger: bool,
    sampler: Sampler,
}

impl DebugExporter {
    pub fn new(id: &str, config: &Config) -> DebugExporter {
        DebugExporter {
            id: id.to_string(),
            verbosity: config.verbosity,
            use_internal_logger: config.use_internal_logger,
            sampler: Sampler {
                initial: config.sampling_initial,
                thereafter: config.sampling_thereafter,
                window: Mutex::new((Instant::now(), 0)),
            },
        }
    }

    /// The text for one batch: the summary, then per-span detail above `basic`.
    fn render(&self, batch: &SpanBatch) -> (String, Option<String>) {
        let summary = format!(
            "Traces: resource spans {}, spans {}",
            batch.resources().len(),
            batch.len()
        );
        let detail = match self.verbosity {
            Verbosity::Basic => None,
            Verbosity::Normal => Some(render_normal(batch)),
            Verbosity::Detailed => Some(render_detailed(batch)),
        };
        (summary, detail)
    }
}

#[async_trait]
impl Exporter for DebugExporter {
    async fn export(&self, batch: &SpanBatch) -> Result<Delivered, ExportError> {
        if !self.sampler.admit(Instant::now()) {
            return Ok(Delivered::default());
        }
        let (summary, detail) = self.render(batch);
        if self.use_internal_logger {
            tracing::info!(
                exporter = %self.id,
                resource_spans = batch.resources().len(),
                spans = batch.len(),
                "Traces"
            );
            if let Some(detail) = detail {
                tracing::info!(exporter = %self.id, "{detail}");
            }
        } else {
            let mut out = std::io::stdout().lock();
            // stdout going away is not the batch's fault; the spans were
            // "exported" as far as this exporter can tell.
            let _ = writeln!(out, "{summary}");
            if let Some(detail) = detail {
                let _ = out.write_all(detail.as_bytes());
            }
            let _ = out.flush();
        }
        Ok(Delivered::default())
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `normal`: a line per resource and scope, and per span
/// `name trace_id span_id key=value...`.
fn render_normal(batch: &SpanBatch) -> String {
    let request = batch.to_request();
    let mut out = String::new();
    for (i, resource_spans) in request.resource_spans.iter().enumerate() {
        let attributes = resource_spans
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let _ = writeln!(out, "ResourceTraces #{i}{}", inline_attributes(attributes));
        for (j, scope_spans) in resource_spans.scope_spans.iter().enumerate() {
            let (name, version) = scope_spans
                .scope
                .as_ref()
                .map(|s| (s.name.as_str(), s.version.as_str()))
                .unwrap_or(("", ""));
            let _ = writeln!(out, "ScopeTraces #{j} {name}@{version}");
            for span in &scope_spans.spans {
                let _ = writeln!(
                    out,
                    "{} {} {}{}",
                    span.name,
                    hex(&span.trace_id),
                    hex(&span.span_id),
                    inline_attributes(&span.attributes)
                );
            }
        }
    }
    out
}

fn inline_attributes(attributes: &[KeyValue]) -> String {
    let mut out = String::new();
    for kv in attributes {
        let _ = write!(out, " {}={}", kv.key, value_text(kv.value.as_ref()));
    }
    out
}

/// `detailed`: every field, in the layout of the collector's otlptext.
fn render_detailed(batch: &SpanBatch) -> String {
    let request = batch.to_request();
    let mut out = String::new();
    for (i, resource_spans) in request.resource_spans.iter().enumerate() {
        let _ = writeln!(out, "ResourceSpans #{i}");
        let _ = writeln!(out, "Resource SchemaURL: {}", resource_spans.schema_url);
        if let Some(resource) = &resource_spans.resource {
            attribute_block(&mut out, "Resource attributes", &resource.attributes);
        }
        for (j, scope_spans) in resource_spans.scope_spans.iter().enumerate() {
            let _ = writeln!(out, "ScopeSpans #{j}");
            let _ = writeln!(out, "ScopeSpans SchemaURL: {}", scope_spans.schema_url);
            if let Some(scope) = &scope_spans.scope {
                let _ = writeln!(out, "InstrumentationScope {} {}", scope.name, scope.version);
                attribute_block(
                    &mut out,
                    "InstrumentationScope attributes",
                    &scope.attributes,
                );
            }
            for (k, span) in scope_spans.spans.iter().enumerate() {
                let _ = writeln!(out, "Span #{k}");
                let _ = writeln!(out, "    Trace ID       : {}", hex(&span.trace_id));
                let _ = writeln!(out, "    Parent ID      : {}", hex(&span.parent_span_id));
                let _ = writeln!(out, "    ID             : {}", hex(&span.span_id));
                let _ = writeln!(out, "    Name           : {}", span.name);
                let _ = writeln!(out, "    Kind           : {}", kind_name(span.kind));
                if !span.trace_state.is_empty() {
                    let _ = writeln!(out, "    TraceState     : {}", span.trace_state);
                }
                let _ = writeln!(
                    out,
                    "    Start time     : {}",
                    timestamp(span.start_time_unix_nano)
                );
                let _ = writeln!(
                    out,
                    "    End time       : {}",
                    timestamp(span.end_time_unix_nano)
                );
                let (code, message) = span
                    .status
                    .as_ref()
                    .map(|s| (s.code, s.message.as_str()))
                    .unwrap_or((0, ""));
                let _ = writeln!(out, "    Status code    : {}", status_name(code));
                let _ = writeln!(out, "    Status message : {message}");
                attribute_block(&mut out, "Attributes", &span.attributes);
                if !span.events.is_empty() {
                    let _ = writeln!(out, "Events:");
                    for (e, event) in span.events.iter().enumerate() {
                        let _ = writeln!(out, "SpanEvent #{e}");
                        let _ = writeln!(out, "     -> Name: {}", event.name);
                        let _ = writeln!(
                            out,
                            "     -> Timestamp: {}",
                            timestamp(event.time_unix_nano)
                        );
                        let _ = writeln!(
                            out,
                            "     -> DroppedAttributesCount: {}",
                            event.dropped_attributes_count
                        );
                        attribute_block(&mut out, "     -> Attributes", &event.attributes);
                    }
                }
                if !span.links.is_empty() {
                    let _ = writeln!(out, "Links:");
                    for (l, link) in span.links.iter().enumerate() {
                        let _ = writeln!(out, "SpanLink #{l}");
                        let _ = writeln!(out, "     -> Trace ID: {}", hex(&link.trace_id));
                        let _ = writeln!(out, "     -> ID: {}", hex(&link.span_id));
                        let _ = writeln!(out, "     -> TraceState: {}", link.trace_state);
                        attribute_block(&mut out, "     -> Attributes", &link.attributes);
                    }
                }
            }
        }
    }
    out
}

fn attribute_block(out: &mut String, title: &str, attributes: &[KeyValue]) {
    if attributes.is_empty() {
        return;
    }
    let _ = writeln!(out, "{title}:");
    for kv in attributes {
        let value = kv.value.as_ref();
        let _ = writeln!(
            out,
            "     -> {}: {}({})",
            kv.key,
            type_name(value),
            value_text(value)
        );
    }
}

fn type_name(value: Option<&AnyValue>) -> &'static str {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(_)) => "Str",
        Some(any_value::Value::BoolValue(_)) => "Bool",
        Some(any_value::Value::IntValue(_)) => "Int",
        Some(any_value::Value::DoubleValue(_)) => "Double",
        Some(any_value::Value::BytesValue(_)) => "Bytes",
        Some(any_value::Value::ArrayValue(_)) => "Slice",
        Some(any_value::Value::KvlistValue(_)) => "Map",
        _ => "Empty",
    }
}

fn value_text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex(b),
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|v| value_text(Some(v))).collect();
            format!("[{}]", items.join(","))
        }
        Some(any_value::Value::KvlistValue(l)) => {
            let items: Vec<String> = l
                .values
                .iter()
                .map(|kv| format!("{}:{}", kv.key, value_text(kv.value.as_ref())))
                .collect();
            format!("{{{}}}", items.join(","))
        }
        _ => String::new(),
    }
}

fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "Internal",
        2 => "Server",
        3 => "Client",
        4 => "Producer",
        5 => "Consumer",
        _ => "Unspecified",
    }
}

fn status_name(code: i32) -> &'static str {
    match code {
        1 => "Ok",
        2 => "Error",
        _ => "Unset",
    }
}

/// `2020-02-11 20:26:13.000000789 +0000 UTC`, as Go prints a UTC time.
fn timestamp(unix_nanos: u64) -> String {
    let t = UtcTime::of(UNIX_EPOCH + Duration::from_nanos(unix_nanos));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:09} +0000 UTC",
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.nanos
    )
}

impl super::BuildExporter for Config {
    fn sending_queue(&self) -> &QueueConfig {
        &self.sending_queue
    }

    // Writing to the log cannot fail, so there is nothing to retry.
    fn build(&self, id: &str, _: &super::BuildContext) -> Result<super::Built<'_>, String> {
        let exporter = DebugExporter::new(id, self);
        Ok(super::Built::new(
            exporter,
            &self.sending_queue,
            super::RetryConfig::disabled(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_value;
    use crate::exporter::test_support::sample_batch;

    #[test]
    fn defaults_are_the_collectors() {
        let c: Config = from_value(serde_json::Value::Null).unwrap();
        assert_eq!(c.verbosity, Verbosity::Basic);
        assert_eq!((c.sampling_initial, c.sampling_thereafter), (2, 1));
        assert!(c.use_internal_logger);
        assert!(from_value::<Config>(serde_json::json!({"verbosity": "loud"})).is_err());
        assert!(from_value::<Config>(serde_json::json!({"loglevel": "debug"})).is_err());
    }

    #[test]
    fn sampler_passes_initial_then_every_nth_per_second() {
        let start = Instant::now();
        let sampler = Sampler {
            initial: 2,
            thereafter: 3,
            window: Mutex::new((start, 0)),
        };
        let admitted: Vec<bool> = (0..8).map(|_| sampler.admit(start)).collect();
        assert_eq!(
            admitted,
            [true, true, false, false, true, false, false, true]
        );
        assert!(
            sampler.admit(start + Duration::from_secs(1)),
            "a new second starts over"
        );
        let silent = Sampler {
            initial: 1,
            thereafter: 0,
            window: Mutex::new((start, 0)),
        };
        assert!(silent.admit(start));
        assert!(!silent.admit(start) && !silent.admit(start));
    }

    #[tokio::test]
    async fn every_verbosity_renders_without_panicking() {
        let batch = sample_batch(3, 4);
        for verbosity in [Verbosity::Basic, Verbosity::Normal, Verbosity::Detailed] {
            for use_internal_logger in [true, false] {
                let exporter = DebugExporter::new(
                    "debug",
                    &Config {
                        verbosity,
                        use_internal_logger,
                        ..Config::default()
                    },
                );
                assert_eq!(exporter.export(&batch).await, Ok(Delivered::default()));
                assert_eq!(
                    exporter.export(&SpanBatch::default()).await,
                    Ok(Delivered::default())
                );
            }
        }
        let detailed = DebugExporter::new(
            "debug",
            &Config {
                verbosity: Verbosity::Detailed,
                ..Config::default()
            },
        );
        let (summary, detail) = detailed.render(&batch);
        assert_eq!(summary, "Traces: resource spans 3, spans 12");
        let detail = detail.unwrap();
        assert_eq!(detail.matches("Span #").count(), 12);
        assert!(
            detail.contains("     -> http.route: Str(/api/0)"),
            "{detail}"
        );
        let normal = DebugExporter::new(
            "debug",
            &Config {
                verbosity: Verbosity::Normal,
                ..Config::default()
            },
        );
        let lines = normal.render(&batch).1.unwrap();
        assert!(lines
            .lines()
            .any(|l| l.starts_with("span-0-1 ") && l.contains("http.route=/api/0")));
    }

    #[test]
    fn timestamps_print_like_go() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00.000000000 +0000 UTC");
        assert_eq!(
            timestamp(1_581_452_773_000_000_789),
            "2020-02-11 20:26:13.000000789 +0000 UTC"
        );
    }
}
