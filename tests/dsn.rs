//! Delivery status notifications read by a parser we did not write: Python's `email`
//! package parses each DSN built by `pigeon::outcome::dsn::build`, and the same reading code
//! is run on a real-world RFC 3464 bounce to show that what it expects is what real DSNs
//! look like.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::python;
use pigeon::outcome::dsn::{build, dsn_recipient, Action, RecipientReport, Report};
use pigeon::smtp::reply::Enhanced;

/// Reads one message and prints what a DSN consumer looks at, one `key value` per line.
///
/// It parses with `policy=email.policy.default` and walks every part, including those inside
/// message/rfc822 and the field groups of message/delivery-status (the `email` package makes
/// each group a sub-message), so `header` lines list every header name anywhere. With `strict`
/// as second argument it parses again under `email.policy.strict`, which raises on any defect,
/// and reads every header value so lazily parsed headers are checked too.
const READ_DSN: &str = r#"
import email, email.policy, sys
from email.parser import BytesParser

data = open(sys.argv[1], "rb").read()
msg = email.message_from_bytes(data, policy=email.policy.default)
print("content_type", msg.get_content_type())
print("report_type", msg.get_param("report-type"))
print("subject", msg["Subject"])
print("to", msg["To"])
print("auto_submitted", msg["Auto-Submitted"])
parts = msg.get_payload()
print("parts", len(parts))
print("part1", parts[0].get_content_type())
ds = parts[1]
print("part2", ds.get_content_type())
groups = ds.get_payload()
print("reporting_mta", groups[0]["Reporting-MTA"])
print("envid", groups[0]["Original-Envelope-Id"])
for g in groups[1:]:
    if g["Final-Recipient"] is None:
        continue
    fields = ["Final-Recipient", "Action", "Status", "Diagnostic-Code", "Original-Recipient",
              "Remote-MTA", "Will-Retry-Until"]
    print("rcpt", "|".join(str(g[f]) if g[f] is not None else "" for f in fields))
names = set()
if len(parts) > 2:
    third = parts[2]
    print("part3", third.get_content_type())
    if third.get_content_type() == "message/rfc822":
        inner = third.get_payload()[0]
    else:
        inner = BytesParser(policy=email.policy.default).parsebytes(third.get_payload(decode=True))
        names.update(k.lower() for k in inner.keys())
    print("returned_subject", inner["Subject"])
    body = inner.get_payload(decode=True) if not inner.is_multipart() else b""
    print("returned_body", (body or b"").decode("utf-8", "replace").strip())
for part in msg.walk():
    names.update(k.lower() for k in part.keys())
for n in sorted(names):
    print("header", n)
if len(sys.argv) > 2 and sys.argv[2] == "strict":
    strict = BytesParser(policy=email.policy.strict).parsebytes(data)
    for part in strict.walk():
        for k, v in part.items():
            str(v)
    print("strict ok")
"#;

/// What [`READ_DSN`] printed: the last value of each key, and the repeated keys in order.
struct Read {
    one: BTreeMap<String, String>,
    rcpts: Vec<Vec<String>>,
    headers: Vec<String>,
}

impl Read {
    fn get(&self, key: &str) -> &str {
        self.one
            .get(key)
            .unwrap_or_else(|| panic!("no {key}"))
            .as_str()
    }
}

fn read_dsn(path: &Path, strict: bool) -> Read {
    let mut args = vec![path.to_str().unwrap()];
    if strict {
        args.push("strict");
    }
    let out = python(READ_DSN, &args);
    let mut read = Read {
        one: BTreeMap::new(),
        rcpts: Vec::new(),
        headers: Vec::new(),
    };
    for line in out.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "rcpt" => read
                .rcpts
                .push(value.split('|').map(str::to_string).collect()),
            "header" => read.headers.push(value.to_string()),
            _ => {
                read.one.insert(key.to_string(), value.to_string());
            }
        }
    }
    read
}

