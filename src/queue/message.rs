//! A queued message and the jobs that deliver it.
//!
//! A [`QueuedMessage`] is the envelope of one spooled message, shared (`Arc`) by every job
//! made from it, whichever shard runs them. The content stays in the spool segment; jobs
//! carry the record's location, never the body (STYLE.md: stages pass references).
//!
//! Where the record is, and what the spool holds about the message, can change while jobs
//! run on several shards: outcomes arrive from any shard, and compaction may move the
//! record to a newer segment (`qmgr::compact`). All of it sits in one small [`Place`]
//! behind a mutex that is only ever held for a few field updates, never across an
//! `.await`, so the moving and finishing of a message cannot interleave badly.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::queue::recipients::Recipients;
use crate::runtime::memory::long_lived;
use crate::smtp::dsn::{MailDsn, RcptDsn};
use crate::spool::location::Location;
use crate::spool::location::SegmentKey;
use crate::spool::record::{MessageId, OutcomeKind};
use crate::spool::segments::hold;
pub use crate::spool::segments::Held;

/// What finishing a message leaves to do, in this order: kill its record in place (unless
/// `killed`: the kill went with the last outcomes), then release the record's reference
/// and the `held` ones (see `spool::segments`).
#[derive(Debug, PartialEq, Eq)]
pub struct Finish {
    /// Where the record is.
    pub record: Location,
    /// Whether it is already killed.
    pub killed: bool,
    /// The references of the message's outcome and settled records.
    pub held: Held,
}

/// Where a message's record is and what the spool holds about it.
#[derive(Debug)]
struct Place {
    /// The segment holding the record (its newest copy).
    segment: SegmentKey,
    /// Offset of the record in that segment.
    offset: u64,
    /// When that copy was written, microseconds since the epoch.
    written_micros: u64,
    /// The references of outcome (and settled) records about this message.
    held: Held,
    /// One octet per recipient: 0 not final, else the final `OutcomeKind` (as in a settled
    /// record).
    states: Vec<u8>,
    /// Recipients not yet final.
    remaining: usize,
    /// Attempts settling now: between [`QueuedMessage::outcomes_coming`] and
    /// [`QueuedMessage::record_outcomes`]. No copy forward begins meanwhile, so the record
    /// stays where a settle that kills it expects it.
    settling: u32,
    /// A copy forward is under way; whoever finishes the message leaves the finish to it.
    moving: bool,
    /// Every recipient became final while a copy was under way.
    finished: bool,
}

impl Place {
    fn location(&self) -> Location {
        Location {
            segment: self.segment,
            offset: self.offset,
        }
    }

    /// The finish for whoever learns that the message is complete.
    fn finish(&mut self) -> Finish {
        Finish {
            record: self.location(),
            killed: false,
            held: std::mem::take(&mut self.held),
        }
    }
}

/// A copy forward that has begun: what [`QueuedMessage::begin_move`] handed over.
#[derive(Debug, PartialEq, Eq)]
pub struct Move {
    /// The segment holding the record now.
    pub from: SegmentKey,
    /// Offset of the record there.
    pub offset: u64,
    /// The references of the outcome records so far: they go once the old copy is killed
    /// (the settled record in the new copy stands in for them).
    pub before: Held,
    /// The recipients' states as of now, for the settled record.
    pub states: Vec<u8>,
}

/// One message waiting for delivery of some of its recipients.
#[derive(Debug)]
pub struct QueuedMessage {
    /// The queue id.
    pub id: MessageId,
    /// When it was accepted, microseconds since the epoch.
    pub received_micros: u64,
    /// The reverse-path; empty for `<>`.
    pub sender: String,
    /// All recipients, in record order (jobs refer to them by index).
    pub recipients: Recipients,
    /// Delivery needs SMTPUTF8.
    pub smtputf8: bool,
    /// The content has 8-bit octets: delivery needs 8BITMIME.
    pub eight_bit: bool,
    /// Octets of content in wire form.
    pub size: u64,
    /// Where its record is; see [`Place`].
    place: Mutex<Place>,
    /// RET and ENVID (RFC 3461).
    pub mail_dsn: MailDsn,
    /// NOTIFY and ORCPT per recipient; empty when no recipient gave any.
    pub rcpt_dsn: Vec<RcptDsn>,
    /// A delay notice was sent for this message (one per message is enough).
    pub delay_notified: AtomicBool,
}

