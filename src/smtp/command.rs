//! SMTP commands: one line in, one [`Command`] out (RFC 5321 §4.1).
//!
//! The parser is pure and borrows from the line, so it can be fuzzed and benched without a
//! session. It checks the grammar of each verb; whether a command is allowed *now* is the
//! session's business (`session::state`).

use thiserror::Error;

use crate::smtp::reply::{replies, Reply};

/// A parsed command line. Arguments borrow from the input line.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `EHLO domain` (RFC 5321 §4.1.1.1).
    Ehlo(&'a [u8]),
    /// `HELO domain`.
    Helo(&'a [u8]),
    /// `MAIL FROM:<path> [params]`; `path` is what stands between the angle brackets.
    Mail {
        /// The reverse-path without its angle brackets; empty for the null sender.
        path: &'a [u8],
        /// Everything after the path: ESMTP parameters, space-separated.
        params: &'a [u8],
    },
    /// `RCPT TO:<path> [params]`.
    Rcpt {
        /// The forward-path without its angle brackets.
        path: &'a [u8],
        /// ESMTP parameters.
        params: &'a [u8],
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030 §2).
    Bdat {
        /// Octets in the chunk that follows the command line.
        size: u64,
        /// True when this is the last chunk.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP [string]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `HELP [string]`.
    Help,
    /// `VRFY string`.
    Vrfy,
    /// `EXPN string`.
    Expn,
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth(&'a [u8]),
}

/// Why a command line did not parse.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CommandError {
    /// The verb is not one we know.
    #[error("unknown command")]
    Unknown,
    /// A known verb with arguments that do not follow its grammar.
    #[error("syntax error: {0}")]
    Syntax(&'static str),
    /// A RCPT path that is not `<...>`.
    #[error("bad address syntax: {0}")]
    Address(&'static str),
    /// A MAIL path that is not `<...>` (RFC 3463 X.1.7: bad sender address syntax).
    #[error("bad sender address syntax: {0}")]
    SenderAddress(&'static str),
    /// A NUL byte: never valid in a command (RFC 5321 §4.1.1 allows only printable ASCII).
    #[error("NUL byte in command")]
    Nul,
}

impl CommandError {
    /// The reply the client gets for this error.
    pub fn reply(&self) -> Reply {
        match self {
            CommandError::Unknown => replies::unknown_command(),
            CommandError::Syntax(what) => replies::syntax(what),
            CommandError::Address(what) => replies::bad_address(what),
            CommandError::SenderAddress(what) => replies::bad_sender(what),
            CommandError::Nul => replies::nul_in_command(),
        }
    }
}

impl<'a> Command<'a> {
    /// Parses one command line, without its line ending.
    ///
    /// ```
    /// use pigeon::smtp::command::Command;
    ///
    /// let cmd = Command::parse(b"MAIL FROM:<a@example.com> SIZE=1024").unwrap();
    /// assert_eq!(cmd, Command::Mail { path: b"a@example.com", params: b"SIZE=1024" });
    /// assert!(Command::parse(b"MAIL FROM:a@example.com").is_err());
    /// ```
    pub fn parse(line: &'a [u8]) -> Result<Command<'a>, CommandError> {
        if memchr::memchr(0, line).is_some() {
            return Err(CommandError::Nul);
        }
        let (verb, rest) = match memchr::memchr(b' ', line) {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &line[line.len()..]),
        };
        let mut v = [0u8; 8];
        if verb.len() > v.len() {
            return Err(CommandError::Unknown);
        }
        v[..verb.len()].copy_from_slice(verb);
        v.make_ascii_uppercase();
        match &v[..verb.len()] {
            b"EHLO" => Ok(Command::Ehlo(domain_arg(rest)?)),
            b"HELO" => Ok(Command::Helo(domain_arg(rest)?)),
            b"MAIL" => {
                let (path, params) = path_arg(rest, b"FROM:").map_err(|e| match e {
                    CommandError::Address(what) => CommandError::SenderAddress(what),
                    other => other,
                })?;
                Ok(Command::Mail { path, params })
            }
            b"RCPT" => {
                let (path, params) = path_arg(rest, b"TO:")?;
                if path.is_empty() {
                    return Err(CommandError::Address("empty recipient"));
                }
                Ok(Command::Rcpt { path, params })
            }
            b"DATA" => no_arg(rest, Command::Data),
            b"BDAT" => bdat_arg(rest),
            b"RSET" => no_arg(rest, Command::Rset),
            b"NOOP" => Ok(Command::Noop),
            b"QUIT" => no_arg(rest, Command::Quit),
            b"HELP" => Ok(Command::Help),
            b"VRFY" if !trim(rest).is_empty() => Ok(Command::Vrfy),
            b"VRFY" => Err(CommandError::Syntax("VRFY needs an argument")),
            b"EXPN" => Ok(Command::Expn),
            b"STARTTLS" => no_arg(rest, Command::StartTls),
            b"AUTH" if !trim(rest).is_empty() => Ok(Command::Auth(trim(rest))),
            b"AUTH" => Err(CommandError::Syntax("AUTH needs a mechanism")),
            _ => Err(CommandError::Unknown),
        }
    }
}

fn trim(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

fn no_arg<'a>(rest: &[u8], cmd: Command<'a>) -> Result<Command<'a>, CommandError> {
    if trim(rest).is_empty() {
        Ok(cmd)
    } else {
        Err(CommandError::Syntax("this command takes no argument"))
    }
}

fn domain_arg(rest: &[u8]) -> Result<&[u8], CommandError> {
    let arg = trim(rest);
    // RFC 5321 §4.1.1.1: one domain or address literal. Some clients add junk after it;
    // like Postfix we only require that something is there and keep the first word.
    let word = arg.split(|&b| b == b' ').next().unwrap_or(arg);
    if word.is_empty() {
        Err(CommandError::Syntax("hostname required"))
    } else {
        Ok(word)
    }
}

/// Splits `FROM:<path> params`. Accepts a space after the colon, which RFC 5321 forbids
/// but many clients send; refuses a path without angle brackets.
fn path_arg<'a>(rest: &'a [u8], keyword: &[u8]) -> Result<(&'a [u8], &'a [u8]), CommandError> {
    if rest.len() < keyword.len() || !rest[..keyword.len()].eq_ignore_ascii_case(keyword) {
        return Err(CommandError::Syntax(if keyword == b"FROM:" {
            "Syntax: MAIL FROM:<address>"
        } else {
            "Syntax: RCPT TO:<address>"
        }));
    }
    let rest = rest[keyword.len()..].trim_ascii_start();
    if rest.first() != Some(&b'<') {
        return Err(CommandError::Address("address must be in angle brackets"));
    }
    // The path ends at the first '>' outside a quoted string.
    let mut in_quote = false;
    let mut escaped = false;
    for (i, &b) in rest.iter().enumerate().skip(1) {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if in_quote => escaped = true,
            b'"' => in_quote = !in_quote,
            b'>' if !in_quote => {
                let params = &rest[i + 1..];
                if !params.is_empty() && params[0] != b' ' {
                    return Err(CommandError::Address("junk after address"));
                }
                return Ok((&rest[1..i], trim(params)));
            }
            _ => {}
        }
    }
    Err(CommandError::Address("unterminated address"))
}

fn bdat_arg(rest: &[u8]) -> Result<Command<'static>, CommandError> {
    let mut words = trim(rest).split(|&b| b == b' ').filter(|w| !w.is_empty());
    let size = words
        .next()
        .filter(|w| w.len() <= 19 && w.iter().all(u8::is_ascii_digit))
        .and_then(|w| std::str::from_utf8(w).ok()?.parse::<u64>().ok())
        .ok_or(CommandError::Syntax("Syntax: BDAT size [LAST]"))?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case(b"LAST") => true,
        Some(_) => return Err(CommandError::Syntax("Syntax: BDAT size [LAST]")),
    };
    if words.next().is_some() {
        return Err(CommandError::Syntax("Syntax: BDAT size [LAST]"));
    }
    Ok(Command::Bdat { size, last })
}

