//! Message content: the DATA scanner and the BDAT encoder.
//!
//! Both turn what the client sends into the spool's *wire form*: CRLF line endings,
//! dot-stuffed, without the terminating `.CRLF`, so delivery can send it unchanged. Both
//! record content faults instead of failing at once, because the session must keep reading
//! until the end of the content (the final dot, or the last chunk) to stay in step with the
//! client, and only then answer.
//!
//! SMTP smuggling (CVE-2023-51764 and friends): only `CRLF.CRLF` ends DATA. Bare LF or bare
//! CR anywhere in the content makes the message fail with 554 5.6.0 and nothing is spooled:
//! a downstream server that reads `LF.LF` as the end would see a different message, so we
//! refuse to carry one rather than normalise it. See docs/smtp-edges.md.

use memchr::{memchr, memchr3, memchr_iter};

use crate::smtp::reply::{replies, Reply};

/// RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets including CRLF.
pub const MAX_TEXT_LINE: usize = 998;

/// Faults found in content; they decide the reply once the content has ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// The content exceeded the size limit; its bytes were dropped as they came.
    pub too_big: bool,
    /// A NUL byte.
    pub nul: bool,
    /// A CR not followed by LF, or an LF not preceded by CR.
    pub bare_newline: bool,
    /// A line over [`MAX_TEXT_LINE`] octets.
    pub long_line: bool,
}

impl Faults {
    /// The reply for content with these faults, or `None` when it may be spooled.
    pub fn reply(&self) -> Option<Reply> {
        if self.too_big {
            Some(replies::too_big())
        } else if self.bare_newline {
            Some(replies::bad_content(
                "Bare CR or LF in message; lines must end with CRLF",
            ))
        } else if self.nul {
            Some(replies::bad_content("NUL byte in message"))
        } else if self.long_line {
            Some(replies::bad_content(
                "Line longer than 998 octets in message",
            ))
        } else {
            None
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ScanState {
    /// After CRLF (or at the start): a dot here may begin the terminator.
    LineStart,
    /// Inside a line.
    Mid,
    /// After a CR inside a line.
    Cr,
    /// After a dot at the start of a line.
    Dot,
    /// After `.CR` at the start of a line.
    DotCr,
}

/// Finds the end of DATA content and checks it, byte stream in, wire-form body out.
#[derive(Debug)]
pub struct DataScanner {
    state: ScanState,
    line_len: usize,
    seen: usize,
    limit: usize,
    faults: Faults,
}

impl DataScanner {
    /// A scanner for content of at most `limit` octets.
    pub fn new(limit: usize) -> DataScanner {
        DataScanner {
            state: ScanState::LineStart,
            line_len: 0,
            seen: 0,
            limit,
            faults: Faults::default(),
        }
    }

    /// Consumes bytes from `input`, appending them to `body` while under the limit.
    /// Returns how many bytes were consumed and whether the terminating `CRLF.CRLF` was seen;
    /// when it was, nothing after it was consumed and `body` holds the content without the
    /// final `.CRLF`.
    pub fn feed(&mut self, input: &[u8], body: &mut Vec<u8>) -> (usize, bool) {
        let (consumed, done) = self.scan(input);
        self.seen += consumed;
        if !self.faults.too_big {
            // The terminator's ".\r\n" is not counted against the limit. Until the end is
            // seen, up to three octets of it may already be in, so allow for them.
            let allowance = if done { 3 } else { 0 };
            if self.seen.saturating_sub(3) > self.limit
                || (done && self.seen - allowance > self.limit)
            {
                self.faults.too_big = true;
                *body = Vec::new();
            } else {
                body.extend_from_slice(&input[..consumed]);
                if done {
                    body.truncate(body.len() - 3);
                }
            }
        }
        (consumed, done)
    }

    /// The faults seen so far.
    pub fn faults(&self) -> Faults {
        self.faults
    }

    fn end_line(&mut self) {
        if self.line_len > MAX_TEXT_LINE {
            self.faults.long_line = true;
        }
        self.line_len = 0;
    }

    fn scan(&mut self, input: &[u8]) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                ScanState::Mid => match memchr3(b'\r', b'\n', 0, &input[i..]) {
                    None => {
                        self.line_len += input.len() - i;
                        i = input.len();
                    }
                    Some(j) => {
                        self.line_len += j;
                        i += j;
                        match input[i] {
                            b'\r' => self.state = ScanState::Cr,
                            b'\n' => {
                                // A bare LF ends nothing: the next dot is not at a line start.
                                self.faults.bare_newline = true;
                                self.end_line();
                            }
                            _ => {
                                self.faults.nul = true;
                                self.line_len += 1;
                            }
                        }
                        i += 1;
                    }
                },
                ScanState::LineStart => {
                    self.state = match input[i] {
                        b'.' => ScanState::Dot,
                        _ => ScanState::Mid,
                    };
                    if self.state == ScanState::Dot {
                        // A leading dot is the terminator or dot-stuffing, never content:
                        // it does not count towards the line limit.
                        i += 1;
                    }
                }
                ScanState::Cr => {
                    if input[i] == b'\n' {
                        self.end_line();
                        self.state = ScanState::LineStart;
                        i += 1;
                    } else {
                        self.faults.bare_newline = true;
                        self.line_len += 1;
                        self.state = ScanState::Mid;
                    }
                }
                ScanState::Dot => {
                    if input[i] == b'\r' {
                        self.state = ScanState::DotCr;
                        i += 1;
                    } else {
                        self.state = ScanState::Mid;
                    }
                }
                ScanState::DotCr => {
                    if input[i] == b'\n' {
                        return (i + 1, true);
                    }
                    self.faults.bare_newline = true;
                    self.line_len += 1;
                    self.state = ScanState::Mid;
                }
            }
        }
        (i, false)
    }
}

