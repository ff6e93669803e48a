//! One shard's deferred recipients, ordered by when they are due. Shard-local: the shard
//! that deferred them brings them back to the ready queues, where any shard may take them.
//!
//! Held per recipient, not per job. A list spread over many domains makes jobs of one
//! recipient each, so whatever a held job costs (its domain, its index list, a timer
//! node) is paid per queued recipient. Here a recipient costs one 16-octet entry (the
//! message, its index, its attempts) in a slot, a span of due times. When a slot comes due
//! its entries are handed back grouped by message and split into jobs again (by domain,
//! within the per-transaction limit), the way fresh recipients are.
//!
//! A slot spans a power of two times 100 ms, up to a sixty-fourth of the delay but at
//! least 100 ms and at most 51.2 s, so a recipient comes back at most that late (never
//! early). Retry jitter (±10 %) then spreads a list over a score of slots rather than
//! thousands for delays up to an hour, and over a few hundred for a day. A slot's entries
//! sit in chunks that are allocated at their final size and never grown, the first small
//! and each next one twice as large up to 4 KiB: a vector grown in place would free its
//! old block at every step, and as a list fills every slot at once, the slots' steps
//! interleave and leave those freed blocks pinned between the ones that stay (16 MB at a
//! million queued recipients, measured).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::queue::message::{Job, QueuedMessage};
use crate::runtime::memory::long_lived;

/// The shortest span of due times one slot holds, and the unit of slot numbers.
const SLOT_MICROS: u64 = 100_000;

/// The longest span (51.2 s): a recipient deferred for hours comes back at most that late.
const MAX_SLOT_MICROS: u64 = 512 * SLOT_MICROS;

/// Entries in a slot's first chunk, and in its largest (16 octets each: 4 KiB).
const FIRST_CHUNK: usize = 4;
const MAX_CHUNK: usize = 256;

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
    /// Slot number (the end of the slot's span divided by [`SLOT_MICROS`]) to its
    /// recipients in chunks, in the order they were deferred.
    slots: BTreeMap<u64, Vec<Vec<Entry>>>,
    len: usize,
}

/// Recipients of one message that came due: `(index, attempts so far)`.
pub type DueRecipients = (Arc<QueuedMessage>, Vec<(u32, u32)>);

/// What [`Deferred::pop_due`] found: the recipients due, and when the next ones are.
#[derive(Debug, Default)]
pub struct Due {
    /// Recipients due now, grouped by message.
    pub recipients: Vec<DueRecipients>,
    /// When the earliest recipient still held comes due, microseconds since the epoch
    /// (the end of its slot); `None` when none is held. The queue manager sleeps until
    /// then instead of looking on a tick.
    pub next_micros: Option<u64>,
}

impl Deferred {
    /// An empty timer.
    pub fn new() -> Deferred {
        Deferred::default()
    }

    /// Holds the recipients of `job` until `due_micros`, deferred at `now_micros`: they
    /// come back no earlier, and later by at most their slot's span (a sixty-fourth of the
    /// delay, or 100 ms for delays under 6.4 s; see the module's text).
    pub fn insert(&mut self, now_micros: u64, due_micros: u64, job: Job) {
        let delay = due_micros.saturating_sub(now_micros);
        // A power of two, so that slots of neighbouring delays share their boundaries.
        let width = (delay / 64 / SLOT_MICROS).clamp(1, MAX_SLOT_MICROS / SLOT_MICROS);
        let width = 1 << width.ilog2();
        let slot = due_micros.div_ceil(SLOT_MICROS).div_ceil(width) * width;
        // Slots live for the whole retry delay: their map and chunks go in the
        // long-lived heap.
        long_lived(|| {
            let chunks = self.slots.entry(slot).or_default();
            for &index in job.recipients.iter() {
                let entry = Entry {
                    message: job.message.clone(),
                    index,
                    attempts: job.attempts,
                };
                match chunks.last_mut() {
                    Some(chunk) if chunk.len() < chunk.capacity() => chunk.push(entry),
                    last => {
                        let room = last.map_or(FIRST_CHUNK, |c| (c.capacity() * 2).min(MAX_CHUNK));
                        let mut chunk = Vec::with_capacity(room);
                        chunk.push(entry);
                        chunks.push(chunk);
                    }
                }
            }
        });
        self.len += job.recipients.len();
    }

    /// Takes every recipient due at `now_micros` (never one due later), grouped by message:
    /// recipients deferred together (one job) come back together; says when the next
    /// ones are due.
    pub fn pop_due(&mut self, now_micros: u64) -> Due {
        let mut out: Vec<DueRecipients> = Vec::new();
        // Slot by slot from the front (not `split_off`, which allocates a new edge of the
        // tree at every call, and this is called every few milliseconds).
        while let Some(first) = self.slots.first_entry() {
            if *first.key() > now_micros / SLOT_MICROS {
                break;
            }
            for entry in first.remove().into_iter().flatten() {
                self.len -= 1;
                match out.last_mut() {
                    Some((message, recipients)) if Arc::ptr_eq(message, &entry.message) => {
                        recipients.push((entry.index, entry.attempts));
                    }
                    _ => out.push((entry.message, vec![(entry.index, entry.attempts)])),
                }
            }
        }
        Due {
            recipients: out,
            next_micros: self.next_due(),
        }
    }

