//! The sink's SMTP server side as a sans-io state machine: bytes in, replies and events out.
//!
//! Call order: [`SinkSession::new`] (the greeting is already in the output), then for each
//! read [`SinkSession::handle_input`] (it returns how many bytes it used: whole command
//! lines, or content), [`SinkSession::poll_event`] until `None`, [`SinkSession::take_output`]
//! and write it, until [`SinkSession::is_closed`].
//!
//! Replies to a pipelined batch (RFC 2920) pile up in the output until the input runs dry,
//! so the driver answers a whole batch with one write. Content is scanned by pigeon's own
//! [`DataScanner`], so the sink ends DATA exactly where pigeon would (only `CRLF.CRLF`,
//! RFC 5321 §4.1.1.4) and refuses bare CR/LF like pigeon.

use std::collections::VecDeque;

use pigeon::session::data::DataScanner;
use pigeon::smtp::address::parse_mailbox;
use pigeon::smtp::command::Command;
use pigeon::smtp::reply::{replies, Enhanced, Reply};

use crate::sink::fault::{Action, FaultPlan, Stage};

/// Longest command line taken, CRLF included (RFC 5321 §4.5.3.1.4 says 512; clients with
/// many ESMTP parameters exceed it, so allow more).
const MAX_LINE: usize = 4096;

/// What the driver must count or store.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// MAIL accepted: a transaction began.
    Transaction,
    /// A RCPT was refused by an injected fault.
    RcptRefused,
    /// A message was refused after its content by an injected fault.
    DataRefused,
    /// A message was accepted (its 250 is in the output, not yet written).
    Message {
        /// The reverse-path, without brackets.
        sender: String,
        /// The accepted forward-paths, without brackets.
        recipients: Vec<String>,
        /// The content in wire form (dot-stuffed, without the final dot), when saving;
        /// empty otherwise.
        content: Vec<u8>,
    },
    /// An injected fault closed the connection without a reply.
    Disconnect,
}

/// One SMTP server session of the sink. See the module docs for the call order.
#[derive(Debug)]
pub struct SinkSession {
    output: Vec<u8>,
    events: VecDeque<Event>,
    greeted: bool,
    /// The transaction's sender, once MAIL was accepted.
    sender: Option<String>,
    recipients: Vec<String>,
    /// Present while reading content.
    scanner: Option<DataScanner>,
    content: Vec<u8>,
    save: bool,
    closed: bool,
    ehlo_reply: &'static [u8],
    hostname: &'static str,
}

impl SinkSession {
    /// A session that has just sent its greeting. `save` keeps each message's content for
    /// the [`Event::Message`]; `hostname` names the sink in the greeting and EHLO reply.
    pub fn new(hostname: &'static str, ehlo_reply: &'static [u8], save: bool) -> SinkSession {
        let mut output = Vec::with_capacity(512);
        Reply::plain(
            220,
            vec![format!("{hostname} ESMTP pigeon-load sink").into()],
        )
        .write_to(&mut output);
        SinkSession {
            output,
            events: VecDeque::new(),
            greeted: false,
            sender: None,
            recipients: Vec::new(),
            scanner: None,
            content: Vec::new(),
            save,
            closed: false,
            ehlo_reply,
            hostname,
        }
    }

    /// The EHLO reply the sink sends, for a `hostname`; built once per run.
    pub fn ehlo_reply(hostname: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let lines = [
            hostname,
            "PIPELINING",
            "SIZE 1073741824",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
        ];
        Reply::plain(250, lines.iter().map(|l| l.to_string().into()).collect()).write_to(&mut out);
        out
    }

    /// Consumes client bytes; returns how many were used. Bytes not used (a partial command
    /// line) must be offered again with more appended.
    pub fn handle_input(&mut self, input: &[u8], faults: &FaultPlan) -> usize {
        let mut pos = 0;
        while pos < input.len() && !self.closed {
            if let Some(scanner) = &mut self.scanner {
                let (used, done) = scanner.feed(&input[pos..], &mut self.content);
                pos += used;
                if !self.save && self.content.len() > 3 {
                    // Discarding: keep only the last three octets, because at the end the
                    // scanner cuts the terminator's ".\r\n" off what it has appended.
                    let n = self.content.len();
                    self.content.copy_within(n - 3.., 0);
                    self.content.truncate(3);
                }
                if !done {
                    break;
                }
                self.end_content(faults);
                continue;
            }
            let rest = &input[pos..];
            match memchr::memchr(b'\n', rest) {
                Some(i) if i < MAX_LINE => {
                    let line = &rest[..i];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    self.handle_line(line, faults);
                    pos += i + 1;
                }
                None if rest.len() < MAX_LINE => break,
                _ => {
                    // Dropping the line would leave us out of step; a load sink just ends.
                    self.reply(Reply::new(500, Enhanced(5, 5, 2), "Line too long"));
                    self.closed = true;
                    return input.len();
                }
            }
        }
        pos
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Moves the pending replies into `buf` (which should be empty).
    pub fn take_output(&mut self, buf: &mut Vec<u8>) {
        std::mem::swap(&mut self.output, buf);
    }

    /// True once the session is over: write what is left, then close.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn reply(&mut self, reply: Reply) {
        reply.write_to(&mut self.output);
    }

    fn reset(&mut self) {
        self.sender = None;
        self.recipients.clear();
    }

