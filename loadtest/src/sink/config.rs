//! What every sink session of a run shares: its identity, the extensions it offers (both
//! EHLO replies, built once), what it checks and saves, and the reply delays per stage.

use std::time::Duration;

use pigeon::smtp::reply::Reply;

/// A `--delay` that is not `STAGE:MILLISECONDS` with a known stage.
#[derive(Debug, thiserror::Error)]
#[error("bad --delay {spec:?}: want greeting|mail|rcpt|data:MILLISECONDS")]
pub struct DelayError {
    /// The specification as given.
    pub spec: String,
}

/// Reply delays, per stage; zero means none.
#[derive(Clone, Copy, Debug, Default)]
pub struct Delays {
    /// Before the greeting.
    pub greeting: Duration,
    /// Before the reply to MAIL.
    pub mail: Duration,
    /// Before the reply to each RCPT.
    pub rcpt: Duration,
    /// Before the reply after the content.
    pub data: Duration,
}

impl Delays {
    /// Adds one `--delay STAGE:MILLISECONDS`.
    pub fn add(&mut self, spec: &str) -> Result<(), DelayError> {
        let bad = || DelayError {
            spec: spec.to_owned(),
        };
        let (stage, ms) = spec.split_once(':').ok_or_else(bad)?;
        let d = Duration::from_millis(ms.parse().map_err(|_| bad())?);
        match stage {
            "greeting" => self.greeting = d,
            "mail" => self.mail = d,
            "rcpt" => self.rcpt = d,
            "data" => self.data = d,
            _ => return Err(bad()),
        }
        Ok(())
    }
}

/// What every session of a run shares: identity, the extensions offered, what to check.
#[derive(Debug)]
pub struct SinkConfig {
    /// The greeting's and EHLO reply's host name.
    pub hostname: String,
    /// Keep each message's content for its
    /// [`Event::Message`](crate::sink::session::Event::Message).
    pub save: bool,
    /// STARTTLS is offered (a certificate was given).
    pub starttls: bool,
    /// AUTH PLAIN is offered and required before MAIL; these credentials pass.
    pub auth: Option<(String, String)>,
    /// Reply delays.
    pub delays: Delays,
    ehlo_plain: Vec<u8>,
    ehlo_tls: Vec<u8>,
}

impl SinkConfig {
    /// The configuration, with both EHLO replies built once.
    pub fn new(
        hostname: &str,
        save: bool,
        starttls: bool,
        auth: Option<(String, String)>,
        delays: Delays,
    ) -> SinkConfig {
        // AUTH only where a password would be safe: under TLS when TLS is on offer.
        let ehlo = |tls: bool| {
            let mut lines = vec![
                hostname.to_owned(),
                "PIPELINING".into(),
                "SIZE 1073741824".into(),
                "8BITMIME".into(),
                "SMTPUTF8".into(),
                "ENHANCEDSTATUSCODES".into(),
                "CHUNKING".into(),
            ];
            if starttls && !tls {
                lines.push("STARTTLS".into());
            }
            if auth.is_some() && (tls || !starttls) {
                lines.push("AUTH PLAIN".into());
            }
            let mut out = Vec::new();
            Reply::plain(250, lines.into_iter().map(Into::into).collect()).write_to(&mut out);
            out
        };
        SinkConfig {
            hostname: hostname.to_owned(),
            save,
            starttls,
            ehlo_plain: ehlo(false),
            ehlo_tls: ehlo(true),
            auth,
            delays,
        }
    }

    /// The EHLO reply in wire form: after a TLS handshake (`tls`) or before one.
    pub fn ehlo_reply(&self, tls: bool) -> &[u8] {
        if tls {
            &self.ehlo_tls
        } else {
            &self.ehlo_plain
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_by_stage() {
        let mut delays = Delays::default();
        delays.add("mail:5").unwrap();
        delays.add("data:7").unwrap();
        assert_eq!(delays.mail, Duration::from_millis(5));
        assert_eq!(delays.data, Duration::from_millis(7));
        assert_eq!(delays.rcpt, Duration::ZERO);
        for bad in ["helo:3", "mail", "mail:x"] {
            assert_eq!(
                delays.add(bad).unwrap_err().to_string(),
                format!("bad --delay {bad:?}: want greeting|mail|rcpt|data:MILLISECONDS")
            );
        }
    }

    #[test]
    fn auth_is_offered_only_where_a_password_is_safe() {
        let text = |c: &SinkConfig, tls| String::from_utf8(c.ehlo_reply(tls).to_vec()).unwrap();
        let auth = Some(("u".to_owned(), "p".to_owned()));
        let with_tls = SinkConfig::new("h.test", false, true, auth.clone(), Delays::default());
        assert!(
            text(&with_tls, false).contains("STARTTLS") && !text(&with_tls, false).contains("AUTH")
        );
        assert!(
            text(&with_tls, true).contains("AUTH PLAIN")
                && !text(&with_tls, true).contains("STARTTLS")
        );
        let plain = SinkConfig::new("h.test", false, false, auth, Delays::default());
        assert!(text(&plain, false).contains("AUTH PLAIN"));
    }
}
