//! TLS when delivering (STARTTLS, RFC 3207) end to end: pigeon delivers to aiosmtpd sinks
//! that offer STARTTLS with certificates made here by the openssl command, and the sinks
//! record whether each transaction really arrived encrypted, in which TLS version. Each
//! `domain.NAME.tls` policy is checked against what the sink saw and what the delivery log
//! says.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::dns::{a, mx, DnsServer};
use common::sink::Sink;
use common::{python, Pigeon};

/// Port the sinks listen on (pigeon's `delivery.port`).
const SMTP: u16 = 2600;

fn at(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), SMTP)
}

/// A CA and server certificates signed by it, made with the openssl command.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=pigeon test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        pki
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("the openssl command");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate for `dns_name` (its only subjectAltName), signed by the CA:
    /// returns the certificate and key files.
    fn server(&self, name: &str, dns_name: &str) -> (PathBuf, PathBuf) {
        let (key, csr, cert, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        self.openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={dns_name}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        std::fs::write(
            self.dir.path().join(&ext),
            format!("subjectAltName = DNS:{dns_name}\nextendedKeyUsage = serverAuth\n"),
        )
        .unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ]);
        (self.dir.path().join(cert), self.dir.path().join(key))
    }
}

/// The sink behaviour for `accept` with STARTTLS offered with `cert`, plus `extra` options.
fn tls_sink(cert: &(PathBuf, PathBuf), extra: &str) -> String {
    format!(
        "accept,cert={},key={}{extra}",
        cert.0.display(),
        cert.1.display()
    )
}

/// pigeon on `ip`, retrying after 1 s, with `extra` (domain tables) appended.
fn pigeon(ip: &str, extra: &str) -> Pigeon {
    let config = format!(
        "[delivery]\nport = {SMTP}\nretry = [\"1s\"]\n\n\
         [domain.default]\nmax_connections = 4\n\n{extra}"
    );
    Pigeon::start(ip, "", &config)
}

/// Sends a message to `to` whose body is `secret` and `filler` lines of 78 octets.
fn send_sized(pigeon: &Pigeon, to: &str, filler: usize) {
    let script = r#"
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=60)
body = b"x" * 76 + b"\r\n"
msg = b"From: a@src.test\r\nSubject: tls\r\n\r\n" + body * int(sys.argv[4]) + b"secret\r\n"
s.sendmail("a@src.test", [sys.argv[3]], msg)
s.quit()
"#;
    let (ip, port) = (pigeon.addr.ip().to_string(), pigeon.addr.port().to_string());
    python(script, &[&ip, &port, to, &filler.to_string()]);
}

fn send(pigeon: &Pigeon, to: &str) {
    send_sized(pigeon, to, 0);
}