/// Writes `dsn` to a file, checks its lines the way an SMTP server would (CRLF only, at most
/// 998 octets before it, RFC 5322 §2.1.1) and reads it with Python, strictly.
fn write_and_read(dir: &Path, name: &str, dsn: &[u8]) -> Read {
    for line in dsn.split(|&b| b == b'\n') {
        assert!(line.len() <= 999, "{name}: line of {} octets", line.len());
    }
    assert!(dsn.ends_with(b"\r\n"));
    assert_eq!(
        dsn.windows(2).filter(|w| w == b"\r\n").count(),
        dsn.iter().filter(|&&b| b == b'\n').count(),
        "{name}: bare LF"
    );
    assert_eq!(
        dsn.iter().filter(|&&b| b == b'\r').count(),
        dsn.iter().filter(|&&b| b == b'\n').count(),
        "{name}: bare CR"
    );
    let path = dir.join(format!("{name}.eml"));
    std::fs::write(&path, dsn).unwrap();
    let read = read_dsn(&path, true);
    assert_eq!(read.get("strict"), "ok");
    // RFC 6522 §3: multipart/report, report-type naming the second part's subtype; the
    // human-readable part first.
    assert_eq!(read.get("content_type"), "multipart/report");
    assert_eq!(read.get("report_type"), "delivery-status");
    assert_eq!(read.get("part1"), "text/plain");
    assert_eq!(read.get("part2"), "message/delivery-status");
    assert_eq!(read.get("auto_submitted"), "auto-replied");
    assert_eq!(read.get("reporting_mta"), "dns; mail.pigeon.example");
    read
}

const ORIGINAL: &[u8] = b"From: Alice <alice@sender.example>\r\nTo: bob@rcpt.example\r\n\
    Subject: Quarterly numbers\r\nMessage-ID: <m1@sender.example>\r\n\r\nSee attached.\r\n";

fn recipient<'a>(rcpt: &'a str, action: Action, diag: &'a str) -> RecipientReport<'a> {
    RecipientReport {
        recipient: rcpt,
        original_recipient: None,
        action,
        status: if action == Action::Failed {
            Enhanced(5, 1, 1)
        } else {
            Enhanced(4, 4, 1)
        },
        remote_mta: Some("mx.rcpt.example"),
        diagnostic: Some(diag),
        last_attempt_unix: Some(1_795_899_865),
        will_retry_until_unix: (action == Action::Delayed).then_some(1_796_331_865),
    }
}

fn report<'a>(recipients: Vec<RecipientReport<'a>>, original: &'a [u8], full: bool) -> Report<'a> {
    Report {
        reporting_mta: "mail.pigeon.example",
        envelope_id: None,
        arrival_unix: 1_795_899_000,
        queue_id: "6C0FFEE42",
        sender: "alice@sender.example",
        recipients,
        original,
        return_full: full,
    }
}

fn dsn(report: &Report) -> Vec<u8> {
    assert_eq!(dsn_recipient(report.sender), Some("alice@sender.example"));
    build(report, "<6C0FFEE42.dsn@mail.pigeon.example>", 1_795_899_900)
}

#[test]
fn one_failed_recipient_with_a_550() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = recipient("bob@rcpt.example", Action::Failed, "550 5.1.1 user unknown");
    r.original_recipient = Some("rfc822;Bob+2Bbills@rcpt.example");
    let mut rep = report(vec![r], ORIGINAL, false);
    rep.envelope_id = Some("QQ+2B314159");
    let read = write_and_read(dir.path(), "failed", &dsn(&rep));
    assert_eq!(read.get("subject"), "Undelivered Mail Returned to Sender");
    assert_eq!(read.get("to"), "alice@sender.example");
    assert_eq!(read.get("envid"), "QQ+314159");
    assert_eq!(
        read.rcpts,
        vec![vec![
            "rfc822; bob@rcpt.example",
            "failed",
            "5.1.1",
            "smtp; 550 5.1.1 user unknown",
            "rfc822; Bob+bills@rcpt.example",
            "dns; mx.rcpt.example",
            "",
        ]]
    );
    // No RET: the header section only, as text/rfc822-headers.
    assert_eq!(read.get("part3"), "text/rfc822-headers");
    assert_eq!(read.get("returned_subject"), "Quarterly numbers");
    assert_eq!(read.get("returned_body"), "");
}

