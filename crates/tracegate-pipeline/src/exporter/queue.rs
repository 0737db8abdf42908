//! An exporter's bounded in-memory queue: many producers (pipelines) push
//! without waiting, several consumers take. A full queue refuses at once
//! rather than blocking the pipeline, so one slow backend never stalls
//! another exporter. Its capacity is counted by a sizer, as the
//! collector's `sending_queue.sizer`: each item weighs 1 (`requests`) or
//! what the weighing function says (`items`: spans, `bytes`: encoded size).
//!
//! Optionally it is also bounded in bytes ([`with_byte_limit`]): the bytes
//! of what it took stay counted after a pop, while a consumer sends them,
//! until the consumer [`release`](BoundedQueue::release)s them, so that the
//! bound covers everything the exporter holds, queued or in flight (the
//! collector's memory queue likewise frees an item's size only when its
//! export is done).
//!
//! [`with_byte_limit`]: BoundedQueue::with_byte_limit

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

/// Why a push did not take the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    Full,
    Closed,
}

struct State<T> {
    /// Each item with its weight.
    items: VecDeque<(T, usize)>,
    /// Sum of the weights of `items`.
    used: usize,
    /// Bytes of the items taken and not yet released, queued or popped.
    held: usize,
    closed: bool,
}

pub(crate) struct BoundedQueue<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    weigh: fn(&T) -> usize,
    available: Notify,
    /// Producers waiting for room ([`push`](Self::push)); woken only when
    /// the queue was made blocking, so the refusing queue pays nothing.
    space: Notify,
    blocking: bool,
    /// At most this many bytes held (queued or popped and not released);
    /// `usize::MAX` when the queue has no byte limit.
    byte_limit: usize,
    /// An item's bytes, for the byte limit.
    bytes: fn(&T) -> usize,
    /// `State::held`, readable without the lock.
    held: AtomicUsize,
}

impl<T> BoundedQueue<T> {
    /// A queue of at most `capacity` items.
    #[cfg(test)]
    pub(crate) fn new(capacity: usize) -> BoundedQueue<T> {
        Self::weighted(capacity, |_| 1)
    }

