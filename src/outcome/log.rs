//! The delivery log: one JSON line per event (received, delivered, deferred, bounced,
//! expired), appended with `O_APPEND` so every shard can write its own lines whole.
//!
//! Each shard gathers its lines in a [`LogBuffer`] and appends them in one write every
//! [`FLUSH_INTERVAL`] (or sooner when [`FLUSH_AT`] octets wait): a write per line was two
//! system calls per message, a tenth of what a small message costs. The log is a record for
//! operators, not the durable state (that is the spool), so a crash may lose its last lines.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

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
    /// How long the attempt took for this recipient's job, from the agent's report.
    pub attempt: Option<Duration>,
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

/// How often a shard appends the lines it gathered.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// A shard appends at once when this many octets wait.
pub const FLUSH_AT: usize = 64 * 1024;

/// The line as written: absent fields are left out.
#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    sender: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    recipient: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recipients: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dkim: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt: Option<String>,
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

    /// Appends whole lines in one write: with `O_APPEND`, lines from different shards
    /// never interleave.
    fn append(&self, lines: &[u8]) {
        let Some(mut file) = self.file.as_ref() else {
            return;
        };
        if let Err(err) = file.write_all(lines) {
            tracing::warn!(error = %err, "cannot write the delivery log");
        }
    }
}

/// A due time (microseconds since the epoch) as the `next_attempt` field writes it:
/// RFC 3339 in UTC, to the second.
pub fn next_attempt(micros: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_micros(micros);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Formats `e` as one JSON line at the end of `out`.
fn format_line(e: &LogEvent<'_>, out: &mut Vec<u8>) {
    let line = Line {
        ts: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
        event: e.event,
        id: e.id.map(|id| id.to_string()),
        sender: e.sender,
        recipient: e.recipient,
        recipients: e.recipients,
        size: e.size,
        host: e.host,
        reply: e.reply,
        dkim: e.dkim,
        tls: e.tls,
        auth: e.auth,
        attempts: e.attempts,
        delay_ms: e.delay.map(|d| d.as_millis() as u64),
        attempt_ms: e.attempt.map(|d| d.as_millis() as u64),
        next_attempt: e.next_attempt_micros.map(next_attempt),
    };
    // Serializing borrowed strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &line);
    out.push(b'\n');
}

/// One shard's lines waiting to be appended to the [`DeliveryLog`].
#[derive(Debug, Default)]
pub struct LogBuffer {
    lines: RefCell<Vec<u8>>,
}

impl LogBuffer {
    /// Adds one event; appends everything gathered once [`FLUSH_AT`] octets wait.
    pub fn push(&self, log: &DeliveryLog, e: &LogEvent<'_>) {
        if log.file.is_none() {
            return;
        }
        let full = {
            let mut lines = self.lines.borrow_mut();
            format_line(e, &mut lines);
            lines.len() >= FLUSH_AT
        };
        if full {
            self.flush(log);
        }
    }

    /// Appends everything gathered (the shard's timer, and its stop, call this).
    pub fn flush(&self, log: &DeliveryLog) {
        let lines = std::mem::take(&mut *self.lines.borrow_mut());
        if !lines.is_empty() {
            log.append(&lines);
        }
    }
}

/// One shard's handle on the delivery log: its lines gather in a [`LogBuffer`] and go out
/// in one append every [`FLUSH_INTERVAL`] ([`ShardLog::flush_every`]), when
/// [`FLUSH_AT`] octets wait, and when the last handle is dropped.
#[derive(Debug)]
pub struct ShardLog {
    log: std::sync::Arc<DeliveryLog>,
    lines: LogBuffer,
}

impl ShardLog {
    /// A shard's buffer in front of `log`.
    pub fn new(log: std::sync::Arc<DeliveryLog>) -> std::rc::Rc<ShardLog> {
        std::rc::Rc::new(ShardLog {
            log,
            lines: LogBuffer::default(),
        })
    }

    /// Writes one event (within [`FLUSH_INTERVAL`]).
    pub fn write(&self, event: &LogEvent<'_>) {
        self.lines.push(&self.log, event);
    }

    /// Appends every line gathered.
    pub fn flush(&self) {
        self.lines.flush(&self.log);
    }

    /// Appends the gathered lines every [`FLUSH_INTERVAL`] for as long as a handle lives.
    pub async fn flush_every(log: std::rc::Weak<ShardLog>) {
        loop {
            glommio::timer::sleep(FLUSH_INTERVAL).await;
            let Some(log) = log.upgrade() else { return };
            log.flush();
        }
    }
}

impl Drop for ShardLog {
    /// The last lines: whatever outlived the stop's wait still logs.
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_attempt_is_rfc_3339_utc_to_the_second() {
        assert_eq!(next_attempt(1_795_899_865_400_000), "2026-11-28T21:04:25Z");
    }
}
