//! The SMTP server session as a sans-io state machine: bytes in, replies and events out.
//!
//! A [`Session`] opens no socket, reads no clock and touches no file; `session::driver`
//! moves bytes between it and a glommio socket. The call order is:
//!
//! 1. [`Session::new`] queues the greeting.
//! 2. [`Session::handle_input`] with whatever bytes arrived; it returns how many it used.
//!    Bytes it did not use must be offered again, with more appended.
//! 3. [`Session::poll_event`] until `None`. A [`Event::Message`] must be answered with
//!    [`Session::handle_stored`], an [`Event::Authenticate`] with
//!    [`Session::handle_auth_result`], before the session consumes more input.
//! 4. [`Session::take_output`] and write it; then back to 2, or close after [`Event::Close`].
//!
//! Timeouts and shutdown come in through [`Session::handle_timeout`] and
//! [`Session::handle_shutdown`]. Replies are buffered until the driver writes them, which
//! is what lets a PIPELINING client (RFC 2920) get a batch of replies in one write.
//!
//! Sequencing follows RFC 5321 §4.1.4: HELO/EHLO before MAIL, MAIL before RCPT, a recipient
//! before DATA or BDAT.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use memchr::memchr;

use crate::auth::Verdict;
use crate::dkim::{BodyHasher, Canonicalization};
use crate::session::auth::{self, Exchange, Login, Step};
use crate::smtp::address::{parse_mailbox, AddressError, Mailbox};
use crate::smtp::command::{params, Command};
use crate::smtp::data::{BdatEncoder, BodyTap, DataScanner};
use crate::smtp::dsn;
use crate::smtp::envelope::{Envelope, Recipient};
use crate::smtp::reply::{replies, Enhanced, Reply};

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF.
pub const MAX_COMMAND_LINE: usize = 512;

/// The limits and identity a session works with; shared by all sessions of a listener.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Our host name, for the greeting, EHLO and `Received:`.
    pub hostname: String,
    /// Largest message accepted, in octets (advertised with SIZE).
    pub max_message_size: usize,
    /// Recipients per message; the next one gets 452 4.5.3.
    pub max_recipients: usize,
    /// Client errors per session before 421 and close.
    pub max_errors: u32,
    /// Transactions (accepted MAIL commands) per session; the next MAIL gets 421 4.7.0.
    pub max_messages_per_session: u32,
    /// Accepted recipients per session over all its transactions; past them RCPT gets
    /// 452 4.5.3 and the next MAIL 421 4.7.0.
    pub max_recipients_per_session: u32,
    /// Domains we accept mail for from anyone (lower case).
    pub relay_domains: Vec<String>,
    /// Body canonicalizations of the DKIM signers: the session hashes the body with each
    /// as it streams in (empty: no hashing).
    pub body_canons: Vec<Canonicalization>,
}

/// Something the driver must act on.
#[derive(Debug)]
pub enum Event {
    /// A complete message: make it durable, then call [`Session::handle_stored`].
    Message(Box<Envelope>, Vec<u8>),
    /// Write what output is left (the 220 to STARTTLS), drop any input the client sent
    /// after the command (RFC 3207 §5, CVE-2011-0411), run the TLS handshake, then call
    /// [`Session::handle_tls_started`].
    StartTls,
    /// Check this user name and password, then call [`Session::handle_auth_result`].
    Authenticate(Login),
    /// Write what output is left, then close the connection.
    Close,
}

/// How a listener offers SMTP AUTH (RFC 4954); given with [`Session::offer_auth`].
#[derive(Clone, Copy, Debug, Default)]
pub struct AuthPolicy {
    /// AUTH before MAIL is required (a submission listener).
    pub required: bool,
    /// MAIL FROM must be the login name (or `<>`).
    pub sender_match: bool,
}

/// What the next input bytes are.
#[derive(Debug)]
enum Input {
    Commands,
    Data(DataScanner),
    /// The bytes of a BDAT chunk; `keep` is false when they are read only to be dropped.
    Chunk {
        size: u64,
        remaining: u64,
        last: bool,
        keep: bool,
    },
    /// A message is being stored; input waits.
    AwaitStore,
    /// STARTTLS was accepted; nothing more is read until the handshake is done.
    AwaitTls,
    /// Inside an AUTH exchange: the next line is a SASL response.
    Sasl(Exchange),
    /// Credentials are being checked; input waits.
    AwaitAuth,
    Closed,
}