    /// A queue whose items' weights, by `weigh`, add up to at most
    /// `capacity`. An item heavier than the whole capacity is never taken.
    pub(crate) fn weighted(capacity: usize, weigh: fn(&T) -> usize) -> BoundedQueue<T> {
        BoundedQueue {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity.min(1024)),
                used: 0,
                held: 0,
                closed: false,
            }),
            capacity,
            weigh,
            available: Notify::new(),
            space: Notify::new(),
            blocking: false,
            byte_limit: usize::MAX,
            bytes: |_| 0,
            held: AtomicUsize::new(0),
        }
    }

    /// Also bounds the bytes held, by `bytes`, at `limit`: an item is
    /// refused (or, blocking, waits) while the bytes held plus its own
    /// would pass the limit, unless nothing is held, so that an item larger
    /// than the limit still goes through alone. Popped items stay counted
    /// until [`release`](Self::release)d.
    pub(crate) fn with_byte_limit(mut self, limit: usize, bytes: fn(&T) -> usize) -> Self {
        self.byte_limit = limit;
        self.bytes = bytes;
        self
    }

    /// The byte limit, `usize::MAX` for none.
    pub(crate) fn byte_limit(&self) -> usize {
        self.byte_limit
    }

    /// Bytes taken and not yet released: queued, or popped and in flight.
    pub(crate) fn held_bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// A popped item's `bytes` are no longer held (it was sent or dropped).
    pub(crate) fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.held = state.held.saturating_sub(bytes);
        self.held.store(state.held, Ordering::Relaxed);
        drop(state);
        if self.blocking {
            self.space.notify_waiters();
        }
    }

    /// Whether `item` could ever be taken: not heavier than the capacity.
    fn fits_at_all(&self, item: &T) -> bool {
        (self.weigh)(item) <= self.capacity
    }

    /// Makes [`push`](Self::push) wait for room (`block_on_overflow`).
    pub(crate) fn blocking(mut self) -> BoundedQueue<T> {
        self.blocking = true;
        self
    }

    /// Adds `item`, waiting for room while the queue is full if it is
    /// blocking (else as [`try_push`](Self::try_push)). An item heavier
    /// than the whole capacity is refused at once.
    pub(crate) async fn push(&self, item: T) -> Result<usize, (PushError, T)> {
        let mut item = match self.try_push(item) {
            Err((PushError::Full, back)) if self.blocking && self.fits_at_all(&back) => back,
            other => return other,
        };
        loop {
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            match self.try_push(item) {
                Err((PushError::Full, back)) if self.blocking && self.fits_at_all(&back) => {
                    item = back;
                }
                other => return other,
            }
            space.await;
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Items queued.
    pub(crate) fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .items
            .len()
    }

    /// The queue's size in the weighing unit.
    pub(crate) fn size(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).used
    }

    /// Adds `item` unless it does not fit or the queue is closed; returns
    /// the new size in the sizer's unit.
    pub(crate) fn try_push(&self, item: T) -> Result<usize, (PushError, T)> {
        let weight = (self.weigh)(&item);
        let bytes = (self.bytes)(&item);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.closed {
            return Err((PushError::Closed, item));
        }
        if state.used.saturating_add(weight) > self.capacity {
            return Err((PushError::Full, item));
        }
        if state.held > 0 && state.held.saturating_add(bytes) > self.byte_limit {
            return Err((PushError::Full, item));
        }
        state.items.push_back((item, weight));
        state.used += weight;
        state.held += bytes;
        self.held.store(state.held, Ordering::Relaxed);
        let used = state.used;
        drop(state);
        self.available.notify_one();
        Ok(used)
    }

    /// Takes the oldest item with the size left behind (in the sizer's
    /// unit), waiting while the queue is empty; `None` once it is closed and
    /// empty.
    pub(crate) async fn pop(&self) -> Option<(T, usize)> {
        loop {
            // Registered before looking, so a push or close between the
            // look and the wait still wakes this consumer.
            let notified = self.available.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((item, weight)) = state.items.pop_front() {
                    state.used -= weight;
                    let left = state.used;
                    let more = !state.items.is_empty();
                    drop(state);
                    if more {
                        // Pass the wake-up on: another consumer may be idle.
                        self.available.notify_one();
                    }
                    if self.blocking {
                        self.space.notify_waiters();
                    }
                    return Some((item, left));
                }
                if state.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Refuses further pushes; consumers drain what is left, then get `None`.
    pub(crate) fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.available.notify_waiters();
        self.space.notify_waiters();
    }

    /// Removes everything still queued (after the consumers stopped).
    pub(crate) fn take_all(&self) -> Vec<T> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.used = 0;
        state.held = 0;
        self.held.store(0, Ordering::Relaxed);
        state.items.drain(..).map(|(item, _)| item).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_weighted_queue_counts_weights_not_items() {
        let queue: BoundedQueue<usize> = BoundedQueue::weighted(10, |n| *n);
        assert_eq!(queue.try_push(4).unwrap(), 4);
        assert_eq!(queue.try_push(6).unwrap(), 10);
        assert_eq!(queue.try_push(1).unwrap_err().0, PushError::Full);
        assert_eq!(queue.len(), 2);
        let heavy: BoundedQueue<usize> = BoundedQueue::weighted(10, |n| *n);
        assert_eq!(heavy.try_push(11).unwrap_err().0, PushError::Full);
    }

    #[tokio::test]
    async fn the_byte_limit_counts_popped_items_until_they_are_released() {
        let queue: BoundedQueue<usize> =
            BoundedQueue::weighted(100, |_| 1).with_byte_limit(10, |n| *n);
        assert_eq!(queue.byte_limit(), 10);
        queue.try_push(6).unwrap();
        assert_eq!(queue.try_push(5).unwrap_err().0, PushError::Full);
        queue.try_push(4).unwrap();
        assert_eq!(queue.held_bytes(), 10);
        // Popped but not released: still held, still refused.
        assert_eq!(queue.pop().await, Some((6, 1)));
        assert_eq!(queue.held_bytes(), 10);
        assert_eq!(queue.try_push(1).unwrap_err().0, PushError::Full);
        queue.release(6);
        assert_eq!(queue.held_bytes(), 4);
        queue.try_push(6).unwrap();
        // An item above the limit goes through alone, never beside others.
        let big: BoundedQueue<usize> =
            BoundedQueue::weighted(100, |_| 1).with_byte_limit(10, |n| *n);
        big.try_push(25).unwrap();
        assert_eq!(big.try_push(1).unwrap_err().0, PushError::Full);
        assert_eq!(big.pop().await, Some((25, 0)));
        big.release(25);
        big.try_push(1).unwrap();
    }

    #[tokio::test]
    async fn a_blocking_push_waits_for_bytes_to_be_released() {
        let queue: Arc<BoundedQueue<usize>> = Arc::new(
            BoundedQueue::weighted(100, |_| 1)
                .with_byte_limit(10, |n| *n)
                .blocking(),
        );
        queue.try_push(8).unwrap();
        assert_eq!(queue.pop().await, Some((8, 0)));
        let waiting = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.push(5).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "8 bytes in flight: no room for 5");
        queue.release(8);
        let pushed = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken by the release")
            .unwrap();
        assert_eq!(pushed, Ok(1));
        assert_eq!(queue.held_bytes(), 5);
    }

    #[tokio::test]
    async fn popping_frees_the_weight() {
        let queue: BoundedQueue<usize> = BoundedQueue::weighted(10, |n| *n);
        queue.try_push(7).unwrap();
        assert_eq!(queue.try_push(5).unwrap_err().0, PushError::Full);
        assert_eq!(queue.pop().await, Some((7, 0)));
        assert_eq!(queue.try_push(5).unwrap(), 5);
        queue.close();
        assert_eq!(queue.take_all(), vec![5]);
    }

    #[test]
    fn refuses_when_full_or_closed() {
        let queue = BoundedQueue::new(2);
        assert_eq!(queue.try_push(1), Ok(1));
        assert_eq!(queue.try_push(2), Ok(2));
        assert_eq!(queue.try_push(3), Err((PushError::Full, 3)));
        queue.close();
        assert_eq!(queue.try_push(4), Err((PushError::Closed, 4)));
        assert_eq!(queue.take_all(), vec![1, 2]);
    }

    #[tokio::test]
    async fn consumers_drain_then_see_the_close() {
        let queue = Arc::new(BoundedQueue::new(100));
        let mut consumers = Vec::new();
        for _ in 0..4 {
            let queue = queue.clone();
            consumers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some((item, _)) = queue.pop().await {
                    got.push(item);
                    tokio::task::yield_now().await;
                }
                got
            }));
        }
        for i in 0..100 {
            queue.try_push(i).unwrap();
            if i % 7 == 0 {
                tokio::task::yield_now().await;
            }
        }
        queue.close();
        let mut all = Vec::new();
        for consumer in consumers {
            all.extend(
                tokio::time::timeout(Duration::from_secs(5), consumer)
                    .await
                    .expect("consumers finish after close")
                    .unwrap(),
            );
        }
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_blocking_push_waits_for_room_and_ends_on_close() {
        let queue = Arc::new(BoundedQueue::new(2).blocking());
        queue.try_push(1).unwrap();
        queue.try_push(2).unwrap();
        let waiting = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.push(3).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "waits while full");
        assert_eq!(queue.pop().await, Some((1, 1)));
        let pushed = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken by the pop")
            .unwrap();
        assert_eq!(pushed, Ok(2));
        let closed = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.push(4).await })
        };
        tokio::task::yield_now().await;
        queue.close();
        let result = tokio::time::timeout(Duration::from_secs(5), closed)
            .await
            .expect("woken by the close")
            .unwrap();
        assert_eq!(result, Err((PushError::Closed, 4)));
        // Not blocking: refused at once.
        let refusing = BoundedQueue::new(1);
        refusing.try_push(1).unwrap();
        assert_eq!(refusing.push(2).await, Err((PushError::Full, 2)));
    }

    #[tokio::test]
    async fn an_idle_consumer_wakes_for_a_push() {
        let queue = Arc::new(BoundedQueue::new(1));
        let consumer = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.pop().await })
        };
        tokio::task::yield_now().await;
        queue.try_push("batch").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), consumer)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(got, Some(("batch", 0)));
    }
}
