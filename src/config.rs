//! The one typed configuration: TOML in, [`Config`] out, validated before anything starts.
//!
//! Every key has a default (the `Default` impls below, documented in
//! `docs/pigeon.example.toml`), so `pigeon serve` runs without a file. Unknown keys are
//! errors, and every error names the key it is about.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use thiserror::Error;

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

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Our name in the greeting, EHLO and `Received:`. Default: the system's host name.
    pub hostname: String,
    /// Number of shards (pinned executor threads); 0 means one per CPU.
    pub shards: usize,
    /// The spool.
    pub spool: SpoolConfig,
    /// SMTP listeners; none configured means one on 127.0.0.1:2525.
    #[serde(rename = "listener")]
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
    /// Per-destination shaping; `default` applies to every domain.
    pub domain: BTreeMap<String, DomainConfig>,
    /// DKIM signing keys.
    pub dkim: Vec<DkimConfig>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            hostname: system_hostname(),
            shards: 0,
            spool: SpoolConfig::default(),
            listeners: Vec::new(),
            tls: None,
            relay: RelayConfig::default(),
            auth: None,
            limits: LimitsConfig::default(),
            timeouts: TimeoutsConfig::default(),
            dns: DnsConfig::default(),
            delivery: DeliveryConfig::default(),
            log: LogConfig::default(),
            domain: BTreeMap::new(),
            dkim: Vec::new(),
        }
    }
}

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

/// When the spool syncs.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// `fdatasync` before acknowledging (group commit). The default.
    Always,
    /// Never sync: a crash or power cut can lose acknowledged mail. For benchmarks.
    Never,
}

/// `[[listener]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address and port to bind on every shard.
    pub address: SocketAddr,
    /// `relay` (port 25 style) or `submission` (AUTH required).
    #[serde(default)]
    pub mode: ListenerMode,
    /// `none`, `starttls` or `implicit`.
    #[serde(default)]
    pub tls: TlsMode,
}

/// What a listener accepts.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListenerMode {
    /// Mail for `relay.domains` from anyone; any domain from `relay.networks`.
    #[default]
    Relay,
    /// Authenticated clients only.
    Submission,
}

/// TLS on a listener.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain text only.
    #[default]
    None,
    /// STARTTLS offered (RFC 3207).
    Starttls,
    /// TLS from the first byte (RFC 8314).
    Implicit,
}

/// `[tls]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[relay]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Clients in these networks may send to any domain.
    pub networks: Vec<IpNet>,
    /// Mail for these domains is accepted from anyone.
    pub domains: Vec<String>,
}

impl Default for RelayConfig {
    fn default() -> RelayConfig {
        RelayConfig {
            networks: vec![
                "127.0.0.0/8".parse().expect("valid"),
                "::1/128".parse().expect("valid"),
            ],
            domains: Vec::new(),
        }
    }
}

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
}

/// `[limits]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest message accepted (advertised with SIZE); more gets 552 5.3.4.
    pub max_message_size: ByteSize,
    /// Recipients per message; the next gets 452 4.5.3.
    pub max_recipients: usize,
    /// Client errors per session before 421 4.7.0 and close (Postfix: smtpd_hard_error_limit).
    pub max_errors: u32,
    /// Connections open at once, all clients and listeners together; more get 421 4.7.0.
    pub max_connections: u32,
    /// Connections open at once from one client address (IPv6: one /64); more get 421 4.7.0.
    pub max_connections_per_ip: u32,
    /// New connections from one client address per time unit (`"60/m"`), or `"none"`.
    pub connection_rate_per_ip: String,
    /// Messages in one session; the next MAIL gets 421 4.7.0 and the session closes.
    pub max_messages_per_connection: u32,
    /// Accepted recipients in one session, over all its messages; past them RCPT gets
    /// 452 4.5.3 and the next MAIL 421 4.7.0.
    pub max_recipients_per_connection: u32,
    /// Clients to which the per-client limits do not apply; default: `relay.networks`.
    pub exempt_networks: Option<Vec<IpNet>>,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_message_size: ByteSize(50 << 20),
            max_recipients: 1000,
            max_errors: 20,
            // Well above what one machine's SMTP clients need at once, well below the file
            // descriptors the systemd unit grants: what protects the process from a flood
            // is this bound, not the kernel's.
            max_connections: 1000,
            // Postfix's smtpd_client_connection_count_limit.
            max_connections_per_ip: 50,
            // Postfix's smtpd_client_connection_rate_limit is off by default too: a rate
            // that fits every legitimate sender depends on the site.
            connection_rate_per_ip: "none".into(),
            // Postfix has no such limit; 1000 lets a bulk sender's long session run for a
            // good while and still makes a stuck or abusive one reconnect now and then.
            max_messages_per_connection: 1000,
            // Ten messages at `max_recipients` each.
            max_recipients_per_connection: 10_000,
            exempt_networks: None,
        }
    }
}

