//! pigeon's delivery client against a real Postfix `smtpd`, which offers CHUNKING and
//! PIPELINING: pigeon writes many `MAIL RCPT… BDAT n LAST` transactions at a time, Postfix
//! relays what it accepted to `pigeon-load sink --save`, and every message must arrive once,
//! with its content unchanged (lines that start with dots included).
//!
//! Needs Debian's `postfix` package (its programs only: the instance writes its own
//! configuration from `loadtest/postfix/`), openssl, and root (Postfix's daemons change
//! user). Without postfix or root the test says so and passes on a developer's machine, but
//! fails under CI (`CI` set), where `.ci/run` installs the package and runs as root.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{blast, free_port, n, temp_dir, Pigeon, Sink};

/// The message blast sends: dots at line starts (stuffed in the spool, unstuffed for BDAT),
/// a lone dot line, and a long body so a batch spans many TCP segments.
fn sample() -> Vec<u8> {
    let mut m = b"From: <list@x.test>\r\nTo: <members@x.test>\r\nSubject: chunked\r\n\r\n".to_vec();
    m.extend_from_slice(b".leading dot\r\n..two dots\r\n.\r\nmiddle\r\n");
    for i in 0..200 {
        m.extend_from_slice(format!("line {i} of the body, long enough to matter\r\n").as_bytes());
    }
    m.extend_from_slice(b".\r\nlast line\r\n");
    m
}

fn can_run_postfix() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    // Only the programs: the instance brings its own configuration, not /etc/postfix's.
    let ok = root
        && ["postfix", "postconf"]
            .iter()
            .all(|p| Path::new("/usr/sbin").join(p).exists());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run as root with postfix installed"
        );
        eprintln!("skipped: needs root and Debian's postfix");
    }
    ok
}

/// A private Postfix instance (its own config, queue and log), stopped when dropped.
struct Postfix {
    config: PathBuf,
}

