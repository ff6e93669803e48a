//! The spool's vocabulary: segment headers, record framing, and each record kind.
//!
//! Everything on disk is little-endian. A segment file is a 16-octet header followed by
//! records, each framed as
//!
//! ```text
//! len: u32     octets of kind + payload
//! crc: u32     CRC32C of kind + payload
//! kind: u8     one of RecordKind
//! payload      len - 1 octets
//! ```
//!
//! A record is valid only if its whole frame is present and its CRC matches; recovery
//! stops at the first record that is not (a torn tail after a crash). Attacker-chosen
//! fields (addresses, parameters, HELO) are stored length-prefixed, so no value can be
//! mistaken for framing. `docs/spool-format.md` is written from this file.
//!
//! Kinds: 1 Message (envelope and content), 2 Outcome (one recipient after one attempt),
//! 3 Settled (which recipients of a message were final when its record was copied forward
//! to a newer segment; see `qmgr::compact`). A copied message record is the original
//! frame, byte for byte: same id, same CRC.
//!
//! A message record is *killed* in place once it is no longer needed (every recipient
//! final, or a newer copy durable): its kind octet, at [`KIND_OFFSET`] in the frame, is
//! overwritten with `Message | DEAD` ([`DEAD_MESSAGE`]). The CRC is computed over the kind
//! without the [`DEAD`] bit, so the frame stays valid for recovery's scan, and replay skips
//! it. One octet written in place is atomic on any disk, so a crash leaves the record
//! either live or dead, never torn. This is what lets a segment go as soon as nothing in it
//! is live, with no ordering between segments (see `spool::segments`).

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::smtp::envelope::Envelope;

/// The first 8 octets of every segment file; the next 8 are its sequence number.
pub const SEGMENT_MAGIC: &[u8; 8] = b"PGNSPL01";
/// Length of the segment header.
pub const SEGMENT_HEADER_LEN: usize = 16;
/// Length of a record frame before its payload: len, crc, kind.
pub const FRAME_HEADER_LEN: usize = 9;
/// Offset of the kind octet in a frame: what a kill overwrites.
pub const KIND_OFFSET: u64 = 8;
/// The bit a kill sets in the kind octet; not covered by the CRC.
pub const DEAD: u8 = 0x80;
/// The kind octet of a killed message record.
pub const DEAD_MESSAGE: u8 = RecordKind::Message as u8 | DEAD;

/// The kinds of record a segment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// A whole accepted message: envelope and content, written once whatever the number of
    /// recipients. Its presence means the message was (or was about to be) acknowledged.
    Message = 1,
    /// What became of one recipient after a delivery attempt: final (delivered, bounced,
    /// expired) or deferred with its next attempt time. Appended before the outcome is
    /// acted on, so a restart never repeats a final outcome or forgets a deferral.
    Outcome = 2,
    /// Written right after a copy of a message record (compaction): one byte per recipient,
    /// 0 while not final, else the final [`OutcomeKind`]. Stands in for the outcome records
    /// that stay behind with the old copy, so the old segment can go.
    Settled = 3,
}

/// What a delivery attempt decided for one recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum OutcomeKind {
    /// The receiving server accepted it (2xx).
    Delivered = 1,
    /// Refused for good (5xx, or a permanent DNS answer); a bounce was or will be sent.
    Bounced = 2,
    /// Still undelivered at `delivery.max_age`; bounced.
    Expired = 3,
    /// Temporary failure (4xx, connection or DNS trouble): try again later.
    Deferred = 4,
}

impl OutcomeKind {
    /// True for outcomes after which the recipient is never tried again.
    pub fn is_final(self) -> bool {
        self != OutcomeKind::Deferred
    }

    /// The kind with wire value `b`, if there is one.
    pub fn from_u8(b: u8) -> Option<OutcomeKind> {
        Some(match b {
            1 => OutcomeKind::Delivered,
            2 => OutcomeKind::Bounced,
            3 => OutcomeKind::Expired,
            4 => OutcomeKind::Deferred,
            _ => return None,
        })
    }
}

