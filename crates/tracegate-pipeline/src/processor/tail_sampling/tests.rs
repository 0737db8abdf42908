use std::sync::Mutex;

use tracegate_model::otlp::{
    any_value, AnyValue, ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans, ScopeSpans,
    Span, Status,
};

use super::*;

#[derive(Default)]
pub(super) struct Collect(Mutex<Vec<SpanBatch>>);

#[async_trait]
impl Consumer for Collect {
    async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
        self.0.lock().unwrap().push(batch);
        Ok(())
    }
}

impl Collect {
    pub(super) fn spans(&self) -> Vec<([u8; 16], [u8; 8], Option<String>)> {
        let batches = self.0.lock().unwrap();
        let mut out = Vec::new();
        for b in batches.iter() {
            for (i, s) in b.spans().iter().enumerate() {
                out.push((s.trace_id, s.span_id, b.service_name(i).map(str::to_string)));
            }
        }
        out
    }

    pub(super) fn sorted_spans(&self) -> Vec<([u8; 16], [u8; 8], Option<String>)> {
        let mut spans = self.spans();
        spans.sort();
        spans
    }
}

pub(super) fn trace_id(n: u8) -> [u8; 16] {
    [n, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, n]
}

/// Spans 1 and 2 of trace 1 as [`Collect::spans`] lists them, under the
/// given services.
fn trace_1(services: [&str; 2]) -> Vec<([u8; 16], [u8; 8], Option<String>)> {
    (1..=2)
        .zip(services)
        .map(|(s, service)| (trace_id(1), [s, 0, 0, 0, 0, 0, 0, 1], Some(service.into())))
        .collect()
}

