use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;

use crate::{AppendError, Fsync, LockError, Log, LogOptions, OpenError, OpenReport, ReadError};

fn small() -> LogOptions {
    LogOptions {
        segment_bytes: 256,
        lock_timeout: Duration::ZERO,
        ..LogOptions::default()
    }
}

fn open(dir: &Path, options: LogOptions) -> (Log, Vec<(u64, Vec<u8>)>, OpenReport) {
    let mut replayed = Vec::new();
    let (log, report) = Log::open(dir, options, |pos, payload| {
        assert_eq!(pos.len(), payload.len());
        replayed.push((pos.seq, payload.to_vec()));
    })
    .expect("open");
    (log, replayed, report)
}

/// The end marker after a segment's records.
const MARKER: usize = 8;

fn record(i: u64) -> Vec<u8> {
    format!("record {i} {}", "x".repeat((i % 37) as usize)).into_bytes()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

#[test]
fn records_survive_a_reopen_and_acknowledged_ones_are_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, replayed, report) = open(dir.path(), small());
        assert!(replayed.is_empty());
        assert_eq!(report.damage, vec![]);
        for i in 0..100 {
            let pos = log.append(&record(i)).unwrap();
            assert_eq!(pos.seq, i);
            assert_eq!(log.read(pos).unwrap(), record(i));
        }
        assert!(segments(dir.path()).len() > 5, "rotated");
        // Out of order, and a range.
        log.ack(50..51);
        log.ack(3..4);
        log.ack(0..3);
        log.ack(10..40);
        assert_eq!(log.acked_floor(), 4);
        assert!(log.is_acked(50) && !log.is_acked(49));
        // Dropped here without an explicit close, as a crash would leave it.
    }
    let (log, replayed, report) = open(dir.path(), small());
    let want: Vec<(u64, Vec<u8>)> = (4..10)
        .chain(40..50)
        .chain(51..100)
        .map(|i| (i, record(i)))
        .collect();
    assert_eq!(replayed, want);
    assert_eq!(report.records, want.len() as u64);
    assert_eq!(report.damage, vec![]);
    assert_eq!(log.next_seq(), 100);
    assert_eq!(log.append(b"after").unwrap().seq, 100);
}

#[test]
fn fully_acknowledged_segments_are_deleted_and_the_size_follows() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = open(dir.path(), small());
    let positions: Vec<_> = (0..200).map(|i| log.append(&record(i)).unwrap()).collect();
    let full = log.size_on_disk();
    let files = segments(dir.path()).len();
    assert!(files > 10);
    // Acknowledging all but the first deletes every segment but the first
    // and the one being appended to.
    log.ack(1..200);
    assert_eq!(segments(dir.path()).len(), 2);
    assert_eq!(log.acked_floor(), 0);
    drop(log);
    let (log, replayed, report) = open(dir.path(), small());
    assert_eq!(replayed, vec![(0, record(0))]);
    assert_eq!(
        report.damage,
        vec![],
        "a gap of acknowledged records is no damage"
    );
    let freed = log.ack(0..1);
    assert!(freed > 0);
    // Only the segment being appended to stays.
    assert_eq!(segments(dir.path()).len(), 1);
    assert!(
        log.size_on_disk() < full / 5,
        "{} of {full}",
        log.size_on_disk()
    );
    assert!(matches!(log.read(positions[0]), Err(ReadError::Gone(0))));
    let on_disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "LOCK")
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert_eq!(log.size_on_disk(), on_disk);
    drop(log);
    let (log, replayed, report) = open(dir.path(), small());
    assert!(replayed.is_empty());
    assert_eq!(log.next_seq(), 200);
    assert_eq!(report.segments, 1);
}

