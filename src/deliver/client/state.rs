//! The SMTP delivery client as a sans-io state machine: server replies in, commands and
//! events out.
//!
//! A [`Client`] opens no socket, reads no clock and never touches message content: the driver
//! moves bytes, keeps the timers and writes the body straight from the spool's memory map.
//! The call order is:
//!
//! 1. [`Client::new`] after the TCP connection is up; the client waits for the greeting.
//! 2. [`Client::handle_input`] with whatever bytes arrived; it returns how many it used
//!    (whole replies only, and none while content is due). Bytes it did not use must be
//!    offered again, with more appended.
//! 3. [`Client::poll_event`] until `None`, acting on each [`ClientEvent`]:
//!    - [`ClientEvent::Ready`] or [`ClientEvent::TransactionDone`]: call
//!      [`Client::start_transaction`] for the next batch of recipients, or [`Client::quit`]
//!      (with chunked transactions, once the last one in flight is done);
//!    - [`ClientEvent::SendContent`]: write the message in wire form and `.\r\n`, then call
//!      [`Client::handle_content_sent`];
//!    - [`ClientEvent::StartTls`]: drop any unused input, run the TLS handshake, then call
//!      [`Client::handle_tls_started`];
//!    - [`ClientEvent::Failed`], [`ClientEvent::Closed`]: see their docs.
//! 4. [`Client::take_output`] and write it; arm the read timer from [`Client::waiting_for`];
//!    then back to 2.
//!
//! End of stream and expired timers come in through [`Client::handle_eof`] and
//! [`Client::handle_timeout`].
//!
//! STARTTLS (RFC 3207) follows EHLO when the server offers it and [`StartTls`] allows it;
//! after the handshake the client says EHLO again and forgets what the server said before
//! (§4.2). When TLS is required but the server does not offer STARTTLS, or refuses it, the
//! session fails with 451 4.7.4 (RFC 3463 X.7.4, "security features not supported", the
//! code Postfix gives for "TLS is required, but was not offered") and the client says QUIT.
//!
//! A transaction follows RFC 5321 §3.3: `[RSET] MAIL RCPT… DATA`, content, final reply.
//! With PIPELINING (RFC 2920) all of those commands go out in one write and the replies are
//! matched to them in order (§3.1 says replies come in command order); without it the next
//! command is written only once the previous one is answered. Either way every recipient
//! ends with one result: its RCPT refusal, or the reply to the content (or to DATA when that
//! failed), or the MAIL refusal when the sender was refused.
//!
//! When the server offers CHUNKING and PIPELINING, [`Client::start_chunked_transaction`]
//! writes `[RSET] MAIL RCPT… BDAT n LAST` instead (RFC 3030), the driver follows it with the
//! content, and the reply to BDAT is the final one. Nothing in such a transaction waits for
//! a reply, so several can be in flight: each is answered, in order, by its own
//! [`ClientEvent::TransactionDone`] (or, when the session fails, its own
//! [`ClientEvent::Failed`]).
//!
//! What the client refuses to do itself, before sending anything: a message over the
//! server's SIZE (RFC 1870 §6.1, 552 5.3.4), 8-bit content to a server without 8BITMIME
//! (554 5.6.3: pigeon does not downgrade to 7 bit, RFC 6152 §3 lets it return the message
//! instead), and an internationalised message to a server without SMTPUTF8 (553 5.6.7, RFC
//! 6531 §3.2).

use std::collections::VecDeque;
use std::fmt;
use std::io::Write;
use std::time::Duration;

use crate::smtp::reply::{Enhanced, Reply};
use crate::smtp::response::parse_reply;

/// How long the driver waits when writing one block of content: RFC 5321 §4.5.3.2.5 gives
/// 3 minutes per write. The content write is the driver's, so it has no [`Wait`].
pub const DATA_BLOCK_TIMEOUT: Duration = Duration::from_secs(3 * 60);

/// Who the client says it is, and whether it asks for TLS.
#[derive(Clone, Debug, Default)]
pub struct ClientConfig {
    /// The EHLO/HELO argument: our fully qualified host name (RFC 5321 §4.1.1.1). It is
    /// written as given, so it must already be a valid domain or address literal.
    pub helo_name: String,
    /// Whether to use STARTTLS.
    pub starttls: StartTls,
}

/// Whether the client asks for TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartTls {
    /// Never send STARTTLS.
    #[default]
    Never,
    /// Send STARTTLS when offered; go on in plain text when it is not, or is refused.
    IfOffered,
    /// Send STARTTLS; fail the session (4.7.4) when it is not offered or is refused.
    Required,
}

/// One message and the recipients to give it in one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The reverse-path without angle brackets; `""` for the null sender `<>`.
    pub sender: String,
    /// The forward-paths without angle brackets. Results refer to them by index.
    pub recipients: Vec<String>,
    /// The content's size in octets, for SIZE (RFC 1870). The spool's wire form length is
    /// fine: it is a little more than the unstuffed size, and RFC 1870 §3 asks for an
    /// estimate that does not understate.
    pub size: u64,
    /// The content has octets above 127: it needs BODY=8BITMIME (RFC 6152).
    pub needs_8bit: bool,
    /// The message needs SMTPUTF8 (RFC 6531). Non-ASCII in an address implies it anyway.
    pub needs_smtputf8: bool,
    /// DSN parameters for MAIL (`RET=… ENVID=…`), passed on when the server offers DSN.
    pub mail_dsn: String,
    /// DSN parameters for each RCPT (`NOTIFY=… ORCPT=…`), passed on likewise; empty when
    /// none (or shorter than `recipients`).
    pub rcpt_dsn: Vec<String>,
}

/// The service extensions the server offered in its EHLO reply (RFC 5321 §4.1.1.1). After a
/// HELO fallback, none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// SIZE (RFC 1870): `Some(limit)` when offered, `Some(0)` when offered without a fixed
    /// limit (RFC 1870 §4 gives `SIZE` and `SIZE 0` that meaning).
    pub size: Option<u64>,
    /// 8BITMIME (RFC 6152).
    pub eight_bit_mime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// CHUNKING (RFC 3030).
    pub chunking: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status_codes: bool,
    /// DSN (RFC 3461): the server takes over delivery status notification.
    pub dsn: bool,
}

