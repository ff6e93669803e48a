//! The `Received:` trace header intake prepends to every message (RFC 5321 §4.4,
//! RFC 5322 §3.6.7).

use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::clock::rfc5322_date;
use crate::smtp::envelope::Envelope;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::address::parse_mailbox;
    use crate::smtp::envelope::Recipient;

    #[test]
    fn received_header_neutralises_helo() {
        let env = Envelope {
            peer: "127.0.0.1:4000".parse().unwrap(),
            helo: "evil\r\nX-Injected: 1".into(),
            protocol: "ESMTP",
            sender: None,
            mail_params: String::new(),
            mail_dsn: Default::default(),
            recipients: vec![Recipient {
                mailbox: parse_mailbox(b"a@b.example", false).unwrap(),
                params: String::new(),
                dsn: Default::default(),
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
