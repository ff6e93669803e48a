//! SMTP AUTH (RFC 4954) on submission listeners, checked with Python's smtplib and ssl
//! against a CA the test makes with openssl; users written by the real `pigeon passwd`;
//! brute force cut off per client address and per user.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{certificate, passwd, python, Client, Pigeon};

/// pigeon on `ip` with users alice@x.test (password `alice-pw`) and bob@x.test (`bob-pw`):
/// plain relay on 2525, submission with STARTTLS on 2587 and with implicit TLS on 2465.
/// Loopback is outside `relay.networks`, so only AUTH opens relaying. Returns the server,
/// the CA file for clients, and the directory holding the users file.
fn pigeon_with_auth(ip: &str, auth_extra: &str) -> (Pigeon, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), ip);
    let users = dir.path().join("users");
    for (user, pw) in [("alice@x.test", "alice-pw\n"), ("bob@x.test", "bob-pw\n")] {
        let (ok, err) = passwd(user, &users, pw);
        assert!(ok, "{err}");
    }
    let extra = format!(
        "[relay]\nnetworks = [\"10.0.0.0/8\"]\ndomains = [\"local.test\"]\n\n\
         [tls]\ncert = \"{}\"\nkey = \"{}\"\n\n\
         [auth]\nusers_file = \"{}\"\nfailure_delay = \"200ms\"\n{auth_extra}\n\
         [[listener]]\naddress = \"{ip}:2587\"\nmode = \"submission\"\ntls = \"starttls\"\n\n\
         [[listener]]\naddress = \"{ip}:2465\"\nmode = \"submission\"\ntls = \"implicit\"\n",
        cert.display(),
        key.display(),
        users.display()
    );
    let pigeon = Pigeon::start(ip, "", &extra);
    (pigeon, cert.display().to_string(), dir)
}

/// Python helpers shared by the scripts: a raw TLS line client.
const RAW: &str = r#"
import base64, socket, ssl, sys
def b64(s):
    return base64.b64encode(s.encode()).decode()
class Raw:
    def __init__(self, ip, port, ca, source=None, implicit=True):
        sock = socket.create_connection((ip, port), timeout=10,
                                        source_address=(source, 0) if source else None)
        if implicit:
            sock = ssl.create_default_context(cafile=ca).wrap_socket(sock, server_hostname="mx.test")
        self.sock = sock
        self.buf = b""
    def line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode()
    def reply(self):
        lines = [self.line()]
        while lines[-1] is not None and lines[-1][3:4] == "-":
            lines.append(self.line())
        return lines[-1] if lines[-1] is not None else "CLOSED"
    def cmd(self, text):
        self.sock.sendall(text.encode() + b"\r\n")
        return self.reply()
    def closed(self):
        return self.line() is None
"#;

#[test]
fn smtplib_submits_over_starttls_and_implicit_tls_after_login() {
    const IP: &str = "127.0.3.1";
    let (mut pigeon, ca, _users) = pigeon_with_auth(IP, "");
    let out = python(
        r#"
import smtplib, ssl, sys
ip, ca = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
s = smtplib.SMTP(ip, 2587, timeout=10)
s.ehlo("client.test")
assert not s.has_extn("auth"), "AUTH offered before TLS"
s.starttls(context=ctx)
s.ehlo("client.test")
print(s.esmtp_features["auth"].strip())
print(s.login("alice@x.test", "alice-pw")[0])
s.sendmail("alice@x.test", ["b@elsewhere.test"], "Subject: over starttls\r\n\r\nhi\r\n")
s.quit()
s = smtplib.SMTP_SSL(ip, 2465, context=ctx, timeout=10)
print(s.login("bob@x.test", "bob-pw")[0])
s.sendmail("bob@x.test", ["c@far.test"], "Subject: over implicit tls\r\n\r\nhi\r\n")
s.quit()
"#,
        &[IP, &ca],
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec!["PLAIN LOGIN", "235", "235"]
    );
    assert!(pigeon.stop().success());
    let list = pigeon.queue_list();
    assert!(
        list.contains("<b@elsewhere.test>") && list.contains("<c@far.test>"),
        "{list}"
    );
    let ids = pigeon.queued_ids();
    assert_eq!(ids.len(), 2, "{list}");
    for id in &ids {
        let body = String::from_utf8(pigeon.queued_body(id)).unwrap();
        assert!(body.contains("with ESMTPSA id"), "{body}");
    }
    let log = pigeon.delivery_log();
    let received: Vec<&str> = log.lines().filter(|l| l.contains("\"received\"")).collect();
    assert_eq!(received.len(), 2, "{log}");
    assert!(
        received
            .iter()
            .any(|l| l.contains("\"auth\":\"alice@x.test\"")),
        "{log}"
    );
    assert!(
        received
            .iter()
            .any(|l| l.contains("\"auth\":\"bob@x.test\"")),
        "{log}"
    );
}

