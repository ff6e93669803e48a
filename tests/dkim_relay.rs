//! DKIM end to end: keys made with `pigeon dkim keygen`, messages relayed through pigeon to
//! a real sink, every signature checked by dkimpy (a verifier we did not write) with the
//! DNS records keygen printed.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::dkimpy::dkimpy;
use common::dns::{a, DnsServer};
use common::sink::Sink;
use common::{python, queued_id, Client, Pigeon, PIGEON};

const SMTP: u16 = 2600;

/// Runs `pigeon dkim keygen` and returns the DNS record name and TXT value it printed.
fn keygen(dir: &Path, domain: &str, selector: &str, algo: &str) -> (String, String, String) {
    let file = dir.join(format!("{domain}.{selector}.pem"));
    let out = Command::new(PIGEON)
        .args([
            "dkim",
            "keygen",
            "--domain",
            domain,
            "--selector",
            selector,
            "--algo",
            algo,
        ])
        .arg("--out")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    let name = line
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('.')
        .to_owned();
    let value: String = line.split('"').skip(1).step_by(2).collect();
    (name, value, file.to_str().unwrap().to_owned())
}

#[test]
fn relayed_messages_carry_signatures_dkimpy_accepts() {
    let keys = tempfile::tempdir().unwrap();
    let ed = keygen(keys.path(), "example.test", "ed", "ed25519");
    let rsa = keygen(keys.path(), "example.test", "rsa", "rsa");
    let simple = keygen(keys.path(), "other.test", "s1", "rsa");
    let records = vec![
        (ed.0.clone(), ed.1.clone()),
        (rsa.0.clone(), rsa.1.clone()),
        (simple.0.clone(), simple.1.clone()),
    ];
    let dns = DnsServer::start(
        "127.0.53.120",
        "test.",
        vec![a("dest.test.", "127.0.0.121")],
    );
    let sink = Sink::start(&[(
        SocketAddr::new("127.0.0.121".parse().unwrap(), SMTP),
        "accept",
    )]);
    let config = format!(
        "[dns]\nnameservers = [\"{}\"]\n\n[delivery]\nport = {SMTP}\n\n[domain.default]\nmax_connections = 4\n\n\
         [[dkim]]\ndomain = \"example.test\"\nselector = \"ed\"\nkey = \"{}\"\n\n\
         [[dkim]]\ndomain = \"example.test\"\nselector = \"rsa\"\nkey = \"{}\"\n\n\
         [[dkim]]\ndomain = \"other.test\"\nselector = \"s1\"\nkey = \"{}\"\ncanonicalization = \"simple/simple\"\n\
         expire = \"7d\"\n",
        dns.addr, ed.2, rsa.2, simple.2
    );
    let mut pigeon = Pigeon::start("127.0.0.120", "", &config);

    let cases: Vec<(&str, String)> = vec![
        ("a@example.test", "From: A <a@example.test>\r\nTo: x@dest.test\r\nSubject: plain\r\n\r\nhello\r\n".into()),
        ("b@news.example.test", "From: b@news.example.test\r\nSubject: parent domain\r\n\r\nfrom a subdomain\r\n".into()),
        ("c@other.test", "From: c@other.test\r\nSubject: simple\r\n\r\nsimple canonicalization\r\n\r\n\r\n".into()),
        (
            "a@example.test",
            "From: \"Joe, Jr.\" <a@example.test>\r\nSubject: folded\r\n  across lines\r\n\r\n.leading dot\r\n..two\r\n\
             \u{00e9}t\u{00e9} 8-bit\r\n    indented   spaces   \r\n\r\n\r\n"
                .into(),
        ),
        ("a@example.test", format!("From: a@example.test\r\nSubject: long\r\n\r\n{}\r\n", "x".repeat(990))),
        ("a@example.test", "From: a@example.test\r\nSubject: empty body\r\n\r\n".into()),
        ("u@unsigned.test", "From: u@unsigned.test\r\nSubject: no key\r\n\r\nunsigned\r\n".into()),
    ];
    let mut c = Client::greeted(pigeon.addr);
    assert_eq!(c.cmd("EHLO c.test").code, 250);
    for (from, content) in &cases {
        let r = c.send_message(from, &["x@dest.test"], &stuff(content.as_bytes()));
        queued_id(&r);
    }
    let t = sink.wait_for(Duration::from_secs(30), |t| t.len() >= cases.len());
    let messages: Vec<Vec<u8>> = cases
        .iter()
        .map(|(_, content)| {
            let subject = content
                .lines()
                .find(|l| l.starts_with("Subject:"))
                .unwrap()
                .to_owned();
            t.iter()
                .find(|t| String::from_utf8_lossy(&t.data).contains(&subject))
                .unwrap()
                .data
                .clone()
        })
        .collect();
    let verdicts = dkimpy(&records, &messages);
    let summary = |v: &[common::dkimpy::Verdict]| -> Vec<(String, String, bool)> {
        v.iter().map(|v| (v.d.clone(), v.s.clone(), v.ok)).collect()
    };
    let dual = vec![
        ("example.test".to_string(), "ed".to_string(), true),
        ("example.test".to_string(), "rsa".to_string(), true),
    ];
    assert_eq!(summary(&verdicts[0]), dual, "{:?}", verdicts[0]);
    assert_eq!(summary(&verdicts[1]), dual, "{:?}", verdicts[1]);
    assert_eq!(
        summary(&verdicts[2]),
        vec![("other.test".into(), "s1".into(), true)],
        "{:?}",
        verdicts[2]
    );
    for (i, v) in verdicts.iter().enumerate().take(6).skip(3) {
        assert_eq!(summary(v), dual, "case {i}: {v:?}");
    }
    assert!(verdicts[6].is_empty(), "no key for unsigned.test");
    let simple_sig = String::from_utf8_lossy(&messages[2]).into_owned();
    assert!(
        simple_sig.contains("c=simple/simple") && simple_sig.contains(" x="),
        "{simple_sig}"
    );

    // The verifier really checks: one changed byte in the body fails every signature.
    let mut altered = messages[0].clone();
    let at = altered.len() - 3;
    altered[at] ^= 0x20;
    assert!(dkimpy(&records, &[altered])[0].iter().all(|v| !v.ok));
    assert!(pigeon.stop().success());
}