/// An outcome record's fields (fixed size: 33 octets of payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutcomeRecord {
    /// The message.
    pub id: MessageId,
    /// Index of the recipient in the message record.
    pub recipient: u32,
    /// What happened.
    pub kind: OutcomeKind,
    /// Attempts made so far, this one included.
    pub attempts: u32,
    /// For `Deferred`: when to try next, microseconds since the epoch; else 0.
    pub next_attempt_micros: u64,
}

/// A settled record's fields: the final states of a message's recipients when it was
/// copied forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettledRecord<'a> {
    /// The message.
    pub id: MessageId,
    /// One octet per recipient, in record order: 0 not final, else an [`OutcomeKind`]
    /// value that is final (1 to 3).
    pub states: &'a [u8],
}

/// A queue id: time-ordered, unique across shards and restarts.
///
/// 80 bits: microseconds since the epoch (52), shard (8), a per-shard counter (20); shown
/// as 20 hex digits, the form `pigeon queue` and the 250 reply use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(u128);

impl MessageId {
    /// Builds an id from its parts.
    pub fn new(unix_micros: u64, shard: u8, counter: u32) -> MessageId {
        let micros = u128::from(unix_micros) & ((1 << 52) - 1);
        MessageId((micros << 28) | (u128::from(shard) << 20) | u128::from(counter & 0xF_FFFF))
    }

    /// The shard that made the id (and wrote the message's first record).
    pub fn shard(&self) -> u8 {
        (self.0 >> 20) as u8
    }

    /// When the id was made, in microseconds since the epoch.
    pub fn unix_micros(&self) -> u64 {
        (self.0 >> 28) as u64
    }

    fn to_bytes(self) -> [u8; 16] {
        self.0.to_le_bytes()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:020X}", self.0)
    }
}

impl FromStr for MessageId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<MessageId, Self::Err> {
        u128::from_str_radix(s, 16).map(MessageId)
    }
}

/// Encodes the header of a segment with sequence number `seq`.
pub fn segment_header(seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..].copy_from_slice(&seq.to_le_bytes());
    h
}

/// Encodes a message record's frame and envelope. The content (`content` parts, in order)
/// is not copied: it is covered by the CRC and must be written right after the returned
/// bytes. Returns the bytes to write first.
/// `eight_bit` records whether the content has octets above 127, so that delivery knows
/// whether it needs 8BITMIME without scanning the content again.
pub fn encode_message(
    id: MessageId,
    received_micros: u64,
    env: &Envelope,
    eight_bit: bool,
    content: &[&[u8]],
) -> Vec<u8> {
    let mut p = Vec::with_capacity(128 + env.recipients.len() * 40);
    p.extend_from_slice(&[0; FRAME_HEADER_LEN - 1]);
    p.push(RecordKind::Message as u8);
    p.extend_from_slice(&id.to_bytes());
    p.extend_from_slice(&received_micros.to_le_bytes());
    p.push(u8::from(env.smtputf8) | (u8::from(eight_bit) << 1));
    put_str(&mut p, env.peer.to_string().as_bytes());
    put_str(&mut p, env.helo.as_bytes());
    put_str(&mut p, env.protocol.as_bytes());
    put_str(
        &mut p,
        env.sender
            .as_ref()
            .map_or(&b""[..], |s| s.as_str().as_bytes()),
    );
    put_str(&mut p, env.mail_params.as_bytes());
    p.extend_from_slice(&(env.recipients.len() as u32).to_le_bytes());
    for r in &env.recipients {
        put_str(&mut p, r.mailbox.as_str().as_bytes());
        put_str(&mut p, r.params.as_bytes());
    }
    let content_len: usize = content.iter().map(|c| c.len()).sum();
    let len = (p.len() - 8 + content_len) as u32;
    let crc = content.iter().fold(crc32c::crc32c(&p[8..]), |crc, c| {
        crc32c::crc32c_append(crc, c)
    });
    p[..4].copy_from_slice(&len.to_le_bytes());
    p[4..8].copy_from_slice(&crc.to_le_bytes());
    p
}

fn put_str(p: &mut Vec<u8>, s: &[u8]) {
    p.extend_from_slice(&(s.len() as u32).to_le_bytes());
    p.extend_from_slice(s);
}

