//! `[dns]`: the resolvers delivery asks, as socket addresses once loaded.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use super::{parse_text, ConfigError};

/// `[dns]` (used by delivery), parsed.
#[derive(Clone, Debug, Default)]
pub struct DnsConfig {
    /// The resolvers; empty means /etc/resolv.conf.
    pub nameservers: Vec<SocketAddr>,
}

/// `[dns]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct DnsToml {
    /// `ip` or `ip:port` (`[v6]:port`) of resolvers.
    nameservers: Vec<String>,
}

impl DnsToml {
    /// Reads every nameserver; an error names the entry.
    pub(super) fn parse(self) -> Result<DnsConfig, ConfigError> {
        let nameservers = self
            .nameservers
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let key = format!("dns.nameservers[{i}]");
                parse_text(ns, parse_nameserver, key, " is not ip or ip:port")
            })
            .collect::<Result<_, _>>()?;
        Ok(DnsConfig { nameservers })
    }
}

/// A nameserver `ip` or `ip:port` (port 53 by default).
fn parse_nameserver(ns: &str) -> Option<SocketAddr> {
    if let Ok(addr) = ns.parse::<SocketAddr>() {
        return Some(addr);
    }
    ns.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
}

#[cfg(test)]
mod tests {
    use crate::config::check as parse;

    #[test]
    fn nameservers_are_addresses_once_loaded() {
        let c = parse("[dns]\nnameservers = [\"192.0.2.1\", \"[2001:db8::1]:5353\"]\n").unwrap();
        assert_eq!(
            c.dns.nameservers,
            vec![
                "192.0.2.1:53".parse().unwrap(),
                "[2001:db8::1]:5353".parse().unwrap()
            ]
        );
        let e = parse("[dns]\nnameservers = [\"192.0.2.1\", \"ns.example\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("dns.nameservers[1]:") && e.contains("ns.example"),
            "{e}"
        );
    }
}