/// One ESMTP parameter, `KEYWORD[=value]` (RFC 5321 §4.1.2 `esmtp-param`).
#[derive(Debug, PartialEq, Eq)]
pub struct Param<'a> {
    /// The keyword, as sent (compare case-insensitively).
    pub keyword: &'a [u8],
    /// The value after `=`, if any.
    pub value: Option<&'a [u8]>,
}

/// Iterates the space-separated parameters of MAIL or RCPT.
pub fn params(s: &[u8]) -> impl Iterator<Item = Param<'_>> {
    s.split(|&b| b == b' ')
        .filter(|w| !w.is_empty())
        .map(|w| match memchr::memchr(b'=', w) {
            Some(i) => Param {
                keyword: &w[..i],
                value: Some(&w[i + 1..]),
            },
            None => Param {
                keyword: w,
                value: None,
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(
            Command::parse(b"ehlo client.example"),
            Ok(Command::Ehlo(b"client.example"))
        );
        assert_eq!(Command::parse(b"QuIt"), Ok(Command::Quit));
    }

    #[test]
    fn mail_splits_path_and_params() {
        assert_eq!(
            Command::parse(b"MAIL FROM:<a@b.example> SIZE=10 BODY=8BITMIME"),
            Ok(Command::Mail {
                path: b"a@b.example",
                params: b"SIZE=10 BODY=8BITMIME"
            })
        );
        assert_eq!(
            Command::parse(b"MAIL FROM:<>"),
            Ok(Command::Mail {
                path: b"",
                params: b""
            })
        );
    }

    #[test]
    fn quoted_angle_bracket_does_not_end_path() {
        assert_eq!(
            Command::parse(b"RCPT TO:<\"a>b\"@c.example>"),
            Ok(Command::Rcpt {
                path: b"\"a>b\"@c.example",
                params: b""
            })
        );
    }

    #[test]
    fn bad_forms() {
        assert_eq!(
            Command::parse(b"MAIL FROM:a@b"),
            Err(CommandError::SenderAddress(
                "address must be in angle brackets"
            ))
        );
        assert_eq!(
            Command::parse(b"RCPT TO:<>"),
            Err(CommandError::Address("empty recipient"))
        );
        assert_eq!(
            Command::parse(b"EHLO"),
            Err(CommandError::Syntax("hostname required"))
        );
        assert_eq!(
            Command::parse(b"DATA x"),
            Err(CommandError::Syntax("this command takes no argument"))
        );
        assert_eq!(Command::parse(b"FOO"), Err(CommandError::Unknown));
        assert_eq!(Command::parse(b"NO\0OP"), Err(CommandError::Nul));
        assert!(matches!(
            Command::parse(b"BDAT -1"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(
            Command::parse(b"BDAT 99999999999999999999"),
            Err(CommandError::Syntax(_))
        ));
    }

    #[test]
    fn bdat_last() {
        assert_eq!(
            Command::parse(b"BDAT 10 LAST"),
            Ok(Command::Bdat {
                size: 10,
                last: true
            })
        );
        assert_eq!(
            Command::parse(b"bdat 0"),
            Ok(Command::Bdat {
                size: 0,
                last: false
            })
        );
    }

    #[test]
    fn params_split_keyword_and_value() {
        let p: Vec<_> = params(b"SIZE=5  SMTPUTF8").collect();
        assert_eq!(
            p,
            vec![
                Param {
                    keyword: b"SIZE",
                    value: Some(b"5")
                },
                Param {
                    keyword: b"SMTPUTF8",
                    value: None
                },
            ]
        );
    }
}