/// Encodes a whole outcome record frame.
pub fn encode_outcome(o: &OutcomeRecord) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + 1 + 33);
    p.extend_from_slice(&[0; 8]);
    p.push(RecordKind::Outcome as u8);
    p.extend_from_slice(&o.id.to_bytes());
    p.extend_from_slice(&o.recipient.to_le_bytes());
    p.push(o.kind as u8);
    p.extend_from_slice(&o.attempts.to_le_bytes());
    p.extend_from_slice(&o.next_attempt_micros.to_le_bytes());
    let len = (p.len() - 8) as u32;
    let crc = crc32c::crc32c(&p[8..]);
    p[..4].copy_from_slice(&len.to_le_bytes());
    p[4..8].copy_from_slice(&crc.to_le_bytes());
    p
}

/// Encodes a whole settled record frame: `id`, a u32 count, then one octet per recipient.
pub fn encode_settled(id: MessageId, states: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(FRAME_HEADER_LEN + 20 + states.len());
    p.extend_from_slice(&[0; 8]);
    p.push(RecordKind::Settled as u8);
    p.extend_from_slice(&id.to_bytes());
    p.extend_from_slice(&(states.len() as u32).to_le_bytes());
    p.extend_from_slice(states);
    let len = (p.len() - 8) as u32;
    let crc = crc32c::crc32c(&p[8..]);
    p[..4].copy_from_slice(&len.to_le_bytes());
    p[4..8].copy_from_slice(&crc.to_le_bytes());
    p
}

/// A decoded record, borrowing from the segment bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// See [`RecordKind::Message`].
    Message(MessageRecord<'a>),
    /// See [`RecordKind::Outcome`].
    Outcome(OutcomeRecord),
    /// See [`RecordKind::Settled`].
    Settled(SettledRecord<'a>),
    /// A message record that was killed (see the module docs): nothing to replay.
    DeadMessage,
}

/// A message record's fields.
#[derive(Debug, PartialEq, Eq)]
pub struct MessageRecord<'a> {
    /// The queue id.
    pub id: MessageId,
    /// When the message was accepted, microseconds since the epoch.
    pub received_micros: u64,
    /// The client used SMTPUTF8.
    pub smtputf8: bool,
    /// The content has octets above 127 (needs 8BITMIME to be relayed).
    pub eight_bit: bool,
    /// The client's address.
    pub peer: &'a str,
    /// The HELO/EHLO argument.
    pub helo: &'a str,
    /// `SMTP`, `ESMTP` or `UTF8SMTP`.
    pub protocol: &'a str,
    /// The reverse-path; empty for `<>`.
    pub sender: &'a str,
    /// The MAIL parameters.
    pub mail_params: &'a str,
    /// Each recipient and its RCPT parameters.
    pub recipients: Vec<(&'a str, &'a str)>,
    /// The content in wire form, `Received:` header first.
    pub content: &'a [u8],
}

/// Why the bytes at an offset are not a valid record.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the frame claims: the write was cut short.
    #[error("torn record: {needed} octets needed, {available} present")]
    Torn {
        /// Octets the frame needs.
        needed: u64,
        /// Octets present.
        available: u64,
    },
    /// The CRC does not match, the length is impossible, or the payload does not parse.
    #[error("corrupt record: {0}")]
    Corrupt(&'static str),
}

/// Decodes the record at the start of `bytes`; returns it and its frame length.
pub fn decode(bytes: &[u8]) -> Result<(Record<'_>, usize), FrameError> {
    if bytes.len() < FRAME_HEADER_LEN {
        return Err(FrameError::Torn {
            needed: FRAME_HEADER_LEN as u64,
            available: bytes.len() as u64,
        });
    }
    let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if len == 0 {
        return Err(FrameError::Corrupt("zero length"));
    }
    let total = 8 + len;
    if bytes.len() < total {
        return Err(FrameError::Torn {
            needed: total as u64,
            available: bytes.len() as u64,
        });
    }
    let body = &bytes[8..total];
    let kind = body[0];
    let computed = if kind & DEAD == 0 {
        crc32c::crc32c(body)
    } else {
        crc32c::crc32c_append(crc32c::crc32c(&[kind & !DEAD]), &body[1..])
    };
    if computed != crc {
        return Err(FrameError::Corrupt("checksum mismatch"));
    }
    let record = match kind {
        DEAD_MESSAGE => Record::DeadMessage,
        k if k == RecordKind::Message as u8 => Record::Message(decode_message(&body[1..])?),
        k if k == RecordKind::Outcome as u8 => Record::Outcome(decode_outcome(&body[1..])?),
        k if k == RecordKind::Settled as u8 => Record::Settled(decode_settled(&body[1..])?),
        _ => return Err(FrameError::Corrupt("unknown record kind")),
    };
    Ok((record, total))
}

