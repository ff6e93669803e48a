//! SMTP replies: a reply code, an enhanced status code (RFC 3463) and text.
//!
//! Every reply pigeon sends is built here, so the codes live in one place (as OpenSMTPD's
//! `esc.c` does) and every error type maps to a [`Reply`] instead of a string.

use std::borrow::Cow;
use std::fmt;

/// An enhanced status code, `class.subject.detail` (RFC 3463 §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enhanced(pub u8, pub u16, pub u16);

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One SMTP reply, possibly multi-line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code (RFC 5321 §4.2).
    pub code: u16,
    /// The enhanced status code, absent on the greeting, EHLO/HELO and 354 replies
    /// (RFC 2034 §3 exempts them).
    pub enhanced: Option<Enhanced>,
    /// One entry per line of text.
    pub lines: Vec<Cow<'static, str>>,
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, enhanced: Enhanced, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced status code (greeting, EHLO, 354).
    pub fn plain(code: u16, lines: Vec<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            enhanced: None,
            lines,
        }
    }

    /// True for 4xx and 5xx replies.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Appends the wire form (`code-text` lines, the last with a space, CRLF) to `out`.
    ///
    /// ```
    /// use pigeon::smtp::reply::replies;
    ///
    /// let mut out = Vec::new();
    /// replies::too_many_recipients().write_to(&mut out);
    /// assert_eq!(out, b"452 4.5.3 Too many recipients\r\n");
    /// ```
    pub fn write_to(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            // Writing into a Vec cannot fail.
            let _ = match self.enhanced {
                Some(e) => write!(out, "{}{}{} {}\r\n", self.code, sep, e, line),
                None => write!(out, "{}{}{}\r\n", self.code, sep, line),
            };
        }
        if self.lines.is_empty() {
            let _ = write!(out, "{}\r\n", self.code);
        }
    }

    /// The wire form as a string (for logs and tests).
    pub fn to_wire_string(&self) -> String {
        let mut out = Vec::new();
        self.write_to(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {}", e)?;
        }
        for line in &self.lines {
            write!(f, " {}", line)?;
        }
        Ok(())
    }
}

/// The replies pigeon sends, by name. Codes follow RFC 5321 §4.2.2 and RFC 3463 / RFC 5248.
pub mod replies {
    use super::{Enhanced, Reply};

    /// 250 2.0.0 for NOOP and RSET.
    pub fn ok() -> Reply {
        Reply::new(250, Enhanced(2, 0, 0), "Ok")
    }
    /// 250 2.1.0 for an accepted MAIL.
    pub fn sender_ok() -> Reply {
        Reply::new(250, Enhanced(2, 1, 0), "Sender ok")
    }
    /// 250 2.1.5 for an accepted RCPT.
    pub fn recipient_ok() -> Reply {
        Reply::new(250, Enhanced(2, 1, 5), "Recipient ok")
    }
    /// 221 2.0.0 for QUIT.
    pub fn bye() -> Reply {
        Reply::new(221, Enhanced(2, 0, 0), "Bye")
    }
    /// 214 2.0.0 for HELP.
    pub fn help() -> Reply {
        Reply::new(
            214,
            Enhanced(2, 0, 0),
            "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY",
        )
    }
    /// 252 2.5.2: VRFY is answered without disclosing anything (RFC 5321 §3.5.3).
    pub fn cannot_vrfy() -> Reply {
        Reply::new(
            252,
            Enhanced(2, 5, 2),
            "Cannot VRFY user, but will accept message and attempt delivery",
        )
    }
    /// 354 after DATA.
    pub fn start_data() -> Reply {
        Reply::plain(354, vec!["End data with <CR><LF>.<CR><LF>".into()])
    }
    /// 250 2.0.0 after a stored message; the id is the one `pigeon queue` shows.
    pub fn queued(id: &str) -> Reply {
        Reply::new(250, Enhanced(2, 0, 0), format!("Ok: queued as {id}"))
    }
    /// 250 2.0.0 after a non-final BDAT chunk.
    pub fn chunk_ok(octets: u64) -> Reply {
        Reply::new(250, Enhanced(2, 0, 0), format!("{octets} octets received"))
    }
    /// 500 5.5.1: a verb we do not know.
    pub fn unknown_command() -> Reply {
        Reply::new(500, Enhanced(5, 5, 1), "Unknown command")
    }
    /// 500 5.5.2: a command line over 512 octets (RFC 5321 §4.5.3.1.4).
    pub fn line_too_long() -> Reply {
        Reply::new(500, Enhanced(5, 5, 2), "Line too long")
    }
    /// 500 5.5.2: a NUL byte in a command line.
    pub fn nul_in_command() -> Reply {
        Reply::new(500, Enhanced(5, 5, 2), "NUL byte in command")
    }
    /// 501 5.5.4: a known verb with bad arguments.
    pub fn syntax(what: &'static str) -> Reply {
        Reply::new(501, Enhanced(5, 5, 4), what)
    }
    /// 501 5.1.3: a recipient address that does not parse.
    pub fn bad_address(what: &'static str) -> Reply {
        Reply::new(501, Enhanced(5, 1, 3), what)
    }
    /// 501 5.1.7: a sender address that does not parse.
    pub fn bad_sender(what: &'static str) -> Reply {
        Reply::new(501, Enhanced(5, 1, 7), what)
    }
    /// 502 5.5.1: a known command that this listener does not offer.
    pub fn not_implemented() -> Reply {
        Reply::new(502, Enhanced(5, 5, 1), "Command not implemented")
    }
    /// 503 5.5.1: a command out of sequence (RFC 5321 §4.1.4).
    pub fn bad_sequence(what: &'static str) -> Reply {
        Reply::new(503, Enhanced(5, 5, 1), what)
    }
    /// 555 5.5.4: an ESMTP parameter we do not know or accept (RFC 5321 §4.1.1.11).
    pub fn bad_parameter(what: &'static str) -> Reply {
        Reply::new(555, Enhanced(5, 5, 4), what)
    }
    /// 553 5.6.7: a non-ASCII address without SMTPUTF8 (RFC 6531 §3.5).
    pub fn utf8_without_smtputf8() -> Reply {
        Reply::new(
            553,
            Enhanced(5, 6, 7),
            "Non-ASCII address requires SMTPUTF8",
        )
    }
    /// 552 5.3.4: over the size limit (RFC 1870 §6.1, RFC 3463).
    pub fn too_big() -> Reply {
        Reply::new(552, Enhanced(5, 3, 4), "Message size exceeds fixed limit")
    }
    /// 452 4.5.3: one recipient too many (RFC 5321 §4.5.3.1.10).
    pub fn too_many_recipients() -> Reply {
        Reply::new(452, Enhanced(4, 5, 3), "Too many recipients")
    }
    /// 554 5.7.1: the client may not relay to this domain.
    pub fn relay_denied() -> Reply {
        Reply::new(554, Enhanced(5, 7, 1), "Relay access denied")
    }
    /// 554 5.6.0: content that would be read differently by another SMTP server.
    pub fn bad_content(why: &'static str) -> Reply {
        Reply::new(554, Enhanced(5, 6, 0), why)
    }
    /// 452 4.3.1: the spool is below its free-space floor.
    pub fn spool_full() -> Reply {
        Reply::new(452, Enhanced(4, 3, 1), "Insufficient system storage")
    }
    /// 451 4.3.0: the message could not be made durable.
    pub fn local_error() -> Reply {
        Reply::new(451, Enhanced(4, 3, 0), "Local error in processing")
    }
    /// 421 4.4.2: a read timed out.
    pub fn timeout() -> Reply {
        Reply::new(
            421,
            Enhanced(4, 4, 2),
            "Timeout exceeded, closing connection",
        )
    }
    /// 421 4.7.0: too many errors in one session.
    pub fn too_many_errors() -> Reply {
        Reply::new(
            421,
            Enhanced(4, 7, 0),
            "Too many errors, closing connection",
        )
    }
    /// 421 4.3.2: the server is shutting down.
    pub fn shutting_down() -> Reply {
        Reply::new(
            421,
            Enhanced(4, 3, 2),
            "Service shutting down, closing connection",
        )
    }

