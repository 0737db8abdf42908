//! The tail sampler's metric names, without namespace: the collector's
//! (`processor_tail_sampling_*`) and tracegate's own.

pub const COUNT_TRACES_SAMPLED: &str = "processor_tail_sampling_count_traces_sampled";
/// Spans of the traces counted in `count_traces_sampled` (labels `policy`,
/// `sampled`, `decision`).
pub const COUNT_SPANS_SAMPLED: &str = "processor_tail_sampling_count_spans_sampled";
/// Evaluations per policy (label `policy`).
pub const POLICY_EXECUTION_COUNT: &str = "processor_tail_sampling_sampling_policy_execution_count";
/// Microseconds spent evaluating, per policy (label `policy`).
pub const POLICY_EXECUTION_TIME_SUM: &str =
    "processor_tail_sampling_sampling_policy_execution_time_sum";
/// Milliseconds per run of the decision timer.
pub const DECISION_TIMER_LATENCY: &str = "processor_tail_sampling_sampling_decision_timer_latency";
/// Seconds from a trace's first span to its removal from memory.
pub const TRACE_REMOVAL_AGE: &str = "processor_tail_sampling_sampling_trace_removal_age";
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
/// tracegate: traces waiting for a decision (gauge, label `processor`);
/// `sampling_traces_on_memory` also counts decided ones still held.
pub const PENDING_TRACES: &str = "tracegate_tail_sampling_pending_traces";
/// tracegate: memory of pending spans (gauge, label `processor`).
pub const BUFFERED_BYTES: &str = "tracegate_tail_sampling_buffered_bytes";
/// tracegate: traces decided early to respect a bound (labels
/// `processor`, `reason`).
pub const EARLY_DECISIONS: &str = "tracegate_tail_sampling_early_decisions";
/// tracegate, with `tail_storage` (labels `processor`, `storage`): bytes
/// the journal wrote, framing included (counter).
pub const JOURNAL_WRITTEN_BYTES: &str = "tracegate_tail_sampling_journal_written_bytes";
/// fsync/fdatasync calls the journal made (counter).
pub const JOURNAL_SYNCS: &str = "tracegate_tail_sampling_journal_syncs";
/// Bytes counted against the storage's bound (gauge).
pub const JOURNAL_DISK_BYTES: &str = "tracegate_tail_sampling_journal_disk_bytes";
/// Spans refused (the client told to retry) because the storage was full
/// or could not be written.
pub const JOURNAL_REFUSED_SPANS: &str = "tracegate_tail_sampling_journal_refused_spans";
/// Decisions made but not journaled (storage full or failing): after a
/// restart, their traces' late spans start over.
pub const JOURNAL_UNJOURNALED_DECISIONS: &str =
    "tracegate_tail_sampling_journal_unjournaled_decisions";
/// Traces and spans given back to the buffer from the journal at startup.
pub const JOURNAL_RESTORED_TRACES: &str = "tracegate_tail_sampling_journal_restored_traces";
pub const JOURNAL_RESTORED_SPANS: &str = "tracegate_tail_sampling_journal_restored_spans";
/// tracegate, hand-over (labels `processor`, `reason`: `membership_change`,
/// `not_owner`, `recheck`, `shutdown`): spans, traces and decisions handed
/// to another gateway and taken by it.
pub const HANDOVER_SPANS: &str = "tracegate_tail_sampling_handover_spans";
pub const HANDOVER_TRACES: &str = "tracegate_tail_sampling_handover_traces";
pub const HANDOVER_DECISIONS: &str = "tracegate_tail_sampling_handover_decisions";
/// tracegate, hand-over: spans and decisions that could not be handed over
/// (labels `processor`, `reason`: `unreachable`, `refused`, `unsupported`,
/// `client`, `shutting_down`, `hop_limit`). Their traces are decided here.
pub const HANDOVER_FAILED_SPANS: &str = "tracegate_tail_sampling_handover_failed_spans";
pub const HANDOVER_FAILED_DECISIONS: &str = "tracegate_tail_sampling_handover_failed_decisions";
/// tracegate, hand-over: spans and decisions taken from other gateways
/// (label `processor`).
pub const HANDOVER_RECEIVED_SPANS: &str = "tracegate_tail_sampling_handover_received_spans";
pub const HANDOVER_RECEIVED_DECISIONS: &str = "tracegate_tail_sampling_handover_received_decisions";
/// tracegate, hand-over: requests refused (labels `processor`, `reason`:
/// `not_ready`, `unknown_sender`, `sender_address`, `malformed`,
/// `shutting_down`, `storage`: the `tail_storage` could not journal it).
pub const HANDOVER_REFUSED_REQUESTS: &str = "tracegate_tail_sampling_handover_refused_requests";
/// tracegate, hand-over (gauges, label `processor`): the members the
/// resolver found, and 1 when this gateway is one of them.
pub const HANDOVER_MEMBERS: &str = "tracegate_tail_sampling_handover_members";
pub const HANDOVER_IS_MEMBER: &str = "tracegate_tail_sampling_handover_is_member";
/// tracegate, adaptive policies (gauge, labels `processor`, `policy`,
/// `key`): the keep probability a key's traces get now. `key` is `""` for
/// `throughput`; for `dynamic` one of at most `max_keys` keys or
/// `_overflow`, so the labels stay bounded.
pub const ADAPTIVE_PROBABILITY: &str = "tracegate_tail_sampling_adaptive_probability";
/// tracegate, adaptive policies (counter, labels `processor`, `policy`,
/// `key`, `decision`: `kept`, `dropped`): traces by key.
pub const ADAPTIVE_TRACES: &str = "tracegate_tail_sampling_adaptive_traces";
/// tracegate, adaptive policies (gauges, labels `processor`, `policy`):
/// this gateway's goal in kept traces per second (a fleet goal divided by
/// the live gateways), the rate it kept over the last interval, and the
/// offered rate as the moving average has it.
pub const ADAPTIVE_GOAL_RATE: &str = "tracegate_tail_sampling_adaptive_goal_traces_per_second";
pub const ADAPTIVE_KEPT_RATE: &str = "tracegate_tail_sampling_adaptive_kept_traces_per_second";
pub const ADAPTIVE_SEEN_RATE: &str = "tracegate_tail_sampling_adaptive_seen_traces_per_second";
/// tracegate, `dynamic` policies (counter, label `processor`): traces whose
/// key fields were longer than the buffer records as spans arrive
/// (`MAX_RECORDED_KEY_BYTES`), so their spans were assembled at the
/// decision to read the key.
pub const ADAPTIVE_KEYS_OVER_CAP: &str = "tracegate_tail_sampling_adaptive_keys_over_cap";
