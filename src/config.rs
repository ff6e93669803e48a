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

/// `[auth]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// File of `user:argon2-hash` lines.
    pub users_file: PathBuf,
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
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_message_size: ByteSize(50 << 20),
            max_recipients: 1000,
            max_errors: 20,
        }
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
}

impl Default for TimeoutsConfig {
    fn default() -> TimeoutsConfig {
        TimeoutsConfig {
            command: Duration::from_secs(300),
            data: Duration::from_secs(180),
            shutdown_grace: Duration::from_secs(30),
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
        for (key, t) in [
            ("timeouts.command", self.timeouts.command),
            ("timeouts.data", self.timeouts.data),
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
                if !["opportunistic", "required", "verify", "disabled"].contains(&tls.as_str()) {
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
            if l.mode == ListenerMode::Submission {
                return Err(invalid(
                    format!("listener[{i}].mode"),
                    "submission (AUTH) is not supported by this build yet",
                ));
            }
        }
        if let Some(tls) = &self.tls {
            crate::accept::tls::server_config(&tls.cert, &tls.key)
                .map_err(|e| invalid("tls", e))?;
        }
        if self.auth.is_some() {
            return Err(invalid("auth", "AUTH is not supported by this build yet"));
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
    fn sizes_and_durations() {
        assert_eq!(parse_size("50MiB"), Some(50 << 20));
        assert_eq!(parse_size("10 MB"), Some(10_000_000));
        assert_eq!(parse_size("7"), Some(7));
        assert_eq!(parse_size("7 parsecs"), None);
        let c = parse("[timeouts]\ncommand = \"2m\"\n").unwrap();
        assert_eq!(c.timeouts.command, Duration::from_secs(120));
    }
}
