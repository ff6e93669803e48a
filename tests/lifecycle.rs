//! A session's life at the edges: timeouts, clients that vanish, a full disk, and the
//! graceful stop on SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::{queued_id, segment_files, wait_until, Client, Pigeon};

#[test]
fn sigterm_lets_data_finish_and_closes_idle_sessions_with_421() {
    let mut pigeon = Pigeon::start("127.0.0.21", "", "");
    let mut idle = Client::greeted(pigeon.addr);
    assert_eq!(idle.cmd("EHLO idle").code, 250);
    let mut mid_data = Client::greeted(pigeon.addr);
    assert_eq!(mid_data.cmd("EHLO busy").code, 250);
    assert_eq!(mid_data.cmd("MAIL FROM:<a@x.test>").code, 250);
    assert_eq!(mid_data.cmd("RCPT TO:<b@y.test>").code, 250);
    assert_eq!(mid_data.cmd("DATA").code, 354);
    mid_data.send(b"Subject: in flight\r\n\r\nfirst half\r\n");
    std::thread::sleep(Duration::from_millis(100));

    pigeon.sigterm();
    let r = idle.reply();
    assert_eq!((r.code, &r.text[..5]), (421, "4.3.2"), "{r:?}");
    assert!(idle.is_closed());

    // The session inside DATA may finish its message, then is told to go.
    std::thread::sleep(Duration::from_millis(300));
    mid_data.send(b"second half\r\n.\r\n");
    let id = queued_id(&mid_data.reply());
    let r = mid_data.reply();
    assert_eq!((r.code, &r.text[..5]), (421, "4.3.2"), "{r:?}");

    let status = pigeon.wait();
    assert!(status.success(), "exit status {status}:\n{}", pigeon.log());
    assert_eq!(pigeon.queued_ids(), vec![id.clone()]);
    let body = pigeon.queued_body(&id);
    assert!(body.ends_with(b"first half\r\nsecond half\r\n"));
}

