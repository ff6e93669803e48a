//! The service extensions a server offers in its EHLO reply, as [`Extensions`]: what the
//! client may use in a transaction (PIPELINING, SIZE, 8BITMIME, SMTPUTF8, CHUNKING, DSN) and
//! whether STARTTLS can be asked for.

use crate::smtp::reply::Reply;

/// The service extensions the server offered in its EHLO reply (RFC 5321 §4.1.1.1). After a
/// HELO fallback, none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// SIZE (RFC 1870): `Some(limit)` when offered, `Some(0)` when offered without a fixed
    /// limit (RFC 1870 §4 gives `SIZE` and `SIZE 0` that meaning).
    pub size: Option<u64>,
    /// 8BITMIME (RFC 6152).
    pub eight_bit_mime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// CHUNKING (RFC 3030).
    pub chunking: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status_codes: bool,
    /// DSN (RFC 3461): the server takes over delivery status notification.
    pub dsn: bool,
}

impl Extensions {
    /// Reads the extensions from a 2xx EHLO reply: every line after the first is an
    /// `ehlo-line`, a keyword and optional parameters, compared case-insensitively
    /// (RFC 5321 §4.1.1.1, §2.4). Unknown keywords are ignored.
    pub fn from_ehlo(reply: &Reply) -> Extensions {
        let mut ext = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => ext.pipelining = true,
                // An unreadable limit is taken as "no fixed limit": the server still has
                // the last word, with 552 after MAIL or after the content.
                "SIZE" => ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => ext.eight_bit_mime = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "STARTTLS" => ext.starttls = true,
                "CHUNKING" => ext.chunking = true,
                "ENHANCEDSTATUSCODES" => ext.enhanced_status_codes = true,
                "DSN" => ext.dsn = true,
                _ => {}
            }
        }
        ext
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ehlo(lines: &[&'static str]) -> Reply {
        Reply::plain(250, lines.iter().map(|&l| l.into()).collect())
    }

    #[test]
    fn extensions_from_ehlo() {
        let ext = Extensions::from_ehlo(&ehlo(&[
            "mx.test Hello",
            "pipelining",
            "SIZE 1000",
            "8BITMIME",
            "SMTPUTF8",
            "STARTTLS",
            "CHUNKING",
            "ENHANCEDSTATUSCODES",
            "DSN",
            "AUTH PLAIN",
        ]));
        assert_eq!(
            ext,
            Extensions {
                pipelining: true,
                size: Some(1000),
                eight_bit_mime: true,
                smtputf8: true,
                starttls: true,
                chunking: true,
                enhanced_status_codes: true,
                dsn: true,
            }
        );
        // The first line is the server's name, never an extension.
        assert_eq!(
            Extensions::from_ehlo(&ehlo(&["PIPELINING"])),
            Extensions::default()
        );
        assert_eq!(Extensions::from_ehlo(&ehlo(&["x", "SIZE"])).size, Some(0));
    }
}
