//! The `message/delivery-status` part (RFC 3464 §2): per-message and per-recipient fields,
//! with ENVID and ORCPT decoded from xtext (RFC 3461 §4) and addresses written in the
//! 7-bit form the part requires.

use std::fmt::Write as _;

use super::line::{clean, fold, Charset, MAX_DIAGNOSTIC, MAX_FIELD};
use super::model::{Action, Report};
use crate::clock::rfc5322_date;

/// Part 2: the `message/delivery-status` content (RFC 3464 §2.1): per-message fields, then
/// for each recipient a blank line and its per-recipient fields, in the order of the ABNF.
/// Every value is 7-bit: this media type carries US-ASCII only (RFC 6533 added
/// `message/global-delivery-status` for anything else).
pub(super) fn delivery_status(report: &Report) -> String {
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::{assert_well_formed, boundary_of, failed, report, text, ORIGINAL};
    use super::super::line::WRAP;
    use super::*;

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
}
