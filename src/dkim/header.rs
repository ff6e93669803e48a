//! Reading a header section for signing decisions: the From domain (which key to sign
//! with) and existing signatures (whether to sign at all).

use super::canonicalize::fields;

/// True if `headers` already carries a `DKIM-Signature` with this `d=` and `s=` (compared
/// ignoring ASCII case, as DNS names are), so a message that passes through twice, or was
/// signed by a submission client with our key, is not signed again.
pub fn already_signed(headers: &[u8], domain: &str, selector: &str) -> bool {
    let norm = |s: &str| s.trim_end_matches('.').to_ascii_lowercase();
    let (domain, selector) = (norm(domain), norm(selector));
    fields(headers)
        .iter()
        .filter(|f| f.is("DKIM-Signature"))
        .any(|f| {
            let tags = parse_tags(f.value());
            let tag = |name: &str| tags.iter().find(|(t, _)| t == name).map(|(_, v)| norm(v));
            tag("d").as_deref() == Some(domain.as_str())
                && tag("s").as_deref() == Some(selector.as_str())
        })
}

/// Splits a DKIM tag-list (RFC 6376 §3.2) into (name, value) pairs: folding removed, WSP
/// around names and values trimmed, an empty trailing element dropped. Lenient: an element
/// without `=` is skipped, since this only reads, never verifies.
pub(crate) fn parse_tags(value: &[u8]) -> Vec<(String, String)> {
    let unfolded: Vec<u8> = value
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    let text = String::from_utf8_lossy(&unfolded);
    text.split(';')
        .filter_map(|spec| {
            let (name, value) = spec.split_once('=')?;
            Some((
                name.trim_matches([' ', '\t']).to_string(),
                value.trim_matches([' ', '\t']).to_string(),
            ))
        })
        .collect()
}

/// The From header's domain: the domain of the RFC 5322 addr-spec(s) in the From field
/// (§3.6.2), lower-cased, without a trailing dot. Display names, comments, quoted strings
/// (which may hold `@`, `<` or `,`), folding, groups and obsolete routes are handled.
///
/// `None` when there is no From field, more than one (RFC 5322 §3.6 allows exactly one;
/// which would a receiver align with?), no parseable address, a domain literal (`[192.0.2.1]`
/// has no key), or several mailboxes whose domains differ (one signature cannot align with
/// all of them, RFC 7489 §6.6.1).
pub fn from_domain(headers: &[u8]) -> Option<String> {
    let all = fields(headers);
    let mut froms = all.iter().filter(|f| f.is("From"));
    let from = froms.next()?;
    if froms.next().is_some() {
        return None;
    }
    let tokens = tokenize(from.value())?;
    let mut domain: Option<String> = None;
    for mailbox in mailboxes(&tokens) {
        let d = mailbox_domain(mailbox)?;
        match &domain {
            Some(seen) if *seen != d => return None,
            _ => domain = Some(d),
        }
    }
    domain
}

/// A lexical token of an address field (RFC 5322 §3.2), comments and whitespace dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// One of the specials that give an address its structure: `< > @ , : ;`.
    Special(u8),
    /// A run of atext and dots (atoms, dot-atoms, and the loose forms real mail has).
    Atom(Vec<u8>),
    /// A quoted-string's content, unescaped.
    Quoted(Vec<u8>),
    /// A domain literal, `[...]`.
    Literal,
}

/// Tokenizes a field body. `None` for an unterminated quoted string, comment or literal.
fn tokenize(value: &[u8]) -> Option<Vec<Token>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'(' => {
                // §3.2.2: comments nest and may hold quoted-pairs.
                let mut depth = 0usize;
                loop {
                    match value.get(i)? {
                        b'\\' => i += 1,
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                i += 1;
            }
            b'"' => {
                let mut content = Vec::new();
                i += 1;
                loop {
                    match *value.get(i)? {
                        b'"' => break,
                        b'\\' => {
                            i += 1;
                            content.push(*value.get(i)?);
                        }
                        b'\r' | b'\n' => {}
                        c => content.push(c),
                    }
                    i += 1;
                }
                i += 1;
                out.push(Token::Quoted(content));
            }
            b'[' => {
                while *value.get(i)? != b']' {
                    i += 1;
                }
                i += 1;
                out.push(Token::Literal);
            }
            b'<' | b'>' | b'@' | b',' | b':' | b';' => {
                out.push(Token::Special(b));
                i += 1;
            }
            _ => {
                let start = i;
                while i < value.len()
                    && !matches!(
                        value[i],
                        b' ' | b'\t'
                            | b'\r'
                            | b'\n'
                            | b'('
                            | b'"'
                            | b'['
                            | b'<'
                            | b'>'
                            | b'@'
                            | b','
                            | b':'
                            | b';'
                    )
                {
                    i += 1;
                }
                out.push(Token::Atom(value[start..i].to_vec()));
            }
        }
    }
    Some(out)
}