impl LimitsConfig {
    /// `connection_rate_per_ip` parsed: `None` for no limit.
    pub fn connection_rate(&self) -> Result<Option<(u32, Duration)>, ConfigError> {
        match self.connection_rate_per_ip.trim() {
            "none" => Ok(None),
            rate => crate::queue::limits::parse_rate(rate)
                .map(Some)
                .ok_or_else(|| {
                    invalid(
                        "limits.connection_rate_per_ip",
                        format!("{rate:?} is not a rate like \"60/m\" or \"none\""),
                    )
                }),
        }
    }

    /// The networks exempt from per-client limits: `exempt_networks`, else `relay`.
    pub fn exempt<'a>(&'a self, relay: &'a RelayConfig) -> &'a [IpNet] {
        self.exempt_networks.as_deref().unwrap_or(&relay.networks)
    }
}

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

/// `[dns]` (used by delivery).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// `host:port` of resolvers; empty means /etc/resolv.conf.
    pub nameservers: Vec<String>,
}

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

/// `[domain.NAME]`: shaping for one destination.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    /// Concurrent connections.
    pub max_connections: Option<u32>,
    /// Messages per connection before reconnecting.
    pub max_messages_per_connection: Option<u32>,
    /// Recipients per transaction.
    pub max_recipients_per_transaction: Option<u32>,
    /// `opportunistic`, `required`, `verify` or `disabled`.
    pub tls: Option<String>,
    /// e.g. `100/s`.
    pub rate: Option<String>,
    /// Static next hops instead of MX.
    pub route: Option<Vec<String>>,
}

/// `[[dkim]]`: one signing key. Two entries for one domain sign every message twice (for
/// example RSA and Ed25519 side by side).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimConfig {
    /// Signing domain (`d=`): messages whose From domain is this domain or below it.
    pub domain: String,
    /// Selector (`s=`): the key is published at `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// PEM private key (PKCS#8 or PKCS#1), RSA of 2048 bits or more, or Ed25519.
    pub key: PathBuf,
    /// `header/body` canonicalization (`c=`); default `relaxed/relaxed`.
    #[serde(default)]
    pub canonicalization: Option<String>,
    /// Signature lifetime (`x=` = `t=` + this), e.g. `"7d"`; none by default.
    #[serde(default, deserialize_with = "optional_duration")]
    pub expire: Option<Duration>,
    /// Header fields to sign instead of the default list.
    #[serde(default)]
    pub headers: Option<Vec<String>>,
}

/// The shaping for one destination domain, with every default filled in: built-in
/// defaults, then `[domain.default]`, then `[domain."NAME"]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainPolicy {
    /// Concurrent connections, all shards together (default 32).
    pub max_connections: u32,
    /// Messages per connection before it is closed (default 1000).
    pub max_messages_per_connection: u32,
    /// Recipients per transaction (default 100).
    pub max_recipients_per_transaction: u32,
    /// Messages per time unit, if limited.
    pub rate: Option<(u32, Duration)>,
    /// Static next hops (`host:port`) instead of MX.
    pub route: Option<Vec<String>>,
    /// STARTTLS when delivering (default opportunistic).
    pub tls: TlsPolicy,
}

/// `domain.NAME.tls`: STARTTLS (RFC 3207) when delivering, after Postfix's
/// `smtp_tls_security_level` (`may`, `encrypt`, `verify`, `none`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Encrypt when the server offers STARTTLS, without checking its certificate; after a
    /// failed handshake, the same host once more in plain text.
    #[default]
    Opportunistic,
    /// Encrypt or defer: no STARTTLS offered, or a failed handshake, is a temporary failure.
    Required,
    /// Like `Required`, and the certificate must be valid for the host name (the MX or
    /// route host) against `delivery.ca_file` or the system's roots.
    Verify,
    /// Never send STARTTLS.
    Disabled,
}