/// Turns BDAT chunks (raw content, RFC 3030) into the spool's wire form: dot-stuffed, with
/// a final CRLF, checked for the same faults as DATA content.
#[derive(Debug)]
pub struct BdatEncoder {
    at_line_start: bool,
    pending_cr: bool,
    line_len: usize,
    seen: u64,
    limit: u64,
    faults: Faults,
}

impl BdatEncoder {
    /// An encoder for content of at most `limit` octets.
    pub fn new(limit: usize) -> BdatEncoder {
        BdatEncoder {
            at_line_start: true,
            pending_cr: false,
            line_len: 0,
            seen: 0,
            limit: limit as u64,
            faults: Faults::default(),
        }
    }

    /// Declares that a chunk of `size` octets is coming; false if it would exceed the limit.
    /// The chunk must still be read (and dropped) to stay in step with the client.
    pub fn admit(&mut self, size: u64) -> bool {
        self.seen = self.seen.saturating_add(size);
        if self.seen > self.limit {
            self.faults.too_big = true;
        }
        !self.faults.too_big
    }

    /// Encodes part of a chunk into `body`. Call only with bytes of admitted chunks.
    pub fn feed(&mut self, mut input: &[u8], body: &mut Vec<u8>) {
        if self.faults.too_big {
            *body = Vec::new();
            return;
        }
        if memchr(0, input).is_some() {
            self.faults.nul = true;
        }
        if self.pending_cr && input.first().is_some_and(|&b| b != b'\n') {
            self.faults.bare_newline = true;
        }
        while !input.is_empty() {
            if self.at_line_start && input[0] == b'.' {
                body.push(b'.');
            }
            let (segment, ends_line) = match memchr(b'\n', input) {
                Some(j) => (&input[..=j], true),
                None => (input, false),
            };
            let text_len = if ends_line {
                segment.len() - 1
            } else {
                segment.len()
            };
            let after_cr = if segment.len() > 1 {
                segment[segment.len() - 2] == b'\r'
            } else {
                self.pending_cr
            };
            if ends_line && !after_cr {
                self.faults.bare_newline = true;
            }
            // Every CR must be followed by LF: the only allowed one is just before the LF
            // (or, without an LF yet, the last byte, which the next chunk must follow).
            let allowed_cr = if ends_line {
                segment.len().checked_sub(2)
            } else {
                segment.len().checked_sub(1)
            };
            if memchr_iter(b'\r', segment).any(|k| Some(k) != allowed_cr) {
                self.faults.bare_newline = true;
            }
            self.line_len += text_len;
            body.extend_from_slice(segment);
            if ends_line {
                if self.line_len.saturating_sub(1) > MAX_TEXT_LINE {
                    self.faults.long_line = true;
                }
                self.line_len = 0;
                self.pending_cr = false;
            } else {
                self.pending_cr = segment.last() == Some(&b'\r');
            }
            self.at_line_start = ends_line;
            input = &input[segment.len()..];
        }
    }

    /// Ends the content: adds the final CRLF wire form requires and returns the faults.
    pub fn finish(&mut self, body: &mut Vec<u8>) -> Faults {
        if self.pending_cr {
            // A trailing CR with no LF after it.
            self.faults.bare_newline = true;
        }
        if !self.at_line_start && !self.faults.too_big {
            body.extend_from_slice(b"\r\n");
        }
        self.faults
    }
}

/// Follows wire-form content as it grows and hands on the message *body* in content form
/// (after the header section's empty line, dot-stuffing removed), so that a body hash
/// (DKIM) is computed while the message streams in rather than by reading it again.
#[derive(Debug, Default)]
pub struct BodyTap {
    /// Octets of the wire form already looked at.
    seen: usize,
    in_body: bool,
    at_line_start: bool,
    /// How much of the "\r\n\r\n" that ends the header section has been seen.
    separator: u8,
}

