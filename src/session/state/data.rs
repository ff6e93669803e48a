//! Message content: DATA (RFC 5321 §4.1.1.4) and BDAT chunks (RFC 3030), fed through the
//! codec in `smtp::data` and the DKIM body hashes as they arrive; the hop-count check; and
//! the finished message handed to the driver and answered once stored.

use super::body_hash::BodyHashes;
use super::{Event, Input, Session};
use crate::smtp::data::{BdatEncoder, DataScanner};
use crate::smtp::envelope::Envelope;
use crate::smtp::reply::{replies, Enhanced, Reply};

impl Session {
    /// The result of storing the message from the last [`Event::Message`]: its queue id, or
    /// the reply to give instead.
    pub fn handle_stored(&mut self, result: Result<&str, Reply>) {
        debug_assert!(matches!(self.input, Input::AwaitStore));
        match result {
            Ok(id) => self.reply(replies::queued(id)),
            Err(reply) => self.reply(reply),
        }
        self.input = Input::Commands;
        self.close_if_stopping();
    }

    /// Feeds DATA content; returns the bytes used.
    pub(super) fn feed_data(&mut self, rest: &[u8]) -> usize {
        let Input::Data(scanner) = &mut self.input else {
            unreachable!("feed_data outside DATA");
        };
        let txn = self.txn.as_mut().expect("DATA without transaction");
        let (used, done) = scanner.feed(rest, &mut txn.body);
        if let Some(h) = txn.hashes.as_mut() {
            // The last three octets may be the terminator's ".\r\n".
            h.advance(&txn.body, txn.body.len().saturating_sub(3));
        }
        if done {
            self.finish_data();
        }
        used
    }

    /// Feeds the bytes of a BDAT chunk; returns the bytes used.
    pub(super) fn feed_chunk(&mut self, rest: &[u8]) -> usize {
        let Input::Chunk {
            size,
            remaining,
            last,
            keep,
        } = &mut self.input
        else {
            unreachable!("feed_chunk outside a chunk");
        };
        let take = (*remaining).min(rest.len() as u64) as usize;
        *remaining -= take as u64;
        let (done, size, last, keep) = (*remaining == 0, *size, *last, *keep);
        if keep {
            let txn = self.txn.as_mut().expect("kept chunk without transaction");
            let encoder = txn.bdat.as_mut().expect("kept chunk without encoder");
            encoder.feed(&rest[..take], &mut txn.body);
            if let Some(h) = txn.hashes.as_mut() {
                h.advance(&txn.body, txn.body.len());
            }
        }
        if done {
            self.finish_chunk(size, last, keep);
        }
        take
    }

    /// DATA: 354 once there is a recipient, then content until the lone dot.
    pub(super) fn data(&mut self) {
        let Some(txn) = self.txn.as_ref() else {
            return self.error(replies::bad_sequence("Need MAIL command"));
        };
        if txn.bdat.is_some() {
            return self.error(replies::bad_sequence("DATA after BDAT"));
        }
        if txn.recipients.is_empty() {
            return self.error(if txn.rcpt_tried {
                Reply::new(554, Enhanced(5, 5, 1), "No valid recipients")
            } else {
                replies::bad_sequence("Need RCPT command")
            });
        }
        if let Some(txn) = self.txn.as_mut() {
            txn.hashes = BodyHashes::new(&self.config.body_canons);
        }
        self.input = Input::Data(DataScanner::new(self.config.max_message_size));
        self.reply(replies::start_data());
    }

    /// BDAT: the chunk's bytes are read next, kept only when the transaction admits them.
    pub(super) fn bdat(&mut self, size: u64, last: bool) {
        let max = self.config.max_message_size;
        // The chunk's bytes follow the command whatever we answer, so they are always read.
        let keep = match self.txn.as_mut() {
            Some(txn) if !txn.recipients.is_empty() => {
                if txn.bdat.is_none() {
                    txn.hashes = BodyHashes::new(&self.config.body_canons);
                }
                txn.bdat
                    .get_or_insert_with(|| BdatEncoder::new(max))
                    .admit(size)
            }
            _ => false,
        };
        self.input = Input::Chunk {
            size,
            remaining: size,
            last,
            keep,
        };
        if size == 0 {
            self.finish_chunk(size, last, keep);
        }
    }

