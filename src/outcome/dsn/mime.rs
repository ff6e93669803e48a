//! Putting a report together as a message: its RFC 5322 header section, the
//! `multipart/report` body (RFC 6522 §3) with a boundary that occurs in none of its parts,
//! and the third part, the returned original or its header section (RFC 3461 §4.3).

use std::fmt::Write as _;

use memchr::memmem;

use super::line::{clean, Charset, MAX_FIELD};
use super::model::{dsn_recipient, Report};
use super::text::subject;
use crate::clock::rfc5322_date;

/// The whole notification around its first two parts, already built: `notice` (the
/// human-readable part, written in `charset`) and `status` (the `message/delivery-status`
/// part); the returned part comes from `report`. `message_id` and `now_unix` give
/// `Message-ID` and `Date`, as for [`super::build`].
pub(super) fn assemble(
    report: &Report,
    message_id: &str,
    now_unix: u64,
    charset: Charset,
    notice: &str,
    status: &str,
) -> Vec<u8> {
    let (returned_headers, returned) = returned_part(report);
    let boundary = choose_boundary(
        report,
        message_id,
        now_unix,
        &[
            notice.as_bytes(),
            status.as_bytes(),
            returned_headers.as_bytes(),
            returned,
        ],
    );

    let mta = clean(report.reporting_mta, Charset::Ascii, '?', MAX_FIELD);
    let mut head = String::with_capacity(512);
    let _ = write!(head, "Date: {}\r\n", rfc5322_date(now_unix));
    let _ = write!(head, "From: Mail Delivery System <MAILER-DAEMON@{mta}>\r\n");
    match dsn_recipient(report.sender) {
        Some(to) => {
            let _ = write!(head, "To: <{}>\r\n", clean(to, charset, '?', MAX_FIELD));
        }
        // A report for `<>` should not be built (see `dsn_recipient`); an empty group keeps
        // the header section valid (RFC 5322 §3.4) if it is.
        None => head.push_str("To: undisclosed-recipients:;\r\n"),
    }
    let _ = write!(head, "Subject: {}\r\n", subject(report));
    let mid = clean(message_id.trim(), Charset::Ascii, '?', MAX_FIELD);
    if mid.starts_with('<') && mid.ends_with('>') {
        let _ = write!(head, "Message-ID: {mid}\r\n");
    } else {
        let _ = write!(head, "Message-ID: <{mid}>\r\n");
    }
    // RFC 3834 §5: an automatic response to a message; well-behaved auto-responders and
    // vacation programs must not answer it.
    head.push_str("Auto-Submitted: auto-replied\r\n");
    head.push_str("MIME-Version: 1.0\r\n");
    let _ = write!(
        head,
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{boundary}\"\r\n"
    );
    // RFC 2045 §6.4: a multipart entity must not claim 7bit when a part inside is 8bit.
    let notice_8bit = !notice.is_ascii();
    if notice_8bit || !returned.is_ascii() {
        head.push_str("Content-Transfer-Encoding: 8bit\r\n");
    }
    head.push_str("\r\n");
    // The preamble is for readers without MIME (RFC 2046 §5.1.1).
    head.push_str("This is a MIME-encapsulated message.\r\n");

    let mut out = Vec::with_capacity(
        head.len() + notice.len() + status.len() + returned_headers.len() + returned.len() + 512,
    );
    out.extend_from_slice(head.as_bytes());

    // Each delimiter's leading CRLF belongs to the delimiter, not to the part before it
    // (RFC 2046 §5.1.1), so every part's content is exactly what was built.
    let _ = write!(Sink(&mut out), "\r\n--{boundary}\r\n");
    out.extend_from_slice(b"Content-Description: Notification\r\n");
    if notice_8bit {
        out.extend_from_slice(
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n",
        );
    } else {
        out.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(notice.as_bytes());

    let _ = write!(Sink(&mut out), "\r\n--{boundary}\r\n");
    out.extend_from_slice(b"Content-Description: Delivery report\r\n");
    out.extend_from_slice(b"Content-Type: message/delivery-status\r\n\r\n");
    out.extend_from_slice(status.as_bytes());

    let _ = write!(Sink(&mut out), "\r\n--{boundary}\r\n");
    out.extend_from_slice(returned_headers.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(returned);

    let _ = write!(Sink(&mut out), "\r\n--{boundary}--\r\n");
    out
}

/// Part 3: its MIME header lines and the content returned (RFC 3461 §4.3).
fn returned_part<'a>(report: &Report<'a>) -> (String, &'a [u8]) {
    let (description, content_type, content) = if report.return_full {
        ("Undelivered Message", "message/rfc822", report.original)
    } else {
        (
            "Undelivered Message Headers",
            "text/rfc822-headers",
            header_section(report.original),
        )
    };
    let mut h = format!("Content-Description: {description}\r\nContent-Type: {content_type}\r\n");
    // message/rfc822 allows only 7bit, 8bit or binary (RFC 2046 §5.2.1); the content is
    // returned as it was received, so 8-bit data is labelled rather than re-encoded.
    if !content.is_ascii() {
        h.push_str("Content-Transfer-Encoding: 8bit\r\n");
    }
    (h, content)
}

/// The header section of a message: everything up to and including the CRLF that ends the
/// last header line (RFC 5322 §2.1), or the whole message when it has no body.
fn header_section(message: &[u8]) -> &[u8] {
    if message.starts_with(b"\r\n") {
        return &[];
    }
    match memmem::find(message, b"\r\n\r\n") {
        Some(at) => &message[..at + 2],
        None => message,
    }
}

/// A boundary that occurs in none of `parts` (RFC 2046 §5.1.1).
///
/// The candidate is the queue id plus 64 bits from a hash of the queue id, message id,
/// time and content length: distinct per report, and unlikely to be in any message by
/// chance. Each candidate is still checked, and the next one is taken on a hit. The loop
/// ends: candidates are distinct strings of one length, so content of n octets can hold at
/// most n of them.
fn choose_boundary(report: &Report, message_id: &str, now_unix: u64, parts: &[&[u8]]) -> String {
    let qid: String = report
        .queue_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(32)
        .collect();
    let mut state = fnv1a(report.queue_id.as_bytes())
        ^ fnv1a(message_id.as_bytes()).rotate_left(21)
        ^ now_unix.rotate_left(42)
        ^ report.original.len() as u64;
    loop {
        state = crate::queue::retry::splitmix(state);
        // Only bchars (RFC 2046 §5.1.1), at most 56 of the 70 allowed; '/' needs the quotes
        // the Content-Type line puts around it.
        let candidate = format!("{qid}.{state:016x}/pigeon");
        if parts
            .iter()
            .all(|p| memmem::find(p, candidate.as_bytes()).is_none())
        {
            return candidate;
        }
    }
}

/// FNV-1a, 64-bit: a small, fixed hash for the boundary seed (not for security: the
/// boundary is checked against the content anyway).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `fmt::Write` into a byte vector, so `write!` can append boundary lines to the output.
struct Sink<'v>(&'v mut Vec<u8>);