impl Extensions {
    /// Reads the extensions from a 2xx EHLO reply: every line after the first is an
    /// `ehlo-line`, a keyword and optional parameters, compared case-insensitively
    /// (RFC 5321 §4.1.1.1, §2.4). Unknown keywords are ignored.
    pub fn from_ehlo(reply: &Reply) -> Extensions {
        let mut ext = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => ext.pipelining = true,
                // An unreadable limit is taken as "no fixed limit": the server still has
                // the last word, with 552 after MAIL or after the content.
                "SIZE" => ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => ext.eight_bit_mime = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "STARTTLS" => ext.starttls = true,
                "CHUNKING" => ext.chunking = true,
                "ENHANCEDSTATUSCODES" => ext.enhanced_status_codes = true,
                "DSN" => ext.dsn = true,
                _ => {}
            }
        }
        ext
    }
}

/// What the driver must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// Greeting and EHLO/HELO done; ready for [`Client::start_transaction`].
    Ready,
    /// The DATA (354) go-ahead came: the driver must now write the message content in wire
    /// form (CRLF, dot-stuffed) followed by `.\r\n` itself (straight from the spool's memory
    /// map: the client never copies the body), then call [`Client::handle_content_sent`].
    SendContent,
    /// The oldest transaction in flight is over: one result per recipient (index into
    /// [`Envelope::recipients`]), each the RCPT reply if it was refused, else the final
    /// reply to the content (to DATA if that failed, to BDAT for a chunked one), or the MAIL
    /// reply for all when the sender was refused. Once no other is in flight, the client is
    /// ready for the next transaction.
    TransactionDone {
        /// `(recipient index, reply)`, in index order.
        results: Vec<(usize, Reply)>,
    },
    /// The session can't go on (421 from the server, a reply that breaks the protocol, a
    /// refused greeting or EHLO/HELO, end of stream, timeout). Every recipient of an
    /// unfinished transaction, refused at RCPT or not, gets `reply` as its result; `reply`
    /// is a 4xx except when the server refused the greeting or EHLO/HELO with a 5xx, which
    /// happens before any transaction. One such event per transaction in flight, oldest
    /// first (one with no recipients when none was); [`ClientEvent::Closed`] follows, except
    /// when this answers a [`Client::start_transaction`] made after the session had already
    /// ended.
    Failed {
        /// The reply to record for `pending`.
        reply: Reply,
        /// Recipient indices of the unfinished transaction; empty when there was none.
        pending: Vec<usize>,
    },
    /// The server accepted STARTTLS (220): the driver must discard any input the client did
    /// not use (RFC 3207 §5: bytes sent before the handshake cannot be trusted), run the
    /// TLS handshake on the connection, and call [`Client::handle_tls_started`]; if the
    /// handshake fails, the connection is lost and only closing it is left.
    StartTls,
    /// QUIT answered or the session ended: close the socket. Always the last event.
    Closed,
}

/// Which RFC 5321 §4.5.3.2 timeout applies to the reply the client waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// The 220 greeting (§4.5.3.2.1: 5 minutes).
    Greeting,
    /// The EHLO or HELO reply (not named by the RFC; 5 minutes like MAIL).
    Ehlo,
    /// The STARTTLS reply (not named by RFC 3207; 5 minutes like MAIL).
    StartTls,
    /// The MAIL reply (§4.5.3.2.2: 5 minutes).
    Mail,
    /// A RCPT reply (§4.5.3.2.3: 5 minutes).
    Rcpt,
    /// The reply to DATA (§4.5.3.2.4: 2 minutes).
    DataInit,
    /// The reply after the content's final dot (§4.5.3.2.6: 10 minutes; the server may be
    /// scanning or storing the message).
    DataTermination,
    /// The RSET reply (not named by the RFC; 5 minutes).
    Rset,
    /// The QUIT reply (not named by the RFC; 5 minutes).
    Quit,
}

impl Wait {
    /// The RFC 5321 §4.5.3.2 timeout for this wait, the driver's default.
    pub fn default_timeout(self) -> Duration {
        let minutes = match self {
            Wait::DataInit => 2,
            Wait::DataTermination => 10,
            Wait::Greeting
            | Wait::Ehlo
            | Wait::StartTls
            | Wait::Mail
            | Wait::Rcpt
            | Wait::Rset
            | Wait::Quit => 5,
        };
        Duration::from_secs(minutes * 60)
    }
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Wait::Greeting => "greeting",
            Wait::Ehlo => "EHLO reply",
            Wait::StartTls => "STARTTLS reply",
            Wait::Mail => "MAIL reply",
            Wait::Rcpt => "RCPT reply",
            Wait::DataInit => "DATA reply",
            Wait::DataTermination => "reply to end of data",
            Wait::Rset => "RSET reply",
            Wait::Quit => "QUIT reply",
        })
    }
}

/// A command sent (or, for the greeting, a reply due without one): what the next reply
/// answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Rset,
    Mail,
    /// The RCPT for this recipient index.
    Rcpt(usize),
    Data,
    /// The content's final `.`, whether the driver sent it after the content or we sent it
    /// alone to close a DATA nobody should have accepted.
    Dot,
    /// `BDAT n LAST` with the whole content (RFC 3030): its reply is the final one.
    Bdat,
    Quit,
}

/// Where the session is, from the driver's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Greeting, EHLO or HELO in flight.
    Opening,
    /// Between transactions.
    Idle,
    /// STARTTLS was accepted ([`ClientEvent::StartTls`] emitted); the driver runs the
    /// handshake.
    Handshake,
    /// One or more transactions' commands or final replies are in flight.
    Transaction,
    /// [`ClientEvent::SendContent`] was emitted; the driver is writing the content.
    Content,
    /// QUIT sent; any reply, or the end of the stream, closes.
    Quitting,
    Closed,
}

