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
//!
//! # Layout
//!
//! This module holds the session's types, the input loop that splits command lines from
//! message content, and the dispatch of a command to its verb. Each verb checks whether it
//! may run and then carries it out, in its own module (the way OpenSMTPD pairs
//! `smtp_check_*` with `smtp_proceed_*`):
//!
//! - `hello`: HELO and EHLO, and the extensions EHLO advertises.
//! - `mail`: MAIL FROM, its parameters and the per-session limits.
//! - `rcpt`: RCPT TO, its DSN parameters, relaying and the recipient limits.
//! - `data`: DATA and BDAT content, the hop count, and the finished message.
//! - `body_hash`: the DKIM body hashes fed while content streams in.
//! - `starttls`: STARTTLS and the restart after the handshake.
//! - `authenticate`: when AUTH may run and the steps of its exchange; the SASL mechanisms
//!   themselves are `session::auth`.
//! - `close`: the ends that are not QUIT: timeouts, the session time limit, shutdown, EOF.
//!
//! RSET, NOOP, QUIT, HELP, VRFY and EXPN are one reply each, given in the dispatch.

mod authenticate;
mod body_hash;
mod close;
mod data;
mod hello;
mod mail;
mod rcpt;
mod starttls;
#[cfg(test)]
mod testing;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use memchr::memchr;

use crate::dkim::Canonicalization;
use crate::session::auth::{Exchange, Login};
use crate::smtp::address::Mailbox;
use crate::smtp::command::Command;
use crate::smtp::data::{BdatEncoder, DataScanner};
use crate::smtp::envelope::{Envelope, Recipient};
use crate::smtp::reply::{replies, Reply};

use body_hash::BodyHashes;
pub use data::MAX_HOPS;

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
    mail_dsn: crate::smtp::dsn::MailDsn,
    smtputf8: bool,
    recipients: Vec<Recipient>,
    /// A RCPT was tried, accepted or not: DATA then means "no valid recipients".
    rcpt_tried: bool,
    bdat: Option<BdatEncoder>,
    body: Vec<u8>,
    hashes: Option<BodyHashes>,
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
                Input::Data(_) => pos += self.feed_data(rest),
                Input::Chunk { .. } => pos += self.feed_chunk(rest),
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
