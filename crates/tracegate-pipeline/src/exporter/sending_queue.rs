//! An exporter's sending queue: in memory ([`BoundedQueue`]) or, with
//! `sending_queue.storage`, on disk ([`PersistentQueue`]), behind one set
//! of calls so that the consumers and the retry loop in `handle.rs` do not
//! care which.

use std::sync::Arc;

use tracegate_model::SpanBatch;

use super::delivery::{QueueConfig, Sizer, DEFAULT_QUEUE_BYTES};
use super::persistent::PersistentQueue;
use super::queue::{BoundedQueue, PushError};
use crate::file_storage::Storages;

pub(crate) enum SendingQueue {
    Memory(BoundedQueue<Arc<SpanBatch>>),
    Persistent(PersistentQueue),
}

/// A batch a consumer took; hand it back to [`SendingQueue::done`] once it
/// was sent or dropped for good.
pub(crate) struct Item {
    pub(crate) batch: Arc<SpanBatch>,
    /// Its sequence number in the persistent queue's log.
    seq: Option<u64>,
    /// The bytes a memory queue counts as held for it until it is done.
    pub(crate) held: usize,
}

/// What the queue still held at the end of a shutdown.
pub(crate) enum Leftover {
    /// Spans of a memory queue: lost.
    Dropped(u64),
    /// Batches and spans of a persistent queue: on disk for the next start.
    Stored(usize, u64),
}

impl SendingQueue {
    /// The queue `config` describes: `None` when it is disabled. The error
    /// (an unknown storage, a log that cannot be opened) is for the user.
    pub(crate) fn new(
        exporter: &str,
        config: &QueueConfig,
        storages: &Storages,
    ) -> Result<Option<SendingQueue>, String> {
        if !config.enabled {
            return Ok(None);
        }
        let capacity = config.queue_size.max(1);
        if let Some(id) = &config.storage {
            let storage = storages
                .get(id)
                .map_err(|e| format!("sending_queue.storage: {e}"))?;
            let queue = PersistentQueue::open(
                exporter,
                storage,
                capacity,
                config.sizer,
                config.block_on_overflow,
            )?;
            return Ok(Some(SendingQueue::Persistent(queue)));
        }
        Ok(Some(SendingQueue::memory(config)))
    }

    pub(crate) fn memory(config: &QueueConfig) -> SendingQueue {
        let weigh: fn(&Arc<SpanBatch>) -> usize = match config.sizer {
            Sizer::Requests => |_| 1,
            Sizer::Items => |b| b.len(),
            Sizer::Bytes => |b| b.encoded_len(),
        };
        // Bounded in bytes too, whatever the sizer: `queue_size` itself
        // with `sizer: bytes`, else the default (docs/configuration.md).
        let byte_limit = match config.sizer {
            Sizer::Bytes => config.queue_size.max(1),
            Sizer::Requests | Sizer::Items => DEFAULT_QUEUE_BYTES,
        };
        let queue = BoundedQueue::weighted(config.queue_size.max(1), weigh)
            .with_byte_limit(byte_limit, |b| b.encoded_len());
        SendingQueue::Memory(if config.block_on_overflow {
            queue.blocking()
        } else {
            queue
        })
    }

    pub(crate) fn capacity(&self) -> usize {
        match self {
            SendingQueue::Memory(q) => q.capacity(),
            SendingQueue::Persistent(q) => q.capacity(),
        }
    }

    /// How far a memory queue is into its byte limit: (bytes held, queued
    /// or in flight; the limit). `None` for a persistent queue, whose
    /// memory is bounded apart from its size.
    pub(crate) fn bytes_held(&self) -> Option<(usize, usize)> {
        match self {
            SendingQueue::Memory(q) => Some((q.held_bytes(), q.byte_limit())),
            SendingQueue::Persistent(_) => None,
        }
    }

    /// Batches waiting.
    pub(crate) fn len(&self) -> usize {
        match self {
            SendingQueue::Memory(q) => q.len(),
            SendingQueue::Persistent(q) => q.len(),
        }
    }

    /// The size in the sizer's unit, as `exporter_queue_size` reports it.
    pub(crate) fn size(&self) -> usize {
        match self {
            SendingQueue::Memory(q) => q.size(),
            SendingQueue::Persistent(q) => q.size(),
        }
    }

