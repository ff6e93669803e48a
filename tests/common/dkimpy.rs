//! dkimpy (PyPI `dkimpy[ed25519]`), the independent DKIM verifier, run offline through
//! `tests/support/dkim_verify.py`: public keys come from the test, never from DNS.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// One dkimpy verdict.
#[derive(Debug)]
pub struct Verdict {
    pub ok: bool,
    pub d: String,
    pub s: String,
    pub error: String,
}

/// Runs dkimpy over `messages` with `records`; one list of verdicts (top signature first)
/// per message.
pub fn dkimpy(records: &[(String, String)], messages: &[Vec<u8>]) -> Vec<Vec<Verdict>> {
    let request = serde_json::json!({
        "records": records.iter().cloned().collect::<std::collections::HashMap<_, _>>(),
        "messages": messages.iter().map(|m| data_encoding::BASE64.encode(m)).collect::<Vec<_>>(),
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/dkim_verify.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin was piped")
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dkim_verify.py failed (is dkimpy installed? python3 -m pip install 'dkimpy[ed25519]==1.1.8'):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    reply["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|per| {
            per.as_array()
                .unwrap()
                .iter()
                .map(|v| Verdict {
                    ok: v["ok"].as_bool().unwrap(),
                    d: v["d"].as_str().unwrap().to_string(),
                    s: v["s"].as_str().unwrap().to_string(),
                    error: v["error"].as_str().unwrap().to_string(),
                })
                .collect()
        })
        .collect()
}