#[test]
fn one_failed_and_one_delayed_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let rep = report(
        vec![
            recipient("bob@rcpt.example", Action::Failed, "550 5.1.1 user unknown"),
            recipient(
                "carol@slow.example",
                Action::Delayed,
                "451 4.4.1 no answer from host",
            ),
        ],
        ORIGINAL,
        false,
    );
    let read = write_and_read(dir.path(), "mixed", &dsn(&rep));
    // A failure in the report makes it a bounce; the delay is still reported.
    assert_eq!(read.get("subject"), "Undelivered Mail Returned to Sender");
    assert_eq!(read.rcpts.len(), 2);
    assert_eq!(read.rcpts[0][1], "failed");
    assert_eq!(read.rcpts[0][6], "", "no Will-Retry-Until on a failure");
    assert_eq!(
        read.rcpts[1][..4],
        [
            "rfc822; carol@slow.example",
            "delayed",
            "4.4.1",
            "smtp; 451 4.4.1 no answer from host"
        ]
    );
    assert_eq!(read.rcpts[1][6], "Thu, 3 Dec 2026 21:04:25 +0000");

    let delayed_only = report(
        vec![recipient(
            "carol@slow.example",
            Action::Delayed,
            "451 4.4.1 no answer from host",
        )],
        ORIGINAL,
        false,
    );
    let read = write_and_read(dir.path(), "delayed", &dsn(&delayed_only));
    assert_eq!(read.get("subject"), "Delayed Mail (still being retried)");
}

#[test]
fn ret_full_with_an_8bit_original() {
    let dir = tempfile::tempdir().unwrap();
    let original = "From: Zoë <zoe@sender.example>\r\nSubject: Grüße\r\n\
        Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
        żółw 日本\r\n"
        .as_bytes();
    let rep = report(
        vec![recipient(
            "bob@rcpt.example",
            Action::Failed,
            "552 5.2.2 mailbox full",
        )],
        original,
        true,
    );
    let bytes = dsn(&rep);
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.contains(
        "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\nFrom: Zoë"
    ));
    let read = write_and_read(dir.path(), "full8bit", &bytes);
    assert_eq!(read.get("part3"), "message/rfc822");
    assert_eq!(read.get("returned_subject"), "Grüße");
    assert_eq!(read.get("returned_body"), "żółw 日本");
    assert_eq!(read.rcpts[0][3], "smtp; 552 5.2.2 mailbox full");
}

#[test]
fn injection_in_the_diagnostic_adds_no_header() {
    let dir = tempfile::tempdir().unwrap();
    let rep = report(
        vec![recipient(
            "bob@rcpt.example",
            Action::Failed,
            "550 x\r\nBcc: evil@x",
        )],
        ORIGINAL,
        false,
    );
    let bytes = dsn(&rep);
    for line in bytes.split(|&b| b == b'\n') {
        assert!(!line.to_ascii_lowercase().starts_with(b"bcc"));
    }
    let read = write_and_read(dir.path(), "injection", &bytes);
    assert!(
        !read.headers.iter().any(|h| h == "bcc"),
        "{:?}",
        read.headers
    );
    // The text stays, flattened into the one field it belongs to.
    assert_eq!(read.rcpts[0][3], "smtp; 550 x Bcc: evil@x");
}

/// The reading code and expectations above, applied to a real sendmail DSN from sisimai's
/// corpus (copied from the shared test data to `tests/data/bounces/` with its BSD-2-Clause
/// licence): the same structure, field names and value forms.
#[test]
fn the_same_expectations_hold_for_a_real_bounce() {
    let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bounces/rfc3464-01.eml");
    // Not strict: the corpus stores it with LF line ends.
    let read = read_dsn(&real, false);
    assert_eq!(read.get("content_type"), "multipart/report");
    assert_eq!(read.get("report_type"), "delivery-status");
    assert_eq!(read.get("part1"), "text/plain");
    assert_eq!(read.get("part2"), "message/delivery-status");
    assert_eq!(read.get("reporting_mta"), "dns; smtpgw.example.jp");
    assert_eq!(
        read.rcpts,
        vec![vec![
            "RFC822; userunknown@bouncehammer.jp",
            "failed",
            "5.1.1",
            "SMTP; 550 5.1.1 <userunknown@bouncehammer.jp>... User Unknown",
            "",
            "DNS; mx.bouncehammer.jp",
            "",
        ]]
    );
    assert_eq!(read.get("part3"), "message/rfc822");
    assert!(!read.get("returned_subject").is_empty());
}
