//! `[relay]`: who may send mail through pigeon to any domain, and which domains it takes
//! mail for from anyone.

use ipnet::IpNet;
use serde::Deserialize;

use super::{invalid, ConfigError};

/// `[relay]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Clients in these networks may send to any domain.
    pub networks: Vec<IpNet>,
    /// Mail for these domains is accepted from anyone (lower case once loaded).
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

impl RelayConfig {
    /// Lower-cases the domains (sessions compare lower-cased recipient domains) and refuses
    /// any that is not a domain.
    pub(super) fn parse(mut self) -> Result<RelayConfig, ConfigError> {
        for (i, d) in self.domains.iter_mut().enumerate() {
            *d = d.to_ascii_lowercase();
            if !crate::smtp::address::is_domain(d.as_bytes()) {
                return Err(invalid(
                    format!("relay.domains[{i}]"),
                    format!("{d:?} is not a domain"),
                ));
            }
        }
        Ok(self)
    }
}
