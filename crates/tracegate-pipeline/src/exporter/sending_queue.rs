//! An exporter's sending queue: in memory ([`BoundedQueue`]) or, with
//! `sending_queue.storage`, on disk ([`PersistentQueue`]), behind one set
//! of calls so that the consumers and the retry loop in `handle.rs` do not
//! care which.

use std::sync::Arc;

use tracegate_model::SpanBatch;

use super::delivery::{QueueConfig, Sizer};
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
        let queue = BoundedQueue::weighted(config.queue_size.max(1), weigh);
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
            SendingQueue::Memory(q) => q
                .pop()
                .await
                .map(|(batch, left)| (Item { batch, seq: None }, left)),
            SendingQueue::Persistent(q) => q.pop().await.map(|(taken, left)| {
                (
                    Item {
                        batch: taken.batch,
                        seq: Some(taken.seq),
                    },
                    left,
                )
            }),
        }
    }

    /// `item` was sent or dropped for good (and counted).
    pub(crate) fn done(&self, item: &Item) {
        if let (SendingQueue::Persistent(q), Some(seq)) = (self, item.seq) {
            q.ack(seq);
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
