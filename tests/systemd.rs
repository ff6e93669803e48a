//! The systemd unit, sysusers and tmpfiles snippets pass systemd's own checks.

#[test]
fn unit_files_verify() {
    let out = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/check.sh"))
        .arg(env!("CARGO_BIN_EXE_pigeon"))
        .output()
        .expect("run systemd/check.sh");
    assert!(
        out.status.success(),
        "systemd/check.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
