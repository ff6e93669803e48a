//! Rebuilding the queue at start from what the spool still owes: the replayed messages
//! become queued messages again, their due recipients ready jobs, the others deferred on
//! the shards' timers; the segment references the records hold are counted, and the
//! records that a cut-short finish or copy forward left behind are killed first.

use std::path::Path;

use crate::clock::now_micros;
use crate::queue::deferred::Deferred;
use crate::queue::message::{NewMessage, QueuedMessage};
use crate::queue::queues::Queues;
use crate::spool::location::{Location, SegmentKey};
use crate::spool::recover::kill_records;
use crate::spool::replay::{replay, RecipientState};
use crate::spool::segments::Segments;

/// Why the queue could not be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum RequeueError {
    /// The spool could not be read.
    #[error("replaying the spool: {0}")]
    Replay(std::io::Error),
    /// Finished records could not be killed.
    #[error("killing finished records: {0}")]
    Kill(std::io::Error),
}

/// What the rebuilt queue holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Requeued {
    /// Messages with a recipient still owed.
    pub messages: usize,
    /// Recipients still owed.
    pub recipients: usize,
    /// Jobs put on the shards' timers (not yet due).
    pub deferred_jobs: usize,
}

/// Queues again everything the spool still owes: due recipients to the ready queues,
/// deferred ones to the shards' timers (spread over the shards), and counts the segment
/// references the records hold; segments with none are deleted.
pub fn requeue(
    spool: &Path,
    queues: &Queues,
    segments: &Segments,
    deferred: &mut [Deferred],
) -> Result<Requeued, RequeueError> {
    let replayed = replay(spool).map_err(RequeueError::Replay)?;
    let now = now_micros();
    let (mut messages, mut recipients, mut held) = (0usize, 0usize, 0usize);
    // Finished messages whose kill was cut short, and copies a copy forward left behind,
    // are killed now, durably, before any reference is counted: every segment is sealed
    // below, which deletes those with nothing live in them.
    let stale = replayed.stale_records();
    kill_records(spool, &stale).map_err(RequeueError::Kill)?;
    replayed.hold(segments);
    for m in replayed.live() {
        let pending: Vec<(u32, u32, u64)> = m
            .states
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match *s {
                RecipientState::Pending {
                    attempts,
                    next_attempt_micros,
                } => Some((i as u32, attempts, next_attempt_micros)),
                RecipientState::Done(_) => None,
            })
            .collect();
        let states = m
            .states
            .iter()
            .map(|s| match *s {
                RecipientState::Done(kind) => kind as u8,
                RecipientState::Pending { .. } => 0,
            })
            .collect();
        let message = QueuedMessage::new(NewMessage {
            id: m.id,
            record: Location {
                segment: m.segment,
                offset: m.offset,
            },
            received_micros: m.received_micros,
            sender: m.sender.clone(),
            recipients: &m.recipients,
            smtputf8: m.smtputf8,
            eight_bit: m.eight_bit,
            size: m.size,
            states,
        })
        .with_dsn_params(
            &m.mail_params,
            m.recipient_params.iter().map(String::as_str),
        )
        .with_held(m.held())
        .into_shared();
        messages += 1;
        recipients += pending.len();
        queues.enqueue(
            &message,
            pending.iter().filter(|p| p.2 <= now).map(|p| (p.0, p.1)),
        );
        let later = pending.iter().filter(|p| p.2 > now).map(|p| (p.0, p.1));
        for (_, job) in queues.jobs(&message, later) {
            let due = job
                .recipients
                .iter()
                // `pending` is in index order (built from `enumerate`).
                .map(|&i| {
                    pending
                        .binary_search_by_key(&i, |p| p.0)
                        .map_or(0, |k| pending[k].2)
                })
                .min()
                .unwrap_or(0);
            deferred[held % deferred.len()].insert(now, due, job);
            held += 1;
        }
    }
    for seg in &replayed.segments {
        // Every existing segment is sealed: this run writes new ones.
        segments.seal(SegmentKey {
            shard: seg.shard,
            seq: seg.seq,
        });
    }
    Ok(Requeued {
        messages,
        recipients,
        deferred_jobs: held,
    })
}
