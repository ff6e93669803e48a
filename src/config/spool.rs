//! `[spool]`: where accepted mail is kept, how it is synced, and when old segments are
//! compacted.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::units::{duration, ByteSize};
use super::{invalid, ConfigError};

/// `[spool]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Directory of the spool; one `shard-NNN` folder per shard inside.
    pub path: PathBuf,
    /// `always`: group commit before every 250. `never`: no sync (benchmarks only).
    pub fsync: FsyncPolicy,
    /// Below this much free disk, MAIL gets 452 4.3.1.
    pub min_free_space: ByteSize,
    /// A new segment file is started once the active one reaches this size.
    pub segment_size: ByteSize,
    /// A deferred message whose record is older than this, in a segment no longer
    /// written, is copied forward so that its old segment can be deleted.
    #[serde(deserialize_with = "duration")]
    pub compact_after: Duration,
}

impl Default for SpoolConfig {
    fn default() -> SpoolConfig {
        SpoolConfig {
            path: PathBuf::from("./pigeon-spool"),
            fsync: FsyncPolicy::Always,
            min_free_space: ByteSize(100 << 20),
            segment_size: ByteSize(64 << 20),
            compact_after: Duration::from_secs(30 * 60),
        }
    }
}

impl SpoolConfig {
    /// Refuses values the spool cannot work with.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.path.as_os_str().is_empty() {
            return Err(invalid("spool.path", "must not be empty"));
        }
        if self.segment_size.0 < 1 << 20 {
            return Err(invalid("spool.segment_size", "at least 1MiB"));
        }
        if self.compact_after < Duration::from_secs(1) {
            return Err(invalid("spool.compact_after", "at least 1s"));
        }
        Ok(())
    }
}

/// When the spool syncs.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// `fdatasync` before acknowledging (group commit). The default.
    Always,
    /// Never sync: a crash or power cut can lose acknowledged mail. For benchmarks.
    Never,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::check as parse;

    #[test]
    fn compact_after_is_a_duration_of_at_least_a_second() {
        assert_eq!(
            parse("").unwrap().spool.compact_after,
            Duration::from_secs(1800)
        );
        let c = parse("[spool]\ncompact_after = \"2h\"\n").unwrap();
        assert_eq!(c.spool.compact_after, Duration::from_secs(7200));
        let e = parse("[spool]\ncompact_after = \"500ms\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("spool.compact_after:"), "{e}");
        let e = parse("[spool]\ncompact_after = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("compact_after") && e.contains("soon"), "{e}");
    }
}
