//! Giving freed memory back to the kernel.
//!
//! mimalloc (the global allocator, see `main.rs`) returns the pages of freed memory to the
//! kernel lazily: a thread does it while allocating, every 10,000 allocations or so, once
//! the memory has been free for a second. A shard that has gone quiet (a queue that is all
//! deferred, waiting an hour) allocates little, so what a burst of deliveries freed stayed
//! resident: tens of megabytes at a million queued recipients, counted in RSS as if the
//! queue needed them. Each shard's scheduler calls [`give_back`] every few seconds
//! instead.
//!
//! mimalloc also asks for transparent huge pages on its arenas (`MADV_HUGEPAGE`), and the
//! kernel's khugepaged then fills 2 MiB pages around what was live, bringing back what was
//! given back: RSS crept up by megabytes a minute with the server idle. The server turns
//! huge pages off for itself ([`no_huge_pages`]); a queue walks memory too sparsely for
//! fewer TLB misses to matter. Measured in `docs/benchmarks.md` ("Memory per queued
//! recipient").

/// Returns to the kernel every free page this thread's heap holds, and purges the
/// process's free arena pages now rather than a second later. A walk over the thread's
/// pages: fine every few seconds, not per message. Harmless when mimalloc is not the
/// global allocator (the library's tests), as it then holds next to nothing.
pub fn give_back() {
    // SAFETY: `mi_collect` takes no pointers and may be called from any thread at any
    // time; it only walks the allocator's own structures.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`, Linux 3.15),
/// for memory already mapped and to come, whatever the system setting. Best effort: a
/// kernel that refuses leaves the server as it was.
pub fn no_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integers only and changes nothing but the flag.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "transparent huge pages stay on");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn huge_pages_end_up_off_for_the_process() {
        super::no_huge_pages();
        // SAFETY: PR_GET_THP_DISABLE takes and changes nothing.
        let state = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(state, 1);
    }
}
