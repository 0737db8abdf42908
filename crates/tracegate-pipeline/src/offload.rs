//! CPU-heavy work on one large request or batch leaves the async workers.
//!
//! A worker thread serves many connections: while it inflates a 4 MiB
//! body or parses a megabyte of JSON, every other request it holds waits.
//! Work on inputs at least a threshold large runs on tokio's blocking pool
//! instead; smaller inputs stay on the worker, where a hop to another
//! thread would cost more than the work.

/// Compressed bodies of at least this many bytes are decompressed on the
/// blocking pool (about 1–2 MiB of OTLP once inflated, a millisecond or
/// more of work).
pub(crate) const COMPRESSED_BYTES: usize = 256 * 1024;

/// Text (JSON) bodies of at least this many bytes are parsed on the
/// blocking pool, as are binary bodies converted to OTLP (Zipkin proto3
/// through owned messages, Jaeger thrift written directly): both cost
/// several times a protobuf scan per byte.
pub(crate) const DECODE_BYTES: usize = 64 * 1024;

/// Batches of at least this many encoded bytes are encoded for a file on
/// the blocking pool.
pub(crate) const ENCODE_BYTES: usize = 256 * 1024;

/// Runs `work` here when `size` is under `threshold`, else on the blocking
/// pool. A task that panicked (a bug) comes back as `Err` with its
/// message, for the caller to answer as an internal error.
pub(crate) async fn by_size<T, F>(size: usize, threshold: usize, work: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if size < threshold {
        return Ok(work());
    }
    run(work).await
}

/// Runs `work` on the blocking pool, for a caller that has already decided
/// it is large (and had to prepare owned inputs for it).
pub(crate) async fn run<T, F>(work: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("the task failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_work_stays_on_the_worker_and_large_work_leaves_it() {
        let here = std::thread::current().id();
        let same_thread = move || std::thread::current().id() == here;
        assert_eq!(by_size(10, 11, same_thread).await, Ok(true));
        assert_eq!(by_size(11, 11, same_thread).await, Ok(false));
    }

    #[tokio::test]
    async fn a_panic_comes_back_as_an_error() {
        let got = by_size(1, 0, || -> u8 { panic!("bug") }).await;
        assert!(got.unwrap_err().contains("panicked"));
    }
}
