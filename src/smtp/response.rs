//! Server replies as the delivery client reads them: bytes in, one [`Reply`] out (RFC 5321
//! §4.2).
//!
//! [`parse_reply`] is pure and takes whatever has arrived: `Ok(None)` means "need more
//! bytes", never an error, so a reply may be cut anywhere between reads. It only ever
//! consumes whole replies, so a pipelined batch (RFC 2920) comes out one reply per call.
//!
//! What it accepts (RFC 5321 §4.2, `Reply-line`):
//!
//! - lines `code-text` then a last line `code text` or just `code`; every line carries the
//!   same code, whose first digit is 2 to 5 (SMTP has no 1yz replies, §4.2.1);
//! - CRLF, or a bare LF, as the line ending: RFC 5321 §4.2 requires CRLF, but a reply
//!   cannot smuggle anything into a message, so being lenient here only helps delivery;
//! - any bytes in the text (decoded as UTF-8, invalid sequences replaced), since the text
//!   is for people and logs, not for decisions.
//!
//! Bounds: a line is at most [`MAX_REPLY_LINE`] octets and a reply at most [`MAX_REPLY`],
//! so a hostile server cannot make the client buffer without end. An error is reported as
//! soon as the bytes seen prove it, and always the same error whatever the cut: the parse of
//! a prefix is either `Ok(None)` or exactly the parse of the whole.

use std::borrow::Cow;

use memchr::memchr;
use thiserror::Error;

use crate::smtp::reply::{Enhanced, Reply};

/// Longest reply line accepted, in octets including its line ending. RFC 5321 §4.5.3.1.5
/// says 512; real servers exceed it in EHLO and error texts, so we allow eight times that.
pub const MAX_REPLY_LINE: usize = 4096;

/// Longest reply accepted, all lines together, in octets. An EHLO reply is well under
/// 1 KiB; 64 KiB is room for any honest server.
pub const MAX_REPLY: usize = 64 * 1024;

/// Why bytes from the server are not a reply. Any of them means the stream can no longer be
/// trusted to be in step with our commands: the session must end.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ReplyError {
    /// A line does not start with three digits, the first one 2 to 5.
    #[error("reply line does not start with a reply code")]
    BadCode,
    /// The code is followed by something other than a space, a hyphen or the line end.
    #[error("reply code followed by byte {0:#04x}, not a space or hyphen")]
    BadSeparator(u8),
    /// A continuation line has a different code from the first line (RFC 5321 §4.2.1).
    #[error("multi-line reply mixes codes {first} and {then}")]
    MixedCodes {
        /// The first line's code.
        first: u16,
        /// The code of the line that differs.
        then: u16,
    },
    /// A line longer than [`MAX_REPLY_LINE`].
    #[error("reply line longer than {MAX_REPLY_LINE} octets")]
    LineTooLong,
    /// A reply longer than [`MAX_REPLY`].
    #[error("reply longer than {MAX_REPLY} octets")]
    TooLong,
}

impl ReplyError {
    /// The result recipients get when a session ends on this error: 451 4.5.0, transient,
    /// because another attempt (or another MX) may well go through.
    pub fn reply(&self) -> Reply {
        Reply::new(
            451,
            Enhanced(4, 5, 0),
            format!("Malformed reply from server: {self}"),
        )
    }
}

/// Parses one reply from the start of `buf`. Returns the reply and how many bytes it took
/// (through the last line's LF), or `Ok(None)` when `buf` holds no complete reply yet.
///
/// The enhanced status code (RFC 3463 §2, announced by ENHANCEDSTATUSCODES, RFC 2034) is
/// taken from the first line's text when it starts with one, and removed from the text of
/// every line that repeats it, as RFC 2034 §4 has servers do.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
    let Some((code, end)) = scan(buf)? else {
        return Ok(None);
    };
    Ok(Some((build(code, &buf[..end]), end)))
}

