//! The AUTH command (RFC 4954) as the session runs it: whether it may start, feeding each
//! SASL step back into the session's input state, and the driver's verdict on the login.
//! The mechanisms themselves (PLAIN, LOGIN) are in `session::auth`.

use super::{AuthPolicy, Event, Input, Session};
use crate::auth::Verdict;
use crate::session::auth::{self, Step};
use crate::smtp::reply::replies;

impl Session {
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

    /// AUTH (RFC 4954 §4): only under TLS, once per session, outside a transaction.
    pub(super) fn auth(&mut self, args: &[u8]) {
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

    /// A line inside an exchange: the client's SASL response.
    pub(super) fn handle_sasl_line(&mut self, line: &[u8]) {
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::{login, say, session};
    use super::*;

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
