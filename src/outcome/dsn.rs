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

use std::fmt::Write as _;

use memchr::memmem;

use crate::clock::rfc5322_date;
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
    let notice = notification(report, charset);
    let status = delivery_status(report);
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
    let subject = if report.recipients.iter().any(|r| r.action == Action::Failed) {
        SUBJECT_FAILED
    } else if report
        .recipients
        .iter()
        .any(|r| r.action == Action::Delayed)
    {
        SUBJECT_DELAYED
    } else {
        SUBJECT_RELAYED
    };
    let _ = write!(head, "Subject: {subject}\r\n");
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

/// Subject when at least one recipient failed.
const SUBJECT_FAILED: &str = "Undelivered Mail Returned to Sender";
/// Subject when every recipient reported on is only delayed.
const SUBJECT_DELAYED: &str = "Delayed Mail (still being retried)";

/// Subject of a report that only tells of successful relaying.
const SUBJECT_RELAYED: &str = "Successful Mail Delivery Report";

/// Lines are folded before this column where they can be (RFC 5322 §2.1.1: SHOULD be no
/// more than 78 characters).
const WRAP: usize = 78;
/// A single token longer than this is cut into pieces so that no line can reach the hard
/// limit of 998 octets (RFC 5322 §2.1.1, RFC 5321 §4.5.3.1.6): the longest lead is a field
/// name (under 30) or the 4-space continuation indent.
const MAX_WORD: usize = 500;
/// Cap on one unfolded value (an address, a host name, an id); with its field name it
/// stays under 998 octets.
const MAX_FIELD: usize = 900;
/// Cap on a diagnostic: a hostile server's reply cannot make our report large.
const MAX_DIAGNOSTIC: usize = 4096;

/// Which characters network text may keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Charset {
    /// Printable ASCII and space only.
    Ascii,
    /// Also non-ASCII characters that are not controls or line separators.
    Utf8,
}

/// Part 1: the human-readable explanation (RFC 6522 §3, first part).
fn notification(report: &Report, charset: Charset) -> String {
    let mut t = String::with_capacity(1024);
    let mta = clean(report.reporting_mta, Charset::Ascii, '?', MAX_FIELD);
    fold(
        &mut t,
        "",
        &format!("This is the mail system at host {mta}."),
    );
    t.push_str("\r\n");
    let failed = report
        .recipients
        .iter()
        .filter(|r| r.action == Action::Failed);
    let delayed = report
        .recipients
        .iter()
        .filter(|r| r.action == Action::Delayed);
    if failed.clone().next().is_some() {
        fold(
            &mut t,
            "",
            "Your message could not be delivered to the recipients below. Delivery to them \
             has been abandoned.",
        );
        t.push_str("\r\n");
        for r in failed {
            recipient_line(&mut t, r, charset);
        }
        t.push_str("\r\n");
    }
    let relayed = report
        .recipients
        .iter()
        .filter(|r| r.action == Action::Relayed);
    if relayed.clone().next().is_some() {
        fold(
            &mut t,
            "",
            "Your message was relayed to the recipients below, as you asked to be told. The \
             next mail system does not report delivery status, so no further notice will \
             follow.",
        );
        t.push_str("\r\n");
        for r in relayed {
            recipient_line(&mut t, r, charset);
        }
        t.push_str("\r\n");
    }
    if delayed.clone().next().is_some() {
        fold(
            &mut t,
            "",
            "Your message has not yet been delivered to the recipients below. The mail \
             system will keep trying; you do not need to send it again.",
        );
        t.push_str("\r\n");
        for r in delayed {
            recipient_line(&mut t, r, charset);
        }
        t.push_str("\r\n");
    }
    let qid = clean(report.queue_id, Charset::Ascii, '?', MAX_FIELD);
    let attached = if report.return_full {
        "The message is attached below."
    } else {
        "Its header section is attached below."
    };
    fold(
        &mut t,
        "",
        &format!(
            "The message arrived on {} and has queue id {qid}. {attached}",
            rfc5322_date(report.arrival_unix)
        ),
    );
    t
}