impl TlsPolicy {
    /// Reads the configuration word.
    pub fn parse(word: &str) -> Option<TlsPolicy> {
        Some(match word {
            "opportunistic" => TlsPolicy::Opportunistic,
            "required" => TlsPolicy::Required,
            "verify" => TlsPolicy::Verify,
            "disabled" => TlsPolicy::Disabled,
            _ => return None,
        })
    }
}

impl Config {
    /// The resolved shaping for mail to `domain` (lower case).
    pub fn domain_policy(&self, domain: &str) -> DomainPolicy {
        let mut p = DomainPolicy {
            max_connections: 32,
            max_messages_per_connection: 1000,
            max_recipients_per_transaction: 100,
            rate: None,
            route: None,
            tls: TlsPolicy::default(),
        };
        for layer in [self.domain.get("default"), self.domain.get(domain)]
            .into_iter()
            .flatten()
        {
            p.max_connections = layer.max_connections.unwrap_or(p.max_connections);
            p.max_messages_per_connection = layer
                .max_messages_per_connection
                .unwrap_or(p.max_messages_per_connection);
            p.max_recipients_per_transaction = layer
                .max_recipients_per_transaction
                .unwrap_or(p.max_recipients_per_transaction);
            if let Some(rate) = &layer.rate {
                p.rate = crate::queue::limits::parse_rate(rate);
            }
            if layer.route.is_some() {
                p.route = layer.route.clone();
            }
            // Validated at start.
            if let Some(tls) = layer.tls.as_deref().and_then(TlsPolicy::parse) {
                p.tls = tls;
            }
        }
        p
    }

    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates TOML text; `path` is only for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The built-in defaults, validated.
    pub fn defaults() -> Config {
        let mut c = Config::default();
        c.validate().expect("built-in defaults are valid");
        c
    }

