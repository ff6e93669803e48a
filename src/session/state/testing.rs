//! Sessions and conversation helpers shared by the verb modules' unit tests.

use std::sync::Arc;

use super::{AuthPolicy, Event, Session, SessionConfig};
use crate::auth::Verdict;

/// A session after EHLO that may relay, with the given per-session limits.
pub(super) fn limited(messages: u32, recipients: u32) -> Session {
    let config = SessionConfig {
        hostname: "mx.test".into(),
        max_message_size: 4096,
        max_recipients: 3,
        max_errors: 100,
        max_messages_per_session: messages,
        max_recipients_per_session: recipients,
        relay_domains: Vec::new(),
        body_canons: Vec::new(),
    };
    let mut s = Session::new(Arc::new(config), "192.0.2.1:4000".parse().unwrap(), true);
    s.handle_input(b"EHLO c\r\n");
    s
}

/// Feeds `input`, answers stored messages with an id, returns the reply codes.
pub(super) fn codes(s: &mut Session, input: &[u8]) -> Vec<u16> {
    let used = s.handle_input(input);
    assert_eq!(used, input.len());
    while let Some(event) = s.poll_event() {
        if let Event::Message(..) = event {
            s.handle_stored(Ok("ID"));
        }
    }
    let mut out = Vec::new();
    s.take_output(&mut out);
    String::from_utf8(out)
        .unwrap()
        .lines()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| l[..3].parse().unwrap())
        .collect()
}

/// One whole transaction to a single recipient.
pub(super) const MESSAGE: &[u8] =
    b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nhi\r\n.\r\n";

/// A session under TLS offering AUTH with `policy`, relaying only to `local.test`.
pub(super) fn session(policy: AuthPolicy) -> Session {
    let config = Arc::new(SessionConfig {
        hostname: "mx.test".into(),
        max_message_size: 4096,
        max_recipients: 10,
        max_errors: 100,
        max_messages_per_session: 100,
        max_recipients_per_session: 1000,
        relay_domains: vec!["local.test".into()],
        body_canons: Vec::new(),
    });
    let mut s = Session::new(config, "192.0.2.1:5000".parse().unwrap(), false);
    s.offer_auth(policy);
    s.set_tls_active();
    s
}

/// Sends lines; returns what the session answered.
pub(super) fn say(s: &mut Session, input: &str) -> String {
    let used = s.handle_input(input.as_bytes());
    assert_eq!(used, input.len(), "all input used");
    let mut out = Vec::new();
    s.take_output(&mut out);
    String::from_utf8(out).unwrap()
}

/// Sends AUTH PLAIN for `user` and answers the check with `verdict`.
pub(super) fn login(s: &mut Session, user: &str, verdict: Verdict) -> String {
    let ir = data_encoding::BASE64.encode(format!("\0{user}\0pw").as_bytes());
    let out = say(s, &format!("AUTH PLAIN {ir}\r\n"));
    assert_eq!(out, "");
    match s.poll_event() {
        Some(Event::Authenticate(l)) => assert_eq!(l.user, user),
        other => panic!("no check asked for: {other:?}"),
    }
    s.handle_auth_result(verdict);
    let mut out = Vec::new();
    s.take_output(&mut out);
    String::from_utf8(out).unwrap()
}