#[derive(Debug)]
struct Transaction {
    envelope: Envelope,
    /// ESMTP parameters for MAIL, with a leading space each.
    mail_params: String,
    /// Per recipient: the reply that refused it, if any (set locally for an address we
    /// will not write, see [`is_safe_path`]).
    refusals: Vec<Option<Reply>>,
    /// RCPT commands planned, and how many of them were answered / accepted.
    rcpts: usize,
    answered: usize,
    accepted: usize,
    /// The sender was refused: every recipient gets this reply.
    mail_refused: Option<Reply>,
    /// Written behind other transactions still in flight (after an RSET of its own).
    behind: bool,
}

impl Transaction {
    /// Nobody will receive content in this transaction (RFC 2920 §3.1: do not send it).
    fn is_hopeless(&self) -> bool {
        self.mail_refused.is_some() || (self.answered == self.rcpts && self.accepted == 0)
    }
}

/// One SMTP client session. See the module docs for the call order.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    phase: Phase,
    extensions: Extensions,
    /// The replies due, oldest first: replies come in command order (RFC 2920 §3.1).
    expected: VecDeque<Step>,
    /// Commands of the current transaction not written yet. Without PIPELINING one is
    /// written per reply; a refusal that makes the rest pointless drops them.
    unsent: VecDeque<Step>,
    /// Transactions in flight, oldest first: replies go to the front one. More than one
    /// only with [`Client::start_chunked_transaction`].
    txns: VecDeque<Transaction>,
    /// The server may still hold transaction state: send RSET before the next MAIL.
    needs_rset: bool,
    /// The TLS handshake is done: no second STARTTLS.
    tls_active: bool,
    output: Vec<u8>,
    events: VecDeque<ClientEvent>,
}

impl Client {
    /// A client for a freshly opened connection: it expects the 220 greeting first.
    pub fn new(config: ClientConfig) -> Client {
        Client {
            config,
            phase: Phase::Opening,
            extensions: Extensions::default(),
            expected: VecDeque::from([Step::Greeting]),
            unsent: VecDeque::new(),
            txns: VecDeque::new(),
            needs_rset: false,
            tls_active: false,
            output: Vec::with_capacity(512),
            events: VecDeque::new(),
        }
    }

    /// Consumes server bytes; returns how many were used, always whole replies. It stops
    /// after the reply that brings [`ClientEvent::SendContent`]: whatever follows is the
    /// answer to the content and must be offered again after
    /// [`Client::handle_content_sent`]. After the session fails on a malformed reply, all of
    /// `input` counts as used: nothing after it can be trusted.
    pub fn handle_input(&mut self, input: &[u8]) -> usize {
        let mut pos = 0;
        while pos < input.len()
            && !matches!(
                self.phase,
                Phase::Content | Phase::Handshake | Phase::Closed
            )
        {
            match parse_reply(&input[pos..]) {
                Ok(Some((reply, used))) => {
                    pos += used;
                    self.handle_reply(reply);
                }
                Ok(None) => break,
                Err(e) => {
                    self.fail(e.reply());
                    return input.len();
                }
            }
        }
        pos
    }

