//! TLS on listeners: STARTTLS (RFC 3207) and implicit TLS (RFC 8314), checked with Python's
//! ssl/smtplib and OpenSSL's s_client against a certificate the test makes with openssl.

mod common;

use std::process::Command;

use common::{certificate, python, Client, Pigeon};

/// pigeon on `ip`: plain on 2525, STARTTLS on 2587, implicit TLS on 2465.
fn pigeon_with_tls(ip: &str) -> (Pigeon, String) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), ip);
    let (cert, key) = (cert.display(), key.display());
    let extra = format!(
        "[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n\n\
         [[listener]]\naddress = \"{ip}:2587\"\ntls = \"starttls\"\n\n\
         [[listener]]\naddress = \"{ip}:2465\"\ntls = \"implicit\"\n"
    );
    let pigeon = Pigeon::start(ip, "", &extra);
    let kept = pigeon.dir.path().join("cert.pem");
    std::fs::copy(cert.to_string(), &kept).unwrap();
    (pigeon, kept.display().to_string())
}

#[test]
fn smtplib_sends_over_starttls_and_implicit_tls() {
    const IP: &str = "127.0.0.150";
    let (mut pigeon, ca) = pigeon_with_tls(IP);
    let out = python(
        r#"
import smtplib, ssl, sys
ip, ca = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
s = smtplib.SMTP(ip, 2587, timeout=10)
s.ehlo("client.test")
assert s.has_extn("starttls")
code, _ = s.starttls(context=ctx)
assert code == 220
print(s.sock.version())
s.ehlo("client.test")
assert not s.has_extn("starttls"), "STARTTLS is not offered twice"
s.sendmail("a@x.test", ["b@y.test"], "Subject: over starttls\r\n\r\nhi\r\n")
s.quit()
s = smtplib.SMTP_SSL(ip, 2465, context=ctx, timeout=10)
print(s.sock.version())
s.sendmail("a@x.test", ["b@y.test"], "Subject: over implicit tls\r\n\r\nhi\r\n")
s.quit()
"#,
        &[IP, &ca],
    );
    assert_eq!(out.lines().collect::<Vec<_>>(), vec!["TLSv1.3", "TLSv1.3"]);
    // The plain listener does not offer STARTTLS.
    let mut c = Client::greeted(pigeon.addr);
    assert!(!c.cmd("EHLO c").text.contains("STARTTLS"));
    assert_eq!(c.cmd("STARTTLS").code, 502);
    assert!(pigeon.stop().success());
    let ids = pigeon.queued_ids();
    assert_eq!(ids.len(), 2);
    for id in ids {
        let body = String::from_utf8(pigeon.queued_body(&id)).unwrap();
        assert!(body.contains("with ESMTPS id"), "{body}");
    }
}

/// RFC 3207 §5 / CVE-2011-0411: commands pipelined after STARTTLS in plain text are
/// dropped, not executed after the handshake.
#[test]
fn commands_pipelined_after_starttls_are_discarded() {
    const IP: &str = "127.0.0.151";
    let (mut pigeon, ca) = pigeon_with_tls(IP);
    // RSET (the issue's case) and HELP are each pipelined after STARTTLS in the same write.
    // Had one been kept, its reply (`250 2.0.0`, `214`) would be the first thing to arrive
    // over TLS; the first reply must be the multi-line one to the EHLO sent over TLS. Had
    // a second plain-text reply been sent, the handshake would read it as a TLS record and
    // fail: so a handshake that succeeds shows exactly one plain reply.
    let out = python(
        r#"
import socket, ssl, sys
ip, ca = sys.argv[1], sys.argv[2]
for pipelined in (b"RSET", b"HELP"):
    sock = socket.create_connection((ip, 2587), timeout=10)
    def line():
        data = b""
        while not data.endswith(b"\r\n"):
            data += sock.recv(1)
        return data
    def reply():
        lines = [line()]
        while lines[-1][3:4] == b"-":
            lines.append(line())
        return lines
    assert reply()[0].startswith(b"220")
    sock.sendall(b"EHLO c\r\n")
    assert reply()[-1].startswith(b"250")
    sock.sendall(b"STARTTLS\r\n" + pipelined + b"\r\n")
    assert reply()[0].startswith(b"220 2.0.0"), "one plain reply"
    sock = ssl.create_default_context(cafile=ca).wrap_socket(sock, server_hostname="mx.test")
    sock.sendall(b"EHLO c\r\n")
    first = reply()
    print(pipelined.decode(), first[0][:4].decode())
    sock.close()
"#,
        &[IP, &ca],
    );
    assert_eq!(
        out.trim(),
        "RSET 250-\nHELP 250-",
        "a command pipelined after STARTTLS was executed after the handshake"
    );
    let mut c = Client::greeted(format!("{IP}:2587").parse().unwrap());
    assert_eq!(c.cmd("EHLO c").code, 250);
    assert!(pigeon.stop().success());
}

#[test]
fn openssl_s_client_negotiates_tls_1_3_with_starttls() {
    const IP: &str = "127.0.0.152";
    let (mut pigeon, ca) = pigeon_with_tls(IP);
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-starttls",
            "smtp",
            "-connect",
            &format!("{IP}:2587"),
            "-CAfile",
            &ca,
        ])
        .args(["-servername", "mx.test", "-verify_return_error", "-brief"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Protocol version: TLSv1.3"), "{text}");
    assert!(text.contains("Verification: OK"), "{text}");
    assert!(pigeon.stop().success());
}
