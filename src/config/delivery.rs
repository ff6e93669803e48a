//! `[delivery]`: how pigeon delivers: the port it connects to, when it retries, when it
//! gives up, and which CA certificates `tls = "verify"` trusts (the file itself is read by
//! `runtime::files::Loaded::load`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::units::{duration, durations};
use super::{invalid, ConfigError};

/// `[delivery]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// TCP port of receiving servers.
    pub port: u16,
    /// Delays between attempts; the last repeats.
    #[serde(deserialize_with = "durations")]
    pub retry: Vec<Duration>,
    /// Undelivered this long after arrival: bounce.
    #[serde(deserialize_with = "duration")]
    pub max_age: Duration,
    /// Still undelivered this long after arrival: recipients that asked for it
    /// (NOTIFY=DELAY, RFC 3461) get a delay notice.
    #[serde(deserialize_with = "duration")]
    pub delay_warning: Duration,
    /// PEM file of CA certificates trusted under `tls = "verify"`, instead of the system's
    /// roots.
    pub ca_file: Option<PathBuf>,
}

impl Default for DeliveryConfig {
    fn default() -> DeliveryConfig {
        DeliveryConfig {
            port: 25,
            retry: [5, 10, 20, 40, 60]
                .iter()
                .map(|m| Duration::from_secs(m * 60))
                .collect(),
            max_age: Duration::from_secs(5 * 86_400),
            delay_warning: Duration::from_secs(4 * 3600),
            ca_file: None,
        }
    }
}

impl DeliveryConfig {
    /// Refuses a retry schedule without any delay.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.retry.is_empty() {
            return Err(invalid("delivery.retry", "needs at least one delay"));
        }
        Ok(())
    }
}
