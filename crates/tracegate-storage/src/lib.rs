//! tracegate's on-disk store: an append-only log of records, split into
//! segment files, with a checksum per record, out-of-order
//! acknowledgements, and a lock that keeps a second process out of its
//! directory. The persistent sending queue keeps one log per exporter; the
//! tail-sampling journal is meant to keep its own on the same primitive.
//! docs/architecture.md ("The storage log") says why a log and not an
//! embedded key-value store, with the measurements.
//!
//! # Using it
//!
//! [`Log::open`] locks the directory, replays every record not yet
//! acknowledged through a callback (in sequence order, with its
//! [`Position`]), and returns the log with an [`OpenReport`] that counts
//! what was damaged and skipped. Then:
//!
//! - [`Log::append`] / [`Log::append_batch`] write records (each one or
//!   more byte slices, written as one) and return their positions; the
//!   fsync policy ([`Fsync`]) decides when they reach the disk;
//! - [`Log::read`] reads a record back by position, checking its checksum;
//! - [`Log::ack`] marks sequence numbers done, in any order; a segment whose
//!   records are all acknowledged is deleted or its file kept for reuse
//!   (compaction; [`LogOptions::recycle_segments`]), and [`Log::compact`]
//!   does the same on demand;
//! - [`Log::size_on_disk`] is bounded by [`LogOptions::max_bytes`]:
//!   appends past it are refused with [`AppendError::Full`].
//!
//! The log does no I/O of its own in the background and starts no thread:
//! a user that wants [`Fsync::Interval`] honoured while idle calls
//! [`Log::sync_if_due`] from its own timer. Every method is blocking file
//! I/O; async callers run it on a thread of their own.
//!
//! # On disk
//!
//! ```text
//! <dir>/LOCK                    flock(2)ed while open; holds "pid <n>"
//! <dir>/<base:020>.seg          segments, named by their first sequence number
//! <dir>/<base:020>.free         segment files kept for reuse, by their old base
//! <dir>/acks                    acknowledged ranges
//! ```
//!
//! A segment starts with a 16-byte header (`TGLOGv02` and its base sequence
//! number, little-endian) followed by records. A record is framed as
//! `len: u32 LE`, `crc: u32 LE`, then `len` payload bytes, where `crc` is
//! CRC-32C over the record's sequence number (`u64 LE`, not stored), the
//! four length bytes and the payload, so a damaged length is caught like a
//! damaged payload, and a record is valid only at its own place. Sequence
//! numbers are implicit: the segment's base plus the record's index in it.
//! The records are followed by an end marker, `len` `0xffff_ffff` and the
//! CRC-32C of the next sequence number and those length bytes; each write
//! ends with one and the next write starts over it. A file kept for reuse
//! becomes a new segment by writing its header and an end marker over its
//! start and renaming it; what its earlier life left after the marker
//! fails every check (other sequence numbers) and is never read as
//! records. The `acks` file (`TGACKv02`) holds records of the same
//! framing, numbered from 0 in the file, whose payload is a range `start:
//! u64 LE, end: u64 LE` (end exclusive) of acknowledged sequence numbers;
//! it is rewritten as the union of its ranges when it grows.
//!
//! # Damage
//!
//! Opening checks every record that is not yet acknowledged. The end
//! marker or the end of the file ends a segment's records; a record that
//! is cut short or fails its checksum before either ends what can be
//! trusted of its segment: in the last segment (the torn write of a crash) the file is
//! truncated there and appending goes on from there; in an earlier one the
//! rest of that segment is skipped, and since the next segment's name says
//! where it starts, the number of records lost is known exactly. Either
//! way the loss is reported in [`OpenReport::damage`], never a panic, and
//! everything before the damage is kept. A record that fails its checksum
//! when read later is reported by [`Log::read`] as [`ReadError::Corrupt`].
#![forbid(unsafe_code)]

mod frame;
mod lock;
mod log;
mod ranges;
#[cfg(test)]
mod tests;

pub use lock::{DirLock, LockError};
pub use log::{
    AppendError, Damage, Fsync, Log, LogOptions, LogStats, OpenError, OpenReport, Position,
    ReadError,
};
