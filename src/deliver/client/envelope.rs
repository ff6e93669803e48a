//! One message as the client offers it, the [`Envelope`], and what follows from it alone
//! against the server's extensions: the local refusals decided before anything is sent (of
//! the whole message, or of one recipient whose address cannot be written) and the ESMTP
//! parameters of MAIL.
//!
//! What the client refuses itself: a message over the server's SIZE (RFC 1870 §6.1, 552
//! 5.3.4), 8-bit content to a server without 8BITMIME (554 5.6.3: pigeon does not downgrade
//! to 7 bit, RFC 6152 §3 lets it return the message instead), an internationalised message
//! to a server without SMTPUTF8 (553 5.6.7, RFC 6531 §3.2), and an address with control
//! characters (501), which would break the command line.

use crate::deliver::client::extensions::Extensions;
use crate::smtp::reply::{Enhanced, Reply};

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

impl Envelope {
    /// The reply every recipient gets when the server cannot take this message as it is,
    /// decided before anything is sent.
    pub(super) fn local_refusal(&self, ext: &Extensions) -> Option<Reply> {
        if !is_safe_path(&self.sender) {
            return Some(Reply::new(
                501,
                Enhanced(5, 1, 7),
                "Sender address not writable",
            ));
        }
        if self.needs_smtputf8() && !ext.smtputf8 {
            return Some(Reply::new(
                553,
                Enhanced(5, 6, 7),
                "Message needs SMTPUTF8, which the server does not offer",
            ));
        }
        if self.needs_8bit && !ext.eight_bit_mime {
            // No downgrade to 7 bit (RFC 6152 §3 allows returning the message instead):
            // re-encoding would break DKIM signatures made at acceptance.
            return Some(Reply::new(
                554,
                Enhanced(5, 6, 3),
                "Conversion required but not supported: the server does not offer 8BITMIME",
            ));
        }
        match ext.size {
            Some(limit) if limit > 0 && self.size > limit => Some(Reply::new(
                552,
                Enhanced(5, 3, 4),
                format!("Message size exceeds the server's fixed limit of {limit} octets"),
            )),
            _ => None,
        }
    }

    /// Per recipient, the reply that refuses it before any RCPT is written, if any.
    ///
    /// Addresses go into command lines verbatim: one with a CR or LF would inject commands,
    /// so it is refused here (defence in depth; the spool only holds parsed addresses).
    pub(super) fn recipient_refusals(&self) -> Vec<Option<Reply>> {
        self.recipients
            .iter()
            .map(|r| {
                (!is_safe_path(r))
                    .then(|| Reply::new(501, Enhanced(5, 1, 3), "Recipient address not writable"))
            })
            .collect()
    }

    /// The ESMTP parameters of MAIL for this envelope and this server, with a leading space
    /// each.
    pub(super) fn mail_params(&self, ext: &Extensions) -> String {
        let mut params = String::new();
        if ext.size.is_some() {
            params.push_str(&format!(" SIZE={}", self.size));
        }
        if self.needs_8bit {
            params.push_str(" BODY=8BITMIME");
        }
        if self.needs_smtputf8() {
            params.push_str(" SMTPUTF8");
        }
        if ext.dsn && !self.mail_dsn.is_empty() {
            params.push(' ');
            params.push_str(&self.mail_dsn);
        }
        params
    }

    /// RFC 6531 §3.2: the message needs SMTPUTF8 when asked, or when an address is not
    /// ASCII.
    fn needs_smtputf8(&self) -> bool {
        self.needs_smtputf8
            || !self.sender.is_ascii()
            || self.recipients.iter().any(|r| !r.is_ascii())
    }
}

/// True when `path` can be written between angle brackets on a command line: no control
/// characters (RFC 5321 §4.1.2 allows none in a path), so no CR or LF to end the line early.
fn is_safe_path(path: &str) -> bool {
    !path.bytes().any(|b| b < 0x20 || b == 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::client::machine::{Client, ClientConfig, ClientEvent, StartTls};

    fn client() -> Client {
        Client::new(ClientConfig {
            helo_name: "c.test".into(),
            starttls: StartTls::Never,
        })
    }

    #[test]
    fn size_without_limit_sends_the_parameter_but_refuses_nothing() {
        let mut c = client();
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
        let mut c = client();
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