impl Postfix {
    /// Starts Postfix's smtpd on `listen` (an address of `lo`: Postfix wants
    /// `inet_interfaces` to name an interface's address), relaying everything to `relay`.
    /// Its main.cf, master.cf and postfix-files are loadtest/postfix's, filled in, in
    /// `dir/etc`: nothing comes from /etc/postfix.
    fn start(dir: &Path, ip: &str, port: u16, relay: &str) -> Postfix {
        let config = dir.join("etc");
        std::fs::create_dir_all(&config).unwrap();
        // `postfix` enters the queue directory before it creates what is missing in it.
        std::fs::create_dir_all(dir.join("queue")).unwrap();
        let run = |cmd: &mut Command| {
            let out = cmd.output().expect("run a postfix command");
            assert!(
                out.status.success(),
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // Postfix's daemons (user postfix) must reach the queue.
        run(Command::new("chmod").arg("755").arg(dir));
        let (relay_ip, relay_port) = relay.rsplit_once(':').unwrap();
        let fill = |template: &str| {
            template
                .replace("@ETC@", config.to_str().unwrap())
                .replace("@BASE@", dir.to_str().unwrap())
                .replace("@IP@", ip)
                .replace("@PORT@", &port.to_string())
                .replace("@RELAY@", &format!("[{relay_ip}]:{relay_port}"))
                .replace("@HOSTNAME@", "postfix.relay.test")
        };
        for (name, template) in [
            ("main.cf", include_str!("../postfix/main.cf")),
            ("master.cf", include_str!("../postfix/master.cf")),
            ("postfix-files", include_str!("../postfix/postfix-files")),
        ] {
            std::fs::write(config.join(name), fill(template)).unwrap();
        }
        // smtpd offers STARTTLS, as Debian's does, so pigeon's batches go over TLS.
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=postfix.relay.test", "-keyout"])
            .arg(config.join("key.pem"))
            .arg("-out")
            .arg(config.join("cert.pem")));
        run(Command::new("postfix").arg("-c").arg(&config).arg("check"));
        run(Command::new("postfix").arg("-c").arg(&config).arg("start"));
        Postfix { config }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(&self.config)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The EHLO reply of the server at `addr`, waiting (bounded) for it to listen.
fn ehlo(addr: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let stream = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("nothing listens on {addr}: {e}"),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut reply = String::new();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap(); // greeting
    (&stream).write_all(b"EHLO probe.test\r\n").unwrap();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        reply.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] == b' ' {
            break;
        }
    }
    let _ = (&stream).write_all(b"QUIT\r\n");
    reply
}

#[test]
fn chunked_batches_through_postfix_arrive_whole() {
    if !can_run_postfix() {
        return;
    }
    let dir = temp_dir("postfix-relay");
    let messages = 120u64;
    let recipients = 2u64;
    let expected = messages * recipients;

    let saved = dir.join("saved");
    std::fs::create_dir_all(&saved).unwrap();
    let sink = Sink::start(
        "127.0.0.186:0",
        &[
            "--save",
            saved.to_str().unwrap(),
            "--expect-recipients",
            &expected.to_string(),
        ],
    );
    let postfix_port = free_port("127.0.0.1");
    let postfix = Postfix::start(&dir, "127.0.0.1", postfix_port, &sink.addr);
    let postfix_addr = format!("127.0.0.1:{postfix_port}");
    let offered = ehlo(&postfix_addr);
    assert!(
        offered.contains("CHUNKING") && offered.contains("PIPELINING"),
        "Postfix offers what the chunked path needs: {offered}"
    );

    // Few connections, so the messages queue up behind them and go out in batches.
    let config = format!(
        "hostname = \"pigeon.relay.test\"\nshards = 2\n\n[spool]\npath = \"{}\"\n\n\
         [log]\ndelivery = \"{}\"\n\n[[listener]]\naddress = \"127.0.0.187:2525\"\n\n\
         [domain.default]\nroute = [\"{postfix_addr}\"]\nmax_connections = 2\n",
        dir.join("spool").display(),
        dir.join("delivery.log").display(),
    );
    let _pigeon = Pigeon::serve(&dir, &config, "127.0.0.187:2525");

    let eml = dir.join("sample.eml");
    std::fs::write(&eml, sample()).unwrap();
    let sent = blast(&[
        "--target",
        "127.0.0.187:2525",
        "--sessions",
        "8",
        "--messages",
        &messages.to_string(),
        "--recipients",
        &recipients.to_string(),
        "--domains",
        "1",
        "--eml",
        eml.to_str().unwrap(),
    ]);
    assert_eq!(n(&sent["recipients_accepted"]), expected, "{sent}");

    let got = sink.finish();
    assert_eq!(n(&got["recipients"]), expected, "{got}");
    assert_eq!(n(&got["messages"]), messages, "one copy each: {got}");

    // Every saved message ends with the sample's body, byte for byte: the dot lines were
    // unstuffed for BDAT, and Postfix stuffed them again for DATA to the sink.
    let sample = sample();
    let body = &sample[sample.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    let files: Vec<_> = std::fs::read_dir(saved.join("new"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(files.len() as u64, messages);
    for file in files {
        assert!(file.ends_with(body), "{}", String::from_utf8_lossy(&file));
    }

    // Postfix logs each client's command counts when it disconnects: pigeon's connections
    // sent BDAT, never DATA. (postlogd writes the log a moment after the fact.)
    let counts = |key: &str| -> u64 {
        let log = std::fs::read_to_string(dir.join("maillog")).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("disconnect from"))
            .flat_map(|l| l.split_whitespace())
            .filter_map(|w| w.strip_prefix(key))
            .filter_map(|v| v.split('/').next()?.parse::<u64>().ok())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while counts("bdat=") < messages && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(dir.join("maillog")).unwrap_or_default();
    assert_eq!(counts("bdat="), messages, "{log}");
    assert_eq!(counts("data="), 0, "{log}");
    // `postfix stop` needs the config directory: stop before it is removed.
    drop(postfix);
    let _ = std::fs::remove_dir_all(&dir);
}
