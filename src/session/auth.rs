//! SASL PLAIN (RFC 4616) and LOGIN for SMTP AUTH (RFC 4954), as pure functions over lines.
//!
//! [`start`] takes the arguments of an `AUTH` command, [`respond`] each later response
//! line; both return a [`Step`]: a 334 challenge and the state to wait in, a [`Login`]
//! to check, or the reply that ends the exchange. Whether AUTH is allowed at all (TLS,
//! sequence) is the session's business; checking the password is the driver's. The `*`
//! cancel (RFC 4954 §4) is handled here too.

use std::fmt;

use zeroize::Zeroizing;

use crate::smtp::reply::{replies, Reply};

/// The mechanisms offered in EHLO, in order.
pub const MECHANISMS: &str = "PLAIN LOGIN";

/// base64 of `Username:` and `Password:`, the challenges every LOGIN client expects.
const LOGIN_USER: &str = "VXNlcm5hbWU6";
const LOGIN_PASSWORD: &str = "UGFzc3dvcmQ6";

/// An exchange waiting for the client's next line.
#[derive(Debug)]
pub enum Exchange {
    /// PLAIN sent an empty challenge; the next line is the whole response.
    Plain,
    /// LOGIN asked for the user name.
    LoginUser,
    /// LOGIN has the user name and asked for the password.
    LoginPassword(String),
}

/// A password, wiped from memory when dropped and never printed.
pub struct Password(Zeroizing<String>);

