//! How each server reply moves the [`Client`]: the reply is matched to the [`Step`] it
//! answers, opening replies lead to EHLO, STARTTLS or [`ClientEvent::Ready`], and
//! transaction replies go to the transaction in front until it ends in
//! [`ClientEvent::TransactionDone`].

use crate::deliver::client::extensions::Extensions;
use crate::deliver::client::machine::{Client, ClientEvent, Phase, StartTls};
use crate::deliver::client::waits::{unexpected, Step};
use crate::smtp::reply::{Enhanced, Reply};

impl Client {
    /// Moves the session on by one reply, the answer to the oldest step expected.
    pub(super) fn handle_reply(&mut self, reply: Reply) {
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
        match txn.mail_answered(reply) {
            Ok(()) => self.settle_if_hopeless(),
            Err(reply) => self.fail(unexpected(&reply)),
        }
    }

    fn handle_rcpt(&mut self, i: usize, reply: Reply) {
        // Invariant: as for MAIL.
        let txn = self
            .txns
            .front_mut()
            .expect("RCPT reply without transaction");
        match txn.rcpt_answered(i, reply) {
            Ok(()) => self.settle_if_hopeless(),
            Err(reply) => self.fail(unexpected(&reply)),
        }
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
        let results = txn.results(last);
        if self.txns.is_empty() {
            self.phase = Phase::Idle;
        }
        self.events
            .push_back(ClientEvent::TransactionDone { results });
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

    /// The server refused to talk (greeting or EHLO/HELO): report it and say QUIT.
    fn refused(&mut self, reply: Reply) {
        let pending = Vec::new();
        self.events
            .push_back(ClientEvent::Failed { reply, pending });
        self.expected.clear();
        self.send_quit();
    }
}
