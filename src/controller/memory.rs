//! Giving freed memory back to the system.
//!
//! glibc's allocator keeps memory freed by a burst (the pages of a full
//! pod list at start-up or after a relist, a takeover's read of every
//! stored report) mapped in the process, so the process' RSS stays at the
//! burst's peak although the heap in use is back to the index's size (the
//! 10,000-pod load run: 50 MiB before a restart, 95 MiB after it).
//! `malloc_trim` hands the free pages back; it is called after such bursts
//! and on the 60 s GC tick. Other allocators (musl) return memory on their
//! own: there it does nothing.

/// Returns freed heap memory to the system (glibc); a no-op elsewhere.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims the allocator's own free
    // lists; it takes no pointer and is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
