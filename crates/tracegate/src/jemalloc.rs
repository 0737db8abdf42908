//! jemalloc as the global allocator, and the memory limiter's two calls
//! into it: how many bytes are allocated (its statistics, refreshed on each
//! read) and giving freed pages back to the OS. jemalloc's control
//! interface is C, which is why this module, alone in the binary, may use
//! `unsafe`.
#![allow(unsafe_code)]

use std::ffi::{c_void, CStr};

use tracegate_pipeline::memory::Allocator;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts (before `main`): background
/// threads rather than the request path return freed pages to the OS, over
/// five seconds (jemalloc's default is ten). Long enough that the memory a
/// decided trace or a sent batch frees is reused by the data arriving in
/// the next seconds instead of returned and faulted in fresh (a quarter of
/// a second made page faults and returning pages 15 % of the tail
/// pipeline's CPU; benches/RESULTS.md, "Seed pipeline (goal 4)"). The
/// memory limiter counts these pages and has them returned at once when
/// they alone would make it refuse data ([`freed_bytes`]). `MALLOC_CONF`
/// (as `_RJEM_MALLOC_CONF`) still overrides them.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: Option<&'static std::ffi::c_char> = Some(
    // SAFETY: a pointer to the first byte of a static, NUL-terminated
    // string, which jemalloc reads as a C string.
    unsafe { &*OPTIONS.as_ptr() },
);

const OPTIONS: &CStr = c"background_thread:true,dirty_decay_ms:5000";

/// The hooks the binary hands the memory limiter.
pub fn hooks() -> Allocator {
    Allocator {
        live_bytes: allocated_bytes,
        release: purge_arenas,
        freed_bytes,
    }
}

/// Bytes the program has allocated and not freed (`stats.allocated`, read
/// after an `epoch` refresh, so at most as old as this call).
pub fn allocated_bytes() -> Option<u64> {
    refresh_stats()?;
    read_size(c"stats.allocated")
}

/// Bytes of pages the program has freed that jemalloc still holds, not yet
/// returned to the OS (every arena's dirty and muzzy pages): resident, and
/// gone at once with [`purge_arenas`].
pub fn freed_bytes() -> Option<u64> {
    refresh_stats()?;
    let page = read_size(c"arenas.page")?;
    let dirty = read_size(c"stats.arenas.4096.pdirty")?;
    let muzzy = read_size(c"stats.arenas.4096.pmuzzy")?;
    Some((dirty + muzzy) * page)
}

/// jemalloc's statistics are snapshots taken when `epoch` is written.
fn refresh_stats() -> Option<()> {
    let mut epoch: u64 = 1;
    // SAFETY: the name is NUL-terminated; `epoch` takes and returns a u64,
    // and both pointers point at one with its size given.
    let code = unsafe {
        let mut len = std::mem::size_of::<u64>();
        let ptr: *mut u64 = &mut epoch;
        tikv_jemalloc_sys::mallctl(
            c"epoch".as_ptr(),
            ptr.cast::<c_void>(),
            &mut len,
            ptr.cast::<c_void>(),
            std::mem::size_of::<u64>(),
        )
    };
    (code == 0).then_some(()).or_else(|| {
        warn_once(code, "jemalloc refused to refresh its statistics");
        None
    })
}

/// A `size_t` statistic.
fn read_size(name: &CStr) -> Option<u64> {
    let mut value: usize = 0;
    let mut len = std::mem::size_of::<usize>();
    // SAFETY: the name is NUL-terminated and the statistic is a size_t, read
    // into `value` whose size `len` gives; nothing is written.
    let code = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            (&mut value as *mut usize).cast::<c_void>(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if code != 0 {
        warn_once(code, "jemalloc refused to report its statistics");
        return None;
    }
    Some(value as u64)
}

/// Purges every arena's dirty pages back to the OS.
pub fn purge_arenas() {
    // `arena.<MALLCTL_ARENAS_ALL>.purge` (4096 is MALLCTL_ARENAS_ALL).
    const PURGE_ALL: &CStr = c"arena.4096.purge";
    // SAFETY: the name is NUL-terminated and this mallctl takes neither an
    // old nor a new value, so every pointer is null and the length 0.
    let code = unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if code != 0 {
        warn_once(code, "jemalloc refused to purge its arenas");
    }
}

fn warn_once(code: i32, message: &'static str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| tracing::warn!(code, "{message}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statistics and purges are process-wide: tests that allocate,
    /// free or purge and then read them take turns.
    static STATS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn stats_alone() -> std::sync::MutexGuard<'static, ()> {
        STATS.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The options this binary gives jemalloc are in force.
    #[test]
    fn freed_pages_are_returned_over_five_seconds_by_background_threads() {
        let mut decay: isize = 0;
        let mut len = std::mem::size_of::<isize>();
        let mut on = false;
        let mut bool_len = std::mem::size_of::<bool>();
        // SAFETY: NUL-terminated names; `opt.dirty_decay_ms` is an ssize_t
        // and `opt.background_thread` a bool, read into values of those
        // types whose sizes are given.
        let codes = unsafe {
            [
                tikv_jemalloc_sys::mallctl(
                    c"opt.dirty_decay_ms".as_ptr(),
                    (&mut decay as *mut isize).cast::<c_void>(),
                    &mut len,
                    std::ptr::null_mut(),
                    0,
                ),
                tikv_jemalloc_sys::mallctl(
                    c"opt.background_thread".as_ptr(),
                    (&mut on as *mut bool).cast::<c_void>(),
                    &mut bool_len,
                    std::ptr::null_mut(),
                    0,
                ),
            ]
        };
        assert_eq!(codes, [0, 0]);
        assert_eq!(decay, 5000);
        assert!(on);
    }

    /// The statistic follows what this thread allocates and frees, at once.
    #[test]
    fn allocated_bytes_follow_allocations() {
        let _alone = stats_alone();
        let before = allocated_bytes().expect("jemalloc statistics are built in");
        let block = vec![1u8; 64 << 20];
        let during = allocated_bytes().unwrap();
        assert!(
            during >= before + (60 << 20),
            "{before} then {during} with 64 MiB more allocated"
        );
        drop(std::hint::black_box(block));
        let after = allocated_bytes().unwrap();
        assert!(
            after + (60 << 20) <= during,
            "{during} then {after} after freeing 64 MiB"
        );
        purge_arenas();
    }

    /// Freed pages are counted until they are purged.
    #[test]
    fn freed_bytes_count_pages_held_until_purged() {
        let _alone = stats_alone();
        purge_arenas();
        let before = freed_bytes().expect("jemalloc statistics are built in");
        // Blocks below jemalloc's oversize threshold, so that they come
        // from the arenas whose freed pages are kept.
        let blocks: Vec<Vec<u8>> = (0..32).map(|_| vec![1u8; 1 << 20]).collect();
        drop(std::hint::black_box(blocks));
        let held = freed_bytes().unwrap();
        assert!(
            held >= before + (16 << 20),
            "{before} then {held} after freeing 32 MiB"
        );
        purge_arenas();
        let after = freed_bytes().unwrap();
        assert!(
            after < held - (16 << 20),
            "{held} then {after} after a purge"
        );
    }
}