#[derive(Debug)]
struct Transaction {
    sender: Option<Mailbox>,
    mail_params: String,
    smtputf8: bool,
    recipients: Vec<Recipient>,
    /// A RCPT was tried, accepted or not: DATA then means "no valid recipients".
    rcpt_tried: bool,
    bdat: Option<BdatEncoder>,
    body: Vec<u8>,
    hashes: Option<BodyHashes>,
}

/// DKIM body hashes kept up to date while content streams in.
struct BodyHashes {
    tap: BodyTap,
    hashers: Vec<BodyHasher>,
}

impl std::fmt::Debug for BodyHashes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyHashes")
            .field("seen", &self.tap.seen())
            .finish()
    }
}

impl BodyHashes {
    fn new(canons: &[Canonicalization]) -> Option<BodyHashes> {
        (!canons.is_empty()).then(|| BodyHashes {
            tap: BodyTap::new(),
            hashers: canons.iter().map(|&c| BodyHasher::new(c)).collect(),
        })
    }

    /// Hashes the wire form up to `upto` (what is final of it).
    fn advance(&mut self, wire: &[u8], upto: usize) {
        let hashers = &mut self.hashers;
        self.tap
            .advance(wire, upto, |b| hashers.iter_mut().for_each(|h| h.update(b)));
    }

    fn finish(mut self, wire: &[u8]) -> Vec<(Canonicalization, [u8; 32])> {
        self.advance(wire, wire.len());
        self.hashers
            .into_iter()
            .map(|h| (h.canonicalization(), h.finish()))
            .collect()
    }
}

/// One SMTP server session. See the module docs for the call order.
#[derive(Debug)]
pub struct Session {
    config: Arc<SessionConfig>,
    peer: SocketAddr,
    may_relay: bool,
    helo: Option<(String, bool)>,
    txn: Option<Transaction>,
    input: Input,
    /// Inside an over-long command line: drop bytes up to the next LF.
    discarding_line: bool,
    errors: u32,
    spool_available: bool,
    shutting_down: bool,
    /// STARTTLS is offered on this listener.
    offer_starttls: bool,
    /// The session runs over TLS (after STARTTLS, or on an implicit-TLS listener).
    tls_active: bool,
    /// AUTH is offered (once TLS is active) on this listener, and how.
    auth_policy: Option<AuthPolicy>,
    /// The user being checked, then the one authenticated.
    auth_user: Option<String>,
    authenticated: bool,
    output: Vec<u8>,
    events: VecDeque<Event>,
    /// The per-session message and recipient limits do not apply (`limits.exempt_networks`).
    limits_exempt: bool,
    /// Transactions begun and recipients accepted so far, for the per-session limits.
    messages: u32,
    recipients: u32,
}

impl Session {
    /// Starts a session for a client at `peer`; `may_relay` says whether it may send to
    /// any domain (it is in `relay.networks`). Queues the 220 greeting.
    pub fn new(config: Arc<SessionConfig>, peer: SocketAddr, may_relay: bool) -> Session {
        let mut s = Session {
            config,
            peer,
            may_relay,
            helo: None,
            txn: None,
            input: Input::Commands,
            discarding_line: false,
            errors: 0,
            spool_available: true,
            shutting_down: false,
            offer_starttls: false,
            tls_active: false,
            auth_policy: None,
            auth_user: None,
            authenticated: false,
            output: Vec::with_capacity(512),
            events: VecDeque::new(),
            limits_exempt: false,
            messages: 0,
            recipients: 0,
        };
        let greeting = format!("{} ESMTP pigeon", s.config.hostname);
        s.reply(Reply::plain(220, vec![greeting.into()]));
        s
    }

