//! The allocator: queue state in a heap of its own, and freed memory given back to the
//! kernel.
//!
//! mimalloc (under [`Allocator`], the global allocator) returns the pages of freed memory
//! to the kernel lazily: a thread does it while allocating, every 10,000 allocations or
//! so, once the memory has been free for a second. A shard that has gone quiet (a queue that is all
//! deferred, waiting an hour) allocates little, so what a burst of deliveries freed stayed
//! resident: tens of megabytes at a million queued recipients, counted in RSS as if the
//! queue needed them. Each shard's queue manager calls [`give_back`] every few seconds
//! instead.
//!
//! mimalloc also asks for transparent huge pages on its arenas (`MADV_HUGEPAGE`), and the
//! kernel's khugepaged then fills 2 MiB pages around what was live, bringing back what was
//! given back: RSS crept up by megabytes a minute with the server idle. The server turns
//! huge pages off for itself ([`no_huge_pages`]); a queue walks memory too sparsely for
//! fewer TLB misses to matter. Measured in `docs/benchmarks.md` ("Memory per queued
//! recipient").
//!
//! Queue state lives for hours while everything around it lives for milliseconds. Left
//! together, a burst of mail leaves each of the allocator's 64 KiB pages holding a few
//! queued messages among thousands of freed session and delivery objects: the page cannot
//! go back, and at 100,000 queued recipients two thirds of the growth in RSS was such
//! pages. What the queue keeps is therefore allocated inside [`long_lived`], which the
//! global [`Allocator`] sends to a heap of its own (mimalloc's first-class heaps keep
//! their pages apart), so those pages fill densely and the burst's pages empty entirely.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use libmimalloc_sys as mi;

/// The global allocator: mimalloc, with allocations made inside [`long_lived`] taken from
/// the long-lived heap. Any block may be freed from anywhere; a block grown or shrunk goes
/// to the heap of the scope it is resized in (moved there if it was in the other).
pub struct Allocator;

thread_local! {
    /// Whether this thread is inside [`long_lived`]. Const-initialised and without a
    /// destructor, so reading it never allocates (it is read inside the allocator).
    static LONG_LIVED: Cell<bool> = const { Cell::new(false) };
}

/// The long-lived heap, made on first use. mimalloc 3 heaps take allocations from any
/// thread.
static HEAP: AtomicPtr<mi::mi_heap_t> = AtomicPtr::new(ptr::null_mut());

fn long_lived_heap() -> *mut mi::mi_heap_t {
    let heap = HEAP.load(Ordering::Acquire);
    if !heap.is_null() {
        return heap;
    }
    // SAFETY: `mi_heap_new` takes nothing and returns a heap or null.
    let made = unsafe { mi::mi_heap_new() };
    if made.is_null() {
        return made;
    }
    match HEAP.compare_exchange(ptr::null_mut(), made, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => made,
        Err(theirs) => {
            // Another thread made one first; this one holds no blocks yet.
            // SAFETY: `made` is ours alone and empty.
            unsafe { mi::mi_heap_delete(made) };
            theirs
        }
    }
}

/// The heap for an allocation now: the long-lived one inside [`long_lived`], else none
/// (null: mimalloc's default).
fn heap_now() -> *mut mi::mi_heap_t {
    if LONG_LIVED.with(Cell::get) {
        long_lived_heap()
    } else {
        ptr::null_mut()
    }
}

// SAFETY: every call forwards to mimalloc's aligned functions, which meet `GlobalAlloc`'s
// contract for any layout; a null heap (none could be made) falls back to the default.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let heap = heap_now();
        if heap.is_null() {
            mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
        } else {
            mi::mi_heap_malloc_aligned(heap, layout.size(), layout.align()) as *mut u8
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let heap = heap_now();
        if heap.is_null() {
            mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
        } else {
            mi::mi_heap_zalloc_aligned(heap, layout.size(), layout.align()) as *mut u8
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr as *mut c_void);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let heap = heap_now();
        if heap.is_null() {
            mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
        } else {
            mi::mi_heap_realloc_aligned(heap, ptr as *mut c_void, new_size, layout.align())
                as *mut u8
        }
    }
}

