//! Harness for the end-to-end tests: the real `pigeon-load` binary on 127.0.0.x addresses.
//! Every wait is bounded: sinks run with `--max-seconds`, blasts with `--max-seconds`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_pigeon-load")
}

/// A running `pigeon-load sink`.
pub struct Sink {
    child: Child,
    /// The first address it listens on, port resolved.
    pub addr: String,
    /// Every address it listens on.
    pub addrs: Vec<String>,
}

impl Sink {
    /// Starts a sink on `listen` (comma-separated, port 0 allowed) with two shards and a
    /// 25 s cap, plus `extra` options; returns once it listens.
    pub fn start(listen: &str, extra: &[&str]) -> Sink {
        let mut child = Command::new(bin())
            .args([
                "sink",
                "--listen",
                listen,
                "--shards",
                "2",
                "--max-seconds",
                "25",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sink");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addrs: Vec<String> = loop {
            let line = lines.next().expect("sink exited before listening").unwrap();
            if let Some(list) = line.strip_prefix("pigeon-load sink: listening on ") {
                break list.split(',').map(str::to_owned).collect();
            }
        };
        // Keep draining stderr so the sink never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Sink {
            child,
            addr: addrs[0].clone(),
            addrs,
        }
    }

    /// Waits for the sink to exit on its own (expected recipients or time cap) and returns
    /// its JSON report.
    pub fn finish(self) -> Value {
        let out = self.child.wait_with_output().expect("wait for sink");
        assert!(out.status.success(), "sink failed: {:?}", out.status);
        serde_json::from_slice(&out.stdout).expect("sink JSON")
    }

    /// Stops the sink with SIGTERM and returns its JSON report.
    pub fn stop(self) -> Value {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        self.finish()
    }
}

/// Runs `pigeon-load blast` with `args` (plus a 25 s cap) and returns its JSON report.
pub fn blast(args: &[&str]) -> Value {
    let out = Command::new(bin())
        .arg("blast")
        .args(args)
        .args(["--max-seconds", "25"])
        .stderr(Stdio::inherit())
        .output()
        .expect("run blast");
    assert!(out.status.success(), "blast failed: {:?}", out.status);
    serde_json::from_slice(&out.stdout).expect("blast JSON")
}

/// A JSON count, 0 when absent.
pub fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// A fresh empty directory under the system's temporary directory.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pigeon-load-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A free TCP port on `ip`, for foreign servers that cannot report the one they bound.
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `pigeon` binary, next to this test's executable: `cargo test --workspace` builds it.
pub fn pigeon_binary() -> PathBuf {
    // target/debug/deps/<test>-… → target/debug/pigeon
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("pigeon");
    assert!(
        bin.exists(),
        "{} missing: run `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// A running pigeon, stopped with SIGTERM when dropped (and with SIGKILL if it has not
/// exited 30 s later, so that a hung pigeon fails its test instead of hanging the run).
pub struct Pigeon(pub Child);

impl Pigeon {
    /// Writes `config` to `dir/pigeon.toml`, runs `pigeon serve` on it (stderr to
    /// `dir/pigeon.stderr`) and returns once `listen` accepts connections (at most 20 s).
    pub fn serve(dir: &std::path::Path, config: &str, listen: &str) -> Pigeon {
        std::fs::write(dir.join("pigeon.toml"), config).unwrap();
        let stderr = std::fs::File::create(dir.join("pigeon.stderr")).unwrap();
        let pigeon = Pigeon(
            Command::new(pigeon_binary())
                .arg("serve")
                .arg("--config")
                .arg(dir.join("pigeon.toml"))
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("start pigeon"),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(listen).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "pigeon did not listen on {listen}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        pigeon
    }

    /// SIGTERM, then waits up to `limit` for the exit; `None` (after SIGKILL) if pigeon did
    /// not exit in time.
    pub fn stop_within(&mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = self.0.kill();
                let _ = self.0.wait();
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Pigeon {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        let stopped = self.stop_within(std::time::Duration::from_secs(30));
        if stopped.is_none() && !std::thread::panicking() {
            panic!("pigeon did not exit within 30 s of SIGTERM");
        }
    }
}
