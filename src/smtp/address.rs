//! Mailboxes and paths (RFC 5321 §4.1.2), parsed once into types.
//!
//! A [`Mailbox`] is only built from bytes that follow the grammar, so later stages (relay
//! checks, queueing by domain) never see a source route, a trailing dot or a stray `@`.

use thiserror::Error;

use crate::smtp::reply::{replies, Reply};

/// RFC 5321 §4.5.3.1.1–3: local part 64, domain 255, path 256 octets.
const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 255;
const MAX_PATH: usize = 256;

/// A syntactically valid mailbox `local@domain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    text: String,
    at: usize,
}

impl Mailbox {
    /// The whole address as received (source route removed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The local part, quoted if it was quoted.
    pub fn local_part(&self) -> &str {
        &self.text[..self.at]
    }

    /// The domain or address literal, as received.
    pub fn domain(&self) -> &str {
        &self.text[self.at + 1..]
    }
}

/// Why an address did not parse.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AddressError {
    /// The bytes do not follow RFC 5321 §4.1.2.
    #[error("bad address syntax: {0}")]
    Syntax(&'static str),
    /// Non-ASCII without the SMTPUTF8 parameter (RFC 6531 §3.5).
    #[error("non-ASCII address without SMTPUTF8")]
    NeedsSmtpUtf8,
}

impl AddressError {
    /// The reply for this error.
    pub fn reply(&self) -> Reply {
        match self {
            AddressError::Syntax(what) => replies::bad_address(what),
            AddressError::NeedsSmtpUtf8 => replies::utf8_without_smtputf8(),
        }
    }
}

/// Parses the inside of a path's angle brackets into a mailbox. A source route
/// (`@a,@b:user@c`) is accepted and dropped, as RFC 5321 §4.1.1.3 and Appendix C require.
pub fn parse_mailbox(path: &[u8], smtputf8: bool) -> Result<Mailbox, AddressError> {
    if path.len() > MAX_PATH {
        return Err(AddressError::Syntax("address too long"));
    }
    if !path.is_ascii() {
        if !smtputf8 {
            return Err(AddressError::NeedsSmtpUtf8);
        }
        if std::str::from_utf8(path).is_err() {
            return Err(AddressError::Syntax("address is not valid UTF-8"));
        }
    }
    let mailbox = strip_source_route(path)?;
    let at = local_part_end(mailbox)?;
    if at == 0 || at > MAX_LOCAL {
        return Err(AddressError::Syntax("bad local part"));
    }
    if mailbox.get(at) != Some(&b'@') {
        return Err(AddressError::Syntax("address needs @domain"));
    }
    let domain = &mailbox[at + 1..];
    if !is_domain(domain) && !is_address_literal(domain) {
        return Err(AddressError::Syntax("bad domain"));
    }
    // Checked above: ASCII, or valid UTF-8 under SMTPUTF8.
    let text = String::from_utf8(mailbox.to_vec())
        .map_err(|_| AddressError::Syntax("address is not valid UTF-8"))?;
    Ok(Mailbox { text, at })
}

fn strip_source_route(path: &[u8]) -> Result<&[u8], AddressError> {
    if path.first() != Some(&b'@') {
        return Ok(path);
    }
    let colon = memchr::memchr(b':', path).ok_or(AddressError::Syntax("bad source route"))?;
    for hop in path[..colon].split(|&b| b == b',') {
        match hop.split_first() {
            Some((b'@', d)) if is_domain(d) => {}
            _ => return Err(AddressError::Syntax("bad source route")),
        }
    }
    Ok(&path[colon + 1..])
}

/// Returns the index just past the local part (a dot-string or a quoted string).
fn local_part_end(s: &[u8]) -> Result<usize, AddressError> {
    if s.first() == Some(&b'"') {
        let mut i = 1;
        while i < s.len() {
            match s[i] {
                b'\\' => {
                    match s.get(i + 1) {
                        Some(&c) if (32..=126).contains(&c) || c >= 0x80 => i += 2,
                        _ => return Err(AddressError::Syntax("bad quoted local part")),
                    }
                    continue;
                }
                b'"' => return Ok(i + 1),
                c if c == 32 || c == 33 || (35..=126).contains(&c) || c >= 0x80 => i += 1,
                _ => return Err(AddressError::Syntax("bad quoted local part")),
            }
        }
        return Err(AddressError::Syntax("unterminated quoted local part"));
    }
    let end = s.iter().rposition(|&b| b == b'@').unwrap_or(s.len());
    let local = &s[..end];
    if local.is_empty()
        || local
            .split(|&b| b == b'.')
            .any(|atom| atom.is_empty() || !atom.iter().all(|&b| is_atext(b)))
    {
        return Err(AddressError::Syntax("bad local part"));
    }
    Ok(end)
}

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

/// `Domain = sub-domain *("." sub-domain)`, each label letter-digit-hyphen (or U-label
/// bytes under SMTPUTF8), not starting or ending with a hyphen, at most 63 octets.
pub fn is_domain(d: &[u8]) -> bool {
    !d.is_empty()
        && d.len() <= MAX_DOMAIN
        && d.split(|&b| b == b'.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b >= 0x80)
                && label[0] != b'-'
                && label[label.len() - 1] != b'-'
        })
}

fn is_address_literal(d: &[u8]) -> bool {
    let Some(inner) = d.strip_prefix(b"[").and_then(|d| d.strip_suffix(b"]")) else {
        return false;
    };
    let Ok(inner) = std::str::from_utf8(inner) else {
        return false;
    };
    match inner.strip_prefix("IPv6:") {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => inner.parse::<std::net::Ipv4Addr>().is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Mailbox {
        parse_mailbox(s.as_bytes(), false).unwrap()
    }

    #[test]
    fn plain_and_quoted() {
        assert_eq!(ok("user@example.com").domain(), "example.com");
        assert_eq!(ok("\"a b@c\"@example.com").local_part(), "\"a b@c\"");
        assert_eq!(ok("a@[127.0.0.1]").domain(), "[127.0.0.1]");
        assert_eq!(ok("a@[IPv6:::1]").domain(), "[IPv6:::1]");
    }

    #[test]
    fn source_route_is_dropped() {
        assert_eq!(
            ok("@a.example,@b.example:user@c.example").as_str(),
            "user@c.example"
        );
    }

    #[test]
    fn rejects() {
        for bad in [
            "user",
            "@example.com",
            "user@",
            "user@@example.com",
            "user@example.com.",
            "a..b@example.com",
            ".a@example.com",
            "user@-x.example",
            "user@ex ample.com",
            "a@b@c.example",
            "user@[1.2.3]",
            "\"unterminated@example.com",
        ] {
            assert!(
                parse_mailbox(bad.as_bytes(), false).is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn utf8_needs_smtputf8() {
        let a = "δοκιμή@παράδειγμα.δοκιμή".as_bytes();
        assert_eq!(parse_mailbox(a, false), Err(AddressError::NeedsSmtpUtf8));
        assert!(parse_mailbox(a, true).is_ok());
        assert!(parse_mailbox(b"\xff@example.com", true).is_err());
    }

    #[test]
    fn length_limits() {
        let local = "a".repeat(65);
        assert!(parse_mailbox(format!("{local}@example.com").as_bytes(), false).is_err());
    }
}
