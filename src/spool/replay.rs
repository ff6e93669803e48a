//! Replaying the spool: every message record and every outcome record, folded into the
//! state of each message. Used at start (to queue what is still due) and by
//! `pigeon queue` (to show it).
//!
//! Outcome records may sit in any shard's segments (the shard that delivered writes
//! them), so all records are read first and outcomes applied after. For one recipient, a
//! final outcome beats a deferral, and a deferral with more attempts beats one with fewer:
//! the order in which shards' segments are read does not matter.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use crate::spool::record::{MessageId, OutcomeKind, OutcomeRecord, Record};
use crate::spool::recover::{list_segments, scan, MappedSegment, SegmentFile};

/// Names one segment file: the shard that wrote it and its sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentKey {
    /// The shard.
    pub shard: u8,
    /// The sequence number within the shard.
    pub seq: u64,
}

/// Where one recipient stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecipientState {
    /// Not final: due now (no attempts yet) or at `next_attempt_micros`.
    Pending {
        /// Attempts made so far.
        attempts: u32,
        /// When the next attempt is due, microseconds since the epoch (0: now).
        next_attempt_micros: u64,
    },
    /// Final; never tried again.
    Done(OutcomeKind),
}

impl RecipientState {
    /// True once the recipient is final.
    pub fn is_final(&self) -> bool {
        matches!(self, RecipientState::Done(_))
    }

    fn apply(&mut self, o: &OutcomeRecord) {
        match (*self, o.kind) {
            (RecipientState::Done(_), _) => {}
            (_, kind) if kind.is_final() => *self = RecipientState::Done(kind),
            (RecipientState::Pending { attempts, .. }, _) if o.attempts >= attempts => {
                *self = RecipientState::Pending {
                    attempts: o.attempts,
                    next_attempt_micros: o.next_attempt_micros,
                }
            }
            _ => {}
        }
    }
}

/// One message found in the spool, with its recipients' states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpooledMessage {
    /// The queue id.
    pub id: MessageId,
    /// The segment holding the message record.
    pub segment: SegmentKey,
    /// Offset of the record frame in that segment.
    pub offset: u64,
    /// When it was accepted, microseconds since the epoch.
    pub received_micros: u64,
    /// The reverse-path; empty for `<>`.
    pub sender: String,
    /// The recipients, in record order.
    pub recipients: Vec<String>,
    /// Each recipient's RCPT parameters (same order).
    pub recipient_params: Vec<String>,
    /// Each recipient's state (same order).
    pub states: Vec<RecipientState>,
    /// The client used SMTPUTF8.
    pub smtputf8: bool,
    /// The content has 8-bit octets.
    pub eight_bit: bool,
    /// Octets of content (wire form).
    pub size: u64,
    /// The client's address.
    pub peer: String,
    /// The EHLO/HELO argument.
    pub helo: String,
    /// The MAIL parameters.
    pub mail_params: String,
    /// Segments holding outcome records for this message, one entry per record.
    pub outcome_segments: Vec<SegmentKey>,
}

impl SpooledMessage {
    /// True when every recipient is final: the message is no longer queued.
    pub fn is_done(&self) -> bool {
        self.states.iter().all(RecipientState::is_final)
    }
}

/// Everything in the spool.
#[derive(Debug, Default)]
pub struct Replay {
    /// Every message, done or not, by id.
    pub messages: BTreeMap<MessageId, SpooledMessage>,
    /// Every segment file, in (shard, seq) order.
    pub segments: Vec<SegmentFile>,
}

impl Replay {
    /// The messages that still have recipients to deliver.
    pub fn live(&self) -> impl Iterator<Item = &SpooledMessage> {
        self.messages.values().filter(|m| !m.is_done())
    }
}

/// Reads every whole record of every segment and folds them into message states.
pub fn replay(spool: &Path) -> io::Result<Replay> {
    let segments = list_segments(spool)?;
    let mut messages = BTreeMap::new();
    let mut outcomes = Vec::new();
    for seg in &segments {
        let key = SegmentKey {
            shard: seg.shard,
            seq: seg.seq,
        };
        let mapped = MappedSegment::open(&seg.path)?;
        for (offset, record) in scan(mapped.bytes()).records {
            match record {
                Record::Message(m) => {
                    let n = m.recipients.len();
                    let pending = RecipientState::Pending {
                        attempts: 0,
                        next_attempt_micros: 0,
                    };
                    messages.insert(
                        m.id,
                        SpooledMessage {
                            id: m.id,
                            segment: key,
                            offset,
                            received_micros: m.received_micros,
                            sender: m.sender.to_owned(),
                            recipients: m.recipients.iter().map(|(r, _)| r.to_string()).collect(),
                            recipient_params: m
                                .recipients
                                .iter()
                                .map(|(_, p)| p.to_string())
                                .collect(),
                            states: vec![pending; n],
                            smtputf8: m.smtputf8,
                            eight_bit: m.eight_bit,
                            size: m.content.len() as u64,
                            peer: m.peer.to_owned(),
                            helo: m.helo.to_owned(),
                            mail_params: m.mail_params.to_owned(),
                            outcome_segments: Vec::new(),
                        },
                    );
                }
                Record::Outcome(o) => outcomes.push((key, o)),
            }
        }
    }
    for (key, o) in outcomes {
        // An outcome whose message is gone belongs to a message already finished.
        if let Some(m) = messages.get_mut(&o.id) {
            if let Some(state) = m.states.get_mut(o.recipient as usize) {
                state.apply(&o);
                m.outcome_segments.push(key);
            }
        }
    }
    Ok(Replay { messages, segments })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(kind: OutcomeKind, attempts: u32) -> OutcomeRecord {
        OutcomeRecord {
            id: MessageId::new(1, 0, 0),
            recipient: 0,
            kind,
            attempts,
            next_attempt_micros: u64::from(attempts) * 10,
        }
    }

    #[test]
    fn final_beats_deferred_whatever_the_order() {
        let mut a = RecipientState::Pending {
            attempts: 0,
            next_attempt_micros: 0,
        };
        a.apply(&outcome(OutcomeKind::Delivered, 2));
        a.apply(&outcome(OutcomeKind::Deferred, 3));
        assert_eq!(a, RecipientState::Done(OutcomeKind::Delivered));
        let mut b = RecipientState::Pending {
            attempts: 0,
            next_attempt_micros: 0,
        };
        b.apply(&outcome(OutcomeKind::Deferred, 3));
        b.apply(&outcome(OutcomeKind::Deferred, 1));
        assert_eq!(
            b,
            RecipientState::Pending {
                attempts: 3,
                next_attempt_micros: 30
            }
        );
    }
}