/// One recipient in the human-readable part: address, who said what, and for a delay how
/// long pigeon keeps trying.
fn recipient_line(t: &mut String, r: &RecipientReport, charset: Charset) {
    let mut line = format!("<{}>:", clean(r.recipient, charset, '?', MAX_FIELD));
    let diagnostic = r.diagnostic.map(|d| clean(d, charset, ' ', MAX_DIAGNOSTIC));
    match (r.remote_mta, diagnostic) {
        (Some(host), Some(diag)) => {
            let host = clean(host, Charset::Ascii, '?', MAX_FIELD);
            let _ = write!(line, " host {host} said: {diag}");
        }
        (None, Some(diag)) => {
            let _ = write!(line, " {diag}");
        }
        (_, None) => {
            let _ = write!(line, " status {}", r.status);
        }
    }
    if let (Action::Delayed, Some(until)) = (r.action, r.will_retry_until_unix) {
        let _ = write!(line, " (will keep trying until {})", rfc5322_date(until));
    }
    fold(t, "", &line);
}

/// Part 2: the `message/delivery-status` content (RFC 3464 §2.1): per-message fields, then
/// for each recipient a blank line and its per-recipient fields, in the order of the ABNF.
/// Every value is 7-bit: this media type carries US-ASCII only (RFC 6533 added
/// `message/global-delivery-status` for anything else).
fn delivery_status(report: &Report) -> String {
    let mut s = String::with_capacity(256 + 256 * report.recipients.len());
    // §2.2: [Original-Envelope-Id] Reporting-MTA [DSN-Gateway] [Received-From-MTA]
    // [Arrival-Date] *extension-field.
    if let Some(envid) = report.envelope_id {
        // RFC 3461 §6.3 (a): the ENVID, decoded from xtext; §2.2.1: case preserved.
        let envid = clean(&xtext_decode(envid), Charset::Ascii, '?', MAX_FIELD);
        let _ = write!(s, "Original-Envelope-Id: {envid}\r\n");
    }
    let mta = clean(report.reporting_mta, Charset::Ascii, '?', MAX_FIELD);
    let _ = write!(s, "Reporting-MTA: dns; {mta}\r\n");
    let _ = write!(s, "Arrival-Date: {}\r\n", rfc5322_date(report.arrival_unix));
    let qid = clean(report.queue_id, Charset::Ascii, '?', MAX_FIELD);
    let _ = write!(s, "X-Pigeon-Queue-ID: {qid}\r\n");

    for r in &report.recipients {
        s.push_str("\r\n");
        // §2.3: [Original-Recipient] Final-Recipient Action Status [Remote-MTA]
        // [Diagnostic-Code] [Last-Attempt-Date] [Final-Log-ID] [Will-Retry-Until].
        if let Some(orcpt) = r.original_recipient.and_then(original_recipient) {
            let _ = write!(s, "Original-Recipient: {orcpt}\r\n");
        }
        let _ = write!(
            s,
            "Final-Recipient: {}\r\n",
            typed_address("rfc822", r.recipient)
        );
        let _ = write!(s, "Action: {}\r\n", r.action.as_str());
        let _ = write!(s, "Status: {}\r\n", r.status);
        if let Some(host) = r.remote_mta {
            let host = clean(host, Charset::Ascii, '?', MAX_FIELD);
            let _ = write!(s, "Remote-MTA: dns; {host}\r\n");
        }
        if let Some(diag) = r.diagnostic {
            // §2.3.6: diagnostic-type "smtp" and the reply text; folded like a header
            // field, since the DSN fields follow RFC 822 header syntax (§2.1.1).
            let diag = clean(diag, Charset::Ascii, ' ', MAX_DIAGNOSTIC);
            fold(&mut s, "Diagnostic-Code:", &format!("smtp; {diag}"));
        }
        if let Some(at) = r.last_attempt_unix {
            let _ = write!(s, "Last-Attempt-Date: {}\r\n", rfc5322_date(at));
        }
        if let (Action::Delayed, Some(until)) = (r.action, r.will_retry_until_unix) {
            let _ = write!(s, "Will-Retry-Until: {}\r\n", rfc5322_date(until));
        }
    }
    s
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

/// The `Original-Recipient` value from an ORCPT parameter `addr-type;xtext`
/// (RFC 3461 §4.2, §6.3 (d)), or `None` if it has no `;`.
fn original_recipient(orcpt: &str) -> Option<String> {
    let (addr_type, xtext) = orcpt.split_once(';')?;
    let addr_type = addr_type.trim();
    // An address-type is an atom naming a registered type (RFC 3464 §2.3.1); anything else
    // is reported as "unknown", the value §2.3.1 gives for a type that cannot be determined.
    let addr_type = if !addr_type.is_empty()
        && addr_type.len() <= 32
        && addr_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        addr_type
    } else {
        "unknown"
    };
    Some(typed_address(addr_type, &xtext_decode(xtext.trim())))
}