#[test]
fn a_torn_tail_is_cut_counted_and_everything_before_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_bytes: 1 << 20,
        ..small()
    };
    let (log, _, _) = open(dir.path(), options.clone());
    for i in 0..10 {
        log.append(&record(i)).unwrap();
    }
    let last = log.append(b"the last record, torn").unwrap();
    drop(log);
    let file = segments(dir.path()).pop().unwrap();
    let whole = std::fs::read(&file).unwrap();
    // Every cut inside the last record's frame (the file ends with the
    // end marker after it).
    let records_end = whole.len() - MARKER;
    let frame_start = records_end - last.framed_len() as usize;
    for cut in frame_start + 1..records_end {
        std::fs::write(&file, &whole[..cut]).unwrap();
        let (log, replayed, report) = open(dir.path(), options.clone());
        assert_eq!(replayed.len(), 10, "cut at {cut}");
        assert_eq!(report.damaged_records(), 1);
        assert_eq!(report.damaged_bytes(), (cut - frame_start) as u64);
        // Appends go on after the kept records, and read back.
        let pos = log.append(b"next").unwrap();
        assert_eq!(pos.seq, 10);
        assert_eq!(log.read(pos).unwrap(), b"next");
        drop(log);
        let (_, replayed, report) = open(dir.path(), options.clone());
        assert_eq!(replayed.len(), 11);
        assert_eq!(report.damage, vec![]);
        std::fs::write(&file, &whole).unwrap();
    }
    // A cut inside the end marker loses no record; one inside its length
    // bytes cannot be told from a record's header cut short and is
    // counted as one.
    for cut in records_end..whole.len() {
        std::fs::write(&file, &whole[..cut]).unwrap();
        let (_, replayed, report) = open(dir.path(), options.clone());
        assert_eq!(replayed.len(), 11, "cut at {cut}");
        let in_length = (records_end + 1..records_end + 5).contains(&cut);
        assert_eq!(
            report.damaged_records(),
            u64::from(in_length),
            "cut at {cut}"
        );
        std::fs::write(&file, &whole).unwrap();
    }
}

#[test]
fn damage_in_an_earlier_segment_loses_exactly_the_rest_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = open(dir.path(), small());
    for i in 0..60 {
        log.append(&record(i)).unwrap();
    }
    drop(log);
    let files = segments(dir.path());
    let second = &files[1];
    let base_of = |path: &PathBuf| -> u64 {
        let stem = path.file_stem().unwrap().to_str().unwrap();
        stem.parse().unwrap()
    };
    let (base, next) = (base_of(second), base_of(&files[2]));
    // Flip a byte in the second record of the second segment.
    let mut data = std::fs::read(second).unwrap();
    let first_len = u32::from_le_bytes(data[16..20].try_into().unwrap()) as usize;
    let at = 16 + 8 + first_len + 8 + 2;
    data[at] ^= 0x40;
    std::fs::write(second, &data).unwrap();
    let (log, replayed, report) = open(dir.path(), small());
    assert_eq!(report.damaged_records(), next - base - 1);
    let seqs: Vec<u64> = replayed.iter().map(|(s, _)| *s).collect();
    let want: Vec<u64> = (0..=base).chain(next..60).collect();
    assert_eq!(seqs, want);
    for (seq, payload) in &replayed {
        assert_eq!(payload, &record(*seq));
    }
    // The lost records count as acknowledged: reported once.
    drop(log);
    let (_, replayed, report) = open(dir.path(), small());
    assert_eq!(report.damage, vec![]);
    assert_eq!(replayed.len(), want.len());
}

#[test]
fn a_read_finds_damage_done_after_opening() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = open(dir.path(), LogOptions::default());
    let pos = log.append(b"will be damaged").unwrap();
    let file = segments(dir.path()).pop().unwrap();
    let mut data = std::fs::read(&file).unwrap();
    // The record's last byte, before the end marker.
    let n = data.len() - MARKER;
    data[n - 1] ^= 1;
    std::fs::write(&file, &data).unwrap();
    assert!(matches!(
        log.read(pos),
        Err(ReadError::Corrupt { seq: 0, .. })
    ));
    assert_eq!(log.stats().damaged_reads, 1);
}

