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

use std::collections::VecDeque;
use std::time::Duration;

use pigeon::smtp::address::parse_mailbox;
use pigeon::smtp::command::Command;
use pigeon::smtp::data::{BdatEncoder, DataScanner};
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

/// Reply delays, per stage; zero means none.
#[derive(Clone, Copy, Debug, Default)]
pub struct Delays {
    /// Before the greeting.
    pub greeting: Duration,
    /// Before the reply to MAIL.
    pub mail: Duration,
    /// Before the reply to each RCPT.
    pub rcpt: Duration,
    /// Before the reply after the content.
    pub data: Duration,
}

impl Delays {
    /// Adds one `--delay STAGE:MILLISECONDS`.
    pub fn add(&mut self, spec: &str) -> Result<(), String> {
        let bad = || format!("bad --delay {spec:?}: want greeting|mail|rcpt|data:MILLISECONDS");
        let (stage, ms) = spec.split_once(':').ok_or_else(bad)?;
        let d = Duration::from_millis(ms.parse().map_err(|_| bad())?);
        match stage {
            "greeting" => self.greeting = d,
            "mail" => self.mail = d,
            "rcpt" => self.rcpt = d,
            "data" => self.data = d,
            _ => return Err(bad()),
        }
        Ok(())
    }
}

/// What every session of a run shares: identity, the extensions offered, what to check.
#[derive(Debug)]
pub struct SinkConfig {
    /// The greeting's and EHLO reply's host name.
    pub hostname: String,
    /// Keep each message's content for the [`Event::Message`].
    pub save: bool,
    /// STARTTLS is offered (a certificate was given).
    pub starttls: bool,
    /// AUTH PLAIN is offered and required before MAIL; these credentials pass.
    pub auth: Option<(String, String)>,
    /// Reply delays.
    pub delays: Delays,
    ehlo_plain: Vec<u8>,
    ehlo_tls: Vec<u8>,
}

impl SinkConfig {
    /// The configuration, with both EHLO replies built once.
    pub fn new(
        hostname: &str,
        save: bool,
        starttls: bool,
        auth: Option<(String, String)>,
        delays: Delays,
    ) -> SinkConfig {
        // AUTH only where a password would be safe: under TLS when TLS is on offer.
        let ehlo = |tls: bool| {
            let mut lines = vec![
                hostname.to_owned(),
                "PIPELINING".into(),
                "SIZE 1073741824".into(),
                "8BITMIME".into(),
                "SMTPUTF8".into(),
                "ENHANCEDSTATUSCODES".into(),
                "CHUNKING".into(),
            ];
            if starttls && !tls {
                lines.push("STARTTLS".into());
            }
            if auth.is_some() && (tls || !starttls) {
                lines.push("AUTH PLAIN".into());
            }
            let mut out = Vec::new();
            Reply::plain(250, lines.into_iter().map(Into::into).collect()).write_to(&mut out);
            out
        };
        SinkConfig {
            hostname: hostname.to_owned(),
            save,
            starttls,
            ehlo_plain: ehlo(false),
            ehlo_tls: ehlo(true),
            auth,
            delays,
        }
    }
}

/// A BDAT chunk on its way in.
#[derive(Debug)]
struct Chunk {
    remaining: u64,
    last: bool,
    /// The reply when the chunk is refused; it is read and dropped all the same, since the
    /// client sends it without waiting (RFC 3030 §2).
    refused: Option<Reply>,
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