/// What a [`QueuedMessage`] is made of, field by field.
#[derive(Debug)]
pub struct NewMessage<R> {
    /// The queue id.
    pub id: MessageId,
    /// Where its record is.
    pub record: Location,
    /// When it was accepted (and its record written), microseconds since the epoch.
    pub received_micros: u64,
    /// The reverse-path; empty for `<>`.
    pub sender: String,
    /// All recipients, in record order.
    pub recipients: R,
    /// Delivery needs SMTPUTF8.
    pub smtputf8: bool,
    /// The content has 8-bit octets.
    pub eight_bit: bool,
    /// Octets of content in wire form.
    pub size: u64,
    /// One state per recipient: 0 not final, else the final `OutcomeKind` (as in a
    /// settled record).
    pub states: Vec<u8>,
}

impl QueuedMessage {
    /// The message described by `m`. The recipients are copied into a [`Recipients`]
    /// store. What the message keeps is copied into the long-lived heap
    /// (`runtime::memory`); share it with [`QueuedMessage::into_shared`].
    pub fn new<R>(m: NewMessage<R>) -> QueuedMessage
    where
        R: IntoIterator,
        R::Item: AsRef<str>,
    {
        let remaining = m.states.iter().filter(|&&s| s == 0).count();
        let (sender, states) = long_lived(|| (m.sender.as_str().to_owned(), m.states.to_vec()));
        QueuedMessage {
            id: m.id,
            place: Mutex::new(Place {
                segment: m.record.segment,
                offset: m.record.offset,
                written_micros: m.received_micros,
                held: Vec::new(),
                remaining,
                states,
                settling: 0,
                moving: false,
                finished: false,
            }),
            received_micros: m.received_micros,
            sender,
            recipients: m.recipients.into_iter().collect(),
            smtputf8: m.smtputf8,
            eight_bit: m.eight_bit,
            size: m.size,
            mail_dsn: MailDsn::default(),
            rcpt_dsn: Vec::new(),
            delay_notified: AtomicBool::new(false),
        }
    }

    /// Adds the DSN parameters: RET and ENVID, and NOTIFY and ORCPT per recipient.
    pub fn with_dsn<'a, R>(mut self, mail: &MailDsn, rcpt: R) -> QueuedMessage
    where
        R: IntoIterator<Item = &'a RcptDsn>,
        R::IntoIter: Clone,
    {
        let rcpt = rcpt.into_iter();
        // Most messages have no recipient DSN parameter: nothing is copied for them.
        let keep = rcpt.clone().any(|r| *r != RcptDsn::default());
        // What is kept is copied into the long-lived heap.
        long_lived(|| {
            self.mail_dsn = mail.clone();
            if keep {
                self.rcpt_dsn = rcpt.cloned().collect();
            }
        });
        self
    }

