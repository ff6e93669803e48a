//! Connection admission, before any session starts: connections open at once in total and
//! per client address, and new connections per client address per time unit. Every shard
//! accepts on every listener, so the counts are global: one atomic for the total and a
//! small sharded map for the clients. A connection is counted from [`Admission::admit`]
//! until its [`Admitted`] guard drops, however the session ends.
//!
//! A client is an IPv4 address, or an IPv6 /64 (what one host or one customer usually
//! gets, so one attacker cannot pick a fresh address per connection); IPv4-mapped IPv6 is
//! IPv4. Clients in the exempt networks (by default `relay.networks`, like Postfix's
//! `smtpd_client_event_limit_exceptions = $mynetworks`) have no per-client limit: the
//! total applies to everyone.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::auth::{client_key, in_networks};

use crate::smtp::reply::{Enhanced, Reply};

/// Map shards: connections from different clients rarely wait for one another's lock.
const MAP_SHARDS: usize = 16;

/// Below this many entries a map shard is never swept.
const MIN_SWEEP: usize = 256;

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.max_connections` are open.
    Total,
    /// `limits.max_connections_per_ip` are open from this client.
    PerClient,
    /// The client opened connections faster than `limits.connection_rate_per_ip`.
    Rate,
}

impl Refusal {
    /// The reply the client gets before the connection closes (421 4.7.0, RFC 5321
    /// §3.8: the service is not available to it now, it should come back later).
    pub fn reply(self, hostname: &str) -> Reply {
        let text = match self {
            Refusal::Total => "Too many connections, try again later",
            Refusal::PerClient => "Too many connections from your address",
            Refusal::Rate => "Connection rate limit exceeded for your address",
        };
        Reply::new(421, Enhanced(4, 7, 0), format!("{hostname} {text}"))
    }
}

/// What is known about one client.
#[derive(Debug, Default)]
struct Client {
    open: u32,
    /// The GCRA's theoretical arrival time of the next connection (`None`: no debt).
    next: Option<Instant>,
}

#[derive(Debug, Default)]
struct MapShard {
    clients: HashMap<IpAddr, Client>,
    /// The size at which the next sweep of idle entries runs.
    sweep_at: usize,
}

/// The admission limits and counts, shared by all shards.
#[derive(Debug)]
pub struct Admission {
    max_total: u32,
    max_per_client: u32,
    /// Burst and spacing of new connections per client: `count` at once, then one per
    /// `per / count` (GCRA, so a client that keeps to the rate is never refused).
    rate: Option<(u32, Duration)>,
    exempt: Vec<IpNet>,
    total: AtomicU32,
    shards: Vec<Mutex<MapShard>>,
}

impl Admission {
    /// Limits: `max_total` connections, `max_per_client` per client, `rate` new
    /// connections per client per time unit; none of the per-client ones for `exempt`.
    pub fn new(
        max_total: u32,
        max_per_client: u32,
        rate: Option<(u32, Duration)>,
        exempt: Vec<IpNet>,
    ) -> Admission {
        Admission {
            max_total,
            max_per_client,
            rate,
            exempt,
            total: AtomicU32::new(0),
            shards: (0..MAP_SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// Counts a new connection from `ip`, or says why it may not have one.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Admitted, Refusal> {
        let total = self.total.fetch_add(1, Ordering::AcqRel);
        let mut admitted = Admitted {
            admission: self.clone(),
            client: None,
        };
        if total >= self.max_total {
            return Err(Refusal::Total);
        }
        if self.is_exempt(ip) {
            return Ok(admitted);
        }
        let key = client_key(ip);
        let mut shard = self.shard(&key);
        if shard.clients.len() >= shard.sweep_at.max(MIN_SWEEP) {
            shard.clients.retain(|_, c| !idle(c, now));
            shard.sweep_at = 2 * shard.clients.len();
        }
        let client = shard.clients.entry(key).or_default();
        let result = if client.open >= self.max_per_client {
            Err(Refusal::PerClient)
        } else if let Some((count, per)) = self.rate {
            let interval = per / count.max(1);
            // A burst of `count` fits in one `per`: the next slot may lie that far ahead.
            let tolerance = per.saturating_sub(interval);
            let next = client.next.map_or(now, |t| t.max(now));
            if next > now + tolerance {
                Err(Refusal::Rate)
            } else {
                client.next = Some(next + interval);
                Ok(())
            }
        } else {
            Ok(())
        };
        match result {
            Ok(()) => {
                client.open += 1;
                admitted.client = Some(key);
                Ok(admitted)
            }
            Err(refusal) => {
                if idle(client, now) {
                    shard.clients.remove(&key);
                }
                Err(refusal)
            }
        }
    }

    /// Whether per-client limits (here and per session) spare `ip`.
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        // The address itself, not its /64: an exempt network may be a single IPv6 host.
        in_networks(&self.exempt, ip)
    }

    /// Connections open now, all clients together.
    pub fn open(&self) -> u32 {
        self.total.load(Ordering::Acquire)
    }

    fn shard(&self, key: &IpAddr) -> std::sync::MutexGuard<'_, MapShard> {
        let h = match key {
            IpAddr::V4(v4) => u32::from(*v4) as usize,
            IpAddr::V6(v6) => (u128::from(*v6) >> 64) as usize,
        };
        let i = (h ^ (h >> 8) ^ (h >> 16)) % MAP_SHARDS;
        // A panic while holding the lock leaves counts that are still consistent.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release(&self, key: Option<IpAddr>) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        let Some(key) = key else { return };
        let mut shard = self.shard(&key);
        if let Some(client) = shard.clients.get_mut(&key) {
            client.open = client.open.saturating_sub(1);
            if idle(client, Instant::now()) {
                shard.clients.remove(&key);
            }
        }
    }
}

/// An entry that holds nothing: no open connection, no rate debt.
fn idle(c: &Client, now: Instant) -> bool {
    c.open == 0 && c.next.is_none_or(|t| t <= now)
}

/// One admitted connection: dropping it gives the connection back to the counts.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    client: Option<IpAddr>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.release(self.client.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn admission(total: u32, per: u32, rate: Option<(u32, Duration)>) -> Arc<Admission> {
        let exempt = vec!["10.0.0.0/8".parse().unwrap()];
        Arc::new(Admission::new(total, per, rate, exempt))
    }

    #[test]
    fn per_client_and_total_counts_are_released_on_drop() {
        let a = admission(4, 2, None);
        let now = Instant::now();
        let x1 = a.admit(ip("192.0.2.1"), now).unwrap();
        let _x2 = a.admit(ip("192.0.2.1"), now).unwrap();
        assert_eq!(
            a.admit(ip("192.0.2.1"), now).unwrap_err(),
            Refusal::PerClient
        );
        // Mapped IPv6 is the same client.
        assert_eq!(
            a.admit(ip("::ffff:192.0.2.1"), now).unwrap_err(),
            Refusal::PerClient
        );
        drop(x1);
        let _x3 = a.admit(ip("::ffff:192.0.2.1"), now).unwrap();
        let _y = a.admit(ip("192.0.2.2"), now).unwrap();
        // Exempt clients are not counted per client but are by the total.
        let _z = a.admit(ip("10.1.1.1"), now).unwrap();
        assert_eq!(a.admit(ip("10.1.1.1"), now).unwrap_err(), Refusal::Total);
        assert_eq!(a.open(), 4);
    }

    #[test]
    fn ipv6_is_counted_per_64() {
        let a = admission(10, 1, None);
        let now = Instant::now();
        let _x = a.admit(ip("2001:db8:1:2::1"), now).unwrap();
        assert_eq!(
            a.admit(ip("2001:db8:1:2:ffff::9"), now).unwrap_err(),
            Refusal::PerClient
        );
        assert!(a.admit(ip("2001:db8:1:3::1"), now).is_ok());
    }

    #[test]
    fn rate_allows_a_burst_then_spaces() {
        let a = admission(100, 100, Some((3, Duration::from_secs(3))));
        let t0 = Instant::now();
        for _ in 0..3 {
            drop(a.admit(ip("192.0.2.7"), t0).unwrap());
        }
        assert_eq!(a.admit(ip("192.0.2.7"), t0).unwrap_err(), Refusal::Rate);
        // Another client has its own budget; exempt ones have none.
        assert!(a.admit(ip("192.0.2.8"), t0).is_ok());
        for _ in 0..10 {
            drop(a.admit(ip("10.0.0.1"), t0).unwrap());
        }
        assert_eq!(
            a.admit(ip("192.0.2.7"), t0 + Duration::from_millis(900))
                .unwrap_err(),
            Refusal::Rate
        );
        drop(
            a.admit(ip("192.0.2.7"), t0 + Duration::from_secs(1))
                .unwrap(),
        );
    }

    #[test]
    fn idle_entries_are_swept() {
        let a = admission(100_000, 5, Some((1, Duration::from_millis(10))));
        let t0 = Instant::now();
        for i in 0..5000u32 {
            let addr = IpAddr::V4((0xC000_0000 + i).into());
            drop(a.admit(addr, t0).unwrap());
        }
        // Every entry still has rate debt at t0; once that is paid, sweeps drop them.
        let later = t0 + Duration::from_secs(1);
        for i in 0..5000u32 {
            let addr = IpAddr::V4((0xD000_0000 + i).into());
            drop(a.admit(addr, later).unwrap());
        }
        let held: usize = a
            .shards
            .iter()
            .map(|s| s.lock().unwrap().clients.len())
            .sum();
        assert!(held < 8000, "{held} entries kept for 10000 idle clients");
        assert_eq!(a.open(), 0);
    }
}