#[test]
fn a_second_open_of_the_directory_is_refused_naming_it_and_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, _, _) = open(dir.path(), small());
    let err = Log::open(dir.path(), small(), |_, _| {}).unwrap_err();
    let OpenError::Lock(LockError::Held { dir: held, holder }) = &err else {
        panic!("{err}");
    };
    assert_eq!(held, dir.path());
    assert_eq!(holder, &format!("pid {}", std::process::id()));
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("in use by another process"), "{message}");
}

#[test]
fn the_lock_is_released_on_close() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), small()));
    drop(open(dir.path(), small()));
}

#[test]
fn appends_past_the_bound_are_refused_until_acknowledgements_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        max_bytes: Some(2048),
        ..small()
    };
    let (log, _, _) = open(dir.path(), options);
    let mut n = 0;
    let err = loop {
        match log.append(&[7u8; 100]) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, AppendError::Full { limit: 2048, .. }),
        "{err}"
    );
    assert!(log.size_on_disk() <= 2048, "{}", log.size_on_disk());
    log.ack(0..n);
    assert!(log.append(&[7u8; 100]).is_ok());
}

#[test]
fn a_batch_goes_out_in_one_write_and_one_sync() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        fsync: Fsync::Always,
        segment_bytes: 1 << 20,
        ..small()
    };
    let (log, _, _) = open(dir.path(), options);
    let before = log.stats().syncs;
    let header = [1u8, 2, 3];
    let records: Vec<Vec<u8>> = (0..50).map(record).collect();
    let parts: Vec<[&[u8]; 2]> = records.iter().map(|r| [&header[..], &r[..]]).collect();
    let batch: Vec<&[&[u8]]> = parts.iter().map(|p| &p[..]).collect();
    let positions = log.append_batch(&batch).unwrap();
    assert_eq!(log.stats().syncs - before, 1);
    for (i, pos) in positions.iter().enumerate() {
        assert_eq!(pos.seq, i as u64);
        let mut want = header.to_vec();
        want.extend_from_slice(&records[i]);
        assert_eq!(log.read(*pos).unwrap(), want);
    }
}

