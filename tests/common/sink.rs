//! Real SMTP sinks for delivery tests: `tests/support/sink.py` on aiosmtpd, listening on
//! 127.0.0.x addresses, recording every transaction and connection as JSON lines.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One transaction the sink accepted.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// The listener that took it (`ip:port`).
    pub addr: String,
    /// The client's port: one per connection.
    pub peer_port: u64,
    /// MAIL FROM.
    pub mail_from: String,
    /// Accepted recipients.
    pub rcpt_tos: Vec<String>,
    /// The content as received.
    pub data: Vec<u8>,
    /// The TLS version the transaction came over (`TLSv1.3`), none in plain text.
    pub tls: Option<String>,
}

/// A running sink process.
pub struct Sink {
    child: Child,
    /// Where it writes.
    pub dir: tempfile::TempDir,
}

impl Sink {
    /// Starts sinks on `listeners`: (address, behaviour: accept | tempfail-once | reject,
    /// with options such as `,cert=PEM,key=PEM` for STARTTLS; see `sink.py`).
    pub fn start(listeners: &[(SocketAddr, &str)]) -> Sink {
        let dir = tempfile::tempdir().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/sink.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(dir.path())
            .args(listeners.iter().map(|(a, b)| format!("{a}={b}")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .expect("python3 with aiosmtpd (pip install aiosmtpd)");
        let deadline = Instant::now() + Duration::from_secs(20);
        let sink = Sink { child, dir };
        while !sink.dir.path().join("ready").exists() {
            assert!(
                Instant::now() < deadline,
                "sink did not start: {}",
                std::fs::read_to_string(sink.dir.path().join("stderr")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sink
    }

    fn lines(&self, file: &str) -> Vec<Value> {
        let path: PathBuf = self.dir.path().join(file);
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("sink JSON"))
            .collect()
    }

    /// Every transaction so far.
    pub fn transactions(&self) -> Vec<Transaction> {
        self.lines("transactions.jsonl")
            .into_iter()
            .map(|v| Transaction {
                addr: v["addr"].as_str().unwrap().to_owned(),
                peer_port: v["peer"][1].as_u64().unwrap(),
                mail_from: v["mail_from"].as_str().unwrap().to_owned(),
                rcpt_tos: v["rcpt_tos"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_owned())
                    .collect(),
                data: std::fs::read(self.dir.path().join(v["data_file"].as_str().unwrap()))
                    .unwrap(),
                tls: v["tls"].as_str().map(str::to_owned),
            })
            .collect()
    }

    /// STARTTLS commands received so far.
    pub fn starttls_count(&self) -> usize {
        self.lines("starttls.jsonl").len()
    }

    /// Connections so far (one EHLO or HELO each).
    pub fn connections(&self) -> usize {
        self.lines("connections.jsonl").len()
    }

    /// Recipients accepted so far, over all transactions.
    pub fn recipients(&self) -> usize {
        self.transactions().iter().map(|t| t.rcpt_tos.len()).sum()
    }

    /// Waits until `done` holds for the transactions, at most `limit`.
    pub fn wait_for(
        &self,
        limit: Duration,
        done: impl Fn(&[Transaction]) -> bool,
    ) -> Vec<Transaction> {
        let deadline = Instant::now() + limit;
        loop {
            let t = self.transactions();
            if done(&t) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "sink never saw what was expected: {t:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