    /// Moves pending command bytes into `buf` (which should be empty), leaving the client
    /// with `buf`'s allocation for the next commands.
    pub fn take_output(&mut self, buf: &mut Vec<u8>) {
        std::mem::swap(&mut self.output, buf);
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Starts a transaction for `envelope`. Call it only after [`ClientEvent::Ready`] or
    /// [`ClientEvent::TransactionDone`]; if the session has ended since, every recipient gets
    /// a 4xx at once through [`ClientEvent::Failed`].
    ///
    /// A message the server cannot take as offered (size, 8BITMIME, SMTPUTF8; see the module
    /// docs) ends at once in [`ClientEvent::TransactionDone`] and nothing is sent.
    ///
    /// # Panics
    ///
    /// While the greeting, EHLO or another transaction is still in progress: that is a
    /// driver bug, and going on would mix two transactions' replies.
    pub fn start_transaction(&mut self, envelope: Envelope) {
        self.begin(envelope, None);
    }

    /// True when the server offers CHUNKING and PIPELINING (RFC 3030, RFC 2920): then
    /// [`Client::start_chunked_transaction`] may be used, and called again while earlier
    /// transactions are still in flight.
    pub fn can_chunk(&self) -> bool {
        self.extensions.chunking && self.extensions.pipelining
    }

    /// Starts a transaction whose content goes in one `BDAT size LAST` chunk (RFC 3030):
    /// `[RSET] MAIL RCPT… BDAT` are written at once, and the driver must write the `size`
    /// octets of content (the message itself, not dot-stuffed) right after them.
    ///
    /// Returns `Err` with the transaction's end when it ended at once (refused locally as
    /// [`Client::start_transaction`] would, or the session is already over): nothing was
    /// written, no content may follow, and the event is not queued, so it can never be
    /// taken for another transaction's.
    ///
    /// Unlike DATA, nothing in a chunked transaction waits for a reply, so the next one can
    /// start at once, also behind a DATA transaction whose content is written (RFC 2920
    /// §3.1 lets commands follow the final dot): the driver may write many transactions in
    /// one write and read all their replies in one read. The events of the transactions
    /// that went out come in the order they were started: one
    /// [`ClientEvent::TransactionDone`] each, or one [`ClientEvent::Failed`] each when the
    /// session fails.
    ///
    /// # Panics
    ///
    /// When [`Client::can_chunk`] is false, or while the greeting runs or a DATA
    /// transaction still waits for its 354 or its content.
    pub fn start_chunked_transaction(
        &mut self,
        envelope: Envelope,
        size: u64,
    ) -> Result<(), ClientEvent> {
        assert!(
            self.can_chunk(),
            "start_chunked_transaction without CHUNKING and PIPELINING"
        );
        let in_flight = self.txns.len();
        self.begin(envelope, Some(size));
        if self.txns.len() > in_flight {
            return Ok(());
        }
        // `begin` queued exactly one event for a transaction that ended at once.
        Err(self
            .events
            .pop_back()
            .expect("a transaction that ended at once has its event"))
    }

    fn begin(&mut self, envelope: Envelope, chunk: Option<u64>) {
        // A chunked transaction may follow others whose commands and content are all
        // written: nothing of theirs is left to send.
        let chunked_behind = chunk.is_some()
            && self.phase == Phase::Transaction
            && self.unsent.is_empty()
            && !self.expected.contains(&Step::Data);
        match self.phase {
            Phase::Idle => {}
            Phase::Transaction if chunked_behind => {}
            Phase::Quitting | Phase::Closed => {
                let pending = (0..envelope.recipients.len()).collect();
                let reply = Reply::new(421, Enhanced(4, 4, 2), "Connection already closed");
                self.events
                    .push_back(ClientEvent::Failed { reply, pending });
                return;
            }
            Phase::Opening | Phase::Handshake | Phase::Transaction | Phase::Content => {
                panic!(
                    "start_transaction while {:?}: wait for Ready or TransactionDone",
                    self.phase
                )
            }
        }
        let n = envelope.recipients.len();
        if let Some(reply) = self.refuse_locally(&envelope) {
            let results = (0..n).map(|i| (i, reply.clone())).collect();
            self.events
                .push_back(ClientEvent::TransactionDone { results });
            return;
        }
        // Addresses go into command lines verbatim: one with a CR or LF would inject
        // commands, so it is refused here (defence in depth; the spool only holds parsed
        // addresses).
        let refusals: Vec<Option<Reply>> = envelope
            .recipients
            .iter()
            .map(|r| {
                (!is_safe_path(r))
                    .then(|| Reply::new(501, Enhanced(5, 1, 3), "Recipient address not writable"))
            })
            .collect();
        let rcpts: Vec<usize> = (0..n).filter(|&i| refusals[i].is_none()).collect();
        if rcpts.is_empty() {
            let results = refusals
                .into_iter()
                .enumerate()
                .filter_map(|(i, r)| Some((i, r?)))
                .collect();
            self.events
                .push_back(ClientEvent::TransactionDone { results });
            return;
        }
        let mail_params = self.mail_params(&envelope);
        // Behind transactions whose outcome is not known yet, RSET first: a refused BDAT may
        // leave the server mid-transaction (RFC 3030 does not say it ends one), and the
        // MAIL after it would get 503. After a finished transaction RSET is a no-op
        // (RFC 5321 §4.1.1.5), and pipelined it costs no round trip.
        let behind = !self.txns.is_empty();
        if self.needs_rset || behind {
            self.unsent.push_back(Step::Rset);
            self.needs_rset = false;
        }
        self.unsent.push_back(Step::Mail);
        self.unsent.extend(rcpts.iter().map(|&i| Step::Rcpt(i)));
        self.unsent.push_back(Step::Data);
        self.txns.push_back(Transaction {
            envelope,
            mail_params,
            refusals,
            rcpts: rcpts.len(),
            answered: 0,
            accepted: 0,
            mail_refused: None,
            behind,
        });
        self.phase = Phase::Transaction;
        if let Some(size) = chunk {
            // With PIPELINING (required here) every command goes out now; the BDAT line is
            // written in place of DATA, and the driver follows it with the content.
            self.unsent.pop_back();
            while let Some(step) = self.unsent.pop_front() {
                self.send(step);
            }
            // Writing into a Vec cannot fail.
            let _ = write!(self.output, "BDAT {size} LAST\r\n");
            self.expected.push_back(Step::Bdat);
            return;
        }
        self.write_unsent();
    }

    /// The driver has written the content and its final `.\r\n`; the client now waits for
    /// the final reply. Does nothing once the session has ended.
    ///
    /// # Panics
    ///
    /// When no [`ClientEvent::SendContent`] is outstanding.
    pub fn handle_content_sent(&mut self) {
        match self.phase {
            Phase::Content => {
                self.phase = Phase::Transaction;
                self.expected.push_back(Step::Dot);
            }
            Phase::Quitting | Phase::Closed => {}
            phase => panic!("handle_content_sent while {phase:?}: no SendContent outstanding"),
        }
    }

    /// The driver finished the TLS handshake after [`ClientEvent::StartTls`]: the client
    /// says EHLO again and forgets the extensions offered in plain text (RFC 3207 §4.2).
    /// Does nothing once the session has ended.
    ///
    /// # Panics
    ///
    /// When no [`ClientEvent::StartTls`] is outstanding.
    pub fn handle_tls_started(&mut self) {
        match self.phase {
            Phase::Handshake => {
                self.tls_active = true;
                self.extensions = Extensions::default();
                self.phase = Phase::Opening;
                self.send(Step::Ehlo);
            }
            Phase::Quitting | Phase::Closed => {}
            phase => panic!("handle_tls_started while {phase:?}: no StartTls outstanding"),
        }
    }

    /// True once [`Client::handle_tls_started`] was called.
    pub fn is_tls_active(&self) -> bool {
        self.tls_active
    }

    /// Ends the session. Between transactions this sends QUIT and [`ClientEvent::Closed`]
    /// follows its reply. In the middle of one (a shutdown, say) the session closes at once
    /// without QUIT, since the server's state is unknown, and the transaction's recipients
    /// get 451 4.3.0 through [`ClientEvent::Failed`].
    pub fn quit(&mut self) {
        match self.phase {
            Phase::Idle => self.send_quit(),
            Phase::Opening | Phase::Handshake => self.close(),
            Phase::Transaction | Phase::Content => {
                self.fail(Reply::new(451, Enhanced(4, 3, 0), "Delivery abandoned"))
            }
            Phase::Quitting | Phase::Closed => {}
        }
    }

    /// The server closed the connection. Unless we were quitting, the session failed: the
    /// recipients of an unfinished transaction get 421 4.4.2.
    pub fn handle_eof(&mut self) {
        match self.phase {
            Phase::Closed => {}
            Phase::Quitting => self.close(),
            _ => self.fail(Reply::new(421, Enhanced(4, 4, 2), "Connection lost")),
        }
    }

    /// The timer for [`Client::waiting_for`] expired (or the driver's own, for content
    /// writes or an idle pooled connection): the session fails and closes without QUIT, and
    /// the recipients of an unfinished transaction get 421 4.4.2.
    pub fn handle_timeout(&mut self) {
        let text = match self.waiting_for() {
            Some(wait) => format!("Timeout waiting for {wait}"),
            None => "Timeout".to_string(),
        };
        match self.phase {
            Phase::Closed => {}
            Phase::Quitting => self.close(),
            _ => self.fail(Reply::new(421, Enhanced(4, 4, 2), text)),
        }
    }

    /// Which reply the client waits for, so the driver can pick its timeout
    /// ([`Wait::default_timeout`]); `None` when it waits for nothing from the server
    /// (between transactions, while the driver writes content, after close).
    pub fn waiting_for(&self) -> Option<Wait> {
        Some(match self.expected.front()? {
            Step::Greeting => Wait::Greeting,
            Step::Ehlo | Step::Helo => Wait::Ehlo,
            Step::StartTls => Wait::StartTls,
            Step::Rset => Wait::Rset,
            Step::Mail => Wait::Mail,
            Step::Rcpt(_) => Wait::Rcpt,
            Step::Data => Wait::DataInit,
            // RFC 3030 names no timeout; the server stores the message before answering,
            // as after the final dot.
            Step::Dot | Step::Bdat => Wait::DataTermination,
            Step::Quit => Wait::Quit,
        })
    }

    /// What the server offered in its EHLO reply (nothing before it, or after HELO).
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// True between transactions: [`Client::start_transaction`] may be called.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Idle
    }

