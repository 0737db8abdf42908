//! CPU time and memory of a process, from /proc.

/// User + system CPU seconds of `pid` ("self" for this process).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after its ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 0, utime 11, stime 12 (clock ticks).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks_per_second())
}

/// USER_HZ: 100 on every Linux architecture tracegate targets; `getconf
/// CLK_TCK` would say otherwise only on exotic kernels.
fn clock_ticks_per_second() -> f64 {
    100.0
}

/// A `/proc/PID/status` memory field (`VmHWM`, `VmRSS`) in bytes.
pub fn memory_bytes(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A `/proc/PID/io` counter in bytes: `wchar` (handed to write calls) or
/// `write_bytes` (sent to the storage layer).
pub fn io_bytes(pid: &str, field: &str) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .parse()
        .ok()
}

/// CPU seconds of this process with nanosecond resolution: the sum of its
/// threads' run time from /proc/self/task/*/schedstat (the tick-based
/// figures in /proc/self/stat are 10 ms coarse, too coarse for short runs).
/// Falls back to /proc/self/stat where schedstat is missing.
pub fn own_cpu_seconds() -> f64 {
    let precise = std::fs::read_dir("/proc/self/task").ok().and_then(|tasks| {
        let mut ns = 0u64;
        for task in tasks {
            let path = task.ok()?.path().join("schedstat");
            let text = std::fs::read_to_string(path).ok()?;
            ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(ns as f64 / 1e9)
    });
    precise.or_else(|| cpu_seconds("self")).unwrap_or(0.0)
}
