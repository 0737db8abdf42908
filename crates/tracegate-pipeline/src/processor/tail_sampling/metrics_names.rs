//! The tail sampler's metric names, without namespace: the collector's
//! (`processor_tail_sampling_*`) and tracegate's own.

pub const COUNT_TRACES_SAMPLED: &str = "processor_tail_sampling_count_traces_sampled";
pub const GLOBAL_COUNT_TRACES_SAMPLED: &str = "processor_tail_sampling_global_count_traces_sampled";
/// Microseconds to evaluate the policies for one trace.
pub const SAMPLING_DECISION_LATENCY: &str = "processor_tail_sampling_sampling_decision_latency";
pub const TRACE_DROPPED_TOO_EARLY: &str =
    "processor_tail_sampling_sampling_trace_dropped_too_early";
pub const TRACES_ON_MEMORY: &str = "processor_tail_sampling_sampling_traces_on_memory";
/// Seconds between a trace's decision and a late span of it.
pub const LATE_SPAN_AGE: &str = "processor_tail_sampling_sampling_late_span_age";
pub const EARLY_RELEASES_FROM_CACHE_DECISION: &str =
    "processor_tail_sampling_early_releases_from_cache_decision";
pub const NEW_TRACE_ID_RECEIVED: &str = "processor_tail_sampling_new_trace_id_received";
pub const POLICY_EVALUATION_ERROR: &str =
    "processor_tail_sampling_sampling_policy_evaluation_error";
pub const TRACES_DROPPED_TOO_LARGE: &str = "processor_tail_sampling_traces_dropped_too_large";
/// tracegate: memory of pending spans (gauge, label `processor`).
pub const BUFFERED_BYTES: &str = "tracegate_tail_sampling_buffered_bytes";
/// tracegate: traces decided early to respect a bound (labels
/// `processor`, `reason`).
pub const EARLY_DECISIONS: &str = "tracegate_tail_sampling_early_decisions";