    fn finish_chunk(&mut self, size: u64, last: bool, keep: bool) {
        self.input = Input::Commands;
        let Some(txn) = self.txn.as_mut() else {
            return self.error(replies::bad_sequence("Need MAIL command"));
        };
        let Some(encoder) = txn.bdat.as_mut() else {
            let reply = if txn.rcpt_tried {
                Reply::new(554, Enhanced(5, 5, 1), "No valid recipients")
            } else {
                replies::bad_sequence("Need RCPT command")
            };
            return self.error(reply);
        };
        if !keep {
            // Over the size limit: the transaction is over (RFC 3030 §3 lets us drop it).
            self.txn = None;
            return self.reply(replies::too_big());
        }
        if !last {
            return self.reply(replies::chunk_ok(size));
        }
        let faults = encoder.finish(&mut txn.body);
        match faults.reply() {
            Some(reply) => {
                self.txn = None;
                self.reply(reply);
            }
            None => self.emit_message(),
        }
    }

    fn finish_data(&mut self) {
        let Input::Data(scanner) = &self.input else {
            unreachable!("finish_data outside DATA");
        };
        match scanner.faults().reply() {
            Some(reply) => {
                self.input = Input::Commands;
                self.txn = None;
                self.reply(reply);
            }
            None => self.emit_message(),
        }
    }

    fn emit_message(&mut self) {
        let txn = self.txn.take().expect("message without transaction");
        // RFC 5321 §6.3: a message that has passed this many relays is looping.
        if received_count(&txn.body) >= MAX_HOPS {
            self.input = Input::Commands;
            return self.reply(Reply::new(
                554,
                Enhanced(5, 4, 6),
                "Too many hops: mail loop?",
            ));
        }
        let (helo, extended) = self.helo.clone().unwrap_or_default();
        // RFC 3848 and RFC 6531 §3.7.3: the `with` clause says ESMTP, TLS and SMTPUTF8.
        // RFC 3848 §2 adds `A` for an authenticated session (ESMTPSA, UTF8SMTPSA).
        let protocol = match (extended, txn.smtputf8, self.tls_active, self.authenticated) {
            (_, true, true, true) => "UTF8SMTPSA",
            (_, true, true, false) => "UTF8SMTPS",
            (_, true, false, _) => "UTF8SMTP",
            (true, false, true, true) => "ESMTPSA",
            (true, false, true, false) => "ESMTPS",
            (true, false, false, _) => "ESMTP",
            (false, false, _, _) => "SMTP",
        };
        let body_hashes = txn.hashes.map(|h| h.finish(&txn.body)).unwrap_or_default();
        let envelope = Envelope {
            body_hashes,
            peer: self.peer,
            helo,
            protocol,
            sender: txn.sender,
            mail_params: txn.mail_params,
            mail_dsn: txn.mail_dsn,
            recipients: txn.recipients,
            smtputf8: txn.smtputf8,
            auth: self.authenticated_user().map(str::to_owned),
        };
        self.input = Input::AwaitStore;
        self.events
            .push_back(Event::Message(Box::new(envelope), txn.body));
    }
}

/// `Received:` fields after which a message is taken to be looping (Postfix's
/// `hopcount_limit`).
pub const MAX_HOPS: usize = 50;

/// Counts the `Received:` fields in the header section of wire-form content.
fn received_count(content: &[u8]) -> usize {
    let mut count = 0;
    for line in content.split(|&b| b == b'\n') {
        if line == b"\r" || line.is_empty() {
            break;
        }
        if line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"received:") {
            count += 1;
        }
    }
    count
}