/// Splits tokens into mailboxes at top-level commas (not inside `<...>`); a group's
/// display name (`name:`) and its closing `;` are dropped, keeping its members.
fn mailboxes(tokens: &[Token]) -> Vec<&[Token]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_angle = false;
    for (i, t) in tokens.iter().enumerate() {
        match t {
            Token::Special(b'<') => in_angle = true,
            Token::Special(b'>') => in_angle = false,
            Token::Special(b',' | b';') if !in_angle => {
                out.push(&tokens[start..i]);
                start = i + 1;
            }
            // Outside brackets a colon ends a group name; inside, an obsolete route.
            Token::Special(b':') if !in_angle => start = i + 1,
            _ => {}
        }
    }
    out.push(&tokens[start..]);
    out.retain(|m| !m.is_empty());
    out
}

/// The domain of one mailbox: the addr-spec inside `<...>` if there is one (after an
/// obsolete route's colon), else the whole mailbox; the domain is what follows its last
/// `@` outside quoted strings.
fn mailbox_domain(mailbox: &[Token]) -> Option<String> {
    let mut addr = mailbox;
    if let Some(open) = mailbox.iter().position(|t| *t == Token::Special(b'<')) {
        let close = mailbox[open..]
            .iter()
            .position(|t| *t == Token::Special(b'>'))?;
        addr = &mailbox[open + 1..open + close];
        if let Some(colon) = addr.iter().rposition(|t| *t == Token::Special(b':')) {
            addr = &addr[colon + 1..];
        }
    }
    let at = addr.iter().rposition(|t| *t == Token::Special(b'@'))?;
    if at == 0 {
        return None; // no local part
    }
    let mut domain = Vec::new();
    for t in &addr[at + 1..] {
        match t {
            Token::Atom(a) => domain.extend_from_slice(a),
            _ => return None, // a literal, a quoted string or a stray special
        }
    }
    let domain = String::from_utf8(domain).ok()?;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let valid = !domain.is_empty()
        && !domain.starts_with('.')
        && !domain.contains("..")
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.' || c == '_');
    valid.then_some(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(value: &str) -> Option<String> {
        from_domain(format!("To: x@y.example\r\nFrom:{value}\r\nSubject: s\r\n").as_bytes())
    }

    #[test]
    fn from_domain_forms() {
        assert_eq!(from(" joe@Example.COM"), Some("example.com".into()));
        assert_eq!(from(" Joe <joe@example.com>"), Some("example.com".into()));
        assert_eq!(
            from(" \"Joe @ <home>, inc\" <joe@example.com>"),
            Some("example.com".into())
        );
        assert_eq!(
            from(" (comment @evil.example) joe@(c)example.com (x)"),
            Some("example.com".into())
        );
        assert_eq!(
            from(" Joe\r\n\t<joe@\r\n example.com>"),
            Some("example.com".into())
        );
        assert_eq!(
            from(" \"odd@local\"@example.com"),
            Some("example.com".into())
        );
        assert_eq!(
            from(" <@relay.example:joe@example.com>"),
            Some("example.com".into())
        );
        assert_eq!(
            from(" Team: a@example.com, b@example.com;"),
            Some("example.com".into())
        );
        assert_eq!(
            from(" a@example.com, b@example.com."),
            Some("example.com".into())
        );
        assert_eq!(
            from(" =?utf-8?q?J=C3=B6e?= <joe@m\u{fc}nchen.example>"),
            Some("m\u{fc}nchen.example".into())
        );
        assert_eq!(from(" a@one.example, b@two.example"), None);
        assert_eq!(from(" joe@[192.0.2.1]"), None);
        assert_eq!(from(" joe"), None);
        assert_eq!(from(" \"unterminated <joe@example.com>"), None);
        assert_eq!(from(" <joe@example.com"), None);
        assert_eq!(from(""), None);
        assert_eq!(from_domain(b"To: a@b.example\r\n"), None);
        assert_eq!(
            from_domain(b"From: a@one.example\r\nFrom: a@one.example\r\n"),
            None
        );
    }

    #[test]
    fn already_signed_matches_d_and_s() {
        let h = b"DKIM-Signature: v=1; a=rsa-sha256; d=Example.com;\r\n s=S1; b=abc\r\nFrom: a@example.com\r\n";
        assert!(already_signed(h, "example.com", "s1"));
        assert!(already_signed(h, "example.com.", "S1"));
        assert!(!already_signed(h, "example.com", "s2"));
        assert!(!already_signed(h, "example.org", "s1"));
        assert!(!already_signed(
            b"From: a@example.com\r\n",
            "example.com",
            "s1"
        ));
    }

    #[test]
    fn tag_lists() {
        let t = parse_tags(b" v=1; h=from : to :\r\n subject ; b= ab\r\n cd ;");
        assert_eq!(t[1], ("h".into(), "from : to : subject".into()));
        assert_eq!(t[2], ("b".into(), "ab cd".into()));
        assert_eq!(t.len(), 3);
    }
}
