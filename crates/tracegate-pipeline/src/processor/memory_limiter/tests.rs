use std::sync::atomic::{AtomicU64, Ordering};

use super::gate::{EXPANSION, FRESH_READING, MAX_RETRY_AFTER, MIN_RETRY_AFTER};
use super::*;
use tracegate_model::otlp::{ExportTraceServiceRequest, ResourceSpans, ScopeSpans, Span};

#[derive(Default)]
struct Count(AtomicU64);

#[async_trait]
impl Consumer for Count {
    async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn batch(spans: usize) -> SpanBatch {
    batch_with_names(spans, "")
}

/// `spans` spans named `name`.
fn batch_with_names(spans: usize, name: &str) -> SpanBatch {
    SpanBatch::from_request(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..spans)
                    .map(|i| Span {
                        trace_id: vec![1; 16],
                        span_id: vec![i as u8 + 1; 8],
                        name: name.into(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

/// One span whose encoded request is about `bytes` long.
fn batch_of_bytes(bytes: usize) -> SpanBatch {
    let b = batch_with_names(1, &"x".repeat(bytes));
    assert!(b.encoded_len() >= bytes && b.encoded_len() < bytes + 64);
    b
}

fn config(json: serde_json::Value) -> Config {
    crate::config::from_value(json).unwrap()
}

#[test]
fn validation_as_the_collector() {
    let ok = config(
        serde_json::json!({"check_interval": "1s", "limit_mib": 512, "spike_limit_mib": 128}),
    );
    assert!(ok.validate().unwrap().is_empty());
    // The collector's defaults for the backoff caps.
    assert_eq!(
        ok.max_gc_interval_when_soft_limited,
        Duration::from_secs(30)
    );
    assert_eq!(
        ok.max_gc_interval_when_hard_limited,
        Duration::from_secs(30)
    );
    let both_caps = config(serde_json::json!({
        "check_interval": "1s", "limit_mib": 10,
        "max_gc_interval_when_soft_limited": "1m", "max_gc_interval_when_hard_limited": "0s",
    }));
    assert!(both_caps.validate().unwrap().is_empty());
    let cases = [
        (serde_json::json!({"limit_mib": 512}), "check_interval"),
        (serde_json::json!({"check_interval": "1s"}), "limit_mib"),
        (
            serde_json::json!({"check_interval": "1s", "limit_mib": 100, "spike_limit_mib": 100}),
            "spike_limit_mib",
        ),
        (
            serde_json::json!({"check_interval": "1s", "limit_percentage": 101}),
            "limit_percentage",
        ),
        (
            serde_json::json!({"check_interval": "1s", "limit_percentage": 50, "spike_limit_percentage": 50}),
            "spike_limit_percentage",
        ),
        (
            serde_json::json!({"check_interval": "1s", "limit_mib": 10, "min_gc_interval_when_soft_limited": "1s", "min_gc_interval_when_hard_limited": "2s"}),
            "min_gc_interval_when_soft_limited",
        ),
        (
            serde_json::json!({"check_interval": "1s", "limit_mib": 10, "max_gc_interval_when_soft_limited": "5s"}),
            "max_gc_interval_when_soft_limited",
        ),
        (
            serde_json::json!({"check_interval": "1s", "limit_mib": 10, "min_gc_interval_when_hard_limited": "2s", "max_gc_interval_when_hard_limited": "1s"}),
            "max_gc_interval_when_hard_limited",
        ),
        (
            serde_json::json!({"check_interval": "1s", "limit_mib": 10, "max_gc_interval_when_soft_limited": "20s", "max_gc_interval_when_hard_limited": "25s"}),
            "max_gc_interval_when_soft_limited",
        ),
    ];
    for (json, path) in cases {
        let e = config(json.clone()).validate().unwrap_err();
        assert_eq!(e.path, path, "{json}: {e}");
    }
}

#[test]
fn limits_fixed_percentage_and_default_spike() {
    let fixed = config(
        serde_json::json!({"check_interval": "1s", "limit_mib": 512, "spike_limit_mib": 128}),
    );
    assert_eq!(fixed.limits(None), Some((512 * MIB, 384 * MIB)));
    let default_spike = config(serde_json::json!({"check_interval": "1s", "limit_mib": 100}));
    assert_eq!(default_spike.limits(None), Some((100 * MIB, 80 * MIB)));
    let pct = config(
        serde_json::json!({"check_interval": "1s", "limit_percentage": 80, "spike_limit_percentage": 20}),
    );
    assert_eq!(pct.limits(Some(1000 * MIB)), Some((800 * MIB, 600 * MIB)));
    assert_eq!(pct.limits(None), None);
}

/// A percentage limit needs the memory available; this process can read
/// it, so the limiter starts (a process that cannot is refused at start,
/// see `total_memory`'s tests for what it reads).
#[tokio::test]
async fn a_percentage_limit_starts_from_the_memory_available() {
    let cfg = config(serde_json::json!({"check_interval": "1s", "limit_percentage": 80}));
    let limiter = MemoryLimiter::start(
        "memory_limiter",
        &cfg,
        Arc::new(Count::default()),
        &BuildContext::default(),
    );
    assert!(limiter.is_ok());
}

/// Memory that the test sets; releasing frees `releasable` of it (memory
/// that only a release shows freed) and `freed` (pages the allocator
/// reports holding after they were freed). `untouched` is reported as
/// freed too but returns nothing: pages of freed extents never written,
/// which were not resident. The allocator's live bytes and the resident set
/// are the same here.
#[derive(Default)]
struct FakeMemory {
    used: AtomicU64,
    releasable: AtomicU64,
    freed: AtomicU64,
    untouched: AtomicU64,
    releases: AtomicU64,
}

impl FakeMemory {
    fn at(mib: u64) -> Arc<FakeMemory> {
        let memory = FakeMemory::default();
        memory.used.store(mib * MIB, Ordering::Relaxed);
        Arc::new(memory)
    }

    fn set(&self, bytes: u64) {
        self.used.store(bytes, Ordering::Relaxed);
    }

    fn releases(&self) -> u64 {
        self.releases.load(Ordering::Relaxed)
    }

    fn source(self: &Arc<Self>) -> MemorySource {
        let (live, resident, release) = (self.clone(), self.clone(), self.clone());
        let freed = self.clone();
        MemorySource {
            live: Arc::new(move || live.used.load(Ordering::Relaxed)),
            resident: Arc::new(move || Some(resident.used.load(Ordering::Relaxed))),
            release: Arc::new(move || {
                let returned = release.releasable.swap(0, Ordering::Relaxed)
                    + release.freed.swap(0, Ordering::Relaxed);
                release.used.fetch_sub(returned, Ordering::Relaxed);
                release.releases.fetch_add(1, Ordering::Relaxed);
            }),
            freed: Arc::new(move || {
                freed.freed.load(Ordering::Relaxed) + freed.untouched.load(Ordering::Relaxed)
            }),
            partial: false,
        }
    }
}

/// Limit 100 MiB, soft limit 80 MiB, checked every second; the backoff
/// between releases off unless `extra` sets it.
fn limiter_with(
    memory: &Arc<FakeMemory>,
    sink: Arc<Count>,
    pressure: &MemoryPressure,
    extra: serde_json::Value,
) -> Arc<MemoryLimiter> {
    let mut json = serde_json::json!({
        "check_interval": "1s", "limit_mib": 100, "spike_limit_mib": 20,
        "max_gc_interval_when_soft_limited": "0s", "max_gc_interval_when_hard_limited": "0s",
    });
    for (k, v) in extra.as_object().unwrap() {
        json[k] = v.clone();
    }
    MemoryLimiter::start_with(
        "memory_limiter",
        &config(json),
        sink,
        memory.source(),
        None,
        pressure,
    )
}

fn limiter(memory: &Arc<FakeMemory>, sink: Arc<Count>) -> Arc<MemoryLimiter> {
    limiter_with(
        memory,
        sink,
        &MemoryPressure::default(),
        serde_json::json!({}),
    )
}

async fn tick() {
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Let the check task run after the clock moved.
    tokio::task::yield_now().await;
}

fn retry_after(err: ConsumeError) -> Duration {
    match err {
        ConsumeError::Refused {
            retry_after: Some(d),
            ..
        } => d,
        other => panic!("not a refusal with a delay: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn refuses_above_the_soft_limit_and_accepts_again_below() {
    let memory = FakeMemory::at(50);
    let sink = Arc::new(Count::default());
    let ml = limiter(&memory, sink.clone());
    ml.consume(batch(3)).await.unwrap();
    memory.set(85 * MIB);
    // Until memory is read again the reading at the start holds, as in the
    // collector until its next check.
    ml.consume(batch(1)).await.unwrap();
    tick().await;
    assert!(ml.is_refusing());
    // Above the soft limit a release is tried once (nothing to free).
    assert_eq!(memory.releases(), 1);
    let err = ml.consume(batch(5)).await.unwrap_err();
    assert!(matches!(err, ConsumeError::Refused { .. }), "{err:?}");
    assert_eq!(sink.0.load(Ordering::Relaxed), 4);
    memory.set(79 * MIB);
    tick().await;
    assert!(!ml.is_refusing());
    ml.consume(batch(2)).await.unwrap();
    assert_eq!(sink.0.load(Ordering::Relaxed), 6);
}

/// Issue 15: the limit is not crossed between two checks. Batches admitted
/// since the last reading count at twice their size, so a flood that
/// arrives within one check interval is refused at the soft limit, not at
/// the next check; and a refusal first reads memory again, so what was
/// freed meanwhile lets the batch in.
#[tokio::test(start_paused = true)]
async fn batches_are_refused_before_they_would_cross_the_soft_limit() {
    let memory = FakeMemory::at(70);
    let sink = Arc::new(Count::default());
    let ml = limiter(&memory, sink.clone());
    // 10 MiB of room under the 80 MiB soft limit; each batch counts ~2 MiB.
    let cost = EXPANSION * batch_of_bytes(1 << 20).encoded_len() as u64;
    let mut admitted = 0;
    for _ in 0..20 {
        match ml.consume(batch_of_bytes(1 << 20)).await {
            Ok(()) => admitted += 1,
            Err(e) => {
                retry_after(e);
                break;
            }
        }
    }
    assert_eq!(
        admitted,
        10 * MIB / cost,
        "admitted {admitted} MiB-sized batches"
    );
    // The estimate holds until memory is read again: still refused.
    retry_after(ml.consume(batch_of_bytes(1 << 20)).await.unwrap_err());
    // The data went on downstream and was freed: a reading older than
    // FRESH_READING is taken before refusing, and the batch fits.
    memory.set(60 * MIB);
    tokio::time::advance(FRESH_READING).await;
    ml.consume(batch_of_bytes(1 << 20)).await.unwrap();
    assert_eq!(sink.0.load(Ordering::Relaxed), admitted + 1);
    // No check has run: this was decided per batch.
    assert!(!ml.is_refusing());
}

/// With the allocator's live bytes as the probe, what the process holds
/// beyond them (as the resident set shows at each check: the binary, the
/// allocator's freed pages not returned yet) counts too, so the limits bound
/// the resident set while the live bytes answer at once.
#[tokio::test(start_paused = true)]
async fn what_the_resident_set_holds_beyond_the_live_bytes_counts_too() {
    let live = Arc::new(AtomicU64::new(40 * MIB));
    let resident = Arc::new(AtomicU64::new(70 * MIB));
    let (l, r) = (live.clone(), resident.clone());
    let source = MemorySource {
        live: Arc::new(move || l.load(Ordering::Relaxed)),
        resident: Arc::new(move || Some(r.load(Ordering::Relaxed))),
        release: Arc::new(|| {}),
        freed: Arc::new(|| 0),
        partial: true,
    };
    let sink = Arc::new(Count::default());
    let cfg = config(serde_json::json!({
        "check_interval": "1s", "limit_mib": 100, "spike_limit_mib": 20,
    }));
    let ml = MemoryLimiter::start_with(
        "memory_limiter",
        &cfg,
        sink.clone(),
        source,
        None,
        &MemoryPressure::default(),
    );
    let cost = EXPANSION * batch_of_bytes(1 << 20).encoded_len() as u64;
    let admitted = |ml: Arc<MemoryLimiter>| async move {
        let mut n = 0;
        while ml.consume(batch_of_bytes(1 << 20)).await.is_ok() {
            n += 1;
        }
        n
    };
    // 70 MiB resident against the 80 MiB soft limit: 10 MiB of room, not
    // the 40 MiB the live bytes alone would leave.
    assert_eq!(admitted(ml.clone()).await, 10 * MIB / cost);
    // The allocator returned 20 MiB of freed pages; the next check sees it.
    resident.store(50 * MIB, Ordering::Relaxed);
    tick().await;
    assert_eq!(admitted(ml.clone()).await, 30 * MIB / cost);
}

/// A refusal asks data holders to free what the batch lacked plus a slice
/// of the spike allowance; refusals before memory is seen to fall do not
/// ask again for the same bytes.
#[tokio::test(start_paused = true)]
async fn a_refusal_asks_holders_to_make_room_once() {
    let memory = FakeMemory::at(79);
    let pressure = MemoryPressure::default();
    let mut requests = pressure.shedding_requests();
    let ml = limiter_with(
        &memory,
        Arc::new(Count::default()),
        &pressure,
        serde_json::json!({}),
    );
    // 1 MiB of room; a 1 MiB batch counts 2 MiB.
    retry_after(ml.consume(batch_of_bytes(1 << 20)).await.unwrap_err());
    let asked = requests.take();
    let slice = 20 * MIB / 8;
    let lacked = EXPANSION * (1 << 20) - MIB;
    assert!(
        asked >= lacked + slice && asked < lacked + slice + 4096,
        "asked for {asked} bytes"
    );
    retry_after(ml.consume(batch_of_bytes(1 << 20)).await.unwrap_err());
    assert_eq!(requests.take(), 0, "the same room was asked for again");
    // Holders freed 10 MiB; the next reading lets data in and settles what
    // was asked.
    memory.set(69 * MIB);
    tick().await;
    ml.consume(batch_of_bytes(1 << 20)).await.unwrap();
    // Memory climbs over the line again: a new request.
    memory.set(81 * MIB);
    tick().await;
    assert!(requests.take() >= MIB + slice);
}

/// The delay a refused client is told: when memory, draining at the rate
/// seen while clients wanted in, has room for its batch, behind the
/// clients told before it; the longest delay when nothing drains.
#[tokio::test(start_paused = true)]
async fn refused_clients_come_back_when_memory_has_drained() {
    let memory = FakeMemory::at(90);
    let ml = limiter_with(
        &memory,
        Arc::new(Count::default()),
        &MemoryPressure::default(),
        serde_json::json!({"check_interval": "200ms"}),
    );
    let refused = |ml: Arc<MemoryLimiter>| async move {
        retry_after(ml.consume(batch_of_bytes(1 << 20)).await.unwrap_err())
    };
    // Nothing has drained yet: the check interval.
    assert_eq!(refused(ml.clone()).await, Duration::from_millis(200));
    // Memory drains 10 MiB a second (the backend takes what was queued),
    // read by the checks, while clients keep being refused.
    for mib in [88, 86, 84, 82] {
        memory.set(mib * MIB);
        refused(ml.clone()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        tokio::task::yield_now().await;
    }
    // A quiet while: nobody wants in, so what memory does says nothing
    // about its drain, and those clients have come back and gone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // 82 MiB: a 1 MiB batch (2 MiB counted) fits once 4 MiB have drained,
    // in 0.4 s.
    let d1 = refused(ml.clone()).await;
    assert!(
        d1 > Duration::from_millis(350) && d1 < Duration::from_millis(450),
        "{d1:?}"
    );
    // The next client comes back after it, a batch's drain time (0.2 s)
    // later.
    let d2 = refused(ml.clone()).await;
    assert!(
        d2 > d1 + Duration::from_millis(150) && d2 < d1 + Duration::from_millis(250),
        "{d1:?} then {d2:?}"
    );
    // Memory stops draining while clients keep trying: they are told to
    // come back late.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        refused(ml.clone()).await;
    }
    assert_eq!(refused(ml.clone()).await, MAX_RETRY_AFTER);
    assert!(MIN_RETRY_AFTER < Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn above_the_hard_limit_memory_is_released_before_deciding() {
    let memory = FakeMemory::at(120);
    memory.releasable.store(60 * MIB, Ordering::Relaxed);
    let pressure = MemoryPressure::default();
    let ml = limiter_with(
        &memory,
        Arc::new(Count::default()),
        &pressure,
        serde_json::json!({}),
    );
    tick().await;
    // The release brought it to 60 MiB: no need to refuse.
    assert!(!pressure.above_hard_limit());
    assert_eq!(memory.releases(), 1);
    assert!(!ml.is_refusing());
    // Every check above the hard limit releases again (min interval 0).
    memory.set(101 * MIB);
    tick().await;
    assert_eq!(memory.releases(), 2);
    assert!(ml.is_refusing());
    // Components holding data are told to let go of what they can.
    assert!(pressure.above_hard_limit());
    tick().await;
    assert_eq!(memory.releases(), 3);
    memory.set(50 * MIB);
    tick().await;
    assert!(!pressure.above_hard_limit());
    memory.set(101 * MIB);
    tick().await;
    assert!(pressure.above_hard_limit());
    // A limiter that is gone no longer holds the pressure up.
    drop(ml);
    tick().await;
    tick().await;
    assert!(!pressure.above_hard_limit());
}

/// While refusing, freed memory is released again once the minimum
/// interval has passed.
#[tokio::test(start_paused = true)]
async fn while_refusing_memory_is_released_again_after_the_interval() {
    let memory = FakeMemory::at(90);
    let ml = limiter(&memory, Arc::new(Count::default()));
    tick().await;
    assert!(ml.is_refusing());
    assert_eq!(memory.releases(), 1);
    // Downstream frees 40 MiB, but here it only leaves memory on a release:
    // none before 10 s have passed since the last one.
    memory.releasable.store(40 * MIB, Ordering::Relaxed);
    for _ in 0..8 {
        tick().await;
        assert!(ml.is_refusing());
    }
    tick().await;
    tick().await;
    assert_eq!(memory.releases(), 2);
    assert!(!ml.is_refusing());
}

/// Freed pages the allocator still holds are returned at once, within the
/// interval, when they alone put memory over the soft limit: the allocator
/// keeps them for reuse, and that must not cost refusals. When returning
/// them would not be enough, the interval holds as before.
#[tokio::test(start_paused = true)]
async fn freed_pages_that_alone_cross_the_soft_limit_are_returned_at_once() {
    let memory = FakeMemory::at(90);
    let ml = limiter(&memory, Arc::new(Count::default()));
    tick().await;
    assert_eq!(memory.releases(), 1);
    assert!(
        ml.is_refusing(),
        "90 MiB of live data is over the soft limit"
    );
    // 20 MiB of data goes, but its pages stay with the allocator: still
    // 90 MiB resident.
    memory.freed.store(20 * MIB, Ordering::Relaxed);
    tick().await;
    assert_eq!(memory.releases(), 2, "returned within the 10 s interval");
    assert!(!ml.is_refusing());
    assert_eq!(memory.used.load(Ordering::Relaxed), 70 * MIB);
    // 10 MiB of freed pages again, and live data that stays over the soft
    // limit even without them (85 MiB): the interval holds (the last
    // release was 1 s ago).
    memory.set(95 * MIB);
    memory.freed.store(10 * MIB, Ordering::Relaxed);
    tick().await;
    assert_eq!(memory.releases(), 2);
    assert!(ml.is_refusing());
    // Now only the freed pages keep memory over the limit (75 MiB live):
    // returned at once.
    memory.set(85 * MIB);
    tick().await;
    assert_eq!(memory.releases(), 3);
    assert!(!ml.is_refusing());
}

/// When the allocator's freed pages seemed to suffice but returning them
/// left memory over the soft limit (its count includes pages that were
/// never resident), the next checks do not release again at once: the
/// interval holds until memory has been under the soft limit.
#[tokio::test(start_paused = true)]
async fn a_release_of_freed_pages_that_did_not_help_is_not_repeated_every_check() {
    let memory = FakeMemory::at(90);
    let ml = limiter(&memory, Arc::new(Count::default()));
    tick().await;
    assert_eq!(memory.releases(), 1);
    // 20 MiB reported freed, none of it resident.
    memory.untouched.store(20 * MIB, Ordering::Relaxed);
    tick().await;
    assert_eq!(memory.releases(), 2, "tried once, within the interval");
    assert!(ml.is_refusing(), "still 90 MiB resident");
    for _ in 0..5 {
        tick().await;
    }
    assert_eq!(memory.releases(), 2, "not again before the 10 s interval");
    // Memory falls under the soft limit, then freed pages that are
    // resident put it over again: returned at once.
    memory.set(70 * MIB);
    tick().await;
    memory.untouched.store(0, Ordering::Relaxed);
    memory.freed.store(20 * MIB, Ordering::Relaxed);
    memory.set(90 * MIB);
    tick().await;
    assert_eq!(memory.releases(), 3);
    assert!(!ml.is_refusing());
}

/// The collector's `max_gc_interval_when_*_limited`: a release that frees
/// little makes the next wait longer, doubling from the larger of the
/// minimum and 95 % of the check interval up to the cap; one that frees
/// enough resets the wait.
#[tokio::test(start_paused = true)]
async fn releases_that_free_little_back_off_up_to_the_cap() {
    let memory = FakeMemory::at(110);
    let _ml = limiter_with(
        &memory,
        Arc::new(Count::default()),
        &MemoryPressure::default(),
        serde_json::json!({"max_gc_interval_when_hard_limited": "8s"}),
    );
    // Above the hard limit, min interval 0: release times in seconds.
    let mut at = Vec::new();
    for second in 1..=24 {
        let before = memory.releases();
        tick().await;
        if memory.releases() > before {
            at.push(second);
        }
    }
    // Waits after each fruitless release: 1.9 s, 3.8 s, 7.6 s, then 8 s.
    assert_eq!(at, vec![1, 3, 7, 15, 23], "{at:?}");
    // A release that frees enough resets the backoff.
    memory.releasable.store(20 * MIB, Ordering::Relaxed);
    for _ in 0..9 {
        tick().await;
    }
    assert_eq!(memory.releases(), 6);
    memory.set(110 * MIB);
    tick().await;
    assert_eq!(
        memory.releases(),
        7,
        "released at once after an effective one"
    );
}

#[tokio::test(start_paused = true)]
async fn the_check_task_ends_with_the_processor() {
    let memory = FakeMemory::at(0);
    let ml = limiter(&memory, Arc::new(Count::default()));
    drop(ml);
    tick().await;
    // The task held the probe's Arc; it is gone once the task ended.
    tick().await;
    assert_eq!(Arc::strong_count(&memory), 1);
}

/// Its limits and what it measured are served, so an alert can fire
/// before it refuses.
#[tokio::test(start_paused = true)]
async fn reports_its_limits_and_the_memory_it_measured() {
    let memory = FakeMemory::at(50);
    let recorder = Arc::new(crate::exporter::test_support::TestRecorder::default());
    let ml = metrics::with_local_recorder(recorder.as_ref(), || {
        limiter(&memory, Arc::new(Count::default()))
    });
    let gauge = |name| recorder.gauge(name, &[("processor", "memory_limiter")]);
    assert_eq!(
        gauge(names::MEMORY_LIMITER_HARD_LIMIT_BYTES),
        (100 * MIB) as f64
    );
    assert_eq!(
        gauge(names::MEMORY_LIMITER_SOFT_LIMIT_BYTES),
        (80 * MIB) as f64
    );
    tick().await;
    assert_eq!(gauge(names::MEMORY_LIMITER_USED_BYTES), (50 * MIB) as f64);
    // Measured after the release a check makes above the soft limit.
    memory.set(90 * MIB);
    memory.releasable.store(5 * MIB, Ordering::Relaxed);
    tick().await;
    assert_eq!(gauge(names::MEMORY_LIMITER_USED_BYTES), (85 * MIB) as f64);
    assert!(ml.is_refusing());
}