fn decode_message(p: &[u8]) -> Result<MessageRecord<'_>, FrameError> {
    let mut r = Reader(p);
    let id = MessageId(u128::from_le_bytes(
        r.take(16)?.try_into().expect("16 bytes"),
    ));
    let received_micros = u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
    let flags = r.take(1)?[0];
    let peer = r.str()?;
    let helo = r.str()?;
    let protocol = r.str()?;
    let sender = r.str()?;
    let mail_params = r.str()?;
    let n = u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes")) as usize;
    let mut recipients = Vec::with_capacity(n.min(r.0.len() / 8));
    for _ in 0..n {
        recipients.push((r.str()?, r.str()?));
    }
    Ok(MessageRecord {
        id,
        received_micros,
        smtputf8: flags & 1 != 0,
        eight_bit: flags & 2 != 0,
        peer,
        helo,
        protocol,
        sender,
        mail_params,
        recipients,
        content: r.0,
    })
}

fn decode_outcome(p: &[u8]) -> Result<OutcomeRecord, FrameError> {
    let mut r = Reader(p);
    let id = MessageId(u128::from_le_bytes(
        r.take(16)?.try_into().expect("16 bytes"),
    ));
    let recipient = u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"));
    let kind = OutcomeKind::from_u8(r.take(1)?[0]).ok_or(FrameError::Corrupt("unknown outcome"))?;
    let attempts = u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"));
    let next_attempt_micros = u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
    if !r.0.is_empty() {
        return Err(FrameError::Corrupt("outcome record too long"));
    }
    Ok(OutcomeRecord {
        id,
        recipient,
        kind,
        attempts,
        next_attempt_micros,
    })
}

