//! What a delivery status notification is about: the facts of the message ([`Report`]),
//! one entry per recipient reported on ([`RecipientReport`]) with what was done about it
//! ([`Action`]), and who receives the notice at all ([`dsn_recipient`]).

use crate::smtp::reply::Enhanced;

/// What the reporting MTA did about one recipient: the `Action` field (RFC 3464 §2.3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Delivery was abandoned (a permanent failure, or retries ran out); no further DSN
    /// follows for this recipient.
    Failed,
    /// Not delivered yet; pigeon keeps trying, and a later DSN may follow.
    Delayed,
    /// Handed to a next hop that does not offer DSN, for a recipient that asked to hear
    /// of success (RFC 3461 §6.2.7: no further notice can follow).
    Relayed,
}

impl Action {
    /// The `action-value` as written in the `Action:` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Relayed => "relayed",
        }
    }
}

/// One recipient's entry in a report: one group of per-recipient fields (RFC 3464 §2.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientReport<'a> {
    /// The envelope recipient as pigeon accepted it; `Final-Recipient: rfc822; …`
    /// (§2.3.2: reported exactly, case preserved).
    pub recipient: &'a str,
    /// The ORCPT parameter as sent with RCPT, `addr-type;xtext` (RFC 3461 §4.2), e.g.
    /// `rfc822;a+2Bb@example.org`. It is xtext-decoded into `Original-Recipient`, which
    /// RFC 3461 §6.3 (d) requires when ORCPT was given and forbids otherwise.
    pub original_recipient: Option<&'a str>,
    /// What pigeon did.
    pub action: Action,
    /// The enhanced status code (RFC 3463), e.g. `Enhanced(5, 1, 1)`.
    pub status: Enhanced,
    /// The host that gave the reply, written as `Remote-MTA: dns; host`. `None` when no
    /// remote MTA was involved (no MX, connection refused): §2.3.5 then forbids the field,
    /// and a `Diagnostic-Code` without it reads as pigeon's own (§2.3.6).
    pub remote_mta: Option<&'a str>,
    /// The SMTP reply as received, e.g. `550 5.1.1 user unknown`; lines of a multi-line
    /// reply may be joined by CRLF, which is flattened to spaces.
    pub diagnostic: Option<&'a str>,
    /// When pigeon last tried (§2.3.7).
    pub last_attempt_unix: Option<u64>,
    /// When pigeon will give up; written only for [`Action::Delayed`], since §2.3.9 forbids
    /// `Will-Retry-Until` in other DSNs.
    pub will_retry_until_unix: Option<u64>,
}

/// Everything one DSN says: the message's facts and the recipients it reports on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report<'a> {
    /// Our host name: `Reporting-MTA: dns; …` and the `From:` domain.
    pub reporting_mta: &'a str,
    /// The ENVID parameter as sent with MAIL (xtext, RFC 3461 §4.4); decoded into
    /// `Original-Envelope-Id`, which §6.3 (a) requires when ENVID was given.
    pub envelope_id: Option<&'a str>,
    /// When pigeon accepted the message (`Arrival-Date`, RFC 3464 §2.2.5).
    pub arrival_unix: u64,
    /// The spool's id for the message, for operators (`X-Pigeon-Queue-ID`, an extension
    /// field as §2.4 (c) suggests, like Postfix's `X-Postfix-Queue-ID`).
    pub queue_id: &'a str,
    /// The original envelope sender; the DSN's `To:`. Check [`dsn_recipient`] first: a
    /// message from `<>` gets no DSN.
    pub sender: &'a str,
    /// The recipients to report on, in order; those not listed are not mentioned.
    pub recipients: Vec<RecipientReport<'a>>,
    /// The original message content: CRLF line endings, not dot-stuffed.
    pub original: &'a [u8],
    /// RET=FULL: return the whole original as `message/rfc822`. Otherwise (RET=HDRS or no
    /// RET) return only its header section as `text/rfc822-headers`; RFC 3461 §4.3 leaves
    /// the choice to the MTA without RET, and headers identify the message without sending
    /// a possibly large body back across the network.
    pub return_full: bool,
}

/// The envelope recipient for a DSN about a message from `original_sender`, or `None` when
/// that is the null reverse-path (`""` or `"<>"`).
///
/// The DSN itself is sent from the null reverse-path, `MAIL FROM:<>` (RFC 5321 §4.5.5,
/// RFC 3461 §6.1), so that a DSN about the DSN is never generated; for the same reason a
/// message from `<>` (often itself a DSN) is never answered: bounce loops end here.
/// Surrounding angle brackets are removed.
pub fn dsn_recipient(original_sender: &str) -> Option<&str> {
    let s = original_sender.trim();
    let s = s
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(s)
        .trim();
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_sender_gets_no_dsn() {
        assert_eq!(dsn_recipient(""), None);
        assert_eq!(dsn_recipient("<>"), None);
        assert_eq!(dsn_recipient(" <> "), None);
        assert_eq!(dsn_recipient("a@b.example"), Some("a@b.example"));
        assert_eq!(dsn_recipient("<a@b.example>"), Some("a@b.example"));
    }
}