#[test]
fn auth_before_tls_mail_before_auth_and_wrong_passwords_are_refused() {
    const IP: &str = "127.0.3.2";
    let (mut pigeon, ca, _users) = pigeon_with_auth(IP, "");
    let plain = "AUTH PLAIN AGFsaWNlQHgudGVzdABhbGljZS1wdw==";
    for port in [2525, 2587] {
        let mut c = Client::greeted(format!("{IP}:{port}").parse().unwrap());
        let ehlo = c.cmd("EHLO c");
        assert!(
            !ehlo.text.contains("AUTH"),
            "AUTH offered in plain text: {ehlo:?}"
        );
        let r = c.cmd(plain);
        assert_eq!((r.code, &r.text[..6]), (538, "5.7.11"), "{r:?}");
    }
    let mut c = Client::greeted(format!("{IP}:2587").parse().unwrap());
    c.cmd("EHLO c");
    let r = c.cmd("MAIL FROM:<alice@x.test>");
    assert_eq!(r.code, 530, "{r:?}");
    let out = python(
        &format!(
            "{RAW}{}",
            r#"
ip, ca = sys.argv[1], sys.argv[2]
c = Raw(ip, 2465, ca)
c.reply()
c.cmd("EHLO c")
print(c.cmd("MAIL FROM:<alice@x.test>"))
print(c.cmd("AUTH PLAIN " + b64("\0alice@x.test\0wrong")))
print(c.cmd("AUTH PLAIN " + b64("\0nobody@x.test\0alice-pw")))
print(c.cmd("AUTH PLAIN " + b64("\0alice@x.test\0alice-pw")))
print(c.cmd("AUTH PLAIN " + b64("\0alice@x.test\0alice-pw")))
"#
        ),
        &[IP, &ca],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("530 5.7.0"), "{out}");
    assert!(lines[1].starts_with("535 5.7.8"), "{out}");
    assert!(lines[2].starts_with("535 5.7.8"), "unknown user: {out}");
    assert!(lines[3].starts_with("235 2.7.0"), "{out}");
    assert!(lines[4].starts_with("503 5.5.1"), "AUTH twice: {out}");
    assert!(pigeon.stop().success());
    assert!(
        !pigeon.log().contains("alice-pw"),
        "a password reached the log"
    );
}

