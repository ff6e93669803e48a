//! Canonicalization (RFC 6376 §3.4): the header fields and body exactly as they are hashed.
//!
//! The body side is [`BodyHasher`], a push-style state machine: it takes the body in any
//! chunking and never buffers more than a small output block, because the body hash is
//! computed while DATA streams in and a message may be large. What it must hold back
//! across calls is what RFC 6376 lets it drop only once it knows what follows: a CR that
//! may begin a CRLF, a run of whitespace that may end a line (relaxed, §3.4.4), and empty
//! lines that may be the end of the body (§3.4.3, §3.4.4).
//!
//! The header side works on one field at a time (`header_field`); splitting a header
//! section into fields is `fields`.

use ring::digest;

use super::Canonicalization;

/// Canonical output is collected here and hashed in blocks, so runs of one or two bytes
/// (a CRLF, a space) do not each cost a call into the digest.
const OUT_BLOCK: usize = 16 * 1024;

/// Incremental body hash (the `bh=` value, RFC 6376 §3.7 step 1).
///
/// Feed the message body, the octets after the empty line that ends the header section,
/// in content form (not dot-stuffed) with CRLF line endings, in any chunking; then call
/// [`finish`](BodyHasher::finish). The result depends only on the concatenation of the
/// chunks. No length limit (`l=`) is applied: pigeon never signs a prefix of the body,
/// because that would let anyone append content under our signature (§8.2).
pub struct BodyHasher {
    canon: Canonicalization,
    digest: digest::Context,
    /// Canonical output not yet given to `digest`.
    out: Vec<u8>,
    /// Empty lines seen and not yet emitted: they are dropped if the body ends here
    /// (§3.4.3, §3.4.4) and emitted as CRLFs when a non-empty line follows.
    blank_lines: u64,
    /// The previous chunk ended with CR: whether it ends a line depends on the next byte.
    pending_cr: bool,
    /// Relaxed only: a run of WSP inside the current line, emitted as one SP when more
    /// content follows on the line and dropped when the line ends (§3.4.4).
    pending_wsp: bool,
    /// The current line has content already emitted (its CRLF is not yet seen).
    line_has_content: bool,
    /// Anything at all was emitted (for simple's "an empty body is one CRLF").
    emitted_any: bool,
}

impl std::fmt::Debug for BodyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyHasher")
            .field("canon", &self.canon)
            .finish_non_exhaustive()
    }
}

impl BodyHasher {
    /// A hasher for the body canonicalization `canon` (the signer's `body_canon`).
    pub fn new(canon: Canonicalization) -> BodyHasher {
        BodyHasher {
            canon,
            digest: digest::Context::new(&digest::SHA256),
            out: Vec::with_capacity(OUT_BLOCK),
            blank_lines: 0,
            pending_cr: false,
            pending_wsp: false,
            line_has_content: false,
            emitted_any: false,
        }
    }

    /// The canonicalization this hasher applies.
    pub fn canonicalization(&self) -> Canonicalization {
        self.canon
    }

