//! Admission at the soft limit: which batches the memory limiter lets in,
//! how much it asks data holders to free, and when it tells a refused client
//! to come back.
//!
//! The last reading of memory (the allocator's live bytes, plus what the
//! resident set held beyond them at the last check) plus an estimate of what
//! batches admitted since will add (each counted at [`EXPANSION`] times its
//! encoded size) must stay at or under the soft limit with the new batch
//! counted in; otherwise the batch is refused. Before refusing, a reading
//! older than [`FRESH_READING`] is taken again (by one caller at a time), so
//! a batch is refused on what memory is now, not at the last check. Only the
//! batches that do not fit are refused: the others in flight go on.
//!
//! A batch admitted within a slice of the soft limit (an eighth of the spike
//! allowance), and a refusal, ask the process's data holders (the tail
//! sampler) to make room for it and a slice after it
//! ([`MemoryPressure::request_shedding`]), counting what it asked for until
//! readings show it freed or the next check, so that many refusals at once
//! do not ask many times over. The client is told to come back when, at the
//! rate memory has been draining near the limit (freed bytes per second, or
//! admitted bytes per second if that is more, each smoothed over about half
//! a second), the batch will fit behind the clients told before it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::MemoryProbe;
use crate::memory::MemoryPressure;

/// An admitted batch is counted at this many times its encoded size until
/// the next reading: its copies downstream (a tail sampler's span store, a
/// batch processor's merged request) live beside the request for a while.
pub(crate) const EXPANSION: u64 = 2;

/// A reading this old is taken again before a batch is refused.
pub(crate) const FRESH_READING: Duration = Duration::from_millis(2);

/// Shortest and longest delay a refused client is told to wait. The
/// longest is what tracegate told every refused client before it sized the
/// delay.
pub(crate) const MIN_RETRY_AFTER: Duration = Duration::from_millis(5);
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Time constant of the rate averages.
const DRAIN_SMOOTHING: Duration = Duration::from_millis(500);

/// Readings closer together than this do not make a drain-rate sample.
const MIN_DRAIN_WINDOW: Duration = Duration::from_millis(10);

/// The admission state shared by the processor and its check task.
pub(crate) struct Gate {
    pub soft: u64,
    pub hard: u64,
    probe: MemoryProbe,
    /// What a refusal asks holders to free beyond what its batch lacked.
    shed_slice: u64,
    /// How long to tell clients to wait before any drain was seen.
    unknown_drain_hint: Duration,
    /// Resident memory beyond what the probe reads, as of the last check
    /// (see [`Gate::set_resident`]).
    overhead: AtomicU64,
    pressure: MemoryPressure,
    clock_start: Instant,
    /// The last reading, in bytes, and when it was taken (ns since
    /// `clock_start`).
    measured: AtomicU64,
    measured_at: AtomicU64,
    /// Estimated bytes admitted since the last reading.
    admitted: AtomicU64,
    /// Encoded bytes admitted since the start, for the drain estimate.
    admitted_total: AtomicU64,
    /// Encoded bytes refused since the start: whether anyone wanted in.
    refused_total: AtomicU64,
    /// Shedding asked for and not yet seen freed.
    shed_outstanding: AtomicU64,
    /// Taken to read memory; `try_lock`ed on the refusal path.
    drain: Mutex<Drain>,
}

/// How fast memory drains, and the retry schedule handed out.
#[derive(Default)]
struct Drain {
    /// The reading the next sample starts from: (ns, bytes,
    /// admitted_total, refused_total).
    from: Option<(u64, u64, u64, u64)>,
    /// Freed bytes per second near the limit, smoothed; `None` before the
    /// first sample.
    rate: Option<f64>,
    /// Admitted bytes per second, smoothed: at the limit, what comes in is
    /// what was made room for, so this is a drain rate too, and the one
    /// known first (while memory fills, nothing is freed yet).
    intake: Option<f64>,
    /// Refused clients have been told to come back until this time (ns):
    /// the next one is placed after them.
    promised_until: u64,
}

