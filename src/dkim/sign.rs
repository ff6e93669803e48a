//! The signer: selects the header fields to sign, computes the header hash (RFC 6376 §3.7)
//! and writes the folded `DKIM-Signature` field.

use std::sync::Arc;
use std::time::Duration;

use super::canonicalize::{fields, header_field, BodyHasher, Field};
use super::header::parse_tags;
use super::key::SigningKey;
use super::{Canonicalization, DkimError};

/// The header fields signed when present, in `h=` order (RFC 6376 §5.4.1 lists the ones
/// that carry the message's meaning). `From` is always signed and always over-signed.
/// `Received`, `Return-Path` and the trace fields are left out: relays add and rewrite them.
pub const DEFAULT_HEADERS: &[&str] = &[
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "Cc",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Id",
    "In-Reply-To",
    "References",
    "Sender",
];

/// Lines of the generated field are kept within 78 characters (RFC 5322 §2.1.1 SHOULD),
/// folding between tags, after `:` in `h=`, and inside the base64 of `b=` (RFC 6376 §3.5
/// allows FWS in all three places; verifiers remove it).
const FOLD_WIDTH: usize = 78;

/// One signing identity: domain, selector, key and the choices that go into `c=`, `h=`
/// and `x=`. Build one per configured key; two for the same domain give a dual signature.
#[derive(Clone, Debug)]
pub struct Signer {
    /// The signing domain, `d=` (RFC 6376 §3.5): the From domain or a parent of it, so the
    /// signature aligns for DMARC.
    pub domain: String,
    /// The selector, `s=`: the key is published at `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// The private key; its algorithm gives `a=`.
    pub key: Arc<SigningKey>,
    /// Header canonicalization (the first half of `c=`).
    pub header_canon: Canonicalization,
    /// Body canonicalization (the second half of `c=`); the [`BodyHasher`] must use it.
    pub body_canon: Canonicalization,
    /// Header field names to sign when present ([`DEFAULT_HEADERS`] by default). Each
    /// instance present is signed; `From` is added if missing and over-signed.
    pub headers: Vec<String>,
    /// When set, `x=` is `t=` plus this (rounded up to whole seconds, at least one).
    pub expire_after: Option<Duration>,
}

impl Signer {
    /// A signer with the defaults: relaxed/relaxed, [`DEFAULT_HEADERS`], no expiry.
    pub fn new(
        domain: impl Into<String>,
        selector: impl Into<String>,
        key: Arc<SigningKey>,
    ) -> Signer {
        Signer {
            domain: domain.into(),
            selector: selector.into(),
            key,
            header_canon: Canonicalization::Relaxed,
            body_canon: Canonicalization::Relaxed,
            headers: DEFAULT_HEADERS.iter().map(|s| s.to_string()).collect(),
            expire_after: None,
        }
    }

    /// A [`BodyHasher`] with this signer's body canonicalization.
    pub fn body_hasher(&self) -> BodyHasher {
        BodyHasher::new(self.body_canon)
    }

    /// The complete `DKIM-Signature: ...\r\n` header field (folded, CRLF-terminated) for a
    /// message whose header section is `headers` (raw bytes, CRLF, up to but excluding the
    /// empty line) and whose body hash is `body_hash` (from a [`BodyHasher`] with this
    /// signer's `body_canon`), signed at `now_unix` (`t=`), with `x=` = `t=` +
    /// `expire_after` if set. Prepend the result to the message.
    ///
    /// Tags, in order: `v a c d s t [x] h bh b`.
    pub fn sign(
        &self,
        headers: &[u8],
        body_hash: &[u8; 32],
        now_unix: u64,
    ) -> Result<Vec<u8>, DkimError> {
        check_tag_value("d", &self.domain)?;
        check_tag_value("s", &self.selector)?;
        let fields = fields(headers);
        let h = self.header_list(&fields)?;

        let mut f = Folder::new("DKIM-Signature:");
        f.token("v=1;", 0);
        f.token(&format!("a={};", self.key.algorithm().name()), 0);
        f.token(
            &format!("c={}/{};", self.header_canon.name(), self.body_canon.name()),
            0,
        );
        f.token(&format!("d={};", self.domain), 0);
        f.token(&format!("s={};", self.selector), 0);
        f.token(&format!("t={now_unix};"), 0);
        if let Some(after) = self.expire_after {
            // §3.5: x= must be greater than t=.
            let secs = (after.as_secs() + u64::from(after.subsec_nanos() > 0)).max(1);
            f.token(&format!("x={};", now_unix.saturating_add(secs)), 0);
        }
        for (i, name) in h.iter().enumerate() {
            let sep = if i + 1 == h.len() { ";" } else { ":" };
            if i == 0 {
                f.token(&format!("h={name}{sep}"), 0);
            } else {
                f.piece(&format!("{name}{sep}"));
            }
        }
        f.token(
            &format!("bh={};", data_encoding::BASE64.encode(body_hash)),
            0,
        );
        // Keep some of the signature on the "b=" line: a verifier deletes the b= value
        // "including all surrounding whitespace" (§3.7) and implementations differ on
        // whitespace right after "b=", so none is put there.
        f.token("b=", 16);
        self.finish(f.text, &h, &fields)
    }