    /// Feeds the next bytes of the body.
    pub fn update(&mut self, mut input: &[u8]) {
        while let Some(&b) = input.first() {
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    self.end_line();
                    input = &input[1..];
                    continue;
                }
                // A CR not followed by LF is ordinary content (the DATA scanner refuses
                // such messages, but the hash must still be defined for them).
                self.content(b"\r");
            }
            match (self.canon, b) {
                (_, b'\r') => {
                    self.pending_cr = true;
                    input = &input[1..];
                }
                (Canonicalization::Relaxed, b' ' | b'\t') => {
                    self.pending_wsp = true;
                    input = &input[1..];
                }
                (Canonicalization::Simple, _) => {
                    // Simple changes nothing inside lines: everything up to the next CR
                    // goes out as it is.
                    let end = memchr::memchr(b'\r', input).unwrap_or(input.len());
                    self.content(&input[..end]);
                    input = &input[end..];
                }
                (Canonicalization::Relaxed, _) => {
                    // Words are short: a plain scan beats memchr3's set-up here (measured).
                    let end = input
                        .iter()
                        .position(|&c| matches!(c, b'\r' | b' ' | b'\t'))
                        .unwrap_or(input.len());
                    self.content(&input[..end]);
                    input = &input[end..];
                }
            }
        }
    }

    /// Ends the body and returns the SHA-256 of its canonical form.
    pub fn finish(mut self) -> [u8; 32] {
        if self.pending_cr {
            self.pending_cr = false;
            self.content(b"\r");
        }
        let add_crlf = match self.canon {
            // §3.4.3: "*CRLF" at the end becomes one CRLF, a missing final CRLF is added,
            // and an empty body is a single CRLF.
            Canonicalization::Simple => self.line_has_content || !self.emitted_any,
            // §3.4.4: a CRLF is added to a non-empty last line without one; trailing
            // empty lines vanish and an empty body stays empty (erratum 1384 fixes the
            // order: whitespace first, then empty lines).
            Canonicalization::Relaxed => self.line_has_content,
        };
        if add_crlf {
            self.out.extend_from_slice(b"\r\n");
        }
        self.digest.update(&self.out);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(self.digest.finish().as_ref());
        hash
    }

    /// Emits `bytes` (no CR; no WSP under relaxed) as content of the current line.
    fn content(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        // Empty lines followed by content are not at the end of the body: they stay.
        while self.blank_lines > 0 {
            self.out.extend_from_slice(b"\r\n");
            self.blank_lines -= 1;
            self.flush_if_full();
        }
        if self.pending_wsp {
            // §3.4.4: a run of WSP inside a line becomes one SP (at the start of a line
            // too: only WSP at the end of a line is removed).
            self.out.push(b' ');
            self.pending_wsp = false;
        }
        self.out.extend_from_slice(bytes);
        self.line_has_content = true;
        self.emitted_any = true;
        self.flush_if_full();
    }

    /// A CRLF ends the current line.
    fn end_line(&mut self) {
        // Relaxed: whitespace at the end of a line is ignored (§3.4.4).
        self.pending_wsp = false;
        if self.line_has_content {
            self.out.extend_from_slice(b"\r\n");
            self.line_has_content = false;
            self.flush_if_full();
        } else {
            self.blank_lines += 1;
        }
    }

    fn flush_if_full(&mut self) {
        if self.out.len() >= OUT_BLOCK {
            self.digest.update(&self.out);
            self.out.clear();
        }
    }
}

/// One header field of a header section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Field<'a> {
    /// The field name, without whitespace before the colon (RFC 5322 §4.5 obs-optional
    /// allows some); the whole line if it has no colon.
    pub name: &'a [u8],
    /// The whole field as it appears, continuation lines included, without its final CRLF.
    pub raw: &'a [u8],
}

impl Field<'_> {
    /// True if this field's name is `name`, ignoring ASCII case (RFC 5322 §1.2.2).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// The field body: everything after the colon, folding included.
    pub fn value(&self) -> &[u8] {
        match memchr::memchr(b':', self.raw) {
            Some(i) => &self.raw[i + 1..],
            None => &[],
        }
    }
}

/// Splits a header section (CRLF line endings, up to but excluding the empty line) into
/// fields, top to bottom. A line starting with SP or HTAB continues the previous field
/// (RFC 5322 §2.2.3). Bare LF line endings are tolerated so that a message from a
/// careless test or tool is still split where a reader would split it.
pub(crate) fn fields(headers: &[u8]) -> Vec<Field<'_>> {
    let mut out: Vec<Field<'_>> = Vec::new();
    // (start of the current field, end of its last line without the line ending)
    let mut current: Option<(usize, usize)> = None;
    let mut pos = 0;
    while pos < headers.len() {
        let nl = memchr::memchr(b'\n', &headers[pos..]).map(|i| pos + i);
        let next = nl.map_or(headers.len(), |i| i + 1);
        let mut end = nl.unwrap_or(headers.len());
        if nl.is_some() && end > pos && headers[end - 1] == b'\r' {
            end -= 1;
        }
        let continuation = matches!(headers[pos], b' ' | b'\t');
        match current {
            Some((start, _)) if continuation => current = Some((start, end)),
            _ => {
                if let Some((start, last)) = current.take() {
                    out.push(make_field(&headers[start..last]));
                }
                if end > pos || nl.is_none() {
                    current = Some((pos, end));
                }
            }
        }
        pos = next;
    }
    if let Some((start, last)) = current {
        out.push(make_field(&headers[start..last]));
    }
    out
}