impl std::fmt::Write for Sink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::build;
    use super::super::fixtures::{assert_well_formed, boundary_of, failed, report, text};
    use super::*;

    #[test]
    fn ret_full_returns_the_whole_8bit_original_and_labels_it() {
        let original = "Subject: Grüße\r\n\r\nżółw\r\n".as_bytes();
        let mut rep = report(vec![failed("b@rcpt.example", "550 no")], original);
        rep.return_full = true;
        let out = build(&rep, "<x@y>", 0);
        let msg = String::from_utf8(out).unwrap();
        assert_well_formed(&msg);
        let b = boundary_of(&msg).to_string();
        assert!(msg.contains(&format!(
            "Content-Description: Undelivered Message\r\nContent-Type: message/rfc822\r\n\
             Content-Transfer-Encoding: 8bit\r\n\r\n\
             Subject: Grüße\r\n\r\nżółw\r\n\r\n--{b}--\r\n"
        )));
        // The top level says 8bit too (RFC 2045 §6.4).
        let head = &msg[..msg.find("\r\n\r\n").unwrap()];
        assert!(head.contains("\r\nContent-Transfer-Encoding: 8bit"));
    }

    #[test]
    fn boundary_avoids_content_that_contains_it() {
        // The seed depends on the content's length, not its bytes: fill a placeholder of
        // the boundary's length with the boundary chosen for it, and the first candidate
        // is now inside the content.
        let mid = "<0A1B2C3D.dsn@mail.pigeon.example>";
        let placeholder = format!("Subject: Hello\r\n\r\n{}\r\n", "#".repeat(32));
        let mut rep = report(
            vec![failed("b@rcpt.example", "550 no")],
            placeholder.as_bytes(),
        );
        rep.return_full = true;
        let first = boundary_of(&text(&rep)).to_string();
        assert_eq!(first.len(), 32);
        let hostile = placeholder.replace(&"#".repeat(32), &first);
        rep.original = hostile.as_bytes();
        let msg = text(&rep);
        let second = boundary_of(&msg);
        assert_ne!(first, second);
        assert!(!hostile.contains(second));
        assert_well_formed(&msg);
        // The check itself, on any part.
        let parts: [&[u8]; 1] = [second.as_bytes()];
        assert_ne!(choose_boundary(&rep, mid, 1_795_899_900, &parts), second);
    }

    #[test]
    fn header_section_stops_at_the_blank_line() {
        assert_eq!(
            header_section(b"A: 1\r\nB: 2\r\n\r\nbody\r\n"),
            b"A: 1\r\nB: 2\r\n"
        );
        assert_eq!(header_section(b"A: 1\r\n"), b"A: 1\r\n");
        assert_eq!(header_section(b"\r\nbody only\r\n"), b"");
        assert_eq!(header_section(b""), b"");
    }
}
