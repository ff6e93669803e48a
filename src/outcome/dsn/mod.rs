//! Delivery status notifications (RFC 3464): the bounce or delay notice pigeon sends to a
//! message's envelope sender when delivery to some of its recipients failed or is late.
//!
//! # Input and output
//!
//! [`build`] takes a [`Report`] (facts about the message plus one [`RecipientReport`] per
//! recipient to report on) and returns the whole notification: an RFC 5322 header section
//! and a `multipart/report` body (RFC 6522 §3) whose three parts are, in order,
//!
//! 1. `text/plain`: what happened, for a person;
//! 2. `message/delivery-status` (RFC 3464 §2.1): the per-message fields, then one group of
//!    per-recipient fields for each recipient, each group after a blank line;
//! 3. the original: `message/rfc822` when the sender asked for `RET=FULL`, otherwise
//!    `text/rfc822-headers` with its header section only (RFC 3461 §4.3, RFC 6522 §4).
//!
//! [`dsn_recipient`] gives the envelope: a DSN goes from the null reverse-path to the
//! original sender, and a message from the null reverse-path gets no DSN at all.
//!
//! # Invariants
//!
//! - CRLF line endings throughout, no line over 998 octets (RFC 5322 §2.1.1): long
//!   diagnostics are folded, and over-long single tokens are cut. The output is not
//!   dot-stuffed; the sender of the DSN does that like for any other message.
//! - Text from the network (addresses, a remote server's reply, ENVID, ORCPT) never brings a
//!   CR, LF or other control character into the output: each is replaced before it is
//!   written, so a remote server cannot add header fields or MIME parts to our report.
//! - The MIME boundary occurs in none of the parts it separates (RFC 2046 §5.1.1).
//! - The report is 7-bit unless the returned original is 8-bit or an address is UTF-8; then
//!   the parts carrying 8-bit data and the top level say `Content-Transfer-Encoding: 8bit`
//!   (RFC 2045 §6.4, RFC 2046 §5.2.1), and the caller must send it with `BODY=8BITMIME`
//!   (RFC 6152), or `SMTPUTF8` (RFC 6531) when an address is UTF-8.
//!
//! Pure code: no I/O and no clock (`now_unix` is an argument). Nothing here panics.
//!
//! # Layout
//!
//! - `model`: what a report says ([`Report`], [`RecipientReport`], [`Action`]) and who
//!   gets one ([`dsn_recipient`]);
//! - `text`: part 1, the human-readable notice, and the subject;
//! - `status`: part 2, the RFC 3464 fields;
//! - `mime`: the header section, the `multipart/report` assembly and part 3;
//! - `line`: cleaning network text and folding lines, for all of them.

mod line;
mod mime;
mod model;
mod status;
mod text;

#[cfg(test)]
mod fixtures;

pub use model::{dsn_recipient, Action, RecipientReport, Report};

use line::Charset;

/// Builds the complete DSN message: RFC 5322 header section and `multipart/report` body,
/// CRLF line endings, not dot-stuffed.
///
/// `message_id` is used for `Message-ID` (e.g. `<QUEUEID.dsn@host>`; angle brackets are
/// added if missing) and `now_unix` for `Date`.
///
/// The subject says failure when any recipient failed, even if others are only delayed: a
/// failure is final and asks the sender to act, while a delay does not, so it is the news
/// that must not be missed in a mailbox listing. The delayed recipients are still listed,
/// each with `Action: delayed`, in both the text and the delivery-status part.
pub fn build(report: &Report, message_id: &str, now_unix: u64) -> Vec<u8> {
    // UTF-8 addresses mean the message came with SMTPUTF8 (RFC 6531), so the report has to
    // go out that way too and may show them as they are (RFC 6532 §3.2). Otherwise every
    // piece of network text is kept to ASCII, so a stray 8-bit byte in a remote reply cannot
    // make the whole report need 8BITMIME.
    let charset =
        if !report.sender.is_ascii() || report.recipients.iter().any(|r| !r.recipient.is_ascii()) {
            Charset::Utf8
        } else {
            Charset::Ascii
        };
    let notice = text::notification(report, charset);
    let status = status::delivery_status(report);
    mime::assemble(report, message_id, now_unix, charset, &notice, &status)
}