/// `address-type "; " generic-address` for a recipient field (RFC 3464 §2.3.1, §2.3.2).
///
/// §2.3.2: the address is reported exactly as in the envelope, unless it has characters a
/// DSN field cannot carry. Control characters become `?`; a non-ASCII address is written as
/// the `utf-8` address type in its 7-bit `utf-8-addr-xtext` form (RFC 6533 §3), each
/// character outside QCHAR as `\x{HEX}`.
fn typed_address(addr_type: &str, addr: &str) -> String {
    if addr.is_ascii() {
        return format!(
            "{addr_type}; {}",
            clean(addr, Charset::Ascii, '?', MAX_FIELD)
        );
    }
    let mut v = String::from("utf-8; ");
    for c in addr.chars() {
        if v.len() > MAX_FIELD {
            break;
        }
        // QCHAR: printable ASCII except SP, '+', '=' and '\' (RFC 6533 §3).
        if matches!(c, '!'..='*' | ','..='<' | '>'..='[' | ']'..='~') {
            v.push(c);
        } else {
            let _ = write!(v, "\\x{{{:02X}}}", u32::from(c));
        }
    }
    v
}

/// Decodes xtext (RFC 3461 §4): `+HH` is the octet with hex value HH. A `+` not followed by
/// two hex digits is kept as it is, so an already-decoded value passes through unchanged
/// unless it happens to contain such a sequence.
fn xtext_decode(xtext: &str) -> String {
    let b = xtext.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'+' {
            if let (Some(hi), Some(lo)) = (hex(b.get(i + 1)), hex(b.get(i + 2))) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of one hex digit.
fn hex(b: Option<&u8>) -> Option<u8> {
    match b? {
        c @ b'0'..=b'9' => Some(c - b'0'),
        c @ b'A'..=b'F' => Some(c - b'A' + 10),
        c @ b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// `text` made safe to write into a header field or a line of the report: at most `max`
/// characters; each control character (CR and LF above all), DEL, and Unicode line or
/// paragraph separator (which some parsers treat as line ends) replaced by `control`; and,
/// with [`Charset::Ascii`], each non-ASCII character replaced by `?`.
fn clean(text: &str, charset: Charset, control: char, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| match c {
            ' '..='~' => c,
            _ if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => control,
            _ if charset == Charset::Ascii => '?',
            _ => c,
        })
        .collect()
}

/// Appends `lead` and the words of `text` as one logical line, folded before column
/// [`WRAP`] with a 4-space indent, and its CRLF.
///
/// With a field name as `lead` (`"Diagnostic-Code:"`) this is RFC 5322 §2.2.3 folding: the
/// unfolded value is the words joined by single spaces. A word over [`MAX_WORD`] octets is
/// cut into pieces (a space then appears between them when unfolded), which keeps every
/// line under 998 octets. Splitting on whitespace also drops any CR or LF that reached here.
fn fold(out: &mut String, lead: &str, text: &str) {
    out.push_str(lead);
    let mut col = lead.len();
    let mut started = false;
    for word in text.split_whitespace() {
        let mut rest = word;
        while !rest.is_empty() {
            let piece = prefix(rest, MAX_WORD);
            rest = &rest[piece.len()..];
            let space = started || !lead.is_empty();
            if started && col + 1 + piece.len() > WRAP {
                out.push_str("\r\n    ");
                col = 4;
            } else if space {
                out.push(' ');
                col += 1;
            }
            out.push_str(piece);
            col += piece.len();
            started = true;
        }
    }
    out.push_str("\r\n");
}

/// The longest prefix of `s` of at most `max` octets that ends on a character boundary.
fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
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
    use super::*;

    const ORIGINAL: &[u8] = b"From: a@sender.example\r\nTo: b@rcpt.example\r\n\
        Subject: Hello\r\n\r\nBody line\r\n";

    fn failed<'a>(rcpt: &'a str, diag: &'a str) -> RecipientReport<'a> {
        RecipientReport {
            recipient: rcpt,
            original_recipient: None,
            action: Action::Failed,
            status: Enhanced(5, 1, 1),
            remote_mta: Some("mx.rcpt.example"),
            diagnostic: Some(diag),
            last_attempt_unix: Some(1_795_899_865),
            will_retry_until_unix: None,
        }
    }

    fn report<'a>(recipients: Vec<RecipientReport<'a>>, original: &'a [u8]) -> Report<'a> {
        Report {
            reporting_mta: "mail.pigeon.example",
            envelope_id: None,
            arrival_unix: 1_795_899_000,
            queue_id: "0A1B2C3D",
            sender: "a@sender.example",
            recipients,
            original,
            return_full: false,
        }
    }

    fn text(r: &Report) -> String {
        String::from_utf8(build(
            r,
            "<0A1B2C3D.dsn@mail.pigeon.example>",
            1_795_899_900,
        ))
        .unwrap()
    }

    /// Every line ends in CRLF, has no lone CR or LF, and is at most 998 octets.
    fn assert_well_formed(msg: &str) {
        assert!(msg.ends_with("\r\n"));
        for line in msg.split("\r\n") {
            assert!(!line.contains('\r') && !line.contains('\n'), "{line:?}");
            assert!(line.len() <= 998, "line of {} octets", line.len());
        }
    }

    fn boundary_of(msg: &str) -> &str {
        let at = msg.find("boundary=\"").unwrap() + "boundary=\"".len();
        &msg[at..at + msg[at..].find('"').unwrap()]
    }

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
    fn subject_is_failure_if_any_failed_else_delay() {
        let mut delayed = failed("c@rcpt.example", "451 4.2.0 try later");
        delayed.action = Action::Delayed;
        delayed.status = Enhanced(4, 2, 0);
        let only_delayed = text(&report(vec![delayed.clone()], ORIGINAL));
        assert!(only_delayed.contains("\r\nSubject: Delayed Mail (still being retried)\r\n"));
        let mixed = text(&report(
            vec![failed("b@rcpt.example", "550 no"), delayed],
            ORIGINAL,
        ));
        assert!(mixed.contains("\r\nSubject: Undelivered Mail Returned to Sender\r\n"));
        assert!(mixed.contains("Action: failed\r\n"));
        assert!(mixed.contains("Action: delayed\r\n"));
    }

    #[test]
    fn will_retry_until_only_for_delayed() {
        let mut f = failed("b@rcpt.example", "550 no");
        f.will_retry_until_unix = Some(1_796_000_000);
        let mut d = failed("c@rcpt.example", "451 later");
        d.action = Action::Delayed;
        d.will_retry_until_unix = Some(1_796_000_000);
        let msg = text(&report(vec![f, d], ORIGINAL));
        assert_eq!(msg.matches("Will-Retry-Until: ").count(), 1);
        let at = msg.find("Will-Retry-Until: ").unwrap();
        let group_start = msg[..at].rfind("\r\n\r\n").unwrap();
        assert!(msg[group_start..at].contains("Final-Recipient: rfc822; c@rcpt.example"));
        assert!(msg
            .replace("\r\n    ", " ")
            .contains("(will keep trying until "));
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
    fn long_diagnostics_fold_and_long_tokens_are_cut() {
        let long = format!("550-5.7.1 {} {}", "word ".repeat(300), "x".repeat(3000));
        let msg = text(&report(vec![failed("b@rcpt.example", &long)], ORIGINAL));
        assert_well_formed(&msg);
        let at = msg.find("Diagnostic-Code:").unwrap();
        let field_end = at + msg[at..].find("\r\nLast-Attempt-Date").unwrap();
        let field = &msg[at..field_end];
        for line in field.split("\r\n").skip(1) {
            assert!(line.starts_with("    "), "continuation {line:?}");
        }
        // Lines of short words stay within 78 columns.
        assert!(field.split("\r\n").take(10).all(|l| l.len() <= WRAP));
        // The cap keeps a hostile reply from growing the report without bound.
        assert!(field.len() < MAX_DIAGNOSTIC + 200);
    }

    #[test]
    fn orcpt_and_envid_are_xtext_decoded() {
        let mut r = failed("b@rcpt.example", "550 no");
        r.original_recipient = Some("rfc822;first+2Blast@orig.example");
        let mut rep = report(vec![r], ORIGINAL);
        rep.envelope_id = Some("QQ+2B314159");
        let msg = text(&rep);
        assert!(msg.contains("\r\nOriginal-Envelope-Id: QQ+314159\r\nReporting-MTA: "));
        assert!(msg.contains(
            "\r\n\r\nOriginal-Recipient: rfc822; first+last@orig.example\r\n\
             Final-Recipient: rfc822; b@rcpt.example\r\n"
        ));
        assert_eq!(xtext_decode("a+2"), "a+2");
        assert_eq!(xtext_decode("a+zz+41"), "a+zzA");
        assert_eq!(original_recipient("noseparator"), None);
        assert_eq!(
            original_recipient("bad type;x@y").as_deref(),
            Some("unknown; x@y")
        );
    }

    #[test]
    fn utf8_addresses_use_the_utf8_type_in_the_status_part() {
        assert_eq!(
            typed_address("rfc822", "用户@例子.广告"),
            "utf-8; \\x{7528}\\x{6237}@\\x{4F8B}\\x{5B50}.\\x{5E7F}\\x{544A}"
        );
        let mut rep = report(vec![failed("δ@π.example", "550 no")], ORIGINAL);
        rep.sender = "ε@π.example";
        let msg = text(&rep);
        let b = boundary_of(&msg);
        let status = msg.split(&format!("--{b}")).nth(2).unwrap();
        assert!(status.is_ascii());
        assert!(status.contains("Final-Recipient: utf-8; \\x{3B4}@\\x{3C0}.example\r\n"));
        // The text part shows the address as it is, and says it is 8-bit.
        assert!(msg.contains("<δ@π.example>: host"));
        assert!(msg.contains("charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"));
        assert!(msg.contains("\r\nTo: <ε@π.example>\r\n"));
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

    #[test]
    fn null_sender_gets_no_dsn() {
        assert_eq!(dsn_recipient(""), None);
        assert_eq!(dsn_recipient("<>"), None);
        assert_eq!(dsn_recipient(" <> "), None);
        assert_eq!(dsn_recipient("a@b.example"), Some("a@b.example"));
        assert_eq!(dsn_recipient("<a@b.example>"), Some("a@b.example"));
    }

    #[test]
    fn fold_keeps_words_and_indents_continuations() {
        let mut s = String::new();
        fold(&mut s, "Diagnostic-Code:", &"abcdefghij ".repeat(20));
        for (i, line) in s.trim_end().split("\r\n").enumerate() {
            assert!(line.len() <= WRAP);
            assert_eq!(line.starts_with("    "), i > 0);
        }
        let unfolded = s.replace("\r\n", "");
        let words: Vec<&str> = unfolded.split_whitespace().collect();
        assert_eq!(words[0], "Diagnostic-Code:");
        assert_eq!(words.len(), 21);
        let mut t = String::new();
        fold(&mut t, "", "one two");
        assert_eq!(t, "one two\r\n");
    }

    #[test]
    fn clean_replaces_controls_and_separators() {
        assert_eq!(
            clean("a\r\nb\tc\x7fd", Charset::Ascii, '?', 100),
            "a??b?c?d"
        );
        assert_eq!(clean("a\u{2028}b\u{85}c", Charset::Utf8, ' ', 100), "a b c");
        assert_eq!(clean("żółw", Charset::Ascii, ' ', 100), "???w");
        assert_eq!(clean("żółw", Charset::Utf8, ' ', 100), "żółw");
        assert_eq!(clean("abcdef", Charset::Ascii, '?', 3), "abc");
    }
}
