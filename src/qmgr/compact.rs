//! Compaction: copying a long-deferred message forward so its old segment can go. The
//! spool provides the appends and kills; the queue manager decides when, because it is
//! the one that knows a message was deferred again.
//!
//! Without it, one message deferred for days keeps its whole segment on disk, and with it
//! the outcome records about it wherever they are. So when a shard defers a job whose
//! message record sits in a sealed segment and was written more than `spool.compact_after`
//! ago, it appends the record again, byte for byte, followed by a settled record saying
//! which recipients are final, to its own active segment, and moves the message there:
//!
//! 1. the new copy and the settled record are appended and durable;
//! 2. readers are pointed at the new copy;
//! 3. the old copy is killed in place (durable);
//! 4. only then are the old record's reference and those of the outcome records written
//!    before the snapshot released: the settled record stands in for them.
//!
//! A crash between 1 and 3 leaves two live copies; the next start keeps one and kills the
//! other (`Replay::stale_records`). Outcome records registered after the snapshot stay
//! with the message and go when it finishes, like any others.

use std::io;
use std::rc::Rc;
use std::sync::Arc;

use crate::clock::now_micros;
use crate::qmgr::QueueManager;
use crate::queue::message::{Finish, Held, Move, QueuedMessage};
use crate::spool::location::Location;
use crate::spool::read::{Content, SegmentReader};
use crate::spool::record::{decode, encode_settled, Record};
use crate::spool::segments::Segments;

/// Starts copying `message` forward if it qualifies (see the module docs). Called by the
/// queue manager that has just deferred one of its jobs; the copy runs as a counted task
/// of its own, so the settle does not wait for it.
pub fn after_deferral(qm: &Rc<QueueManager>, message: &Arc<QueuedMessage>) {
    let age = qm.compact_after.as_micros() as u64;
    let segments = &qm.settler.segments;
    let written_before = now_micros().saturating_sub(age);
    let Some(mv) = message.begin_move(written_before, |s| segments.is_sealed(s)) else {
        return;
    };
    qm.tasks
        .spawn(copy_forward(qm.clone(), message.clone(), mv));
}

async fn copy_forward(qm: Rc<QueueManager>, message: Arc<QueuedMessage>, mv: Move) {
    let spool = &qm.settler.spool;
    let frame = match read_frame(&qm.settler.reader, &message, &mv) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(id = %message.id, error = %e, "cannot read a record to copy forward");
            if let Some(f) = message.move_failed(mv.before) {
                qm.finish(f);
            }
            return;
        }
    };
    let parts = vec![
        frame.bytes().to_vec(),
        encode_settled(message.id, &mv.states),
    ];
    drop(frame);
    let Ok(at) = spool.append(parts, 2).await else {
        // The spool is closing and wrote nothing: the message stays where it was.
        if let Some(f) = message.move_failed(mv.before) {
            qm.finish(f);
        }
        return;
    };
    message.relocate(at.segment, at.offset, now_micros());
    let old = Location {
        segment: mv.from,
        offset: mv.offset,
    };
    if spool.kill(vec![old]).await.is_err() {
        // Closing: both copies stay live. The move stays marked as under way, so nobody
        // releases anything of this message from now on; the next start keeps one copy,
        // kills the other, and counts every outcome record.
        return;
    }
    if let Some(f) = land(&qm.settler.segments, &message, old, mv.before) {
        qm.finish(f);
    }
    tracing::debug!(
        id = %message.id,
        from = mv.from.seq,
        to = at.segment.seq,
        "copied a deferred message forward"
    );
}

/// After the old copy at `old` is durably killed: releases its reference and those of the
/// outcome records written `before` the snapshot, and ends the move. Returns the finish of
/// a message that finished meanwhile.
fn land(
    segments: &Segments,
    message: &QueuedMessage,
    old: Location,
    before: Held,
) -> Option<Finish> {
    segments.release(old.segment, 1);
    segments.release_all(before);
    message.moved()
}