    // SMTP AUTH (RFC 4954 §6, RFC 5248).

    /// 235 2.7.0: the client is authenticated.
    pub fn auth_ok() -> Reply {
        Reply::new(235, Enhanced(2, 7, 0), "Authentication successful")
    }
    /// 334 with a base64 challenge (empty for PLAIN without an initial response).
    pub fn auth_challenge(base64: &'static str) -> Reply {
        Reply::plain(334, vec![base64.into()])
    }
    /// 535 5.7.8: wrong user name or password.
    pub fn auth_failed() -> Reply {
        Reply::new(535, Enhanced(5, 7, 8), "Authentication credentials invalid")
    }
    /// 538 5.7.11: AUTH before TLS.
    pub fn auth_needs_tls() -> Reply {
        Reply::new(
            538,
            Enhanced(5, 7, 11),
            "Encryption required for requested authentication mechanism",
        )
    }
    /// 530 5.7.0: MAIL on a submission listener before AUTH.
    pub fn auth_required() -> Reply {
        Reply::new(530, Enhanced(5, 7, 0), "Authentication required")
    }
    /// 504 5.5.4: a SASL mechanism we do not offer.
    pub fn auth_unknown_mechanism() -> Reply {
        Reply::new(504, Enhanced(5, 5, 4), "Unrecognized authentication type")
    }
    /// 501 5.0.0: the client cancelled the exchange with `*`.
    pub fn auth_cancelled() -> Reply {
        Reply::new(501, Enhanced(5, 0, 0), "Authentication cancelled")
    }
    /// 501 5.5.2: a response that is not base64, or not a valid SASL message.
    pub fn auth_malformed(what: &'static str) -> Reply {
        Reply::new(501, Enhanced(5, 5, 2), what)
    }
    /// 454 4.7.0: too many failures from this client or for this user; the connection
    /// closes after it.
    pub fn auth_blocked() -> Reply {
        Reply::new(454, Enhanced(4, 7, 0), "Too many failed authentications")
    }
    /// 553 5.7.1: MAIL FROM is not the authenticated user's address.
    pub fn sender_not_owned() -> Reply {
        Reply::new(553, Enhanced(5, 7, 1), "Sender address not owned by user")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiline_wire_form_uses_dash_then_space() {
        let r = Reply::plain(250, vec!["a".into(), "b".into(), "c".into()]);
        assert_eq!(r.to_wire_string(), "250-a\r\n250-b\r\n250 c\r\n");
    }

    #[test]
    fn enhanced_code_precedes_text() {
        assert_eq!(
            replies::too_big().to_wire_string(),
            "552 5.3.4 Message size exceeds fixed limit\r\n"
        );
    }
}
