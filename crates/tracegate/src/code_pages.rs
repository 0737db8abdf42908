//! Letting go of code pages that no longer run.
//!
//! Starting runs much code that never runs again (parsing the config,
//! building every component, the argument parser), and the kernel maps
//! each page of it, plus up to 64 KiB around every fault (fault-around,
//! which no advice turns off), into the process, where it stays counted in
//! the resident set; so do the pages a burst of load ran. Once tracegate
//! is ready, and then once a minute, this unmaps the pages of every
//! read-only file mapping (the executable's code and constants, the shared
//! libraries'). They stay in the page cache, and the code that runs
//! afterwards faults its own pages back in (a minor fault per 64 KiB): the
//! resident set becomes the code of the last minute, not of starting and
//! of every path ever taken (benches/RESULTS.md, "GPU-node footprint").
//!
//! Lossless: a private file mapping with no anonymous (copied-on-write)
//! page holds exactly the file's bytes, which the next access reads again.
//! Mappings with such pages (relocated data made read-only, code a
//! debugger patched) are left alone. This module, with `jemalloc`, is the
//! binary's only `unsafe` code: the one `madvise` call.
#![allow(unsafe_code)]

use std::ops::Range;
use std::time::Duration;

/// How often the code pages are let go after the first time.
pub const PERIOD: Duration = Duration::from_secs(60);

/// [`release`] now and then every `period`, for ever.
pub async fn release_every(period: Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let advised = release();
        tracing::debug!(advised, "code pages released");
    }
}

/// Unmaps the read-only file mappings' pages (see the module's comment).
/// Returns the bytes of address space advised; failures are logged at
/// debug level and otherwise ignored, as only memory is at stake.
pub fn release() -> usize {
    let smaps = match std::fs::read_to_string("/proc/self/smaps") {
        Ok(smaps) => smaps,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read /proc/self/smaps; code pages kept");
            return 0;
        }
    };
    let mut advised = 0;
    for range in releasable(&smaps) {
        // SAFETY: `range` is a whole mapping of this process, private,
        // read-only and file-backed with no anonymous page (`releasable`):
        // MADV_DONTNEED only drops page-table entries, and the next access
        // maps the same bytes from the file again. Nothing can write to it
        // in between, as it is not writable.
        let rc = unsafe {
            libc::madvise(
                range.start as *mut libc::c_void,
                range.end - range.start,
                libc::MADV_DONTNEED,
            )
        };
        if rc == 0 {
            advised += range.end - range.start;
        } else {
            let e = std::io::Error::last_os_error();
            tracing::debug!(error = %e, "madvise refused; code pages kept");
            break;
        }
    }
    advised
}

