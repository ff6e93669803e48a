//! Replaying the spool: every message record and every outcome record, folded into the
//! state of each message. Used at start (to queue what is still due) and by
//! `pigeon queue` (to show it).
//!
//! Outcome records may sit in any shard's segments (the shard that delivered writes
//! them), so all records are read first and outcomes applied after. For one recipient, a
//! final outcome beats a deferral, and a deferral with more attempts beats one with fewer:
//! the order in which shards' segments are read does not matter.
//!
//! A message copied forward (`qmgr::compact`) has several identical records; it is one
//! message with several copies. The settled record written with each copy says which
//! recipients were final then, in place of the outcome records left with the old copy.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use crate::spool::location::{Location, SegmentKey};
use crate::spool::record::{MessageId, OutcomeKind, OutcomeRecord, Record, SettledRecord};
use crate::spool::recover::{list_segments, scan, MappedSegment, SegmentFile};
use crate::spool::segments::{hold, Held, Segments};

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
    /// The segment holding the message record (the last copy read, if there are several).
    pub segment: SegmentKey,
    /// Offset of the record frame in that segment.
    pub offset: u64,
    /// Every copy of the record found, `(segment, offset)`, the one above included.
    pub copies: Vec<(SegmentKey, u64)>,
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
    /// Segments holding outcome and settled records for this message, one entry per
    /// record.
    pub outcome_segments: Vec<SegmentKey>,
}

impl SpooledMessage {
    /// True when every recipient is final: the message is no longer queued.
    pub fn is_done(&self) -> bool {
        self.states.iter().all(RecipientState::is_final)
    }

    /// The references its outcome and settled records hold (see [`Held`]): all of them.
    /// Killed copies replay as nothing, so two copies are found only when a copy forward
    /// was cut short before the old one was killed; which of them is the newer cannot be
    /// told from the segment order (a copy lands in whichever shard deferred the message),
    /// so every outcome and settled record is kept until the message is finished.
    pub fn held(&self) -> Held {
        let mut held = Held::new();
        for &s in &self.outcome_segments {
            hold(&mut held, s, 1);
        }
        held
    }