impl BodyTap {
    /// A tap at the start of the content.
    pub fn new() -> BodyTap {
        BodyTap {
            seen: 0,
            in_body: false,
            at_line_start: true,
            separator: 2,
        }
    }

    /// Looks at `wire[seen..upto]`, the part of the growing wire form that is final, and
    /// passes body bytes in content form to `out`.
    pub fn advance(&mut self, wire: &[u8], upto: usize, mut out: impl FnMut(&[u8])) {
        let upto = upto.min(wire.len());
        while self.seen < upto {
            let rest = &wire[self.seen..upto];
            if !self.in_body {
                // Header section: find the empty line, tracking line starts across calls.
                let b = rest[0];
                self.separator = match (self.separator, b) {
                    (0 | 2, b'\r') => self.separator + 1,
                    (1 | 3, b'\n') => self.separator + 1,
                    (_, b'\r') => 1,
                    _ => 0,
                };
                self.seen += 1;
                if self.separator == 4 {
                    self.in_body = true;
                    self.at_line_start = true;
                }
                continue;
            }
            if self.at_line_start && rest[0] == b'.' {
                // The stuffed dot is not content (RFC 5321 §4.5.2).
                self.seen += 1;
                self.at_line_start = false;
                continue;
            }
            let line_end = memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
            out(&rest[..line_end]);
            self.at_line_start = rest[line_end - 1] == b'\n';
            self.seen += line_end;
        }
    }

    /// Octets of the wire form looked at so far.
    pub fn seen(&self) -> usize {
        self.seen
    }
}

/// The message content of `wire`: `wire` itself when no line starts with a dot (most
/// messages), else a copy with dot-stuffing removed. For BDAT (RFC 3030), which carries the
/// content as it is.
pub fn unstuffed(wire: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if wire.first() == Some(&b'.') || memchr::memmem::find(wire, b"\n.").is_some() {
        std::borrow::Cow::Owned(unstuff(wire))
    } else {
        std::borrow::Cow::Borrowed(wire)
    }
}