impl Gate {
    pub fn new(
        hard: u64,
        soft: u64,
        probe: MemoryProbe,
        check_interval: Duration,
        pressure: MemoryPressure,
    ) -> Gate {
        let gate = Gate {
            soft,
            hard,
            probe,
            shed_slice: (hard - soft) / 8,
            unknown_drain_hint: check_interval.clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER),
            overhead: AtomicU64::new(0),
            pressure,
            clock_start: Instant::now(),
            measured: AtomicU64::new(0),
            measured_at: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            admitted_total: AtomicU64::new(0),
            refused_total: AtomicU64::new(0),
            shed_outstanding: AtomicU64::new(0),
            drain: Mutex::new(Drain::default()),
        };
        gate.measure(&mut gate.lock());
        gate
    }

    fn now(&self) -> u64 {
        self.clock_start.elapsed().as_nanos() as u64
    }

    fn lock(&self) -> MutexGuard<'_, Drain> {
        self.drain.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The process's resident set now: what it holds beyond the probe's
    /// live bytes (the binary and thread stacks, the allocator's metadata
    /// and the freed pages it has not returned yet) is counted with every
    /// reading until the next call. That part moves slowly; the live bytes
    /// follow what is allocated and freed at once.
    pub fn set_resident(&self, resident: u64) {
        let live = (self.probe)();
        self.overhead
            .store(resident.saturating_sub(live), Ordering::Relaxed);
    }

    /// Reads memory now (the check task). Room asked for and not seen
    /// freed by now will be asked for again: what holders freed may not
    /// show in the live bytes (a table's slots), or they held less.
    pub fn read(&self) -> u64 {
        let bytes = self.measure(&mut self.lock());
        self.shed_outstanding.store(0, Ordering::Relaxed);
        bytes
    }

    /// Takes a reading: it replaces the estimate of what was admitted
    /// before it, and makes rate samples.
    fn measure(&self, drain: &mut Drain) -> u64 {
        let admitted = self.admitted.load(Ordering::Relaxed);
        let admitted_total = self.admitted_total.load(Ordering::Relaxed);
        let refused_total = self.refused_total.load(Ordering::Relaxed);
        let bytes = (self.probe)() + self.overhead.load(Ordering::Relaxed);
        let at = self.now();
        self.measured.store(bytes, Ordering::Relaxed);
        self.measured_at.store(at, Ordering::Relaxed);
        // Never below zero: a caller between its provisional take and
        // giving it back (`try_take`) may have been counted in `admitted`
        // above, and gives it back after this.
        Self::give_back(&self.admitted, admitted);
        let here = (at, bytes, admitted_total, refused_total);
        let Some((from_at, from_bytes, from_total, from_refused)) = drain.from else {
            drain.from = Some(here);
            return bytes;
        };
        if at.saturating_sub(from_at) < MIN_DRAIN_WINDOW.as_nanos() as u64 {
            return bytes;
        }
        let came_in = admitted_total - from_total;
        // What was there, plus what came in, minus what is there.
        let freed = (from_bytes + came_in).saturating_sub(bytes);
        let dt = (at - from_at) as f64 / 1e9;
        let weight = 1.0 - (-dt / DRAIN_SMOOTHING.as_secs_f64()).exp();
        let smooth = |rate: &mut Option<f64>, sample: f64| {
            *rate = Some(match *rate {
                Some(r) => r + (sample - r) * weight,
                None => sample,
            });
        };
        // Rates are what the gateway managed when data wanted in: an idle
        // gateway that holds its memory (a tail sampler waiting out its
        // traces) says nothing about how fast it makes room when asked.
        let wanted_in = came_in > 0 || refused_total > from_refused;
        if wanted_in {
            smooth(&mut drain.intake, came_in as f64 / dt);
            // Far below the limit nothing needs to drain, and memory that
            // only grows says nothing about how fast it could.
            let near = self.near_limit();
            if from_bytes >= near && bytes >= near {
                smooth(&mut drain.rate, freed as f64 / dt);
            }
        }
        self.shed_outstanding
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| {
                Some(o.saturating_sub(freed))
            })
            .ok();
        drain.from = Some(here);
        bytes
    }

    /// Readings from here up make drain-rate samples: within one spike
    /// allowance of the soft limit.
    fn near_limit(&self) -> u64 {
        self.soft.saturating_sub(self.hard - self.soft)
    }

    /// Counts `cost` in if it fits under the soft limit.
    fn try_take(&self, cost: u64) -> bool {
        let before = self.admitted.fetch_add(cost, Ordering::Relaxed);
        let used = self
            .measured
            .load(Ordering::Relaxed)
            .saturating_add(before)
            .saturating_add(cost);
        if used <= self.soft {
            return true;
        }
        Self::give_back(&self.admitted, cost);
        false
    }

    /// Takes `bytes` off `counter`, stopping at zero: a reading may have
    /// taken a provisional take off before its taker gives it back, and a
    /// wrapped counter would admit everything (or overflow).
    fn give_back(counter: &AtomicU64, bytes: u64) {
        counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(bytes))
            })
            .ok();
    }

    /// Lets a batch of `encoded` bytes in, or says when to come back.
    pub fn admit(&self, encoded: u64) -> Result<(), Duration> {
        let cost = encoded * EXPANSION;
        let mut fits = self.try_take(cost);
        if !fits {
            let age = self
                .now()
                .saturating_sub(self.measured_at.load(Ordering::Relaxed));
            if age >= FRESH_READING.as_nanos() as u64 {
                // One caller reads; the others decide on the reading it
                // leaves rather than wait for it.
                if let Ok(mut drain) = self.drain.try_lock() {
                    self.measure(&mut drain);
                    drop(drain);
                    fits = self.try_take(cost);
                }
            }
        }
        if fits {
            self.admitted_total.fetch_add(encoded, Ordering::Relaxed);
            // Within a slice of the soft limit: room for the next ones.
            self.shed(0);
            return Ok(());
        }
        self.refused_total.fetch_add(encoded, Ordering::Relaxed);
        self.shed(cost);
        Err(self.retry_after(cost))
    }

    /// Bytes over the soft limit with `cost` more.
    fn excess(&self, cost: u64) -> u64 {
        self.used(cost).saturating_sub(self.soft)
    }

    /// The estimate of memory in use with `cost` more.
    fn used(&self, cost: u64) -> u64 {
        self.measured
            .load(Ordering::Relaxed)
            .saturating_add(self.admitted.load(Ordering::Relaxed))
            .saturating_add(cost)
    }

    /// Asks holders to make room for `cost` more and a slice after it,
    /// less what was asked for already and not yet seen freed: nothing
    /// while that much is free.
    pub fn shed(&self, cost: u64) {
        let want = (self.used(cost) + self.shed_slice).saturating_sub(self.soft);
        if want == 0 {
            return;
        }
        let mut ask = 0;
        self.shed_outstanding
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |outstanding| {
                ask = want.saturating_sub(outstanding);
                (ask > 0).then_some(outstanding + ask)
            })
            .ok();
        self.pressure.request_shedding(ask);
    }

    /// When a refused batch of `cost` should come back: once memory has
    /// drained what it lacks, after the clients told to come back before it.
    fn retry_after(&self, cost: u64) -> Duration {
        let excess = self.excess(cost);
        let mut drain = self.lock();
        let rate = match (drain.rate, drain.intake) {
            (None, None) => return self.unknown_drain_hint,
            (a, b) => a.unwrap_or(0.0).max(b.unwrap_or(0.0)),
        };
        if rate < 1.0 {
            // Nothing drains: come back late.
            return MAX_RETRY_AFTER;
        }
        let secs = |bytes: u64| (bytes as f64 / rate * 1e9).min(u64::MAX as f64 / 4.0) as u64;
        let now = self.now();
        let fits_at = now + secs(excess);
        let slot = fits_at.max(drain.promised_until.max(now) + secs(cost));
        drain.promised_until = slot;
        let delay = Duration::from_nanos(slot - now).clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER);
        tracing::trace!(
            excess,
            cost,
            drain_bytes_per_second = rate as u64,
            ?delay,
            "refused"
        );
        delay
    }
}

#[cfg(test)]
mod race_tests {
    use std::sync::Arc;

    use super::*;

    /// Readings race with refused takes: a reading may count a take that
    /// its caller gives back afterwards. The count never wraps below zero
    /// (which overflowed in debug builds and, wrapped in release builds,
    /// let everything in).
    #[test]
    fn a_reading_between_a_take_and_its_give_back_never_wraps_the_count() {
        let gate = Arc::new(Gate::new(
            64 << 20,
            48 << 20,
            Arc::new(|| 47 << 20),
            Duration::from_millis(100),
            MemoryPressure::default(),
        ));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let admitters: Vec<_> = (0..3)
            .map(|_| {
                let (gate, stop) = (gate.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        // Mostly refused: each refusal takes and gives back.
                        let _ = gate.admit(200_000);
                        let admitted = gate.admitted.load(Ordering::Relaxed);
                        assert!(admitted < 1 << 40, "admitted wrapped: {admitted}");
                    }
                })
            })
            .collect();
        for _ in 0..200_000 {
            gate.read();
        }
        stop.store(true, Ordering::Relaxed);
        for admitter in admitters {
            admitter.join().expect("an admitter panicked");
        }
    }
}
