//! Shared test fixtures for the DSN modules: a sample original, a failed recipient, a
//! report around them, and checks on the built message.

use super::{build, Action, RecipientReport, Report};
use crate::smtp::reply::Enhanced;

pub(super) const ORIGINAL: &[u8] = b"From: a@sender.example\r\nTo: b@rcpt.example\r\n\
    Subject: Hello\r\n\r\nBody line\r\n";

pub(super) fn failed<'a>(rcpt: &'a str, diag: &'a str) -> RecipientReport<'a> {
    RecipientReport {
        recipient: rcpt,
        original_recipient: None,
        action: Action::Failed,
        status: Enhanced(5, 1, 1),
        remote_mta: Some("mx.rcpt.example"),
        diagnostic: Some(diag),
        last_attempt_unix: Some(1_795_899_865),
        will_retry_until_unix: None,
    }
}

pub(super) fn report<'a>(recipients: Vec<RecipientReport<'a>>, original: &'a [u8]) -> Report<'a> {
    Report {
        reporting_mta: "mail.pigeon.example",
        envelope_id: None,
        arrival_unix: 1_795_899_000,
        queue_id: "0A1B2C3D",
        sender: "a@sender.example",
        recipients,
        original,
        return_full: false,
    }
}

pub(super) fn text(r: &Report) -> String {
    String::from_utf8(build(
        r,
        "<0A1B2C3D.dsn@mail.pigeon.example>",
        1_795_899_900,
    ))
    .unwrap()
}

/// Every line ends in CRLF, has no lone CR or LF, and is at most 998 octets.
pub(super) fn assert_well_formed(msg: &str) {
    assert!(msg.ends_with("\r\n"));
    for line in msg.split("\r\n") {
        assert!(!line.contains('\r') && !line.contains('\n'), "{line:?}");
        assert!(line.len() <= 998, "line of {} octets", line.len());
    }
}

pub(super) fn boundary_of(msg: &str) -> &str {
    let at = msg.find("boundary=\"").unwrap() + "boundary=\"".len();
    &msg[at..at + msg[at..].find('"').unwrap()]
}