/// Reverses dot-stuffing: wire form to message content (RFC 5321 §4.5.2). Used to show a
/// spooled message to an operator, and to deliver it with BDAT.
pub fn unstuff(wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(wire.len());
    // Every dot that starts a line is a stuffed one: copy the runs between them.
    let mut from = usize::from(wire.first() == Some(&b'.'));
    for i in memchr::memmem::find_iter(wire, b"\n.") {
        out.extend_from_slice(&wire[from..=i]);
        from = i + 2;
    }
    out.extend_from_slice(&wire[from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8]) -> (usize, bool, Vec<u8>, Faults) {
        let mut s = DataScanner::new(1 << 20);
        let mut body = Vec::new();
        let (n, done) = s.feed(input, &mut body);
        (n, done, body, s.faults())
    }

    #[test]
    fn ends_at_crlf_dot_crlf_and_keeps_wire_form() {
        let (n, done, body, faults) = scan_all(b"Subject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n");
        assert!(done);
        assert_eq!(n, 24);
        assert_eq!(body, b"Subject: x\r\n\r\n..dot\r\n");
        assert_eq!(faults, Faults::default());
    }

    #[test]
    fn empty_message() {
        let (n, done, body, _) = scan_all(b".\r\n");
        assert_eq!((n, done, body.len()), (3, true, 0));
    }

    #[test]
    fn smuggling_sequences_never_end_data() {
        for seq in [
            &b"a\n.\nMAIL"[..],
            b"a\r.\rMAIL",
            b"a\n.\r\nMAIL",
            b"a\r\n.\nMAIL",
            b"a\r.\r\nMAIL",
            b"a\r\n.\rMAIL",
            b"a\r\n.\r\r\nMAIL",
            b"a\n\r.\r\nMAIL",
        ] {
            let (_, done, _, faults) = scan_all(seq);
            assert!(!done, "{:?} ended DATA", String::from_utf8_lossy(seq));
            assert!(
                faults.bare_newline,
                "{:?} not flagged",
                String::from_utf8_lossy(seq)
            );
        }
    }

    #[test]
    fn one_byte_at_a_time_matches_whole() {
        let msg = b"A: b\r\n\r\n.hidden\r\nline\r\n.\r\n";
        let mut s = DataScanner::new(1 << 20);
        let mut body = Vec::new();
        for (i, b) in msg.iter().enumerate() {
            let (n, done) = s.feed(std::slice::from_ref(b), &mut body);
            assert_eq!(n, 1);
            assert_eq!(done, i == msg.len() - 1);
        }
        assert_eq!(body, b"A: b\r\n\r\n.hidden\r\nline\r\n");
    }

    #[test]
    fn size_limit_drops_body_but_finds_end() {
        let mut s = DataScanner::new(10);
        let mut body = Vec::new();
        let (_, done) = s.feed(b"0123456789abc\r\n.\r\n", &mut body);
        assert!(done);
        assert!(s.faults().too_big);
        assert!(body.is_empty());
        let mut s = DataScanner::new(12);
        let (_, done) = s.feed(b"0123456789\r\n.\r\n", &mut body);
        assert!(done && !s.faults().too_big);
        // Exactly at the limit, with the read ending inside the terminator.
        let mut s = DataScanner::new(12);
        let mut body = Vec::new();
        assert!(!s.feed(b"0123456789\r\n.\r", &mut body).1);
        assert!(!s.faults().too_big);
        assert!(s.feed(b"\n", &mut body).1);
        assert!(!s.faults().too_big);
        assert_eq!(body, b"0123456789\r\n");
    }

    #[test]
    fn long_line_and_nul_are_faults() {
        let mut long = vec![b'x'; 999];
        long.extend_from_slice(b"\r\n.\r\n");
        assert!(scan_all(&long).3.long_line);
        long.remove(0);
        assert!(!scan_all(&long).3.long_line);
        // A dot-stuffed line of 998 content octets is 999 on the wire and still legal.
        long.insert(0, b'.');
        long[1] = b'.';
        assert!(!scan_all(&long).3.long_line);
        assert!(scan_all(b"a\0b\r\n.\r\n").3.nul);
    }

    fn bdat(chunks: &[&[u8]]) -> (Vec<u8>, Faults) {
        let mut e = BdatEncoder::new(1 << 20);
        let mut body = Vec::new();
        for c in chunks {
            assert!(e.admit(c.len() as u64));
            e.feed(c, &mut body);
        }
        let f = e.finish(&mut body);
        (body, f)
    }

    #[test]
    fn bdat_stuffs_dots_and_adds_final_crlf() {
        let (body, f) = bdat(&[b"a\r\n.b\r\n", b".", b"\r\nc"]);
        assert_eq!(body, b"a\r\n..b\r\n..\r\nc\r\n");
        assert_eq!(f, Faults::default());
        assert_eq!(unstuff(&body), b"a\r\n.b\r\n.\r\nc\r\n");
    }

    proptest::proptest! {
        /// Stuffing (as BDAT content is spooled) and unstuffing (as it is delivered with
        /// BDAT) give back the content, whatever its lines and dots.
        #[test]
        fn unstuff_reverses_stuffing(lines in proptest::collection::vec("[.a-z]{0,4}", 0..12)) {
            let content: Vec<u8> = lines.iter().flat_map(|l| format!("{l}\r\n").into_bytes()).collect();
            let (wire, _) = bdat(&[&content]);
            proptest::prop_assert_eq!(unstuff(&wire), content.clone());
            proptest::prop_assert_eq!(&*unstuffed(&wire), &content[..]);
        }
    }

    #[test]
    fn bdat_cr_split_across_chunks_is_fine() {
        assert_eq!(bdat(&[b"a\r", b"\nb\r\n"]).1, Faults::default());
        assert!(bdat(&[b"a\r", b"b\r\n"]).1.bare_newline);
        assert!(bdat(&[b"a\nb\r\n"]).1.bare_newline);
        assert!(bdat(&[b"a\r"]).1.bare_newline);
        assert!(bdat(&[b"a\rb\r\n"]).1.bare_newline);
    }

    #[test]
    fn body_tap_skips_headers_and_unstuffs_in_any_chunking() {
        let wire = b"From: a@b\r\nSubject: x\r\n\r\n..dot\r\nplain\r\n.\r\nend\r\n";
        let expected = b"..dot\r\nplain\r\n.\r\nend\r\n";
        let expected = unstuff(expected);
        for step in 1..wire.len() {
            let mut tap = BodyTap::new();
            let mut got = Vec::new();
            let mut upto = 0;
            while upto < wire.len() {
                upto = (upto + step).min(wire.len());
                tap.advance(wire, upto, |b| got.extend_from_slice(b));
            }
            assert_eq!(got, expected, "step {step}");
        }
        let mut tap = BodyTap::new();
        let mut got = Vec::new();
        tap.advance(b"\r\nbody only\r\n", 15, |b| got.extend_from_slice(b));
        assert_eq!(got, b"body only\r\n");
    }

    #[test]
    fn bdat_over_limit() {
        let mut e = BdatEncoder::new(4);
        assert!(e.admit(3));
        assert!(!e.admit(3));
        let mut body = Vec::new();
        assert!(e.finish(&mut body).too_big);
    }
}