    /// Consumes client bytes; returns how many were used. Stops early at a message that
    /// awaits storage and after the session closes.
    pub fn handle_input(&mut self, input: &[u8]) -> usize {
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            match &mut self.input {
                Input::Commands | Input::Sasl(_) => match self.take_line(rest) {
                    Some((used, line)) => {
                        pos += used;
                        match line {
                            Some(line) if matches!(self.input, Input::Sasl(_)) => {
                                self.handle_sasl_line(line)
                            }
                            Some(line) => self.handle_line(line),
                            // An over-long SASL response (already answered 500) ends the
                            // exchange: the next line is a command again.
                            None if matches!(self.input, Input::Sasl(_)) => {
                                self.input = Input::Commands
                            }
                            None => {}
                        }
                    }
                    None => {
                        // No complete line: keep the bytes unless the line is already too long.
                        if rest.len() >= MAX_COMMAND_LINE {
                            self.discarding_line = true;
                            pos = input.len();
                        }
                        break;
                    }
                },
                Input::Data(scanner) => {
                    let txn = self.txn.as_mut().expect("DATA without transaction");
                    let (used, done) = scanner.feed(rest, &mut txn.body);
                    if let Some(h) = txn.hashes.as_mut() {
                        // The last three octets may be the terminator's ".\r\n".
                        h.advance(&txn.body, txn.body.len().saturating_sub(3));
                    }
                    pos += used;
                    if done {
                        self.finish_data();
                    }
                }
                Input::Chunk {
                    size,
                    remaining,
                    last,
                    keep,
                } => {
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
                    pos += take;
                    if done {
                        self.finish_chunk(size, last, keep);
                    }
                }
                Input::AwaitStore | Input::AwaitTls | Input::AwaitAuth | Input::Closed => break,
            }
        }
        self.close_if_stopping();
        pos
    }

    /// While stopping, a session back at the command phase is told to go.
    fn close_if_stopping(&mut self) {
        if self.shutting_down && matches!(self.input, Input::Commands | Input::Sasl(_)) {
            self.txn = None;
            self.close_with(replies::shutting_down());
        }
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Moves pending reply bytes into `buf` (which should be empty), leaving the session
    /// with `buf`'s allocation for the next replies.
    pub fn take_output(&mut self, buf: &mut Vec<u8>) {
        std::mem::swap(&mut self.output, buf);
    }

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

    /// A read timed out (RFC 5321 §4.5.3.2): 421 4.4.2 and close. Nothing half-received
    /// is kept.
    pub fn handle_timeout(&mut self) {
        self.txn = None;
        self.close_with(replies::timeout());
    }

    /// The session's total time (`timeouts.session`) is up: 421 4.4.2 and close. Nothing
    /// half-received is kept.
    pub fn handle_session_expired(&mut self) {
        self.txn = None;
        self.close_with(Reply::new(
            421,
            Enhanced(4, 4, 2),
            "Session time limit exceeded, closing connection",
        ));
    }

    /// The client is in `limits.exempt_networks`: no per-session message or recipient limit.
    pub fn exempt_from_limits(&mut self) {
        self.limits_exempt = true;
    }

    /// The stop's grace period ran out: whatever is half-received is dropped, 421 4.3.2.
    pub fn handle_deadline(&mut self) {
        self.txn = None;
        self.close_with(replies::shutting_down());
    }

    /// Offers STARTTLS (RFC 3207) on this session's listener.
    pub fn offer_starttls(&mut self) {
        self.offer_starttls = true;
    }

    /// The session runs over TLS from the start (an implicit-TLS listener, RFC 8314).
    pub fn set_tls_active(&mut self) {
        self.tls_active = true;
    }

    /// Offers AUTH (RFC 4954) on this session's listener; it is advertised and accepted
    /// only once TLS is active.
    pub fn offer_auth(&mut self, policy: AuthPolicy) {
        self.auth_policy = Some(policy);
    }

    /// The authenticated user, if any.
    pub fn authenticated_user(&self) -> Option<&str> {
        self.auth_user.as_deref().filter(|_| self.authenticated)
    }

    /// The verdict on the last [`Event::Authenticate`]: 235, 535, or 454 and close when the
    /// client or user is past the failure limit.
    pub fn handle_auth_result(&mut self, verdict: Verdict) {
        debug_assert!(matches!(self.input, Input::AwaitAuth));
        self.input = Input::Commands;
        match verdict {
            Verdict::Accepted => {
                self.authenticated = true;
                self.reply(replies::auth_ok());
            }
            Verdict::Rejected => {
                self.auth_user = None;
                self.error(replies::auth_failed());
            }
            Verdict::Blocked => {
                self.auth_user = None;
                self.close_with(replies::auth_blocked());
            }
        }
        self.close_if_stopping();
    }

    /// The TLS handshake after STARTTLS succeeded. The session starts over, as RFC 3207 §4.2
    /// requires: the client must say EHLO again, and nothing said before counts.
    pub fn handle_tls_started(&mut self) {
        debug_assert!(matches!(self.input, Input::AwaitTls));
        self.tls_active = true;
        self.helo = None;
        self.txn = None;
        self.input = Input::Commands;
        self.discarding_line = false;
        self.close_if_stopping();
    }

    /// The client closed its side. Whatever transaction was open is dropped.
    pub fn handle_eof(&mut self) {
        self.txn = None;
        if !matches!(self.input, Input::Closed) {
            self.input = Input::Closed;
            self.events.push_back(Event::Close);
        }
    }

    /// The server is stopping: a session inside message content may finish it; any other
    /// gets 421 4.3.2 now.
    pub fn handle_shutdown(&mut self) {
        self.shutting_down = true;
        match self.input {
            Input::Data(_)
            | Input::Chunk { .. }
            | Input::AwaitStore
            | Input::AwaitTls
            | Input::AwaitAuth => {}
            Input::Commands | Input::Sasl(_) => self.close_if_stopping(),
            Input::Closed => {}
        }
    }

    /// Whether the spool can take new mail; when false, MAIL gets 452 4.3.1.
    pub fn set_spool_available(&mut self, available: bool) {
        self.spool_available = available;
    }

    /// True while message content is being read (the driver uses the data timeout then).
    pub fn in_content(&self) -> bool {
        matches!(self.input, Input::Data(_) | Input::Chunk { .. })
    }

    /// True once the session has closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.input, Input::Closed)
    }

    /// Splits off one command line. Returns the bytes used and the line without its
    /// ending (`None` when the line was dropped as too long), or `None` without a full line.
    fn take_line<'a>(&mut self, rest: &'a [u8]) -> Option<(usize, Option<&'a [u8]>)> {
        let lf = memchr(b'\n', rest)?;
        if self.discarding_line || lf + 1 > MAX_COMMAND_LINE {
            self.discarding_line = false;
            self.error(replies::line_too_long());
            return Some((lf + 1, None));
        }
        // CRLF ends a command; a bare LF is tolerated here as Postfix does, since a
        // command line cannot smuggle anything past the DATA scanner.
        let line = &rest[..lf];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        Some((lf + 1, Some(line)))
    }

    fn handle_line(&mut self, line: &[u8]) {
        let command = match Command::parse(line) {
            Ok(c) => c,
            Err(e) => return self.error(e.reply()),
        };
        match command {
            Command::Ehlo(domain) => self.hello(domain, true),
            Command::Helo(domain) => self.hello(domain, false),
            Command::Mail { path, params } => self.mail(path, params),
            Command::Rcpt { path, params } => self.rcpt(path, params),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.txn = None;
                self.reply(replies::ok());
            }
            Command::Noop => self.reply(replies::ok()),
            Command::Quit => self.close_with(replies::bye()),
            Command::Help => self.reply(replies::help()),
            Command::Vrfy => self.reply(replies::cannot_vrfy()),
            Command::StartTls => self.starttls(),
            Command::Auth(args) => self.auth(args),
            Command::Expn => self.error(replies::not_implemented()),
        }
    }

    fn hello(&mut self, domain: &[u8], extended: bool) {
        self.txn = None;
        let helo = String::from_utf8_lossy(domain).into_owned();
        let first = format!("{} Hello {}", self.config.hostname, helo);
        self.helo = Some((helo, extended));
        if !extended {
            return self.reply(Reply::plain(250, vec![first.into()]));
        }
        let size = format!("SIZE {}", self.config.max_message_size);
        self.reply(Reply::plain(
            250,
            vec![
                first.into(),
                "PIPELINING".into(),
                size.into(),
                "8BITMIME".into(),
                "SMTPUTF8".into(),
                "ENHANCEDSTATUSCODES".into(),
                "CHUNKING".into(),
                "DSN".into(),
            ]
            .into_iter()
            .chain((self.offer_starttls && !self.tls_active).then(|| "STARTTLS".into()))
            .chain(
                (self.auth_policy.is_some() && self.tls_active && !self.authenticated)
                    .then(|| format!("AUTH {}", auth::MECHANISMS).into()),
            )
            .collect(),
        ));
    }

    fn starttls(&mut self) {
        if self.tls_active {
            return self.error(replies::bad_sequence("TLS already active"));
        }
        if !self.offer_starttls {
            return self.error(replies::not_implemented());
        }
        self.reply(Reply::new(220, Enhanced(2, 0, 0), "Ready to start TLS"));
        self.input = Input::AwaitTls;
        self.events.push_back(Event::StartTls);
    }

    /// AUTH (RFC 4954 §4): only under TLS, once per session, outside a transaction.
    fn auth(&mut self, args: &[u8]) {
        if self.auth_policy.is_none() {
            return self.error(replies::not_implemented());
        }
        if !self.tls_active {
            return self.error(replies::auth_needs_tls());
        }
        if self.helo.is_none() {
            return self.error(replies::bad_sequence("Send EHLO first"));
        }
        if self.authenticated {
            return self.error(replies::bad_sequence("Already authenticated"));
        }
        if self.txn.is_some() {
            return self.error(replies::bad_sequence(
                "AUTH not allowed during a transaction",
            ));
        }
        let step = auth::start(args);
        self.sasl_step(step);
    }

    fn handle_sasl_line(&mut self, line: &[u8]) {
        let Input::Sasl(exchange) = std::mem::replace(&mut self.input, Input::Commands) else {
            unreachable!("SASL line outside an exchange");
        };
        self.sasl_step(auth::respond(exchange, line));
    }

    fn sasl_step(&mut self, step: Step) {
        match step {
            Step::Challenge(reply, exchange) => {
                self.reply(reply);
                self.input = Input::Sasl(exchange);
            }
            Step::Verify(login) => {
                self.auth_user = Some(login.user.clone());
                self.input = Input::AwaitAuth;
                self.events.push_back(Event::Authenticate(login));
            }
            Step::Refuse(reply) => {
                self.input = Input::Commands;
                self.error(reply);
            }
        }
    }

    fn mail(&mut self, path: &[u8], param_bytes: &[u8]) {
        let Some((_, extended)) = self.helo else {
            return self.error(replies::bad_sequence("Send HELO/EHLO first"));
        };
        if self.txn.is_some() {
            return self.error(replies::bad_sequence("Nested MAIL command"));
        }
        if self.auth_policy.is_some_and(|p| p.required) && !self.authenticated {
            return self.error(replies::auth_required());
        }
        if !self.limits_exempt
            && (self.messages >= self.config.max_messages_per_session
                || self.recipients >= self.config.max_recipients_per_session)
        {
            // Not an error: the client delivers the rest over a new connection.
            return self.close_with(Reply::new(
                421,
                Enhanced(4, 7, 0),
                "Too many messages in this session, closing connection",
            ));
        }
        if !self.spool_available {
            return self.reply(replies::spool_full());
        }
        let mut smtputf8 = false;
        for p in params(param_bytes) {
            if !extended {
                return self.error(replies::bad_parameter("No parameters after HELO"));
            }
            match (p.keyword.to_ascii_uppercase().as_slice(), p.value) {
                (b"SIZE", Some(v)) => match parse_size(v) {
                    Some(n) if n > self.config.max_message_size as u64 => {
                        return self.reply(replies::too_big())
                    }
                    Some(_) => {}
                    None => return self.error(replies::syntax("Bad SIZE value")),
                },
                (b"BODY", Some(v))
                    if v.eq_ignore_ascii_case(b"7BIT") || v.eq_ignore_ascii_case(b"8BITMIME") => {}
                (b"SMTPUTF8", None) => smtputf8 = true,
                (b"RET", Some(v)) if dsn::valid_ret(v) => {}
                (b"ENVID", Some(v)) if dsn::valid_envid(v) => {}
                (b"RET" | b"ENVID", _) => return self.error(replies::syntax("Bad DSN parameter")),
                _ => return self.error(replies::bad_parameter("Unsupported MAIL parameter")),
            }
        }
        let sender = if path.is_empty() {
            None
        } else {
            match parse_mailbox(path, smtputf8) {
                Ok(m) => Some(m),
                Err(AddressError::Syntax(what)) => return self.error(replies::bad_sender(what)),
                Err(e) => return self.error(e.reply()),
            }
        };
        if let (Some(user), Some(sender)) = (self.authenticated_user(), &sender) {
            // Compared whole and case-insensitively, as Postfix's sender login maps are.
            let owned = sender.as_str().eq_ignore_ascii_case(user);
            if self.auth_policy.is_some_and(|p| p.sender_match) && !owned {
                return self.error(replies::sender_not_owned());
            }
        }
        self.txn = Some(Transaction {
            sender,
            mail_params: String::from_utf8_lossy(param_bytes).into_owned(),
            smtputf8,
            recipients: Vec::new(),
            rcpt_tried: false,
            bdat: None,
            body: Vec::new(),
            hashes: None,
        });
        self.messages += 1;
        self.reply(replies::sender_ok());
    }

    fn rcpt(&mut self, path: &[u8], param_bytes: &[u8]) {
        let Some(txn) = self.txn.as_mut() else {
            return self.error(replies::bad_sequence("Need MAIL command"));
        };
        if txn.bdat.is_some() {
            return self.error(replies::bad_sequence("RCPT after BDAT"));
        }
        txn.rcpt_tried = true;
        let extended = self.helo.as_ref().is_some_and(|h| h.1);
        for p in params(param_bytes) {
            let reply = match (p.keyword.to_ascii_uppercase().as_slice(), p.value) {
                _ if !extended => replies::bad_parameter("No parameters after HELO"),
                (b"NOTIFY", Some(v)) if dsn::Notify::parse(v).is_some() => continue,
                (b"ORCPT", Some(v)) if dsn::valid_orcpt(v) => continue,
                (b"NOTIFY" | b"ORCPT", _) => replies::syntax("Bad DSN parameter"),
                _ => replies::bad_parameter("Unsupported RCPT parameter"),
            };
            return self.error(reply);
        }
        let mailbox = match parse_mailbox(path, txn.smtputf8) {
            Ok(m) => m,
            Err(e) => return self.error(e.reply()),
        };
        // An authenticated client may relay to any domain, whatever its address.
        if !self.may_relay && !self.authenticated {
            let domain = mailbox.domain().to_ascii_lowercase();
            if !self.config.relay_domains.contains(&domain) {
                return self.error(replies::relay_denied());
            }
        }
        let session_full =
            !self.limits_exempt && self.recipients >= self.config.max_recipients_per_session;
        if txn.recipients.len() >= self.config.max_recipients || session_full {
            // Not the client's error: it should send the rest in another transaction.
            return self.reply(replies::too_many_recipients());
        }
        self.recipients += 1;
        txn.recipients.push(Recipient {
            mailbox,
            params: String::from_utf8_lossy(param_bytes).into_owned(),
        });
        self.reply(replies::recipient_ok());
    }

    fn data(&mut self) {
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

    fn bdat(&mut self, size: u64, last: bool) {
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
            recipients: txn.recipients,
            smtputf8: txn.smtputf8,
            auth: self.authenticated_user().map(str::to_owned),
        };
        self.input = Input::AwaitStore;
        self.events
            .push_back(Event::Message(Box::new(envelope), txn.body));
    }

    fn reply(&mut self, reply: Reply) {
        reply.write_to(&mut self.output);
    }

    /// A reply to a client mistake; too many of them end the session.
    fn error(&mut self, reply: Reply) {
        self.reply(reply);
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            self.txn = None;
            self.close_with(replies::too_many_errors());
        }
    }

    fn close_with(&mut self, reply: Reply) {
        if matches!(self.input, Input::Closed) {
            return;
        }
        self.reply(reply);
        self.input = Input::Closed;
        self.events.push_back(Event::Close);
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

fn parse_size(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(messages: u32, recipients: u32) -> Session {
        let config = SessionConfig {
            hostname: "mx.test".into(),
            max_message_size: 4096,
            max_recipients: 3,
            max_errors: 100,
            max_messages_per_session: messages,
            max_recipients_per_session: recipients,
            relay_domains: Vec::new(),
            body_canons: Vec::new(),
        };
        let mut s = Session::new(Arc::new(config), "192.0.2.1:4000".parse().unwrap(), true);
        s.handle_input(b"EHLO c\r\n");
        s
    }

    /// Feeds `input`, answers stored messages with an id, returns the reply codes.
    fn codes(s: &mut Session, input: &[u8]) -> Vec<u16> {
        let used = s.handle_input(input);
        assert_eq!(used, input.len());
        while let Some(event) = s.poll_event() {
            if let Event::Message(..) = event {
                s.handle_stored(Ok("ID"));
            }
        }
        let mut out = Vec::new();
        s.take_output(&mut out);
        String::from_utf8(out)
            .unwrap()
            .lines()
            .filter(|l| l.as_bytes().get(3) == Some(&b' '))
            .map(|l| l[..3].parse().unwrap())
            .collect()
    }

    const MESSAGE: &[u8] = b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nhi\r\n.\r\n";

    #[test]
    fn messages_per_session_end_with_421_at_the_next_mail() {
        let mut s = limited(2, 100);
        codes(&mut s, b"");
        assert_eq!(codes(&mut s, MESSAGE), [250, 250, 354, 250]);
        // A transaction that is reset still counts: MAIL is what the limit bounds.
        assert_eq!(
            codes(&mut s, b"MAIL FROM:<a@x.test>\r\nRSET\r\n"),
            [250, 250]
        );
        assert_eq!(codes(&mut s, b"MAIL FROM:<a@x.test>\r\n"), [421]);
        assert!(s.is_closed());
    }

    #[test]
    fn recipients_per_session_span_messages() {
        let mut s = limited(100, 4);
        codes(&mut s, b"");
        let three = b"MAIL FROM:<a@x.test>\r\nRCPT TO:<1@y.test>\r\nRCPT TO:<2@y.test>\r\n\
                      RCPT TO:<3@y.test>\r\nDATA\r\nhi\r\n.\r\n";
        assert_eq!(codes(&mut s, three), [250, 250, 250, 250, 354, 250]);
        // One more fits; the next is 452 4.5.3 and the message goes with what it has.
        assert_eq!(
            codes(&mut s, three),
            [250, 250, 452, 452, 354, 250],
            "the session's fourth recipient is its last"
        );
        assert_eq!(codes(&mut s, b"MAIL FROM:<a@x.test>\r\n"), [421]);
        assert!(s.is_closed());
    }

    #[test]
    fn exempt_clients_have_no_session_limits() {
        let mut s = limited(1, 1);
        s.exempt_from_limits();
        codes(&mut s, b"");
        for _ in 0..5 {
            assert_eq!(codes(&mut s, MESSAGE), [250, 250, 354, 250]);
        }
    }

    #[test]
    fn session_expiry_drops_the_transaction_with_421_4_4_2() {
        let mut s = limited(100, 100);
        codes(&mut s, b"");
        assert_eq!(codes(&mut s, b"MAIL FROM:<a@x.test>\r\n"), [250]);
        s.handle_session_expired();
        let mut out = Vec::new();
        s.take_output(&mut out);
        assert!(out.starts_with(b"421 4.4.2 "), "{out:?}");
        assert!(s.is_closed());
        assert!(matches!(s.poll_event(), Some(Event::Close)));
    }

    fn session(policy: AuthPolicy) -> Session {
        let config = Arc::new(SessionConfig {
            hostname: "mx.test".into(),
            max_message_size: 4096,
            max_recipients: 10,
            max_errors: 100,
            max_messages_per_session: 100,
            max_recipients_per_session: 1000,
            relay_domains: vec!["local.test".into()],
            body_canons: Vec::new(),
        });
        let mut s = Session::new(config, "192.0.2.1:5000".parse().unwrap(), false);
        s.offer_auth(policy);
        s.set_tls_active();
        s
    }

    /// Sends lines; returns what the session answered.
    fn say(s: &mut Session, input: &str) -> String {
        let used = s.handle_input(input.as_bytes());
        assert_eq!(used, input.len(), "all input used");
        let mut out = Vec::new();
        s.take_output(&mut out);
        String::from_utf8(out).unwrap()
    }

    /// Sends AUTH PLAIN for `user` and answers the check with `verdict`.
    fn login(s: &mut Session, user: &str, verdict: Verdict) -> String {
        let ir = data_encoding::BASE64.encode(format!("\0{user}\0pw").as_bytes());
        let out = say(s, &format!("AUTH PLAIN {ir}\r\n"));
        assert_eq!(out, "");
        match s.poll_event() {
            Some(Event::Authenticate(l)) => assert_eq!(l.user, user),
            other => panic!("no check asked for: {other:?}"),
        }
        s.handle_auth_result(verdict);
        let mut out = Vec::new();
        s.take_output(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn auth_needs_tls_and_is_advertised_only_under_it() {
        let config = session(AuthPolicy::default()).config.clone();
        let mut s = Session::new(config, "192.0.2.1:5000".parse().unwrap(), false);
        s.offer_auth(AuthPolicy::default());
        s.offer_starttls();
        say(&mut s, "");
        let ehlo = say(&mut s, "EHLO c\r\n");
        assert!(!ehlo.contains("AUTH"), "{ehlo}");
        assert!(say(&mut s, "AUTH PLAIN\r\n").starts_with("538 5.7.11"));
        let mut s = session(AuthPolicy::default());
        say(&mut s, "");
        assert!(say(&mut s, "EHLO c\r\n").contains("250 AUTH PLAIN LOGIN\r\n"));
    }

    #[test]
    fn auth_sequencing() {
        let mut s = session(AuthPolicy::default());
        say(&mut s, "EHLO c\r\n");
        assert!(say(&mut s, "MAIL FROM:<a@x.test>\r\nAUTH LOGIN\r\n")
            .ends_with("503 5.5.1 AUTH not allowed during a transaction\r\n"));
        say(&mut s, "RSET\r\n");
        assert!(login(&mut s, "a@x.test", Verdict::Rejected).starts_with("535 5.7.8"));
        assert!(login(&mut s, "a@x.test", Verdict::Accepted).starts_with("235 2.7.0"));
        assert!(say(&mut s, "AUTH LOGIN\r\n").starts_with("503 5.5.1"));
        assert!(!say(&mut s, "EHLO c\r\n").contains("AUTH"));
    }

    #[test]
    fn authenticated_clients_relay_and_unauthenticated_do_not() {
        let mut s = session(AuthPolicy::default());
        say(&mut s, "EHLO c\r\nMAIL FROM:<a@x.test>\r\n");
        assert!(say(&mut s, "RCPT TO:<b@elsewhere.test>\r\n").starts_with("554 5.7.1"));
        assert!(say(&mut s, "RCPT TO:<b@local.test>\r\n").starts_with("250"));
        say(&mut s, "RSET\r\n");
        login(&mut s, "a@x.test", Verdict::Accepted);
        say(&mut s, "MAIL FROM:<a@x.test>\r\n");
        assert!(say(&mut s, "RCPT TO:<b@elsewhere.test>\r\n").starts_with("250"));
    }

    #[test]
    fn submission_needs_auth_and_sender_match_is_enforced() {
        let policy = AuthPolicy {
            required: true,
            sender_match: true,
        };
        let mut s = session(policy);
        say(&mut s, "EHLO c\r\n");
        assert!(say(&mut s, "MAIL FROM:<a@x.test>\r\n").starts_with("530 5.7.0"));
        login(&mut s, "a@x.test", Verdict::Accepted);
        assert!(say(&mut s, "MAIL FROM:<b@x.test>\r\n").starts_with("553 5.7.1"));
        assert!(say(&mut s, "MAIL FROM:<A@X.test>\r\n").starts_with("250"));
        say(&mut s, "RSET\r\n");
        assert!(say(&mut s, "MAIL FROM:<>\r\n").starts_with("250"));
    }

    #[test]
    fn a_blocked_attempt_closes_the_session() {
        let mut s = session(AuthPolicy::default());
        say(&mut s, "EHLO c\r\n");
        assert_eq!(
            login(&mut s, "a", Verdict::Blocked),
            "454 4.7.0 Too many failed authentications\r\n"
        );
        assert!(s.is_closed());
    }

    #[test]
    fn login_exchange_cancel_and_garbage() {
        let mut s = session(AuthPolicy::default());
        say(&mut s, "EHLO c\r\n");
        assert_eq!(say(&mut s, "AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
        assert!(say(&mut s, "*\r\n").starts_with("501 5.0.0"));
        assert_eq!(say(&mut s, "AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
        assert!(say(&mut s, "not base64!\r\n").starts_with("501 5.5.2"));
        assert!(
            say(&mut s, "NOOP\r\n").starts_with("250"),
            "back to commands"
        );
        say(&mut s, "AUTH PLAIN\r\n");
        let long = format!("{}\r\n", "A".repeat(600));
        assert!(say(&mut s, &long).starts_with("500 5.5.2"));
        assert!(
            say(&mut s, "NOOP\r\n").starts_with("250"),
            "the exchange ended"
        );
    }
}