    /// Signs with a caller-written tag list instead of the generated one, to reproduce a
    /// published signature exactly (the RFC 8463 appendix A example, whose `h=` has
    /// spaces around the colons, `i=` and `q=`, and an over-signing pattern of its own).
    /// Not for production: [`Signer::sign`] writes the tags pigeon stands behind.
    ///
    /// `tags` is the field body after `DKIM-Signature:`, exactly as it is to appear,
    /// folding included, and must end with `b=`. The fields named in its `h=` are signed
    /// (bottom-up, §5.4.2); its `a=` and `c=` (header half) must agree with this signer's
    /// key and `header_canon`; `domain`, `selector`, `headers` and `expire_after` are not
    /// used. Returns the complete field, CRLF-terminated.
    pub fn sign_with_tags(&self, headers: &[u8], tags: &str) -> Result<Vec<u8>, DkimError> {
        let invalid = |tag, why| DkimError::InvalidTag {
            tag,
            value: tags.to_string(),
            why,
        };
        if !tags.ends_with("b=") {
            return Err(invalid("b", "the tag list must end with an empty b="));
        }
        let parsed = parse_tags(tags.as_bytes());
        let get = |name: &str| {
            parsed
                .iter()
                .find(|(t, _)| t == name)
                .map(|(_, v)| v.as_str())
        };
        if get("a") != Some(self.key.algorithm().name()) {
            return Err(invalid("a", "a= does not match the key"));
        }
        // §3.5: c= defaults to simple/simple; a lone value names the header half.
        let header_canon = get("c").map_or("simple", |c| c.split('/').next().unwrap_or(c));
        if !header_canon.eq_ignore_ascii_case(self.header_canon.name()) {
            return Err(invalid("c", "c= does not match header_canon"));
        }
        let h: Vec<String> = get("h")
            .ok_or_else(|| invalid("h", "h= is required"))?
            .split(':')
            .map(|n| n.trim_matches([' ', '\t']).to_string())
            .collect();
        let fields = fields(headers);
        self.finish(format!("DKIM-Signature:{tags}"), &h, &fields)
    }

    /// The `h=` list: each configured name once per instance present, `From` one more
    /// time than it occurs. Signing a name more times than it occurs makes a verifier hash
    /// an empty instance (§5.4.2), so a `From` added in transit breaks the signature
    /// (over-signing, §8.15); without it, a second From could be placed where receivers
    /// read it first.
    fn header_list(&self, fields: &[Field<'_>]) -> Result<Vec<String>, DkimError> {
        let mut names: Vec<&str> = Vec::new();
        for name in &self.headers {
            check_field_name(name)?;
            if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                names.push(name);
            }
        }
        // §5.4: "The From header field MUST be signed".
        if !names.iter().any(|n| n.eq_ignore_ascii_case("From")) {
            names.insert(0, "From");
        }
        let mut h = Vec::new();
        for name in names {
            let present = fields.iter().filter(|f| f.is(name)).count();
            let times = if name.eq_ignore_ascii_case("From") {
                present + 1
            } else {
                present
            };
            h.extend(std::iter::repeat_n(name.to_string(), times));
        }
        Ok(h)
    }

