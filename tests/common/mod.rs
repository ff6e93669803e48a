//! Test harness: the real `pigeon` binary on a 127.0.0.x address with a temporary spool,
//! and a small raw SMTP client for dialogues where the exact bytes matter.

#![allow(dead_code)]

pub mod dkimpy;
pub mod dns;
pub mod sink;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The pigeon binary under test.
pub const PIGEON: &str = env!("CARGO_BIN_EXE_pigeon");

/// A running (or stopped) pigeon with its own spool directory.
pub struct Pigeon {
    child: Option<Child>,
    /// Holds the spool, config and log.
    pub dir: tempfile::TempDir,
    /// The SMTP listener.
    pub addr: SocketAddr,
    starts: usize,
    env: Vec<(String, String)>,
}

impl Pigeon {
    /// Starts pigeon listening on `ip:2525`. `spool_extra` goes under `[spool]`; `extra` is
    /// appended at the end (whole tables).
    pub fn start(ip: &str, spool_extra: &str, extra: &str) -> Pigeon {
        Pigeon::start_with_shards(ip, 2, spool_extra, extra)
    }

    /// Like [`Pigeon::start`] with a chosen shard count.
    pub fn start_with_shards(ip: &str, shards: usize, spool_extra: &str, extra: &str) -> Pigeon {
        Pigeon::start_with_env(ip, shards, spool_extra, extra, &[])
    }

    /// Like [`Pigeon::start_with_shards`], with extra environment variables for the server.
    pub fn start_with_env(
        ip: &str,
        shards: usize,
        spool_extra: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Pigeon {
        // Unless a test routes mail itself, delivery goes to a closed port on loopback: every
        // attempt is deferred and the mail stays queued for the test to look at.
        let hold = if extra.contains("[domain.default]") {
            ""
        } else {
            "[domain.default]\nroute = [\"127.0.0.1:9\"]\n"
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let addr: SocketAddr = format!("{ip}:2525").parse().expect("address");
        let config = format!(
            "hostname = \"mx.test\"\nshards = {shards}\n\n[spool]\npath = \"{}\"\n{spool_extra}\n\n\
             [log]\ndelivery = \"{}\"\n\n[[listener]]\naddress = \"{addr}\"\n\n{hold}\n{extra}\n",
            dir.path().join("spool").display(),
            dir.path().join("delivery.log").display()
        );
        std::fs::write(dir.path().join("pigeon.toml"), config).expect("write config");
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut p = Pigeon {
            child: None,
            dir,
            addr,
            starts: 0,
            env,
        };
        p.restart();
        p
    }

    /// The spool directory.
    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// The delivery log (JSON lines).
    pub fn delivery_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("delivery.log")).unwrap_or_default()
    }

    /// The delivery log's events, one JSON value per line.
    pub fn delivery_events(&self) -> Vec<serde_json::Value> {
        self.delivery_log()
            .lines()
            .map(|l| serde_json::from_str(l).expect("delivery log line is JSON"))
            .collect()
    }

    /// The log of the most recent start.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path(self.starts)).unwrap_or_default()
    }

    fn log_path(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("pigeon-{n}.log"))
    }

    /// Starts the server again on the same spool and waits until it is ready.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.starts += 1;
        let log = std::fs::File::create(self.log_path(self.starts)).expect("log file");
        let child = Command::new(PIGEON)
            .arg("serve")
            .arg("--config")
            .arg(self.dir.path().join("pigeon.toml"))
            .env("PIGEON_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn pigeon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.log().contains(" ready ") {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("pigeon exited at start ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "pigeon not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let rc = unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill -TERM");
    }

    /// Waits for the process to exit (at most 40 s) and returns its status.
    pub fn wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("pigeon did not exit:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait: the graceful stop.
    pub fn stop(&mut self) -> ExitStatus {
        self.sigterm();
        self.wait()
    }

    /// `kill -9`: the crash.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        child.wait().expect("reap");
    }

    /// `pigeon queue list` output.
    pub fn queue_list(&self) -> String {
        run_ok(&["queue", "list", "--spool", self.spool().to_str().unwrap()])
    }

    /// The ids `pigeon queue list` shows.
    pub fn queued_ids(&self) -> Vec<String> {
        queued_ids(&self.queue_list())
    }

    /// `pigeon queue show ID --body`.
    pub fn queued_body(&self, id: &str) -> Vec<u8> {
        let out = Command::new(PIGEON)
            .args([
                "queue",
                "show",
                id,
                "--body",
                "--spool",
                self.spool().to_str().unwrap(),
            ])
            .output()
            .expect("run pigeon queue show");
        assert!(
            out.status.success(),
            "queue show {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for Pigeon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs pigeon with `args`, asserts success, returns stdout.
pub fn run_ok(args: &[&str]) -> String {
    let out = Command::new(PIGEON)
        .args(args)
        .output()
        .expect("run pigeon");
    assert!(
        out.status.success(),
        "pigeon {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The ids in `pigeon queue list` output (first column of message lines).
pub fn queued_ids(list: &str) -> Vec<String> {
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.len() == 20 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
        .collect()
}

/// Strips the first header field (pigeon's `Received:`, with its folded lines).
pub fn without_received(content: &[u8]) -> &[u8] {
    assert!(
        content.starts_with(b"Received: "),
        "no Received header first"
    );
    let mut pos = 0;
    loop {
        let eol = pos
            + content[pos..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("CRLF")
            + 2;
        pos = eol;
        if !matches!(content.get(pos), Some(b' ') | Some(b'\t')) {
            return &content[pos..];
        }
    }
}

/// Runs a Python 3 script with arguments; asserts it succeeds; returns stdout.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// One SMTP reply: its code and its lines' text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

/// A raw SMTP client: exact bytes out, replies parsed.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects and returns the client without reading the greeting.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let writer = stream.try_clone().unwrap();
        Client {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// Connects and checks the 220 greeting.
    pub fn greeted(addr: SocketAddr) -> Client {
        let mut c = Client::connect(addr);
        assert_eq!(c.reply().code, 220);
        c
    }

    /// Sets how long [`Client::reply`] waits.
    pub fn set_timeout(&self, t: Duration) {
        self.writer.set_read_timeout(Some(t)).unwrap();
    }

    /// Sends bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    /// Sends bytes; false if the connection is gone.
    pub fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.writer.write_all(bytes).is_ok()
    }

    /// Reads one (possibly multi-line) reply; panics on timeout or close.
    pub fn reply(&mut self) -> Reply {
        self.try_reply().expect("connection closed before a reply")
    }

    /// Reads one reply, or `None` if the connection closed first.
    pub fn try_reply(&mut self) -> Option<Reply> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    ) =>
                {
                    return None
                }
                Err(e) => panic!("reading reply: {e} (so far: {text:?})"),
            }
            assert!(
                line.len() >= 4 && line.ends_with("\r\n"),
                "malformed reply line {line:?}"
            );
            text.push_str(&line[4..line.len() - 2]);
            if line.as_bytes()[3] == b' ' {
                return Some(Reply {
                    code: line[..3].parse().expect("reply code"),
                    text,
                });
            }
            text.push('\n');
        }
    }

    /// Sends a command line and reads its reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Everything the server sends until it closes or the read timeout passes.
    pub fn read_rest(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = self.reader.read_to_end(&mut out);
        out
    }

    /// True once the server has closed the connection (reads EOF).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0) | Err(_))
    }

    /// Sends one message with DATA; returns the final reply.
    pub fn send_message(&mut self, from: &str, to: &[&str], content: &[u8]) -> Reply {
        let mut batch = format!("MAIL FROM:<{from}>\r\n");
        for r in to {
            batch.push_str(&format!("RCPT TO:<{r}>\r\n"));
        }
        batch.push_str("DATA\r\n");
        self.send(batch.as_bytes());
        let mail = self.reply();
        assert_eq!(mail.code, 250, "MAIL: {mail:?}");
        for _ in to {
            let rcpt = self.reply();
            assert_eq!(rcpt.code, 250, "RCPT: {rcpt:?}");
        }
        assert_eq!(self.reply().code, 354);
        let mut data = content.to_vec();
        data.extend_from_slice(b".\r\n");
        self.send(&data);
        self.reply()
    }
}

