//! The process's memory as the memory limiter sees it: the bytes the
//! allocator has handed out and not had back (what the binary's
//! [`Allocator`] hooks report; the resident set when there are none), the
//! memory the process may use (its cgroup's limit, else the host's total,
//! read as the collector reads them), a hook through which the allocator
//! gives freed memory back, and what memory limiters ask of components that
//! hold data ([`MemoryPressure`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

/// The resident set size of this process: `VmRSS` of `/proc/self/status`
/// (anonymous, file and shared memory pages together), read as the
/// resident page count of `/proc/self/statm`, which is the same count
/// (both are the kernel's `get_mm_rss`) in a few dozen bytes that the
/// kernel writes without the forty-odd lines of `status` (the memory
/// limiter reads it every `check_interval`). Falls back to `status` when
/// the page size cannot be read.
pub fn resident_bytes() -> Option<u64> {
    match page_size() {
        Some(page) => {
            let mut buf = [0u8; 128];
            let n = std::fs::File::open("/proc/self/statm")
                .and_then(|mut f| std::io::Read::read(&mut f, &mut buf))
                .ok()?;
            statm_resident_pages(&buf[..n]).map(|pages| pages * page)
        }
        None => resident_bytes_from_status(),
    }
}

/// [`resident_bytes`] from `/proc/self/status`'s `VmRSS` line.
pub fn resident_bytes_from_status() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status_kib(&status, "VmRSS:").map(|kib| kib * 1024)
}

