//! STARTTLS, AUTH, STARTTLS faults and reply delays in the load tools, with certificates from
//! a CA the test makes with openssl: `blast --starttls --auth` against the sink (counts
//! agree, every session encrypted and authenticated), wrong passwords refused, a sink whose
//! STARTTLS fails, delayed replies, and `blast --starttls` against pigeon's STARTTLS listener.
//!
//! The pigeon case needs the `pigeon` binary next to this test's: `cargo test --workspace`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{blast, n, temp_dir, Pigeon, Sink};

/// Runs openssl, failing the test with its message if it fails.
fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a certificate it signed for `name`: returns (ca.pem, cert.pem, key.pem).
fn certificates(dir: &Path, name: &str) -> (String, String, String) {
    let p = |f: &str| dir.join(f).display().to_string();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=pigeon-load test CA",
    ];
    ca.extend(ec);
    let (ca_key, ca_pem) = (p("ca.key"), p("ca.pem"));
    ca.extend(["-keyout", &ca_key, "-out", &ca_pem]);
    openssl(&ca);
    let (key, csr, cert, ext) = (p("key.pem"), p("req.csr"), p("cert.pem"), p("san.ext"));
    let subject = format!("/CN={name}");
    let mut req = vec!["req", "-subj", &subject, "-keyout", &key, "-out", &csr];
    req.extend(ec);
    openssl(&req);
    std::fs::write(&ext, format!("subjectAltName=DNS:{name}\n")).unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca_pem,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    (ca_pem, cert, key)
}

#[test]
fn starttls_and_auth_counts_agree_and_every_session_is_encrypted() {
    let dir = temp_dir("tls-auth");
    let (ca, cert, key) = certificates(&dir, "sink.test");
    let sink = Sink::start(
        "127.0.0.171:0",
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--auth",
            "bench:s3cret",
            "--expect-recipients",
            "300",
        ],
    );
    let b = blast(&[
        "--target",
        &sink.addr,
        "--sessions",
        "4",
        "--messages",
        "150",
        "--recipients",
        "2",
        "--starttls",
        "--tls-ca",
        &ca,
        "--tls-name",
        "sink.test",
        "--auth",
        "bench:s3cret",
    ]);
    let s = sink.finish();
    assert_eq!(n(&b["messages_accepted"]), 150, "{b}");
    assert_eq!(n(&b["errors"]), 0, "{b}");
    assert_eq!(n(&b["tls_sessions"]["TLSv1.3"]), 4, "{b}");
    assert_eq!(n(&b["replies"]["auth"]["235"]), 4, "{b}");
    assert_eq!(s["reached_expected"], true, "{s}");
    assert_eq!(n(&s["recipients"]), 300, "{s}");
    assert_eq!(n(&s["tls_sessions"]), 4, "{s}");
    assert_eq!(n(&s["auth_ok"]), 4, "{s}");
    assert_eq!(n(&s["connections"]), 4, "{s}");
}

#[test]
fn wrong_password_and_untrusted_certificate_are_refused() {
    let dir = temp_dir("tls-refused");
    let (_, cert, key) = certificates(&dir, "sink.test");
    let (other_ca, _, _) = certificates(&temp_dir("tls-other-ca"), "sink.test");
    let sink = Sink::start(
        "127.0.0.172:0",
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--auth",
            "bench:s3cret",
        ],
    );
    let wrong = blast(&[
        "--target",
        &sink.addr,
        "--sessions",
        "1",
        "--messages",
        "5",
        "--starttls",
        "--auth",
        "bench:guess",
    ]);
    assert_eq!(n(&wrong["messages_accepted"]), 0, "{wrong}");
    assert!(n(&wrong["replies"]["auth"]["535"]) >= 1, "{wrong}");
    // A CA that did not sign the sink's certificate: the handshake fails, nothing is sent.
    let untrusted = blast(&[
        "--target",
        &sink.addr,
        "--sessions",
        "1",
        "--messages",
        "5",
        "--starttls",
        "--tls-ca",
        &other_ca,
        "--tls-name",
        "sink.test",
        "--auth",
        "bench:s3cret",
    ]);
    assert_eq!(n(&untrusted["messages_accepted"]), 0, "{untrusted}");
    assert!(n(&untrusted["errors"]) >= 1, "{untrusted}");
    let s = sink.stop();
    assert_eq!(n(&s["messages"]), 0, "{s}");
    assert!(n(&s["auth_failed"]) >= 1, "{s}");
    assert!(n(&s["starttls_failed"]) >= 1, "{s}");
}

#[test]
fn a_failing_starttls_is_seen_by_the_client() {
    let dir = temp_dir("tls-fault");
    let (_, cert, key) = certificates(&dir, "sink.test");
    let sink = Sink::start(
        "127.0.0.173:0",
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--fault",
            "disconnect:starttls:100",
        ],
    );
    let b = blast(&[
        "--target",
        &sink.addr,
        "--sessions",
        "1",
        "--messages",
        "3",
        "--starttls",
    ]);
    let s = sink.stop();
    assert_eq!(n(&b["messages_accepted"]), 0, "{b}");
    // The client was told 220 and then found no handshake: each try is an error.
    assert_eq!(n(&b["replies"]["starttls"]["220"]), n(&b["errors"]), "{b}");
    assert!(n(&b["errors"]) >= 1, "{b}");
    assert_eq!(n(&s["tls_sessions"]), 0, "{s}");
    assert_eq!(n(&s["starttls_failed"]), n(&s["connections"]), "{s}");
}

#[test]
fn delayed_replies_show_in_the_latency() {
    let sink = Sink::start("127.0.0.174:0", &["--delay", "data:300"]);
    let b = blast(&["--target", &sink.addr, "--sessions", "2", "--messages", "6"]);
    sink.stop();
    assert_eq!(n(&b["messages_accepted"]), 6, "{b}");
    // Every final reply waited for the delay (a lower bound, not a speed claim). Not to
    // the millisecond: the sink can start its timer before the blast, descheduled after
    // its write, takes the time it measures from.
    let min = b["latency_ms"]["min"].as_f64().unwrap();
    assert!(min >= 250.0, "{b}");
}

#[test]
fn blast_starttls_into_pigeon_then_to_the_sink() {
    let dir = temp_dir("tls-pigeon");
    let (ca, cert, key) = certificates(&dir, "mx.test");
    let sink = Sink::start("127.0.0.175:0", &["--expect-recipients", "40"]);
    let config = format!(
        "hostname = \"mx.test\"\nshards = 2\n\n[spool]\npath = \"{spool}\"\n\n\
         [log]\ndelivery = \"{log}\"\n\n[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n\n\
         [[listener]]\naddress = \"127.0.0.176:2587\"\ntls = \"starttls\"\n\n\
         [domain.default]\nroute = [\"{route}\"]\n",
        spool = dir.join("spool").display(),
        log = dir.join("delivery.log").display(),
        route = sink.addr,
    );
    let _pigeon = Pigeon::serve(&dir, &config, "127.0.0.176:2587");
    let b = blast(&[
        "--target",
        "127.0.0.176:2587",
        "--sessions",
        "2",
        "--messages",
        "20",
        "--recipients",
        "2",
        "--starttls",
        "--tls-ca",
        &ca,
        "--tls-name",
        "mx.test",
    ]);
    assert_eq!(n(&b["messages_accepted"]), 20, "{b}");
    assert_eq!(n(&b["tls_sessions"]["TLSv1.3"]), 2, "{b}");
    let s = sink.finish();
    assert_eq!(s["reached_expected"], true, "{s}");
    assert_eq!(n(&s["recipients"]), 40, "{s}");
}