    /// Applies a settled record: its final states are final here too (a final state is
    /// never undone, so the order of records does not matter).
    fn settle(&mut self, states: &[u8]) {
        for (state, &b) in self.states.iter_mut().zip(states) {
            if let Some(kind) = OutcomeKind::from_u8(b).filter(|k| k.is_final()) {
                if !state.is_final() {
                    *state = RecipientState::Done(kind);
                }
            }
        }
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

    /// Message records to kill before serving: every copy of a finished message (its last
    /// outcomes were durable, its kill was not), and every copy of a live message but the
    /// one it is queued from (a copy forward cut short between writing the new copy and
    /// killing the old).
    pub fn stale_records(&self) -> Vec<Location> {
        let mut stale = Vec::new();
        for m in self.messages.values() {
            for &(segment, offset) in &m.copies {
                if m.is_done() || (segment, offset) != (m.segment, m.offset) {
                    stale.push(Location { segment, offset });
                }
            }
        }
        stale
    }

    /// Takes the references that live messages hold in a running server
    /// (`spool::segments`): their record's and their outcome records'. Called once the
    /// [`Replay::stale_records`] are killed; sealing every segment afterwards deletes those
    /// with nothing live in them.
    pub fn hold(&self, segments: &Segments) {
        for m in self.live() {
            segments.add(m.segment, 1);
            for (s, n) in m.held() {
                segments.add(s, i64::from(n));
            }
        }
    }
}

/// Reads every whole record of every segment and folds them into message states.
pub fn replay(spool: &Path) -> io::Result<Replay> {
    let segments = list_segments(spool)?;
    let mut messages: BTreeMap<MessageId, SpooledMessage> = BTreeMap::new();
    let mut outcomes = Vec::new();
    let mut settled = Vec::new();
    for seg in &segments {
        let key = SegmentKey {
            shard: seg.shard,
            seq: seg.seq,
        };
        let mapped = MappedSegment::open(&seg.path)?;
        for (offset, record) in scan(mapped.bytes()).records {
            match record {
                Record::Message(m) => {
                    if let Some(known) = messages.get_mut(&m.id) {
                        // A copy: the same record, byte for byte, in a newer segment.
                        known.copies.push((key, offset));
                        known.segment = key;
                        known.offset = offset;
                        continue;
                    }
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
                            copies: vec![(key, offset)],
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
                // Killed: finished, or superseded by a newer copy.
                Record::DeadMessage => {}
                Record::Outcome(o) => outcomes.push((key, o)),
                Record::Settled(SettledRecord { id, states }) => {
                    settled.push((key, id, states.to_vec()))
                }
            }
        }
    }
    for (key, id, states) in settled {
        if let Some(m) = messages.get_mut(&id) {
            m.settle(&states);
            m.outcome_segments.push(key);
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
pub(crate) mod tests {
    use super::*;
    use crate::spool::location::segment_path;
    use crate::spool::record::tests::envelope;
    use crate::spool::record::{
        decode, encode_message, encode_outcome, encode_settled, segment_header,
    };

    /// Writes segment `shard`/`seq` of `spool` holding `records`; returns their offsets.
    pub(crate) fn write_segment(
        spool: &Path,
        shard: u8,
        seq: u64,
        records: &[Vec<u8>],
    ) -> Vec<u64> {
        let path = segment_path(spool, shard, seq);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut bytes = segment_header(seq).to_vec();
        let mut offsets = Vec::new();
        for r in records {
            offsets.push(bytes.len() as u64);
            bytes.extend_from_slice(r);
        }
        std::fs::write(path, bytes).unwrap();
        offsets
    }

    fn message_record(id: MessageId) -> Vec<u8> {
        let mut m = encode_message(id, 7, &envelope(), false, &[b"body\r\n"]);
        m.extend_from_slice(b"body\r\n");
        m
    }

    fn outcome_of(id: MessageId, recipient: u32, kind: OutcomeKind, attempts: u32) -> Vec<u8> {
        encode_outcome(&OutcomeRecord {
            id,
            recipient,
            kind,
            attempts,
            next_attempt_micros: 0,
        })
    }

    #[test]
    fn a_copied_message_is_one_message_and_settled_states_are_final() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path();
        let id = MessageId::new(1_000, 0, 1);
        let old = SegmentKey { shard: 0, seq: 0 };
        let new = SegmentKey { shard: 1, seq: 3 };
        let delivered = OutcomeKind::Delivered as u8;
        write_segment(spool, 0, 0, &[message_record(id)]);
        // Recipient 0 delivered before the copy; the copy's settled record says so.
        write_segment(
            spool,
            0,
            1,
            &[
                outcome_of(id, 0, OutcomeKind::Delivered, 1),
                outcome_of(id, 1, OutcomeKind::Deferred, 1),
            ],
        );
        let at = write_segment(
            spool,
            1,
            3,
            &[message_record(id), encode_settled(id, &[delivered, 0])],
        );
        // A later deferral with more attempts, from after the copy.
        write_segment(spool, 1, 4, &[outcome_of(id, 1, OutcomeKind::Deferred, 2)]);

        let r = replay(spool).unwrap();
        assert_eq!(r.messages.len(), 1);
        let m = &r.messages[&id];
        assert_eq!(m.copies, vec![(old, 16), (new, at[0])]);
        assert_eq!((m.segment, m.offset), (new, at[0]));
        assert_eq!(m.states[0], RecipientState::Done(OutcomeKind::Delivered));
        assert_eq!(
            m.states[1],
            RecipientState::Pending {
                attempts: 2,
                next_attempt_micros: 0
            }
        );
        assert_eq!(
            m.outcome_segments.len(),
            4,
            "three outcomes and one settled record"
        );
        let location = segment_path(spool, m.segment.shard, m.segment.seq);
        let bytes = std::fs::read(location).unwrap();
        let Ok((Record::Message(rec), _)) = decode(&bytes[m.offset as usize..]) else {
            panic!("location is not a message record");
        };
        assert_eq!(rec.id, id);

        // The old copy and its outcomes gone: the settled record alone keeps recipient 0
        // final, and a settled state beats any deferral.
        std::fs::remove_file(segment_path(spool, 0, 0)).unwrap();
        std::fs::remove_file(segment_path(spool, 0, 1)).unwrap();
        write_segment(spool, 1, 5, &[outcome_of(id, 0, OutcomeKind::Deferred, 9)]);
        let r = replay(spool).unwrap();
        let m = &r.messages[&id];
        assert_eq!(m.copies, vec![(new, at[0])]);
        assert_eq!(m.states[0], RecipientState::Done(OutcomeKind::Delivered));
        assert!(!m.is_done());

        // A final outcome after the copy finishes it.
        write_segment(spool, 1, 6, &[outcome_of(id, 1, OutcomeKind::Bounced, 3)]);
        assert!(replay(spool).unwrap().messages[&id].is_done());
    }

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
    fn stale_copies_are_killed_and_live_outcomes_held() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path();
        let (live, done) = (MessageId::new(1_000, 0, 1), MessageId::new(1_000, 0, 2));
        let delivered = OutcomeKind::Delivered as u8;
        // Segment (0, 0): both messages, recipient 0 of each delivered.
        write_segment(
            spool,
            0,
            0,
            &[
                message_record(live),
                message_record(done),
                outcome_of(live, 0, OutcomeKind::Delivered, 1),
                outcome_of(done, 0, OutcomeKind::Delivered, 1),
            ],
        );
        // Segment (1, 0): both copied forward.
        write_segment(
            spool,
            1,
            0,
            &[
                message_record(live),
                encode_settled(live, &[delivered, 0]),
                message_record(done),
                encode_settled(done, &[delivered, 0]),
            ],
        );
        // Segment (1, 1): the last recipient of `done` bounced, `live`'s deferred.
        write_segment(
            spool,
            1,
            1,
            &[
                outcome_of(done, 1, OutcomeKind::Bounced, 2),
                outcome_of(live, 1, OutcomeKind::Deferred, 2),
            ],
        );
        let r = replay(spool).unwrap();
        assert_eq!(r.live().count(), 1);
        let stale = r.stale_records();
        assert_eq!(
            stale.len(),
            3,
            "both copies of `done`, the old copy of `live`"
        );
        crate::spool::recover::kill_records(spool, &stale).unwrap();
        let segments = Segments::new(spool.to_owned());
        r.hold(&segments);
        for s in &r.segments {
            segments.seal(SegmentKey {
                shard: s.shard,
                seq: s.seq,
            });
        }
        // (0, 0) holds an outcome of `live` (every outcome record of a live message is kept
        // until it finishes); (1, 0) its copy, (1, 1) its deferral.
        for seq in [(0, 0), (1, 0), (1, 1)] {
            assert!(
                segment_path(spool, seq.0, seq.1).exists(),
                "{seq:?} deleted"
            );
        }
        // Finished: its references go, and every segment with them.
        segments.release(SegmentKey { shard: 0, seq: 0 }, 1);
        assert!(
            !segment_path(spool, 0, 0).exists(),
            "the killed copies' segment kept"
        );
        // What is left replays to the same states; the finished message is gone for good.
        let again = replay(spool).unwrap();
        assert_eq!(again.messages[&live].states, r.messages[&live].states);
        assert_eq!(again.messages[&live].copies.len(), 1);
        assert!(!again.messages.contains_key(&done));
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