/// The second field of a `/proc/<pid>/statm` (`size resident shared text
/// lib data dt`, in pages): the resident pages.
pub fn statm_resident_pages(statm: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(statm).ok()?;
    text.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// The kernel's page size, from the `AT_PAGESZ` entry of this process's
/// auxiliary vector (`/proc/self/auxv`, native-endian word pairs), read
/// once.
fn page_size() -> Option<u64> {
    static PAGE_SIZE: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *PAGE_SIZE.get_or_init(|| {
        let auxv = std::fs::read("/proc/self/auxv").ok()?;
        auxv_page_size(&auxv)
    })
}

/// `AT_PAGESZ` in an auxiliary vector of native-endian `usize` pairs.
fn auxv_page_size(auxv: &[u8]) -> Option<u64> {
    const AT_NULL: u64 = 0;
    const AT_PAGESZ: u64 = 6;
    const WORD: usize = std::mem::size_of::<usize>();
    let word = |bytes: &[u8]| -> u64 {
        let mut w = [0u8; WORD];
        w.copy_from_slice(bytes);
        usize::from_ne_bytes(w) as u64
    };
    for pair in auxv.chunks_exact(2 * WORD) {
        match word(&pair[..WORD]) {
            AT_NULL => break,
            AT_PAGESZ => return Some(word(&pair[WORD..])).filter(|&p| p > 0),
            _ => {}
        }
    }
    None
}

/// A `Key:   1234 kB` line of a `/proc/<pid>/status` file, in KiB.
pub fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// What the binary's allocator offers the memory limiter. The binary fills
/// it in (jemalloc's statistics and purge, `crates/tracegate/src/jemalloc.rs`)
/// and hands it to components in the
/// [`BuildContext`](crate::context::BuildContext).
#[derive(Debug, Clone, Copy)]
pub struct Allocator {
    /// Bytes allocated and not yet freed, read fresh: what the memory
    /// limiter measures, as the collector reads Go's heap. `None` when the
    /// allocator cannot tell.
    pub live_bytes: fn() -> Option<u64>,
    /// Gives freed memory back to the OS (where the collector forces a GC).
    pub release: fn(),
    /// Bytes of freed pages the allocator still holds, resident until it
    /// returns them (over seconds, or at once on `release`). `None` when the
    /// allocator cannot tell.
    pub freed_bytes: fn() -> Option<u64>,
}

/// The memory this process may use, as the collector reads it: with cgroup
/// v2 (a `cgroup2` file system mounted at `/sys/fs/cgroup`) the limit in
/// `/sys/fs/cgroup/memory.max`; otherwise the cgroup v1 memory
/// controller's `memory.limit_in_bytes` for this process's group; and the
/// host's total memory when neither sets a limit. A limit is taken as it is,
/// even above the host's memory. `Err` says what could not be read.
pub fn total_memory() -> Result<u64, String> {
    total_memory_under(Path::new("/"))
}

/// cgroup v1's "no limit" (the largest page-aligned `i64` on 4 KiB pages),
/// which the collector treats as no limit.
const CGROUP_V1_UNLIMITED: i64 = 9223372036854771712;

/// [`total_memory`] with the file system rooted at `root` (for tests).
pub fn total_memory_under(root: &Path) -> Result<u64, String> {
    let read = |p: &str| {
        std::fs::read_to_string(root.join(p.trim_start_matches('/')))
            .map_err(|e| (e.kind(), format!("{p}: {e}")))
    };
    let mountinfo = read("/proc/self/mountinfo").map_err(|(_, e)| e)?;
    let mounts = mountinfo
        .lines()
        .map(Mount::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let v2 = mounts
        .iter()
        .any(|m| m.fs_type == "cgroup2" && m.mount_point == "/sys/fs/cgroup");
    let limit = if v2 {
        match read("/sys/fs/cgroup/memory.max") {
            Err((std::io::ErrorKind::NotFound, _)) => None,
            Err((_, e)) => return Err(e),
            Ok(text) => {
                let value = first_line("/sys/fs/cgroup/memory.max", &text)?.trim();
                if value == "max" {
                    None
                } else {
                    Some(parse_i64("/sys/fs/cgroup/memory.max", value)?)
                }
            }
        }
    } else {
        match v1_memory_group(&mounts, &read("/proc/self/cgroup").map_err(|(_, e)| e)?)? {
            None => None,
            Some(dir) => {
                let path = format!("{dir}/memory.limit_in_bytes");
                let text = read(&path).map_err(|(_, e)| e)?;
                let value = parse_i64(&path, first_line(&path, &text)?)?;
                (value > 0).then_some(value)
            }
        }
    };
    match limit {
        Some(bytes) if bytes != CGROUP_V1_UNLIMITED => Ok(bytes as u64),
        _ => {
            let meminfo = read("/proc/meminfo").map_err(|(_, e)| e)?;
            status_kib(&meminfo, "MemTotal:")
                .map(|kib| kib * 1024)
                .ok_or_else(|| "/proc/meminfo: no MemTotal".to_string())
        }
    }
}

fn first_line<'a>(path: &str, text: &'a str) -> Result<&'a str, String> {
    text.lines().next().ok_or_else(|| format!("{path}: empty"))
}

fn parse_i64(path: &str, value: &str) -> Result<i64, String> {
    value
        .parse()
        .map_err(|e| format!("{path}: {value:?} is not a number: {e}"))
}

/// One line of `/proc/self/mountinfo`: the fields the cgroup lookup needs.
struct Mount<'a> {
    root: &'a str,
    mount_point: &'a str,
    fs_type: &'a str,
    super_options: &'a str,
}