    /// Adds the DSN parameters from the MAIL and RCPT parameter strings a record keeps.
    pub fn with_dsn_params<'a>(
        self,
        mail_params: &str,
        rcpt_params: impl Iterator<Item = &'a str>,
    ) -> QueuedMessage {
        // Parsed here, where parsing's own short-lived strings belong.
        let mail = MailDsn::from_params(mail_params);
        let rcpt: Vec<RcptDsn> = rcpt_params.map(RcptDsn::from_params).collect();
        self.with_dsn(&mail, &rcpt)
    }

    /// The message, shared by the jobs that will deliver it; the shared allocation goes
    /// in the long-lived heap with the rest.
    pub fn into_shared(self) -> Arc<QueuedMessage> {
        long_lived(|| Arc::new(self))
    }

    /// The DSN parameters of recipient `index`.
    pub fn recipient_dsn(&self, index: u32) -> &RcptDsn {
        static NONE: RcptDsn = RcptDsn {
            notify: None,
            orcpt: None,
        };
        self.rcpt_dsn.get(index as usize).unwrap_or(&NONE)
    }

    /// Adds the references of outcome records found at start (see [`Held`]).
    pub fn with_held(mut self, held: Held) -> QueuedMessage {
        self.place.get_mut().unwrap_or_else(|e| e.into_inner()).held =
            long_lived(|| held.as_slice().to_vec());
        self
    }

    fn place(&self) -> MutexGuard<'_, Place> {
        // Nothing in the lock can panic halfway through an update, so a poisoned lock
        // still holds a consistent place.
        self.place.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where its record is now: segment and offset.
    pub fn location(&self) -> (SegmentKey, u64) {
        let p = self.place();
        (p.segment, p.offset)
    }

    /// Notes that outcome records about this message are about to be appended, making the
    /// recipients `finals` final; each call is followed by
    /// [`QueuedMessage::record_outcomes`] or, if nothing was written,
    /// [`QueuedMessage::outcomes_abandoned`]. When those are all the recipients left (and
    /// no copy is under way), returns the record's location: the settle kills it in the
    /// same append, and writes no outcome records for them at all.
    pub fn outcomes_coming(&self, finals: &[u32]) -> Option<Location> {
        let mut p = self.place();
        p.settling += 1;
        let ending = finals
            .iter()
            .filter(|&&i| p.states.get(i as usize) == Some(&0))
            .count();
        (!p.moving && p.remaining > 0 && ending == p.remaining).then(|| p.location())
    }

    /// Undoes [`QueuedMessage::outcomes_coming`] when the append failed.
    pub fn outcomes_abandoned(&self) {
        let mut p = self.place();
        p.settling = p.settling.saturating_sub(1);
    }

    /// Notes `n_records` outcome records written to `segment`, of which `finals` made
    /// recipients final, and whether the record was `killed` with them (as
    /// [`QueuedMessage::outcomes_coming`] proposed). When that finishes the message,
    /// returns the [`Finish`] to carry out. Returns `None` otherwise, and also when a copy
    /// forward is under way: the copier finishes then, once it knows where the record
    /// ended up.
    pub fn record_outcomes(
        &self,
        segment: SegmentKey,
        n_records: u32,
        finals: &[(u32, OutcomeKind)],
        killed: bool,
    ) -> Option<Finish> {
        let mut p = self.place();
        p.settling = p.settling.saturating_sub(1);
        hold(&mut p.held, segment, n_records);
        let before = p.remaining;
        for &(index, kind) in finals {
            if let Some(state) = p.states.get_mut(index as usize) {
                if *state == 0 && kind.is_final() {
                    *state = kind as u8;
                    p.remaining -= 1;
                }
            }
        }
        if before == 0 || p.remaining > 0 {
            return None;
        }
        if p.moving {
            p.finished = true;
            return None;
        }
        let mut finish = p.finish();
        finish.killed = killed;
        Some(finish)
    }

    /// Recipients not yet final.
    pub fn remaining(&self) -> usize {
        self.place().remaining
    }

    /// Begins a copy forward if the record is in a segment that `sealed` says is no longer
    /// written, was written before `written_before` (microseconds since the epoch), and the
    /// message is still live, not already being moved, and no attempt at it is between
    /// announcing its outcomes and registering them (so every outcome record written so
    /// far is in the snapshot of states, and the record is where that settle expects it).
    pub fn begin_move(
        &self,
        written_before: u64,
        sealed: impl Fn(SegmentKey) -> bool,
    ) -> Option<Move> {
        let mut p = self.place();
        if p.moving
            || p.settling > 0
            || p.remaining == 0
            || p.written_micros >= written_before
            || !sealed(p.segment)
        {
            return None;
        }
        p.moving = true;
        Some(Move {
            from: p.segment,
            offset: p.offset,
            before: std::mem::take(&mut p.held),
            states: p.states.clone(),
        })
    }

    /// The new copy (record, then settled record) is durable at `to`/`offset`: readers go
    /// there from now on, and the settled record's reference on `to` is held until the
    /// message is finished. The move is still under way until [`QueuedMessage::moved`].
    pub fn relocate(&self, to: SegmentKey, offset: u64, now: u64) {
        let mut p = self.place();
        p.segment = to;
        p.offset = offset;
        p.written_micros = now;
        hold(&mut p.held, to, 1);
    }

    /// Ends a copy forward (the old copy killed, or not, as it may). If the message
    /// finished meanwhile, returns the [`Finish`] for its new copy.
    pub fn moved(&self) -> Option<Finish> {
        let mut p = self.place();
        p.moving = false;
        p.finished.then(|| p.finish())
    }

    /// Ends a copy forward that wrote nothing: puts `before` back. If the message finished
    /// meanwhile, returns the [`Finish`] [`QueuedMessage::record_outcomes`] would have.
    pub fn move_failed(&self, before: Held) -> Option<Finish> {
        let mut p = self.place();
        for (segment, n) in before {
            hold(&mut p.held, segment, n);
        }
        p.moving = false;
        p.finished.then(|| p.finish())
    }
}