#[test]
fn auth_login_over_a_raw_tls_socket_with_cancel_and_bad_base64() {
    const IP: &str = "127.0.3.3";
    let (mut pigeon, ca, _users) = pigeon_with_auth(IP, "");
    let out = python(
        &format!(
            "{RAW}{}",
            r#"
ip, ca = sys.argv[1], sys.argv[2]
c = Raw(ip, 2465, ca)
c.reply()
print(c.cmd("EHLO c"))
print(c.cmd("AUTH LOGIN"))
print(c.cmd("*"))
print(c.cmd("AUTH LOGIN"))
print(c.cmd("%%% not base64"))
print(c.cmd("AUTH LOGIN " + b64("alice@x.test")))
print(c.cmd(b64("alice-pw")))
print(c.cmd("MAIL FROM:<alice@x.test>"))
print(c.cmd("RCPT TO:<d@elsewhere.test>"))
"#
        ),
        &[IP, &ca],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "250 AUTH PLAIN LOGIN", "{out}");
    assert_eq!(lines[1], "334 VXNlcm5hbWU6", "{out}");
    assert!(lines[2].starts_with("501 5.0.0"), "{out}");
    assert_eq!(lines[3], "334 VXNlcm5hbWU6", "{out}");
    assert!(lines[4].starts_with("501 5.5.2"), "{out}");
    assert_eq!(lines[5], "334 UGFzc3dvcmQ6", "{out}");
    assert!(lines[6].starts_with("235 2.7.0"), "{out}");
    assert!(lines[7].starts_with("250"), "{out}");
    assert!(lines[8].starts_with("250"), "{out}");
    assert!(pigeon.stop().success());
}

/// The script for brute-force tests: `attempts` is a list of (source ip, user, password);
/// one connection per source, kept open. Prints each reply; after a 4xx, CLOSED if the
/// server then closed the connection.
const GUESS: &str = r#"
ip, ca, attempts = sys.argv[1], sys.argv[2], sys.argv[3:]
conns = {}
for a in attempts:
    source, user, pw = a.split(",")
    if source not in conns:
        c = Raw(ip, 2465, ca, source=source)
        c.reply()
        c.cmd("EHLO c")
        conns[source] = c
    c = conns[source]
    r = c.cmd("AUTH PLAIN " + b64("\0" + user + "\0" + pw))
    if r.startswith("4"):
        r += " CLOSED" if c.closed() else " OPEN"
        del conns[source]
    print(r)
"#;

#[test]
fn brute_force_from_one_address_is_cut_off_unchecked() {
    const IP: &str = "127.0.3.4";
    let (mut pigeon, ca, _users) = pigeon_with_auth(IP, "");
    // Ten wrong guesses from one address, at ten different users so that no user reaches
    // the limit: the eleventh attempt, with alice's RIGHT password, is refused all the
    // same, so it was never checked; the connection is closed.
    let mut attempts: Vec<String> = (0..10)
        .map(|i| format!("127.0.3.10,user{i}@x.test,guess{i}"))
        .collect();
    attempts.push("127.0.3.10,alice@x.test,alice-pw".into());
    // Another address still logs in as alice.
    attempts.push("127.0.3.11,alice@x.test,alice-pw".into());
    let args: Vec<&str> = [IP, ca.as_str()]
        .into_iter()
        .chain(attempts.iter().map(String::as_str))
        .collect();
    let out = python(&format!("{RAW}{GUESS}"), &args);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 12, "{out}");
    assert!(
        lines[..10].iter().all(|l| l.starts_with("535 5.7.8")),
        "{out}"
    );
    assert_eq!(
        lines[10], "454 4.7.0 Too many failed authentications CLOSED",
        "{out}"
    );
    assert!(lines[11].starts_with("235 2.7.0"), "{out}");
    assert!(pigeon.stop().success());
}

#[test]
fn brute_force_on_one_user_from_many_addresses_is_cut_off() {
    const IP: &str = "127.0.3.5";
    let (mut pigeon, ca, _users) = pigeon_with_auth(IP, "max_failures = 4\n");
    // Four wrong guesses at bob, each from its own address; then bob's right password from
    // a fresh address is refused, while alice logs in from that same address.
    let mut attempts: Vec<String> = (20..24)
        .map(|i| format!("127.0.3.{i},bob@x.test,guess{i}"))
        .collect();
    attempts.push("127.0.3.30,bob@x.test,bob-pw".into());
    attempts.push("127.0.3.31,alice@x.test,alice-pw".into());
    let args: Vec<&str> = [IP, ca.as_str()]
        .into_iter()
        .chain(attempts.iter().map(String::as_str))
        .collect();
    let out = python(&format!("{RAW}{GUESS}"), &args);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert!(
        lines[..4].iter().all(|l| l.starts_with("535 5.7.8")),
        "{out}"
    );
    assert_eq!(
        lines[4], "454 4.7.0 Too many failed authentications CLOSED",
        "{out}"
    );
    assert!(lines[5].starts_with("235 2.7.0"), "{out}");
    assert!(pigeon.stop().success());
}

