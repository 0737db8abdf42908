//! OTLP/JSON in and out, through `opentelemetry-proto`'s serde types.