impl<'a> Mount<'a> {
    /// `36 25 0:32 / /sys/fs/cgroup/memory rw,relatime shared:15 - cgroup cgroup rw,memory`:
    /// six fields, optional fields up to `-`, then exactly three more.
    fn parse(line: &'a str) -> Result<Mount<'a>, String> {
        let invalid = || format!("/proc/self/mountinfo: malformed line {line:?}");
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 10 {
            return Err(invalid());
        }
        let dash = fields[6..]
            .iter()
            .position(|f| *f == "-")
            .map(|i| i + 6)
            .ok_or_else(invalid)?;
        if fields.len() != dash + 4 {
            return Err(invalid());
        }
        Ok(Mount {
            root: fields[3],
            mount_point: fields[4],
            fs_type: fields[dash + 1],
            super_options: fields[dash + 3],
        })
    }

    /// Where `path`, a path inside this mount's file system, is seen;
    /// `Err` when the mount does not expose it.
    fn translate(&self, path: &str) -> Result<String, String> {
        let root = self.root.trim_end_matches('/');
        let rest = if path == self.root || path.trim_end_matches('/') == root {
            ""
        } else {
            path.strip_prefix(root)
                .filter(|r| r.starts_with('/'))
                .ok_or_else(|| {
                    format!(
                        "cgroup {path} is not under the root {} of the mount at {}",
                        self.root, self.mount_point
                    )
                })?
        };
        Ok(format!("{}{rest}", self.mount_point.trim_end_matches('/')))
    }
}

/// The directory of this process's cgroup v1 memory controller, from
/// `/proc/self/cgroup` (`4:memory:/kubepods/...`) and the `cgroup` mounts;
/// `None` when there is none under `/sys`.
fn v1_memory_group(mounts: &[Mount<'_>], cgroups: &str) -> Result<Option<String>, String> {
    let mut memory_group = None;
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(subsystems), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("/proc/self/cgroup: malformed line {line:?}"));
        };
        if id.parse::<u32>().is_err() {
            return Err(format!("/proc/self/cgroup: malformed line {line:?}"));
        }
        if subsystems.split(',').any(|s| s == "memory") {
            memory_group = Some(path);
        }
    }
    let Some(group) = memory_group else {
        return Ok(None);
    };
    for mount in mounts.iter().filter(|m| m.fs_type == "cgroup") {
        if mount.super_options.split(',').any(|o| o == "memory") {
            let dir = mount.translate(group)?;
            if dir.starts_with("/sys") {
                return Ok(Some(dir));
            }
        }
    }
    Ok(None)
}

/// What memory limiters ask of components that hold data (the tail
/// sampler's pending traces): to let go of a given number of bytes, when a
/// limiter had to turn data away at its soft limit, and of what they can
/// while one is at or above its hard limit. One per process, handed to
/// components in the [`BuildContext`](crate::context::BuildContext); clones
/// share it. Cheap enough to poll.
#[derive(Debug, Clone, Default)]
pub struct MemoryPressure(Arc<PressureState>);

#[derive(Debug)]
struct PressureState {
    /// Limiters whose last check found memory at or above the hard limit.
    above_hard: AtomicUsize,
    /// Bytes limiters have asked holders to free, summed since the start;
    /// holders remember how much of it they have seen.
    shed_requested: watch::Sender<u64>,
}

impl Default for PressureState {
    fn default() -> Self {
        PressureState {
            above_hard: AtomicUsize::new(0),
            shed_requested: watch::Sender::new(0),
        }
    }
}

impl MemoryPressure {
    /// Whether any memory limiter's last check found memory at or above
    /// its hard limit.
    pub fn above_hard_limit(&self) -> bool {
        self.0.above_hard.load(Ordering::Relaxed) > 0
    }

    /// A new memory limiter's say in [`Self::above_hard_limit`].
    pub fn limiter(&self) -> HardLimitFlag {
        HardLimitFlag {
            above: AtomicBool::new(false),
            pressure: self.clone(),
        }
    }

    /// A limiter asks holders to free `bytes` (it is at its soft limit).
    pub fn request_shedding(&self, bytes: u64) {
        if bytes > 0 {
            self.0.shed_requested.send_modify(|total| *total += bytes);
        }
    }

    /// A holder's view of the shedding requests: which it has seen, and a
    /// way to wait for the next.
    pub fn shedding_requests(&self) -> ShedRequests {
        let mut rx = self.0.shed_requested.subscribe();
        let seen = *rx.borrow_and_update();
        ShedRequests { rx, seen }
    }
}

/// One holder's subscription to [`MemoryPressure::request_shedding`].
#[derive(Debug)]
pub struct ShedRequests {
    rx: watch::Receiver<u64>,
    seen: u64,
}

impl ShedRequests {
    /// Bytes asked for since the last call (0 if none).
    pub fn take(&mut self) -> u64 {
        let total = *self.rx.borrow_and_update();
        let new = total.saturating_sub(self.seen);
        self.seen = total;
        new
    }