#[cfg(test)]
mod tests {
    use super::fixtures::{assert_well_formed, boundary_of, failed, report, text, ORIGINAL};

    #[test]
    fn failed_report_has_the_three_parts_in_order() {
        let msg = text(&report(
            vec![failed("b@rcpt.example", "550 5.1.1 user unknown")],
            ORIGINAL,
        ));
        assert_well_formed(&msg);
        assert!(msg.contains("\r\nSubject: Undelivered Mail Returned to Sender\r\n"));
        assert!(
            msg.contains("\r\nFrom: Mail Delivery System <MAILER-DAEMON@mail.pigeon.example>\r\n")
        );
        assert!(msg.contains("\r\nTo: <a@sender.example>\r\n"));
        assert!(msg.contains("\r\nAuto-Submitted: auto-replied\r\n"));
        assert!(msg.starts_with("Date: Sat, 28 Nov 2026 21:05:00 +0000\r\n"));
        let b = boundary_of(&msg);
        assert!(b.starts_with("0A1B2C3D."));
        let delim = format!("\r\n--{b}\r\n");
        let parts: Vec<&str> = msg.split(&delim).collect();
        assert_eq!(parts.len(), 4, "{msg}");
        assert!(parts[1].contains("Content-Type: text/plain; charset=us-ascii\r\n"));
        assert!(parts[1]
            .contains("<b@rcpt.example>: host mx.rcpt.example said: 550 5.1.1 user unknown\r\n"));
        assert!(parts[2].starts_with(
            "Content-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n\
             Reporting-MTA: dns; mail.pigeon.example\r\n\
             Arrival-Date: Sat, 28 Nov 2026 20:50:00 +0000\r\n\
             X-Pigeon-Queue-ID: 0A1B2C3D\r\n\
             \r\n\
             Final-Recipient: rfc822; b@rcpt.example\r\n\
             Action: failed\r\n\
             Status: 5.1.1\r\n\
             Remote-MTA: dns; mx.rcpt.example\r\n\
             Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\
             Last-Attempt-Date: Sat, 28 Nov 2026 21:04:25 +0000\r\n"
        ));
        assert_eq!(
            parts[3],
            format!(
                "Content-Description: Undelivered Message Headers\r\n\
                 Content-Type: text/rfc822-headers\r\n\r\n\
                 From: a@sender.example\r\nTo: b@rcpt.example\r\nSubject: Hello\r\n\
                 \r\n--{b}--\r\n"
            )
        );
        assert!(!msg.contains("Content-Transfer-Encoding"));
    }

    #[test]
    fn injection_in_diagnostic_and_addresses_stays_in_its_field() {
        let mut r = failed(
            "b@rcpt.example\r\nBcc: evil@x",
            "550 x\r\nBcc: evil@x\r\n\r\n--fake\r\nContent-Type: text/html",
        );
        r.remote_mta = Some("mx\r\nBcc: evil@x");
        r.original_recipient = Some("rfc822;b+0D+0ABcc:+20evil@x");
        let mut rep = report(vec![r], ORIGINAL);
        rep.envelope_id = Some("id+0D+0ABcc:+20evil@x");
        rep.sender = "a@sender.example\nBcc: evil@x";
        rep.reporting_mta = "host\rBcc: evil@x";
        let msg = text(&rep);
        assert_well_formed(&msg);
        for line in msg.split("\r\n") {
            assert!(!line.to_ascii_lowercase().starts_with("bcc"), "{line:?}");
            assert!(!line.starts_with("--fake"), "{line:?}");
        }
        assert!(msg.contains("Diagnostic-Code: smtp; 550 x Bcc: evil@x --fake Content-Type:"));
        assert!(msg.contains("Original-Recipient: rfc822; b??Bcc: evil@x\r\n"));
    }

    #[test]
    fn non_ascii_diagnostic_alone_keeps_the_report_7bit() {
        let msg = text(&report(
            vec![failed("b@rcpt.example", "550 usuário desconhecido")],
            ORIGINAL,
        ));
        assert!(msg.is_ascii());
        assert!(msg.contains("550 usu?rio desconhecido"));
    }
}