    /// The TLS handshake after STARTTLS succeeded: the session starts over (RFC 3207 §4.2),
    /// waiting for EHLO.
    pub fn handle_tls_started(&mut self) {
        self.awaiting_tls = false;
        self.tls = true;
        self.greeted = false;
        self.authenticated = false;
        self.reset();
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
            if let Some(chunk) = &mut self.chunk {
                let take = chunk.remaining.min((input.len() - pos) as u64) as usize;
                if chunk.refused.is_none() {
                    if let Some(encoder) = &mut self.bdat {
                        let body = &mut self.content;
                        encoder.feed(&input[pos..pos + take], body);
                        if !self.config.save {
                            body.clear();
                        }
                    }
                }
                chunk.remaining -= take as u64;
                pos += take;
                if chunk.remaining == 0 {
                    self.end_chunk(faults);
                }
                continue;
            }
            if let Some(scanner) = &mut self.scanner {
                let (used, done) = scanner.feed(&input[pos..], &mut self.content);
                pos += used;
                if !self.config.save && self.content.len() > 3 {
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
                let ehlo = if self.tls {
                    &config.ehlo_tls
                } else {
                    &config.ehlo_plain
                };
                self.output.extend_from_slice(ehlo);
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
            Command::StartTls => self.start_tls(faults),
            Command::Auth(args) => self.auth(args),
            Command::Bdat { size, last } => self.start_chunk(size, last, faults),
            Command::Expn => self.reply(replies::not_implemented()),
        }
    }

    fn start_tls(&mut self, faults: &FaultPlan) {
        if !self.config.starttls || self.tls {
            return self.reply(replies::not_implemented());
        }
        let key = self.connection.to_string();
        match faults.check(Stage::Starttls, key.as_bytes()) {
            None => {
                self.reply(Reply::new(220, Enhanced(2, 0, 0), "Ready to start TLS"));
                self.events.push_back(Event::StartTls);
                self.awaiting_tls = true;
            }
            Some(Action::Disconnect) => {
                // The client is told to go ahead and then finds nobody to shake hands with.
                self.reply(Reply::new(220, Enhanced(2, 0, 0), "Ready to start TLS"));
                self.events.push_back(Event::StartTlsFailed);
                self.closed = true;
            }
            Some(Action::Reply(code)) => {
                self.events.push_back(Event::StartTlsFailed);
                let class = (code / 100) as u8;
                self.reply(Reply::new(code, Enhanced(class, 0, 0), "Injected fault"));
            }
        }
    }

    /// AUTH PLAIN (RFC 4954, RFC 4616): with an initial response or after a 334.
    fn auth(&mut self, args: &[u8]) {
        if self.config.auth.is_none() {
            return self.reply(replies::not_implemented());
        }
        if self.config.starttls && !self.tls {
            return self.reply(Reply::new(
                538,
                Enhanced(5, 7, 11),
                "Encryption required for requested authentication mechanism",
            ));
        }
        if self.authenticated || self.sender.is_some() {
            return self.reply(replies::bad_sequence(
                "Already authenticated or in a transaction",
            ));
        }
        let mut words = args.splitn(2, |&b| b == b' ');
        let mechanism = words.next().unwrap_or_default();
        if !mechanism.eq_ignore_ascii_case(b"PLAIN") {
            return self.reply(Reply::new(
                504,
                Enhanced(5, 5, 4),
                "Unrecognized authentication type",
            ));
        }
        match words.next() {
            Some(initial) => self.check_auth(initial),
            None => {
                self.awaiting_auth = true;
                self.output.extend_from_slice(b"334 \r\n");
            }
        }
    }

    fn check_auth(&mut self, response: &[u8]) {
        if response == b"*" {
            return self.reply(Reply::new(
                501,
                Enhanced(5, 0, 0),
                "Authentication cancelled",
            ));
        }
        let decoded = data_encoding::BASE64.decode(response).unwrap_or_default();
        let mut parts = decoded.split(|&b| b == 0);
        let (_authzid, user, pass) = (parts.next(), parts.next(), parts.next());
        let good = self.config.auth.as_ref().is_some_and(|(u, p)| {
            user == Some(u.as_bytes()) && pass == Some(p.as_bytes()) && parts.next().is_none()
        });
        if good {
            self.authenticated = true;
            self.events.push_back(Event::AuthOk);
            self.reply(Reply::new(
                235,
                Enhanced(2, 7, 0),
                "Authentication successful",
            ));
        } else {
            self.events.push_back(Event::AuthFailed);
            self.reply(Reply::new(
                535,
                Enhanced(5, 7, 8),
                "Authentication credentials invalid",
            ));
        }
    }

    fn start_chunk(&mut self, size: u64, last: bool, faults: &FaultPlan) {
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
    use super::*;
    use crate::sink::fault::Fault;

    fn session(save: bool) -> SinkSession<'static> {
        let config = Box::leak(Box::new(SinkConfig::new(
            "sink.test",
            save,
            false,
            None,
            Delays::default(),
        )));
        SinkSession::new(config, 0)
    }

    fn drive(s: &mut SinkSession, input: &[u8], plan: &FaultPlan) -> (String, Vec<Event>) {
        let used = s.handle_input(input, plan);
        assert_eq!(used, input.len());
        let mut out = Vec::new();
        s.take_output(&mut out);
        let events = std::iter::from_fn(|| s.poll_event()).collect();
        (String::from_utf8(out).unwrap(), events)
    }

    /// Feeds `input` in pieces of `split` octets, as reads cut anywhere would bring it.
    fn drive_split(
        s: &mut SinkSession,
        input: &[u8],
        split: usize,
        plan: &FaultPlan,
    ) -> (String, Vec<Event>) {
        let mut events = Vec::new();
        let mut buf = Vec::new();
        for piece in input.chunks(split) {
            buf.extend_from_slice(piece);
            let used = s.handle_input(&buf, plan);
            buf.drain(..used);
            events.extend(std::iter::from_fn(|| s.poll_event()));
        }
        let mut out = Vec::new();
        s.take_output(&mut out);
        (String::from_utf8(out).unwrap(), events)
    }

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

    #[test]
    fn starttls_drops_pipelined_input_and_auth_needs_tls() {
        let config = Box::leak(Box::new(SinkConfig::new(
            "sink.test",
            false,
            true,
            Some(("u".into(), "p".into())),
            Delays::default(),
        )));
        let plan = FaultPlan::default();
        let mut s = SinkSession::new(config, 7);
        let plain = b"EHLO c\r\nAUTH PLAIN AHUAcA==\r\nMAIL FROM:<a@x.test>\r\n";
        let (out, _) = drive(&mut s, plain, &plan);
        assert!(
            out.contains("250 STARTTLS\r\n") && !out.contains("AUTH"),
            "{out}"
        );
        assert!(
            out.contains("538 5.7.11") && out.contains("530 5.7.0"),
            "{out}"
        );
        // Bytes after STARTTLS are not read: the driver discards them.
        let input = b"STARTTLS\r\nRSET\r\n";
        assert_eq!(s.handle_input(input, &plan), 10);
        assert_eq!(s.poll_event(), Some(Event::StartTls));
        s.handle_tls_started();
        let (out, events) = drive(
            &mut s,
            b"EHLO c\r\nAUTH PLAIN AHUAeA==\r\nAUTH PLAIN\r\nAHUAcA==\r\nMAIL FROM:<a@x.test>\r\n",
            &plan,
        );
        assert!(
            out.contains("AUTH PLAIN\r\n") && !out.contains("STARTTLS"),
            "{out}"
        );
        let codes: Vec<&str> = out
            .lines()
            .filter(|l| l.as_bytes()[3] == b' ')
            .map(|l| &l[..3])
            .collect();
        assert_eq!(codes, ["220", "250", "535", "334", "235", "250"]);
        assert_eq!(
            events,
            [Event::AuthFailed, Event::AuthOk, Event::Transaction]
        );
    }

    #[test]
    fn starttls_faults_and_delays() {
        let mut delays = Delays::default();
        delays.add("rcpt:40").unwrap();
        assert!(delays.add("helo:3").is_err());
        let config = Box::leak(Box::new(SinkConfig::new(
            "sink.test",
            false,
            true,
            None,
            delays,
        )));
        let plan = FaultPlan::new(vec![Fault::parse("disconnect:starttls:100").unwrap()]).unwrap();
        let mut s = SinkSession::new(config, 1);
        let (out, events) = drive(&mut s, b"EHLO c\r\nSTARTTLS\r\n", &plan);
        assert!(out.ends_with("220 2.0.0 Ready to start TLS\r\n"), "{out}");
        assert_eq!(events, [Event::StartTlsFailed]);
        assert!(s.is_closed());
        let mut s = SinkSession::new(config, 2);
        drive(&mut s, b"EHLO c\r\nMAIL FROM:<>\r\n", &FaultPlan::default());
        assert_eq!(s.take_delay(), Duration::ZERO);
        drive(&mut s, b"RCPT TO:<b@y.test>\r\n", &FaultPlan::default());
        assert_eq!(s.take_delay(), Duration::from_millis(40));
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