impl Password {
    /// The password itself, for the check.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// A user name and password the client sent.
#[derive(Debug)]
pub struct Login {
    /// The authentication identity (authcid).
    pub user: String,
    /// Its password.
    pub password: Password,
}

/// What the session does next.
#[derive(Debug)]
pub enum Step {
    /// Send the 334 challenge and wait for a response line in this state.
    Challenge(Reply, Exchange),
    /// Check these credentials.
    Verify(Login),
    /// End the exchange with this reply (a client error).
    Refuse(Reply),
}

/// Starts an exchange from `AUTH mechanism [initial-response]`'s arguments.
pub fn start(args: &[u8]) -> Step {
    let mut words = args.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let mechanism = words.next().unwrap_or_default();
    let initial = words.next();
    if words.next().is_some() {
        return Step::Refuse(replies::syntax("Too many AUTH arguments"));
    }
    if mechanism.eq_ignore_ascii_case(b"PLAIN") {
        match initial {
            None => Step::Challenge(replies::auth_challenge(""), Exchange::Plain),
            Some(ir) => respond(Exchange::Plain, initial_response(ir)),
        }
    } else if mechanism.eq_ignore_ascii_case(b"LOGIN") {
        match initial {
            None => Step::Challenge(replies::auth_challenge(LOGIN_USER), Exchange::LoginUser),
            Some(ir) => respond(Exchange::LoginUser, initial_response(ir)),
        }
    } else {
        Step::Refuse(replies::auth_unknown_mechanism())
    }
}

/// Takes the client's response line (without CRLF) in state `exchange`.
pub fn respond(exchange: Exchange, line: &[u8]) -> Step {
    if line == b"*" {
        return Step::Refuse(replies::auth_cancelled());
    }
    let Some(decoded) = decode(line) else {
        return Step::Refuse(replies::auth_malformed("Cannot decode response"));
    };
    match exchange {
        Exchange::Plain => plain(&decoded),
        Exchange::LoginUser => match text(&decoded) {
            Some(user) => Step::Challenge(
                replies::auth_challenge(LOGIN_PASSWORD),
                Exchange::LoginPassword(user.to_owned()),
            ),
            None => Step::Refuse(replies::auth_malformed("Bad user name")),
        },
        Exchange::LoginPassword(user) => match text(&decoded) {
            Some(password) => Step::Verify(Login {
                user,
                password: Password(Zeroizing::new(password.to_owned())),
            }),
            None => Step::Refuse(replies::auth_malformed("Bad password")),
        },
    }
}

/// RFC 4954 §4: an initial response of `=` stands for an empty one.
fn initial_response(ir: &[u8]) -> &[u8] {
    if ir == b"=" {
        b""
    } else {
        ir
    }
}

/// Strict base64 (padding required); the decoded bytes are wiped when dropped.
fn decode(line: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    data_encoding::BASE64.decode(line).ok().map(Zeroizing::new)
}

/// A non-empty UTF-8 string without NUL (RFC 4616 §2 forbids NUL in every field).
fn text(bytes: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(bytes).ok()?;
    (!s.is_empty() && !s.contains('\0')).then_some(s)
}

/// `[authzid] NUL authcid NUL passwd` (RFC 4616 §2).
fn plain(message: &[u8]) -> Step {
    let mut fields = message.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(passwd), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Step::Refuse(replies::auth_malformed("Malformed PLAIN response"));
    };
    let (Some(user), Some(password)) = (text(authcid), text(passwd)) else {
        return Step::Refuse(replies::auth_malformed("Malformed PLAIN response"));
    };
    // Acting as another identity (proxy authorization) is not offered: an authzid must be
    // empty or the user's own (RFC 4616 §2 lets the server refuse it).
    if !authzid.is_empty() && authzid != authcid {
        return Step::Refuse(replies::auth_failed());
    }
    Step::Verify(Login {
        user: user.to_owned(),
        password: Password(Zeroizing::new(password.to_owned())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> String {
        data_encoding::BASE64.encode(s)
    }

    fn verified(step: Step) -> (String, String) {
        match step {
            Step::Verify(l) => (l.user, l.password.expose().to_owned()),
            other => panic!("not a login: {other:?}"),
        }
    }

    fn refused(step: Step) -> String {
        match step {
            Step::Refuse(r) => r.to_string(),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn plain_with_and_without_initial_response() {
        let ir = b64(b"\0alice\0pw");
        let got = verified(start(format!("PLAIN {ir}").as_bytes()));
        assert_eq!(got, ("alice".into(), "pw".into()));
        let Step::Challenge(r, ex) = start(b"plain") else {
            panic!()
        };
        assert_eq!(r.to_wire_string(), "334 \r\n");
        let got = verified(respond(ex, b64(b"alice\0alice\0pw").as_bytes()));
        assert_eq!(got, ("alice".into(), "pw".into()));
    }

    #[test]
    fn plain_refuses_bad_messages() {
        assert!(refused(start(
            format!("PLAIN {}", b64(b"bob\0alice\0pw")).as_bytes()
        ))
        .starts_with("535 5.7.8"));
        for bad in [&b"alice\0pw"[..], b"\0\0pw", b"\0alice\0", b"\0a\0b\0c"] {
            let r = refused(start(format!("PLAIN {}", b64(bad)).as_bytes()));
            assert!(r.starts_with("501 5.5.2"), "{bad:?}: {r}");
        }
        assert!(refused(start(b"PLAIN =")).starts_with("501 5.5.2"));
        assert!(refused(start(b"PLAIN !!notbase64")).starts_with("501 5.5.2"));
        assert!(refused(start(b"CRAM-MD5")).starts_with("504 5.5.4"));
    }

    #[test]
    fn login_asks_for_user_then_password() {
        let Step::Challenge(r, ex) = start(b"LOGIN") else {
            panic!()
        };
        assert_eq!(r.to_wire_string(), "334 VXNlcm5hbWU6\r\n");
        let Step::Challenge(r, ex) = respond(ex, b64(b"alice").as_bytes()) else {
            panic!()
        };
        assert_eq!(r.to_wire_string(), "334 UGFzc3dvcmQ6\r\n");
        assert_eq!(
            verified(respond(ex, b64(b"pw").as_bytes())),
            ("alice".into(), "pw".into())
        );
        // With the user name as initial response.
        let Step::Challenge(_, ex) = start(format!("LOGIN {}", b64(b"alice")).as_bytes()) else {
            panic!()
        };
        assert!(matches!(ex, Exchange::LoginPassword(ref u) if u == "alice"));
    }

    #[test]
    fn star_cancels_and_garbage_is_refused() {
        assert!(refused(respond(Exchange::LoginUser, b"*")).starts_with("501 5.0.0"));
        assert!(refused(respond(Exchange::Plain, b"*")).starts_with("501 5.0.0"));
        let r = refused(respond(Exchange::LoginPassword("a".into()), b"%%%"));
        assert!(r.starts_with("501 5.5.2"), "{r}");
    }

    #[test]
    fn passwords_are_not_printed() {
        let login = verified_login(start(format!("PLAIN {}", b64(b"\0u\0hunter2")).as_bytes()));
        assert!(!format!("{login:?}").contains("hunter2"));
    }

    fn verified_login(step: Step) -> Login {
        match step {
            Step::Verify(l) => l,
            other => panic!("not a login: {other:?}"),
        }
    }
}