    /// Queues without waiting; a persistent queue cannot (its write is
    /// waited for), so it refuses as full: use [`push`](Self::push).
    pub(crate) fn try_push(&self, batch: Arc<SpanBatch>) -> Result<usize, PushError> {
        match self {
            SendingQueue::Memory(q) => q.try_push(batch).map_err(|(e, _)| e),
            SendingQueue::Persistent(_) => Err(PushError::Full),
        }
    }

    /// Queues `batch`: at once in memory, once written to disk for a
    /// persistent queue; with `block_on_overflow`, waits for room. Returns
    /// the queue's size in the sizer's unit.
    pub(crate) async fn push(&self, batch: Arc<SpanBatch>) -> Result<usize, PushError> {
        match self {
            SendingQueue::Memory(q) => q.push(batch).await.map_err(|(e, _)| e),
            SendingQueue::Persistent(q) => q.push(batch).await,
        }
    }

    pub(crate) async fn pop(&self) -> Option<(Item, usize)> {
        match self {
            SendingQueue::Memory(q) => q.pop().await.map(|(batch, left)| {
                let held = batch.encoded_len();
                (
                    Item {
                        batch,
                        seq: None,
                        held,
                    },
                    left,
                )
            }),
            SendingQueue::Persistent(q) => q.pop().await.map(|(taken, left)| {
                (
                    Item {
                        batch: taken.batch,
                        seq: Some(taken.seq),
                        held: 0,
                    },
                    left,
                )
            }),
        }
    }

    /// Part of `item` was delivered and `remaining` is what is still owed:
    /// the retry loop goes on with `remaining`, and a persistent queue
    /// stores it in place of the batch (see [`PersistentQueue::replace`]),
    /// so that a restart sends only what is owed. If it cannot be stored,
    /// the whole batch stays stored: nothing is lost, and a restart would
    /// send its delivered part again.
    pub(crate) async fn replace(&self, item: &mut Item, remaining: Arc<SpanBatch>) {
        if let (SendingQueue::Persistent(q), Some(seq)) = (self, item.seq) {
            if let Some(new) = q.replace(seq, remaining.clone()).await {
                item.seq = Some(new);
            }
        }
        item.batch = remaining;
    }

    /// `item` was sent or dropped for good (and counted).
    pub(crate) fn done(&self, item: &Item) {
        match (self, item.seq) {
            (SendingQueue::Persistent(q), Some(seq)) => q.ack(seq),
            (SendingQueue::Memory(q), _) => q.release(item.held),
            _ => {}
        }
    }

    /// Whether what is not sent by the end of a shutdown stays on disk
    /// (and so is not lost).
    pub(crate) fn is_persistent(&self) -> bool {
        matches!(self, SendingQueue::Persistent(_))
    }

    pub(crate) fn close(&self) {
        match self {
            SendingQueue::Memory(q) => q.close(),
            SendingQueue::Persistent(q) => q.close(),
        }
    }

    /// After the consumers stopped: what is left.
    pub(crate) async fn finish(&self) -> Leftover {
        match self {
            SendingQueue::Memory(q) => {
                Leftover::Dropped(q.take_all().iter().map(|b| b.len() as u64).sum())
            }
            SendingQueue::Persistent(q) => {
                let (batches, spans) = q.finish().await;
                Leftover::Stored(batches, spans)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every memory queue is bounded in bytes: by default 128 MiB, with
    /// `sizer: bytes` its own `queue_size` (docs/configuration.md, "Export
    /// memory").
    #[test]
    fn memory_queues_have_a_byte_limit_by_default() {
        let default = SendingQueue::memory(&QueueConfig::default());
        assert_eq!(default.bytes_held(), Some((0, DEFAULT_QUEUE_BYTES)));
        assert_eq!(DEFAULT_QUEUE_BYTES, 128 << 20);
        let items = SendingQueue::memory(&QueueConfig {
            sizer: Sizer::Items,
            queue_size: 5000,
            ..QueueConfig::default()
        });
        assert_eq!(items.bytes_held(), Some((0, DEFAULT_QUEUE_BYTES)));
        let bytes = SendingQueue::memory(&QueueConfig {
            sizer: Sizer::Bytes,
            queue_size: 1 << 20,
            ..QueueConfig::default()
        });
        assert_eq!(bytes.bytes_held(), Some((0, 1 << 20)));
    }
}
