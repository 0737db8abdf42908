//! The storage decision, measured: tracegate's segment log against redb (an
//! embedded B-tree key-value store from crates.io) on the persistent
//! queue's workload — append records in commit groups, read each back
//! once, then delete (acknowledge) them — with an fsync per commit and
//! with syncing left to the OS.
//!
//! Reports per store and policy: payload MB/s, CPU µs per record (this
//! thread's on-CPU time from /proc/thread-self/schedstat), bytes the
//! process wrote to storage (/proc/self/io `write_bytes`, which counts
//! what reached the block layer) and the syncs the log made. Count redb's
//! syncs from outside: `strace -f -c -e trace=fsync,fdatasync` around the
//! run (benches/RESULTS.md has the command).
//!
//! It also times reopening a log that holds everything it was given (each
//! record checked and replayed): what a restart costs per GiB.
//!
//! Usage: `cargo bench -p tracegate-storage --bench log_vs_redb --
//! [RECORDS] [RECORD_BYTES] [GROUP] [only: log|redb] [only: always|never]`
//! (defaults 20000 records of 4096 bytes in groups of 8).

use std::time::{Duration, Instant};

use redb::{Database, Durability, TableDefinition};
use tracegate_storage::{Fsync, Log, LogOptions};

const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("queue");

fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

struct Run {
    wall: Duration,
    cpu_ns: u64,
    disk_bytes: u64,
    syncs: Option<u64>,
}

fn measure(f: impl FnOnce() -> Option<u64>) -> Run {
    let (cpu, disk, wall) = (cpu_ns(), write_bytes(), Instant::now());
    let syncs = f();
    Run {
        wall: wall.elapsed(),
        cpu_ns: cpu_ns() - cpu,
        disk_bytes: write_bytes() - disk,
        syncs,
    }
}

fn log_run(records: usize, payload: &[u8], group: usize, always: bool) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        fsync: if always { Fsync::Always } else { Fsync::Never },
        ..LogOptions::default()
    };
    measure(|| {
        let (log, _) = Log::open(dir.path(), options, |_, _| {}).unwrap();
        let mut positions = Vec::with_capacity(records);
        let record: [&[u8]; 1] = [payload];
        let parts: Vec<&[&[u8]]> = vec![&record[..]; group];
        for _ in 0..records / group {
            positions.extend(log.append_batch(&parts).unwrap());
        }
        let mut read = 0usize;
        for chunk in positions.chunks(group) {
            for &pos in chunk {
                read += log.read(pos).unwrap().len();
            }
            log.ack(chunk[0].seq..chunk[chunk.len() - 1].seq + 1);
            if always {
                log.sync().unwrap();
            }
        }
        assert_eq!(read, positions.len() * payload.len());
        let syncs = log.stats().syncs;
        drop(log);
        Some(syncs)
    })
}

fn redb_run(records: usize, payload: &[u8], group: usize, always: bool) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let durability = if always {
        Durability::Immediate
    } else {
        Durability::None
    };
    measure(|| {
        let db = Database::create(dir.path().join("queue.redb")).unwrap();
        let mut key = 0u64;
        for _ in 0..records / group {
            let mut tx = db.begin_write().unwrap();
            tx.set_durability(durability);
            {
                let mut table = tx.open_table(TABLE).unwrap();
                for _ in 0..group {
                    table.insert(key, payload).unwrap();
                    key += 1;
                }
            }
            tx.commit().unwrap();
        }
        let mut read = 0usize;
        let mut next = 0u64;
        while next < key {
            let end = (next + group as u64).min(key);
            {
                let tx = db.begin_read().unwrap();
                let table = tx.open_table(TABLE).unwrap();
                for k in next..end {
                    read += table.get(k).unwrap().unwrap().value().len();
                }
            }
            let mut tx = db.begin_write().unwrap();
            tx.set_durability(durability);
            {
                let mut table = tx.open_table(TABLE).unwrap();
                for k in next..end {
                    table.remove(k).unwrap();
                }
            }
            tx.commit().unwrap();
            next = end;
        }
        assert_eq!(read as u64, key * payload.len() as u64);
        None
    })
}

/// What a restart costs: writes `records` and leaves them unacknowledged,
/// then times reopening the log, which checks and replays every one.
fn log_replay(records: usize, payload: &[u8]) -> (Run, u64) {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = Log::open(dir.path(), LogOptions::default(), |_, _| {}).unwrap();
        let record: [&[u8]; 1] = [payload];
        let parts: Vec<&[&[u8]]> = vec![&record[..]; 64];
        for _ in 0..records / 64 {
            log.append_batch(&parts).unwrap();
        }
    }
    let mut replayed = 0u64;
    let run = measure(|| {
        let (_log, report) = Log::open(dir.path(), LogOptions::default(), |_, payload| {
            replayed += payload.len() as u64;
        })
        .unwrap();
        assert_eq!(report.records as usize, records / 64 * 64);
        None
    });
    (run, replayed)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let number =
        |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let records = number(0, 20_000);
    let size = number(1, 4096);
    let group = number(2, 8).max(1);
    let only_store = args.iter().find(|a| *a == "log" || *a == "redb").cloned();
    let only_policy = args
        .iter()
        .find(|a| *a == "always" || *a == "never")
        .cloned();
    let payload: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let records = records / group * group;
    println!(
        "{records} records of {size} B, {group} per commit; append, read back, acknowledge/delete"
    );
    println!(
        "| store | fsync | MB/s (payload) | CPU µs/record | written to disk (MB) | syncs (log's count) |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    if only_store.as_deref() != Some("redb") && only_policy.is_none() {
        let (run, bytes) = log_replay(records, &payload);
        let gib = bytes as f64 / (1u64 << 30) as f64;
        println!(
            "reopen (replay and check every record, page cache warm): {:.0} MB in {:?}, \
             {:.2} s and {:.2} CPU-s per GiB",
            bytes as f64 / 1e6,
            run.wall,
            run.wall.as_secs_f64() / gib,
            run.cpu_ns as f64 / 1e9 / gib,
        );
    }
    for (store, run) in [
        ("log", log_run as fn(usize, &[u8], usize, bool) -> Run),
        ("redb", redb_run),
    ] {
        if only_store.as_deref().is_some_and(|s| s != store) {
            continue;
        }
        for always in [true, false] {
            let policy = if always { "always" } else { "never" };
            if only_policy.as_deref().is_some_and(|p| p != policy) {
                continue;
            }
            let r = run(records, &payload, group, always);
            let mb = (records * size) as f64 / 1e6;
            println!(
                "| {store} | {policy} | {:.0} | {:.2} | {:.1} | {} |",
                mb / r.wall.as_secs_f64(),
                r.cpu_ns as f64 / 1e3 / records as f64,
                r.disk_bytes as f64 / 1e6,
                r.syncs.map_or("see strace".to_string(), |s| s.to_string()),
            );
        }
    }
}
