//! What a session hands to the spool: the envelope of one accepted message, and the
//! `Received:` trace header pigeon prepends to it (RFC 5321 §4.4).

use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::dkim::Canonicalization;
use crate::smtp::address::Mailbox;

/// One accepted recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The forward-path.
    pub mailbox: Mailbox,
    /// Its ESMTP parameters, as sent (validated, space-separated).
    pub params: String,
}

/// The envelope of one message, complete when the session emits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The client's address.
    pub peer: SocketAddr,
    /// The EHLO/HELO argument, as sent.
    pub helo: String,
    /// `SMTP`, `ESMTP`, `ESMTPSA`, `UTF8SMTP`… (RFC 3848, RFC 6531 §3.7.3): the `with`
    /// clause.
    pub protocol: &'static str,
    /// The reverse-path; `None` for the null sender `<>`.
    pub sender: Option<Mailbox>,
    /// The MAIL parameters, as sent (validated).
    pub mail_params: String,
    /// Accepted recipients, in the order they were given.
    pub recipients: Vec<Recipient>,
    /// The client asked for SMTPUTF8.
    pub smtputf8: bool,
    /// DKIM body hashes computed while the content streamed in, one per body
    /// canonicalization the configured signers use (empty without DKIM).
    pub body_hashes: Vec<(Canonicalization, [u8; 32])>,
    /// The user the client authenticated as (SMTP AUTH), if it did.
    pub auth: Option<String>,
}

/// Formats the `Received:` header for a message (RFC 5321 §4.4, RFC 5322 §3.6.7).
///
/// The HELO argument is the client's to choose, so every byte outside printable ASCII is
/// replaced: a CR or LF there would otherwise let a client write headers of its own.
pub fn received_header(env: &Envelope, hostname: &str, id: &str, unix_secs: u64) -> Vec<u8> {
    let mut h = String::with_capacity(160);
    let helo: String = env
        .helo
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    let ip = match env.peer {
        SocketAddr::V4(a) => format!("[{}]", a.ip()),
        SocketAddr::V6(a) => format!("[IPv6:{}]", a.ip()),
    };
    let _ = write!(
        h,
        "Received: from {helo} ({ip})\r\n\tby {hostname} (pigeon) with {} id {id}",
        env.protocol
    );
    if let [only] = env.recipients.as_slice() {
        let _ = write!(h, "\r\n\tfor <{}>", only.mailbox.as_str());
    }
    let _ = write!(h, ";\r\n\t{}\r\n", rfc5322_date(unix_secs));
    h.into_bytes()
}

/// `Sat, 28 Nov 2026 21:04:25 +0000` (RFC 5322 §3.3), always in UTC.
pub fn rfc5322_date(unix_secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::address::parse_mailbox;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_795_899_865),
            "Sat, 28 Nov 2026 21:04:25 +0000"
        );
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn received_header_neutralises_helo() {
        let env = Envelope {
            peer: "127.0.0.1:4000".parse().unwrap(),
            helo: "evil\r\nX-Injected: 1".into(),
            protocol: "ESMTP",
            sender: None,
            mail_params: String::new(),
            recipients: vec![Recipient {
                mailbox: parse_mailbox(b"a@b.example", false).unwrap(),
                params: String::new(),
            }],
            smtputf8: false,
            body_hashes: Vec::new(),
            auth: None,
        };
        let h = String::from_utf8(received_header(&env, "mx.example", "ID1", 0)).unwrap();
        assert_eq!(
            h,
            "Received: from evil??X-Injected:?1 ([127.0.0.1])\r\n\tby mx.example (pigeon) with \
             ESMTP id ID1\r\n\tfor <a@b.example>;\r\n\tThu, 1 Jan 1970 00:00:00 +0000\r\n"
        );
    }
}