#[test]
fn read_timeouts_answer_421_and_keep_nothing() {
    let mut pigeon = Pigeon::start(
        "127.0.0.22",
        "",
        "[timeouts]\ncommand = \"1s\"\ndata = \"1s\"\n",
    );
    let started = Instant::now();
    let mut idle = Client::greeted(pigeon.addr);
    let r = idle.reply();
    assert_eq!((r.code, &r.text[..5]), (421, "4.4.2"), "{r:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(idle.is_closed());

    let mut stalled = Client::greeted(pigeon.addr);
    assert_eq!(stalled.cmd("EHLO c").code, 250);
    assert_eq!(stalled.cmd("MAIL FROM:<a@x.test>").code, 250);
    assert_eq!(stalled.cmd("RCPT TO:<b@y.test>").code, 250);
    assert_eq!(stalled.cmd("DATA").code, 354);
    stalled.send(b"Subject: never finished\r\n\r\n");
    let r = stalled.reply();
    assert_eq!((r.code, &r.text[..5]), (421, "4.4.2"), "{r:?}");

    assert!(pigeon.stop().success());
    assert!(pigeon.queued_ids().is_empty(), "{}", pigeon.queue_list());
}

#[test]
fn client_vanishing_mid_data_or_mid_bdat_leaves_nothing() {
    let mut pigeon = Pigeon::start("127.0.0.23", "", "");
    {
        let mut c = Client::greeted(pigeon.addr);
        c.send(b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n");
        for code in [250, 250, 250, 354] {
            assert_eq!(c.reply().code, code);
        }
        c.send(b"Subject: cut\r\n\r\nhalf a message");
    }
    {
        let mut c = Client::greeted(pigeon.addr);
        c.send(b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT 6\r\nchunk1");
        for code in [250, 250, 250, 250] {
            assert_eq!(c.reply().code, code);
        }
        c.send(b"BDAT 100 LAST\r\nonly part of the last chunk");
    }
    // A complete message afterwards proves the server is alive and spooling.
    let mut c = Client::greeted(pigeon.addr);
    assert_eq!(c.cmd("EHLO c").code, 250);
    let id = queued_id(&c.send_message("a@x.test", &["b@y.test"], b"Subject: whole\r\n\r\nok\r\n"));
    assert!(pigeon.stop().success());
    assert_eq!(pigeon.queued_ids(), vec![id]);
}

#[test]
fn below_the_free_space_floor_mail_gets_452() {
    let mut pigeon = Pigeon::start("127.0.0.24", "min_free_space = \"1000000GiB\"", "");
    let mut c = Client::greeted(pigeon.addr);
    assert_eq!(c.cmd("EHLO c").code, 250);
    let r = c.cmd("MAIL FROM:<a@x.test>");
    assert_eq!((r.code, &r.text[..5]), (452, "4.3.1"), "{r:?}");
    assert!(pigeon.stop().success());
}

/// Under systemd (Type=notify) pigeon says READY=1 once it listens and STOPPING=1 on
/// SIGTERM; a real datagram socket stands in for systemd's.
#[test]
fn systemd_notifications_ready_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let notify = socket_path.to_str().unwrap();
    let mut pigeon = Pigeon::start_with_env("127.0.0.25", 2, "", "", &[("NOTIFY_SOCKET", notify)]);
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    // READY comes after the listeners are bound: a client can connect now.
    let mut c = Client::greeted(pigeon.addr);
    assert_eq!(c.cmd("QUIT").code, 221);
    pigeon.sigterm();
    let n = socket.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    assert!(pigeon.wait().success());
}

#[test]
fn a_client_stalled_in_data_cannot_hold_the_stop_past_the_grace() {
    let mut pigeon = Pigeon::start(
        "127.0.0.26",
        "",
        "[timeouts]\ndata = \"60s\"\nshutdown_grace = \"1s\"\n",
    );
    let mut c = Client::greeted(pigeon.addr);
    c.send(b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n");
    for code in [250, 250, 250, 354] {
        assert_eq!(c.reply().code, code);
    }
    c.send(b"Subject: stalled\r\n\r\nand then nothing");
    std::thread::sleep(Duration::from_millis(100));
    let stopped_at = Instant::now();
    pigeon.sigterm();
    let r = c.reply();
    assert_eq!((r.code, &r.text[..5]), (421, "4.3.2"), "{r:?}");
    assert!(pigeon.wait().success());
    assert!(
        stopped_at.elapsed() < Duration::from_secs(10),
        "{:?}",
        stopped_at.elapsed()
    );
    assert!(pigeon.queued_ids().is_empty());
}

#[test]
fn a_second_server_on_the_same_spool_refuses_to_start_and_touches_nothing() {
    let mut pigeon = Pigeon::start("127.0.0.27", "", "");
    let mut c = Client::greeted(pigeon.addr);
    assert_eq!(c.cmd("EHLO a").code, 250);
    let first = b"Subject: first\r\n\r\nkept\r\n";
    let id = queued_id(&c.send_message("a@x.test", &["b@y.test"], first));
    // Its first attempt (to a closed port) deferred, so the spool is quiet for minutes.
    wait_until(Duration::from_secs(20), "the first deferral", || {
        pigeon.delivery_log().contains("\"deferred\"")
    });
    std::thread::sleep(Duration::from_millis(300));
    let before = segment_files(&pigeon.spool());
    assert!(!before.is_empty());

    // The same configuration again: same spool, same listener (bindable twice, as the
    // listeners use SO_REUSEPORT).
    let mut second = std::process::Command::new(common::PIGEON)
        .arg("serve")
        .arg("--config")
        .arg(pigeon.dir.path().join("pigeon.toml"))
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!("a second server started on the spool in use");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    let expected = format!(
        "spool.path {}: in use by another pigeon (pid {})",
        pigeon.spool().display(),
        pigeon.pid()
    );
    assert!(err.contains(&expected), "{err}");

    // The first server's spool is as it was, and it goes on taking mail.
    assert_eq!(segment_files(&pigeon.spool()), before);
    let second_id = queued_id(&c.send_message(
        "a@x.test",
        &["b@y.test"],
        b"Subject: second\r\n\r\nalso kept\r\n",
    ));
    assert!(pigeon.stop().success(), "{}", pigeon.log());
    let mut queued = pigeon.queued_ids();
    queued.sort();
    let mut want = vec![id, second_id];
    want.sort();
    assert_eq!(queued, want);
    // A clean restart takes the lock its predecessor left behind with its pid.
    pigeon.restart();
    assert!(pigeon.stop().success());
}
