//! `pigeon check-config`, run as the real binary: the shipped example passes as is, and a
//! bad file fails with a non-zero status and an error that names the offending key.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

const PIGEON: &str = env!("CARGO_BIN_EXE_pigeon");

fn check_config(path: &Path) -> Output {
    Command::new(PIGEON)
        .arg("check-config")
        .arg(path)
        .env("NO_COLOR", "1")
        .output()
        .expect("run pigeon check-config")
}

/// Writes `text` to a temporary file, runs check-config on it, and returns its stderr after
/// asserting that it failed.
fn refused(text: &str) -> String {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    file.write_all(text.as_bytes()).expect("write config");
    let out = check_config(file.path());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{text:?} was accepted; stderr: {stderr}"
    );
    stderr
}

#[test]
fn example_config_passes() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/pigeon.example.toml");
    let out = check_config(&example);
    assert!(
        out.status.success(),
        "{} refused: {}",
        example.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn unknown_key_is_named() {
    let stderr = refused("[limits]\nmax_recipents = 10\n");
    assert!(stderr.contains("max_recipents"), "{stderr}");
}

#[test]
fn bad_fsync_value_is_named() {
    let stderr = refused("[spool]\nfsync = \"sometimes\"\n");
    assert!(stderr.contains("fsync"), "{stderr}");
    assert!(stderr.contains("sometimes"), "{stderr}");
}

#[test]
fn zero_recipients_is_refused() {
    let stderr = refused("[limits]\nmax_recipients = 0\n");
    assert!(stderr.contains("limits.max_recipients"), "{stderr}");
}

#[test]
fn tls_listener_without_a_certificate_is_refused() {
    let stderr = refused("[[listener]]\naddress = \"127.0.0.1:2525\"\ntls = \"starttls\"\n");
    assert!(stderr.contains("listener[0].tls"), "{stderr}");
}

#[test]
fn bad_dkim_key_files_are_named() {
    let stderr = refused(
        "[[dkim]]\ndomain = \"example.com\"\nselector = \"s1\"\nkey = \"/nonexistent/s1.pem\"\n",
    );
    assert!(
        stderr.contains("dkim[0].key") && stderr.contains("/nonexistent/s1.pem"),
        "{stderr}"
    );
    let mut junk = tempfile::NamedTempFile::new().unwrap();
    junk.write_all(b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
        .unwrap();
    let path = junk.path().display().to_string();
    let stderr = refused(&format!(
        "[[dkim]]\ndomain = \"example.com\"\nselector = \"s1\"\nkey = \"{path}\"\n"
    ));
    assert!(
        stderr.contains("dkim[0].key") && stderr.contains(&path),
        "{stderr}"
    );
}

#[test]
fn dkim_header_names_and_ascii_domains_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let out = Command::new(PIGEON)
        .args([
            "dkim",
            "keygen",
            "--domain",
            "example.com",
            "--selector",
            "s1",
            "--algo",
            "ed25519",
            "--out",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = key.display();
    let stderr = refused(&format!(
        "[[dkim]]\ndomain = \"example.com\"\nselector = \"s1\"\nkey = \"{key}\"\nheaders = [\"From:\"]\n"
    ));
    assert!(stderr.contains("dkim[0].headers"), "{stderr}");
    let stderr = refused(&format!(
        "[[dkim]]\ndomain = \"exämple.com\"\nselector = \"s1\"\nkey = \"{key}\"\n"
    ));
    assert!(stderr.contains("dkim[0].domain"), "{stderr}");
}