/// Finds the end of the first reply and checks every line on the way, without allocating.
/// Returns its code and length, or `None` when it is not complete.
fn scan(buf: &[u8]) -> Result<Option<(u16, usize)>, ReplyError> {
    let mut code = None;
    let mut start = 0;
    loop {
        let rest = &buf[start..];
        // Bytes past either cap are a violation wherever the line would have ended; looking
        // only inside the window keeps the verdict the same however the bytes were cut.
        let line_cap = MAX_REPLY_LINE;
        // No underflow: every line ends inside the window, so `start <= MAX_REPLY`.
        let reply_cap = MAX_REPLY - start;
        let window = &rest[..rest.len().min(line_cap).min(reply_cap)];
        match memchr(b'\n', window) {
            Some(lf) => {
                let line = &window[..lf];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                match check_line(line, true, code)? {
                    Line::Last(c) => return Ok(Some((c, start + lf + 1))),
                    Line::More(c) => code = Some(c),
                    // A complete line always yields a verdict.
                    Line::Partial => unreachable!("complete line reported partial"),
                }
                start += lf + 1;
            }
            None => {
                check_line(window, false, code)?;
                return if rest.len() > window.len() {
                    Err(if reply_cap <= line_cap {
                        ReplyError::TooLong
                    } else {
                        ReplyError::LineTooLong
                    })
                } else {
                    Ok(None)
                };
            }
        }
    }
}

/// What one reply line turned out to be.
enum Line {
    /// `code-text`: more lines follow.
    More(u16),
    /// `code text` or `code`: the reply ends here.
    Last(u16),
    /// Not enough bytes yet to tell.
    Partial,
}

/// Checks one line, without its line ending. `complete` is false when the line's LF has not
/// arrived, in which case only the bytes present are judged. `first` is the code of the
/// reply's earlier lines.
fn check_line(line: &[u8], complete: bool, first: Option<u16>) -> Result<Line, ReplyError> {
    let mut code = 0u16;
    for i in 0..3 {
        let Some(&b) = line.get(i) else {
            return if complete {
                Err(ReplyError::BadCode)
            } else {
                Ok(Line::Partial)
            };
        };
        // RFC 5321 §4.2.1: the first digit is 2, 3, 4 or 5 in SMTP.
        let ok = if i == 0 {
            (b'2'..=b'5').contains(&b)
        } else {
            b.is_ascii_digit()
        };
        if !ok {
            return Err(ReplyError::BadCode);
        }
        code = code * 10 + u16::from(b - b'0');
    }
    if let Some(first) = first {
        if first != code {
            return Err(ReplyError::MixedCodes { first, then: code });
        }
    }
    match line.get(3) {
        None if complete => Ok(Line::Last(code)),
        None => Ok(Line::Partial),
        Some(b' ') => Ok(if complete {
            Line::Last(code)
        } else {
            Line::Partial
        }),
        Some(b'-') => Ok(if complete {
            Line::More(code)
        } else {
            Line::Partial
        }),
        // Possibly the CR of "250\r\n", whose LF has not come yet.
        Some(b'\r') if !complete && line.len() == 4 => Ok(Line::Partial),
        Some(&b) => Err(ReplyError::BadSeparator(b)),
    }
}

/// Builds the reply from bytes [`scan`] has checked: complete lines, one code.
fn build(code: u16, bytes: &[u8]) -> Reply {
    let mut enhanced = None;
    let mut lines = Vec::new();
    for (i, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut text = line.get(4..).unwrap_or_default();
        if i == 0 {
            if let Some((e, rest)) = split_enhanced(text) {
                enhanced = Some(e);
                text = rest;
            }
        } else if let Some(e) = enhanced {
            if let Some((again, rest)) = split_enhanced(text) {
                if again == e {
                    text = rest;
                }
            }
        }
        lines.push(Cow::Owned(String::from_utf8_lossy(text).into_owned()));
    }
    Reply {
        code,
        enhanced,
        lines,
    }
}

/// Splits `class.subject.detail` off the front of a reply text (RFC 3463 §2: class 2, 4 or
/// 5; subject and detail one to three digits), when it is followed by a space or the end.
fn split_enhanced(text: &[u8]) -> Option<(Enhanced, &[u8])> {
    let class = match text.first()? {
        b @ (b'2' | b'4' | b'5') => b - b'0',
        _ => return None,
    };
    if text.get(1) != Some(&b'.') {
        return None;
    }
    let (subject, rest) = number(&text[2..])?;
    let rest = rest.strip_prefix(b".")?;
    let (detail, rest) = number(rest)?;
    let rest = match rest.split_first() {
        None => rest,
        Some((b' ', after)) => after,
        Some(_) => return None,
    };
    Some((Enhanced(class, subject, detail), rest))
}