fn read_frame(reader: &SegmentReader, message: &QueuedMessage, mv: &Move) -> io::Result<Content> {
    let frame = reader.frame(mv.from, mv.offset)?;
    match decode(frame.bytes()) {
        Ok((Record::Message(m), _)) if m.id == message.id => Ok(frame),
        _ => Err(io::Error::other("the record there is another message's")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::message::NewMessage;
    use crate::spool::location::segment_path;
    use crate::spool::location::SegmentKey;
    use crate::spool::record::{MessageId, OutcomeKind};

    const S: SegmentKey = SegmentKey { shard: 0, seq: 0 };
    const O: SegmentKey = SegmentKey { shard: 1, seq: 0 };
    const T: SegmentKey = SegmentKey { shard: 0, seq: 1 };
    const P: SegmentKey = SegmentKey { shard: 1, seq: 1 };

    /// A spool with files for S (old copy), O (outcome before the copy), T (new copy)
    /// and P (outcome after the snapshot), each holding the references the committer
    /// would have added, and a two-recipient message in S.
    fn setup() -> (tempfile::TempDir, Segments, QueuedMessage) {
        let dir = tempfile::tempdir().unwrap();
        for k in [S, O, T, P] {
            let path = segment_path(dir.path(), k.shard, k.seq);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"").unwrap();
        }
        let segments = Segments::new(dir.path().to_owned());
        // S: the message and one other live record.
        segments.add(S, 2);
        let m = QueuedMessage::new(NewMessage {
            id: MessageId::new(1, 0, 1),
            record: Location {
                segment: S,
                offset: 16,
            },
            received_micros: 0,
            sender: String::new(),
            recipients: ["a@a.test", "b@b.test"],
            smtputf8: false,
            eight_bit: false,
            size: 10,
            states: vec![0, 0],
        });
        segments.add(O, 1);
        assert!(m.outcomes_coming(&[0]).is_none());
        assert!(m
            .record_outcomes(O, 1, &[(0, OutcomeKind::Delivered)], false)
            .is_none());
        for k in [S, O] {
            segments.seal(k);
        }
        (dir, segments, m)
    }

    fn exists(dir: &tempfile::TempDir, k: SegmentKey) -> bool {
        segment_path(dir.path(), k.shard, k.seq).exists()
    }

    fn at(segment: SegmentKey) -> Location {
        Location {
            segment,
            offset: 16,
        }
    }

    #[test]
    fn the_old_copy_and_its_outcomes_go_once_it_is_killed_and_the_rest_at_the_finish() {
        let (dir, segments, m) = setup();
        let mv = m.begin_move(10, |k| segments.is_sealed(k)).unwrap();
        // The copy and its settled record land in T.
        segments.add(T, 2);
        m.relocate(T, 16, 20);
        assert_eq!(m.location(), (T, 16));
        assert_eq!(land(&segments, &m, at(mv.from), mv.before), None);
        // O's outcome is in the snapshot: it goes with the old copy's reference, whatever
        // else S still holds.
        assert!(!exists(&dir, O), "O outlived the kill of the old copy");
        assert!(exists(&dir, S), "S still holds another record");
        segments.release(S, 1);
        assert!(!exists(&dir, S));
        segments.seal(T);
        // Recipient 1 ends later, its outcome in P; the finish releases T's copy, its
        // settled record and P.
        segments.add(P, 1);
        segments.seal(P);
        assert!(m.outcomes_coming(&[]).is_none());
        let f = m
            .record_outcomes(P, 1, &[(1, OutcomeKind::Bounced)], false)
            .unwrap();
        assert_eq!(f.record, at(T));
        assert!(exists(&dir, T) && exists(&dir, P));
        segments.release(f.record.segment, 1);
        segments.release_all(f.held);
        assert!(!exists(&dir, T) && !exists(&dir, P));
    }

    #[test]
    fn a_message_finished_during_its_copy_is_finished_by_the_copier() {
        let (dir, segments, m) = setup();
        let mv = m.begin_move(10, |k| segments.is_sealed(k)).unwrap();
        segments.add(P, 1);
        segments.seal(P);
        assert!(
            m.outcomes_coming(&[1]).is_none(),
            "moving: no kill proposed"
        );
        assert!(m
            .record_outcomes(P, 1, &[(1, OutcomeKind::Delivered)], false)
            .is_none());
        segments.add(T, 2);
        segments.seal(T);
        m.relocate(T, 16, 20);
        let f = land(&segments, &m, at(mv.from), mv.before).unwrap();
        assert_eq!(f.record, at(T));
        assert!(!f.killed, "the copier must kill the new copy too");
        segments.release(S, 1);
        segments.release(f.record.segment, 1);
        segments.release_all(f.held);
        for k in [S, O, T, P] {
            assert!(!exists(&dir, k), "{k:?} left behind");
        }
    }
}
