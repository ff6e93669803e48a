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
//! What the client refuses to do itself, before sending anything (a message too large for
//! the server, or needing 8BITMIME or SMTPUTF8 it does not offer) is decided from the
//! [`Envelope`] alone: see [`super::envelope`]. The machine here keeps the dialogue in step
//! (its reply side is in `replies`); [`super::waits`] says what each reply answers, and the
//! `transaction` module keeps each transaction's replies and results.

use std::collections::VecDeque;
use std::io::Write;

use crate::deliver::client::envelope::Envelope;
use crate::deliver::client::extensions::Extensions;
use crate::deliver::client::transaction::Transaction;
use crate::deliver::client::waits::{Step, Wait};
use crate::smtp::reply::{Enhanced, Reply};
use crate::smtp::response::parse_reply;

mod replies;

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
        if let Some(reply) = envelope.local_refusal(&self.extensions) {
            let results = (0..envelope.recipients.len())
                .map(|i| (i, reply.clone()))
                .collect();
            self.events
                .push_back(ClientEvent::TransactionDone { results });
            return;
        }
        let refusals = envelope.recipient_refusals();
        let mail_params = envelope.mail_params(&self.extensions);
        let behind = !self.txns.is_empty();
        let txn = Transaction::new(envelope, mail_params, refusals, behind);
        if txn.has_no_rcpt() {
            // Every recipient was refused before sending: nothing goes out.
            let results = txn.results(None);
            self.events
                .push_back(ClientEvent::TransactionDone { results });
            return;
        }
        // Behind transactions whose outcome is not known yet, RSET first: a refused BDAT may
        // leave the server mid-transaction (RFC 3030 does not say it ends one), and the
        // MAIL after it would get 503. After a finished transaction RSET is a no-op
        // (RFC 5321 §4.1.1.5), and pipelined it costs no round trip.
        if self.needs_rset || behind {
            self.unsent.push_back(Step::Rset);
            self.needs_rset = false;
        }
        self.unsent.extend(txn.commands());
        self.txns.push_back(txn);
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
        self.expected.front().map(|step| step.wait())
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
            // Invariant: MAIL and RCPT are only queued by start_transaction, together with
            // the transaction. The newest transaction: commands are written when it starts
            // (or, without PIPELINING, while it is the only one).
            Step::Mail => (self.txns.back())
                .expect("MAIL without transaction")
                .write_mail(out),
            Step::Rcpt(i) => (self.txns.back())
                .expect("RCPT without transaction")
                .write_rcpt(i, self.extensions.dsn, out),
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
            let pending = txn.pending();
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
}
