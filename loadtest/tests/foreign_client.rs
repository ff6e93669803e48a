//! Python's smtplib, a foreign client, → `pigeon-load sink`: its counts match what smtplib
//! was told was accepted, and `--save` writes the content back unstuffed.

mod common;

use std::process::Command;

use common::{n, temp_dir, Sink};

const SCRIPT: &str = r#"
import smtplib, sys
host, port = sys.argv[1].rsplit(":", 1)
accepted = 0
with smtplib.SMTP(host, int(port), timeout=20) as s:
    s.ehlo("smtplib.test")
    assert s.has_extn("pipelining") and s.has_extn("smtputf8")
    for i in range(20):
        rcpts = [f"p{i}@alpha.test", f"q{i}@beta.test"]
        msg = f"From: a@x.test\r\nSubject: {i}\r\n\r\nline\r\n.leading dot {i}\r\n"
        refused = s.sendmail("a@x.test", rcpts, msg)
        accepted += len(rcpts) - len(refused)
print(accepted)
"#;

#[test]
fn smtplib_counts_agree() {
    let dir = temp_dir("smtplib");
    let sink = Sink::start(
        "127.0.0.71:0",
        &["--expect-recipients", "40", "--save", dir.to_str().unwrap()],
    );
    let out = Command::new("python3")
        .args(["-c", SCRIPT, &sink.addr])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let accepted: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let s = sink.finish();
    assert_eq!(accepted, 40);
    assert_eq!(n(&s["recipients"]), 40, "{s}");
    assert_eq!(n(&s["messages"]), 20);
    assert_eq!(n(&s["connections"]), 1);
    assert_eq!(n(&s["domains"]["alpha.test"]), 20);
    assert_eq!(n(&s["domains"]["beta.test"]), 20);

    let saved: Vec<_> = std::fs::read_dir(dir.join("new")).unwrap().collect();
    assert_eq!(saved.len(), 20);
    let any = std::fs::read_to_string(saved[0].as_ref().unwrap().path()).unwrap();
    assert!(any.contains("\r\n.leading dot "), "{any}");
    assert!(!any.contains("..leading"), "{any}");
    assert!(any.contains("X-Envelope-To: <p"), "{any}");
    let _ = std::fs::remove_dir_all(&dir);
}
