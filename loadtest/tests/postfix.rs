//! Postfix's own load tools against ours: `blast` → `smtp-sink`, and `smtp-source` →
//! `pigeon-load sink`; the counts agree at both ends. Needs Debian's `postfix` package
//! (`/usr/sbin/smtp-sink`, `/usr/sbin/smtp-source`). Without it they say so and pass on a
//! developer's machine, but fail under CI (`CI` set), where `.ci/run` installs the package.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{blast, free_port, n, temp_dir, Sink};

fn have_postfix_tools() -> bool {
    let ok =
        Path::new("/usr/sbin/smtp-sink").exists() && Path::new("/usr/sbin/smtp-source").exists();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install postfix for smtp-sink/smtp-source"
        );
        eprintln!("skipped: smtp-sink/smtp-source missing (apt-get install postfix)");
    }
    ok
}

#[test]
fn blast_into_postfix_smtp_sink() {
    if !have_postfix_tools() {
        return;
    }
    let ip = "127.0.0.91";
    let port = free_port(ip);
    let dir = temp_dir("smtp-sink");
    // The dump directory is written by the user smtp-sink switches to.
    let _ = Command::new("chmod")
        .args(["777", dir.to_str().unwrap()])
        .status();
    let addr = format!("{ip}:{port}");
    let mut cmd = Command::new("/usr/sbin/smtp-sink");
    // smtp-sink refuses to run as root without -u.
    if std::env::var("USER").as_deref() == Ok("root") || is_root() {
        cmd.args(["-u", "nobody"]);
    }
    let mut sink = cmd
        .args(["-d", &format!("{}/", dir.display()), &addr, "100"])
        .stdout(Stdio::null())
        .spawn()
        .expect("smtp-sink");
    // Wait (bounded) until it listens.
    let mut up = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(up, "smtp-sink did not start");
    let b = blast(&[
        "--target",
        &addr,
        "--sessions",
        "5",
        "--messages",
        "100",
        "--recipients",
        "3",
        "--domains",
        "5",
        "--size",
        "2000",
    ]);
    let _ = sink.kill();
    let _ = sink.wait();
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let rcpts: usize = files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .matches("X-Rcpt-Args: ")
                .count()
        })
        .sum();
    assert_eq!(n(&b["messages_accepted"]), 100, "{b}");
    assert_eq!(files.len() as u64, n(&b["messages_accepted"]));
    assert_eq!(rcpts as u64, n(&b["recipients_accepted"]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn postfix_smtp_source_into_sink() {
    if !have_postfix_tools() {
        return;
    }
    let sink = Sink::start("127.0.0.92:0", &["--expect-recipients", "300"]);
    let out = Command::new("/usr/sbin/smtp-source")
        .args([
            "-s",
            "5",
            "-m",
            "100",
            "-r",
            "3",
            "-N",
            "-l",
            "2000",
            "-f",
            "src@source.test",
            "-t",
            "rcpt@dest.test",
            &sink.addr,
        ])
        .output()
        .expect("smtp-source");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = sink.finish();
    assert_eq!(s["reached_expected"], true, "{s}");
    assert_eq!(n(&s["messages"]), 100, "{s}");
    assert_eq!(n(&s["recipients"]), 300);
    assert_eq!(n(&s["domains"]["dest.test"]), 300);
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}