#[test]
fn sender_match_refuses_other_senders() {
    const IP: &str = "127.0.3.6";
    let (mut pigeon, ca, _users) = pigeon_with_auth(IP, "sender_match = true\n");
    let out = python(
        &format!(
            "{RAW}{}",
            r#"
ip, ca = sys.argv[1], sys.argv[2]
c = Raw(ip, 2465, ca)
c.reply()
c.cmd("EHLO c")
print(c.cmd("AUTH PLAIN " + b64("\0alice@x.test\0alice-pw")))
print(c.cmd("MAIL FROM:<bob@x.test>"))
print(c.cmd("MAIL FROM:<alice@x.test>"))
"#
        ),
        &[IP, &ca],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("235"), "{out}");
    assert!(lines[1].starts_with("553 5.7.1"), "{out}");
    assert!(lines[2].starts_with("250"), "{out}");
    assert!(pigeon.stop().success());
}

#[test]
fn passwd_writes_a_private_file_and_replaces_entries() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    assert!(passwd("alice@x.test", &users, "first\n").0);
    assert!(passwd("bob@x.test", &users, "bob-pw\r\n").0);
    let mode = std::fs::metadata(&users).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "users file mode {mode:o}");
    let before = std::fs::read_to_string(&users).unwrap();
    assert!(passwd("alice@x.test", &users, "second\n").0);
    let after = std::fs::read_to_string(&users).unwrap();
    assert_eq!(after.lines().count(), 2, "{after}");
    let line = |text: &str, user: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{user}:")))
            .map(str::to_owned)
            .unwrap()
    };
    assert_ne!(line(&before, "alice@x.test"), line(&after, "alice@x.test"));
    assert_eq!(line(&before, "bob@x.test"), line(&after, "bob@x.test"));
    assert!(line(&after, "alice@x.test").starts_with("alice@x.test:$argon2id$"));
    // Refused: empty password, bad user names; the file is untouched.
    for (user, pw) in [("carol", "\n"), ("car ol", "pw\n"), ("car:ol", "pw\n")] {
        let (ok, err) = passwd(user, &users, pw);
        assert!(!ok, "{user:?} accepted");
        assert!(err.contains("pigeon:"), "{err}");
    }
    assert_eq!(std::fs::read_to_string(&users).unwrap(), after);
    // The replaced password is the one that works, and pigeon loads the file.
    const IP: &str = "127.0.3.7";
    let (cert, key) = certificate(dir.path(), IP);
    let extra = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n\n[auth]\nusers_file = \"{}\"\n\n\
         [[listener]]\naddress = \"{IP}:2465\"\nmode = \"submission\"\ntls = \"implicit\"\n",
        cert.display(),
        key.display(),
        users.display()
    );
    let mut pigeon = Pigeon::start(IP, "", &extra);
    let out = python(
        &format!(
            "{RAW}{}",
            r#"
ip, ca = sys.argv[1], sys.argv[2]
for pw in ["first", "second"]:
    c = Raw(ip, 2465, ca)
    c.reply()
    c.cmd("EHLO c")
    print(c.cmd("AUTH PLAIN " + b64("\0alice@x.test\0" + pw))[:3])
"#
        ),
        &[IP, cert.to_str().unwrap()],
    );
    assert_eq!(out.lines().collect::<Vec<_>>(), vec!["535", "235"]);
    assert!(pigeon.stop().success());
}
