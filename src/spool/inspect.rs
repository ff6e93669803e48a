//! The offline view of the queue behind `pigeon queue list|show`: reads every segment
//! read-only (the server should be stopped) and describes each queued message.

use std::io;
use std::path::Path;

use crate::session::data::unstuff;
use crate::spool::record::{MessageId, Record};
use crate::spool::recover::{list_segments, scan, MappedSegment};

/// One queued message as an operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedMessage {
    /// The queue id from the 250 reply.
    pub id: MessageId,
    /// When it was accepted, microseconds since the epoch.
    pub received_micros: u64,
    /// The reverse-path; empty for `<>`.
    pub sender: String,
    /// Recipients, each with its state.
    pub recipients: Vec<(String, RecipientState)>,
    /// Octets of content as stored (wire form, `Received:` included).
    pub size: u64,
    /// The client's address.
    pub peer: String,
    /// The EHLO/HELO argument.
    pub helo: String,
    /// The MAIL parameters.
    pub mail_params: String,
}

/// Where a recipient stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecipientState {
    /// Waiting for delivery.
    Queued,
}

impl RecipientState {
    /// The word `pigeon queue` prints.
    pub fn as_str(&self) -> &'static str {
        match self {
            RecipientState::Queued => "queued",
        }
    }
}

/// Visits every whole record in the spool, in (shard, segment, offset) order.
fn for_each_record(spool: &Path, mut f: impl FnMut(Record<'_>)) -> io::Result<()> {
    for seg in list_segments(spool)? {
        let mapped = MappedSegment::open(&seg.path)?;
        for (_, record) in scan(mapped.bytes()).records {
            f(record);
        }
    }
    Ok(())
}

/// Every queued message, oldest first.
pub fn queued_messages(spool: &Path) -> io::Result<Vec<QueuedMessage>> {
    let mut out = Vec::new();
    for_each_record(spool, |record| {
        let Record::Message(m) = record;
        out.push(QueuedMessage {
            id: m.id,
            received_micros: m.received_micros,
            sender: m.sender.to_owned(),
            recipients: m
                .recipients
                .iter()
                .map(|(r, _)| (r.to_string(), RecipientState::Queued))
                .collect(),
            size: m.content.len() as u64,
            peer: m.peer.to_owned(),
            helo: m.helo.to_owned(),
            mail_params: m.mail_params.to_owned(),
        });
    })?;
    out.sort_by_key(|m| m.id);
    Ok(out)
}

/// The content of message `id` as it will be delivered (dot-stuffing removed), or `None`.
pub fn message_content(spool: &Path, id: MessageId) -> io::Result<Option<Vec<u8>>> {
    let mut found = None;
    for_each_record(spool, |record| {
        let Record::Message(m) = record;
        if m.id == id && found.is_none() {
            found = Some(unstuff(m.content));
        }
    })?;
    Ok(found)
}

/// `5s`, `3m`, `2h`, `4d`: a short age for listings.
pub fn short_age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