/// Some recipients of one message, all at one domain, to be tried in one transaction.
#[derive(Clone, Debug)]
pub struct Job {
    /// The message.
    pub message: Arc<QueuedMessage>,
    /// Indices into `message.recipients`. Boxed, not a `Vec`: a job never grows, and a
    /// queued job's size is a queued recipient's cost when a list spans many domains.
    pub recipients: Box<[u32]>,
    /// Attempts already made for these recipients.
    pub attempts: u32,
}

impl Job {
    /// The recipient addresses of this job.
    pub fn addresses(&self) -> impl Iterator<Item = &str> {
        self.recipients
            .iter()
            .map(|&i| &self.message.recipients[i as usize])
    }
}

/// The destination domain of an address, lower-cased: the key of its ready queue.
pub fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map_or(address, |(_, d)| d)
        .to_ascii_lowercase()
}

/// Splits recipient indices into jobs: grouped by domain, at most `per_transaction` each.
/// `per_transaction` is looked up per domain.
pub fn jobs_for(
    message: &Arc<QueuedMessage>,
    indices: impl IntoIterator<Item = (u32, u32)>,
    per_transaction: impl Fn(&str) -> usize,
) -> Vec<(String, Job)> {
    let mut by_domain: std::collections::BTreeMap<(String, u32), Vec<u32>> = Default::default();
    for (i, attempts) in indices {
        let domain = domain_of(&message.recipients[i as usize]);
        by_domain.entry((domain, attempts)).or_default().push(i);
    }
    let mut jobs = Vec::new();
    for ((domain, attempts), indices) in by_domain {
        let limit = per_transaction(&domain).max(1);
        for chunk in indices.chunks(limit) {
            let job = Job {
                message: message.clone(),
                recipients: chunk.into(),
                attempts,
            };
            jobs.push((domain.clone(), job));
        }
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(recipients: &[&str]) -> Arc<QueuedMessage> {
        Arc::new(QueuedMessage::new(NewMessage {
            id: MessageId::new(1, 0, 1),
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

    #[test]
    fn jobs_group_by_domain_and_respect_the_transaction_limit() {
        let m = message(&["a@A.test", "b@b.test", "c@a.test", "d@a.test", "e@a.test"]);
        let jobs = jobs_for(&m, (0..5).map(|i| (i, 0)), |_| 3);
        let shape: Vec<(&str, Vec<u32>)> = jobs
            .iter()
            .map(|(d, j)| (d.as_str(), j.recipients.to_vec()))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("a.test", vec![0, 2, 3]),
                ("a.test", vec![4]),
                ("b.test", vec![1])
            ]
        );
    }

    #[test]
    fn finishing_the_last_recipient_returns_every_reference_once() {
        let m = message(&["a@a.test", "b@a.test"]);
        let s1 = SegmentKey { shard: 1, seq: 4 };
        let s2 = SegmentKey { shard: 0, seq: 2 };
        let deferred = [(1, OutcomeKind::Deferred)];
        assert_eq!(m.outcomes_coming(&[]), None);
        assert_eq!(m.record_outcomes(s1, 1, &deferred, false), None);
        assert_eq!(m.outcomes_coming(&[0]), None, "one of two recipients");
        assert_eq!(
            m.record_outcomes(s1, 1, &[(0, OutcomeKind::Delivered)], false),
            None
        );
        // The same recipient again (cannot happen, but must not count twice).
        assert_eq!(
            m.record_outcomes(s1, 0, &[(0, OutcomeKind::Bounced)], false),
            None
        );
        assert_eq!(m.remaining(), 1);
        let finish = m
            .record_outcomes(s2, 1, &[(1, OutcomeKind::Bounced)], false)
            .unwrap();
        assert_eq!(
            finish,
            Finish {
                record: Location {
                    segment: SegmentKey { shard: 0, seq: 1 },
                    offset: 16
                },
                killed: false,
                held: vec![(s1, 2), (s2, 1)],
            }
        );
        assert_eq!(m.record_outcomes(s2, 1, &[], false), None);
    }

    #[test]
    fn the_settle_that_ends_a_message_kills_its_record_in_the_same_append() {
        let m = message(&["a@a.test", "b@b.test"]);
        let record = Location {
            segment: OLD,
            offset: 16,
        };
        assert_eq!(m.outcomes_coming(&[0, 1]), Some(record));
        assert!(m.begin_move(1000, |_| true).is_none(), "settling");
        let finish = m
            .record_outcomes(
                OUT,
                0,
                &[(0, OutcomeKind::Delivered), (1, OutcomeKind::Bounced)],
                true,
            )
            .unwrap();
        assert!(finish.killed && finish.held.is_empty());
        assert_eq!(finish.record, record);
    }

    const OLD: SegmentKey = SegmentKey { shard: 0, seq: 1 };
    const NEW: SegmentKey = SegmentKey { shard: 1, seq: 9 };
    const OUT: SegmentKey = SegmentKey { shard: 1, seq: 5 };

    #[test]
    fn a_move_needs_a_sealed_old_record_of_a_live_message() {
        let m = message(&["a@a.test", "b@b.test"]);
        assert!(m.begin_move(0, |_| true).is_none(), "not old enough");
        assert!(
            m.begin_move(10, |_| false).is_none(),
            "segment still written"
        );
        m.outcomes_coming(&[0]);
        m.record_outcomes(OUT, 1, &[(0, OutcomeKind::Delivered)], false);
        let mv = m.begin_move(10, |s| s == OLD).unwrap();
        assert_eq!(
            mv,
            Move {
                from: OLD,
                offset: 16,
                before: vec![(OUT, 1)],
                states: vec![OutcomeKind::Delivered as u8, 0],
            }
        );
        assert!(m.begin_move(10, |_| true).is_none(), "already moving");
        assert_eq!(
            m.outcomes_coming(&[1]),
            None,
            "no kill proposed while moving"
        );
        m.outcomes_abandoned();
        m.relocate(NEW, 32, 100);
        assert_eq!(m.location(), (NEW, 32));
        assert_eq!(m.moved(), None);
        // Written at 100 now: not old enough for another move before 100.
        assert!(m.begin_move(100, |_| true).is_none());
        let again = m.begin_move(101, |_| true).unwrap();
        assert_eq!(
            again.before,
            vec![(NEW, 1)],
            "the settled record's reference"
        );
    }

    #[test]
    fn finishing_during_a_move_leaves_the_finish_to_the_mover() {
        let m = message(&["a@a.test", "b@b.test"]);
        let mv = m.begin_move(10, |_| true).unwrap();
        assert!(mv.before.is_empty());
        // The last recipients become final while the copy is being written.
        let finals = [(0, OutcomeKind::Delivered), (1, OutcomeKind::Expired)];
        assert_eq!(m.outcomes_coming(&[0, 1]), None);
        assert_eq!(m.record_outcomes(OUT, 2, &finals, false), None);
        m.relocate(NEW, 32, 100);
        // Outcomes registered after the snapshot stay with the new copy.
        let finish = m.moved().unwrap();
        assert_eq!(
            finish,
            Finish {
                record: Location {
                    segment: NEW,
                    offset: 32
                },
                killed: false,
                held: vec![(OUT, 2), (NEW, 1)],
            }
        );
        assert!(m.begin_move(1000, |_| true).is_none(), "finished");
    }

    #[test]
    fn no_move_while_outcomes_are_being_written() {
        let m = message(&["a@a.test"]);
        m.outcomes_coming(&[]);
        assert!(m.begin_move(10, |_| true).is_none());
        m.outcomes_abandoned();
        m.outcomes_coming(&[]);
        assert!(m.begin_move(10, |_| true).is_none());
        m.record_outcomes(OUT, 1, &[(0, OutcomeKind::Deferred)], false);
        assert!(m.begin_move(10, |_| true).is_some());
    }

    #[test]
    fn a_failed_move_gives_everything_back() {
        let m = message(&["a@a.test"]);
        m.outcomes_coming(&[]);
        m.record_outcomes(OUT, 1, &[(0, OutcomeKind::Deferred)], false);
        let mv = m.begin_move(10, |_| true).unwrap();
        assert_eq!(m.move_failed(mv.before), None);
        assert_eq!(m.location(), (OLD, 16));
        let mv = m.begin_move(10, |_| true).unwrap();
        assert_eq!(
            m.record_outcomes(NEW, 1, &[(0, OutcomeKind::Bounced)], false),
            None
        );
        let finish = m.move_failed(mv.before).unwrap();
        assert_eq!(finish.held, vec![(NEW, 1), (OUT, 1)]);
        assert_eq!(finish.record.segment, OLD);
    }
}
