//! One shard's deferred recipients, ordered by when they are due. Shard-local: the shard
//! that deferred them brings them back to the ready queues, where any shard may take them.
//!
//! Held per recipient, not per job. A list spread over many domains makes jobs of one
//! recipient each, so whatever a held job costs (its domain, its index list, a timer
//! node) is paid per queued recipient. Here a recipient costs one 16-octet entry (the
//! message, its index, its attempts) in the vector of its slot, a 100 ms span of due
//! times; retry jitter spreads a list's recipients over seconds to minutes, so slots are
//! shared by many and their own cost vanishes. When a slot comes due its entries are
//! handed back grouped by message and split into jobs again (by domain, within the
//! per-transaction limit), the way fresh recipients are.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::queue::message::{Job, QueuedMessage};
use crate::runtime::memory::long_lived;

/// The span of due times one slot holds. A recipient comes back at most this late, which
/// next to retry delays of minutes is nothing, and a slot is shared by more recipients
/// the longer it is.
const SLOT_MICROS: u64 = 100_000;

/// One deferred recipient.
#[derive(Debug)]
struct Entry {
    message: Arc<QueuedMessage>,
    index: u32,
    attempts: u32,
}

/// Recipients waiting for their next attempt.
#[derive(Debug, Default)]
pub struct Deferred {
    /// Slot number (due time divided by [`SLOT_MICROS`], rounded up) to its recipients, in
    /// the order they were deferred.
    slots: BTreeMap<u64, Vec<Entry>>,
    len: usize,
}

/// Recipients of one message that came due: `(index, attempts so far)`.
pub type DueRecipients = (Arc<QueuedMessage>, Vec<(u32, u32)>);

impl Deferred {
    /// An empty timer.
    pub fn new() -> Deferred {
        Deferred::default()
    }

    /// Holds the recipients of `job` until `due_micros`.
    pub fn insert(&mut self, due_micros: u64, job: Job) {
        let n = job.recipients.len();
        // Slots live for the whole retry delay: their map and vectors go in the
        // long-lived heap.
        long_lived(|| {
            let slot = self
                .slots
                .entry(due_micros.div_ceil(SLOT_MICROS))
                .or_default();
            if slot.capacity() - slot.len() < n {
                // Grow by a quarter rather than double: a doubled vector would hold a
                // third of its room empty on average.
                slot.reserve_exact(n.max(slot.len() / 4).max(4));
            }
            slot.extend(job.recipients.iter().map(|&index| Entry {
                message: job.message.clone(),
                index,
                attempts: job.attempts,
            }));
        });
        self.len += n;
    }

    /// Takes every recipient due at `now_micros` (never one due later), grouped by message:
    /// recipients deferred together (one job) come back together.
    pub fn pop_due(&mut self, now_micros: u64) -> Vec<DueRecipients> {
        let later = self.slots.split_off(&(now_micros / SLOT_MICROS + 1));
        let due = std::mem::replace(&mut self.slots, later);
        let mut out: Vec<DueRecipients> = Vec::new();
        for entry in due.into_values().flatten() {
            self.len -= 1;
            match out.last_mut() {
                Some((message, recipients)) if Arc::ptr_eq(message, &entry.message) => {
                    recipients.push((entry.index, entry.attempts));
                }
                _ => out.push((entry.message, vec![(entry.index, entry.attempts)])),
            }
        }
        out
    }

    /// Recipients held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no recipient is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::message::jobs_for;
    use crate::spool::record::MessageId;
    use crate::spool::replay::SegmentKey;

    fn message(n: u32, recipients: &[&str]) -> Arc<QueuedMessage> {
        Arc::new(QueuedMessage::new(
            MessageId::new(1, 0, n),
            SegmentKey { shard: 0, seq: 1 },
            16,
            0,
            "s@x.test".into(),
            recipients,
            false,
            false,
            100,
            vec![0; recipients.len()],
        ))
    }

    fn job(message: &Arc<QueuedMessage>, recipients: &[u32], attempts: u32) -> Job {
        Job {
            message: message.clone(),
            recipients: recipients.into(),
            attempts,
        }
    }

    fn shape(due: &[DueRecipients]) -> Vec<(MessageId, Vec<(u32, u32)>)> {
        due.iter().map(|(m, r)| (m.id, r.clone())).collect()
    }

    #[test]
    fn nothing_comes_back_before_it_is_due() {
        let a = message(1, &["a@a.test", "b@b.test", "c@a.test"]);
        let mut d = Deferred::new();
        d.insert(5_000_050, job(&a, &[0, 2], 1));
        d.insert(5_300_000, job(&a, &[1], 2));
        assert_eq!(d.len(), 3);
        for now in [0, 4_999_999, 5_000_049] {
            assert!(d.pop_due(now).is_empty(), "at {now}");
        }
        // At most one slot late.
        let due = d.pop_due(5_000_050 + SLOT_MICROS);
        assert_eq!(shape(&due), vec![(a.id, vec![(0, 1), (2, 1)])]);
        assert_eq!(d.len(), 1);
        assert!(d.pop_due(5_299_999).is_empty());
        assert_eq!(shape(&d.pop_due(5_300_000)), vec![(a.id, vec![(1, 2)])]);
        assert!(d.is_empty());
        assert!(d.pop_due(u64::MAX / 2).is_empty());
    }

    #[test]
    fn a_job_comes_back_as_the_same_jobs() {
        let a = message(1, &["a@a.test", "b@b.test", "c@a.test", "d@a.test"]);
        let b = message(2, &["x@b.test"]);
        let mut d = Deferred::new();
        // Two messages in one slot, a's jobs around b's.
        d.insert(1_000_000, job(&a, &[0, 2, 3], 1));
        d.insert(1_000_001, job(&b, &[0], 3));
        d.insert(1_000_002, job(&a, &[1], 1));
        let due = d.pop_due(2_000_000);
        assert_eq!(
            shape(&due),
            vec![
                (a.id, vec![(0, 1), (2, 1), (3, 1)]),
                (b.id, vec![(0, 3)]),
                (a.id, vec![(1, 1)]),
            ]
        );
        // Split again, they make the jobs they were: by domain, within the limit.
        let jobs: Vec<(String, Vec<u32>, u32)> = due
            .iter()
            .flat_map(|(m, r)| jobs_for(m, r.iter().copied(), |_| 2))
            .map(|(domain, j)| (domain, j.recipients.to_vec(), j.attempts))
            .collect();
        assert_eq!(
            jobs,
            vec![
                ("a.test".to_string(), vec![0, 2], 1),
                ("a.test".to_string(), vec![3], 1),
                ("b.test".to_string(), vec![0], 3),
                ("b.test".to_string(), vec![1], 1),
            ]
        );
        assert!(d.is_empty());
    }
}
