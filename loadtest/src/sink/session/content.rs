//! A message's content into the session: DATA up to `CRLF.CRLF` (scanned by pigeon's
//! [`DataScanner`]), or BDAT chunks of announced sizes (RFC 3030, decoded by pigeon's
//! [`BdatEncoder`]), up to the reply that accepts or refuses the message.
//!
//! Unless the run saves messages, content is dropped as it is read: a load sink keeps no
//! more than the few octets the DATA scanner needs to cut off its terminator.

use pigeon::smtp::data::{BdatEncoder, DataScanner};
use pigeon::smtp::reply::{replies, Enhanced, Reply};

use super::{Event, SinkSession};
use crate::sink::fault::{FaultPlan, Stage};

/// A BDAT chunk on its way in.
#[derive(Debug)]
pub(super) struct Chunk {
    remaining: u64,
    last: bool,
    /// The reply when the chunk is refused; it is read and dropped all the same, since the
    /// client sends it without waiting (RFC 3030 §2).
    refused: Option<Reply>,
}

impl SinkSession<'_> {
    /// DATA: the content follows, if there is a transaction to take it.
    pub(super) fn start_data(&mut self) {
        if self.sender.is_none() {
            return self.reply(replies::bad_sequence("Need MAIL before DATA"));
        }
        if self.recipients.is_empty() {
            return self.reply(Reply::new(554, Enhanced(5, 5, 1), "No valid recipients"));
        }
        self.scanner = Some(DataScanner::new(usize::MAX));
        self.content.clear();
        self.reply(replies::start_data());
    }

    /// DATA content from `input`; returns how many octets were used and whether the
    /// content has ended (the message is then answered).
    pub(super) fn feed_data(&mut self, input: &[u8], faults: &FaultPlan) -> (usize, bool) {
        let Some(scanner) = &mut self.scanner else {
            return (0, true);
        };
        let (used, done) = scanner.feed(input, &mut self.content);
        if !self.config.save && self.content.len() > 3 {
            // Discarding: keep only the last three octets, because at the end the
            // scanner cuts the terminator's ".\r\n" off what it has appended.
            let n = self.content.len();
            self.content.copy_within(n - 3.., 0);
            self.content.truncate(3);
        }
        if done {
            self.end_content(faults);
        }
        (used, done)
    }

    /// `BDAT size [LAST]`: the chunk's octets follow the command line, refused or not.
    pub(super) fn start_chunk(&mut self, size: u64, last: bool, faults: &FaultPlan) {
        let refused = if self.sender.is_none() {
            Some(replies::bad_sequence("Need MAIL before BDAT"))
        } else if self.recipients.is_empty() {
            Some(Reply::new(554, Enhanced(5, 5, 1), "No valid recipients"))
        } else {
            None
        };
        if refused.is_none() && self.bdat.is_none() {
            self.bdat = Some(BdatEncoder::new(usize::MAX));
            self.content.clear();
        }
        self.chunk = Some(Chunk {
            remaining: size,
            last,
            refused,
        });
        if size == 0 {
            // A zero-octet chunk (BDAT 0 LAST) is over as soon as its line is.
            self.end_chunk(faults);
        }
    }

    /// Octets of the chunk being read from `input`; returns how many were used.
    pub(super) fn feed_chunk(&mut self, input: &[u8], faults: &FaultPlan) -> usize {
        let Some(chunk) = &mut self.chunk else {
            return 0;
        };
        let take = chunk.remaining.min(input.len() as u64) as usize;
        if chunk.refused.is_none() {
            if let Some(encoder) = &mut self.bdat {
                let body = &mut self.content;
                encoder.feed(&input[..take], body);
                if !self.config.save {
                    body.clear();
                }
            }
        }
        chunk.remaining -= take as u64;
        if chunk.remaining == 0 {
            self.end_chunk(faults);
        }
        take
    }

    fn end_chunk(&mut self, faults: &FaultPlan) {
        let Some(chunk) = self.chunk.take() else {
            return;
        };
        if let Some(reply) = chunk.refused {
            if chunk.last {
                // BDAT LAST ends the transaction, refused or not (RFC 3030 §2).
                self.reset();
            }
            return self.reply(reply);
        }
        if chunk.last {
            return self.end_content(faults);
        }
        self.reply(Reply::new(250, Enhanced(2, 0, 0), "Ok: chunk received"));
    }

    /// The content is complete: refuse it (malformed, or an injected fault) or accept it
    /// as an [`Event::Message`].
    fn end_content(&mut self, faults: &FaultPlan) {
        let scanner = self.scanner.take();
        let mut content = std::mem::take(&mut self.content);
        let faults_found = match (scanner, self.bdat.take()) {
            (Some(s), _) => s.faults().reply(),
            (None, Some(mut encoder)) => encoder.finish(&mut content).reply(),
            (None, None) => None,
        };
        if let Some(reply) = faults_found {
            self.reset();
            return self.reply(reply);
        }
        if !faults.is_clear(Stage::Data) {
            // The message is its recipients: a retry carries the same ones.
            let key = self.recipients.join(",");
            if self.inject(faults.check(Stage::Data, key.as_bytes())) {
                if !self.closed {
                    self.events.push_back(Event::DataRefused);
                }
                return self.reset();
            }
        }
        let sender = self.sender.take().unwrap_or_default();
        let recipients = std::mem::take(&mut self.recipients);
        self.delay = self.delay.max(self.config.delays.data);
        self.events.push_back(Event::Message {
            sender,
            recipients,
            content: if self.config.save {
                content
            } else {
                Vec::new()
            },
        });
        self.reply(Reply::new(
            250,
            Enhanced(2, 0, 0),
            "Ok: discarded by pigeon-load sink",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{drive, drive_split, session};
    use super::*;

    #[test]
    fn pipelined_bdat_transactions_in_any_split() {
        let plan = FaultPlan::default();
        // Three transactions written at once: two chunks then one LAST; a BDAT with no
        // valid recipient (its chunk read and dropped); a bare LF, refused at the end.
        let input = b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n\
                      BDAT 4\r\n.a\r\nBDAT 6 LAST\r\nb\r\n.\r\n\
                      RSET\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<bad address>\r\nBDAT 3 LAST\r\nx\r\n\
                      RSET\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<c@y.test>\r\nBDAT 5 LAST\r\nx\ny\r\n\
                      QUIT\r\n";
        let mut whole = None;
        for split in [input.len(), 1, 2, 7] {
            let mut s = session(true);
            let (out, events) = drive_split(&mut s, input, split, &plan);
            assert!(out.contains("CHUNKING\r\n"));
            let codes: Vec<&str> = out
                .lines()
                .skip(1)
                .filter(|l| l.as_bytes()[3] == b' ')
                .map(|l| &l[..9])
                .collect();
            assert_eq!(
                codes,
                [
                    "250 CHUNK",
                    "250 2.1.0",
                    "250 2.1.5",
                    "250 2.0.0",
                    "250 2.0.0",
                    "250 2.0.0",
                    "250 2.1.0",
                    "501 5.1.3",
                    "554 5.5.1",
                    "250 2.0.0",
                    "250 2.1.0",
                    "250 2.1.5",
                    "554 5.6.0",
                    "221 2.0.0"
                ],
                "split {split}: {out}"
            );
            let saved: Vec<&Vec<u8>> = events
                .iter()
                .filter_map(|e| match e {
                    Event::Message { content, .. } => Some(content),
                    _ => None,
                })
                .collect();
            // Stored in wire form, as DATA gives it: the leading dots stuffed.
            assert_eq!(saved, [&b"..a\r\nb\r\n..\r\n".to_vec()], "split {split}");
            assert!(s.is_closed());
            let first = whole.get_or_insert_with(|| out.clone());
            assert_eq!(first, &out);
        }
    }

    #[test]
    fn smuggled_terminator_does_not_end_data() {
        let plan = FaultPlan::default();
        let mut s = session(false);
        let (_, _) = drive(
            &mut s,
            b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n",
            &plan,
        );
        let (out, events) = drive(&mut s, b"x\n.\nMAIL FROM:<e@v.test>\r\n", &plan);
        assert!(out.is_empty() && events.is_empty());
        let (out, events) = drive(&mut s, b"\r\n.\r\n", &plan);
        assert!(out.starts_with("554 "), "{out}");
        assert!(events.is_empty());
    }
}
