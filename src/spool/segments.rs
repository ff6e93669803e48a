//! Which segments still hold something live, across all shards, and deleting the rest.
//!
//! Every record holds one reference on the segment it sits in, taken by the committer
//! when it writes the record (before anyone is told the record exists, so no reader can
//! race a deletion). A message record's reference goes once the record is killed in place
//! (`spool::record`, the `DEAD` bit: durable before the release): when every recipient is
//! final, or when a newer copy of it is durable (`qmgr::compact`). The references of the
//! outcome and settled records about a message go once the message is finished, after the
//! kill: a killed record replays as nothing, so no outcome has to outlive it. A segment
//! file is deleted when it has no references left and is sealed (no longer appended to).
//!
//! Releases never wait on another segment, so no two segments can wait on each other: a
//! spool that has delivered everything drains to nothing.
//!
//! Shared by all shards without a lock: a lock-free map of atomic counters.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use crossbeam_skiplist::SkipMap;

use crate::runtime::memory::long_lived;
use crate::spool::location::{segment_path, SegmentKey};

/// Segment references held by a message's outcome and settled records: one entry per
/// segment with the number of records in it (a settle writes all of its records to one
/// segment, so the list stays short however many recipients and attempts there are).
pub type Held = Vec<(SegmentKey, u32)>;

/// Adds `n` records in `segment` to `held`. A message keeps its list while it is queued,
/// so the list grows in the long-lived heap.
pub fn hold(held: &mut Held, segment: SegmentKey, n: u32) {
    if n == 0 {
        return;
    }
    match held.iter_mut().find(|(s, _)| *s == segment) {
        Some((_, count)) => *count += n,
        None => long_lived(|| held.push((segment, n))),
    }
}

#[derive(Debug, Default)]
struct Counter {
    refs: AtomicI64,
    sealed: AtomicBool,
    deleted: AtomicBool,
}

/// Reference counts of every segment in the spool.
#[derive(Debug)]
pub struct Segments {
    spool: PathBuf,
    counts: SkipMap<SegmentKey, Arc<Counter>>,
}

impl Segments {
    /// An empty registry for the spool at `spool`.
    pub fn new(spool: PathBuf) -> Segments {
        Segments {
            spool,
            counts: SkipMap::new(),
        }
    }

    fn counter(&self, key: SegmentKey) -> Arc<Counter> {
        if let Some(e) = self.counts.get(&key) {
            return e.value().clone();
        }
        self.counts
            .get_or_insert(key, Arc::default())
            .value()
            .clone()
    }

    /// Adds `n` references to a segment.
    pub fn add(&self, key: SegmentKey, n: i64) {
        self.counter(key).refs.fetch_add(n, Ordering::AcqRel);
    }

    /// Drops `n` references; deletes the file if those were the last and it is sealed.
    pub fn release(&self, key: SegmentKey, n: i64) {
        // A segment already deleted has nothing left to release.
        let Some(c) = self.counts.get(&key).map(|e| e.value().clone()) else {
            return;
        };
        // SeqCst here and in `seal`: each side writes one flag and reads the other's (the
        // store-buffer pattern), and only a total order makes sure one of them sees both.
        if c.refs.fetch_sub(n, Ordering::SeqCst) == n && c.sealed.load(Ordering::SeqCst) {
            self.delete(key, &c);
        }
    }

    /// Drops the references of a list of `(segment, count)` entries.
    pub fn release_all(&self, entries: impl IntoIterator<Item = (SegmentKey, u32)>) {
        for (key, n) in entries {
            self.release(key, i64::from(n));
        }
    }

    /// Marks a segment as no longer appended to; deletes it at once if nothing is live.
    pub fn seal(&self, key: SegmentKey) {
        let c = self.counter(key);
        c.sealed.store(true, Ordering::SeqCst);
        if c.refs.load(Ordering::SeqCst) <= 0 {
            self.delete(key, &c);
        }
    }

    /// True once a segment is no longer appended to (or already deleted).
    pub fn is_sealed(&self, key: SegmentKey) -> bool {
        self.counts
            .get(&key)
            .is_none_or(|e| e.value().sealed.load(Ordering::Acquire))
    }

    /// References a segment holds now.
    pub fn refs(&self, key: SegmentKey) -> i64 {
        self.counts
            .get(&key)
            .map_or(0, |e| e.value().refs.load(Ordering::Acquire))
    }

    fn delete(&self, key: SegmentKey, c: &Counter) {
        if c.deleted.swap(true, Ordering::AcqRel) {
            return;
        }
        let path = segment_path(&self.spool, key.shard, key.seq);
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::debug!(segment = %path.display(), "deleted drained segment"),
            Err(e) => {
                tracing::warn!(segment = %path.display(), error = %e, "cannot delete segment")
            }
        }
        self.counts.remove(&key);
    }
}