/// Spans `(trace, span, error)` under one resource named `service`.
pub(super) fn request(service: &str, spans: &[(u8, u8, bool)]) -> SpanBatch {
    let spans = spans
        .iter()
        .map(|&(t, s, error)| Span {
            trace_id: trace_id(t).to_vec(),
            span_id: vec![s, 0, 0, 0, 0, 0, 0, 1],
            parent_span_id: if s == 1 {
                vec![]
            } else {
                vec![1, 0, 0, 0, 0, 0, 0, 1]
            },
            name: format!("s{s}"),
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_010_000_000,
            status: Some(Status {
                code: if error { 2 } else { 0 },
                message: String::new(),
            }),
            ..Default::default()
        })
        .collect();
    SpanBatch::from_request(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

pub(super) fn config(json: serde_json::Value) -> Config {
    let config: Config = serde_json::from_value(json).expect("config parses");
    config.validate().expect("config is valid");
    config
}

pub(super) fn errors_only(shards: usize) -> Config {
    config(serde_json::json!({
        "decision_wait": "10s",
        "shards": shards,
        "policies": [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]
    }))
}

/// A sampler `id` on `cfg` that hands what it keeps to a fresh [`Collect`].
fn start(id: &str, cfg: Config) -> (Arc<Collect>, Arc<TailSampler>) {
    let sink = Arc::new(Collect::default());
    let sampler =
        TailSampler::start(id, cfg, sink.clone(), MemoryPressure::default(), None).unwrap();
    (sink, sampler)
}

/// Hands `spans` under `service` to the sampler, which must take them.
pub(super) async fn send(sampler: &TailSampler, service: &str, spans: &[(u8, u8, bool)]) {
    sampler.consume(request(service, spans)).await.unwrap();
}

/// Lets the workers run until `done` holds (the paused clock advances only
/// while every task is idle, so this costs no real time).
pub(super) async fn settle(mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("workers did not settle");
}

#[tokio::test(start_paused = true)]
async fn keeps_whole_error_traces_after_decision_wait_and_drops_the_rest() {
    for shards in [1, 3] {
        let (sink, sampler) = start("tail_sampling", errors_only(shards));
        send(&sampler, "api", &[(1, 1, false), (2, 1, false)]).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        send(&sampler, "db", &[(1, 2, true), (2, 2, false)]).await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(sink.spans().is_empty(), "nothing before decision_wait");
        tokio::time::sleep(Duration::from_secs(2)).await;
        settle(|| sink.spans().len() == 2).await;
        assert_eq!(
            sink.sorted_spans(),
            trace_1(["api", "db"]),
            "trace 1 complete, each span under its own resource (shards {shards})"
        );
        sampler.flush().await;
        assert_eq!(sink.spans().len(), 2);
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_decides_pending_traces_or_drops_them_when_asked() {
    let (sink, sampler) = start("tail_sampling", errors_only(2));
    send(&sampler, "api", &[(1, 1, true), (2, 1, false)]).await;
    sampler.flush().await;
    assert_eq!(
        sink.spans().len(),
        1,
        "the error trace was decided at shutdown"
    );
    assert!(sampler
        .consume(request("api", &[(3, 1, true)]))
        .await
        .is_err());

    let mut dropping = errors_only(1);
    dropping.drop_pending_traces_on_shutdown = true;
    let (sink, sampler) = start("tail_sampling/drop", dropping);
    send(&sampler, "api", &[(1, 1, true)]).await;
    sampler.flush().await;
    assert!(sink.spans().is_empty());
}

#[tokio::test(start_paused = true)]
async fn late_spans_of_a_sampled_trace_pass_at_once_with_a_cache() {
    let mut cfg = errors_only(1);
    cfg.decision_cache.sampled_cache_size = 100;
    let (sink, sampler) = start("tail_sampling", cfg);
    send(&sampler, "api", &[(1, 1, true)]).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    settle(|| sink.spans().len() == 1).await;
    send(&sampler, "api", &[(1, 2, false)]).await;
    settle(|| sink.spans().len() == 2).await;
    sampler.flush().await;
}

#[test]
fn config_keys_and_checks() {
    // The seed config's section, fraction_on_match inside the type blocks.
    let seed = config(serde_json::json!({
        "policies": [
            {"name": "error-traces", "type": "status_code",
             "status_code": {"status_codes": ["ERROR"], "fraction_on_match": 1.0}},
            {"name": "slow-traces", "type": "latency",
             "latency": {"threshold_ms": 1000, "fraction_on_match": 0.1}},
            {"name": "alphabetical-service", "type": "string_attribute",
             "string_attribute": {"key": "service.name", "values": ["api", "auth", "payment"], "fraction_on_match": 0.5}}
        ]
    }));
    assert_eq!(seed.decision_wait, Duration::from_secs(30));
    assert_eq!(seed.num_traces, 50_000);
    let collector_keys = config(serde_json::json!({
        "decision_wait": "5s", "decision_wait_after_root_received": "1s", "num_traces": 10,
        "expected_new_traces_per_sec": 10, "block_on_overflow": true, "sample_on_first_match": true,
        "drop_pending_traces_on_shutdown": true, "maximum_trace_size_bytes": 1000,
        "decision_cache": {"sampled_cache_size": 5, "non_sampled_cache_size": 6},
        "policies": [{"name": "all", "type": "always_sample"}]
    }));
    assert_eq!(collector_keys.decision_cache.non_sampled_cache_size, 6);
    let none: Config = serde_json::from_value(serde_json::json!({})).unwrap();
    assert_eq!(none.validate().unwrap_err().path, "policies");
    let bad: Config = serde_json::from_value(serde_json::json!({
        "policies": [{"name": "x", "type": "status_code", "status_code": {"status_codes": ["WARN"]}}]
    }))
    .unwrap();
    assert!(bad.validate().unwrap_err().message.contains("WARN"));
    let unset = config(serde_json::json!({
        "policies": [{"name": "x", "type": "status_code", "status_code": {"status_codes": ["UNSET"]}}]
    }));
    assert!(unset
        .validate()
        .unwrap()
        .iter()
        .any(|w| w.contains("UNSET")));
}

#[test]
fn sampling_strategy_and_num_shards_as_the_collector_takes_them() {
    let ingest = config(serde_json::json!({
        "sampling_strategy": "span-ingest", "num_shards": 4,
        "policies": [{"name": "p", "type": "probabilistic", "probabilistic": {"sampling_percentage": 1}}]
    }));
    assert_eq!(ingest.sampling_strategy, SamplingStrategy::SpanIngest);
    assert!(ingest.buffer_settings().span_ingest);
    assert_eq!(ingest.shard_count(), 4, "num_shards sets the workers");
    let complete = config(serde_json::json!({
        "sampling_strategy": "trace-complete",
        "policies": [{"name": "budget", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 10}}]
    }));
    assert!(!complete.buffer_settings().span_ingest);
    let stateful: Config = serde_json::from_value(serde_json::json!({
        "sampling_strategy": "span-ingest",
        "policies": [
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "budget", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 10}}]
    }))
    .unwrap();
    let e = stateful.validate().unwrap_err();
    assert!(
        e.message.contains("\"budget\" is stateful") && e.message.contains("span-ingest"),
        "{}",
        e.message
    );
    let unknown = serde_json::from_value::<Config>(serde_json::json!({
        "sampling_strategy": "per-span",
        "policies": [{"name": "all", "type": "always_sample"}]
    }));
    assert!(unknown.unwrap_err().to_string().contains("per-span"));
    for n in [0, 257] {
        let bad: Config = serde_json::from_value(serde_json::json!({
            "num_shards": n, "policies": [{"name": "all", "type": "always_sample"}]
        }))
        .unwrap();
        assert_eq!(bad.validate().unwrap_err().path, "num_shards");
    }
}

#[tokio::test(start_paused = true)]
async fn span_ingest_passes_a_trace_on_at_its_first_matching_batch() {
    let cfg = config(serde_json::json!({
        "decision_wait": "10s", "shards": 2, "sampling_strategy": "span-ingest",
        "policies": [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]
    }));
    let (sink, sampler) = start("tail_sampling", cfg);
    send(&sampler, "api", &[(1, 1, false), (2, 1, false)]).await;
    send(&sampler, "db", &[(1, 2, true)]).await;
    // Long before decision_wait.
    settle(|| sink.spans().len() == 2).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    sampler.flush().await;
    let mut traces: Vec<_> = sink.spans().into_iter().map(|s| s.0).collect();
    traces.dedup();
    assert_eq!(traces, vec![trace_id(1)], "trace 2 never matched");
}

#[tokio::test(start_paused = true)]
async fn record_policy_marks_kept_spans_with_the_policy_as_the_collector() {
    let cfg = config(serde_json::json!({
        "decision_wait": "10s",
        "shards": 1,
        "record_policy": true,
        "decision_cache": {"sampled_cache_size": 10},
        "policies": [
            {"name": "never", "type": "status_code", "status_code": {"status_codes": ["OK"]}},
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}
        ]
    }));
    let (sink, sampler) = start("tail_sampling", cfg);
    send(&sampler, "api", &[(1, 1, true)]).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    settle(|| sink.spans().len() == 1).await;
    send(&sampler, "api", &[(1, 2, false)]).await;
    settle(|| sink.spans().len() == 2).await;
    let batches = sink.0.lock().unwrap().clone();
    let scope_attr = |b: &SpanBatch, key: &str| b.scope_attribute(0, key).map(|v| format!("{v:?}"));
    assert_eq!(
        scope_attr(&batches[0], "tailsampling.policy").as_deref(),
        Some("String(\"errors\")")
    );
    assert_eq!(
        scope_attr(&batches[0], "tailsampling.cached_decision"),
        None
    );
    assert_eq!(
        scope_attr(&batches[1], "tailsampling.policy").as_deref(),
        Some("String(\"errors\")")
    );
    assert_eq!(
        scope_attr(&batches[1], "tailsampling.cached_decision").as_deref(),
        Some("Bool(true)")
    );
    sampler.flush().await;
}

