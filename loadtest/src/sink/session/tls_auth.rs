//! STARTTLS (RFC 3207) and AUTH PLAIN (RFC 4954, RFC 4616) on the sink's side: what is
//! offered when, the injected STARTTLS faults, and the credentials check.
//!
//! The handshake itself is the driver's; the session only stops reading at STARTTLS and
//! starts over once told the handshake is done.

use pigeon::smtp::reply::{replies, Enhanced, Reply};

use super::{Event, SinkSession};
use crate::sink::fault::{Action, FaultPlan, Stage};

impl SinkSession<'_> {
    /// The TLS handshake after STARTTLS succeeded: the session starts over (RFC 3207 §4.2),
    /// waiting for EHLO.
    pub fn handle_tls_started(&mut self) {
        self.awaiting_tls = false;
        self.tls = true;
        self.greeted = false;
        self.authenticated = false;
        self.reset();
    }

    /// STARTTLS: go ahead (the driver then shakes hands) unless a fault drawn for this
    /// connection refuses it or cuts it off.
    pub(super) fn start_tls(&mut self, faults: &FaultPlan) {
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
    pub(super) fn auth(&mut self, args: &[u8]) {
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

    /// The AUTH PLAIN response: `*` cancels, else base64 of authzid NUL user NUL password.
    pub(super) fn check_auth(&mut self, response: &[u8]) {
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
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::drive;
    use super::*;
    use crate::sink::config::{Delays, SinkConfig};
    use crate::sink::fault::Fault;

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
}
