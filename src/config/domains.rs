//! `[domain.NAME]`: shaping and routing per destination domain, with `[domain.default]`
//! under every domain. Rates, TLS policies and routes are parsed when the file is read;
//! [`DomainPolicy`] is one domain's layers resolved.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use super::units::Rate;
use super::{invalid, parse_text, Config, ConfigError};

/// `[domain.NAME]`: shaping for one destination, parsed; what is unset comes from
/// `[domain.default]`, then from the built-in defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainConfig {
    /// Concurrent connections.
    pub max_connections: Option<u32>,
    /// Messages per connection before reconnecting.
    pub max_messages_per_connection: Option<u32>,
    /// Recipients per transaction.
    pub max_recipients_per_transaction: Option<u32>,
    /// STARTTLS when delivering.
    pub tls: Option<TlsPolicy>,
    /// Messages per time unit.
    pub rate: Option<Rate>,
    /// Static next hops instead of MX.
    pub route: Option<Vec<Route>>,
}

/// `[domain.NAME]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DomainToml {
    max_connections: Option<u32>,
    max_messages_per_connection: Option<u32>,
    max_recipients_per_transaction: Option<u32>,
    /// `opportunistic`, `required`, `verify` or `disabled`.
    tls: Option<String>,
    /// e.g. `100/s`.
    rate: Option<String>,
    /// `host[:port]` entries.
    route: Option<Vec<String>>,
}

/// Parses the `[domain.*]` tables, keyed by lower-case domain (queue keys are lower-cased,
/// so lookups are too); `port` is `delivery.port`, the port of a route without one.
pub(super) fn parse(
    domains: BTreeMap<String, DomainToml>,
    port: u16,
) -> Result<BTreeMap<String, DomainConfig>, ConfigError> {
    let lower: BTreeMap<String, DomainToml> = domains
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    lower
        .into_iter()
        .map(|(name, d)| {
            let parsed = d.parse(&name, port)?;
            Ok((name, parsed))
        })
        .collect()
}

impl DomainToml {
    fn parse(self, name: &str, port: u16) -> Result<DomainConfig, ConfigError> {
        let key = |field: &str| format!("domain.{name:?}.{field}").replace('"', "");
        for (field, v) in [
            ("max_connections", self.max_connections),
            (
                "max_messages_per_connection",
                self.max_messages_per_connection,
            ),
            (
                "max_recipients_per_transaction",
                self.max_recipients_per_transaction,
            ),
        ] {
            if v == Some(0) {
                return Err(invalid(key(field), "at least 1"));
            }
        }
        let rate = self
            .rate
            .map(|r| {
                parse_text(
                    &r,
                    Rate::parse,
                    key("rate"),
                    " is not a rate like \"100/s\"",
                )
            })
            .transpose()?;
        let tls = self
            .tls
            .map(|t| {
                let expected = ": opportunistic, required, verify or disabled";
                parse_text(&t, TlsPolicy::parse, key("tls"), expected)
            })
            .transpose()?;
        let route = self
            .route
            .map(|hops| {
                hops.iter()
                    .enumerate()
                    .map(|(i, hop)| {
                        let key = format!("{}[{i}]", key("route"));
                        let parse = |h: &str| Route::parse(h, port);
                        parse_text(hop, parse, key, " is not host or host:port")
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(DomainConfig {
            max_connections: self.max_connections,
            max_messages_per_connection: self.max_messages_per_connection,
            max_recipients_per_transaction: self.max_recipients_per_transaction,
            tls,
            rate,
            route,
        })
    }
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
    pub rate: Option<Rate>,
    /// Static next hops instead of MX.
    pub route: Option<Vec<Route>>,
    /// STARTTLS when delivering (default opportunistic).
    pub tls: TlsPolicy,
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
            p.rate = layer.rate.or(p.rate);
            if layer.route.is_some() {
                p.route = layer.route.clone();
            }
            p.tls = layer.tls.unwrap_or(p.tls);
        }
        p
    }
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

/// One next hop of a static route (`domain.NAME.route`), its port resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The host to connect to.
    pub host: RouteHost,
    /// Its port: the one written, else `delivery.port`.
    pub port: u16,
}

/// A route's host: an address used as is, or a name to resolve (A/AAAA, no MX).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteHost {
    /// An IP address (written bare, or in brackets for IPv6).
    Ip(IpAddr),
    /// A host name.
    Name(String),
}

impl fmt::Display for RouteHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteHost::Ip(ip) => ip.fmt(f),
            RouteHost::Name(name) => f.write_str(name),
        }
    }
}

impl Route {
    /// Reads `host[:port]` (port defaulting to `default_port`); `[v6]:port` for IPv6.
    pub fn parse(hop: &str, default_port: u16) -> Option<Route> {
        if let Ok(addr) = hop.parse::<SocketAddr>() {
            return Some(Route {
                host: RouteHost::Ip(addr.ip()),
                port: addr.port(),
            });
        }
        let (host, port) = match hop.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, p.parse().ok()?),
            _ => (hop, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => RouteHost::Ip(ip),
            Err(_) if crate::smtp::address::is_domain(host.as_bytes()) => {
                RouteHost::Name(host.to_owned())
            }
            Err(_) => return None,
        };
        Some(Route { host, port })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::check as parse;

    fn name(host: &str, port: u16) -> Option<Route> {
        Some(Route {
            host: RouteHost::Name(host.into()),
            port,
        })
    }

    fn ip(ip: &str, port: u16) -> Option<Route> {
        Some(Route {
            host: RouteHost::Ip(ip.parse().unwrap()),
            port,
        })
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
        assert_eq!(
            g.rate,
            Some(Rate {
                count: 10,
                per: Duration::from_secs(1)
            })
        );
        assert_eq!(g.route, ip("127.0.0.5", 2525).map(|r| vec![r]));
        let o = c.domain_policy("other.test");
        assert_eq!((o.max_recipients_per_transaction, o.route), (100, None));
        let e = parse("[domain.\"x.test\"]\nrate = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("domain.x.test.rate:"), "{e}");
        assert_eq!(Route::parse("mx.test", 25), name("mx.test", 25));
        assert_eq!(Route::parse("[::1]:26", 25), ip("::1", 26));
        assert_eq!(Route::parse("bad host", 25), None);
    }

    #[test]
    fn routes_are_parsed_with_the_delivery_port() {
        let c = parse(
            "[delivery]\nport = 2526\n\n[domain.\"X.test\"]\n\
             route = [\"mx.x.test\", \"192.0.2.1:26\", \"[2001:db8::1]\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.domain["x.test"].route,
            Some(vec![
                name("mx.x.test", 2526).unwrap(),
                ip("192.0.2.1", 26).unwrap(),
                ip("2001:db8::1", 2526).unwrap(),
            ])
        );
        let e = parse("[domain.\"x.test\"]\nroute = [\"mx.x.test\", \"mx.x.test:port\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("domain.x.test.route[1]:") && e.contains("mx.x.test:port"),
            "{e}"
        );
    }

    #[test]
    fn tls_policy() {
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
    }

    #[test]
    fn a_bad_domain_rate_is_named() {
        let e = parse("[domain.default]\nrate = \"0/s\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("domain.default.rate:") && e.contains("0/s"),
            "{e}"
        );
    }
}
