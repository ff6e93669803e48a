//! The wall clock, in the one unit every time the queue and the spool keep: microseconds
//! since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the epoch, now.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}