/// The first delivery log event for `recipient` other than `received`, waiting at most 20 s.
fn outcome(pigeon: &Pigeon, recipient: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(e) = pigeon
            .delivery_events()
            .into_iter()
            .find(|e| e["recipient"] == recipient && e["event"] != "received")
        {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no outcome for {recipient}:\n{}\n{}",
            pigeon.delivery_log(),
            pigeon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn delivers_over_starttls_and_logs_the_tls_version() {
    let pki = Pki::new();
    let cert = pki.server("sink", "sink.test");
    let sink = Sink::start(&[
        (at("127.0.2.10"), &tls_sink(&cert, "")),
        (at("127.0.2.11"), &tls_sink(&cert, ",maxtls=1.2")),
    ]);
    let pigeon = pigeon(
        "127.0.2.1",
        "[domain.\"new.test\"]\nroute = [\"127.0.2.10\"]\n\n\
         [domain.\"old.test\"]\nroute = [\"127.0.2.11\"]\n",
    );
    send(&pigeon, "b@new.test");
    send(&pigeon, "c@old.test");

    let t = sink.wait_for(Duration::from_secs(20), |t| t.len() == 2);
    let tls_of = |addr: SocketAddr| {
        let t = t.iter().find(|t| t.addr == addr.to_string()).unwrap();
        assert!(t.data.ends_with(b"\r\n\r\nsecret\r\n"));
        t.tls.clone()
    };
    assert_eq!(tls_of(at("127.0.2.10")).as_deref(), Some("TLSv1.3"));
    assert_eq!(tls_of(at("127.0.2.11")).as_deref(), Some("TLSv1.2"));
    let new = outcome(&pigeon, "b@new.test");
    assert_eq!(
        (&new["event"], &new["tls"]),
        (&"delivered".into(), &"TLSv1.3".into())
    );
    let old = outcome(&pigeon, "c@old.test");
    assert_eq!(
        (&old["event"], &old["tls"]),
        (&"delivered".into(), &"TLSv1.2".into())
    );
    // STARTTLS once per connection, and EHLO again after it (RFC 3207 §4.2).
    assert_eq!(sink.starttls_count(), 2);
    assert_eq!(sink.connections(), 4);

    // Content of many TLS records (4 MB from the spool's map) arrives whole.
    send_sized(&pigeon, "d@new.test", 50_000);
    let t = sink.wait_for(Duration::from_secs(60), |t| t.len() == 3);
    let big = t.iter().find(|t| t.rcpt_tos == ["d@new.test"]).unwrap();
    assert_eq!(big.tls.as_deref(), Some("TLSv1.3"));
    let body = [b"x".repeat(76), b"\r\n".to_vec()].concat().repeat(50_000);
    let expected = [b"\r\n\r\n".as_slice(), &body, b"secret\r\n"].concat();
    assert!(big.data.ends_with(&expected), "{} octets", big.data.len());
}

#[test]
fn opportunistic_falls_back_to_plain_text_once_when_the_handshake_fails() {
    let pki = Pki::new();
    let cert = pki.server("sink", "sink.test");
    let sink = Sink::start(&[(at("127.0.2.12"), &tls_sink(&cert, ",tls=broken"))]);
    let pigeon = pigeon(
        "127.0.2.2",
        "[domain.\"broken.test\"]\nroute = [\"127.0.2.12\"]\n",
    );
    send(&pigeon, "b@broken.test");

    let t = sink.wait_for(Duration::from_secs(20), |t| !t.is_empty());
    assert_eq!(t[0].rcpt_tos, vec!["b@broken.test"]);
    assert_eq!(t[0].tls, None, "the retry is in plain text");
    let e = outcome(&pigeon, "b@broken.test");
    assert_eq!(e["event"], "delivered", "{e}");
    assert!(e.get("tls").is_none(), "{e}");
    // One STARTTLS on the first connection; the second connection does not try again.
    assert_eq!(sink.starttls_count(), 1);
    assert_eq!(sink.connections(), 2);
}

#[test]
fn required_defers_when_starttls_is_not_offered_or_fails() {
    let pki = Pki::new();
    let cert = pki.server("sink", "sink.test");
    let sink = Sink::start(&[
        (at("127.0.2.13"), "accept"),
        (at("127.0.2.14"), &tls_sink(&cert, ",tls=broken")),
    ]);
    let pigeon = pigeon(
        "127.0.2.3",
        "[domain.\"plain.test\"]\ntls = \"required\"\nroute = [\"127.0.2.13\"]\n\n\
         [domain.\"broken.test\"]\ntls = \"required\"\nroute = [\"127.0.2.14\"]\n",
    );
    send(&pigeon, "b@plain.test");
    send(&pigeon, "c@broken.test");

    let e = outcome(&pigeon, "b@plain.test");
    assert_eq!(e["event"], "deferred", "{e}");
    let reply = e["reply"].as_str().unwrap();
    assert!(
        reply.starts_with("451 4.7.4 TLS is required, but was not offered by host 127.0.2.13"),
        "{reply}"
    );
    let e = outcome(&pigeon, "c@broken.test");
    assert_eq!(e["event"], "deferred", "{e}");
    let reply = e["reply"].as_str().unwrap();
    assert!(
        reply.starts_with("451 4.7.5 TLS handshake with 127.0.2.14"),
        "{reply}"
    );
    // Retries (every second) keep deferring; nothing ever goes out in plain text.
    let deadline = Instant::now() + Duration::from_secs(20);
    while pigeon
        .delivery_events()
        .iter()
        .filter(|e| e["event"] == "deferred")
        .count()
        < 4
    {
        assert!(Instant::now() < deadline, "{}", pigeon.delivery_log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(sink.transactions().is_empty());
    assert!(pigeon
        .delivery_events()
        .iter()
        .all(|e| e["event"] != "delivered"));
}

#[test]
fn verify_checks_the_certificate_against_the_ca_file_and_the_mx_name() {
    let pki = Pki::new();
    let good = pki.server("good", "mx.good.test");
    let wrong = pki.server("wrong", "elsewhere.test");
    let dns = DnsServer::start(
        "127.0.2.53",
        "test.",
        vec![
            mx("good.test.", 10, "mx.good.test."),
            a("mx.good.test.", "127.0.2.15"),
            mx("bad.test.", 10, "mx.bad.test."),
            a("mx.bad.test.", "127.0.2.16"),
        ],
    );
    let sink = Sink::start(&[
        (at("127.0.2.15"), &tls_sink(&good, "")),
        (at("127.0.2.16"), &tls_sink(&wrong, "")),
    ]);
    let pigeon = Pigeon::start(
        "127.0.2.4",
        "",
        &format!(
            "[delivery]\nport = {SMTP}\nretry = [\"1s\"]\nca_file = \"{}\"\n\n\
             [dns]\nnameservers = [\"{}\"]\n\n[domain.default]\nmax_connections = 4\n\n\
             [domain.\"good.test\"]\ntls = \"verify\"\n\n[domain.\"bad.test\"]\ntls = \"verify\"\n",
            pki.ca().display(),
            dns.addr
        ),
    );
    send(&pigeon, "b@good.test");
    send(&pigeon, "c@bad.test");

    let e = outcome(&pigeon, "b@good.test");
    assert_eq!(
        (&e["event"], &e["tls"]),
        (&"delivered".into(), &"TLSv1.3".into()),
        "{e}"
    );
    let t = sink.wait_for(Duration::from_secs(10), |t| !t.is_empty());
    assert_eq!(
        (t[0].addr.as_str(), t[0].tls.as_deref()),
        ("127.0.2.15:2600", Some("TLSv1.3"))
    );

    let e = outcome(&pigeon, "c@bad.test");
    assert_eq!(e["event"], "deferred", "{e}");
    let reply = e["reply"].as_str().unwrap();
    assert!(
        reply.starts_with("451 4.7.5 TLS handshake with mx.bad.test[127.0.2.16:2600] failed")
            && reply.contains("certificate"),
        "{reply}"
    );
    // No plain-text retry under verify: only the good transaction reached a sink.
    assert_eq!(sink.transactions().len(), 1);
}

#[test]
fn verify_defers_when_the_ca_is_not_trusted() {
    // Without delivery.ca_file the system roots apply, and they do not know the test CA.
    let pki = Pki::new();
    let cert = pki.server("good", "mx.untrusted.test");
    let dns = DnsServer::start(
        "127.0.2.54",
        "test.",
        vec![
            mx("untrusted.test.", 10, "mx.untrusted.test."),
            a("mx.untrusted.test.", "127.0.2.17"),
        ],
    );
    let sink = Sink::start(&[(at("127.0.2.17"), &tls_sink(&cert, ""))]);
    let pigeon = pigeon(
        "127.0.2.5",
        &format!(
            "[dns]\nnameservers = [\"{}\"]\n\n[domain.\"untrusted.test\"]\ntls = \"verify\"\n",
            dns.addr
        ),
    );
    send(&pigeon, "b@untrusted.test");
    let e = outcome(&pigeon, "b@untrusted.test");
    assert_eq!(e["event"], "deferred", "{e}");
    assert!(e["reply"].as_str().unwrap().contains("4.7.5"), "{e}");
    assert_eq!(sink.starttls_count(), 1);
    assert!(sink.transactions().is_empty());
}

#[test]
fn disabled_never_sends_starttls_even_when_offered() {
    let pki = Pki::new();
    let cert = pki.server("sink", "sink.test");
    let sink = Sink::start(&[(at("127.0.2.18"), &tls_sink(&cert, ""))]);
    let pigeon = pigeon(
        "127.0.2.6",
        "[domain.\"plain.test\"]\ntls = \"disabled\"\nroute = [\"127.0.2.18\"]\n",
    );
    send(&pigeon, "b@plain.test");
    let t = sink.wait_for(Duration::from_secs(20), |t| !t.is_empty());
    assert_eq!(t[0].tls, None);
    let e = outcome(&pigeon, "b@plain.test");
    assert_eq!(e["event"], "delivered", "{e}");
    assert!(e.get("tls").is_none(), "{e}");
    assert_eq!(sink.starttls_count(), 0);
}

#[test]
fn a_bad_ca_file_stops_pigeon_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not PEM at all\n").unwrap();
    let config = dir.path().join("pigeon.toml");
    std::fs::write(
        &config,
        format!("[delivery]\nca_file = \"{}\"\n", ca.display()),
    )
    .unwrap();
    let out = Command::new(common::PIGEON)
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("delivery.ca_file") && err.contains(&*ca.to_string_lossy()),
        "{err}"
    );
}