    /// Resolves once a request arrives that [`Self::take`] has not returned
    /// yet; never, once every limiter and the pressure are gone.
    pub async fn arrived(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
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
                self.pressure.0.above_hard.fetch_add(1, Ordering::Relaxed);
            } else {
                self.pressure.0.above_hard.fetch_sub(1, Ordering::Relaxed);
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
    const HOST: u64 = 8048524 * 1024;
    /// A cgroup v2 host: the unified hierarchy at /sys/fs/cgroup.
    const V2_MOUNTS: &str = "25 30 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
    /// A cgroup v1 host (a hybrid one: cgroup2 is mounted, but not at
    /// /sys/fs/cgroup), the memory controller at /sys/fs/cgroup/memory.
    const V1_MOUNTS: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
        35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:15 - cgroup cgroup rw,memory\n\
        41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

    #[test]
    fn cgroup_v2_reads_memory_max_at_the_mount_root() {
        let limited = root(&[
            ("proc/meminfo", MEMINFO),
            ("proc/self/mountinfo", V2_MOUNTS),
            ("proc/self/cgroup", "0::/kubepods/pod1/c1\n"),
            ("sys/fs/cgroup/memory.max", "536870912\n"),
            // The collector reads only the mount root's file, which is the
            // container's own in a cgroup namespace.
            ("sys/fs/cgroup/kubepods/pod1/c1/memory.max", "1024\n"),
        ]);
        assert_eq!(total_memory_under(limited.path()), Ok(536870912));
        for (name, files) in [
            ("max", vec![("sys/fs/cgroup/memory.max", "max\n")]),
            ("absent", vec![]),
        ] {
            let mut files = files;
            files.extend([
                ("proc/meminfo", MEMINFO),
                ("proc/self/mountinfo", V2_MOUNTS),
            ]);
            let dir = root(&files);
            assert_eq!(total_memory_under(dir.path()), Ok(HOST), "{name}");
        }
        // A limit above the host's memory is taken as it is, as the
        // collector takes it.
        let above = root(&[
            ("proc/meminfo", MEMINFO),
            ("proc/self/mountinfo", V2_MOUNTS),
            ("sys/fs/cgroup/memory.max", "99999999999999\n"),
        ]);
        assert_eq!(total_memory_under(above.path()), Ok(99999999999999));
        let garbage = root(&[
            ("proc/meminfo", MEMINFO),
            ("proc/self/mountinfo", V2_MOUNTS),
            ("sys/fs/cgroup/memory.max", "lots\n"),
        ]);
        let e = total_memory_under(garbage.path()).unwrap_err();
        assert!(e.contains("memory.max") && e.contains("lots"), "{e}");
    }

    #[test]
    fn cgroup_v1_reads_the_process_group_under_the_memory_mount() {
        let cgroup = "4:memory:/process_api/abc\n3:cpuset:/\n0::/\n";
        let limited = root(&[
            ("proc/meminfo", MEMINFO),
            ("proc/self/mountinfo", V1_MOUNTS),
            ("proc/self/cgroup", cgroup),
            (
                "sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes",
                "1073741824\n",
            ),
            ("sys/fs/cgroup/memory/memory.limit_in_bytes", "2048\n"),
        ]);
        assert_eq!(total_memory_under(limited.path()), Ok(1073741824));
        let unlimited = root(&[
            ("proc/meminfo", MEMINFO),
            ("proc/self/mountinfo", V1_MOUNTS),
            ("proc/self/cgroup", cgroup),
            (
                "sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
        ]);
        assert_eq!(total_memory_under(unlimited.path()), Ok(HOST));
        // A container sees its own group as the mount's root.
        let container = root(&[
            ("proc/meminfo", MEMINFO),
            (
                "proc/self/mountinfo",
                "35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n",
            ),
            ("proc/self/cgroup", "9:memory:/docker/abc\n"),
            ("sys/fs/cgroup/memory/memory.limit_in_bytes", "268435456\n"),
        ]);
        assert_eq!(total_memory_under(container.path()), Ok(268435456));
        // No memory controller: the host's total.
        let none = root(&[
            ("proc/meminfo", MEMINFO),
            ("proc/self/mountinfo", V1_MOUNTS),
            ("proc/self/cgroup", "3:cpuset:/\n"),
        ]);
        assert_eq!(total_memory_under(none.path()), Ok(HOST));
        // A group the controller's file is missing for is an error.
        let missing = root(&[
            ("proc/meminfo", MEMINFO),
            ("proc/self/mountinfo", V1_MOUNTS),
            ("proc/self/cgroup", cgroup),
        ]);
        let e = total_memory_under(missing.path()).unwrap_err();
        assert!(e.contains("memory.limit_in_bytes"), "{e}");
    }

    #[test]
    fn unreadable_process_files_are_errors() {
        let nothing = root(&[("proc/meminfo", MEMINFO)]);
        let e = total_memory_under(nothing.path()).unwrap_err();
        assert!(e.contains("mountinfo"), "{e}");
        let malformed = root(&[
            ("proc/meminfo", MEMINFO),
            (
                "proc/self/mountinfo",
                "35 31 0:32 / /sys/fs/cgroup/memory\n",
            ),
        ]);
        let e = total_memory_under(malformed.path()).unwrap_err();
        assert!(e.contains("malformed"), "{e}");
        let no_meminfo = root(&[("proc/self/mountinfo", V2_MOUNTS)]);
        let e = total_memory_under(no_meminfo.path()).unwrap_err();
        assert!(e.contains("meminfo"), "{e}");
    }

    #[test]
    fn this_process_has_a_total_memory() {
        let total = total_memory().expect("Linux /proc");
        assert!(total > 1 << 20, "{total}");
    }

    #[tokio::test]
    async fn shedding_requests_reach_every_holder_once() {
        let pressure = MemoryPressure::default();
        let mut a = pressure.shedding_requests();
        pressure.request_shedding(100);
        let mut b = pressure.clone().shedding_requests();
        pressure.request_shedding(0);
        pressure.request_shedding(20);
        // A holder that subscribes late sees only what came after.
        assert_eq!(b.take(), 20);
        a.arrived().await;
        assert_eq!(a.take(), 120);
        assert_eq!(a.take(), 0);
        let waiting = tokio::spawn(async move {
            a.arrived().await;
            a.take()
        });
        tokio::task::yield_now().await;
        pressure.request_shedding(7);
        assert_eq!(waiting.await.unwrap(), 7);
        assert_eq!(b.take(), 7);
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

    /// `statm`'s resident pages are `status`'s `VmRSS`: the same count,
    /// so the cheaper read measures what the limiter always measured.
    #[test]
    fn statm_and_status_agree_on_the_resident_set() {
        let page = page_size().expect("Linux has /proc/self/auxv");
        assert!(page >= 4096 && page.is_power_of_two(), "{page}");
        // The two reads are not one snapshot: retry until no page came or
        // went between them.
        let agreed = (0..100).any(|_| {
            let a = resident_bytes_from_status().expect("status");
            let b = resident_bytes().expect("statm");
            let c = resident_bytes_from_status().expect("status");
            a == c && a == b
        });
        assert!(agreed, "statm's resident pages never matched VmRSS");
    }

    #[test]
    fn statm_and_auxv_are_parsed() {
        assert_eq!(
            statm_resident_pages(b"5237 1621 903 2870 0 1064 0\n"),
            Some(1621)
        );
        assert_eq!(statm_resident_pages(b"5237"), None);
        assert_eq!(statm_resident_pages(b""), None);
        let pair = |k: usize, v: usize| {
            let mut out = k.to_ne_bytes().to_vec();
            out.extend_from_slice(&v.to_ne_bytes());
            out
        };
        let auxv = [pair(33, 7), pair(6, 16384), pair(0, 0)].concat();
        assert_eq!(auxv_page_size(&auxv), Some(16384));
        let ended = [pair(33, 7), pair(0, 0), pair(6, 4096)].concat();
        assert_eq!(auxv_page_size(&ended), None, "nothing after AT_NULL");
        assert_eq!(auxv_page_size(&[1, 2, 3]), None);
    }
}
