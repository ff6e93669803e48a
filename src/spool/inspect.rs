//! The offline view of the queue behind `pigeon queue list|show`: replays the spool
//! read-only (the server should be stopped) and describes each queued message.

use std::io;
use std::path::Path;

use crate::smtp::data::unstuff;
use crate::spool::location::segment_path;
use crate::spool::record::{decode, MessageId, OutcomeKind, Record};
use crate::spool::recover::MappedSegment;
use crate::spool::replay::{replay, RecipientState, SpooledMessage};

/// Every message that still has recipients to deliver, oldest first.
pub fn queued_messages(spool: &Path) -> io::Result<Vec<SpooledMessage>> {
    Ok(replay(spool)?.live().cloned().collect())
}

/// The content of message `id` as it will be delivered (dot-stuffing removed), or `None`
/// if it is not in the spool.
pub fn message_content(spool: &Path, id: MessageId) -> io::Result<Option<Vec<u8>>> {
    let replayed = replay(spool)?;
    let Some(m) = replayed.messages.get(&id) else {
        return Ok(None);
    };
    let mapped = MappedSegment::open(&segment_path(spool, m.segment.shard, m.segment.seq))?;
    let bytes = mapped.bytes().get(m.offset as usize..).unwrap_or_default();
    match decode(bytes) {
        Ok((Record::Message(record), _)) => Ok(Some(unstuff(record.content))),
        _ => Err(io::Error::other(format!(
            "record of {id} changed while reading"
        ))),
    }
}

/// How `pigeon queue` shows a recipient's state.
pub fn describe(state: &RecipientState, now_unix: u64) -> String {
    match *state {
        RecipientState::Pending { attempts: 0, .. } => "queued".into(),
        RecipientState::Pending {
            attempts,
            next_attempt_micros,
        } => {
            let next = (next_attempt_micros / 1_000_000).saturating_sub(now_unix);
            format!(
                "deferred ({attempts} attempts, next in {})",
                short_age(next)
            )
        }
        RecipientState::Done(OutcomeKind::Delivered) => "delivered".into(),
        RecipientState::Done(OutcomeKind::Bounced) => "bounced".into(),
        RecipientState::Done(OutcomeKind::Expired) => "expired".into(),
        RecipientState::Done(OutcomeKind::Deferred) => unreachable!("a deferral is never final"),
    }
}

/// `5s`, `3m`, `2h`, `4d`: a short duration for listings.
pub fn short_age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
