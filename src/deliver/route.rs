//! The next hops for a destination domain: a configured static route (`domain.NAME.route`
//! or `domain.default.route`), else the domain's MX hosts from DNS (RFC 5321 §5.1).

use std::net::{IpAddr, SocketAddr};

use crate::config::{DomainPolicy, RouteHost};
use crate::deliver::dns::Resolver;
use crate::smtp::reply::{Enhanced, Reply};

/// One host to try, with its addresses, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// The host name (or IP literal) as configured or found in DNS.
    pub name: String,
    /// Its addresses, in the order to try.
    pub addrs: Vec<SocketAddr>,
}

/// Where mail for `domain` goes, in order of preference, looked up with `resolver`;
/// `port` is `delivery.port`. An error is the reply to record for the recipients:
/// permanent (bounce) for NXDOMAIN and null MX, else temporary.
pub async fn next_hops(
    resolver: &Resolver,
    port: u16,
    domain: &str,
    policy: &DomainPolicy,
) -> Result<Vec<NextHop>, Reply> {
    if let Some(route) = &policy.route {
        let mut hops = Vec::new();
        for hop in route {
            let addrs = match &hop.host {
                RouteHost::Ip(ip) => vec![*ip],
                RouteHost::Name(host) => match resolver.host_addresses(host).await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(%host, error = %e, "cannot resolve route host");
                        continue;
                    }
                },
            };
            hops.push(NextHop {
                name: hop.host.to_string(),
                addrs: addrs
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, hop.port))
                    .collect(),
            });
        }
        if hops.is_empty() {
            return Err(Reply::new(
                451,
                Enhanced(4, 4, 3),
                format!("no usable route host for {domain}"),
            ));
        }
        return Ok(hops);
    }
    if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        let ip = literal.strip_prefix("IPv6:").unwrap_or(literal);
        return match ip.parse::<IpAddr>() {
            Ok(ip) => Ok(vec![NextHop {
                name: domain.to_owned(),
                addrs: vec![SocketAddr::new(ip, port)],
            }]),
            Err(_) => Err(Reply::new(
                550,
                Enhanced(5, 1, 2),
                format!("bad address literal {domain}"),
            )),
        };
    }
    match resolver.mail_hosts(domain).await {
        Ok(hosts) => Ok(hosts
            .into_iter()
            .map(|h| NextHop {
                name: h.name,
                addrs: h
                    .addrs
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect(),
            })
            .collect()),
        Err(e) => Err(e.reply()),
    }
}