fn decode_settled(p: &[u8]) -> Result<SettledRecord<'_>, FrameError> {
    let mut r = Reader(p);
    let id = MessageId(u128::from_le_bytes(
        r.take(16)?.try_into().expect("16 bytes"),
    ));
    let n = u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes")) as usize;
    let states = r.take(n)?;
    if !r.0.is_empty() {
        return Err(FrameError::Corrupt("settled record too long"));
    }
    // Only final states are recorded; a deferral here would be a writer's bug or damage.
    if states
        .iter()
        .any(|&b| b != 0 && !OutcomeKind::from_u8(b).is_some_and(OutcomeKind::is_final))
    {
        return Err(FrameError::Corrupt("unknown settled state"));
    }
    Ok(SettledRecord { id, states })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.0.len() < n {
            return Err(FrameError::Corrupt("payload shorter than its fields"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn str(&mut self) -> Result<&'a str, FrameError> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| FrameError::Corrupt("field is not UTF-8"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::smtp::address::parse_mailbox;
    use crate::smtp::envelope::Recipient;

    pub(crate) fn envelope() -> Envelope {
        Envelope {
            peer: "127.0.0.1:5000".parse().unwrap(),
            helo: "client.example".into(),
            protocol: "ESMTP",
            sender: Some(parse_mailbox(b"s@a.example", false).unwrap()),
            mail_params: "SIZE=10".into(),
            mail_dsn: Default::default(),
            recipients: ["r1@b.example", "r2@c.example"]
                .iter()
                .map(|r| Recipient {
                    mailbox: parse_mailbox(r.as_bytes(), false).unwrap(),
                    params: String::new(),
                    dsn: Default::default(),
                })
                .collect(),
            smtputf8: false,
            body_hashes: Vec::new(),
            auth: None,
        }
    }

    #[test]
    fn message_round_trips() {
        let id = MessageId::new(1_795_899_865_000_000, 3, 42);
        let head = encode_message(
            id,
            7,
            &envelope(),
            false,
            &[b"Received: x\r\n", b"body\r\n"],
        );
        let mut bytes = head.clone();
        bytes.extend_from_slice(b"Received: x\r\nbody\r\n");
        let (rec, len) = decode(&bytes).unwrap();
        assert_eq!(len, bytes.len());
        let Record::Message(m) = rec else {
            panic!("not a message: {rec:?}")
        };
        assert_eq!(m.id, id);
        assert_eq!(m.sender, "s@a.example");
        assert_eq!(
            m.recipients,
            vec![("r1@b.example", ""), ("r2@c.example", "")]
        );
        assert_eq!(m.content, b"Received: x\r\nbody\r\n");
    }

    #[test]
    fn every_truncation_is_torn_and_every_flip_is_caught() {
        let id = MessageId::new(1, 0, 0);
        let mut bytes = encode_message(id, 7, &envelope(), false, &[b"hello\r\n"]);
        bytes.extend_from_slice(b"hello\r\n");
        for cut in 0..bytes.len() {
            assert!(
                matches!(decode(&bytes[..cut]), Err(FrameError::Torn { .. })),
                "cut {cut}"
            );
        }
        for i in 4..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(decode(&b).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn a_killed_message_is_a_valid_dead_frame_and_nothing_else_can_be_killed() {
        let id = MessageId::new(1, 0, 0);
        let mut bytes = encode_message(id, 7, &envelope(), false, &[b"hello\r\n"]);
        bytes.extend_from_slice(b"hello\r\n");
        let len = bytes.len();
        bytes[KIND_OFFSET as usize] = DEAD_MESSAGE;
        assert_eq!(decode(&bytes), Ok((Record::DeadMessage, len)));
        // The CRC still covers the payload of a dead record.
        let mut flipped = bytes.clone();
        flipped[len - 1] ^= 1;
        assert!(decode(&flipped).is_err());
        let mut outcome = encode_outcome(&OutcomeRecord {
            id,
            recipient: 0,
            kind: OutcomeKind::Delivered,
            attempts: 1,
            next_attempt_micros: 0,
        });
        outcome[KIND_OFFSET as usize] |= DEAD;
        assert_eq!(
            decode(&outcome),
            Err(FrameError::Corrupt("unknown record kind"))
        );
    }

    #[test]
    fn outcome_round_trips() {
        let o = OutcomeRecord {
            id: MessageId::new(5, 1, 2),
            recipient: 7,
            kind: OutcomeKind::Deferred,
            attempts: 3,
            next_attempt_micros: 99,
        };
        let bytes = encode_outcome(&o);
        assert_eq!(decode(&bytes).unwrap(), (Record::Outcome(o), bytes.len()));
    }

    #[test]
    fn settled_round_trips_and_rejects_damage() {
        let id = MessageId::new(5, 1, 2);
        let states = [0u8, 1, 2, 3, 0];
        let bytes = encode_settled(id, &states);
        assert_eq!(
            decode(&bytes).unwrap(),
            (
                Record::Settled(SettledRecord {
                    id,
                    states: &states
                }),
                bytes.len()
            )
        );
        for cut in 0..bytes.len() {
            assert!(
                matches!(decode(&bytes[..cut]), Err(FrameError::Torn { .. })),
                "cut {cut}"
            );
        }
        for i in 4..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(decode(&b).is_err(), "flip at {i} accepted");
        }
        // A deferral is not a settled state, even with a valid CRC.
        let deferred = encode_settled(id, &[OutcomeKind::Deferred as u8]);
        assert_eq!(
            decode(&deferred),
            Err(FrameError::Corrupt("unknown settled state"))
        );
        // A count that disagrees with the payload.
        let mut short = encode_settled(id, &[1, 1]);
        short[9 + 16] = 3;
        let crc = crc32c::crc32c(&short[8..]);
        short[4..8].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(decode(&short), Err(FrameError::Corrupt(_))));
    }

    #[test]
    fn ids_are_time_ordered_and_parse_back() {
        let a = MessageId::new(1000, 1, 5);
        let b = MessageId::new(1001, 0, 0);
        assert!(a < b);
        assert_eq!(a.to_string().len(), 20);
        assert_eq!(a.to_string().parse::<MessageId>().unwrap(), a);
        assert_eq!(a.unix_micros(), 1000);
        assert_eq!((a.shard(), b.shard()), (1, 0));
    }
}
