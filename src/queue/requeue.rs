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
    #[error("{0}")]
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::config::Config;
    use crate::smtp::dsn::Notify;
    use crate::spool::record::tests::envelope;
    use crate::spool::record::{
        encode_message, encode_outcome, MessageId, OutcomeKind, OutcomeRecord,
    };
    use crate::spool::replay::tests::write_segment;

    /// A message to r1@b.example and r2@c.example; r2 asked for success notices.
    fn message(id: MessageId) -> Vec<u8> {
        let mut env = envelope();
        env.recipients[1].params = "NOTIFY=SUCCESS".into();
        let mut m = encode_message(id, id.unix_micros(), &env, false, &[b"body\r\n"]);
        m.extend_from_slice(b"body\r\n");
        m
    }

    fn outcome(id: MessageId, recipient: u32, kind: OutcomeKind, next: u64) -> Vec<u8> {
        encode_outcome(&OutcomeRecord {
            id,
            recipient,
            kind,
            attempts: 1,
            next_attempt_micros: next,
        })
    }

    #[test]
    fn what_the_spool_owes_comes_back_due_now_or_on_a_timer_and_finished_records_go() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_micros();
        let in_an_hour = now + 3_600_000_000;
        let (half_done, fresh, finished) = (
            MessageId::new(now - 30_000_000, 0, 1),
            MessageId::new(now - 20_000_000, 0, 2),
            MessageId::new(now - 10_000_000, 0, 3),
        );
        write_segment(
            dir.path(),
            0,
            0,
            &[
                message(half_done),
                outcome(half_done, 0, OutcomeKind::Delivered, 0),
                outcome(half_done, 1, OutcomeKind::Deferred, in_an_hour),
                message(fresh),
                message(finished),
                outcome(finished, 0, OutcomeKind::Delivered, 0),
                outcome(finished, 1, OutcomeKind::Bounced, 0),
            ],
        );
        let queues = Queues::new(Arc::new(Config::defaults()));
        let segments = Segments::new(dir.path().to_owned());
        let mut deferred = vec![Deferred::new(), Deferred::new()];
        let requeued = requeue(dir.path(), &queues, &segments, &mut deferred).unwrap();
        assert_eq!(
            requeued,
            Requeued {
                messages: 2,
                recipients: 3,
                deferred_jobs: 1
            }
        );
        // The fresh message's two recipients are ready, one job per domain; the deferred
        // one waits on a timer until its time, not before.
        assert_eq!(queues.ready.total(), 2);
        assert_eq!(deferred.iter().map(Deferred::len).sum::<usize>(), 1);
        let timer = deferred.iter_mut().find(|d| !d.is_empty()).unwrap();
        assert!(timer.pop_due(now).recipients.is_empty());
        let due = timer.pop_due(in_an_hour + 60_000_000).recipients;
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0.id, half_done);
        assert_eq!(due[0].1, vec![(1, 1)], "recipient 1, one attempt made");
        // The DSN parameters the record kept are read back with the message.
        let job = queues.ready.domain("c.example").pop(0).unwrap();
        assert_eq!(job.message.id, fresh);
        assert_eq!(
            job.message.recipient_dsn(1).notify,
            Some(Notify {
                success: true,
                ..Notify::default()
            })
        );
        // The finished message's record was killed: a second start finds it gone.
        let again = replay(dir.path()).unwrap();
        let ids: Vec<MessageId> = again.live().map(|m| m.id).collect();
        assert_eq!(ids, vec![half_done, fresh]);
        assert!(again.stale_records().is_empty());
    }
}
