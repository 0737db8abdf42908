//! The segment log itself; the format is in the crate docs.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::frame::{self, Parsed, HEADER, MAX_RECORD};
use crate::lock::{DirLock, LockError};
use crate::ranges::RangeSet;

const SEGMENT_MAGIC: &[u8; 8] = b"TGLOGv02";
const ACKS_MAGIC: &[u8; 8] = b"TGACKv02";
/// Bytes before a segment's first record (and an acks file's).
const FILE_HEADER: u64 = 16;
/// What a segment begins with: its header and the end marker after no
/// records.
const SEGMENT_START: u64 = FILE_HEADER + HEADER as u64;
const SEGMENT_SUFFIX: &str = ".seg";
/// A segment file kept for reuse, named by the base it had.
const FREE_SUFFIX: &str = ".free";
/// `pwritev(2)` takes at most this many slices.
const MAX_IOVECS: usize = 1024;
const ACKS_FILE: &str = "acks";
const ACKS_TMP: &str = "acks.tmp";
/// The acks file is rewritten once it holds this many records more than
/// its ranges would need.
const ACKS_REWRITE_SLACK: u64 = 4096;

/// When appended data is forced to the disk. A process that is killed
/// (SIGKILL, OOM) loses nothing it wrote under any policy, since written
/// data sits in the kernel's page cache; the policy bounds what a crash of
/// the machine itself (power, kernel) can lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fsync {
    /// After every append (one `fdatasync` per [`Log::append_batch`]).
    Always,
    /// At most this long after an append, on the next append or
    /// [`Log::sync_if_due`].
    Interval(Duration),
    /// Left to the operating system's writeback; synced only on close.
    #[default]
    Never,
}

/// How a log is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// A segment is closed and a new one begun once it would grow past
    /// this; a single larger record gets a segment of its own. Default
    /// 8 MiB.
    pub segment_bytes: u64,
    /// Appends that would take [`Log::size_on_disk`] past this are refused
    /// ([`AppendError::Full`]). `None`: unbounded. Default `None`.
    pub max_bytes: Option<u64>,
    pub fsync: Fsync,
    /// How long to wait for another holder of the directory lock. Default 1 s.
    pub lock_timeout: Duration,
    /// Permissions for the directory if `open` creates it (Unix mode bits,
    /// less the umask). Default `0o750`.
    pub dir_mode: u32,
    /// Segment files whose records are all acknowledged are kept, up to
    /// this many, and reused for new segments instead of deleting them
    /// and creating new files: overwriting pages the kernel already holds
    /// costs less than freeing them and allocating new ones. They count in
    /// [`Log::size_on_disk`]; with [`max_bytes`](Self::max_bytes) set, they
    /// take at most a 32nd of it, are kept only while the log holds at
    /// most half of it, and are deleted as soon as an append would take it
    /// past that. `0`: delete them. Default 4.
    pub recycle_segments: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: 8 << 20,
            max_bytes: None,
            fsync: Fsync::Never,
            lock_timeout: Duration::from_secs(1),
            dir_mode: 0o750,
            recycle_segments: 4,
        }
    }
}

/// Where a record is: its sequence number and where its frame lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// The record's sequence number: 0 for a new log's first record, one
    /// more for each record after it.
    pub seq: u64,
    segment: u64,
    offset: u64,
    len: u32,
}

impl Position {
    /// Bytes of the record's payload.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the record takes on disk, framing included.
    pub fn framed_len(&self) -> u64 {
        HEADER as u64 + u64::from(self.len)
    }
}

/// Damage found while opening: records that could not be trusted and were
/// skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The damaged file.
    pub file: PathBuf,
    /// Where in it the damage starts.
    pub offset: u64,
    /// Records lost: exact for a segment followed by another (its
    /// successor's name says how many it held), at least 1 for the last
    /// segment's torn tail.
    pub records: u64,
    /// Bytes skipped (or truncated away).
    pub bytes: u64,
    pub what: &'static str,
}

/// What [`Log::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Segment files kept.
    pub segments: usize,
    /// Records replayed: stored and not yet acknowledged.
    pub records: u64,
    /// Bytes of their payloads.
    pub payload_bytes: u64,
    /// Segments deleted because every record in them was acknowledged.
    pub compacted_segments: usize,
    /// Everything skipped as damaged, in file order.
    pub damage: Vec<Damage>,
    /// Acknowledgement records that were damaged and ignored: their
    /// records are replayed again (at-least-once), none is lost.
    pub damaged_acks: u64,
    /// Bytes read and checked.
    pub bytes_read: u64,
    pub elapsed: Duration,
}

impl OpenReport {
    pub fn damaged_records(&self) -> u64 {
        self.damage.iter().map(|d| d.records).sum()
    }

    pub fn damaged_bytes(&self) -> u64 {
        self.damage.iter().map(|d| d.bytes).sum()
    }
}

