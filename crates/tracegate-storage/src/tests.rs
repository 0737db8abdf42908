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
    // Every cut inside the last record's frame.
    let frame_start = whole.len() - last.framed_len() as usize;
    for cut in frame_start + 1..whole.len() {
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
    let n = data.len();
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
    assert!(log.size_on_disk() <= 2048);
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
            data[..8].copy_from_slice(b"TGLOGv01");
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
