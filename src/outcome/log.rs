//! The delivery log: one JSON line per event (received, delivered, deferred, bounced,
//! expired), appended with `O_APPEND` so every shard can write its own lines whole.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::spool::record::MessageId;

/// The delivery log file.
#[derive(Debug)]
pub struct DeliveryLog {
    file: Option<File>,
}

/// One event for the log.
#[derive(Debug, Default)]
pub struct LogEvent<'a> {
    /// `received`, `delivered`, `deferred`, `bounced` or `expired`.
    pub event: &'a str,
    /// The message.
    pub id: Option<MessageId>,
    /// The envelope sender (empty for `<>`).
    pub sender: &'a str,
    /// The recipient, for per-recipient events.
    pub recipient: Option<&'a str>,
    /// Recipients, for `received`.
    pub recipients: Option<usize>,
    /// Size of the content in octets.
    pub size: Option<u64>,
    /// The client (for `received`) or the receiving host (for delivery events).
    pub host: Option<&'a str>,
    /// The SMTP reply or the error that decided the outcome.
    pub reply: Option<&'a str>,
    /// Attempts made so far.
    pub attempts: Option<u32>,
    /// Time since the message was received.
    pub delay: Option<Duration>,
    /// When the next attempt is due (for `deferred`), microseconds since the epoch.
    pub next_attempt_micros: Option<u64>,
    /// DKIM signatures added at reception (`d=… s=… a=…; …`).
    pub dkim: Option<&'a str>,
    /// The TLS version of the delivery connection (`TLSv1.3`, `TLSv1.2`); absent when
    /// it was plain text or there was none.
    pub tls: Option<&'a str>,
    /// The SMTP AUTH user who sent the message (for `received`).
    pub auth: Option<&'a str>,
}

impl DeliveryLog {
    /// Opens (creating) the log for appending.
    pub fn open(path: &Path) -> std::io::Result<DeliveryLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(DeliveryLog { file: Some(file) })
    }

    /// A log that writes nothing (for tools and tests that do not want one).
    pub fn disabled() -> DeliveryLog {
        DeliveryLog { file: None }
    }

    /// Appends one event as one line.
    pub fn write(&self, e: &LogEvent<'_>) {
        let Some(mut file) = self.file.as_ref() else {
            return;
        };
        let mut m = Map::new();
        m.insert(
            "ts".into(),
            json!(humantime::format_rfc3339_micros(SystemTime::now()).to_string()),
        );
        m.insert("event".into(), json!(e.event));
        if let Some(id) = e.id {
            m.insert("id".into(), json!(id.to_string()));
        }
        m.insert("sender".into(), json!(e.sender));
        let optional: [(&str, Option<Value>); 11] = [
            ("recipient", e.recipient.map(|v| json!(v))),
            ("recipients", e.recipients.map(|v| json!(v))),
            ("size", e.size.map(|v| json!(v))),
            ("host", e.host.map(|v| json!(v))),
            ("reply", e.reply.map(|v| json!(v))),
            ("dkim", e.dkim.map(|v| json!(v))),
            ("tls", e.tls.map(|v| json!(v))),
            ("auth", e.auth.map(|v| json!(v))),
            ("attempts", e.attempts.map(|v| json!(v))),
            ("delay_ms", e.delay.map(|d| json!(d.as_millis() as u64))),
            (
                "next_attempt",
                e.next_attempt_micros.map(|t| {
                    let at = UNIX_EPOCH + Duration::from_micros(t);
                    json!(humantime::format_rfc3339_seconds(at).to_string())
                }),
            ),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                m.insert(k.into(), v);
            }
        }
        let mut line = Value::Object(m).to_string().into_bytes();
        line.push(b'\n');
        // One write per line: with O_APPEND, lines from different shards never interleave.
        if let Err(err) = file.write_all(&line) {
            tracing::warn!(error = %err, "cannot write the delivery log");
        }
    }
}
