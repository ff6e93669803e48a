//! Abuse limits against the real binary over loopback: connection floods from one address,
//! the total limit, connection rate, messages and recipients per connection, slowloris
//! clients trickling a command, the total session time, and the exempt networks. Each test
//! also shows that other clients (other 127.0.4.x / 127.0.5.x addresses) are still served.
//! Then SIGHUP: a new certificate for new TLS handshakes, open sessions untouched, a broken
//! file ignored.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{python, queued_id, self_signed, Client, Pigeon};

/// Only 127.0.0.1 may relay, so the 127.0.4.x and 127.0.5.x test clients are strangers
/// (not exempt from per-client limits) that may send to y.test.
const STRANGERS: &str = "[relay]\nnetworks = [\"127.0.0.1/32\"]\ndomains = [\"y.test\"]\n";

fn greeted_from(addr: SocketAddr, source: &str) -> Client {
    let mut c = Client::connect_from(addr, source);
    let greeting = c.reply();
    assert_eq!(greeting.code, 220, "{source}: {greeting:?}");
    c
}

/// Connects from `source` and expects to be refused: 421 4.7.0, then the connection closes.
fn refused_from(addr: SocketAddr, source: &str) -> String {
    let mut c = Client::connect_from(addr, source);
    let r = c.reply();
    assert_eq!(r.code, 421, "{source} was not refused: {r:?}");
    assert!(r.text.starts_with("4.7.0 mx.test "), "{r:?}");
    assert!(c.is_closed(), "the refused connection stays open");
    r.text
}

/// Sends one message to y.test and returns its queue id.
fn send_one(c: &mut Client) -> String {
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    let r = c.send_message("a@x.test", &["b@y.test"], b"Subject: hi\r\n\r\nhello\r\n");
    queued_id(&r)
}