    /// When the earliest recipient held comes due (see [`Due::next_micros`]).
    pub fn next_due(&self) -> Option<u64> {
        self.slots.keys().next().map(|slot| slot * SLOT_MICROS)
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
    use crate::queue::message::NewMessage;
    use crate::queue::retry::{backoff, splitmix};
    use crate::spool::location::Location;
    use crate::spool::location::SegmentKey;
    use crate::spool::record::MessageId;
    use std::time::Duration;

    fn message(n: u32, recipients: &[&str]) -> Arc<QueuedMessage> {
        Arc::new(QueuedMessage::new(NewMessage {
            id: MessageId::new(1, 0, n),
            record: Location {
                segment: SegmentKey { shard: 0, seq: 1 },
                offset: 16,
            },
            received_micros: 0,
            sender: "s@x.test".into(),
            recipients,
            smtputf8: false,
            eight_bit: false,
            size: 100,
            states: vec![0; recipients.len()],
        }))
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
        d.insert(0, 5_000_050, job(&a, &[0, 2], 1));
        d.insert(0, 5_300_000, job(&a, &[1], 2));
        assert_eq!(d.len(), 3);
        for now in [0, 4_999_999, 5_000_049] {
            assert!(d.pop_due(now).recipients.is_empty(), "at {now}");
        }
        // At most one slot late.
        let due = d.pop_due(5_000_050 + SLOT_MICROS).recipients;
        assert_eq!(shape(&due), vec![(a.id, vec![(0, 1), (2, 1)])]);
        assert_eq!(d.len(), 1);
        assert!(d.pop_due(5_299_999).recipients.is_empty());
        assert_eq!(
            shape(&d.pop_due(5_300_000).recipients),
            vec![(a.id, vec![(1, 2)])]
        );
        assert!(d.is_empty());
        assert!(d.pop_due(u64::MAX / 2).recipients.is_empty());
    }

    #[test]
    fn the_next_deadline_is_when_the_earliest_slot_comes_due_and_none_when_empty() {
        let a = message(1, &["a@a.test"]);
        let mut d = Deferred::new();
        assert_eq!(d.pop_due(0).next_micros, None);
        d.insert(0, 5_000_050, job(&a, &[0], 1));
        d.insert(0, 9_000_000, job(&a, &[0], 1));
        let next = d.pop_due(0).next_micros.unwrap();
        assert!(
            (5_000_050..=5_000_050 + SLOT_MICROS).contains(&next),
            "{next}"
        );
        // Waking then finds the first due, and learns when the second is.
        let due = d.pop_due(next);
        assert_eq!(due.recipients.len(), 1);
        let later = due.next_micros.unwrap();
        assert!(
            (9_000_000..=9_000_000 + SLOT_MICROS).contains(&later),
            "{later}"
        );
        assert_eq!(d.pop_due(later).next_micros, None);
    }

    #[test]
    fn a_long_delay_comes_back_never_early_and_at_most_a_sixty_fourth_late() {
        let a = message(1, &["a@a.test"]);
        let mut noise = 7u64;
        for _ in 0..2000 {
            noise = splitmix(noise);
            let now = 1_700_000_000_000_000 + noise % 1_000_000_000;
            // From a second to a day.
            let delay = 1_000_000 + (noise >> 20) % 86_400_000_000;
            let due = now + delay;
            let mut d = Deferred::new();
            d.insert(now, due, job(&a, &[0], 1));
            assert!(
                d.pop_due(due - 1).recipients.is_empty(),
                "early: delay {delay}"
            );
            let late = SLOT_MICROS + (delay / 64).clamp(SLOT_MICROS, MAX_SLOT_MICROS);
            assert_eq!(
                d.pop_due(due + late).recipients.len(),
                1,
                "too late: delay {delay}"
            );
        }
    }

    #[test]
    fn a_list_deferred_for_an_hour_shares_a_score_of_slots_in_chunks_never_regrown() {
        let a = message(1, &["a@a.test"]);
        let mut d = Deferred::new();
        let now = 1_700_000_000_000_000;
        for i in 0..10_000 {
            let delay = backoff(&[Duration::from_secs(3600)], 1, i);
            d.insert(now, now + delay.as_micros() as u64, job(&a, &[0], 1));
        }
        assert!(d.slots.len() <= 24, "{} slots", d.slots.len());
        for chunks in d.slots.values() {
            let rooms: Vec<usize> = chunks.iter().map(Vec::capacity).collect();
            let mut want = FIRST_CHUNK;
            for (i, &room) in rooms.iter().enumerate() {
                assert_eq!(room, want, "chunk {i} of {rooms:?}");
                // Every chunk but the last is full: nothing is left empty in between.
                assert!(i + 1 == rooms.len() || chunks[i].len() == room);
                want = (want * 2).min(MAX_CHUNK);
            }
        }
        let back: usize = d
            .pop_due(now + 4_000_000_000)
            .recipients
            .iter()
            .map(|(_, r)| r.len())
            .sum();
        assert_eq!(back, 10_000);
        assert!(d.is_empty());
    }

    #[test]
    fn a_job_comes_back_as_the_same_jobs() {
        let a = message(1, &["a@a.test", "b@b.test", "c@a.test", "d@a.test"]);
        let b = message(2, &["x@b.test"]);
        let mut d = Deferred::new();
        // Two messages in one slot, a's jobs around b's.
        d.insert(0, 1_000_000, job(&a, &[0, 2, 3], 1));
        d.insert(0, 1_000_001, job(&b, &[0], 3));
        d.insert(0, 1_000_002, job(&a, &[1], 1));
        let due = d.pop_due(2_000_000).recipients;
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
