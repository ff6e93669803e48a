//! Which segments still hold something live, across all shards, and deleting the rest.
//!
//! Every record holds one reference on the segment it sits in, taken by the committer
//! when it writes the record (before anyone is told the record exists, so no reader can
//! race a deletion). A message drops the reference of its own record once all its
//! recipients are final; the references of its outcome records are dropped only when the
//! segment holding the message record is deleted ([`Segments::release_after`]): as long as
//! the message record can be replayed, the outcomes that say it is finished must be there
//! too, or a restart would deliver it again. A segment file is deleted when it has no
//! references left and is sealed (no longer appended to).
//!
//! A message deferred for long is copied forward (`spool::compact`): the copy's segment
//! takes an extra reference that is dropped only once the old copy's segment is deleted,
//! so every chain of `release_after` runs old copy, new copy, outcome records.
//!
//! Shared by all shards without a lock: a lock-free map of atomic counters.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use crossbeam::queue::SegQueue;
use crossbeam_skiplist::SkipMap;

use crate::spool::recover::segment_path;
use crate::spool::replay::SegmentKey;

#[derive(Debug, Default)]
struct Counter {
    refs: AtomicI64,
    sealed: AtomicBool,
    deleted: AtomicBool,
    /// References on other segments to drop when this one is deleted.
    dependents: SegQueue<SegmentKey>,
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

    /// Drops one reference; deletes the file if that was the last and it is sealed.
    pub fn release(&self, key: SegmentKey) {
        // A segment already deleted has nothing left to release.
        let Some(c) = self.counts.get(&key).map(|e| e.value().clone()) else {
            return;
        };
        if c.refs.fetch_sub(1, Ordering::AcqRel) == 1 && c.sealed.load(Ordering::Acquire) {
            self.delete(key, &c);
        }
    }

    /// Drops one reference on `first` and, once `first` is deleted, one on each of `then`.
    /// A finished message uses this: its record's segment first, its outcome records'
    /// segments after.
    pub fn release_after(&self, first: SegmentKey, then: impl IntoIterator<Item = SegmentKey>) {
        let c = self.counter(first);
        for key in then {
            if key == first {
                // Its own segment: the reference simply goes with it.
                c.refs.fetch_sub(1, Ordering::AcqRel);
            } else {
                c.dependents.push(key);
            }
        }
        if c.deleted.load(Ordering::Acquire) {
            // Deleted while the dependents were being added: drop them now.
            while let Some(key) = c.dependents.pop() {
                self.release(key);
            }
            return;
        }
        self.release(first);
    }

    /// Marks a segment as no longer appended to; deletes it at once if nothing is live.
    pub fn seal(&self, key: SegmentKey) {
        let c = self.counter(key);
        c.sealed.store(true, Ordering::Release);
        if c.refs.load(Ordering::Acquire) <= 0 {
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
        while let Some(dependent) = c.dependents.pop() {
            self.release(dependent);
        }
    }
}
