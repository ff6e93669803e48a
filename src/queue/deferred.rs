//! One shard's deferred jobs, ordered by when they are due. Shard-local: the shard that
//! deferred a job brings it back to the ready queues, where any shard may take it.

use std::collections::BTreeMap;

use crate::queue::message::Job;

/// Jobs waiting for their next attempt.
#[derive(Debug, Default)]
pub struct Deferred {
    due: BTreeMap<(u64, u64), (String, Job)>,
    seq: u64,
}

impl Deferred {
    /// An empty timer.
    pub fn new() -> Deferred {
        Deferred::default()
    }

    /// Holds `job` for `domain` until `due_micros`.
    pub fn insert(&mut self, due_micros: u64, domain: String, job: Job) {
        self.seq += 1;
        self.due.insert((due_micros, self.seq), (domain, job));
    }

    /// Takes every job due at `now_micros`.
    pub fn pop_due(&mut self, now_micros: u64) -> Vec<(String, Job)> {
        let later = self.due.split_off(&(now_micros + 1, 0));
        std::mem::replace(&mut self.due, later)
            .into_values()
            .collect()
    }

    /// Jobs held.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// True when no job is held.
    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }
}
