//! The human-readable part of a report (RFC 6522 §3, first part) and the subject that
//! sums it up in a mailbox listing.

use std::fmt::Write as _;

use super::line::{clean, fold, Charset, MAX_DIAGNOSTIC, MAX_FIELD};
use super::model::{Action, RecipientReport, Report};
use crate::clock::rfc5322_date;

/// Subject when at least one recipient failed.
const SUBJECT_FAILED: &str = "Undelivered Mail Returned to Sender";
/// Subject when every recipient reported on is only delayed.
const SUBJECT_DELAYED: &str = "Delayed Mail (still being retried)";

/// Subject of a report that only tells of successful relaying.
const SUBJECT_RELAYED: &str = "Successful Mail Delivery Report";

/// The `Subject:` of a report: failure when any recipient failed, else delay when any is
/// delayed, else success (see [`super::build`] for why failure wins).
pub(super) fn subject(report: &Report) -> &'static str {
    if report.recipients.iter().any(|r| r.action == Action::Failed) {
        SUBJECT_FAILED
    } else if report
        .recipients
        .iter()
        .any(|r| r.action == Action::Delayed)
    {
        SUBJECT_DELAYED
    } else {
        SUBJECT_RELAYED
    }
}

/// Part 1: the human-readable explanation (RFC 6522 §3, first part).
pub(super) fn notification(report: &Report, charset: Charset) -> String {
    let mut t = String::with_capacity(1024);
    let mta = clean(report.reporting_mta, Charset::Ascii, '?', MAX_FIELD);
    fold(
        &mut t,
        "",
        &format!("This is the mail system at host {mta}."),
    );
    t.push_str("\r\n");
    let failed = report
        .recipients
        .iter()
        .filter(|r| r.action == Action::Failed);
    let delayed = report
        .recipients
        .iter()
        .filter(|r| r.action == Action::Delayed);
    if failed.clone().next().is_some() {
        fold(
            &mut t,
            "",
            "Your message could not be delivered to the recipients below. Delivery to them \
             has been abandoned.",
        );
        t.push_str("\r\n");
        for r in failed {
            recipient_line(&mut t, r, charset);
        }
        t.push_str("\r\n");
    }
    let relayed = report
        .recipients
        .iter()
        .filter(|r| r.action == Action::Relayed);
    if relayed.clone().next().is_some() {
        fold(
            &mut t,
            "",
            "Your message was relayed to the recipients below, as you asked to be told. The \
             next mail system does not report delivery status, so no further notice will \
             follow.",
        );
        t.push_str("\r\n");
        for r in relayed {
            recipient_line(&mut t, r, charset);
        }
        t.push_str("\r\n");
    }
    if delayed.clone().next().is_some() {
        fold(
            &mut t,
            "",
            "Your message has not yet been delivered to the recipients below. The mail \
             system will keep trying; you do not need to send it again.",
        );
        t.push_str("\r\n");
        for r in delayed {
            recipient_line(&mut t, r, charset);
        }
        t.push_str("\r\n");
    }
    let qid = clean(report.queue_id, Charset::Ascii, '?', MAX_FIELD);
    let attached = if report.return_full {
        "The message is attached below."
    } else {
        "Its header section is attached below."
    };
    fold(
        &mut t,
        "",
        &format!(
            "The message arrived on {} and has queue id {qid}. {attached}",
            rfc5322_date(report.arrival_unix)
        ),
    );
    t
}

/// One recipient in the human-readable part: address, who said what, and for a delay how
/// long pigeon keeps trying.
fn recipient_line(t: &mut String, r: &RecipientReport, charset: Charset) {
    let mut line = format!("<{}>:", clean(r.recipient, charset, '?', MAX_FIELD));
    let diagnostic = r.diagnostic.map(|d| clean(d, charset, ' ', MAX_DIAGNOSTIC));
    match (r.remote_mta, diagnostic) {
        (Some(host), Some(diag)) => {
            let host = clean(host, Charset::Ascii, '?', MAX_FIELD);
            let _ = write!(line, " host {host} said: {diag}");
        }
        (None, Some(diag)) => {
            let _ = write!(line, " {diag}");
        }
        (_, None) => {
            let _ = write!(line, " status {}", r.status);
        }
    }
    if let (Action::Delayed, Some(until)) = (r.action, r.will_retry_until_unix) {
        let _ = write!(line, " (will keep trying until {})", rfc5322_date(until));
    }
    fold(t, "", &line);
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{failed, report, text, ORIGINAL};
    use super::*;
    use crate::smtp::reply::Enhanced;

    #[test]
    fn subject_is_failure_if_any_failed_else_delay() {
        let mut delayed = failed("c@rcpt.example", "451 4.2.0 try later");
        delayed.action = Action::Delayed;
        delayed.status = Enhanced(4, 2, 0);
        let only_delayed = text(&report(vec![delayed.clone()], ORIGINAL));
        assert!(only_delayed.contains("\r\nSubject: Delayed Mail (still being retried)\r\n"));
        let mixed = text(&report(
            vec![failed("b@rcpt.example", "550 no"), delayed],
            ORIGINAL,
        ));
        assert!(mixed.contains("\r\nSubject: Undelivered Mail Returned to Sender\r\n"));
        assert!(mixed.contains("Action: failed\r\n"));
        assert!(mixed.contains("Action: delayed\r\n"));
    }
}