#[test]
fn garbage_files_never_panic() {
    let mut rng = 0x1234_5678_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..50 {
        let dir = tempfile::tempdir().unwrap();
        let len = (next() % 600) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 2 == 0 && data.len() >= 16 {
            data[..8].copy_from_slice(b"TGLOGv02");
            data[8..16].copy_from_slice(&0u64.to_le_bytes());
        }
        std::fs::write(dir.path().join(format!("{:020}.seg", 0)), &data).unwrap();
        std::fs::write(dir.path().join(format!("{:020}.seg", 5)), &data).unwrap();
        std::fs::write(dir.path().join("acks"), &data).unwrap();
        let (log, _, _) = open(dir.path(), small());
        let pos = log.append(b"still works").unwrap();
        assert_eq!(log.read(pos).unwrap(), b"still works");
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    /// Acknowledge the n-th (modulo) record not yet acknowledged.
    Ack(usize),
    Reopen,
    /// Reopen after cutting this many bytes off the last segment.
    Tear(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..120).prop_map(Op::Append),
        4 => any::<usize>().prop_map(Op::Ack),
        1 => Just(Op::Reopen),
        1 => (1usize..40).prop_map(Op::Tear),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Against a model: what is replayed after each reopen is exactly the
    /// records appended and not acknowledged, less a torn tail, which is
    /// reported.
    #[test]
    fn matches_a_model_across_reopens_and_tears(ops in proptest::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions { segment_bytes: 300, ..small() };
        let (mut log, _, _) = open(dir.path(), options.clone());
        let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut next = 0u64;
        for op in ops {
            match op {
                Op::Append(len) => {
                    let payload: Vec<u8> = (0..len).map(|i| (i as u64 + next) as u8).collect();
                    let pos = log.append(&payload).unwrap();
                    prop_assert_eq!(pos.seq, next);
                    model.insert(next, payload);
                    next += 1;
                }
                Op::Ack(n) => {
                    if !model.is_empty() {
                        let seq = *model.keys().nth(n % model.len()).unwrap();
                        log.ack(seq..seq + 1);
                        model.remove(&seq);
                    }
                }
                Op::Reopen | Op::Tear(_) => {
                    drop(log);
                    let mut torn = false;
                    if let Op::Tear(cut) = op {
                        let file = segments(dir.path()).pop().unwrap();
                        let len = std::fs::metadata(&file).unwrap().len();
                        // Only cut into records, not the segment header.
                        if len > 16 {
                            let new_len = len.saturating_sub(cut as u64).max(16);
                            std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(new_len).unwrap();
                            torn = true;
                        }
                    }
                    let (reopened, replayed, report) = open(dir.path(), options.clone());
                    log = reopened;
                    let replayed: BTreeMap<u64, Vec<u8>> = replayed.into_iter().collect();
                    if torn {
                        // Only the last records can be lost. (A cut that
                        // falls between two records looks like records
                        // never written, so it cannot be reported; the
                        // cuts inside a record are checked above.)
                        for (seq, payload) in &replayed {
                            prop_assert_eq!(model.get(seq), Some(payload));
                        }
                        let lost: Vec<u64> = model.keys().filter(|s| !replayed.contains_key(s)).copied().collect();
                        if let Some(&first_lost) = lost.first() {
                            prop_assert!(replayed.keys().all(|&s| s < first_lost));
                            prop_assert!(report.damaged_records() <= 1);
                        }
                        model = replayed;
                        next = log.next_seq();
                    } else {
                        prop_assert_eq!(&replayed, &model);
                        prop_assert_eq!(report.damage.clone(), vec![]);
                        prop_assert_eq!(log.next_seq(), next);
                    }
                }
            }
        }
    }
}

/// With writes left to the OS, an explicit sync (a clean shutdown) still
/// reaches every segment closed since the last one, and the directory
/// that now names new segments, not only the active segment; a second
/// sync has nothing left to do.
#[test]
fn a_sync_left_to_the_os_reaches_closed_segments_and_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = open(dir.path(), small());
    for i in 0..40 {
        log.append(&record(i)).unwrap();
    }
    let closed = segments(dir.path()).len() - 1;
    assert!(closed >= 2, "{closed} segments closed");
    let before = log.stats().syncs;
    log.sync().unwrap();
    // Each closed segment, the directory, and the active segment (the
    // acks file has nothing written).
    assert_eq!(log.stats().syncs - before, closed as u64 + 2);
    let before = log.stats().syncs;
    log.sync().unwrap();
    assert_eq!(log.stats().syncs, before);
}

/// Bytes of every file in the log's directory but its lock.
fn files_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "LOCK")
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

fn free_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let path = e.as_ref().unwrap().path();
            path.extension().is_some_and(|e| e == "free")
        })
        .count()
}