    /// Number of shards to run: `shards`, or one per CPU.
    pub fn shard_count(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        if self.listeners.is_empty() {
            self.listeners.push(ListenerConfig {
                address: "127.0.0.1:2525".parse().expect("valid"),
                mode: ListenerMode::Relay,
                tls: TlsMode::None,
            });
        }
        if self.hostname.is_empty() || !crate::smtp::address::is_domain(self.hostname.as_bytes()) {
            return Err(invalid(
                "hostname",
                format!("{:?} is not a domain name", self.hostname),
            ));
        }
        if self.shards > 256 {
            return Err(invalid("shards", "at most 256"));
        }
        if self.spool.path.as_os_str().is_empty() {
            return Err(invalid("spool.path", "must not be empty"));
        }
        if self.spool.segment_size.0 < 1 << 20 {
            return Err(invalid("spool.segment_size", "at least 1MiB"));
        }
        if self.spool.compact_after < Duration::from_secs(1) {
            return Err(invalid("spool.compact_after", "at least 1s"));
        }
        let size = self.limits.max_message_size.0;
        if !(1024..=1 << 30).contains(&size) {
            return Err(invalid("limits.max_message_size", "between 1KiB and 1GiB"));
        }
        if self.limits.max_recipients == 0 {
            return Err(invalid("limits.max_recipients", "at least 1"));
        }
        if self.limits.max_errors == 0 {
            return Err(invalid("limits.max_errors", "at least 1"));
        }
        for (key, v) in [
            ("limits.max_connections", self.limits.max_connections),
            (
                "limits.max_connections_per_ip",
                self.limits.max_connections_per_ip,
            ),
            (
                "limits.max_messages_per_connection",
                self.limits.max_messages_per_connection,
            ),
            (
                "limits.max_recipients_per_connection",
                self.limits.max_recipients_per_connection,
            ),
        ] {
            if v == 0 {
                return Err(invalid(key, "at least 1"));
            }
        }
        self.limits.connection_rate()?;
        for (key, t) in [
            ("timeouts.command", self.timeouts.command),
            ("timeouts.data", self.timeouts.data),
            ("timeouts.session", self.timeouts.session),
        ] {
            if t < Duration::from_secs(1) {
                return Err(invalid(key, "at least 1s"));
            }
        }
        for (i, d) in self.relay.domains.iter_mut().enumerate() {
            *d = d.to_ascii_lowercase();
            if !crate::smtp::address::is_domain(d.as_bytes()) {
                return Err(invalid(
                    format!("relay.domains[{i}]"),
                    format!("{d:?} is not a domain"),
                ));
            }
        }
        if self.delivery.retry.is_empty() {
            return Err(invalid("delivery.retry", "needs at least one delay"));
        }
        if let Some(ca) = &self.delivery.ca_file {
            crate::deliver::client::tls::load_ca_file(ca)
                .map_err(|e| invalid("delivery.ca_file", e))?;
        }
        // Lookups use lower-case domains (queue keys are lower-cased), so the table is too.
        self.domain = std::mem::take(&mut self.domain)
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        for (name, d) in &self.domain {
            let key = |field: &str| format!("domain.{name:?}.{field}").replace('"', "");
            for (field, v) in [
                ("max_connections", d.max_connections),
                ("max_messages_per_connection", d.max_messages_per_connection),
                (
                    "max_recipients_per_transaction",
                    d.max_recipients_per_transaction,
                ),
            ] {
                if v == Some(0) {
                    return Err(invalid(key(field), "at least 1"));
                }
            }
            if let Some(rate) = &d.rate {
                if crate::queue::limits::parse_rate(rate).is_none() {
                    return Err(invalid(
                        key("rate"),
                        format!("{rate:?} is not a rate like \"100/s\""),
                    ));
                }
            }
            if let Some(tls) = &d.tls {
                if TlsPolicy::parse(tls).is_none() {
                    return Err(invalid(
                        key("tls"),
                        format!("{tls:?}: opportunistic, required, verify or disabled"),
                    ));
                }
            }
            for (i, hop) in d.route.iter().flatten().enumerate() {
                if crate::config::parse_hop(hop, self.delivery.port).is_none() {
                    return Err(invalid(
                        format!("{}[{i}]", key("route")),
                        format!("{hop:?} is not host or host:port"),
                    ));
                }
            }
        }
        for (i, ns) in self.dns.nameservers.iter().enumerate() {
            if parse_nameserver(ns).is_none() {
                return Err(invalid(
                    format!("dns.nameservers[{i}]"),
                    format!("{ns:?} is not ip or ip:port"),
                ));
            }
        }
        for (i, l) in self.listeners.iter().enumerate() {
            // Refuse what cannot work rather than run a listener that silently lacks it (a
            // TLS port without a certificate, a submission port without AUTH).
            if l.tls != TlsMode::None && self.tls.is_none() {
                return Err(invalid(
                    format!("listener[{i}].tls"),
                    "needs [tls] cert and key",
                ));
            }
            // Submission is AUTH-only, and AUTH is offered only under TLS (RFC 8314 §3).
            if l.mode == ListenerMode::Submission && self.auth.is_none() {
                return Err(invalid(
                    format!("listener[{i}].mode"),
                    "submission needs [auth]",
                ));
            }
            if l.mode == ListenerMode::Submission && l.tls == TlsMode::None {
                return Err(invalid(
                    format!("listener[{i}].mode"),
                    "submission needs tls = \"starttls\" or \"implicit\"",
                ));
            }
        }
        if let Some(tls) = &self.tls {
            crate::accept::tls::server_config(&tls.cert, &tls.key)
                .map_err(|e| invalid("tls", e))?;
        }
        if let Some(auth) = &self.auth {
            if auth.max_failures == 0 {
                return Err(invalid("auth.max_failures", "at least 1"));
            }
            if auth.failure_window < Duration::from_secs(1) {
                return Err(invalid("auth.failure_window", "at least 1s"));
            }
            if auth.failure_delay > Duration::from_secs(60) {
                return Err(invalid("auth.failure_delay", "at most 60s"));
            }
            crate::auth::credentials::Credentials::load(&auth.users_file)
                .map_err(|e| invalid("auth.users_file", e.to_string()))?;
        }
        self.dkim_signers()?;
        Ok(())
    }

