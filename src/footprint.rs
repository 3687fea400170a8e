//! Keeps the daemon's resident memory close to what it actually holds: gateways in these parks
//! have 512 MB to 2 GB, shared with the broker and the OS.
//!
//! Owns: the C allocator's tuning (glibc only; elsewhere these do nothing). Must not touch:
//! anything else; what the daemon keeps is each module's own business.
//!
//! The crate's only `unsafe`: two libc calls that take no pointers.
#![allow(unsafe_code)]

/// Limits glibc to two malloc arenas. By default it creates up to eight per core as threads
/// contend, each keeping freed memory of its own; for a daemon whose hot paths are a few
/// tasks this costs nothing measurable in speed and some 15 MB of RSS under load. An operator's
/// `MALLOC_ARENA_MAX` wins. Call before the runtime starts its threads.
pub fn limit_allocator_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a tuning parameter; called before other threads exist.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Returns memory freed by start-up (the configuration's parse, the rule binding's scratch)
/// to the OS instead of leaving it counted against the process.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages of the allocator's own heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}