#[tokio::test(start_paused = true)]
async fn above_the_hard_limit_the_oldest_pending_traces_are_decided_early() {
    let logs = crate::test_logs::Logs::default();
    let _guard = logs.capture();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let sink = Arc::new(Collect::default());
    // The sampler's own memory pressure, and a memory limiter's say in it.
    let pressure = MemoryPressure::default();
    let limiter = pressure.limiter();
    let sampler = metrics::with_local_recorder(&recorder, || {
        TailSampler::start(
            "tail_sampling",
            errors_only(1),
            sink.clone(),
            pressure.clone(),
            None,
        )
        .unwrap()
    });
    // Four two-span traces, 100 ms apart; 1 and 3 have an error.
    for t in 1..=4u8 {
        let error = t % 2 == 1;
        send(&sampler, "api", &[(t, 1, false), (t, 2, error)]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(sink.spans().is_empty(), "below the limit traces wait");

    limiter.set(true);
    // The next check (at most a second away) decides the older half:
    // trace 1 leaves whole, trace 2 is dropped.
    tokio::time::sleep(MEMORY_CHECK_INTERVAL).await;
    settle(|| sink.spans().len() == 2).await;
    limiter.set(false);
    assert_eq!(sink.sorted_spans(), trace_1(["api", "api"]));
    let text = handle.render();
    let early = text
        .lines()
        .find(|l| {
            l.starts_with("tracegate_tail_sampling_early_decisions{")
                && l.contains("reason=\"memory_limit\"")
        })
        .unwrap_or_else(|| panic!("no memory_limit early decisions in\n{text}"));
    assert!(early.ends_with(" 2"), "{early}");
    let not_sampled = text
        .lines()
        .find(|l| l.starts_with("tracegate_dropped_spans{") && l.contains("reason=\"not_sampled\""))
        .unwrap_or_else(|| panic!("no not_sampled drops in\n{text}"));
    assert!(not_sampled.ends_with(" 2"), "{not_sampled}");
    // The collector's tail sampler never does this: said once.
    assert_eq!(
        logs.text().matches(MEMORY_LIMIT_DIFFERS).count(),
        1,
        "{}",
        logs.text()
    );

    // Back below the limit the younger half waits for decision_wait.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(sink.spans().len(), 2);
    tokio::time::sleep(Duration::from_secs(3)).await;
    settle(|| sink.spans().len() == 4).await;
    assert!(sink
        .spans()
        .iter()
        .all(|s| s.0 != trace_id(2) && s.0 != trace_id(4)));
    sampler.flush().await;
}

/// Issue 15: a memory limiter at its soft limit asks for room; the worker
/// wakes at once and decides just enough of its oldest traces early, by the
/// policies, whatever the memory checks say.
#[tokio::test(start_paused = true)]
async fn asked_for_room_the_oldest_pending_traces_are_decided_early() {
    let sink = Arc::new(Collect::default());
    let pressure = MemoryPressure::default();
    let sampler = TailSampler::start(
        "tail_sampling",
        errors_only(1),
        sink.clone(),
        pressure.clone(),
        None,
    )
    .unwrap();
    // Six two-span traces, 100 ms apart; the odd ones have an error.
    for t in 1..=6u8 {
        let error = t % 2 == 1;
        send(&sampler, "api", &[(t, 1, false), (t, 2, error)]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sink.spans().is_empty(), "traces wait for decision_wait");
    // One byte: the oldest trace goes, kept, and no other.
    let asked_at = tokio::time::Instant::now();
    pressure.request_shedding(1);
    settle(|| !sink.spans().is_empty()).await;
    assert!(asked_at.elapsed() < MEMORY_CHECK_INTERVAL);
    // Two more asks of a byte each: traces 2 (dropped) and 3 (kept).
    pressure.request_shedding(1);
    tokio::time::sleep(Duration::from_millis(10)).await;
    pressure.request_shedding(1);
    settle(|| sink.spans().len() == 4).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let kept: std::collections::BTreeSet<_> = sink.spans().iter().map(|s| s.0).collect();
    assert_eq!(kept, [trace_id(1), trace_id(3)].into_iter().collect());
    // The others wait for decision_wait as before.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(sink.spans().len(), 4);
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle(|| sink.spans().len() == 6).await;
    sampler.flush().await;
}

/// A shard with nothing pending may hold decided traces for late spans;
/// asked for room, it forgets them, so their memory is not held against
/// the pending traces: a late span then starts its trace over.
#[tokio::test(start_paused = true)]
async fn asked_for_room_decided_traces_held_for_late_spans_are_forgotten() {
    let sink = Arc::new(Collect::default());
    let pressure = MemoryPressure::default();
    let sampler = TailSampler::start(
        "tail_sampling",
        errors_only(1),
        sink.clone(),
        pressure.clone(),
        None,
    )
    .unwrap();
    // Trace 1 without an error: not sampled at decision_wait, and kept in
    // the table (no decision cache) for its late spans.
    send(&sampler, "api", &[(1, 1, false)]).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    pressure.request_shedding(1 << 20);
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Its late error span starts it over, and is kept at its own decision;
    // remembered, it would have followed "not sampled".
    send(&sampler, "api", &[(1, 2, true)]).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    settle(|| sink.spans().len() == 1).await;
    sampler.flush().await;
}

/// The value of the first sample of `name` with all of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.split([' ', '{']).next() == Some(name) && labels.iter().all(|want| l.contains(want))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(start_paused = true)]
async fn metrics_have_the_collectors_names_labels_and_counts() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let cfg = config(serde_json::json!({
        "decision_wait": "10s", "shards": 2, "maximum_trace_size_bytes": 300,
        "decision_cache": {"sampled_cache_size": 10},
        "policies": [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]
    }));
    let (sink, sampler) =
        metrics::with_local_recorder(&recorder, || start("tail_sampling/edge", cfg));
    // Trace 1: two spans, one an error. Trace 2: one plain span. Trace 3:
    // too large.
    send(
        &sampler,
        "api",
        &[(1, 1, false), (1, 2, true), (2, 1, false)],
    )
    .await;
    let big: Vec<(u8, u8, bool)> = (1..=8).map(|s| (3, s, true)).collect();
    send(&sampler, "api", &big).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    settle(|| sink.spans().len() == 2).await;
    let text = handle.render();
    let value = |name: &str, labels: &[&str]| {
        sample(&text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
    };
    let policy = "policy=\"edge.errors\"";
    let sampled = "decision=\"sampled\"";
    let not_sampled = "decision=\"not_sampled\"";
    let traces = "processor_tail_sampling_count_traces_sampled";
    let spans = "processor_tail_sampling_count_spans_sampled";
    assert_eq!(value(traces, &[policy, sampled, "sampled=\"true\""]), 1.0);
    assert_eq!(value(traces, &[policy, not_sampled]), 1.0);
    assert_eq!(value(spans, &[policy, sampled]), 2.0);
    assert_eq!(value(spans, &[policy, not_sampled]), 1.0);
    assert_eq!(
        value(
            "processor_tail_sampling_sampling_policy_execution_count",
            &[policy]
        ),
        2.0,
        "the too-large trace is never evaluated"
    );
    assert!(
        value(
            "processor_tail_sampling_sampling_policy_execution_time_sum",
            &[policy]
        ) >= 0.0
    );
    let global = "processor_tail_sampling_global_count_traces_sampled";
    assert_eq!(value(global, &[sampled]), 1.0);
    assert_eq!(
        value(global, &[not_sampled]),
        1.0,
        "the too-large trace is not counted as not_sampled"
    );
    assert_eq!(
        value("processor_tail_sampling_traces_dropped_too_large", &[]),
        1.0
    );
    // The sampled trace left for the cache; the two others stay in the
    // table, decided, for late spans: the collector counts them all.
    assert_eq!(
        value("processor_tail_sampling_sampling_traces_on_memory", &[]),
        2.0
    );
    assert_eq!(
        value(
            "tracegate_tail_sampling_pending_traces",
            &["processor=\"tail_sampling/edge\""]
        ),
        0.0
    );
    assert_eq!(
        value(
            "processor_tail_sampling_sampling_trace_removal_age_count",
            &[]
        ),
        1.0
    );
    assert!(
        value(
            "processor_tail_sampling_sampling_decision_timer_latency_count",
            &[]
        ) >= 1.0
    );
    sampler.flush().await;
}

#[tokio::test(start_paused = true)]
async fn record_policy_names_the_composite_sub_policy() {
    let cfg = config(serde_json::json!({
        "decision_wait": "10s", "shards": 1, "record_policy": true,
        "policies": [{"name": "budget", "type": "composite", "composite": {
            "max_total_spans_per_second": 100,
            "composite_sub_policy": [
                {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                {"name": "rest", "type": "always_sample"}],
            "rate_allocation": [{"policy": "errors", "percent": 50}, {"policy": "rest", "percent": 50}]}}]
    }));
    let (sink, sampler) = start("tail_sampling", cfg);
    send(&sampler, "api", &[(1, 1, true)]).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    settle(|| sink.spans().len() == 1).await;
    let batches = sink.0.lock().unwrap().clone();
    let attr = |key: &str| batches[0].scope_attribute(0, key).map(|v| format!("{v:?}"));
    assert_eq!(
        attr("tailsampling.policy").as_deref(),
        Some("String(\"budget\")")
    );
    assert_eq!(
        attr("tailsampling.composite_policy").as_deref(),
        Some("String(\"errors\")")
    );
    sampler.flush().await;
}

/// `decision_wait: 0` is accepted, as in the collector: traces are decided
/// as soon as they are taken in.
#[tokio::test(start_paused = true)]
async fn zero_decision_wait_decides_at_once() {
    let cfg = config(serde_json::json!({
        "decision_wait": "0s", "shards": 1,
        "policies": [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]
    }));
    let (sink, sampler) = start("tail_sampling", cfg);
    send(&sampler, "api", &[(1, 1, true), (2, 1, false)]).await;
    settle(|| sink.spans().len() == 1).await;
    assert_eq!(sink.spans()[0].0, trace_id(1));
    sampler.flush().await;
}

/// Where a config keeps other traces than the collector's would, validate
/// says so, naming the key; a config that does not differ gets no warning.
#[test]
fn validate_warns_where_the_collector_keeps_other_traces() {
    let warnings = |json: serde_json::Value| {
        let mut json = json;
        json["policies"] = serde_json::json!([{"name": "all", "type": "always_sample"}]);
        config(json).validate().unwrap()
    };
    assert!(warnings(serde_json::json!({})).is_empty());
    assert!(warnings(serde_json::json!({"decision_wait": "1s", "num_shards": 1})).is_empty());
    for wait in ["0s", "200ms"] {
        let w = warnings(serde_json::json!({"decision_wait": wait}));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with(&format!("decision_wait is {wait}:"))
                && w[0].contains("1-second tick"),
            "{w:?}"
        );
    }
    let w = warnings(serde_json::json!({"num_shards": 4}));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("num_shards is 4:") && w[0].contains("num_traces"),
        "{w:?}"
    );
}

/// The first trace a full `num_traces` decides early is logged once, as
/// the moment this processor's outcome starts to differ from the
/// collector's; later ones are only counted.
#[tokio::test(start_paused = true)]
async fn a_full_num_traces_is_logged_once_as_a_difference() {
    let logs = crate::test_logs::Logs::default();
    let _guard = logs.capture();
    let cfg = config(serde_json::json!({
        "decision_wait": "10s", "shards": 1, "num_traces": 2,
        "policies": [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]
    }));
    let (sink, sampler) = start("tail_sampling", cfg);
    send(&sampler, "api", &[(1, 1, true)]).await;
    send(&sampler, "api", &[(2, 1, false)]).await;
    assert!(!logs.text().contains(NUM_TRACES_DIFFERS), "not full yet");
    // Traces 3 and 4 make 1 and 2 give way: the error trace is kept.
    send(&sampler, "api", &[(3, 1, false)]).await;
    send(&sampler, "api", &[(4, 1, false)]).await;
    settle(|| sink.spans().len() == 1).await;
    assert_eq!(sink.spans()[0].0, trace_id(1));
    settle(|| logs.text().contains(NUM_TRACES_DIFFERS)).await;
    assert_eq!(
        logs.text().matches(NUM_TRACES_DIFFERS).count(),
        1,
        "{}",
        logs.text()
    );
    sampler.flush().await;
}

/// Kept traces go on unindexed (validated, indexed on first use) only
/// when the next stage reads no spans and the sampler writes none itself:
/// a next stage that reads spans, or `record_policy`, gets them indexed.
/// Either way the spans read the same.
#[tokio::test(start_paused = true)]
async fn kept_traces_are_indexed_only_for_a_next_stage_that_reads_spans_or_record_policy() {
    use crate::receiver::test_support::CollectSaying;
    for (reads_spans, record_policy, indexed) in [
        (false, false, false),
        (true, false, true),
        (false, true, true),
    ] {
        let mut cfg = serde_json::json!({
            "decision_wait": "10s",
            "shards": 1,
            "policies": [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]
        });
        cfg["record_policy"] = serde_json::json!(record_policy);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sink = Arc::new(CollectSaying {
            batches: tx,
            reads_spans,
        });
        let sampler = TailSampler::start(
            "tail_sampling",
            config(cfg),
            sink,
            MemoryPressure::default(),
            None,
        )
        .unwrap();
        send(&sampler, "api", &[(1, 1, true), (1, 2, false)]).await;
        tokio::time::sleep(Duration::from_secs(11)).await;
        let mut batches = Vec::new();
        settle(|| {
            while let Ok(b) = rx.try_recv() {
                batches.push(b);
            }
            !batches.is_empty()
        })
        .await;
        let case = format!("reads_spans {reads_spans}, record_policy {record_policy}");
        assert!(
            batches.iter().all(|b| b.is_indexed() == indexed),
            "indexed {indexed} expected ({case})"
        );
        let spans: Vec<[u8; 8]> = batches
            .iter()
            .flat_map(|b| b.spans().iter().map(|s| s.span_id).collect::<Vec<_>>())
            .collect();
        assert_eq!(spans.len(), 2, "{case}");
        sampler.flush().await;
    }
}