    /// The DKIM signers of `[[dkim]]`, with their keys loaded. Errors name the entry and,
    /// for a bad key, the file.
    pub fn dkim_signers(&self) -> Result<Vec<crate::dkim::Signer>, ConfigError> {
        use crate::dkim::{Canonicalization, Signer, SigningKey};
        let mut signers = Vec::new();
        for (i, d) in self.dkim.iter().enumerate() {
            let key = |field: &str| format!("dkim[{i}].{field}");
            let domain = d.domain.trim_end_matches('.').to_ascii_lowercase();
            if !crate::smtp::address::is_domain(domain.as_bytes()) {
                return Err(invalid(
                    key("domain"),
                    format!("{:?} is not a domain", d.domain),
                ));
            }
            if !domain.is_ascii() {
                return Err(invalid(
                    key("domain"),
                    "use the ASCII (xn--) form of the domain",
                ));
            }
            let selector_ok = !d.selector.is_empty()
                && d.selector.is_ascii()
                && d.selector
                    .split('.')
                    .all(|l| crate::smtp::address::is_domain(l.as_bytes()));
            if !selector_ok {
                return Err(invalid(
                    key("selector"),
                    format!("{:?} is not a selector", d.selector),
                ));
            }
            let pem = std::fs::read_to_string(&d.key).map_err(|e| {
                invalid(key("key"), format!("cannot read {}: {e}", d.key.display()))
            })?;
            let signing_key = SigningKey::from_pem(&pem)
                .map_err(|e| invalid(key("key"), format!("{}: {e}", d.key.display())))?;
            let mut signer =
                Signer::new(domain, d.selector.clone(), std::sync::Arc::new(signing_key));
            if let Some(c) = &d.canonicalization {
                let parsed = c.split_once('/').and_then(|(h, b)| {
                    Some((
                        h.parse::<Canonicalization>().ok()?,
                        b.parse::<Canonicalization>().ok()?,
                    ))
                });
                let Some((header, body)) = parsed else {
                    return Err(invalid(
                        key("canonicalization"),
                        format!("{c:?}: like \"relaxed/relaxed\""),
                    ));
                };
                signer.header_canon = header;
                signer.body_canon = body;
            }
            signer.expire_after = d.expire;
            if let Some(headers) = &d.headers {
                // RFC 5322 §3.6.8: a field name is printable ASCII without ':'.
                let bad = headers.iter().find(|h| {
                    h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic() && b != b':')
                });
                if let Some(bad) = bad {
                    return Err(invalid(
                        key("headers"),
                        format!("{bad:?} is not a header field name"),
                    ));
                }
                signer.headers = headers.clone();
            }
            signers.push(signer);
        }
        Ok(signers)
    }
}

/// A next hop `host[:port]` (port defaulting to `default_port`); `[v6]:port` for IPv6.
pub fn parse_hop(hop: &str, default_port: u16) -> Option<(String, u16)> {
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some((addr.ip().to_string(), addr.port()));
    }
    let (host, port) = match hop.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()?),
        _ => (hop, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ok = host.parse::<std::net::IpAddr>().is_ok()
        || crate::smtp::address::is_domain(host.as_bytes());
    ok.then(|| (host.to_owned(), port))
}

