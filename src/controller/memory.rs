//! The process' allocator, and giving freed memory back to the system.
//!
//! glibc's allocator keeps memory freed by a burst (the pages of a full
//! pod list at start-up or after a relist, a takeover's read of every
//! stored report) mapped in the process, so the process' RSS stays at the
//! burst's peak although the heap in use is back to the index's size (the
//! 10,000-pod load run: 50 MiB before a restart, 95 MiB after it).
//! `malloc_trim` hands the free pages back; it is called after such bursts
//! and on the 60 s GC tick.
//!
//! The image's binary is built with the `jemalloc` feature: jemalloc is
//! the global allocator (src/main.rs), a background thread returns pages a second after
//! they were freed (`dirty_decay_ms:1000`, none kept half-returned), and
//! [`release_free`] purges every arena at once after a burst. The
//! 5,000-pod load: RSS after a restart 33-36 against 56-64 MiB with glibc
//! (README, "jemalloc in the image"). `_RJEM_MALLOC_CONF` overrides the
//! options at run time.

/// jemalloc's options, read before `main` (jemalloc's `malloc_conf`).
#[cfg(feature = "jemalloc")]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static JEMALLOC_CONF: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// The allocator the process runs with, for the start-up log line.
pub fn allocator() -> String {
    #[cfg(feature = "jemalloc")]
    {
        let background: bool = jemalloc_read(c"opt.background_thread").unwrap_or(false);
        let version = jemalloc_read::<*const std::ffi::c_char>(c"version")
            // SAFETY: jemalloc's "version" is a static NUL-terminated string.
            .map(|v| {
                unsafe { std::ffi::CStr::from_ptr(v) }
                    .to_string_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        format!("jemalloc {version}, background_thread {background}")
    }
    #[cfg(not(feature = "jemalloc"))]
    "the system's malloc".to_string()
}

/// One of jemalloc's values by name; None if jemalloc refuses the name.
#[cfg(feature = "jemalloc")]
fn jemalloc_read<T: Copy>(name: &std::ffi::CStr) -> Option<T> {
    let mut value = std::mem::MaybeUninit::<T>::uninit();
    let mut len = size_of::<T>();
    // SAFETY: the callers name values of type T; jemalloc writes at most
    // `len` bytes and says how many it wrote.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            &raw mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    // SAFETY: rc 0 with len = size_of::<T>() means the value was written.
    (rc == 0 && len == size_of::<T>()).then(|| unsafe { value.assume_init() })
}

/// Tables smaller than this are never shrunk: not worth a rehash.
const TRIM_ABOVE: usize = 64;

/// A table a burst grew gives its room back once it holds under a
/// quarter of it: shrunk to twice what it holds (so a table that fills
/// again is not shrunk on every removal). A hash table keeps its largest
/// size: the writer's queue, whose entries carry a whole report status
/// (about 500 bytes), kept 8.5 MB after the 10,000 writes a restart
/// queued at 10,000 pods had been written (heaptrack, README "jemalloc in
/// the image"). The size to shrink to, if it should.
fn trimmed(len: usize, capacity: usize) -> Option<usize> {
    (capacity > TRIM_ABOVE && len * 4 < capacity).then_some(len * 2)
}

/// Gives a map's room back (`trimmed`).
pub fn trim_map<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher>(
    map: &mut std::collections::HashMap<K, V, S>,
) {
    if let Some(to) = trimmed(map.len(), map.capacity()) {
        map.shrink_to(to);
    }
}

/// Gives a set's room back (`trimmed`).
pub fn trim_set<K: Eq + std::hash::Hash, S: std::hash::BuildHasher>(
    set: &mut std::collections::HashSet<K, S>,
) {
    if let Some(to) = trimmed(set.len(), set.capacity()) {
        set.shrink_to(to);
    }
}

/// Gives a queue's room back (`trimmed`).
pub fn trim_deque<T>(q: &mut std::collections::VecDeque<T>) {
    if let Some(to) = trimmed(q.len(), q.capacity()) {
        q.shrink_to(to);
    }
}

/// Returns freed heap memory to the system now.
pub fn release_free() {
    #[cfg(feature = "jemalloc")]
    // SAFETY: "arena.<MALLCTL_ARENAS_ALL>.purge" (4096) takes no old or
    // new value; the name is a NUL-terminated string that outlives the call.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
    #[cfg(all(not(feature = "jemalloc"), target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims the allocator's own free
    // lists; it takes no pointer and is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod trim_tests {
    use std::collections::{HashMap, VecDeque};

    #[test]
    fn a_drained_map_gives_its_room_back_and_a_full_one_keeps_it() {
        let mut m: HashMap<u32, [u8; 512]> = (0..10_000).map(|i| (i, [0; 512])).collect();
        let full = m.capacity();
        super::trim_map(&mut m);
        assert_eq!(m.capacity(), full, "a full map is not shrunk");
        for i in 0..9_990 {
            m.remove(&i);
            super::trim_map(&mut m);
        }
        assert_eq!(m.len(), 10);
        assert!(
            m.capacity() <= 2 * super::TRIM_ABOVE,
            "{} of {full}",
            m.capacity()
        );
        let mut q: VecDeque<u32> = (0..10_000).collect();
        while q.len() > 10 {
            q.pop_front();
            super::trim_deque(&mut q);
        }
        assert!(q.capacity() <= 2 * super::TRIM_ABOVE, "{}", q.capacity());
    }
}

#[cfg(all(test, feature = "jemalloc"))]
mod tests {
    /// The options string above is the one jemalloc runs with.
    #[test]
    fn jemalloc_runs_with_the_options_compiled_in() {
        let desc = super::allocator();
        assert!(desc.starts_with("jemalloc 5."), "{desc}");
        assert!(
            desc.ends_with("background_thread true"),
            "malloc_conf was not linked: {desc}"
        );
        let decay: isize = super::jemalloc_read(c"opt.dirty_decay_ms").unwrap();
        assert_eq!(decay, 1000);
    }
}