#[test]
fn a_message_to_a_thousand_recipients_is_signed_once() {
    let keys = tempfile::tempdir().unwrap();
    let ed = keygen(keys.path(), "list.test", "k1", "ed25519");
    let dns = DnsServer::start(
        "127.0.53.130",
        "test.",
        vec![a("dest.test.", "127.0.0.131")],
    );
    let sink = Sink::start(&[(
        SocketAddr::new("127.0.0.131".parse().unwrap(), SMTP),
        "accept",
    )]);
    let config = format!(
        "[dns]\nnameservers = [\"{}\"]\n\n[delivery]\nport = {SMTP}\n\n[domain.default]\nmax_connections = 4\n\n\
         [[dkim]]\ndomain = \"list.test\"\nselector = \"k1\"\nkey = \"{}\"\n",
        dns.addr, ed.2
    );
    let mut pigeon = Pigeon::start("127.0.0.130", "", &config);
    let recipients: Vec<String> = (0..1000).map(|i| format!("r{i}@dest.test")).collect();
    let script = r#"
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=60)
refused = s.sendmail("news@list.test", sys.argv[3:], b"From: news@list.test\r\nSubject: issue 1\r\n\r\nHello, list.\r\n")
assert not refused, refused
s.quit()
"#;
    let mut args = vec![pigeon.addr.ip().to_string(), pigeon.addr.port().to_string()];
    args.extend(recipients.iter().cloned());
    python(script, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let t = sink.wait_for(Duration::from_secs(60), |t| {
        t.iter().map(|t| t.rcpt_tos.len()).sum::<usize>() >= 1000
    });
    // Ten transactions of 100, every copy with the very same signature.
    let signatures: std::collections::HashSet<String> = t
        .iter()
        .map(|t| {
            let text = String::from_utf8_lossy(&t.data).into_owned();
            assert_eq!(text.matches("DKIM-Signature:").count(), 1);
            let start = text.find("DKIM-Signature:").unwrap();
            let end = text[start..].find("\r\nFrom:").unwrap();
            text[start..start + end].to_owned()
        })
        .collect();
    assert_eq!(signatures.len(), 1, "the message was signed more than once");
    assert!(dkimpy(&[(ed.0.clone(), ed.1.clone())], &[t[0].data.clone()])[0][0].ok);
    assert!(pigeon.stop().success());
    let received: Vec<serde_json::Value> = pigeon
        .delivery_log()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "received")
        .collect();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["dkim"], "d=list.test s=k1 a=ed25519-sha256");
}

/// Dot-stuffs content for DATA.
fn stuff(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in content.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out
}

/// A client that may not relay (here: mail to one of our relay.domains from outside
/// relay.networks) never gets our key's signature on a From of ours.
#[test]
fn mail_from_untrusted_clients_is_not_signed() {
    let keys = tempfile::tempdir().unwrap();
    let ed = keygen(keys.path(), "example.test", "ed", "ed25519");
    let dns = DnsServer::start(
        "127.0.53.140",
        "test.",
        vec![a("dest.test.", "127.0.0.141")],
    );
    let sink = Sink::start(&[(
        SocketAddr::new("127.0.0.141".parse().unwrap(), SMTP),
        "accept",
    )]);
    let config = format!(
        "[relay]\nnetworks = []\ndomains = [\"dest.test\"]\n\n\
         [dns]\nnameservers = [\"{}\"]\n\n[delivery]\nport = {SMTP}\n\n[domain.default]\nmax_connections = 4\n\n\
         [[dkim]]\ndomain = \"example.test\"\nselector = \"ed\"\nkey = \"{}\"\n",
        dns.addr, ed.2
    );
    let mut pigeon = Pigeon::start("127.0.0.140", "", &config);
    let mut c = Client::greeted(pigeon.addr);
    assert_eq!(c.cmd("EHLO stranger.test").code, 250);
    let r = c.send_message(
        "ceo@example.test",
        &["x@dest.test"],
        b"From: ceo@example.test\r\nSubject: hi\r\n\r\nbody\r\n",
    );
    queued_id(&r);
    let t = sink.wait_for(Duration::from_secs(30), |t| !t.is_empty());
    assert!(!String::from_utf8_lossy(&t[0].data).contains("DKIM-Signature"));
    assert!(pigeon.stop().success());
}