    /// §3.7: hashes the fields named in `h` (each name takes the lowest instance not yet
    /// used, §5.4.2; a name with none left adds nothing), then this signature's own field
    /// with an empty b= and no final CRLF; signs; appends the folded b= value.
    fn finish(
        &self,
        field_text: String,
        h: &[String],
        fields: &[Field<'_>],
    ) -> Result<Vec<u8>, DkimError> {
        let mut data = Vec::with_capacity(1024);
        let mut used = vec![false; fields.len()];
        for name in h {
            if let Some(i) = (0..fields.len())
                .rev()
                .find(|&i| !used[i] && fields[i].is(name))
            {
                used[i] = true;
                header_field(self.header_canon, fields[i].raw, true, &mut data);
            }
        }
        header_field(self.header_canon, field_text.as_bytes(), false, &mut data);
        let signature = self.key.sign_header_data(&data)?;

        let col = field_text.len() - field_text.rfind('\n').map_or(0, |i| i + 1);
        let mut f = Folder {
            text: field_text,
            col,
        };
        let b64 = data_encoding::BASE64.encode(&signature);
        let mut rest = b64.as_str();
        while !rest.is_empty() {
            if f.col >= FOLD_WIDTH {
                f.fold();
            }
            // Base64 is ASCII, so any byte index is a char boundary.
            let take = (FOLD_WIDTH - f.col).min(rest.len());
            f.text.push_str(&rest[..take]);
            f.col += take;
            rest = &rest[take..];
        }
        let mut out = f.text.into_bytes();
        out.extend_from_slice(b"\r\n");
        Ok(out)
    }
}

/// Convenience for tests and benches: splits `message` (content form, CRLF) at the first
/// empty line, hashes the body with `signer.body_canon` and signs. Returns the
/// `DKIM-Signature` field to prepend. A message without an empty line is all header.
pub fn sign_message(signer: &Signer, message: &[u8], now_unix: u64) -> Result<Vec<u8>, DkimError> {
    let (headers, body) = if message.starts_with(b"\r\n") {
        (&message[..0], &message[2..])
    } else {
        match memchr::memmem::find(message, b"\r\n\r\n") {
            Some(i) => (&message[..i + 2], &message[i + 4..]),
            None => (message, &message[message.len()..]),
        }
    };
    let mut hasher = signer.body_hasher();
    hasher.update(body);
    signer.sign(headers, &hasher.finish(), now_unix)
}

/// Builds the field text, folding where a line would pass [`FOLD_WIDTH`].
struct Folder {
    text: String,
    /// Characters on the current (last) line.
    col: usize,
}

impl Folder {
    fn new(name: &str) -> Folder {
        Folder {
            text: name.to_string(),
            col: name.len(),
        }
    }

    /// Folding whitespace: CRLF and one SP (RFC 5322 §2.2.3).
    fn fold(&mut self) {
        self.text.push_str("\r\n ");
        self.col = 1;
    }

    /// A space and `token`, or a fold and `token` if it (plus `room` more characters)
    /// would pass the width.
    fn token(&mut self, token: &str, room: usize) {
        if self.col + 1 + token.len() + room > FOLD_WIDTH {
            self.fold();
        } else {
            self.text.push(' ');
            self.col += 1;
        }
        self.text.push_str(token);
        self.col += token.len();
    }

    /// `piece` directly after what is there, or after a fold if it would pass the width.
    fn piece(&mut self, piece: &str) {
        if self.col + piece.len() > FOLD_WIDTH {
            self.fold();
        }
        self.text.push_str(piece);
        self.col += piece.len();
    }
}

/// A `d=` or `s=` value must be a non-empty run of visible ASCII without `;` (RFC 6376
/// §3.2 tag-value; domains are A-labels, §3.5). Checked at signing so that a bad config
/// value cannot produce a field that breaks the message's header.
fn check_tag_value(tag: &'static str, value: &str) -> Result<(), DkimError> {
    let why = if value.is_empty() {
        "empty"
    } else if !value.bytes().all(|b| b.is_ascii_graphic() && b != b';') {
        "must be visible ASCII without ';' (use the A-label of an internationalized domain)"
    } else {
        return Ok(());
    };
    Err(DkimError::InvalidTag {
        tag,
        value: value.to_string(),
        why,
    })
}

/// A header field name: visible ASCII except `:` (RFC 5322 §3.6.8 ftext).
fn check_field_name(name: &str) -> Result<(), DkimError> {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        Ok(())
    } else {
        Err(DkimError::InvalidTag {
            tag: "h",
            value: name.to_string(),
            why: "not a header field name",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_keeps_lines_short() {
        let mut f = Folder::new("DKIM-Signature:");
        for i in 0..30 {
            f.token(&format!("t{i}=value;"), 0);
        }
        for line in f.text.split("\r\n") {
            assert!(line.len() <= FOLD_WIDTH, "{line:?}");
        }
        assert!(f.text.contains("\r\n "));
    }

    #[test]
    fn tag_values_are_checked() {
        assert!(check_tag_value("d", "example.com").is_ok());
        assert!(check_tag_value("d", "").is_err());
        assert!(check_tag_value("d", "exa mple.com").is_err());
        assert!(check_tag_value("s", "s1;x=1").is_err());
        assert!(check_field_name("Message-ID").is_ok());
        assert!(check_field_name("From:").is_err());
    }
}
