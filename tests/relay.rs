//! No open relay: from outside `relay.networks`, mail is accepted only for `relay.domains`,
//! and no address trick gets a foreign domain past RCPT, not even after a failed AUTH;
//! an authenticated client may relay.

mod common;

use common::{certificate, passwd, python, Client, Pigeon};

/// Whether a trick is a well-formed address (refused only because it is foreign) or not
/// even that (refused for its syntax, authenticated or not).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Form {
    Valid,
    Syntax,
}

/// Address tricks that have opened relays (Postfix's and Sendmail's lists of them): source
/// routes, `%` and `!` hacks, quoted `@`, trailing dots, address literals.
const TRICKS: [(&str, Form); 23] = [
    ("b@elsewhere.test", Form::Valid),
    ("b@ELSEWHERE.TEST", Form::Valid),
    ("b%elsewhere.test@other.test", Form::Valid),
    ("b%local.test@elsewhere.test", Form::Valid),
    ("@local.test:b@elsewhere.test", Form::Valid),
    ("@local.test,@local.test:b@elsewhere.test", Form::Valid),
    ("\"b@local.test\"@elsewhere.test", Form::Valid),
    ("\"b%local.test\"@elsewhere.test", Form::Valid),
    ("b@elsewhere.test@local.test", Form::Syntax),
    ("b@local.test@elsewhere.test", Form::Syntax),
    ("b@local.test.elsewhere.test", Form::Valid),
    ("b@xlocal.test", Form::Valid),
    ("b@local.test.", Form::Syntax),
    ("b@elsewhere.test.", Form::Syntax),
    ("b@[127.0.0.1]", Form::Valid),
    ("b@[192.0.2.1]", Form::Valid),
    ("b@[IPv6:::1]", Form::Valid),
    ("elsewhere.test!b@other.test", Form::Valid),
    ("b@local.test\\@elsewhere.test", Form::Syntax),
    ("b @local.test", Form::Syntax),
    ("b@local..test", Form::Syntax),
    ("b@-local.test", Form::Syntax),
    ("<b@elsewhere.test>", Form::Syntax),
];

#[test]
fn address_tricks_never_open_the_relay() {
    let mut pigeon = Pigeon::start(
        "127.0.0.160",
        "",
        "[relay]\nnetworks = [\"10.0.0.0/8\"]\ndomains = [\"local.test\"]\n",
    );
    let tricks = TRICKS.map(|(t, _)| t);
    let mut accepted = Vec::new();
    for trick in tricks {
        let mut c = Client::greeted(pigeon.addr);
        assert_eq!(c.cmd("EHLO outsider.test").code, 250);
        assert_eq!(c.cmd("MAIL FROM:<a@outsider.test>").code, 250);
        let r = c.cmd(&format!("RCPT TO:<{trick}>"));
        if r.code < 500 {
            accepted.push(format!("{trick} -> {} {}", r.code, r.text));
        }
    }
    assert!(
        accepted.is_empty(),
        "relay tricks accepted:\n{}",
        accepted.join("\n")
    );
    // The domain we do accept mail for still works, in any case.
    let mut c = Client::greeted(pigeon.addr);
    assert_eq!(c.cmd("EHLO outsider.test").code, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@outsider.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@local.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<B@Local.Test>").code, 250);
    assert!(pigeon.stop().success());
}

/// The same tricks over TLS on a relay listener with AUTH: after a failed AUTH every one is
/// still refused at RCPT; once authenticated, the well-formed ones are accepted (an
/// authenticated user may relay anywhere) and the malformed ones get their syntax error,
/// not 250.
#[test]
fn tricks_stay_refused_after_failed_auth_and_pass_once_authenticated() {
    const IP: &str = "127.0.3.8";
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), IP);
    let users = dir.path().join("users");
    let (ok, err) = passwd("alice@x.test", &users, "alice-pw\n");
    assert!(ok, "{err}");
    let extra = format!(
        "[relay]\nnetworks = [\"10.0.0.0/8\"]\ndomains = [\"local.test\"]\n\n\
         [limits]\nmax_errors = 100\n\n\
         [tls]\ncert = \"{}\"\nkey = \"{}\"\n\n[auth]\nusers_file = \"{}\"\n\n\
         [[listener]]\naddress = \"{IP}:2465\"\nmode = \"relay\"\ntls = \"implicit\"\n",
        cert.display(),
        key.display(),
        users.display()
    );
    let mut pigeon = Pigeon::start(IP, "", &extra);
    let script = r#"
import base64, smtplib, ssl, sys
ip, ca, tricks = sys.argv[1], sys.argv[2], sys.argv[3:]
ctx = ssl.create_default_context(cafile=ca)
for password in ["wrong", "alice-pw"]:
    s = smtplib.SMTP_SSL(ip, 2465, context=ctx, timeout=10)
    s.ehlo("outsider.test")
    plain = base64.b64encode(b"\0alice@x.test\0" + password.encode()).decode()
    print(password, s.docmd("AUTH", "PLAIN " + plain)[0])
    assert s.docmd("MAIL", "FROM:<a@outsider.test>")[0] == 250
    for t in tricks:
        print(password, s.docmd("RCPT", "TO:<" + t + ">")[0], t)
    s.quit()
"#;
    let ca = cert.display().to_string();
    let args: Vec<&str> = [IP, ca.as_str()]
        .into_iter()
        .chain(TRICKS.iter().map(|(t, _)| *t))
        .collect();
    let out = python(script, &args);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2 * (TRICKS.len() + 1), "{out}");
    assert_eq!(lines[0], "wrong 535", "{out}");
    assert_eq!(lines[TRICKS.len() + 1], "alice-pw 235", "{out}");
    let mut wrong = Vec::new();
    for (i, (trick, form)) in TRICKS.iter().enumerate() {
        let failed: u16 = lines[1 + i].split(' ').nth(1).unwrap().parse().unwrap();
        let authed: u16 = lines[TRICKS.len() + 2 + i]
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let expected_authed = match form {
            Form::Valid => 250,
            Form::Syntax => 501,
        };
        let expected_failed = match form {
            Form::Valid => 554,
            Form::Syntax => 501,
        };
        if failed != expected_failed || authed != expected_authed {
            wrong.push(format!(
                "{trick}: after failed AUTH {failed} (want {expected_failed}), \
                 authenticated {authed} (want {expected_authed})"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(pigeon.stop().success());
}
