//! MAIL FROM: the checks before a transaction may begin (sequence, AUTH, the per-session
//! limits, the spool), the MAIL parameters, and the sender a login may use.

use super::{Session, Transaction};
use crate::smtp::address::{parse_mailbox, AddressError};
use crate::smtp::command::params;
use crate::smtp::dsn;
use crate::smtp::reply::{replies, Enhanced, Reply};

impl Session {
    /// Whether the spool can take new mail; when false, MAIL gets 452 4.3.1.
    pub fn set_spool_available(&mut self, available: bool) {
        self.spool_available = available;
    }

    /// The client is in `limits.exempt_networks`: no per-session message or recipient limit.
    pub fn exempt_from_limits(&mut self) {
        self.limits_exempt = true;
    }

    /// MAIL FROM (RFC 5321 §4.1.1.2): begins a transaction once EHLO, AUTH and the limits
    /// allow, checking SIZE, BODY, SMTPUTF8 and RET and ENVID (RFC 3461 §4.3, §4.4).
    pub(super) fn mail(&mut self, path: &[u8], param_bytes: &[u8]) {
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
        // The DSN parameters are read here, once, into the envelope's typed form; the raw
        // string is kept only for the record.
        let mut mail_dsn = dsn::MailDsn::default();
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
                (b"RET", Some(v)) if dsn::valid_ret(v) => mail_dsn.take(b"RET", v),
                (b"ENVID", Some(v)) if dsn::valid_envid(v) => mail_dsn.take(b"ENVID", v),
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
            mail_dsn,
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
}

fn parse_size(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::super::testing::{codes, limited, login, say, session, MESSAGE};
    use super::super::AuthPolicy;
    use crate::auth::Verdict;

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
    fn exempt_clients_have_no_session_limits() {
        let mut s = limited(1, 1);
        s.exempt_from_limits();
        codes(&mut s, b"");
        for _ in 0..5 {
            assert_eq!(codes(&mut s, MESSAGE), [250, 250, 354, 250]);
        }
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
}