    /// True once [`ClientEvent::Closed`] has been emitted.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    fn handle_reply(&mut self, reply: Reply) {
        let step = self.expected.pop_front();
        // RFC 5321 §3.8: a server that must shut down answers any command with 421 and
        // closes; it may also send it unprompted. Only QUIT's reply is harmless.
        if reply.code == 421 && step != Some(Step::Quit) {
            return self.fail(reply);
        }
        let Some(step) = step else {
            return self.fail(unexpected(&reply));
        };
        let class = reply.code / 100;
        match step {
            Step::Greeting if class == 2 => self.send(Step::Ehlo),
            Step::Ehlo if class == 2 => self.greeted(Extensions::from_ehlo(&reply)),
            // RFC 5321 §3.2: a server that does not know EHLO answers 5xx; fall back.
            Step::Ehlo if class == 5 => self.send(Step::Helo),
            Step::Helo if class == 2 => self.greeted(Extensions::default()),
            Step::StartTls if class == 2 => {
                self.phase = Phase::Handshake;
                self.events.push_back(ClientEvent::StartTls);
            }
            // RFC 3207 §4: after a refusal the session goes on in plain text, if allowed.
            Step::StartTls if class == 4 || class == 5 => {
                if self.config.starttls == StartTls::Required {
                    self.tls_unavailable(format!(
                        "TLS is required, but STARTTLS was refused (\"{reply}\")"
                    ));
                } else {
                    let extensions = std::mem::take(&mut self.extensions);
                    self.ready(extensions);
                }
            }
            Step::StartTls => self.fail(unexpected(&reply)),
            // RFC 5321 §3.1: after a refused greeting the server still waits for QUIT; the
            // same courtesy after a refused EHLO/HELO.
            Step::Greeting | Step::Ehlo | Step::Helo => self.refused(reply),
            Step::Rset if class == 2 => {}
            Step::Rset => self.fail(unexpected(&reply)),
            Step::Mail => self.handle_mail(reply),
            Step::Rcpt(i) => self.handle_rcpt(i, reply),
            Step::Data => self.handle_data(reply),
            Step::Dot | Step::Bdat => self.handle_dot(reply),
            Step::Quit => self.close(),
        }
        self.write_unsent();
    }

    fn handle_mail(&mut self, reply: Reply) {
        // Invariant: MAIL is only sent inside a transaction, which lives until its last
        // reply.
        let txn = self
            .txns
            .front_mut()
            .expect("MAIL reply without transaction");
        match reply.code / 100 {
            2 => {}
            // "Bad sequence" to a MAIL pipelined behind other transactions (after its own
            // RSET) says the server lost track of the batch, nothing about the sender: try
            // again later rather than bounce.
            5 if reply.code == 503 && txn.behind => {
                txn.mail_refused = Some(unexpected(&reply));
                self.settle_if_hopeless();
            }
            4 | 5 => {
                txn.mail_refused = Some(reply);
                self.settle_if_hopeless();
            }
            _ => self.fail(unexpected(&reply)),
        }
    }

    fn handle_rcpt(&mut self, i: usize, reply: Reply) {
        // Invariant: as for MAIL.
        let txn = self
            .txns
            .front_mut()
            .expect("RCPT reply without transaction");
        txn.answered += 1;
        match reply.code / 100 {
            // 250, and 251/252 (RFC 5321 §3.4): accepted, forwarded or not verified.
            2 => txn.accepted += 1,
            // After a refused MAIL, RCPT replies (503 most likely) say nothing about the
            // recipient.
            4 | 5 if txn.mail_refused.is_some() => {}
            4 | 5 => txn.refusals[i] = Some(reply),
            _ => return self.fail(unexpected(&reply)),
        }
        self.settle_if_hopeless();
    }

    fn handle_data(&mut self, reply: Reply) {
        // Invariant: as for MAIL.
        let txn = self.txns.front().expect("DATA reply without transaction");
        match reply.code / 100 {
            // RFC 2920 §3.1: a server that accepts DATA although no recipient was accepted
            // gets a lone dot, which ends the (empty) content at once.
            3 if txn.is_hopeless() => self.send(Step::Dot),
            3 => {
                self.phase = Phase::Content;
                self.events.push_back(ClientEvent::SendContent);
            }
            // RFC 2920 §3.1: with every RCPT refused, the pipelined DATA gets 503 or 554;
            // that reply is no recipient's result.
            4 | 5 if txn.is_hopeless() => self.finish(None),
            4 | 5 => self.finish(Some(reply)),
            _ => self.fail(unexpected(&reply)),
        }
    }

    fn handle_dot(&mut self, reply: Reply) {
        // Invariant: as for MAIL.
        let txn = self.txns.front().expect("final reply without transaction");
        match reply.code / 100 {
            2 | 4 | 5 if txn.is_hopeless() => self.finish(None),
            2 | 4 | 5 => self.finish(Some(reply)),
            _ => self.fail(unexpected(&reply)),
        }
    }

    /// Once nobody can receive the content, the commands not yet written are pointless;
    /// with nothing else in flight the transaction is over. (With PIPELINING they were all
    /// written, and it ends at the DATA reply instead.)
    fn settle_if_hopeless(&mut self) {
        let Some(txn) = self.txns.front() else { return };
        if txn.is_hopeless() && self.phase == Phase::Transaction {
            self.unsent.clear();
            if self.expected.is_empty() {
                self.finish(None);
            }
        }
    }

    /// Ends the transaction with `last`, the reply to DATA or to the content when someone
    /// was meant to receive it, and reports one result per recipient.
    fn finish(&mut self, last: Option<Reply>) {
        // Invariant: finish is only reached from replies to a transaction's commands.
        let txn = self.txns.pop_front().expect("finish without transaction");
        // RFC 5321 §4.1.1.4: the end of the content ends the transaction whatever the
        // reply; RSET anyway after anything but success, as it costs nothing pipelined and
        // guards against servers that keep state after a failure.
        self.needs_rset = last.as_ref().is_none_or(|r| r.code / 100 != 2);
        let results = txn
            .refusals
            .into_iter()
            .enumerate()
            .map(|(i, refusal)| {
                let reply = match (&txn.mail_refused, refusal, &last) {
                    (Some(mail), _, _) => mail.clone(),
                    (None, Some(refusal), _) => refusal,
                    (None, None, Some(last)) => last.clone(),
                    // Unreachable: `last` is None only when nobody was accepted.
                    (None, None, None) => {
                        debug_assert!(false, "accepted recipient without a final reply");
                        Reply::new(451, Enhanced(4, 5, 0), "No final reply")
                    }
                };
                (i, reply)
            })
            .collect();
        if self.txns.is_empty() {
            self.phase = Phase::Idle;
        }
        self.events
            .push_back(ClientEvent::TransactionDone { results });
    }

    /// The reply every recipient gets when the server cannot take this message as it is,
    /// decided before anything is sent.
    fn refuse_locally(&self, envelope: &Envelope) -> Option<Reply> {
        let ext = &self.extensions;
        if !is_safe_path(&envelope.sender) {
            return Some(Reply::new(
                501,
                Enhanced(5, 1, 7),
                "Sender address not writable",
            ));
        }
        if needs_smtputf8(envelope) && !ext.smtputf8 {
            return Some(Reply::new(
                553,
                Enhanced(5, 6, 7),
                "Message needs SMTPUTF8, which the server does not offer",
            ));
        }
        if envelope.needs_8bit && !ext.eight_bit_mime {
            // No downgrade to 7 bit (RFC 6152 §3 allows returning the message instead):
            // re-encoding would break DKIM signatures made at acceptance.
            return Some(Reply::new(
                554,
                Enhanced(5, 6, 3),
                "Conversion required but not supported: the server does not offer 8BITMIME",
            ));
        }
        match ext.size {
            Some(limit) if limit > 0 && envelope.size > limit => Some(Reply::new(
                552,
                Enhanced(5, 3, 4),
                format!("Message size exceeds the server's fixed limit of {limit} octets"),
            )),
            _ => None,
        }
    }

    /// The ESMTP parameters of MAIL for this envelope and this server.
    fn mail_params(&self, envelope: &Envelope) -> String {
        let mut params = String::new();
        if self.extensions.size.is_some() {
            params.push_str(&format!(" SIZE={}", envelope.size));
        }
        if envelope.needs_8bit {
            params.push_str(" BODY=8BITMIME");
        }
        if needs_smtputf8(envelope) {
            params.push_str(" SMTPUTF8");
        }
        if self.extensions.dsn && !envelope.mail_dsn.is_empty() {
            params.push(' ');
            params.push_str(&envelope.mail_dsn);
        }
        params
    }

    /// EHLO or HELO answered: STARTTLS next if offered and wanted, else ready.
    fn greeted(&mut self, extensions: Extensions) {
        if self.tls_active || self.config.starttls == StartTls::Never {
            return self.ready(extensions);
        }
        if extensions.starttls {
            // Kept for a refused STARTTLS: the session then goes on with them.
            self.extensions = extensions;
            return self.send(Step::StartTls);
        }
        match self.config.starttls {
            StartTls::Required => {
                self.tls_unavailable("TLS is required, but was not offered".to_string())
            }
            _ => self.ready(extensions),
        }
    }

    /// TLS is required and cannot be had from this server: report 451 4.7.4 and say QUIT.
    fn tls_unavailable(&mut self, text: String) {
        self.refused(Reply::new(451, Enhanced(4, 7, 4), text));
    }

    fn ready(&mut self, extensions: Extensions) {
        self.extensions = extensions;
        self.phase = Phase::Idle;
        self.events.push_back(ClientEvent::Ready);
    }

    /// Writes the transaction's next commands: all of them with PIPELINING (RFC 2920 §3.1:
    /// RSET, MAIL and RCPT may be grouped, DATA ends the group), else one once nothing is in
    /// flight.
    fn write_unsent(&mut self) {
        while let Some(&step) = self.unsent.front() {
            if !self.extensions.pipelining && !self.expected.is_empty() {
                break;
            }
            self.unsent.pop_front();
            self.send(step);
        }
    }

    /// Writes the command for `step` and expects its reply.
    fn send(&mut self, step: Step) {
        let out = &mut self.output;
        match step {
            Step::Ehlo | Step::Helo => {
                out.extend_from_slice(if step == Step::Ehlo {
                    b"EHLO "
                } else {
                    b"HELO "
                });
                out.extend_from_slice(self.config.helo_name.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Step::StartTls => out.extend_from_slice(b"STARTTLS\r\n"),
            Step::Rset => out.extend_from_slice(b"RSET\r\n"),
            Step::Mail | Step::Rcpt(_) => {
                // Invariant: MAIL and RCPT are only queued by start_transaction, together
                // with the transaction.
                // The newest transaction: commands are written when it starts (or, without
                // PIPELINING, while it is the only one).
                let txn = self.txns.back().expect("MAIL/RCPT without transaction");
                let (verb, path, params) = match step {
                    Step::Rcpt(i) => {
                        let dsn = txn.envelope.rcpt_dsn.get(i).filter(|_| self.extensions.dsn);
                        (
                            "RCPT TO:<",
                            &txn.envelope.recipients[i],
                            dsn.map_or("", |d| d.as_str()),
                        )
                    }
                    _ => ("MAIL FROM:<", &txn.envelope.sender, &*txn.mail_params),
                };
                out.extend_from_slice(verb.as_bytes());
                out.extend_from_slice(path.as_bytes());
                out.push(b'>');
                if matches!(step, Step::Rcpt(_)) && !params.is_empty() {
                    out.push(b' ');
                }
                out.extend_from_slice(params.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Step::Data => out.extend_from_slice(b"DATA\r\n"),
            Step::Dot => out.extend_from_slice(b".\r\n"),
            Step::Quit => out.extend_from_slice(b"QUIT\r\n"),
            Step::Greeting | Step::Bdat => unreachable!("not written by send"),
        }
        self.expected.push_back(step);
    }

    fn send_quit(&mut self) {
        self.phase = Phase::Quitting;
        self.send(Step::Quit);
    }

    /// The server refused to talk (greeting or EHLO/HELO): report it and say QUIT.
    fn refused(&mut self, reply: Reply) {
        let pending = Vec::new();
        self.events
            .push_back(ClientEvent::Failed { reply, pending });
        self.expected.clear();
        self.send_quit();
    }

    /// The session cannot go on: the unfinished transaction's recipients get `reply`, and
    /// the client closes without writing anything more (the stream may be out of step).
    fn fail(&mut self, reply: Reply) {
        match self.phase {
            Phase::Closed => return,
            // QUIT was sent; whatever went wrong, the session is over as intended.
            Phase::Quitting => return self.close(),
            _ => {}
        }
        if self.txns.is_empty() {
            let pending = Vec::new();
            let reply = reply.clone();
            self.events
                .push_back(ClientEvent::Failed { reply, pending });
        }
        // One event per transaction in flight, in order, so the driver can match them.
        for txn in std::mem::take(&mut self.txns) {
            let pending = (0..txn.envelope.recipients.len()).collect();
            self.events.push_back(ClientEvent::Failed {
                reply: reply.clone(),
                pending,
            });
        }
        self.output.clear();
        self.close();
    }

    fn close(&mut self) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        self.txns.clear();
        self.expected.clear();
        self.unsent.clear();
        self.events.push_back(ClientEvent::Closed);
    }
}

/// The 4xx for a reply that has no place in the dialogue: another attempt may go better.
fn unexpected(reply: &Reply) -> Reply {
    Reply::new(
        451,
        Enhanced(4, 5, 0),
        format!("Unexpected reply from server: {reply}"),
    )
}

/// True when `path` can be written between angle brackets on a command line: no control
/// characters (RFC 5321 §4.1.2 allows none in a path), so no CR or LF to end the line early.
fn is_safe_path(path: &str) -> bool {
    !path.bytes().any(|b| b < 0x20 || b == 0x7f)
}

/// RFC 6531 §3.2: the message needs SMTPUTF8 when asked, or when an address is not ASCII.
fn needs_smtputf8(envelope: &Envelope) -> bool {
    envelope.needs_smtputf8
        || !envelope.sender.is_ascii()
        || envelope.recipients.iter().any(|r| !r.is_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(starttls: StartTls) -> Client {
        Client::new(ClientConfig {
            helo_name: "c.test".into(),
            starttls,
        })
    }

    fn output(c: &mut Client) -> String {
        let mut out = Vec::new();
        c.take_output(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn envelope() -> Envelope {
        Envelope {
            sender: "a@x.test".into(),
            recipients: vec!["b@y.test".into()],
            size: 10,
            needs_8bit: false,
            needs_smtputf8: false,
            mail_dsn: String::new(),
            rcpt_dsn: Vec::new(),
        }
    }

    #[test]
    fn starttls_when_offered_then_ehlo_again_with_the_new_extensions() {
        let mut c = client(StartTls::IfOffered);
        c.handle_input(b"220 hi\r\n");
        assert_eq!(output(&mut c), "EHLO c.test\r\n");
        // The plain-text reply offers SIZE 100; the one over TLS does not limit size.
        let after_ehlo = b"250-mx\r\n250-SIZE 100\r\n250 STARTTLS\r\n".len();
        let input = b"250-mx\r\n250-SIZE 100\r\n250 STARTTLS\r\n220 go ahead\r\n250 injected\r\n";
        // Nothing after the 220 is taken: it came before the handshake.
        assert_eq!(
            c.handle_input(input),
            after_ehlo + b"220 go ahead\r\n".len()
        );
        assert_eq!(output(&mut c), "STARTTLS\r\n");
        assert_eq!(c.poll_event(), Some(ClientEvent::StartTls));
        assert_eq!(c.poll_event(), None);
        assert_eq!(c.waiting_for(), None);
        c.handle_tls_started();
        assert!(c.is_tls_active());
        assert_eq!(c.extensions(), &Extensions::default());
        assert_eq!(output(&mut c), "EHLO c.test\r\n");
        // STARTTLS again over TLS is neither sent nor needed.
        c.handle_input(b"250-mx\r\n250-STARTTLS\r\n250 PIPELINING\r\n");
        assert_eq!(c.poll_event(), Some(ClientEvent::Ready));
        assert!(c.extensions().pipelining && c.extensions().size.is_none());
        c.start_transaction(Envelope {
            size: 1000,
            ..envelope()
        });
        assert_eq!(
            output(&mut c),
            "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"
        );
    }

    #[test]
    fn opportunistic_goes_on_in_plain_text_without_starttls_or_after_a_refusal() {
        let mut c = client(StartTls::IfOffered);
        c.handle_input(b"220 hi\r\n250-mx\r\n250 PIPELINING\r\n");
        assert_eq!(output(&mut c), "EHLO c.test\r\n");
        assert_eq!(c.poll_event(), Some(ClientEvent::Ready));

        let mut c = client(StartTls::IfOffered);
        c.handle_input(b"220 hi\r\n250-mx\r\n250-SIZE 100\r\n250 STARTTLS\r\n");
        assert_eq!(output(&mut c), "EHLO c.test\r\nSTARTTLS\r\n");
        assert_eq!(c.waiting_for(), Some(Wait::StartTls));
        c.handle_input(b"454 4.7.0 TLS not available due to temporary reason\r\n");
        assert_eq!(c.poll_event(), Some(ClientEvent::Ready));
        assert!(!c.is_tls_active());
        // The extensions from before the refusal still hold.
        assert_eq!(c.extensions().size, Some(100));
    }

    #[test]
    fn required_fails_with_4_7_4_and_quits_when_tls_is_not_offered_or_refused() {
        for (server, sent) in [
            ("250-mx\r\n250 PIPELINING\r\n", "EHLO c.test\r\nQUIT\r\n"),
            // A server without EHLO has no STARTTLS either.
            (
                "502 what\r\n250 mx\r\n",
                "EHLO c.test\r\nHELO c.test\r\nQUIT\r\n",
            ),
            (
                "250-mx\r\n250 STARTTLS\r\n454 4.7.0 not now\r\n",
                "EHLO c.test\r\nSTARTTLS\r\nQUIT\r\n",
            ),
        ] {
            let mut c = client(StartTls::Required);
            c.handle_input(format!("220 hi\r\n{server}").as_bytes());
            assert_eq!(output(&mut c), sent);
            let Some(ClientEvent::Failed { reply, pending }) = c.poll_event() else {
                panic!("no Failed for {server:?}");
            };
            assert_eq!((reply.code, reply.enhanced), (451, Some(Enhanced(4, 7, 4))));
            assert!(reply.lines[0].starts_with("TLS is required"), "{reply}");
            assert!(pending.is_empty());
            c.handle_input(b"221 bye\r\n");
            assert_eq!(c.poll_event(), Some(ClientEvent::Closed));
        }
    }

    #[test]
    fn never_sends_starttls_when_disabled() {
        let mut c = client(StartTls::Never);
        c.handle_input(b"220 hi\r\n250-mx\r\n250 STARTTLS\r\n");
        assert_eq!(output(&mut c), "EHLO c.test\r\n");
        assert_eq!(c.poll_event(), Some(ClientEvent::Ready));
    }

    #[test]
    fn a_lost_connection_during_the_handshake_fails_the_session() {
        let mut c = client(StartTls::Required);
        c.handle_input(b"220 hi\r\n250-mx\r\n250 STARTTLS\r\n220 go\r\n");
        assert_eq!(c.poll_event(), Some(ClientEvent::StartTls));
        c.handle_eof();
        assert!(
            matches!(c.poll_event(), Some(ClientEvent::Failed { reply, .. }) if reply.code == 421)
        );
        assert_eq!(c.poll_event(), Some(ClientEvent::Closed));
        // A late call after the end changes nothing.
        c.handle_tls_started();
        assert_eq!(c.poll_event(), None);
    }

    fn ehlo(lines: &[&'static str]) -> Reply {
        Reply::plain(250, lines.iter().map(|&l| l.into()).collect())
    }

    #[test]
    fn extensions_from_ehlo() {
        let ext = Extensions::from_ehlo(&ehlo(&[
            "mx.test Hello",
            "pipelining",
            "SIZE 1000",
            "8BITMIME",
            "SMTPUTF8",
            "STARTTLS",
            "CHUNKING",
            "ENHANCEDSTATUSCODES",
            "DSN",
            "AUTH PLAIN",
        ]));
        assert_eq!(
            ext,
            Extensions {
                pipelining: true,
                size: Some(1000),
                eight_bit_mime: true,
                smtputf8: true,
                starttls: true,
                chunking: true,
                enhanced_status_codes: true,
                dsn: true,
            }
        );
        // The first line is the server's name, never an extension.
        assert_eq!(
            Extensions::from_ehlo(&ehlo(&["PIPELINING"])),
            Extensions::default()
        );
        assert_eq!(Extensions::from_ehlo(&ehlo(&["x", "SIZE"])).size, Some(0));
    }

    #[test]
    fn timeouts_follow_rfc_5321() {
        assert_eq!(Wait::Greeting.default_timeout(), Duration::from_secs(300));
        assert_eq!(Wait::DataInit.default_timeout(), Duration::from_secs(120));
        assert_eq!(
            Wait::DataTermination.default_timeout(),
            Duration::from_secs(600)
        );
    }

    #[test]
    fn size_without_limit_sends_the_parameter_but_refuses_nothing() {
        let mut c = client(StartTls::Never);
        c.handle_input(b"220 hi\r\n250-mx\r\n250 SIZE\r\n");
        assert_eq!(c.poll_event(), Some(ClientEvent::Ready));
        c.start_transaction(Envelope {
            sender: "a@x.test".into(),
            recipients: vec!["b@y.test".into()],
            size: u64::MAX,
            needs_8bit: false,
            needs_smtputf8: false,
            mail_dsn: String::new(),
            rcpt_dsn: Vec::new(),
        });
        let mut out = Vec::new();
        c.take_output(&mut out);
        assert_eq!(
            out,
            format!("EHLO c.test\r\nMAIL FROM:<a@x.test> SIZE={}\r\n", u64::MAX).as_bytes()
        );
    }

    #[test]
    fn control_characters_in_addresses_are_never_written() {
        let mut c = client(StartTls::Never);
        c.handle_input(b"220 hi\r\n250-mx\r\n250 PIPELINING\r\n");
        assert_eq!(c.poll_event(), Some(ClientEvent::Ready));
        let mut out = Vec::new();
        c.take_output(&mut out);
        c.start_transaction(Envelope {
            sender: "a@x.test".into(),
            recipients: vec![
                "b@y.test>\r\nRCPT TO:<evil@z.test".into(),
                "c@y.test".into(),
            ],
            size: 10,
            needs_8bit: false,
            needs_smtputf8: false,
            mail_dsn: String::new(),
            rcpt_dsn: Vec::new(),
        });
        out.clear();
        c.take_output(&mut out);
        assert_eq!(
            out,
            b"MAIL FROM:<a@x.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n"
        );
        c.handle_input(b"250 ok\r\n550 no\r\n554 no valid recipients\r\n");
        let Some(ClientEvent::TransactionDone { results }) = c.poll_event() else {
            panic!("no TransactionDone");
        };
        assert_eq!(results[0].1.code, 501);
        assert_eq!(results[1].1.code, 550);
    }
}
