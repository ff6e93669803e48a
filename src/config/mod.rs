//! The one typed configuration: TOML in, [`Config`] out, parsed and validated before
//! anything starts; the files it names are loaded once by `runtime::files`.
//!
//! Every key has a default (the `Default` impls of the sections, documented in
//! `docs/pigeon.example.toml`), so `pigeon serve` runs without a file. Unknown keys are
//! errors, and every error names the key it is about. Values written as text (rates,
//! TLS policies, routes, nameservers, canonicalizations) are parsed here, once: the
//! sections that hold them are read into a `*Toml` form and parsed into their typed form,
//! so nothing after [`Config::load`] parses a configuration string again. Each section's
//! module checks its own keys; this one reads the file, checks the top-level keys and
//! the checks that span sections.

mod auth;
mod delivery;
mod dkim;
mod dns;
mod domains;
mod limits;
mod listen;
mod log;
mod relay;
mod spool;
mod timeouts;
mod units;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

pub use auth::AuthConfig;
pub use delivery::DeliveryConfig;
pub use dkim::{DkimCanonicalization, DkimConfig};
pub use dns::DnsConfig;
pub use domains::{DomainConfig, DomainPolicy, Route, RouteHost, TlsPolicy};
pub use limits::LimitsConfig;
pub use listen::{ListenerConfig, ListenerMode, TlsConfig, TlsMode};
pub use log::LogConfig;
pub use relay::RelayConfig;
pub use spool::{FsyncPolicy, SpoolConfig};
pub use timeouts::TimeoutsConfig;
pub use units::{ByteSize, Rate};

/// Why a configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TOML is malformed, a key is unknown, or a value has the wrong type; the message
    /// quotes the offending line and key.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's report, naming line, column and key.
        source: toml::de::Error,
    },
    /// A value parsed but is not acceptable.
    #[error("{key}: {reason}")]
    Invalid {
        /// The dotted key, e.g. `listener[0].address`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The parse step of a value written as text: `text` read by `parse`, or an error naming
/// `key` that quotes `text`, followed by `expected` (what it should look like).
fn parse_text<T>(
    text: &str,
    parse: impl FnOnce(&str) -> Option<T>,
    key: impl Into<String>,
    expected: &str,
) -> Result<T, ConfigError> {
    parse(text).ok_or_else(|| invalid(key, format!("{text:?}{expected}")))
}

/// The whole configuration, parsed and validated.
#[derive(Clone, Debug)]
pub struct Config {
    /// Our name in the greeting, EHLO and `Received:`. Default: the system's host name.
    pub hostname: String,
    /// Number of shards (pinned executor threads); 0 means one per CPU.
    pub shards: usize,
    /// The spool.
    pub spool: SpoolConfig,
    /// SMTP listeners; none configured means one on 127.0.0.1:2525.
    pub listeners: Vec<ListenerConfig>,
    /// Certificate and key for TLS listeners.
    pub tls: Option<TlsConfig>,
    /// Who may relay.
    pub relay: RelayConfig,
    /// SMTP AUTH credentials.
    pub auth: Option<AuthConfig>,
    /// Session limits.
    pub limits: LimitsConfig,
    /// Read timeouts (RFC 5321 §4.5.3.2).
    pub timeouts: TimeoutsConfig,
    /// DNS for delivery.
    pub dns: DnsConfig,
    /// Delivery retries and age.
    pub delivery: DeliveryConfig,
    /// Log files.
    pub log: LogConfig,
    /// Per-destination shaping, keyed by lower-case domain; `default` applies to every
    /// domain.
    pub domain: BTreeMap<String, DomainConfig>,
    /// DKIM signing keys.
    pub dkim: Vec<DkimConfig>,
}

/// The file as written: [`Config`] with the sections that hold text values in their
/// `*Toml` form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConfigToml {
    hostname: String,
    shards: usize,
    spool: SpoolConfig,
    #[serde(rename = "listener")]
    listeners: Vec<ListenerConfig>,
    tls: Option<TlsConfig>,
    relay: RelayConfig,
    auth: Option<AuthConfig>,
    limits: limits::LimitsToml,
    timeouts: TimeoutsConfig,
    dns: dns::DnsToml,
    delivery: DeliveryConfig,
    log: LogConfig,
    domain: BTreeMap<String, domains::DomainToml>,
    dkim: Vec<dkim::DkimToml>,
}

