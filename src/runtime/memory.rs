//! Giving freed memory back to the kernel.
//!
//! mimalloc (the global allocator, see `main.rs`) returns the pages of freed memory to the
//! kernel lazily: a thread does it while allocating, every 10,000 allocations or so, once
//! the memory has been free for a second. A shard that has gone quiet (a queue that is all
//! deferred, waiting an hour) allocates little, so what a burst of deliveries freed stayed
//! resident: tens of megabytes at a million queued recipients, counted in RSS as if the
//! queue needed them. Each shard's scheduler calls [`give_back`] every few seconds
//! instead. Measured in `docs/benchmarks.md` ("Memory per queued recipient").

/// Returns to the kernel every free page this thread's heap holds, and purges the
/// process's free arena pages now rather than a second later. A walk over the thread's
/// pages: fine every few seconds, not per message. Harmless when mimalloc is not the
/// global allocator (the library's tests), as it then holds next to nothing.
pub fn give_back() {
    // SAFETY: `mi_collect` takes no pointers and may be called from any thread at any
    // time; it only walks the allocator's own structures.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