/// Segments whose records are all acknowledged are kept and reused: no
/// new file is created while one is kept, the files count in the size on
/// disk, and after a crash (the log dropped as it was, then the last
/// segment torn or followed by garbage) exactly the live records come
/// back, never a stale one from a file's earlier life.
#[test]
fn recycled_segments_replay_exactly_the_live_records_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let options = small();
    let mut live: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut i = 60;
    {
        let (log, _, _) = open(dir.path(), options.clone());
        // Long records first, acknowledged, so that the reused files hold
        // longer stale records than what is written over them.
        for i in 0..60 {
            let pos = log.append(&[b'L'; 100]).unwrap();
            assert_eq!(pos.seq, i);
        }
        log.ack(0..60);
        assert_eq!(free_files(dir.path()), 4, "the pool is full");
        assert_eq!(log.size_on_disk(), files_size(dir.path()));
        let files_before = std::fs::read_dir(dir.path()).unwrap().count();
        // Until the last kept file is in use.
        while log.stats().recycled_segments < 4 {
            let payload = record(i % 7);
            assert_eq!(log.append(&payload).unwrap().seq, i);
            live.insert(i, payload);
            i += 1;
        }
        assert!(i > 75, "{i}");
        assert_eq!(free_files(dir.path()), 0);
        // Every segment begun so far was a recycled file.
        assert!(std::fs::read_dir(dir.path()).unwrap().count() <= files_before);
        assert_eq!(log.size_on_disk(), files_size(dir.path()));
        // Shorter records than the files' earlier lives held: the stale
        // tails are there.
        let active = segments(dir.path()).pop().unwrap();
        let data = std::fs::read(&active).unwrap();
        assert!(data.windows(8).any(|w| w == [b'L'; 8]), "a stale tail");
        log.ack(62..63);
        live.remove(&62);
    }
    let (log, replayed, report) = open(dir.path(), options.clone());
    assert_eq!(replayed, live.clone().into_iter().collect::<Vec<_>>());
    assert_eq!(report.damage, vec![], "a stale tail is no damage");
    assert_eq!(log.next_seq(), i);
    drop(log);

    let active = segments(dir.path()).pop().unwrap();
    let whole = std::fs::read(&active).unwrap();
    // Garbage over the stale tail, after the end marker: nothing lost.
    {
        let end = records_end(active_base(&active), &live);
        let mut data = whole.clone();
        for b in &mut data[end + MARKER..] {
            *b = 0x5a;
        }
        std::fs::write(&active, &data).unwrap();
        let (_, replayed, report) = open(dir.path(), options.clone());
        assert_eq!(replayed, live.clone().into_iter().collect::<Vec<_>>());
        assert_eq!(report.damage, vec![]);
        std::fs::write(&active, &whole).unwrap();
    }
    // Garbage over the last record: it is lost and counted, the rest kept.
    {
        let end = records_end(active_base(&active), &live);
        let last = *live.keys().next_back().unwrap();
        let start = end - 8 - live[&last].len();
        let mut data = whole.clone();
        data[start + 9] ^= 0xff;
        std::fs::write(&active, &data).unwrap();
        let (_, replayed, report) = open(dir.path(), options.clone());
        let mut want = live.clone();
        want.remove(&last);
        assert_eq!(replayed, want.into_iter().collect::<Vec<_>>());
        assert_eq!(report.damaged_records(), 1);
        assert_eq!(report.damage[0].what, "checksum mismatch");
        // Cut away, so it is reported once; appends go on from there.
        let (log, replayed, report) = open(dir.path(), options.clone());
        assert_eq!(replayed.len(), live.len() - 1);
        assert_eq!(report.damage, vec![]);
        assert_eq!(log.next_seq(), last);
        assert_eq!(log.append(b"after").unwrap().seq, last);
    }
}