/// Waits (at most 10 s) until a connection from `source` is greeted again: the server has
/// to notice closed connections before their counts are released.
fn greeted_again(addr: SocketAddr, source: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Client::connect_from(addr, source);
        let r = c.reply();
        if r.code == 220 {
            return c;
        }
        assert!(Instant::now() < deadline, "{source} still refused: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_flood_from_one_address_is_capped_and_other_clients_are_served() {
    let extra = format!("{STRANGERS}\n[limits]\nmax_connections_per_ip = 5\n");
    let mut pigeon = Pigeon::start("127.0.4.1", "", &extra);
    let addr = pigeon.addr;
    let mut open: Vec<Client> = (0..5).map(|_| greeted_from(addr, "127.0.4.10")).collect();
    // The flood: every further connection from the address is refused at once, as many
    // times as it tries.
    for _ in 0..30 {
        let text = refused_from(addr, "127.0.4.10");
        assert!(
            text.contains("Too many connections from your address"),
            "{text}"
        );
    }
    // The five admitted sessions are untouched.
    for c in &mut open {
        assert_eq!(c.cmd("NOOP").code, 250);
    }
    // Other addresses, in the same /24 and in another, are served and their mail queued.
    let mut ids = vec![
        send_one(&mut greeted_from(addr, "127.0.4.11")),
        send_one(&mut greeted_from(addr, "127.0.5.11")),
    ];
    // Three leave politely, two vanish with a reset: all five counts come back.
    for mut c in open.drain(..3) {
        assert_eq!(c.cmd("QUIT").code, 221);
    }
    for c in open.drain(..) {
        c.abort();
    }
    // Each of the five comes back once the server has seen its session end (a reset is
    // noticed at the session's next read, not at once), so each is waited for.
    let mut again: Vec<Client> = (0..5).map(|_| greeted_again(addr, "127.0.4.10")).collect();
    refused_from(addr, "127.0.4.10");
    ids.push(send_one(&mut again[0]));
    drop(again);
    assert!(pigeon.stop().success());
    let mut queued = pigeon.queued_ids();
    queued.sort();
    ids.sort();
    assert_eq!(queued, ids);
}

#[test]
fn the_total_limit_applies_to_every_client_even_exempt_ones() {
    // Default relay.networks (127.0.0.0/8): every test address is exempt from the per-client
    // limits, but not from the total.
    let mut pigeon = Pigeon::start("127.0.4.2", "", "[limits]\nmax_connections = 4\n");
    let addr = pigeon.addr;
    let mut open: Vec<Client> = (0..4).map(|_| greeted_from(addr, "127.0.4.20")).collect();
    for source in ["127.0.4.20", "127.0.5.20"] {
        let text = refused_from(addr, source);
        assert!(
            text.contains("Too many connections, try again later"),
            "{text}"
        );
    }
    assert_eq!(open.pop().unwrap().cmd("QUIT").code, 221);
    let mut c = greeted_again(addr, "127.0.5.20");
    send_one(&mut c);
    assert!(pigeon.stop().success());
}

#[test]
fn connection_rate_per_address_is_limited() {
    let extra = format!("{STRANGERS}\n[limits]\nconnection_rate_per_ip = \"3/h\"\n");
    let mut pigeon = Pigeon::start("127.0.4.3", "", &extra);
    let addr = pigeon.addr;
    // A burst of three in the hour, one after the other (never more than one open).
    for _ in 0..3 {
        assert_eq!(greeted_from(addr, "127.0.4.30").cmd("QUIT").code, 221);
    }
    for _ in 0..5 {
        let text = refused_from(addr, "127.0.4.30");
        assert!(text.contains("rate limit"), "{text}");
    }
    send_one(&mut greeted_from(addr, "127.0.4.31"));
    assert!(pigeon.stop().success());
}

#[test]
fn messages_and_recipients_per_connection_are_limited() {
    let extra = format!(
        "{STRANGERS}\n[limits]\nmax_messages_per_connection = 2\n\
         max_recipients_per_connection = 3\n"
    );
    let mut pigeon = Pigeon::start("127.0.4.4", "", &extra);
    let addr = pigeon.addr;
    // Two messages, then MAIL gets 421 4.7.0 and the connection closes.
    let mut c = greeted_from(addr, "127.0.4.40");
    let mut ids = vec![send_one(&mut c), {
        let r = c.send_message("a@x.test", &["c@y.test"], b"Subject: 2\r\n\r\n2\r\n");
        queued_id(&r)
    }];
    let r = c.cmd("MAIL FROM:<a@x.test>");
    assert_eq!((r.code, &r.text[..5]), (421, "4.7.0"), "{r:?}");
    assert!(c.is_closed());
    // Recipients count over the session: the fourth gets 452 4.5.3, the message goes to
    // the three, and the next MAIL ends the session.
    let mut c = greeted_from(addr, "127.0.4.40");
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@x.test>").code, 250);
    for n in 1..=3 {
        assert_eq!(c.cmd(&format!("RCPT TO:<r{n}@y.test>")).code, 250);
    }
    let r = c.cmd("RCPT TO:<r4@y.test>");
    assert_eq!((r.code, &r.text[..5]), (452, "4.5.3"), "{r:?}");
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: 3\r\n\r\n3\r\n.\r\n");
    ids.push(queued_id(&c.reply()));
    assert_eq!(c.cmd("MAIL FROM:<a@x.test>").code, 421);
    assert!(c.is_closed());
    // A new connection has a new budget.
    ids.push(send_one(&mut greeted_from(addr, "127.0.4.40")));
    assert!(pigeon.stop().success());
    let list = pigeon.queue_list();
    assert!(list.contains("4 messages, 6 recipients"), "{list}");
    for id in ids {
        assert!(list.contains(&id), "{id} not queued:\n{list}");
    }
}

#[test]
fn exempt_networks_have_no_per_client_limits() {
    let extra = format!(
        "{STRANGERS}\n[limits]\nmax_connections_per_ip = 2\nmax_messages_per_connection = 1\n\
         connection_rate_per_ip = \"3/h\"\nexempt_networks = [\"127.0.4.41/32\"]\n"
    );
    let mut pigeon = Pigeon::start("127.0.4.5", "", &extra);
    let addr = pigeon.addr;
    let mut open: Vec<Client> = (0..6).map(|_| greeted_from(addr, "127.0.4.41")).collect();
    let c = &mut open[0];
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    for n in 0..3 {
        let r = c.send_message(
            "a@x.test",
            &["b@y.test"],
            format!("N: {n}\r\n\r\n").as_bytes(),
        );
        queued_id(&r);
    }
    // The same limits bind a neighbour that is not exempt.
    let _a = greeted_from(addr, "127.0.4.42");
    let _b = greeted_from(addr, "127.0.4.42");
    refused_from(addr, "127.0.4.42");
    drop(open);
    assert!(pigeon.stop().success());
    assert_eq!(pigeon.queued_ids().len(), 3);
}

/// Sends `line` one byte every 300 ms from another thread until the server closes or the
/// line is done; the thread returns how many bytes went out and what the server said.
fn trickle(mut c: Client, line: &'static [u8]) -> std::thread::JoinHandle<(usize, String)> {
    std::thread::spawn(move || {
        let mut sent = 0;
        for b in line {
            if !c.try_send(std::slice::from_ref(b)) {
                break;
            }
            sent += 1;
            std::thread::sleep(Duration::from_millis(300));
        }
        (sent, String::from_utf8_lossy(&c.read_rest()).into_owned())
    })
}

#[test]
fn a_slowloris_command_is_cut_off_while_others_are_served() {
    let extra = format!("{STRANGERS}\n[timeouts]\ncommand = \"2s\"\n");
    let mut pigeon = Pigeon::start("127.0.4.6", "", &extra);
    let addr = pigeon.addr;
    // 60 bytes at 300 ms each would take 18 s; every single read comes well within the
    // 2 s command timeout, so only a deadline on the whole line can end it.
    const LINE: &[u8] = b"EHLO a-very-slow-client-that-never-quite-finishes.example\r\n";
    let started = Instant::now();
    let slow = trickle(greeted_from(addr, "127.0.4.60"), LINE);
    // Meanwhile a legitimate client is served.
    send_one(&mut greeted_from(addr, "127.0.5.60"));
    let (sent, said) = slow.join().unwrap();
    let elapsed = started.elapsed();
    assert!(said.starts_with("421 4.4.2 "), "{said:?}");
    assert!(
        sent < LINE.len() / 2,
        "the slow client sent {sent} of {} bytes before being cut off",
        LINE.len()
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "cut off only after {elapsed:?}"
    );
    assert!(pigeon.stop().success());
    assert_eq!(pigeon.queued_ids().len(), 1);
}

#[test]
fn the_session_time_is_bounded_but_a_message_under_way_finishes() {
    let extra = format!("{STRANGERS}\n[timeouts]\nsession = \"3s\"\n");
    let mut pigeon = Pigeon::start("127.0.4.8", "", &extra);
    let addr = pigeon.addr;
    // An idle-ish client sending NOOP twice a second is ended at the session time.
    let mut chatty = greeted_from(addr, "127.0.4.80");
    let started = Instant::now();
    let mut last = None;
    for _ in 0..20 {
        let r = chatty.cmd("NOOP");
        if r.code != 250 {
            last = Some(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let r = last.expect("never ended");
    assert_eq!((r.code, &r.text[..5]), (421, "4.4.2"), "{r:?}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(2500),
        "ended after {elapsed:?}"
    );
    assert!(chatty.is_closed());
    // A message whose content is under way at the session time is still accepted; the 421
    // follows its 250.
    let mut c = greeted_from(addr, "127.0.4.81");
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@x.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@y.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: slow but steady\r\n\r\n");
    for n in 0..8 {
        std::thread::sleep(Duration::from_millis(500));
        c.send(format!("line {n}\r\n").as_bytes());
    }
    c.send(b".\r\n");
    let id = queued_id(&c.reply());
    let r = c.reply();
    assert_eq!((r.code, &r.text[..5]), (421, "4.4.2"), "{r:?}");
    assert!(pigeon.stop().success());
    assert_eq!(pigeon.queued_ids(), vec![id]);
}

/// The CN of the certificate a new STARTTLS handshake on `ip:2587` presents.
/// The PEM goes through `dir`, where openssl reads the subject.
fn presented_cn(ip: &str, source: &str, dir: &Path) -> String {
    let path = dir.join("presented.pem").display().to_string();
    python(
        r#"
import smtplib, ssl, sys
ip, source = sys.argv[1], sys.argv[2]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP(ip, 2587, timeout=10, source_address=(source, 0))
s.ehlo("client.test")
s.starttls(context=ctx)
der = s.sock.getpeercert(binary_form=True)
pem = ssl.DER_cert_to_PEM_cert(der)
open(sys.argv[3], "w").write(pem)
s.ehlo("client.test")
s.quit()
"#,
        &[ip, source, &path],
    );
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in", &path])
        .output()
        .expect("openssl");
    let _ = std::fs::remove_file(&path);
    let subject = String::from_utf8_lossy(&out.stdout).into_owned();
    subject
        .rsplit("CN")
        .next()
        .unwrap_or("")
        .trim_start_matches([' ', '='])
        .trim()
        .to_owned()
}

fn wait_for_log(pigeon: &Pigeon, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pigeon.log().matches(needle).count() < count {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in:\n{}",
            pigeon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn hup(pigeon: &Pigeon) {
    let rc = unsafe { libc::kill(pigeon.pid() as i32, libc::SIGHUP) };
    assert_eq!(rc, 0, "kill -HUP");
}

#[test]
fn sighup_reloads_the_certificate_without_dropping_sessions() {
    const IP: &str = "127.0.4.9";
    let certs = tempfile::tempdir().unwrap();
    let (cert_a, key_a) = self_signed(certs.path(), "a.", "a.mx.test", None);
    let (cert_b, key_b) = self_signed(certs.path(), "b.", "b.mx.test", None);
    let live = tempfile::tempdir().unwrap();
    let (cert, key) = (live.path().join("cert.pem"), live.path().join("key.pem"));
    std::fs::copy(&cert_a, &cert).unwrap();
    std::fs::copy(&key_a, &key).unwrap();
    let extra = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n\n[[listener]]\naddress = \"{IP}:2587\"\n\
         tls = \"starttls\"\n",
        cert.display(),
        key.display()
    );
    let mut pigeon = Pigeon::start(IP, "", &extra);
    assert_eq!(presented_cn(IP, "127.0.4.90", certs.path()), "a.mx.test");
    // A plain session in mid-transaction across the reload.
    let mut open = greeted_from(pigeon.addr, "127.0.4.91");
    assert_eq!(open.cmd("EHLO client.test").code, 250);
    assert_eq!(open.cmd("MAIL FROM:<a@x.test>").code, 250);
    assert_eq!(open.cmd("RCPT TO:<b@y.test>").code, 250);

    std::fs::copy(&cert_b, &cert).unwrap();
    std::fs::copy(&key_b, &key).unwrap();
    hup(&pigeon);
    wait_for_log(&pigeon, "TLS certificate and key reloaded", 1);
    assert_eq!(presented_cn(IP, "127.0.4.90", certs.path()), "b.mx.test");
    assert_eq!(open.cmd("DATA").code, 354);
    open.send(b"Subject: across the reload\r\n\r\nhi\r\n.\r\n");
    let first = queued_id(&open.reply());

    // A broken file: the error is logged, B stays, the server keeps serving.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    hup(&pigeon);
    wait_for_log(&pigeon, "TLS reload failed", 1);
    assert_eq!(presented_cn(IP, "127.0.4.90", certs.path()), "b.mx.test");
    let second = send_one(&mut greeted_from(pigeon.addr, "127.0.4.92"));
    assert!(pigeon.stop().success());
    let mut ids = pigeon.queued_ids();
    ids.sort();
    let mut want = vec![first, second];
    want.sort();
    assert_eq!(ids, want);
}
