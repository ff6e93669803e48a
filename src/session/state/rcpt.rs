//! RCPT TO: its DSN parameters (RFC 3461 §4.1, §4.2), who may relay, and the per-message
//! and per-session recipient limits.

use super::Session;
use crate::smtp::address::parse_mailbox;
use crate::smtp::command::params;
use crate::smtp::dsn;
use crate::smtp::envelope::Recipient;
use crate::smtp::reply::replies;

impl Session {
    /// RCPT TO (RFC 5321 §4.1.1.3): one more recipient, if relaying and the limits allow.
    pub(super) fn rcpt(&mut self, path: &[u8], param_bytes: &[u8]) {
        let Some(txn) = self.txn.as_mut() else {
            return self.error(replies::bad_sequence("Need MAIL command"));
        };
        if txn.bdat.is_some() {
            return self.error(replies::bad_sequence("RCPT after BDAT"));
        }
        txn.rcpt_tried = true;
        let extended = self.helo.as_ref().is_some_and(|h| h.1);
        let mut rcpt_dsn = dsn::RcptDsn::default();
        for p in params(param_bytes) {
            let reply = match (p.keyword.to_ascii_uppercase().as_slice(), p.value) {
                _ if !extended => replies::bad_parameter("No parameters after HELO"),
                (b"NOTIFY", Some(v)) => match dsn::Notify::parse(v) {
                    Some(notify) => {
                        rcpt_dsn.notify = Some(notify);
                        continue;
                    }
                    None => replies::syntax("Bad DSN parameter"),
                },
                (b"ORCPT", Some(v)) if dsn::valid_orcpt(v) => {
                    rcpt_dsn.take(b"ORCPT", v);
                    continue;
                }
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
            dsn: rcpt_dsn,
        });
        self.reply(replies::recipient_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{codes, limited, login, say, session};
    use super::super::AuthPolicy;
    use crate::auth::Verdict;

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
}
