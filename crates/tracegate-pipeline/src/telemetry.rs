//! Self-telemetry: metric names in the collector's dialect (DESIGN.md §7).
//! Names here carry no namespace; the Prometheus endpoint prefixes them with
//! the configured one (`otelcol` by default), so `receiver_accepted_spans`
//! is served as `otelcol_receiver_accepted_spans`. Counters are registered
//! once per component and held as handles on the hot path.

/// Metric names, without namespace. Labels: receivers use `receiver` (the
/// component id) and `transport` (`grpc`, `http`); exporters `exporter`;
/// processors `processor`.
pub mod names {
    pub const RECEIVER_ACCEPTED_SPANS: &str = "receiver_accepted_spans";
    pub const RECEIVER_REFUSED_SPANS: &str = "receiver_refused_spans";
    /// Requests rejected before any span could be counted (malformed, too
    /// large, wrong content type); label `reason`.
    pub const RECEIVER_REJECTED_REQUESTS: &str = "receiver_rejected_requests";

    pub const EXPORTER_SENT_SPANS: &str = "exporter_sent_spans";
    pub const EXPORTER_SEND_FAILED_SPANS: &str = "exporter_send_failed_spans";
    pub const EXPORTER_ENQUEUE_FAILED_SPANS: &str = "exporter_enqueue_failed_spans";
    pub const EXPORTER_QUEUE_SIZE: &str = "exporter_queue_size";
    pub const EXPORTER_QUEUE_CAPACITY: &str = "exporter_queue_capacity";

    pub const PROCESSOR_BATCH_BATCH_SEND_SIZE: &str = "processor_batch_batch_send_size";
    pub const PROCESSOR_BATCH_BATCH_SIZE_TRIGGER_SEND: &str =
        "processor_batch_batch_size_trigger_send";
    pub const PROCESSOR_BATCH_TIMEOUT_TRIGGER_SEND: &str = "processor_batch_timeout_trigger_send";
    pub const PROCESSOR_BATCH_METADATA_CARDINALITY: &str = "processor_batch_metadata_cardinality";

    /// tracegate's own: spans that left the pipeline other than by export,
    /// labelled by `component` and `reason` (DESIGN.md §5).
    pub const DROPPED_SPANS: &str = "tracegate_dropped_spans";
}