    /// Applies an injected fault; returns true when the command is refused.
    fn inject(&mut self, action: Option<Action>) -> bool {
        match action {
            None => false,
            Some(Action::Disconnect) => {
                self.events.push_back(Event::Disconnect);
                self.closed = true;
                true
            }
            Some(Action::Reply(code)) => {
                // X.0.0 is "other or undefined" (RFC 3463 §3.1): honest for a made-up fault.
                let class = (code / 100) as u8;
                self.reply(Reply::new(code, Enhanced(class, 0, 0), "Injected fault"));
                // RFC 5321 §3.8: after a 421 the server closes the connection.
                if code == 421 {
                    self.closed = true;
                }
                true
            }
        }
    }

    fn handle_line(&mut self, line: &[u8], faults: &FaultPlan) {
        let cmd = match Command::parse(line) {
            Ok(cmd) => cmd,
            Err(e) => return self.reply(e.reply()),
        };
        match cmd {
            Command::Ehlo(_) => {
                self.reset();
                self.greeted = true;
                self.output.extend_from_slice(self.ehlo_reply);
            }
            Command::Helo(_) => {
                self.reset();
                self.greeted = true;
                let host = self.hostname;
                self.reply(Reply::plain(250, vec![host.into()]));
            }
            Command::Mail { path, .. } => {
                if !self.greeted {
                    return self.reply(replies::bad_sequence("Send EHLO first"));
                }
                if self.sender.is_some() {
                    return self.reply(replies::bad_sequence("Nested MAIL command"));
                }
                if !faults.is_clear(Stage::Mail) && self.inject(faults.check(Stage::Mail, path)) {
                    return;
                }
                self.sender = Some(String::from_utf8_lossy(path).into_owned());
                self.events.push_back(Event::Transaction);
                self.reply(replies::sender_ok());
            }
            Command::Rcpt { path, .. } => {
                if self.sender.is_none() {
                    return self.reply(replies::bad_sequence("Need MAIL before RCPT"));
                }
                let mailbox = match parse_mailbox(path, true) {
                    Ok(m) => m,
                    Err(e) => return self.reply(e.reply()),
                };
                if !faults.is_clear(Stage::Rcpt)
                    && self.inject(faults.check(Stage::Rcpt, mailbox.as_str().as_bytes()))
                {
                    if !self.closed {
                        self.events.push_back(Event::RcptRefused);
                    }
                    return;
                }
                self.recipients.push(mailbox.as_str().to_owned());
                self.reply(replies::recipient_ok());
            }
            Command::Data => {
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
            Command::Rset => {
                self.reset();
                self.reply(replies::ok());
            }
            Command::Noop => self.reply(replies::ok()),
            Command::Quit => {
                self.reply(replies::bye());
                self.closed = true;
            }
            Command::Help => self.reply(replies::help()),
            Command::Vrfy => self.reply(replies::cannot_vrfy()),
            Command::Bdat { .. } | Command::Expn | Command::StartTls | Command::Auth(_) => {
                self.reply(replies::not_implemented())
            }
        }
    }

    fn end_content(&mut self, faults: &FaultPlan) {
        let scanner = self.scanner.take();
        let content = std::mem::take(&mut self.content);
        if let Some(reply) = scanner.and_then(|s| s.faults().reply()) {
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
        self.events.push_back(Event::Message {
            sender,
            recipients,
            content: if self.save { content } else { Vec::new() },
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
    use super::*;
    use crate::sink::fault::Fault;

    fn session(save: bool) -> SinkSession {
        let ehlo: &'static [u8] = SinkSession::ehlo_reply("sink.test").leak();
        SinkSession::new("sink.test", ehlo, save)
    }

    fn drive(s: &mut SinkSession, input: &[u8], plan: &FaultPlan) -> (String, Vec<Event>) {
        let used = s.handle_input(input, plan);
        assert_eq!(used, input.len());
        let mut out = Vec::new();
        s.take_output(&mut out);
        let events = std::iter::from_fn(|| s.poll_event()).collect();
        (String::from_utf8(out).unwrap(), events)
    }

    #[test]
    fn pipelined_transaction_one_byte_at_a_time() {
        let plan = FaultPlan::default();
        let mut s = session(true);
        let input = b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n\
                      Subject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n";
        let mut events = Vec::new();
        let mut buf = Vec::new();
        for &b in input.iter() {
            buf.push(b);
            let used = s.handle_input(&buf, &plan);
            buf.drain(..used);
            events.extend(std::iter::from_fn(|| s.poll_event()));
        }
        let mut out = Vec::new();
        s.take_output(&mut out);
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("220 sink.test"));
        assert!(out.contains("250-PIPELINING\r\n"));
        assert!(out.contains("354 "));
        assert!(out.ends_with("221 2.0.0 Bye\r\n") || out.contains("221"));
        assert_eq!(events[0], Event::Transaction);
        match &events[1] {
            Event::Message {
                recipients,
                content,
                ..
            } => {
                assert_eq!(recipients, &["b@y.test"]);
                assert_eq!(content, b"Subject: x\r\n\r\n..dot\r\n");
            }
            e => panic!("{e:?}"),
        }
        assert!(s.is_closed());
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

    #[test]
    fn sequencing_and_faults() {
        let plan = FaultPlan::new(vec![Fault::parse("rcpt:550:100").unwrap()]).unwrap();
        let mut s = session(false);
        let (out, _) = drive(&mut s, b"MAIL FROM:<a@x.test>\r\n", &plan);
        assert!(out.contains("503 "), "{out}");
        let (out, events) = drive(
            &mut s,
            b"HELO c\r\nRCPT TO:<b@y.test>\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n",
            &plan,
        );
        let codes: Vec<&str> = out.lines().map(|l| &l[..3]).collect();
        assert_eq!(codes, ["250", "503", "250", "550", "554"]);
        assert_eq!(events, [Event::Transaction, Event::RcptRefused]);
    }
}