/// The queue id at the end of a `250 2.0.0 Ok: queued as ID` reply.
pub fn queued_id(reply: &Reply) -> String {
    assert_eq!(reply.code, 250, "not accepted: {reply:?}");
    reply.text.rsplit(' ').next().expect("id").to_owned()
}

/// Size of a file.
pub fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).expect("stat").len()
}

/// Every segment file under `spool` with its size, sorted by path.
pub fn segment_files(spool: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(spool).into_iter().flatten() {
        for seg in std::fs::read_dir(shard.expect("spool entry").path())
            .into_iter()
            .flatten()
        {
            let seg = seg.expect("shard entry").path();
            if seg.extension().is_some_and(|e| e == "seg") {
                let len = file_len(&seg);
                out.push((seg, len));
            }
        }
    }
    out.sort();
    out
}

impl Client {
    /// Connects from the local address `source` (one of the test's 127.0.0.x), without
    /// reading the greeting: per-client limits see that address.
    pub fn connect_from(addr: SocketAddr, source: &str) -> Client {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        let source: SocketAddr = format!("{source}:0").parse().expect("source address");
        socket.bind(&source.into()).expect("bind source address");
        socket
            .connect_timeout(&addr.into(), Duration::from_secs(5))
            .expect("connect");
        let stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let writer = stream.try_clone().unwrap();
        Client {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// Drops the connection with a TCP reset, as a client that vanishes does.
    pub fn abort(self) {
        let _ = socket2::SockRef::from(&self.writer).set_linger(Some(Duration::ZERO));
    }
}

// SMTP AUTH helpers (tests/auth.rs, tests/relay.rs).

/// A self-signed certificate for mx.test and `ip` (the test's own CA), as `dir/cert.pem`
/// and `dir/key.pem`.
pub fn certificate(dir: &Path, ip: &str) -> (PathBuf, PathBuf) {
    let san = format!("DNS:mx.test,IP:{ip}");
    self_signed(dir, "", "mx.test", Some(&san))
}

/// A self-signed EC certificate for `cn` (and `san`, e.g. `DNS:a.test,IP:127.0.0.1`), made
/// by openssl as `dir/{prefix}cert.pem` and `dir/{prefix}key.pem`.
pub fn self_signed(dir: &Path, prefix: &str, cn: &str, san: Option<&str>) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{prefix}cert.pem")),
        dir.join(format!("{prefix}key.pem")),
    );
    let mut openssl = std::process::Command::new("openssl");
    openssl
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/CN={cn}")]);
    if let Some(san) = san {
        openssl.arg("-addext").arg(format!("subjectAltName={san}"));
    }
    let out = openssl
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// Polls `done` every 50 ms until it holds; fails the test after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `pigeon passwd USER --file FILE` with `stdin`; returns (success, stderr).
pub fn passwd(user: &str, file: &Path, stdin: &str) -> (bool, String) {
    let mut child = Command::new(PIGEON)
        .args(["passwd", user, "--file"])
        .arg(file)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pigeon passwd");
    // pigeon may refuse the user name and exit before it reads the password: a broken pipe
    // here is its answer, not the test's failure.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
