//! Compaction: copying a long-deferred message forward so its old segment can go.
//!
//! Without it, one message deferred for days keeps its whole segment on disk, and with it
//! (through `Segments::release_after`) the segments holding outcome records of every
//! finished message in that segment. So when a shard defers a job whose message record
//! sits in a sealed segment and was written more than `spool.compact_after` ago, it
//! appends the record again, byte for byte, followed by a settled record saying which
//! recipients are final, to its own active segment, and moves the message there.
//!
//! The references make a chain that replay can always fold correctly (`docs/architecture.md`
//! section 3): the outcome records registered before the copy's snapshot of states, and one
//! extra reference on the new segment, are released only when the old segment is deleted;
//! outcome records registered after the snapshot stay with the new copy. So the old copy
//! never outlives what says which of its recipients are finished, and the new copy never
//! goes before the old one.

use std::io;
use std::rc::Rc;
use std::sync::Arc;

use crate::outcome::settle::now_micros;
use crate::queue::message::{Move, QueuedMessage};
use crate::runtime::shard::ShardContext;
use crate::spool::commit::Location;
use crate::spool::read::{Content, SegmentReader};
use crate::spool::record::{decode, encode_settled, Record};
use crate::spool::replay::SegmentKey;
use crate::spool::segments::Segments;

/// Starts copying `message` forward if it qualifies (see the module docs). Called by the
/// shard that has just deferred one of its jobs; the copy runs as a task of its own, so
/// the attempt does not wait for it.
pub fn after_deferral(ctx: &Rc<ShardContext>, message: &Arc<QueuedMessage>) {
    let age = ctx.shared.config.spool.compact_after.as_micros() as u64;
    let segments = &ctx.shared.segments;
    let written_before = now_micros().saturating_sub(age);
    let Some(mv) = message.begin_move(written_before, |s| segments.is_sealed(s)) else {
        return;
    };
    glommio::spawn_local(copy_forward(ctx.clone(), message.clone(), mv)).detach();
}

async fn copy_forward(ctx: Rc<ShardContext>, message: Arc<QueuedMessage>, mv: Move) {
    let segments = &ctx.shared.segments;
    let frame = match read_frame(&ctx.reader, &message, &mv) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(id = %message.id, error = %e, "cannot read a record to copy forward");
            if let Some((record, outcomes)) = message.move_failed(mv.before) {
                segments.release_after(record, outcomes);
            }
            return;
        }
    };
    let parts = vec![
        frame.bytes().to_vec(),
        encode_settled(message.id, &mv.states),
    ];
    drop(frame);
    let Ok(at) = ctx.spool.append(parts, 2).await else {
        // The spool is closing and wrote nothing: the message stays where it was.
        if let Some((record, outcomes)) = message.move_failed(mv.before) {
            segments.release_after(record, outcomes);
        }
        return;
    };
    land(segments, &message, mv.before, mv.from, at, now_micros());
    tracing::debug!(
        id = %message.id,
        from = mv.from.seq,
        to = at.segment.seq,
        "copied a deferred message forward"
    );
}

/// Moves `message` to its new copy at `at` (record, then settled record, both durable and
/// each holding a reference on `at.segment`) and hands the old copy's references over.
fn land(
    segments: &Segments,
    message: &QueuedMessage,
    before: Vec<SegmentKey>,
    from: SegmentKey,
    at: Location,
    now: u64,
) {
    // Before anyone learns of the new copy: the new segment must outlive the old one, or a
    // restart could find the old record without the settled one that finishes it.
    segments.add(at.segment, 1);
    let finished = message.moved(at.segment, at.offset, now);
    let mut after_old = before;
    after_old.push(at.segment);
    segments.release_after(from, after_old);
    if let Some(outcomes) = finished {
        segments.release_after(at.segment, outcomes);
    }
}

fn read_frame(reader: &SegmentReader, message: &QueuedMessage, mv: &Move) -> io::Result<Content> {
    let frame = reader.frame(mv.from, mv.offset)?;
    match decode(frame.bytes()) {
        Ok((Record::Message(m), _)) if m.id == message.id => Ok(frame),
        _ => Err(io::Error::other("the record there is another message's")),
    }
}

/// The content of `message` for delivery. A copy forward may move it and delete the old
/// segment between reading its location and mapping the file; its location has changed by
/// then (it is updated before the old record is released), so a failed read is retried
/// once at the new place.
pub fn read_content(reader: &SegmentReader, message: &QueuedMessage) -> io::Result<Content> {
    let (segment, offset) = message.location();
    match reader.content(segment, offset) {
        Err(_) if message.location() != (segment, offset) => {
            let (segment, offset) = message.location();
            reader.content(segment, offset)
        }
        read => read,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::record::{MessageId, OutcomeKind};
    use crate::spool::recover::segment_path;

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
        let m = QueuedMessage::new(
            MessageId::new(1, 0, 1),
            S,
            16,
            0,
            String::new(),
            vec!["a@a.test".into(), "b@b.test".into()],
            false,
            false,
            10,
            vec![0, 0],
        );
        segments.add(O, 1);
        assert!(m
            .record_outcomes(O, 1, &[(0, OutcomeKind::Delivered)])
            .is_none());
        for k in [S, O] {
            segments.seal(k);
        }
        (dir, segments, m)
    }

    fn exists(dir: &tempfile::TempDir, k: SegmentKey) -> bool {
        segment_path(dir.path(), k.shard, k.seq).exists()
    }

    #[test]
    fn the_old_copy_goes_first_then_the_new_one_then_later_outcomes() {
        let (dir, segments, m) = setup();
        let mv = m.begin_move(10, |k| segments.is_sealed(k)).unwrap();
        // Recipient 1's final outcome is durable in P, but not yet registered: it is not in
        // the snapshot, so it must stay until the new copy goes.
        segments.add(P, 1);
        segments.seal(P);
        segments.add(T, 2);
        land(
            &segments,
            &m,
            mv.before,
            mv.from,
            Location {
                segment: T,
                offset: 16,
            },
            20,
        );
        assert_eq!(m.location(), (T, 16));
        assert!(
            exists(&dir, S) && exists(&dir, O),
            "S still holds another record"
        );
        segments.seal(T);
        // The other record in S finishes: S goes, and with it O, but not T.
        segments.release(S);
        assert!(!exists(&dir, S) && !exists(&dir, O));
        assert!(exists(&dir, T) && exists(&dir, P));
        let (record, outcomes) = m
            .record_outcomes(P, 1, &[(1, OutcomeKind::Bounced)])
            .unwrap();
        assert_eq!(record, T);
        segments.release_after(record, outcomes);
        assert!(!exists(&dir, T) && !exists(&dir, P));
    }

    #[test]
    fn a_message_finished_during_its_copy_is_released_by_the_copier() {
        let (dir, segments, m) = setup();
        let mv = m.begin_move(10, |k| segments.is_sealed(k)).unwrap();
        segments.add(P, 1);
        segments.seal(P);
        assert!(m
            .record_outcomes(P, 1, &[(1, OutcomeKind::Delivered)])
            .is_none());
        segments.add(T, 2);
        segments.seal(T);
        land(
            &segments,
            &m,
            mv.before,
            mv.from,
            Location {
                segment: T,
                offset: 16,
            },
            20,
        );
        // T's own references are gone; the extra one waits for S, and P waits for T.
        assert!(exists(&dir, S) && exists(&dir, O) && exists(&dir, T) && exists(&dir, P));
        segments.release(S);
        for k in [S, O, T, P] {
            assert!(!exists(&dir, k), "{k:?} left behind");
        }
    }
}