/// Runs `f` with its allocations taken from the long-lived heap (when [`Allocator`] is the
/// global allocator; otherwise it only runs `f`). For what stays for hours: queued
/// messages with their recipients and states, deferred entries, per-domain state, and
/// what the server and its shards set up at start. What `f` frees is unaffected.
pub fn long_lived<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            LONG_LIVED.with(|l| l.set(self.0));
        }
    }
    let _restore = Restore(LONG_LIVED.with(|l| l.replace(true)));
    f()
}

/// Returns to the kernel every free page this thread holds, in the default heap and in its
/// part of the long-lived one (mimalloc 3 keeps a part per thread; the main thread's,
/// which holds what start-up and the requeue made, is never walked, as it frees little),
/// and purges the process's free arena pages now rather than a second later. A walk over
/// the thread's pages: fine every few seconds, not per message. Harmless when mimalloc is not the
/// global allocator (the library's tests), as it then holds next to nothing.
pub fn give_back() {
    // SAFETY: `mi_collect` takes no pointers and may be called from any thread at any
    // time; it only walks the allocator's own structures.
    unsafe { mi::mi_collect(true) }
    let heap = HEAP.load(Ordering::Acquire);
    if !heap.is_null() {
        // SAFETY: the heap lives as long as the process; collecting is thread-safe.
        unsafe { mi::mi_heap_collect(heap, true) }
    }
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
    use super::*;

    extern "C" {
        // mimalloc 3's own test of ownership; the binding declares it for mimalloc 2 only.
        fn mi_heap_contains(heap: *const mi::mi_heap_t, p: *const c_void) -> bool;
    }

    /// Allocates through [`Allocator`] directly (the library's tests run on the system
    /// allocator): where does a block of `size` octets land?
    fn in_long_lived_heap(layout: Layout) -> (bool, *mut u8) {
        // SAFETY: a non-zero layout; the block is freed by the caller through `dealloc`.
        let p = unsafe { Allocator.alloc(layout) };
        assert!(!p.is_null());
        let heap = HEAP.load(Ordering::Acquire);
        // SAFETY: `mi_heap_contains` only compares the pointer with the heap's pages.
        let inside = !heap.is_null() && unsafe { mi_heap_contains(heap, p.cast()) };
        (inside, p)
    }

    #[test]
    fn long_lived_allocations_get_pages_of_their_own() {
        let small = Layout::from_size_align(48, 8).unwrap();
        let (outside, a) = in_long_lived_heap(small);
        let (inside, b) = long_lived(|| in_long_lived_heap(small));
        let (after, c) = in_long_lived_heap(small);
        assert!(!outside && inside && !after, "{outside} {inside} {after}");
        // Nested scopes end where they began.
        let (nested, d) = long_lived(|| {
            long_lived(|| {});
            in_long_lived_heap(small)
        });
        assert!(nested);
        // Growing a long-lived block inside the scope keeps it there, aligned.
        let big = Layout::from_size_align(64, 64).unwrap();
        let (_, e) = long_lived(|| in_long_lived_heap(big));
        // SAFETY: `e` came from `Allocator` with `big`; the new size is non-zero.
        let e = long_lived(|| unsafe { Allocator.realloc(e, big, 4096) });
        assert_eq!(e as usize % 64, 0);
        let heap = HEAP.load(Ordering::Acquire);
        // SAFETY: as above.
        assert!(unsafe { mi_heap_contains(heap, e.cast()) });
        // Blocks of either heap are freed from anywhere, here from another thread.
        let grown = Layout::from_size_align(4096, 64).unwrap();
        let blocks = [(a, small), (b, small), (c, small), (d, small), (e, grown)]
            .map(|(p, layout)| (p as usize, layout));
        std::thread::spawn(move || {
            for (p, layout) in blocks {
                // SAFETY: each block came from `Allocator` with this layout, freed once.
                unsafe { Allocator.dealloc(p as *mut u8, layout) };
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn huge_pages_end_up_off_for_the_process() {
        super::no_huge_pages();
        // SAFETY: PR_GET_THP_DISABLE takes and changes nothing.
        let state = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(state, 1);
    }
}
