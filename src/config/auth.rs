//! `[auth]`: SMTP AUTH (RFC 4954): where the users are, and how password guessing is
//! slowed down. The users file itself is read by `runtime::files::Loaded::load`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::units::duration;
use super::{invalid, ConfigError};

/// `[auth]`: SMTP AUTH (RFC 4954), offered only under TLS.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// File of `user:argon2-hash` lines, written by `pigeon passwd`.
    pub users_file: PathBuf,
    /// Failed attempts per client address, and per user name, before further attempts are
    /// refused unchecked (default 10).
    #[serde(default = "AuthConfig::default_max_failures")]
    pub max_failures: u32,
    /// Failures are forgotten this long after the last one (default 1h).
    #[serde(
        default = "AuthConfig::default_failure_window",
        deserialize_with = "duration"
    )]
    pub failure_window: Duration,
    /// The pause before a blocked attempt gets 454 and the connection closes (default 2s).
    #[serde(
        default = "AuthConfig::default_failure_delay",
        deserialize_with = "duration"
    )]
    pub failure_delay: Duration,
    /// When true, MAIL FROM must be the login name (or `<>`); else 553 5.7.1.
    #[serde(default)]
    pub sender_match: bool,
}

impl AuthConfig {
    fn default_max_failures() -> u32 {
        10
    }
    fn default_failure_window() -> Duration {
        Duration::from_secs(3600)
    }
    fn default_failure_delay() -> Duration {
        Duration::from_secs(2)
    }

    /// Refuses failure counting that would not count, and delays that would hold a
    /// connection too long.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_failures == 0 {
            return Err(invalid("auth.max_failures", "at least 1"));
        }
        if self.failure_window < Duration::from_secs(1) {
            return Err(invalid("auth.failure_window", "at least 1s"));
        }
        if self.failure_delay > Duration::from_secs(60) {
            return Err(invalid("auth.failure_delay", "at most 60s"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::check as parse;

    #[test]
    fn auth_keys_are_checked() {
        // The users file itself is read by `runtime::files` (and tested there): here it
        // need not exist.
        let auth = "[auth]\nusers_file = \"/nonexistent/users\"\n";
        let c = parse(auth).unwrap();
        let a = c.auth.unwrap();
        assert_eq!(a.max_failures, 10);
        assert_eq!(a.failure_window, Duration::from_secs(3600));
        assert_eq!(a.failure_delay, Duration::from_secs(2));
        assert!(!a.sender_match);
        for (extra, key) in [
            ("max_failures = 0\n", "auth.max_failures:"),
            ("failure_window = \"0s\"\n", "auth.failure_window:"),
            ("failure_delay = \"2m\"\n", "auth.failure_delay:"),
        ] {
            let e = parse(&format!("{auth}{extra}")).unwrap_err().to_string();
            assert!(e.starts_with(key), "{e}");
        }
        let submission = "[[listener]]\naddress = \"127.0.0.1:587\"\nmode = \"submission\"\n";
        let e = parse(submission).unwrap_err().to_string();
        assert!(
            e.starts_with("listener[0].mode:") && e.contains("[auth]"),
            "{e}"
        );
        let e = parse(&format!("{submission}\n{auth}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("listener[0].mode:") && e.contains("tls"),
            "{e}"
        );
    }
}
