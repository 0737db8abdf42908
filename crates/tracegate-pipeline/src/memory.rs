//! The process's memory as the memory limiter sees it: its resident set
//! (what a container's limit and the OOM killer count), the memory it may
//! use (the cgroup v2 or v1 limit, else the host's total), a hook through
//! which the binary lets the allocator give freed memory back (handed to
//! the memory limiter in the build context), and whether a memory limiter
//! is past its hard limit ([`MemoryPressure`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// The resident set size of this process, from `/proc/self/status`.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status_kib(&status, "VmRSS:").map(|kib| kib * 1024)
}

/// A `Key:   1234 kB` line of a `/proc/<pid>/status` file, in KiB.
pub fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// The memory this process may use: the smaller of its cgroup's limit (v2,
/// then v1) and the host's total memory.
pub fn total_memory() -> Option<u64> {
    total_memory_under(Path::new("/"))
}

/// [`total_memory`] with the file system rooted at `root` (for tests).
pub fn total_memory_under(root: &Path) -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(root.join(p)).ok();
    let host = read("proc/meminfo").and_then(|m| status_kib(&m, "MemTotal:").map(|k| k * 1024));
    let cgroup = cgroup_limit(&read);
    match (cgroup, host) {
        (Some(c), Some(h)) => Some(c.min(h)),
        (c, h) => c.or(h),
    }
}

/// cgroup v1 reports "no limit" as a huge page-aligned number.
const CGROUP_V1_UNLIMITED: u64 = 1 << 62;

fn cgroup_limit(read: &dyn Fn(&str) -> Option<String>) -> Option<u64> {
    // The process's own cgroup ("0::/kubepods/...") first, then the
    // namespace root that a container usually sees.
    let own = read("proc/self/cgroup").and_then(|c| {
        c.lines()
            .find_map(|l| l.strip_prefix("0::").map(|p| p.trim().to_string()))
    });
    let mut v2 = Vec::new();
    if let Some(own) = own.filter(|p| p != "/") {
        v2.push(format!("sys/fs/cgroup{own}/memory.max"));
    }
    v2.push("sys/fs/cgroup/memory.max".to_string());
    for path in &v2 {
        if let Some(limit) = read(path) {
            let limit = limit.trim();
            if limit == "max" {
                return None;
            }
            if let Ok(bytes) = limit.parse() {
                return Some(bytes);
            }
        }
    }
    read("sys/fs/cgroup/memory/memory.limit_in_bytes")
        .and_then(|l| l.trim().parse::<u64>().ok())
        .filter(|&l| l < CGROUP_V1_UNLIMITED)
}

/// Whether a memory limiter found memory at or above its hard limit: the
/// moment for components holding data (the tail sampler's pending traces)
/// to let go of what they can. One per process, handed to components in
/// the [`BuildContext`](crate::context::BuildContext); clones share it.
/// Cheap enough to poll.
#[derive(Debug, Clone, Default)]
pub struct MemoryPressure(Arc<AtomicUsize>);

impl MemoryPressure {
    /// Whether any memory limiter's last check found memory at or above
    /// its hard limit.
    pub fn above_hard_limit(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }

    /// A new memory limiter's say in [`Self::above_hard_limit`].
    pub fn limiter(&self) -> HardLimitFlag {
        HardLimitFlag {
            above: AtomicBool::new(false),
            pressure: self.clone(),
        }
    }
}

/// One memory limiter's contribution to [`MemoryPressure`]; withdrawn when
/// dropped.
#[derive(Debug)]
pub struct HardLimitFlag {
    above: AtomicBool,
    pressure: MemoryPressure,
}

impl HardLimitFlag {
    /// Whether this limiter's last check found memory at or above its hard
    /// limit.
    pub fn set(&self, above: bool) {
        if self.above.swap(above, Ordering::Relaxed) != above {
            if above {
                self.pressure.0.fetch_add(1, Ordering::Relaxed);
            } else {
                self.pressure.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for HardLimitFlag {
    fn drop(&mut self) {
        self.set(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    const MEMINFO: &str = "MemTotal:        8048524 kB\nMemFree:          512000 kB\n";

    #[test]
    fn cgroup_v2_limit_else_v1_else_host_total() {
        let host = 8048524 * 1024;
        let v2 = root(&[
            ("proc/meminfo", MEMINFO),
            ("proc/self/cgroup", "0::/kubepods/pod1/c1\n"),
            ("sys/fs/cgroup/kubepods/pod1/c1/memory.max", "536870912\n"),
        ]);
        assert_eq!(total_memory_under(v2.path()), Some(536870912));
        let v2_root = root(&[
            ("proc/meminfo", MEMINFO),
            ("proc/self/cgroup", "0::/\n"),
            ("sys/fs/cgroup/memory.max", "268435456\n"),
        ]);
        assert_eq!(total_memory_under(v2_root.path()), Some(268435456));
        let unlimited = root(&[
            ("proc/meminfo", MEMINFO),
            ("sys/fs/cgroup/memory.max", "max\n"),
        ]);
        assert_eq!(total_memory_under(unlimited.path()), Some(host));
        let v1 = root(&[
            ("proc/meminfo", MEMINFO),
            ("sys/fs/cgroup/memory/memory.limit_in_bytes", "1073741824\n"),
        ]);
        assert_eq!(total_memory_under(v1.path()), Some(1073741824));
        let v1_unlimited = root(&[
            ("proc/meminfo", MEMINFO),
            (
                "sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
        ]);
        assert_eq!(total_memory_under(v1_unlimited.path()), Some(host));
        // A limit above the host's memory is no limit at all.
        let above = root(&[
            ("proc/meminfo", MEMINFO),
            ("sys/fs/cgroup/memory.max", "99999999999999\n"),
        ]);
        assert_eq!(total_memory_under(above.path()), Some(host));
    }

    #[test]
    fn a_limiter_past_its_hard_limit_is_seen_until_all_are_below() {
        let pressure = MemoryPressure::default();
        let (a, b) = (pressure.limiter(), pressure.limiter());
        assert!(!pressure.above_hard_limit());
        a.set(true);
        a.set(true);
        b.set(true);
        assert!(pressure.clone().above_hard_limit());
        a.set(false);
        assert!(pressure.above_hard_limit(), "b is still above");
        drop(b);
        assert!(!pressure.above_hard_limit(), "a dropped limiter withdraws");
        // Another process's (or test's) pressure is its own.
        a.set(true);
        assert!(!MemoryPressure::default().above_hard_limit());
    }

    #[test]
    fn this_process_has_a_resident_set() {
        let rss = resident_bytes().expect("Linux /proc");
        assert!(rss > 1 << 20, "{rss}");
    }
}