/// The address ranges in `smaps` (the text of `/proc/PID/smaps`) that are
/// private, not writable, backed by a file, and hold no anonymous page.
fn releasable(smaps: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    // The mapping being read, if it is a candidate so far.
    let mut current: Option<Range<usize>> = None;
    for line in smaps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            // A mapping's header: range, permissions, offset, device,
            // inode, path.
            current = None;
            let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) else {
                continue;
            };
            let perms = fields.next().unwrap_or("");
            let inode = fields.nth(2).unwrap_or("0");
            let path = fields.next().unwrap_or("");
            let read_only_private =
                perms.len() == 4 && perms.as_bytes()[1] == b'-' && perms.as_bytes()[3] == b'p';
            if read_only_private && inode != "0" && path.starts_with('/') && start < end {
                current = Some(start..end);
            }
        } else if first == "Anonymous:" {
            let anonymous = fields.next().and_then(|kb| kb.parse::<u64>().ok());
            if let Some(range) = current.take() {
                if anonymous == Some(0) {
                    out.push(range);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0a0000000-55d0a0200000 r--p 00000000 fd:01 1234    /usr/local/bin/tracegate
Size:               2048 kB
Rss:                 576 kB
Anonymous:             0 kB
55d0a0200000-55d0a1400000 r-xp 00200000 fd:01 1234    /usr/local/bin/tracegate
Size:              18432 kB
Rss:               11652 kB
Anonymous:             0 kB
55d0a1400000-55d0a1600000 r--p 01400000 fd:01 1234    /usr/local/bin/tracegate
Anonymous:           464 kB
55d0a1600000-55d0a1610000 rw-p 01600000 fd:01 1234    /usr/local/bin/tracegate
Anonymous:            20 kB
55d0a1610000-55d0a1700000 rw-p 00000000 00:00 0       [heap]
Anonymous:           120 kB
7f0000000000-7f0000010000 r-xs 00000000 fd:01 99      /dev/shm/shared
Anonymous:             0 kB
7f0000010000-7f0000020000 ---p 00000000 00:00 0 
Anonymous:             0 kB
7f0000020000-7f0000180000 r-xp 00028000 fd:01 77      /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0       [vdso]
Anonymous:             0 kB
";

    #[test]
    fn only_unmodified_read_only_private_file_mappings_are_released() {
        assert_eq!(
            releasable(SMAPS),
            vec![
                0x55d0a0000000..0x55d0a0200000,
                0x55d0a0200000..0x55d0a1400000,
                0x7f0000020000..0x7f0000180000,
            ]
        );
    }

    #[test]
    fn a_mapping_without_an_anonymous_line_is_kept() {
        let smaps = "7f0000020000-7f0000180000 r-xp 00028000 fd:01 77 /lib/libc.so.6\nRss: 4 kB\n";
        assert!(releasable(smaps).is_empty());
    }

    /// The tests that release this process's pages, one at a time.
    static RELEASING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// Constants in the executable's read-only data that only these
    /// tests read: whether their middle page is mapped tells whether a
    /// release unmapped it, whatever other tests fault in meanwhile. The
    /// middle page lies more than 64 KiB from the other constants, out of
    /// reach of the kernel's fault-around when those are read.
    static PROBE: [u8; 48 * 4096] = [7; 48 * 4096];
    const MIDDLE: usize = 24 * 4096;

    /// Reads the probe's middle page (mapping it) and returns its value.
    fn touch_probe() -> u8 {
        std::hint::black_box(&PROBE)[MIDDLE]
    }

    /// Whether the probe's middle page is mapped (`/proc/self/pagemap`'s
    /// "present" bit).
    fn probe_mapped() -> bool {
        use std::io::{Read, Seek, SeekFrom};
        let address = &PROBE[MIDDLE] as *const u8 as u64;
        let mut pagemap = std::fs::File::open("/proc/self/pagemap").unwrap();
        pagemap.seek(SeekFrom::Start(address / 4096 * 8)).unwrap();
        let mut entry = [0u8; 8];
        pagemap.read_exact(&mut entry).unwrap();
        u64::from_le_bytes(entry) >> 63 == 1
    }

    #[test]
    fn the_process_keeps_running_with_its_constants_unmapped() {
        let _one_at_a_time = RELEASING.blocking_lock();
        assert_eq!(touch_probe(), 7);
        assert!(probe_mapped());
        assert!(release() > 0);
        assert!(!probe_mapped(), "the probe's page is still mapped");
        // Read back from the file, as they were.
        assert_eq!(touch_probe(), 7);
        assert!(probe_mapped());
        let text = format!("{:?}", releasable(SMAPS));
        assert_eq!(text, "[94354525913088..94354528010240, 94354528010240..94354546884608, 139637976858624..139637978300416]");
    }

    #[tokio::test]
    async fn the_first_release_is_at_once_then_every_period() {
        let _one_at_a_time = RELEASING.lock().await;
        assert_eq!(touch_probe(), 7);
        let task = tokio::spawn(release_every(PERIOD));
        // The first tick is due at once: the task releases as soon as the
        // runtime gets to it, then waits for the next period.
        for _ in 0..1000 {
            if !probe_mapped() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(!probe_mapped(), "no release");
        assert_eq!(touch_probe(), 7);
        tokio::task::yield_now().await;
        assert!(probe_mapped(), "released again before the period");
        assert!(!task.is_finished());
        task.abort();
    }
}
