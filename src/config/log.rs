//! `[log]`: where the delivery log is written.

use std::path::PathBuf;

use serde::Deserialize;

/// `[log]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// JSON lines, one per delivery event.
    pub delivery: PathBuf,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            delivery: PathBuf::from("./pigeon-delivery.log"),
        }
    }
}