impl Default for ConfigToml {
    fn default() -> ConfigToml {
        ConfigToml {
            hostname: system_hostname(),
            shards: 0,
            spool: SpoolConfig::default(),
            listeners: Vec::new(),
            tls: None,
            relay: RelayConfig::default(),
            auth: None,
            limits: limits::LimitsToml::default(),
            timeouts: TimeoutsConfig::default(),
            dns: dns::DnsToml::default(),
            delivery: DeliveryConfig::default(),
            log: LogConfig::default(),
            domain: BTreeMap::new(),
            dkim: Vec::new(),
        }
    }
}

impl ConfigToml {
    /// Checks every section and parses the text values; the first error wins.
    fn parse(self) -> Result<Config, ConfigError> {
        if self.hostname.is_empty() || !crate::smtp::address::is_domain(self.hostname.as_bytes()) {
            return Err(invalid(
                "hostname",
                format!("{:?} is not a domain name", self.hostname),
            ));
        }
        if self.shards > 256 {
            return Err(invalid("shards", "at most 256"));
        }
        self.spool.validate()?;
        let limits = self.limits.parse()?;
        self.timeouts.validate()?;
        let relay = self.relay.parse()?;
        self.delivery.validate()?;
        let domain = domains::parse(self.domain, self.delivery.port)?;
        let dns = self.dns.parse()?;
        let listeners = listen::or_default(self.listeners);
        listen::validate(&listeners, self.tls.is_some(), self.auth.is_some())?;
        if let Some(auth) = &self.auth {
            auth.validate()?;
        }
        let dkim = dkim::parse(self.dkim)?;
        Ok(Config {
            hostname: self.hostname,
            shards: self.shards,
            spool: self.spool,
            listeners,
            tls: self.tls,
            relay,
            auth: self.auth,
            limits,
            timeouts: self.timeouts,
            dns,
            delivery: self.delivery,
            log: self.log,
            domain,
            dkim,
        })
    }
}

impl Config {
    /// Reads, parses and validates a configuration file. The files it names are read by
    /// `runtime::files::Loaded::load`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates TOML text; `path` is only for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let toml: ConfigToml = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        toml.parse()
    }

    /// The built-in defaults, validated.
    pub fn defaults() -> Config {
        ConfigToml::default()
            .parse()
            .expect("built-in defaults are valid")
    }

    /// Number of shards to run: `shards`, or one per CPU.
    pub fn shard_count(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

fn system_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    if crate::smtp::address::is_domain(name.as_bytes()) {
        name
    } else {
        "localhost".into()
    }
}

/// Parses `text` as a configuration file, for the sections' tests (the files it names are
/// loaded by `runtime::files`, and tested there).
#[cfg(test)]
fn check(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = check("").unwrap();
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].address, "127.0.0.1:2525".parse().unwrap());
        assert_eq!(c.limits.max_message_size, ByteSize(50 << 20));
        assert_eq!(c.spool.fsync, FsyncPolicy::Always);
    }

    #[test]
    fn errors_name_the_key() {
        let e = check("[spool]\nfsync = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fsync") && e.contains("sometimes"), "{e}");
        let e = check("[limits]\nmax_recipients = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("limits.max_recipients:"), "{e}");
        let e = check("[limits]\nmax_message_size = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_message_size"), "{e}");
        let e = check("bogus = 1\n").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = check("[[listener]]\naddress = \"127.0.0.1:25\"\ntls = \"starttls\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("listener[0].tls:"), "{e}");
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::defaults();
        assert!(c.dkim.is_empty() && c.dns.nameservers.is_empty());
        assert_eq!(c.limits.connection_rate_per_ip, None);
    }
}
