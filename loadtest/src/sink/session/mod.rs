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
//! RFC 5321 §4.1.1.4) and refuses bare CR/LF like pigeon. CHUNKING (RFC 3030) is offered
//! too, with BDAT chunks checked by pigeon's [`BdatEncoder`].
//!
//! This module owns the session's state, the input framing and the commands of the
//! envelope and the session (EHLO, MAIL, RCPT, RSET, QUIT…); beside it:
//! - [`content`]: DATA content and BDAT chunks, up to the reply that accepts the message;
//! - [`tls_auth`]: STARTTLS and AUTH PLAIN.
//!
//! What a session shares with the others of its run is in [`crate::sink::config`].

use std::collections::VecDeque;
use std::time::Duration;

use pigeon::smtp::address::parse_mailbox;
use pigeon::smtp::command::Command;
use pigeon::smtp::data::{BdatEncoder, DataScanner};
use pigeon::smtp::reply::{replies, Enhanced, Reply};

use crate::sink::config::SinkConfig;
use crate::sink::fault::{Action, FaultPlan, Stage};

mod content;
#[cfg(test)]
mod testing;
mod tls_auth;

use content::Chunk;

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
    /// STARTTLS was accepted: write the output, drop any input the client sent after the
    /// command (RFC 3207 §5), run the TLS handshake, then call
    /// [`SinkSession::handle_tls_started`].
    StartTls,
    /// STARTTLS was refused or (after its 220) will be cut off by an injected fault.
    StartTlsFailed,
    /// AUTH succeeded.
    AuthOk,
    /// AUTH failed (wrong credentials or a malformed response).
    AuthFailed,
}

/// One SMTP server session of the sink. See the module docs for the call order.
#[derive(Debug)]
pub struct SinkSession<'a> {
    config: &'a SinkConfig,
    /// Numbers the connection: the key of STARTTLS faults.
    connection: u64,
    output: Vec<u8>,
    events: VecDeque<Event>,
    greeted: bool,
    /// The transaction's sender, once MAIL was accepted.
    sender: Option<String>,
    recipients: Vec<String>,
    /// Present while reading content.
    scanner: Option<DataScanner>,
    /// Present from the first BDAT of a transaction to its last.
    bdat: Option<BdatEncoder>,
    /// A BDAT chunk being read: octets still to come, and how it ends.
    chunk: Option<Chunk>,
    content: Vec<u8>,
    closed: bool,
    tls: bool,
    /// STARTTLS was accepted; nothing more is read until the handshake is done.
    awaiting_tls: bool,
    /// AUTH PLAIN without an initial response: the next line is the response.
    awaiting_auth: bool,
    authenticated: bool,
    /// The longest delay asked for by a reply now in the output.
    delay: Duration,
}

impl<'a> SinkSession<'a> {
    /// A session that has just sent its greeting (delayed per `config.delays.greeting`);
    /// `connection` numbers it among the run's connections.
    pub fn new(config: &'a SinkConfig, connection: u64) -> SinkSession<'a> {
        let mut output = Vec::with_capacity(512);
        Reply::plain(
            220,
            vec![format!("{} ESMTP pigeon-load sink", config.hostname).into()],
        )
        .write_to(&mut output);
        SinkSession {
            config,
            connection,
            output,
            events: VecDeque::new(),
            greeted: false,
            sender: None,
            recipients: Vec::new(),
            scanner: None,
            bdat: None,
            chunk: None,
            content: Vec::new(),
            closed: false,
            tls: false,
            awaiting_tls: false,
            awaiting_auth: false,
            authenticated: false,
            delay: config.delays.greeting,
        }
    }

    /// How long to wait before writing the output now pending; resets it.
    pub fn take_delay(&mut self) -> Duration {
        std::mem::take(&mut self.delay)
    }

    /// Consumes client bytes; returns how many were used. Bytes not used (a partial command
    /// line) must be offered again with more appended.
    pub fn handle_input(&mut self, input: &[u8], faults: &FaultPlan) -> usize {
        let mut pos = 0;
        while pos < input.len() && !self.closed && !self.awaiting_tls {
            if self.chunk.is_some() {
                pos += self.feed_chunk(&input[pos..], faults);
                continue;
            }
            if self.scanner.is_some() {
                let (used, done) = self.feed_data(&input[pos..], faults);
                pos += used;
                if !done {
                    break;
                }
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
        self.bdat = None;
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
        if std::mem::take(&mut self.awaiting_auth) {
            return self.check_auth(line);
        }
        let cmd = match Command::parse(line) {
            Ok(cmd) => cmd,
            Err(e) => return self.reply(e.reply()),
        };
        match cmd {
            Command::Ehlo(_) => {
                self.reset();
                self.greeted = true;
                let config = self.config;
                self.output.extend_from_slice(config.ehlo_reply(self.tls));
            }
            Command::Helo(_) => {
                self.reset();
                self.greeted = true;
                let host = self.config.hostname.clone();
                self.reply(Reply::plain(250, vec![host.into()]));
            }
            Command::Mail { path, .. } => {
                if !self.greeted {
                    return self.reply(replies::bad_sequence("Send EHLO first"));
                }
                if self.config.auth.is_some() && !self.authenticated {
                    return self.reply(Reply::new(
                        530,
                        Enhanced(5, 7, 0),
                        "Authentication required",
                    ));
                }
                self.delay = self.delay.max(self.config.delays.mail);
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
                self.delay = self.delay.max(self.config.delays.rcpt);
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
            Command::Data => self.start_data(),
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
            Command::StartTls => self.start_tls(faults),
            Command::Auth(args) => self.auth(args),
            Command::Bdat { size, last } => self.start_chunk(size, last, faults),
            Command::Expn => self.reply(replies::not_implemented()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{drive, drive_split, session};
    use super::*;
    use crate::sink::fault::Fault;

    #[test]
    fn pipelined_transaction_one_byte_at_a_time() {
        let plan = FaultPlan::default();
        let mut s = session(true);
        let input = b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n\
                      Subject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n";
        let (out, events) = drive_split(&mut s, input, 1, &plan);
        assert!(out.starts_with("220 sink.test"));
        assert!(out.contains("250-PIPELINING\r\n"));
        assert!(out.contains("354 "));
        assert!(out.ends_with("221 2.0.0 Bye\r\n"), "{out}");
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