fn make_field(raw: &[u8]) -> Field<'_> {
    let name = match memchr::memchr(b':', raw) {
        Some(i) => trim_wsp_end(&raw[..i]),
        None => raw,
    };
    Field { name, raw }
}

fn trim_wsp_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Appends one header field in canonical form, followed by CRLF when `crlf` (§3.7: every
/// signed field ends with CRLF; the DKIM-Signature field itself is hashed without one).
///
/// `raw` is the field as it appears, without its final CRLF.
pub(crate) fn header_field(canon: Canonicalization, raw: &[u8], crlf: bool, out: &mut Vec<u8>) {
    match canon {
        // §3.4.1: no change at all.
        Canonicalization::Simple => out.extend_from_slice(raw),
        Canonicalization::Relaxed => relaxed_field(raw, out),
    }
    if crlf {
        out.extend_from_slice(b"\r\n");
    }
}

/// §3.4.2, in its order: lower-case the name; unfold; each WSP run becomes one SP;
/// trailing WSP goes; WSP around the colon goes (which for the value means leading WSP).
fn relaxed_field(raw: &[u8], out: &mut Vec<u8>) {
    let Some(colon) = memchr::memchr(b':', raw) else {
        // Not a field (no colon); it cannot be named in h=, but keep it well defined.
        out.extend(raw.iter().map(u8::to_ascii_lowercase));
        return;
    };
    let name = trim_wsp_end(&raw[..colon]);
    out.extend(name.iter().map(u8::to_ascii_lowercase));
    out.push(b':');
    let mut pending_wsp = false;
    let mut started = false;
    for &b in &raw[colon + 1..] {
        match b {
            // Unfolding removes the line breaks; the WSP that follows them is then part
            // of the run it sits in.
            b'\r' | b'\n' => {}
            b' ' | b'\t' => pending_wsp = true,
            _ => {
                if pending_wsp && started {
                    out.push(b' ');
                }
                pending_wsp = false;
                started = true;
                out.push(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(canon: Canonicalization, input: &[u8]) -> Vec<u8> {
        // The reference: the canonical bytes, checked through the hash of the streamed form.
        let mut h = BodyHasher::new(canon);
        h.update(input);
        let streamed = h.finish();
        let expected = canonical_body_reference(canon, input);
        assert_eq!(
            streamed,
            digest_of(&expected),
            "input {:?}",
            String::from_utf8_lossy(input)
        );
        expected
    }

    fn digest_of(bytes: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
        out
    }

    /// A direct, whole-buffer transcription of §3.4.3 and §3.4.4 (with erratum 1384's
    /// order) for CRLF-only input, to check the streaming machine against.
    fn canonical_body_reference(canon: Canonicalization, input: &[u8]) -> Vec<u8> {
        let text = input.to_vec();
        let mut lines: Vec<Vec<u8>> = Vec::new();
        let mut rest = &text[..];
        while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
            lines.push(rest[..i].to_vec());
            rest = &rest[i + 2..];
        }
        if !rest.is_empty() {
            lines.push(rest.to_vec());
        }
        if canon == Canonicalization::Relaxed {
            for line in &mut lines {
                let mut out = Vec::new();
                let mut wsp = false;
                for &b in line.iter() {
                    if b == b' ' || b == b'\t' {
                        wsp = true;
                    } else {
                        if wsp {
                            out.push(b' ');
                        }
                        wsp = false;
                        out.push(b);
                    }
                }
                *line = out;
            }
        }
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        let mut out = Vec::new();
        for line in &lines {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        if out.is_empty() && canon == Canonicalization::Simple {
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    fn relaxed(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        header_field(Canonicalization::Relaxed, raw, true, &mut out);
        out
    }

    /// RFC 6376 §3.4.6, both canonicalizations of its example message.
    #[test]
    fn rfc6376_example() {
        let headers = b"A: X\r\nB : Y\t\r\n\tZ  \r\n";
        let body_in = b" C \r\nD \t E\r\n\r\n\r\n";
        let mut relaxed_headers = Vec::new();
        let mut simple_headers = Vec::new();
        for f in fields(headers) {
            header_field(Canonicalization::Relaxed, f.raw, true, &mut relaxed_headers);
            header_field(Canonicalization::Simple, f.raw, true, &mut simple_headers);
        }
        assert_eq!(relaxed_headers, b"a:X\r\nb:Y Z\r\n");
        assert_eq!(simple_headers, headers);
        assert_eq!(body(Canonicalization::Relaxed, body_in), b" C\r\nD E\r\n");
        assert_eq!(
            body(Canonicalization::Simple, body_in),
            b" C \r\nD \t E\r\n"
        );
    }

    /// The empty-body hashes given by RFC 6376 errata 1376/1377 (§3.4.3, §3.4.4).
    #[test]
    fn empty_body_hashes() {
        let b64 = |c| data_encoding::BASE64.encode(&BodyHasher::new(c).finish());
        assert_eq!(
            b64(Canonicalization::Simple),
            "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY="
        );
        assert_eq!(
            b64(Canonicalization::Relaxed),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn body_edges() {
        use Canonicalization::{Relaxed, Simple};
        assert_eq!(body(Simple, b"\r\n\r\n\r\n"), b"\r\n");
        assert_eq!(body(Relaxed, b"\r\n\r\n\r\n"), b"");
        assert_eq!(body(Relaxed, b"  \r\n\t\r\n"), b"");
        assert_eq!(body(Simple, b"  \r\n\t\r\n"), b"  \r\n\t\r\n");
        assert_eq!(body(Simple, b"abc"), b"abc\r\n");
        assert_eq!(body(Relaxed, b"abc  "), b"abc\r\n");
        assert_eq!(body(Relaxed, b"a\r\n\r\nb\r\n\r\n"), b"a\r\n\r\nb\r\n");
        assert_eq!(body(Relaxed, b"\t lead\r\n"), b" lead\r\n");
        assert_eq!(body(Simple, b"..dot\r\n"), b"..dot\r\n");
        // A bare CR is content, in both.
        assert_eq!(body(Relaxed, b"a\rb\r\n"), b"a\rb\r\n");
    }

    #[test]
    fn relaxed_header_cases() {
        assert_eq!(relaxed(b"SUBJect: AbC"), b"subject:AbC\r\n");
        assert_eq!(relaxed(b"Subject \t:\t a \r\n  b\t"), b"subject:a b\r\n");
        assert_eq!(relaxed(b"X-Empty:"), b"x-empty:\r\n");
        assert_eq!(relaxed(b"X-Empty:   "), b"x-empty:\r\n");
        // Non-ASCII is carried as it is.
        assert_eq!(
            relaxed("Subject: caf\u{e9}".as_bytes()),
            "subject:caf\u{e9}\r\n".as_bytes()
        );
    }

    #[test]
    fn field_splitting() {
        let f = fields(b"From: a\r\n b\r\nTo : c\r\nX\r\n");
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].raw, b"From: a\r\n b");
        assert_eq!(f[1].name, b"To");
        assert!(f[1].is("to"));
        assert_eq!(f[1].value(), b" c");
        assert_eq!(f[2].name, b"X");
        // Unterminated last line, and LF endings.
        let g = fields(b"A: 1\nB: 2");
        assert_eq!(g.len(), 2);
        assert_eq!(g[1].raw, b"B: 2");
    }
}
