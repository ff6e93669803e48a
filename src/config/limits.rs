//! `[limits]`: what one session, one message and one client may use, and how many
//! connections the server takes at once.

use ipnet::IpNet;
use serde::Deserialize;

use super::relay::RelayConfig;
use super::units::{ByteSize, Rate};
use super::{invalid, parse_text, ConfigError};

/// `[limits]`, parsed.
#[derive(Clone, Debug)]
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
    /// New connections from one client address per time unit; `None` (`"none"`) for no
    /// limit.
    pub connection_rate_per_ip: Option<Rate>,
    /// Messages in one session; the next MAIL gets 421 4.7.0 and the session closes.
    pub max_messages_per_connection: u32,
    /// Accepted recipients in one session, over all its messages; past them RCPT gets
    /// 452 4.5.3 and the next MAIL 421 4.7.0.
    pub max_recipients_per_connection: u32,
    /// Clients to which the per-client limits do not apply; default: `relay.networks`.
    pub exempt_networks: Option<Vec<IpNet>>,
}

impl LimitsConfig {
    /// The networks exempt from per-client limits: `exempt_networks`, else `relay`.
    pub fn exempt<'a>(&'a self, relay: &'a RelayConfig) -> &'a [IpNet] {
        self.exempt_networks.as_deref().unwrap_or(&relay.networks)
    }
}

/// `[limits]` as written: [`LimitsConfig`] with the rate still text.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct LimitsToml {
    max_message_size: ByteSize,
    max_recipients: usize,
    max_errors: u32,
    max_connections: u32,
    max_connections_per_ip: u32,
    /// `"60/m"` or `"none"`.
    connection_rate_per_ip: String,
    max_messages_per_connection: u32,
    max_recipients_per_connection: u32,
    exempt_networks: Option<Vec<IpNet>>,
}

impl Default for LimitsToml {
    fn default() -> LimitsToml {
        LimitsToml {
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

impl LimitsToml {
    /// Checks every limit and reads the rate.
    pub(super) fn parse(self) -> Result<LimitsConfig, ConfigError> {
        let size = self.max_message_size.0;
        if !(1024..=1 << 30).contains(&size) {
            return Err(invalid("limits.max_message_size", "between 1KiB and 1GiB"));
        }
        if self.max_recipients == 0 {
            return Err(invalid("limits.max_recipients", "at least 1"));
        }
        if self.max_errors == 0 {
            return Err(invalid("limits.max_errors", "at least 1"));
        }
        for (key, v) in [
            ("limits.max_connections", self.max_connections),
            ("limits.max_connections_per_ip", self.max_connections_per_ip),
            (
                "limits.max_messages_per_connection",
                self.max_messages_per_connection,
            ),
            (
                "limits.max_recipients_per_connection",
                self.max_recipients_per_connection,
            ),
        ] {
            if v == 0 {
                return Err(invalid(key, "at least 1"));
            }
        }
        let connection_rate_per_ip = match self.connection_rate_per_ip.trim() {
            "none" => None,
            rate => Some(parse_text(
                rate,
                Rate::parse,
                "limits.connection_rate_per_ip",
                " is not a rate like \"60/m\" or \"none\"",
            )?),
        };
        Ok(LimitsConfig {
            max_message_size: self.max_message_size,
            max_recipients: self.max_recipients,
            max_errors: self.max_errors,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            connection_rate_per_ip,
            max_messages_per_connection: self.max_messages_per_connection,
            max_recipients_per_connection: self.max_recipients_per_connection,
            exempt_networks: self.exempt_networks,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::check as parse;

    #[test]
    fn abuse_limits_validate() {
        let c = parse("").unwrap();
        assert_eq!(
            (c.limits.max_connections, c.limits.max_connections_per_ip),
            (1000, 50)
        );
        assert_eq!(c.limits.connection_rate_per_ip, None);
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
            c.limits.connection_rate_per_ip,
            Some(Rate {
                count: 60,
                per: Duration::from_secs(60)
            })
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

    #[test]
    fn a_rate_of_zero_is_refused_naming_the_key() {
        let e = parse("[limits]\nconnection_rate_per_ip = \"0/s\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("limits.connection_rate_per_ip:") && e.contains("0/s"),
            "{e}"
        );
    }
}
