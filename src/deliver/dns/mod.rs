//! The delivery stub resolver: recipient domain in, ordered mail hosts with addresses out.
//!
//! Each shard owns one [`Resolver`] (not `Send`, no locks) with its own TTL cache. It asks
//! the configured recursive nameservers, never the authoritative ones: recursion, DNSSEC
//! validation and CNAME chasing are the recursive server's job, so this module stays a stub
//! (RFC 1123 §6.1.3.1).
//!
//! - `resolver` ([`Resolver`]) owns the policy: MX lookup, null MX (RFC 7505), implicit MX
//!   (RFC 5321 §5.1), preference order with equal preferences shuffled, A and AAAA of each
//!   host, the cache.
//! - `transport` owns the wire: one question as a hickory-proto [`Message`] over glommio UDP,
//!   again over TCP when the answer comes back truncated (RFC 7766 §5), each nameserver in
//!   turn.
//!
//! Outputs are a closed set: a list of [`MailHost`]s, or a [`DnsError`] that says whether the
//! message should bounce or wait ([`DnsError::is_permanent`]) and with which enhanced status
//! code ([`DnsError::enhanced`]).
//!
//! [`Message`]: hickory_proto::op::Message

use std::net::IpAddr;

use thiserror::Error;

use crate::smtp::reply::{Enhanced, Reply};

mod resolver;
mod transport;

pub use resolver::{Resolver, Stats};

/// One host to try for a domain's mail, with the addresses it resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailHost {
    /// The host name in ASCII (A-labels), without the trailing dot: the MX exchange, or the
    /// domain itself for an implicit MX. The SMTP client uses it for TLS server names.
    pub name: String,
    /// The MX preference; 0 for an implicit MX. Lower is tried first.
    pub preference: u16,
    /// IPv4 addresses first, then IPv6, each in the nameserver's order, without duplicates.
    /// Never empty: hosts without an address are left out of the list.
    pub addrs: Vec<IpAddr>,
}

/// Why a domain has no host to deliver to.
///
/// Permanent errors bounce the recipients; [`DnsError::Temporary`] defers them to the next
/// retry.
#[derive(Debug, Error)]
pub enum DnsError {
    /// The domain publishes a null MX (`0 .`, RFC 7505): it accepts no mail. Permanent.
    #[error("the domain accepts no mail (null MX, RFC 7505)")]
    NullMx,
    /// The domain does not exist (NXDOMAIN for its MX query), or the string is not a valid
    /// domain name and so cannot exist. Permanent.
    #[error("the domain does not exist")]
    NxDomain,
    /// The domain exists, but no mail host has an address: every A and AAAA lookup of every
    /// host got a definite "no such name" or "no such record". Permanent, because the
    /// nameservers answered; when any of those lookups failed instead, the result is
    /// [`DnsError::Temporary`] (as Postfix does).
    #[error("no mail host of the domain has an address")]
    NoAddresses,
    /// No definite answer: SERVFAIL or REFUSED from every nameserver, timeouts, network
    /// errors, a truncated answer whose TCP retry failed. Retry later.
    #[error("DNS lookup failed: {0}")]
    Temporary(String),
}

impl DnsError {
    /// True when retrying cannot help: bounce instead of deferring.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, DnsError::Temporary(_))
    }

    /// The enhanced status code for the DSN (RFC 3463, RFC 7505 §4.2).
    pub fn enhanced(&self) -> Enhanced {
        match self {
            // RFC 7505 §4.2: "No mail service".
            DnsError::NullMx => Enhanced(5, 1, 10),
            // RFC 3463 X.1.2: "Bad destination system address".
            DnsError::NxDomain => Enhanced(5, 1, 2),
            // RFC 3463 X.4.4: "Unable to route": the domain exists but there is no next hop.
            // Postfix reports the same case with 5.4.4.
            DnsError::NoAddresses => Enhanced(5, 4, 4),
            // RFC 3463 X.4.3: "Directory server failure".
            DnsError::Temporary(_) => Enhanced(4, 4, 3),
        }
    }

    /// The reply recorded in the DSN's diagnostic for this failure. The codes follow
    /// [`DnsError::enhanced`]; 556 for a null MX is the code RFC 7505 §4.2 names.
    pub fn reply(&self) -> Reply {
        let code = match self {
            DnsError::NullMx => 556,
            DnsError::NxDomain | DnsError::NoAddresses => 550,
            DnsError::Temporary(_) => 451,
        };
        Reply::new(code, self.enhanced(), self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanence_and_codes() {
        assert!(DnsError::NullMx.is_permanent());
        assert!(DnsError::NxDomain.is_permanent());
        assert!(DnsError::NoAddresses.is_permanent());
        assert!(!DnsError::Temporary("timeout".into()).is_permanent());
        assert_eq!(DnsError::NullMx.enhanced().to_string(), "5.1.10");
        assert_eq!(DnsError::NxDomain.enhanced().to_string(), "5.1.2");
        assert_eq!(DnsError::NoAddresses.enhanced().to_string(), "5.4.4");
        assert_eq!(
            DnsError::Temporary("x".into()).reply().to_wire_string(),
            "451 4.4.3 DNS lookup failed: x\r\n"
        );
        assert_eq!(DnsError::NullMx.reply().code, 556);
    }
}