/// A nameserver `ip` or `ip:port` (port 53 by default).
pub fn parse_nameserver(ns: &str) -> Option<SocketAddr> {
    ns.parse::<SocketAddr>().ok().or_else(|| {
        ns.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// A size in octets, written `50MiB`, `100MB`, `512KiB` or a bare number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse_size(&s).map(ByteSize).ok_or_else(|| {
                serde::de::Error::custom(format!("{s:?} is not a size like \"50MiB\""))
            }),
        }
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration like \"5m\": {e}")))
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            humantime::parse_duration(s).map_err(|e| {
                serde::de::Error::custom(format!("{s:?} is not a duration like \"5m\": {e}"))
            })
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].address, "127.0.0.1:2525".parse().unwrap());
        assert_eq!(c.limits.max_message_size, ByteSize(50 << 20));
        assert_eq!(c.spool.fsync, FsyncPolicy::Always);
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("[spool]\nfsync = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fsync") && e.contains("sometimes"), "{e}");
        let e = parse("[limits]\nmax_recipients = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("limits.max_recipients:"), "{e}");
        let e = parse("[limits]\nmax_message_size = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_message_size"), "{e}");
        let e = parse("bogus = 1\n").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = parse("[[listener]]\naddress = \"127.0.0.1:25\"\ntls = \"starttls\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("listener[0].tls:"), "{e}");
    }

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

    #[test]
    fn domain_policy_layers() {
        let c = parse(
            "[domain.default]\nmax_connections = 4\nrate = \"10/s\"\n\n\
             [domain.\"gmail.com\"]\nmax_recipients_per_transaction = 50\n\
             route = [\"127.0.0.5:2525\"]\n",
        )
        .unwrap();
        let g = c.domain_policy("gmail.com");
        assert_eq!(
            (g.max_connections, g.max_recipients_per_transaction),
            (4, 50)
        );
        assert_eq!(g.rate, Some((10, Duration::from_secs(1))));
        assert_eq!(g.route, Some(vec!["127.0.0.5:2525".to_string()]));
        let o = c.domain_policy("other.test");
        assert_eq!((o.max_recipients_per_transaction, o.route), (100, None));
        let e = parse("[domain.\"x.test\"]\nrate = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("domain.x.test.rate:"), "{e}");
        assert_eq!(parse_hop("mx.test", 25), Some(("mx.test".into(), 25)));
        assert_eq!(parse_hop("[::1]:26", 25), Some(("::1".into(), 26)));
        assert_eq!(parse_hop("bad host", 25), None);
    }

    #[test]
    fn tls_policy_and_ca_file() {
        let c = parse(
            "[domain.default]\ntls = \"required\"\n\n[domain.\"plain.test\"]\ntls = \"disabled\"\n",
        )
        .unwrap();
        assert_eq!(c.domain_policy("other.test").tls, TlsPolicy::Required);
        assert_eq!(c.domain_policy("plain.test").tls, TlsPolicy::Disabled);
        assert_eq!(
            parse("").unwrap().domain_policy("x.test").tls,
            TlsPolicy::Opportunistic
        );
        let e = parse("[domain.\"x.test\"]\ntls = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("domain.x.test.tls:"), "{e}");

        let e = parse("[delivery]\nca_file = \"/nonexistent/ca.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("delivery.ca_file:") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = parse(&format!("[delivery]\nca_file = \"{}\"\n", empty.display()))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("delivery.ca_file:") && e.contains("no certificate"),
            "{e}"
        );
    }

    #[test]
    fn auth_keys_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        let hash = crate::auth::credentials::hash_password("pw").unwrap();
        std::fs::write(&users, format!("# one user\nalice:{hash}\n")).unwrap();
        let auth = format!("[auth]\nusers_file = \"{}\"\n", users.display());
        let c = parse(&auth).unwrap();
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
        let e = parse("[auth]\nusers_file = \"/nonexistent/users\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("auth.users_file:"), "{e}");
        std::fs::write(&users, "# ok\nalice:not-a-hash\n").unwrap();
        let e = parse(&auth).unwrap_err().to_string();
        assert!(
            e.starts_with("auth.users_file:") && e.contains("line 2"),
            "{e}"
        );
        let submission = "[[listener]]\naddress = \"127.0.0.1:587\"\nmode = \"submission\"\n";
        let e = parse(submission).unwrap_err().to_string();
        assert!(
            e.starts_with("listener[0].mode:") && e.contains("[auth]"),
            "{e}"
        );
        std::fs::write(&users, format!("alice:{hash}\n")).unwrap();
        let e = parse(&format!("{submission}\n{auth}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("listener[0].mode:") && e.contains("tls"),
            "{e}"
        );
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("50MiB"), Some(50 << 20));
        assert_eq!(parse_size("10 MB"), Some(10_000_000));
        assert_eq!(parse_size("7"), Some(7));
        assert_eq!(parse_size("7 parsecs"), None);
        let c = parse("[timeouts]\ncommand = \"2m\"\n").unwrap();
        assert_eq!(c.timeouts.command, Duration::from_secs(120));
    }

    #[test]
    fn abuse_limits_validate() {
        let c = parse("").unwrap();
        assert_eq!(
            (c.limits.max_connections, c.limits.max_connections_per_ip),
            (1000, 50)
        );
        assert_eq!(c.limits.connection_rate().unwrap(), None);
        assert_eq!(c.limits.exempt(&c.relay), &c.relay.networks[..]);
        assert_eq!(c.timeouts.session, Duration::from_secs(3600));
        for key in [
            "max_connections",
            "max_connections_per_ip",
            "max_messages_per_connection",
            "max_recipients_per_connection",
        ] {
            let e = parse(&format!("[limits]\n{key} = 0\n"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("limits.{key}: at least 1")), "{e}");
        }
        let e = parse("[limits]\nconnection_rate_per_ip = \"often\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("limits.connection_rate_per_ip:"), "{e}");
        let c = parse("[limits]\nconnection_rate_per_ip = \"60/m\"\n").unwrap();
        assert_eq!(
            c.limits.connection_rate().unwrap(),
            Some((60, Duration::from_secs(60)))
        );
        let e = parse("[limits]\nexempt_networks = [\"10.0.0.0/33\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("exempt_networks"), "{e}");
        let c = parse("[limits]\nexempt_networks = []\n").unwrap();
        assert!(c.limits.exempt(&c.relay).is_empty());
        let e = parse("[timeouts]\nsession = \"500ms\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("timeouts.session: at least 1s"), "{e}");
    }
}
