//! `[timeouts]`: how long the server waits on a client, and on sessions when stopping.

use std::time::Duration;

use serde::Deserialize;

use super::units::duration;
use super::{invalid, ConfigError};

/// `[timeouts]`: server-side read timeouts, RFC 5321 §4.5.3.2 values by default.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// Waiting for the next command (§4.5.3.2.7: 5 minutes).
    #[serde(deserialize_with = "duration")]
    pub command: Duration,
    /// Waiting for the next block of message content (§4.5.3.2.5's 3 minutes).
    #[serde(deserialize_with = "duration")]
    pub data: Duration,
    /// On SIGTERM, how long sessions inside DATA may take to finish.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// Total time one session may last; past it, 421 4.4.2 at the next command (a message
    /// whose content is under way may take one more `data` timeout to finish).
    #[serde(deserialize_with = "duration")]
    pub session: Duration,
}

impl Default for TimeoutsConfig {
    fn default() -> TimeoutsConfig {
        TimeoutsConfig {
            command: Duration::from_secs(300),
            data: Duration::from_secs(180),
            shutdown_grace: Duration::from_secs(30),
            // Postfix bounds a session only by its per-command timeouts; an hour lets a
            // large batch through one connection and still ends any slow-drip client.
            session: Duration::from_secs(3600),
        }
    }
}

impl TimeoutsConfig {
    /// Refuses read timeouts under a second (a client could not keep up with them).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (key, t) in [
            ("timeouts.command", self.command),
            ("timeouts.data", self.data),
            ("timeouts.session", self.session),
        ] {
            if t < Duration::from_secs(1) {
                return Err(invalid(key, "at least 1s"));
            }
        }
        Ok(())
    }
}