/// Counters since the log was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    pub appended_records: u64,
    /// Bytes written for them, framing included.
    pub appended_bytes: u64,
    /// `fdatasync`/`fsync` calls on files and the directory.
    pub syncs: u64,
    /// Records found damaged by [`Log::read`].
    pub damaged_reads: u64,
    /// Segment files deleted.
    pub deleted_segments: u64,
    /// Segments begun in a recycled file.
    pub recycled_segments: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("storage {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("storage is full: {size} of {limit} bytes used")]
    Full { size: u64, limit: u64 },
    #[error("a record of {0} bytes is larger than the 1 GiB a record may be")]
    TooLarge(usize),
    #[error("storage write failed: {0}")]
    Io(#[from] io::Error),
    #[error("storage is unusable after an earlier write failed and could not be undone")]
    Failed,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("record {0} is no longer stored")]
    Gone(u64),
    #[error("record {seq} is damaged: {what}")]
    Corrupt { seq: u64, what: &'static str },
    #[error("storage read failed: {0}")]
    Io(#[from] io::Error),
}

/// The segment being appended to.
struct Active {
    /// Open for writing at explicit offsets.
    file: File,
    base: u64,
    /// Where its records end: the next record (and the end marker) goes
    /// here.
    size: u64,
    /// Bytes in the file: more than `size` by the end marker, and in a
    /// recycled file by what its earlier life left after that.
    len: u64,
    next_seq: u64,
    /// Written since the last sync.
    dirty: bool,
    last_sync: Instant,
}

struct Segment {
    /// A handle for reads, shared with readers in flight.
    file: Arc<File>,
    /// Bytes of the file on disk.
    size: u64,
}

/// A segment file kept for reuse.
struct Free {
    path: PathBuf,
    size: u64,
}

struct Acks {
    file: File,
    set: RangeSet,
    /// Records in the file.
    records: u64,
    size: u64,
    dirty: bool,
}

/// An open log; see the crate docs. All methods take `&self` and may be
/// called from several threads.
pub struct Log {
    dir: PathBuf,
    options: LogOptions,
    // Lock order: active → acks → segments → free.
    active: Mutex<Active>,
    acks: Mutex<Acks>,
    /// Every segment file, by base sequence number; the last is the active one.
    segments: Mutex<BTreeMap<u64, Segment>>,
    /// Segment files kept for reuse, the most recently freed last.
    free: Mutex<Vec<Free>>,
    /// With [`Fsync::Never`]: the base sequence numbers of segments closed
    /// with records never synced, and whether segment files were created
    /// since the directory was last synced; [`Log::sync`] settles both.
    unsynced: Mutex<(Vec<u64>, bool)>,
    size: AtomicU64,
    failed: AtomicBool,
    appended_records: AtomicU64,
    appended_bytes: AtomicU64,
    syncs: AtomicU64,
    damaged_reads: AtomicU64,
    deleted_segments: AtomicU64,
    recycled_segments: AtomicU64,
    _lock: DirLock,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("size", &self.size_on_disk())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn segment_name(base: u64) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

fn free_name(base: u64) -> String {
    format!("{base:020}{FREE_SUFFIX}")
}

/// A segment's header and the end marker after no records.
fn segment_start(base: u64) -> [u8; SEGMENT_START as usize] {
    let mut start = [0u8; SEGMENT_START as usize];
    start[..8].copy_from_slice(SEGMENT_MAGIC);
    start[8..16].copy_from_slice(&base.to_le_bytes());
    start[16..].copy_from_slice(&frame::end_marker(base));
    start
}

fn acks_header() -> [u8; FILE_HEADER as usize] {
    let mut header = [0u8; FILE_HEADER as usize];
    header[..8].copy_from_slice(ACKS_MAGIC);
    header
}

fn ack_payload(range: &Range<u64>) -> [u8; 16] {
    let mut payload = [0u8; 16];
    payload[..8].copy_from_slice(&range.start.to_le_bytes());
    payload[8..].copy_from_slice(&range.end.to_le_bytes());
    payload
}

impl Log {
    /// Opens (creating it if needed) the log in `dir`: locks the directory,
    /// then calls `replay` with every stored record not yet acknowledged,
    /// in sequence order, and reports what it found. Damage is skipped and
    /// reported, never an error; errors are a lock held elsewhere or I/O
    /// failing.
    pub fn open(
        dir: &Path,
        options: LogOptions,
        mut replay: impl FnMut(Position, &[u8]),
    ) -> Result<(Log, OpenReport), OpenError> {
        let started = Instant::now();
        let io_at = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OpenError::Io { path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(options.dir_mode)
            .create(dir)
            .map_err(io_at(dir))?;
        let dir_lock = DirLock::acquire(dir, options.lock_timeout)?;
        let mut report = OpenReport::default();
        let mut syncs = 0;

        // Acknowledgements first: they say what not to replay.
        let _ = std::fs::remove_file(dir.join(ACKS_TMP));
        let acks_path = dir.join(ACKS_FILE);
        let (mut set, ack_records, damaged_acks) =
            read_acks(&acks_path).map_err(io_at(&acks_path))?;
        report.damaged_acks = damaged_acks;

        let mut bases = Vec::new();
        let mut free = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_at(dir))? {
            let entry = entry.map_err(io_at(dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let (digits, is_free) = match name.strip_suffix(SEGMENT_SUFFIX) {
                Some(digits) => (digits, false),
                None => match name.strip_suffix(FREE_SUFFIX) {
                    Some(digits) => (digits, true),
                    None => continue,
                },
            };
            if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(base) = digits.parse::<u64>() {
                    if is_free {
                        let path = entry.path();
                        let size = entry.metadata().map_err(io_at(&path))?.len();
                        free.push((base, Free { path, size }));
                    } else {
                        bases.push(base);
                    }
                }
            }
        }
        bases.sort_unstable();
        // Reused most recently freed first (the likeliest to be cached).
        free.sort_unstable_by_key(|(base, _)| *base);
        let mut free: Vec<Free> = free.into_iter().map(|(_, f)| f).collect();
        while free.len() > options.recycle_segments {
            let f = free.remove(0);
            std::fs::remove_file(&f.path).map_err(io_at(&f.path))?;
        }
        let mut total_size: u64 = free.iter().map(|f| f.size).sum();

        let floor = set.first_gap(0);
        let mut segments = BTreeMap::new();
        let mut next_seq = floor.max(set.max_end());
        let mut lost_acks: Vec<Range<u64>> = Vec::new();
        // The sequence number after the last segment's last record.
        let mut last_end = next_seq;
        // Where the last segment's records end in its file.
        let mut last_records_end = SEGMENT_START;
        for (i, &base) in bases.iter().enumerate() {
            let path = dir.join(segment_name(base));
            let next_base = bases.get(i + 1).copied();
            let is_last = next_base.is_none();
            if let Some(next) = next_base {
                if next <= floor || set.covers(base..next) {
                    std::fs::remove_file(&path).map_err(io_at(&path))?;
                    report.compacted_segments += 1;
                    continue;
                }
            }
            let data = std::fs::read(&path).map_err(io_at(&path))?;
            report.bytes_read += data.len() as u64;
            // Bytes of the file kept: all of it unless damage is cut
            // away. What follows the end of its records is an end marker
            // and, in a recycled file, stale bytes of its earlier life.
            let mut keep_len = data.len() as u64;
            let mut records_end = FILE_HEADER;
            let mut seq = base;
            let header_ok = data.len() >= FILE_HEADER as usize
                && &data[..8] == SEGMENT_MAGIC
                && data[8..16] == base.to_le_bytes();
            if !header_ok {
                if is_last && data.len() < FILE_HEADER as usize {
                    // Created, but the crash came before its header was
                    // written: an empty segment.
                    keep_len = 0;
                } else {
                    let records = match next_base {
                        Some(next) => set.missing(base..next),
                        None => 1,
                    };
                    report.damage.push(Damage {
                        file: path.clone(),
                        offset: 0,
                        records,
                        bytes: data.len() as u64,
                        what: "segment header damaged",
                    });
                    keep_len = 0;
                    if let Some(next) = next_base {
                        lost_acks.push(base..next);
                    }
                }
            } else {
                let mut offset = FILE_HEADER as usize;
                let limit = next_base.map_or(u64::MAX, |n| n - base);
                loop {
                    if seq - base == limit {
                        // Bytes after as many records as the next segment's
                        // name allows belong to no record; nothing is lost.
                        break;
                    }
                    match frame::parse(&data[offset..], seq) {
                        Parsed::Record(payload, framed) => {
                            if !set.contains(seq) {
                                let position = Position {
                                    seq,
                                    segment: base,
                                    offset: offset as u64,
                                    len: payload.len() as u32,
                                };
                                report.records += 1;
                                report.payload_bytes += payload.len() as u64;
                                replay(position, payload);
                            }
                            seq += 1;
                            offset += framed;
                            records_end = offset as u64;
                        }
                        Parsed::End => {
                            // Fewer records than the next segment's name
                            // says: those acknowledged were in segments
                            // since deleted; the others never reached the
                            // disk.
                            if let Some(next) = next_base {
                                let records = set.missing(seq..next);
                                if records > 0 {
                                    report.damage.push(Damage {
                                        file: path.clone(),
                                        offset: offset as u64,
                                        records,
                                        bytes: 0,
                                        what: "segment ends early",
                                    });
                                    lost_acks.push(seq..next);
                                }
                            }
                            break;
                        }
                        Parsed::Damaged(what) => {
                            let records = match next_base {
                                Some(next) => set.missing(seq..next),
                                None => 1,
                            };
                            // Damage in an earlier segment whose records
                            // were all counted lost (so acknowledged) at an
                            // earlier open is not reported again.
                            if records > 0 {
                                report.damage.push(Damage {
                                    file: path.clone(),
                                    offset: offset as u64,
                                    records,
                                    bytes: (data.len() - offset) as u64,
                                    what,
                                });
                            }
                            if let Some(next) = next_base {
                                lost_acks.push(seq..next);
                            }
                            keep_len = offset as u64;
                            break;
                        }
                    }
                }
            }
            if is_last {
                last_end = seq;
                last_records_end = records_end;
                next_seq = next_seq.max(seq);
                if keep_len < data.len() as u64 || keep_len < FILE_HEADER {
                    // Cut the torn tail so that appends follow valid data
                    // (and it is not reported again).
                    let file = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io_at(&path))?;
                    if keep_len < FILE_HEADER {
                        file.set_len(0).map_err(io_at(&path))?;
                        (&file)
                            .write_all(&segment_start(base))
                            .map_err(io_at(&path))?;
                        keep_len = SEGMENT_START;
                        last_records_end = FILE_HEADER;
                    } else {
                        file.set_len(keep_len).map_err(io_at(&path))?;
                    }
                    if options.fsync != Fsync::Never {
                        file.sync_data().map_err(io_at(&path))?;
                        syncs += 1;
                    }
                }
            }
            let read = File::open(&path).map_err(io_at(&path))?;
            total_size += keep_len;
            segments.insert(
                base,
                Segment {
                    file: Arc::new(read),
                    size: keep_len,
                },
            );
        }
        report.segments = segments.len();
        if !segments.is_empty() && last_end < next_seq {
            // The numbers between the last record kept and the end of the
            // acknowledgements are not given out again (see below); those
            // not acknowledged were lost with a torn tail, counted above.
            lost_acks.push(last_end..next_seq);
        }

        // Records lost to damage in earlier segments count as acknowledged,
        // so that they are reported once and their segments can go.
        let mut new_acks = lost_acks;
        new_acks.retain(|r| !set.covers(r.clone()));
        for r in &new_acks {
            set.insert(r.clone());
        }

        // The acks file: kept as it is unless it has grown past its ranges
        // or there is something to add.
        let acks_rewrite = damaged_acks > 0 || ack_records > set.len() as u64 + ACKS_REWRITE_SLACK;
        let (acks_file, acks_records, acks_size) = if acks_rewrite || !acks_path.exists() {
            let (file, records, size) =
                write_acks_file(dir, &set, options.fsync).map_err(io_at(&acks_path))?;
            if options.fsync != Fsync::Never {
                syncs += 2;
            }
            (file, records, size)
        } else {
            let file = OpenOptions::new()
                .append(true)
                .open(&acks_path)
                .map_err(io_at(&acks_path))?;
            let size = file.metadata().map_err(io_at(&acks_path))?.len();
            (file, ack_records, size)
        };
        let mut acks = Acks {
            file: acks_file,
            set,
            records: acks_records,
            size: acks_size,
            dirty: false,
        };
        if !new_acks.is_empty() && !acks_rewrite {
            append_acks(&mut acks, &new_acks).map_err(io_at(&acks_path))?;
        }
        total_size += acks.size;

        // The active segment: the last one, or a new one. A new one also
        // when acknowledgements reach past the last record kept (records
        // acknowledged and then lost with a torn tail): their numbers are
        // not given out again, so that nothing new counts as acknowledged.
        let active = match segments.iter().next_back() {
            Some((&base, segment)) if last_end == next_seq => {
                let path = dir.join(segment_name(base));
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_at(&path))?;
                Active {
                    file,
                    base,
                    size: last_records_end,
                    len: segment.size,
                    next_seq,
                    dirty: false,
                    last_sync: Instant::now(),
                }
            }
            _ => {
                let (file, read) =
                    create_segment(dir, next_seq, options.fsync).map_err(io_at(dir))?;
                if options.fsync != Fsync::Never {
                    syncs += 2;
                }
                segments.insert(
                    next_seq,
                    Segment {
                        file: Arc::new(read),
                        size: SEGMENT_START,
                    },
                );
                total_size += SEGMENT_START;
                Active {
                    file,
                    base: next_seq,
                    size: FILE_HEADER,
                    len: SEGMENT_START,
                    next_seq,
                    dirty: false,
                    last_sync: Instant::now(),
                }
            }
        };
        report.elapsed = started.elapsed();
        let log = Log {
            dir: dir.to_path_buf(),
            options,
            active: Mutex::new(active),
            acks: Mutex::new(acks),
            segments: Mutex::new(segments),
            free: Mutex::new(free),
            unsynced: Mutex::new((Vec::new(), false)),
            size: AtomicU64::new(total_size),
            failed: AtomicBool::new(false),
            appended_records: AtomicU64::new(0),
            appended_bytes: AtomicU64::new(0),
            syncs: AtomicU64::new(syncs),
            damaged_reads: AtomicU64::new(0),
            deleted_segments: AtomicU64::new(report.compacted_segments as u64),
            recycled_segments: AtomicU64::new(0),
            _lock: dir_lock,
        };
        if let Some(limit) = log.options.max_bytes {
            log.trim_free(limit / 2);
        }
        // Segments wholly acknowledged (the ones lost to damage included).
        log.compact();
        Ok((log, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> &LogOptions {
        &self.options
    }

    /// Appends one record; see [`append_batch`](Self::append_batch).
    pub fn append(&self, payload: &[u8]) -> Result<Position, AppendError> {
        let mut positions = self.append_batch(&[&[payload]])?;
        Ok(positions.pop().expect("one record"))
    }

    /// Appends records, each given as the byte slices it is made of, with
    /// as few writes as segment boundaries allow and at most one sync (per
    /// the fsync policy) for all of them, and returns their positions in
    /// order. All or nothing: on error none of them will be replayed.
    pub fn append_batch(&self, records: &[&[&[u8]]]) -> Result<Vec<Position>, AppendError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(AppendError::Failed);
        }
        let mut total = 0u64;
        for parts in records {
            let framed = frame::framed_len(parts);
            if framed - HEADER > MAX_RECORD {
                return Err(AppendError::TooLarge(framed - HEADER));
            }
            total += framed as u64;
        }
        let mut active = lock(&self.active);
        if let Some(limit) = self.options.max_bytes {
            let growth = self.growth(&active, records);
            if self.size_on_disk() + growth > limit / 2 {
                // Files kept for reuse give way first.
                self.trim_free((limit / 2).saturating_sub(growth));
            }
            let size = self.size_on_disk();
            if size + growth > limit {
                return Err(AppendError::Full { size, limit });
            }
        }
        let first_seq = active.next_seq;
        let mut positions = Vec::with_capacity(records.len());
        let mut interval_due = false;
        let result = self
            .write_records(&mut active, records, &mut positions)
            .and_then(|()| match self.options.fsync {
                Fsync::Always => Ok(self.sync_active(&mut active)?),
                Fsync::Interval(every) if active.last_sync.elapsed() >= every => {
                    interval_due = true;
                    Ok(self.sync_active(&mut active)?)
                }
                _ => Ok(()),
            });
        if let Err(e) = result {
            // What this call wrote before failing stays in the file (a
            // failed sync leaves all of it); acknowledge it so that it is
            // never replayed.
            let written = active.next_seq;
            if written > first_seq {
                self.ack(first_seq..written);
            }
            return Err(e);
        }
        drop(active);
        if interval_due {
            // Acknowledgements only decide what is replayed twice; a
            // failure to sync them loses nothing.
            let _ = self.sync_acks();
        }
        self.appended_records
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        self.appended_bytes.fetch_add(total, Ordering::Relaxed);
        Ok(positions)
    }

    /// At most how much appending `records` grows the files: their frames
    /// and the start of each segment they begin.
    fn growth(&self, active: &Active, records: &[&[&[u8]]]) -> u64 {
        let mut size = active.size;
        let mut growth = 0;
        for parts in records {
            let framed = frame::framed_len(parts) as u64;
            // As write_records rotates.
            if size > FILE_HEADER && size + framed > self.options.segment_bytes {
                size = FILE_HEADER;
                growth += SEGMENT_START;
            }
            size += framed;
            growth += framed;
        }
        growth
    }

    fn write_records(
        &self,
        active: &mut Active,
        records: &[&[&[u8]]],
        positions: &mut Vec<Position>,
    ) -> Result<(), AppendError> {
        let mut headers: Vec<[u8; HEADER]> = Vec::with_capacity(records.len());
        let mut start = 0;
        let mut chunk_bytes = 0u64;
        for (i, parts) in records.iter().enumerate() {
            let framed = frame::framed_len(parts) as u64;
            if active.size + chunk_bytes > FILE_HEADER
                && active.size + chunk_bytes + framed > self.options.segment_bytes
            {
                self.flush(active, &headers[start..i], &records[start..i], chunk_bytes)?;
                start = i;
                chunk_bytes = 0;
                self.rotate(active)?;
            }
            let seq = active.next_seq + (i - start) as u64;
            headers.push(frame::header(seq, parts));
            positions.push(Position {
                seq,
                segment: active.base,
                offset: active.size + chunk_bytes,
                len: (framed - HEADER as u64) as u32,
            });
            chunk_bytes += framed;
        }
        self.flush(active, &headers[start..], &records[start..], chunk_bytes)
    }

    /// Writes records (their headers and parts, `bytes` in all) and an end
    /// marker after them to the active segment with vectored writes, so
    /// the payloads are not copied here; the next write starts over the
    /// marker. On failure takes the file back to where it was.
    fn flush(
        &self,
        active: &mut Active,
        headers: &[[u8; HEADER]],
        records: &[&[&[u8]]],
        bytes: u64,
    ) -> Result<(), AppendError> {
        if headers.is_empty() {
            return Ok(());
        }
        let marker = frame::end_marker(active.next_seq + headers.len() as u64);
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(records.len() * 3 + 1);
        for (header, parts) in headers.iter().zip(records) {
            slices.push(IoSlice::new(header));
            slices.extend(
                parts
                    .iter()
                    .filter(|p| !p.is_empty())
                    .map(|p| IoSlice::new(p)),
            );
        }
        slices.push(IoSlice::new(&marker));
        let before = active.size;
        let result = write_all_vectored_at(&active.file, &mut slices, before);
        let len = match &result {
            Ok(()) => {
                active.size += bytes;
                active.next_seq += headers.len() as u64;
                active.dirty = true;
                active.len.max(active.size + HEADER as u64)
            }
            // What was written of this call, and the stale bytes after
            // it, go: the file ends where its records do.
            Err(_) => match active.file.set_len(before) {
                Ok(()) => before,
                Err(_) => {
                    self.failed.store(true, Ordering::Release);
                    active.len
                }
            },
        };
        if len > active.len {
            self.size.fetch_add(len - active.len, Ordering::Relaxed);
        } else {
            self.size.fetch_sub(active.len - len, Ordering::Relaxed);
        }
        if len != active.len {
            active.len = len;
            if let Some(segment) = lock(&self.segments).get_mut(&active.base) {
                segment.size = len;
            }
        }
        result.map_err(AppendError::Io)
    }

    /// Closes the active segment and begins a new one at `next_seq`, in a
    /// recycled file if one is kept.
    fn rotate(&self, active: &mut Active) -> Result<(), AppendError> {
        if self.options.fsync != Fsync::Never && active.dirty {
            self.sync_active(active)?;
        }
        let base = active.next_seq;
        let free = lock(&self.free).pop();
        let recycled = free.and_then(|free| self.reuse(free, base));
        let (file, read, len) = match recycled {
            Some(reused) => reused,
            None => {
                let (file, read) = create_segment(&self.dir, base, self.options.fsync)?;
                self.size.fetch_add(SEGMENT_START, Ordering::Relaxed);
                (file, read, SEGMENT_START)
            }
        };
        if self.options.fsync != Fsync::Never {
            self.syncs.fetch_add(2, Ordering::Relaxed);
        } else {
            let mut unsynced = lock(&self.unsynced);
            if active.dirty {
                unsynced.0.push(active.base);
            }
            unsynced.1 = true;
        }
        lock(&self.segments).insert(
            base,
            Segment {
                file: Arc::new(read),
                size: len,
            },
        );
        active.file = file;
        active.base = base;
        active.size = FILE_HEADER;
        active.len = len;
        active.dirty = false;
        Ok(())
    }

    /// Makes a kept file the segment beginning at `base`: its header and
    /// an end marker are written over its start (before it is renamed, so
    /// that a crash leaves either a kept file or a valid empty segment),
    /// and what its earlier life left after them is never read as records
    /// (their checksums bind other sequence numbers). Returns the writing
    /// and reading handles and the file's size, or `None` (the file
    /// deleted) if any step failed.
    fn reuse(&self, free: Free, base: u64) -> Option<(File, File, u64)> {
        let fsync = self.options.fsync != Fsync::Never;
        let path = self.dir.join(segment_name(base));
        let attempt = || -> io::Result<(File, File)> {
            let file = OpenOptions::new().write(true).open(&free.path)?;
            file.write_all_at(&segment_start(base), 0)?;
            if fsync {
                file.sync_data()?;
            }
            std::fs::rename(&free.path, &path)?;
            if fsync {
                File::open(&self.dir)?.sync_all()?;
            }
            let read = File::open(&path)?;
            Ok((file, read))
        };
        match attempt() {
            Ok((file, read)) => {
                let len = free.size.max(SEGMENT_START);
                self.size.fetch_add(len - free.size, Ordering::Relaxed);
                self.recycled_segments.fetch_add(1, Ordering::Relaxed);
                Some((file, read, len))
            }
            Err(_) => {
                // Renamed or not, the file is not used: a new one is
                // created (over it, if it was renamed).
                let _ = std::fs::remove_file(&free.path);
                self.size.fetch_sub(free.size, Ordering::Relaxed);
                self.deleted_segments.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Deletes files kept for reuse, oldest first, until the log takes at
    /// most `target` bytes or none is left.
    fn trim_free(&self, target: u64) {
        let mut free = lock(&self.free);
        while !free.is_empty() && self.size_on_disk() > target {
            let oldest = free.remove(0);
            if std::fs::remove_file(&oldest.path).is_err() {
                free.insert(0, oldest);
                break;
            }
            self.size.fetch_sub(oldest.size, Ordering::Relaxed);
            self.deleted_segments.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn sync_active(&self, active: &mut Active) -> io::Result<()> {
        if active.dirty {
            active.file.sync_data()?;
            self.syncs.fetch_add(1, Ordering::Relaxed);
            active.dirty = false;
        }
        active.last_sync = Instant::now();
        Ok(())
    }

    fn sync_acks(&self) -> io::Result<()> {
        let mut acks = lock(&self.acks);
        if acks.dirty {
            acks.file.sync_data()?;
            self.syncs.fetch_add(1, Ordering::Relaxed);
            acks.dirty = false;
        }
        Ok(())
    }

    /// Forces everything written so far (records and acknowledgements) to
    /// the disk, whatever the policy.
    pub fn sync(&self) -> io::Result<()> {
        self.sync_active(&mut lock(&self.active))?;
        self.sync_closed()?;
        self.sync_acks()
    }

    /// Syncs the segments closed unsynced under [`Fsync::Never`] that are
    /// still on disk, then the directory if segments were created since.
    fn sync_closed(&self) -> io::Result<()> {
        let (closed, created) = std::mem::take(&mut *lock(&self.unsynced));
        for base in closed {
            let file = lock(&self.segments).get(&base).map(|s| s.file.clone());
            // A segment deleted since (wholly acknowledged) needs nothing.
            if let Some(file) = file {
                file.sync_data()?;
                self.syncs.fetch_add(1, Ordering::Relaxed);
            }
        }
        if created {
            File::open(&self.dir)?.sync_all()?;
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Syncs if the policy is [`Fsync::Interval`] and the interval has
    /// passed since the last sync with data written since; for a timer.
    pub fn sync_if_due(&self) -> io::Result<()> {
        let Fsync::Interval(every) = self.options.fsync else {
            return Ok(());
        };
        {
            let mut active = lock(&self.active);
            if active.last_sync.elapsed() < every {
                return Ok(());
            }
            self.sync_active(&mut active)?;
        }
        self.sync_acks()
    }

    /// Reads the record at `position` back, checking its checksum.
    pub fn read(&self, position: Position) -> Result<Vec<u8>, ReadError> {
        let file = lock(&self.segments)
            .get(&position.segment)
            .map(|s| s.file.clone())
            .ok_or(ReadError::Gone(position.seq))?;
        let damaged = |what| {
            self.damaged_reads.fetch_add(1, Ordering::Relaxed);
            ReadError::Corrupt {
                seq: position.seq,
                what,
            }
        };
        let mut header = [0u8; HEADER];
        let mut payload = vec![0u8; position.len()];
        let read = file
            .read_exact_at(&mut header, position.offset)
            .and_then(|()| file.read_exact_at(&mut payload, position.offset + HEADER as u64));
        if let Err(e) = read {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                return Err(damaged("record cut short"));
            }
            return Err(e.into());
        }
        if u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) != position.len {
            return Err(damaged("record length changed"));
        }
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if frame::checksum(position.seq, &header[..4], &payload) != crc {
            return Err(damaged("checksum mismatch"));
        }
        Ok(payload)
    }

    /// Marks `seqs` done. Acknowledging in any order is fine; a segment is
    /// deleted once every record in it is acknowledged. Returns the bytes
    /// freed. The acknowledgement is written at once and synced with the
    /// next sync (a crash of the machine before that replays the records
    /// again: at least once, never lost).
    pub fn ack(&self, seqs: Range<u64>) -> u64 {
        self.ack_many(std::slice::from_ref(&seqs))
    }

    /// [`ack`](Self::ack) for several ranges with one write.
    pub fn ack_many(&self, ranges: &[Range<u64>]) -> u64 {
        {
            let mut acks = lock(&self.acks);
            let mut new: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
            for range in ranges {
                if acks.set.insert(range.clone()) > 0 {
                    new.push(range.clone());
                }
            }
            if new.is_empty() {
                return 0;
            }
            let before = acks.size;
            if append_acks(&mut acks, &new).is_ok() {
                self.size.fetch_add(acks.size - before, Ordering::Relaxed);
            }
            if acks.records > acks.set.len() as u64 + ACKS_REWRITE_SLACK {
                self.rewrite_acks(&mut acks);
            }
        }
        self.compact()
    }

    fn rewrite_acks(&self, acks: &mut Acks) {
        // A failed rewrite leaves the old file, which is still right.
        if let Ok((file, records, size)) = write_acks_file(&self.dir, &acks.set, self.options.fsync)
        {
            if self.options.fsync != Fsync::Never {
                self.syncs.fetch_add(2, Ordering::Relaxed);
            }
            let old = acks.size;
            acks.file = file;
            acks.records = records;
            acks.size = size;
            acks.dirty = false;
            self.size.fetch_add(size, Ordering::Relaxed);
            self.size.fetch_sub(old, Ordering::Relaxed);
        }
    }

    /// Whether `seq` is acknowledged.
    pub fn is_acked(&self, seq: u64) -> bool {
        lock(&self.acks).set.contains(seq)
    }

    /// The lowest sequence number not acknowledged: everything below it is.
    pub fn acked_floor(&self) -> u64 {
        lock(&self.acks).set.first_gap(0)
    }

    /// The sequence number the next append gets.
    pub fn next_seq(&self) -> u64 {
        lock(&self.active).next_seq
    }

    /// Deletes every segment, other than the one being appended to, whose
    /// records are all acknowledged, or keeps its file for reuse
    /// ([`LogOptions::recycle_segments`]); returns the bytes freed for new
    /// records. [`ack`] does this itself; calling it is only needed to
    /// force it.
    ///
    /// [`ack`]: Self::ack
    pub fn compact(&self) -> u64 {
        let acks = lock(&self.acks);
        let mut segments = lock(&self.segments);
        let mut free = lock(&self.free);
        let bases: Vec<u64> = segments.keys().copied().collect();
        let mut freed = 0;
        for pair in bases.windows(2) {
            let (base, next) = (pair[0], pair[1]);
            if !acks.set.covers(base..next) {
                continue;
            }
            let path = self.dir.join(segment_name(base));
            let size = segments[&base].size;
            let kept: u64 = free.iter().map(|f| f.size).sum();
            let keep = free.len() < self.options.recycle_segments
                && self.options.max_bytes.is_none_or(|limit| {
                    kept + size <= limit / 32 && self.size_on_disk() <= limit / 2
                });
            let free_path = self.dir.join(free_name(base));
            if keep && std::fs::rename(&path, &free_path).is_ok() {
                free.push(Free {
                    path: free_path,
                    size,
                });
            } else if std::fs::remove_file(&path).is_ok() {
                self.size.fetch_sub(size, Ordering::Relaxed);
                self.deleted_segments.fetch_add(1, Ordering::Relaxed);
            } else {
                continue;
            }
            segments.remove(&base);
            freed += size;
        }
        freed
    }

    /// Bytes of the files kept for reuse (counted in
    /// [`size_on_disk`](Self::size_on_disk)).
    pub fn recyclable_bytes(&self) -> u64 {
        lock(&self.free).iter().map(|f| f.size).sum()
    }

    /// Bytes of the segment files (kept for reuse included) and the acks
    /// file.
    pub fn size_on_disk(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> LogStats {
        LogStats {
            appended_records: self.appended_records.load(Ordering::Relaxed),
            appended_bytes: self.appended_bytes.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            damaged_reads: self.damaged_reads.load(Ordering::Relaxed),
            deleted_segments: self.deleted_segments.load(Ordering::Relaxed),
            recycled_segments: self.recycled_segments.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // A clean close leaves nothing to the writeback, whatever the policy.
        let _ = self.sync();
    }
}

/// Creates the segment beginning at `base`: its header and an end marker.
/// Returns its writing and reading handles.
fn create_segment(dir: &Path, base: u64, fsync: Fsync) -> io::Result<(File, File)> {
    let path = dir.join(segment_name(base));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    file.write_all(&segment_start(base))?;
    if fsync != Fsync::Never {
        file.sync_data()?;
        File::open(dir)?.sync_all()?;
    }
    let read = File::open(&path)?;
    Ok((file, read))
}

/// Reads the acks file: the union of its ranges, the number of records,
/// and how many were damaged (the rest of the file after the first damage
/// is ignored).
fn read_acks(path: &Path) -> io::Result<(RangeSet, u64, u64)> {
    let data = match std::fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((RangeSet::default(), 0, 0)),
        Err(e) => return Err(e),
    };
    let mut set = RangeSet::default();
    if data.len() < FILE_HEADER as usize || &data[..8] != ACKS_MAGIC {
        return Ok((set, 0, u64::from(!data.is_empty())));
    }
    let mut offset = FILE_HEADER as usize;
    let mut records = 0;
    loop {
        match frame::parse(&data[offset..], records) {
            Parsed::Record(payload, framed) if payload.len() == 16 => {
                let start = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
                let end = u64::from_le_bytes(payload[8..].try_into().expect("8 bytes"));
                set.insert(start..end);
                records += 1;
                offset += framed;
            }
            Parsed::End => return Ok((set, records, 0)),
            Parsed::Record(..) | Parsed::Damaged(_) => return Ok((set, records, 1)),
        }
    }
}

/// Writes `set` as a new acks file (through a temporary file and a rename)
/// and returns it open for appending, with its record count and size.
fn write_acks_file(dir: &Path, set: &RangeSet, fsync: Fsync) -> io::Result<(File, u64, u64)> {
    let tmp = dir.join(ACKS_TMP);
    let mut buf = acks_header().to_vec();
    let mut records = 0;
    for range in set.iter() {
        frame::encode(&mut buf, records, &[&ack_payload(&range)]);
        records += 1;
    }
    {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)?;
        file.write_all(&buf)?;
        if fsync != Fsync::Never {
            file.sync_data()?;
        }
    }
    let path = dir.join(ACKS_FILE);
    std::fs::rename(&tmp, &path)?;
    if fsync != Fsync::Never {
        File::open(dir)?.sync_all()?;
    }
    let file = OpenOptions::new().append(true).open(&path)?;
    Ok((file, records, buf.len() as u64))
}

fn append_acks(acks: &mut Acks, ranges: &[Range<u64>]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(ranges.len() * (HEADER + 16));
    for (i, range) in ranges.iter().enumerate() {
        frame::encode(&mut buf, acks.records + i as u64, &[&ack_payload(range)]);
    }
    acks.file.write_all(&buf)?;
    acks.records += ranges.len() as u64;
    acks.size += buf.len() as u64;
    acks.dirty = true;
    Ok(())
}

/// `write_all_at` for vectored writes (`pwritev(2)`): writes every slice
/// from `offset` on, however the kernel splits the writes.
fn write_all_vectored_at(
    file: &File,
    mut slices: &mut [IoSlice<'_>],
    mut offset: u64,
) -> io::Result<()> {
    while !slices.is_empty() {
        let batch = &slices[..slices.len().min(MAX_IOVECS)];
        match rustix::io::pwritev(file, batch, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                offset += n as u64;
                IoSlice::advance_slices(&mut slices, n);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