/// The base sequence number of a segment file.
fn active_base(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// Where the records of the segment at `base` end, given the payloads of
/// the live records (a segment's records are all live here).
fn records_end(base: u64, live: &BTreeMap<u64, Vec<u8>>) -> usize {
    16 + live.range(base..).map(|(_, p)| 8 + p.len()).sum::<usize>()
}

/// A file reused for a shorter life still holds its earlier records after
/// the new ones; even one that lies exactly where the next record would
/// be, whole and with a valid checksum for its old place, is not replayed
/// (here the new write's end marker is taken away, as a write torn just
/// before it would leave it): it counts as one damaged record, the torn
/// write's.
#[test]
fn a_stale_record_after_a_shorter_rewrite_is_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        recycle_segments: 1,
        ..small()
    };
    let (log, _, _) = open(dir.path(), options.clone());
    // Two records of 100 bytes fill a segment of 256.
    log.append(&[1u8; 100]).unwrap();
    log.append(&[2u8; 100]).unwrap();
    let first = segments(dir.path()).remove(0);
    let old_life = std::fs::read(&first).unwrap();
    log.append(&[3u8; 100]).unwrap();
    log.ack(0..2);
    assert_eq!(free_files(dir.path()), 1);
    // Fill the active segment so that the next append begins a segment,
    // in the kept file.
    log.append(&[4u8; 100]).unwrap();
    let pos = log.append(&[5u8; 100]).unwrap();
    assert_eq!(pos.seq, 4);
    assert_eq!(log.stats().recycled_segments, 1);
    drop(log);
    let reused = segments(dir.path()).pop().unwrap();
    assert_eq!(active_base(&reused), 4);
    let mut data = std::fs::read(&reused).unwrap();
    assert_eq!(data.len(), old_life.len(), "the file was reused in place");
    // The new record is where the first old one was; its end marker over
    // the second old one's header. Give the old header back.
    let second_old = 16 + 108;
    data[second_old..second_old + 8].copy_from_slice(&old_life[second_old..second_old + 8]);
    assert_eq!(&data[second_old + 8..second_old + 108], &[2u8; 100][..]);
    std::fs::write(&reused, &data).unwrap();
    let (log, replayed, report) = open(dir.path(), options.clone());
    let seqs: Vec<u64> = replayed.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![2, 3, 4]);
    assert_eq!(replayed[2].1, vec![5u8; 100]);
    assert_eq!(report.damaged_records(), 1);
    assert_eq!(report.damage[0].what, "checksum mismatch");
    assert_eq!(log.next_seq(), 5);
    drop(log);
    // With the end marker where the write left it, the same stale bytes
    // are no damage at all.
    let (_, replayed, report) = open(dir.path(), options);
    assert_eq!(replayed.len(), 3);
    assert_eq!(report.damage, vec![]);
}

/// Kept files count toward the bound and give way to records: a bounded
/// log keeps at most a 32nd of its bound in them, only while it holds at
/// most half its bound, and an append that needs the room deletes them
/// instead of being refused.
#[test]
fn kept_files_count_toward_the_bound_and_give_way_to_records() {
    const BOUND: u64 = 16 << 10;
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        max_bytes: Some(BOUND),
        ..small()
    };
    let (log, _, _) = open(dir.path(), options.clone());
    let mut next = 0;
    let mut acked = 0;
    for round in 0..20 {
        // Fill to the bound, checking it holds on disk at every step.
        loop {
            match log.append(&[round as u8; 100]) {
                Ok(pos) => {
                    assert_eq!(pos.seq, next);
                    next += 1;
                }
                Err(AppendError::Full { .. }) => break,
                Err(e) => panic!("{e}"),
            }
            assert_eq!(log.size_on_disk(), files_size(dir.path()));
            assert!(log.size_on_disk() <= BOUND, "{}", log.size_on_disk());
        }
        // Near the bound nothing is kept: what is filled is records.
        assert_eq!(free_files(dir.path()), 0, "round {round}");
        assert!(log.size_on_disk() > BOUND - 400, "{}", log.size_on_disk());
        // Free most of it; some files are kept while under half.
        log.ack(acked..next - 2);
        acked = next - 2;
        assert!(log.size_on_disk() <= BOUND / 2);
        assert_eq!(log.size_on_disk(), files_size(dir.path()));
        assert!(log.recyclable_bytes() <= BOUND / 32);
        if round == 0 {
            assert_eq!(free_files(dir.path()), 2, "two of 248 bytes");
        }
    }
    assert!(log.stats().recycled_segments > 0);
    drop(log);
    let (_, replayed, report) = open(dir.path(), options);
    assert_eq!(replayed.len(), 2);
    assert_eq!(report.damage, vec![]);
}