/// One to three digits at the front of `s`.
fn number(s: &[u8]) -> Option<(u16, &[u8])> {
    let n = s.iter().take(4).take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 3 {
        return None;
    }
    let value = s[..n]
        .iter()
        .fold(0u16, |v, &d| v * 10 + u16::from(d - b'0'));
    Some((value, &s[n..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(mut buf: &[u8]) -> Vec<Result<Reply, ReplyError>> {
        let mut out = Vec::new();
        loop {
            match parse_reply(buf) {
                Ok(Some((r, n))) => {
                    out.push(Ok(r));
                    buf = &buf[n..];
                }
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }

    #[test]
    fn one_line_with_enhanced_code() {
        let (r, n) = parse_reply(b"250 2.1.5 Ok\r\nextra").unwrap().unwrap();
        assert_eq!(n, 14);
        assert_eq!(r, Reply::new(250, Enhanced(2, 1, 5), "Ok"));
    }

    #[test]
    fn multi_line_ehlo() {
        let buf = b"250-mx.test Hello c\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n";
        let (r, n) = parse_reply(buf).unwrap().unwrap();
        assert_eq!(n, buf.len());
        assert_eq!(r.code, 250);
        assert_eq!(r.enhanced, None);
        assert_eq!(
            r.lines,
            ["mx.test Hello c", "PIPELINING", "SIZE 1000", "8BITMIME"]
        );
    }

    #[test]
    fn enhanced_code_is_removed_from_every_line_that_repeats_it() {
        let buf = b"550-5.1.1 The account\r\n550-5.1.1 does not\r\n550 5.1.1 exist\r\n";
        let r = parse_reply(buf).unwrap().unwrap().0;
        assert_eq!(r.enhanced, Some(Enhanced(5, 1, 1)));
        assert_eq!(r.lines, ["The account", "does not", "exist"]);
        assert_eq!(parse_all(r.to_wire_string().as_bytes()), vec![Ok(r)]);
    }

    #[test]
    fn bare_lf_and_code_only_lines() {
        let r = parse_reply(b"250-a\n250\n").unwrap().unwrap();
        assert_eq!(r.0.lines, ["a", ""]);
        assert_eq!(r.1, 10);
        let r = parse_reply(b"354\r\n").unwrap().unwrap().0;
        assert_eq!((r.code, r.lines.len()), (354, 1));
    }

    #[test]
    fn things_that_are_not_enhanced_codes() {
        for text in [
            "2.1 x",
            "3.1.1 x",
            "2.1.1x",
            "2.1234.1 x",
            "2..1 x",
            "mx.test",
        ] {
            let line = format!("250 {text}\r\n");
            let r = parse_reply(line.as_bytes()).unwrap().unwrap().0;
            assert_eq!(r.enhanced, None, "{text}");
            assert_eq!(r.lines, [text]);
        }
        let r = parse_reply(b"451 4.3.0\r\n").unwrap().unwrap().0;
        assert_eq!(r.enhanced, Some(Enhanced(4, 3, 0)));
        assert_eq!(r.lines, [""]);
    }

    #[test]
    fn incomplete_needs_more() {
        for prefix in ["", "2", "250", "250\r", "250-a\r\n", "250-a\r\n250 b"] {
            assert_eq!(parse_reply(prefix.as_bytes()), Ok(None), "{prefix:?}");
        }
    }

    #[test]
    fn garbage_is_an_error_as_soon_as_it_shows() {
        assert_eq!(parse_reply(b"hello"), Err(ReplyError::BadCode));
        assert_eq!(parse_reply(b"1"), Err(ReplyError::BadCode));
        assert_eq!(parse_reply(b"25\r\n"), Err(ReplyError::BadCode));
        assert_eq!(parse_reply(b"250x"), Err(ReplyError::BadSeparator(b'x')));
        assert_eq!(parse_reply(b"250\rx"), Err(ReplyError::BadSeparator(b'\r')));
        assert_eq!(
            parse_reply(b"250-a\r\n251"),
            Err(ReplyError::MixedCodes {
                first: 250,
                then: 251
            })
        );
    }

    #[test]
    fn caps() {
        let mut long = b"250 ".to_vec();
        long.resize(MAX_REPLY_LINE - 2, b'x');
        long.extend_from_slice(b"\r\n");
        assert!(parse_reply(&long).unwrap().is_some());
        long.insert(5, b'x');
        assert_eq!(parse_reply(&long), Err(ReplyError::LineTooLong));
        assert_eq!(
            parse_reply(&long[..MAX_REPLY_LINE + 1]),
            Err(ReplyError::LineTooLong)
        );
        assert_eq!(parse_reply(&long[..MAX_REPLY_LINE]), Ok(None));

        let line = b"250-0123456789012345678901234567890123456789012345678901234567890\r\n";
        let mut many = line.repeat(MAX_REPLY / line.len());
        assert_eq!(parse_reply(&many), Ok(None));
        many.extend_from_slice(line);
        assert_eq!(parse_reply(&many), Err(ReplyError::TooLong));
    }
}
