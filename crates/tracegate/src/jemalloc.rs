//! jemalloc as the global allocator, and the one call that gives its freed
//! pages back to the OS (the memory limiter's release). jemalloc's control
//! interface is C, which is why this module, alone in the binary, may use
//! `unsafe`.
#![allow(unsafe_code)]

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Purges every arena's dirty pages back to the OS.
pub fn purge_arenas() {
    // `arena.<MALLCTL_ARENAS_ALL>.purge` (4096 is MALLCTL_ARENAS_ALL).
    const PURGE_ALL: &[u8] = b"arena.4096.purge\0";
    // SAFETY: the name is NUL-terminated and this mallctl takes neither an
    // old nor a new value, so every pointer is null and the length 0.
    let code = unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if code != 0 {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| tracing::warn!(code, "jemalloc refused to purge its arenas"));
    }
}
