//! One transaction's bookkeeping (RFC 5321 §3.3): the commands it needs, what the server
//! answered to MAIL and to each RCPT, whether anybody is left to receive the content, and
//! the one result each recipient ends with.

use crate::deliver::client::envelope::Envelope;
use crate::deliver::client::waits::{unexpected, Step};
use crate::smtp::reply::{Enhanced, Reply};

/// A transaction from its first command to its final reply.
#[derive(Debug)]
pub(super) struct Transaction {
    envelope: Envelope,
    /// ESMTP parameters for MAIL, with a leading space each.
    mail_params: String,
    /// Per recipient: the reply that refused it, if any (set before sending for an address
    /// we will not write, see [`Envelope::recipient_refusals`]).
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
    /// A transaction for `envelope` with these MAIL parameters; the recipients already
    /// refused in `refusals` get no RCPT.
    pub(super) fn new(
        envelope: Envelope,
        mail_params: String,
        refusals: Vec<Option<Reply>>,
        behind: bool,
    ) -> Transaction {
        Transaction {
            envelope,
            mail_params,
            rcpts: refusals.iter().filter(|r| r.is_none()).count(),
            refusals,
            answered: 0,
            accepted: 0,
            mail_refused: None,
            behind,
        }
    }

    /// True when every recipient was refused before sending: nothing is to be written.
    pub(super) fn has_no_rcpt(&self) -> bool {
        self.rcpts == 0
    }

    /// The transaction's commands in order, after any RSET: MAIL, one RCPT per recipient
    /// not refused yet, DATA.
    pub(super) fn commands(&self) -> impl Iterator<Item = Step> + '_ {
        let rcpts = (self.refusals.iter().enumerate())
            .filter(|(_, refusal)| refusal.is_none())
            .map(|(i, _)| Step::Rcpt(i));
        std::iter::once(Step::Mail)
            .chain(rcpts)
            .chain(std::iter::once(Step::Data))
    }

    /// Writes the MAIL command line.
    pub(super) fn write_mail(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"MAIL FROM:<");
        out.extend_from_slice(self.envelope.sender.as_bytes());
        out.push(b'>');
        out.extend_from_slice(self.mail_params.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// Writes the RCPT command line for recipient `i`, with its DSN parameters when the
    /// server offers DSN.
    pub(super) fn write_rcpt(&self, i: usize, dsn: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(b"RCPT TO:<");
        out.extend_from_slice(self.envelope.recipients[i].as_bytes());
        out.push(b'>');
        if let Some(params) = self
            .envelope
            .rcpt_dsn
            .get(i)
            .filter(|p| dsn && !p.is_empty())
        {
            out.push(b' ');
            out.extend_from_slice(params.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Records the reply to MAIL; gives it back when it has no place in the dialogue.
    pub(super) fn mail_answered(&mut self, reply: Reply) -> Result<(), Reply> {
        match reply.code / 100 {
            2 => {}
            // "Bad sequence" to a MAIL pipelined behind other transactions (after its own
            // RSET) says the server lost track of the batch, nothing about the sender: try
            // again later rather than bounce.
            5 if reply.code == 503 && self.behind => self.mail_refused = Some(unexpected(&reply)),
            4 | 5 => self.mail_refused = Some(reply),
            _ => return Err(reply),
        }
        Ok(())
    }

    /// Records the reply to recipient `i`'s RCPT; gives it back when it has no place in the
    /// dialogue.
    pub(super) fn rcpt_answered(&mut self, i: usize, reply: Reply) -> Result<(), Reply> {
        self.answered += 1;
        match reply.code / 100 {
            // 250, and 251/252 (RFC 5321 §3.4): accepted, forwarded or not verified.
            2 => self.accepted += 1,
            // After a refused MAIL, RCPT replies (503 most likely) say nothing about the
            // recipient.
            4 | 5 if self.mail_refused.is_some() => {}
            4 | 5 => self.refusals[i] = Some(reply),
            _ => return Err(reply),
        }
        Ok(())
    }

    /// Nobody will receive content in this transaction (RFC 2920 §3.1: do not send it).
    pub(super) fn is_hopeless(&self) -> bool {
        self.mail_refused.is_some() || (self.answered == self.rcpts && self.accepted == 0)
    }

    /// Every recipient index: the ones a failed session leaves unfinished.
    pub(super) fn pending(&self) -> Vec<usize> {
        (0..self.envelope.recipients.len()).collect()
    }

    /// One result per recipient, in index order, given `last`, the reply to DATA or to the
    /// content when someone was meant to receive it: the MAIL refusal for all, else each
    /// one's own refusal, else `last`.
    pub(super) fn results(self, last: Option<Reply>) -> Vec<(usize, Reply)> {
        let mail_refused = self.mail_refused;
        self.refusals
            .into_iter()
            .enumerate()
            .map(|(i, refusal)| {
                let reply = match (&mail_refused, refusal, &last) {
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
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transaction(recipients: &[&str], refusals: Vec<Option<Reply>>) -> Transaction {
        let envelope = Envelope {
            sender: "a@x.test".into(),
            recipients: recipients.iter().map(|&r| r.into()).collect(),
            size: 10,
            needs_8bit: false,
            needs_smtputf8: false,
            mail_dsn: String::new(),
            rcpt_dsn: vec!["NOTIFY=NEVER".into()],
        };
        Transaction::new(envelope, " SIZE=10".into(), refusals, false)
    }

    fn written(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        write(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn commands_skip_recipients_refused_before_sending() {
        let refused = Reply::new(501, Enhanced(5, 1, 3), "no");
        let txn = transaction(&["b@y", "c@y", "d@y"], vec![None, Some(refused), None]);
        let commands: Vec<Step> = txn.commands().collect();
        assert_eq!(
            commands,
            [Step::Mail, Step::Rcpt(0), Step::Rcpt(2), Step::Data]
        );
        assert!(!txn.has_no_rcpt());
        assert_eq!(
            written(|o| txn.write_mail(o)),
            "MAIL FROM:<a@x.test> SIZE=10\r\n"
        );
        // DSN parameters only when offered, and only for recipients that have them.
        assert_eq!(
            written(|o| txn.write_rcpt(0, true, o)),
            "RCPT TO:<b@y> NOTIFY=NEVER\r\n"
        );
        assert_eq!(
            written(|o| txn.write_rcpt(0, false, o)),
            "RCPT TO:<b@y>\r\n"
        );
        assert_eq!(written(|o| txn.write_rcpt(2, true, o)), "RCPT TO:<d@y>\r\n");
    }

    #[test]
    fn results_give_each_recipient_its_refusal_or_the_final_reply() {
        let mut txn = transaction(&["b@y", "c@y"], vec![None, None]);
        assert_eq!(
            txn.mail_answered(Reply::plain(250, vec!["ok".into()])),
            Ok(())
        );
        assert_eq!(
            txn.rcpt_answered(0, Reply::plain(550, vec!["no".into()])),
            Ok(())
        );
        assert!(!txn.is_hopeless());
        assert_eq!(
            txn.rcpt_answered(1, Reply::plain(250, vec!["ok".into()])),
            Ok(())
        );
        let results = txn.results(Some(Reply::plain(250, vec!["queued".into()])));
        let codes: Vec<(usize, u16)> = results.iter().map(|(i, r)| (*i, r.code)).collect();
        assert_eq!(codes, [(0, 550), (1, 250)]);
    }

    #[test]
    fn a_refused_sender_is_every_recipients_result() {
        let mut txn = transaction(&["b@y", "c@y"], vec![None, None]);
        assert_eq!(
            txn.mail_answered(Reply::plain(550, vec!["no".into()])),
            Ok(())
        );
        assert!(txn.is_hopeless());
        // RCPT replies after a refused MAIL say nothing about the recipient.
        assert_eq!(
            txn.rcpt_answered(0, Reply::plain(503, vec!["seq".into()])),
            Ok(())
        );
        let codes: Vec<u16> = txn.results(None).iter().map(|(_, r)| r.code).collect();
        assert_eq!(codes, [550, 550]);
    }

    #[test]
    fn a_reply_out_of_place_is_given_back() {
        let mut txn = transaction(&["b@y"], vec![None]);
        let odd = Reply::plain(354, vec!["go".into()]);
        assert_eq!(txn.mail_answered(odd.clone()), Err(odd.clone()));
        assert_eq!(txn.rcpt_answered(0, odd.clone()), Err(odd));
    }
}
