//! Failed AUTH attempts, counted per client IP and per user name, shared by every shard.
//!
//! An attempt is counted *before* its password is checked ([`Failures::begin`]), so two
//! connections racing from one address cannot both slip past the limit; a success takes
//! back only its own count ([`Failures::succeeded`]). Once a key holds `max_failures`
//! counts, further attempts are refused without a check until `window` has passed since
//! its last counted failure.
//!
//! A success does not clear anyone else's failures. Dovecot's `auth_penalty` and Postfix's
//! anvil both key on the client address, and a NAT or a shared relay puts an attacker and
//! a real user behind one address: were a real login to reset the address, the attacker
//! would get a fresh budget each time it happened. The price is that a user hammered from
//! many addresses is locked out for the window too (the per-user key); that is the
//! trade-off Dovecot documents as well, and the window is short by default.
//!
//! The maps are bounded ([`MAX_KEYS`] each): when full, expired entries go first, then the
//! one with the oldest failure, so a spray of addresses cannot grow memory without end.
//! There is no clock inside: callers pass `now`.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::client_key;

/// Entries kept per map (addresses, users) before the oldest are evicted.
pub const MAX_KEYS: usize = 65_536;

/// The failure counts. A `Mutex` is fine here: it is taken twice per AUTH, never per
/// message.
#[derive(Debug)]
pub struct Failures {
    max: u32,
    window: Duration,
    inner: Mutex<Maps>,
}

#[derive(Debug, Default)]
struct Maps {
    ips: HashMap<IpAddr, Entry>,
    users: HashMap<String, Entry>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    count: u32,
    last: Instant,
}

/// A counted attempt: hand it back to [`Failures::succeeded`] if the password was right.
#[derive(Debug)]
#[must_use = "an attempt that succeeds must be handed back"]
pub struct Attempt {
    ip: IpAddr,
    user: String,
}

impl Failures {
    /// Counts with a limit of `max` failures per key within `window`.
    pub fn new(max: u32, window: Duration) -> Failures {
        Failures {
            max,
            window,
            inner: Mutex::new(Maps::default()),
        }
    }

    /// Counts an attempt by `user` from `ip`, or returns `None` if either is already at the
    /// limit (the attempt must then be refused unchecked).
    pub fn begin(&self, ip: IpAddr, user: &str, now: Instant) -> Option<Attempt> {
        let ip = client_key(ip);
        let mut maps = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Maps { ips, users } = &mut *maps;
        if self.count(ips, &ip, now) >= self.max || self.count(users, user, now) >= self.max {
            return None;
        }
        self.bump(ips, ip, now);
        self.bump(users, user.to_owned(), now);
        Some(Attempt {
            ip,
            user: user.to_owned(),
        })
    }

    /// The password was right: the attempt no longer counts as a failure.
    pub fn succeeded(&self, attempt: Attempt) {
        let mut maps = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = maps.ips.get_mut(&attempt.ip) {
            e.count = e.count.saturating_sub(1);
        }
        if let Some(e) = maps.users.get_mut(&attempt.user) {
            e.count = e.count.saturating_sub(1);
        }
    }

    /// Current count for `ip` (for tests and logs).
    pub fn ip_failures(&self, ip: IpAddr, now: Instant) -> u32 {
        let ip = client_key(ip);
        let maps = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        maps.ips
            .get(&ip)
            .filter(|e| now.duration_since(e.last) < self.window)
            .map_or(0, |e| e.count)
    }

    fn count<K, Q>(&self, map: &HashMap<K, Entry>, key: &Q, now: Instant) -> u32
    where
        K: std::borrow::Borrow<Q> + Hash + Eq,
        Q: Hash + Eq + ?Sized,
    {
        map.get(key)
            .filter(|e| now.duration_since(e.last) < self.window)
            .map_or(0, |e| e.count)
    }

    fn bump<K: Hash + Eq + Clone>(&self, map: &mut HashMap<K, Entry>, key: K, now: Instant) {
        if !map.contains_key(&key) && map.len() >= MAX_KEYS {
            let window = self.window;
            map.retain(|_, e| now.duration_since(e.last) < window);
            if map.len() >= MAX_KEYS {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, e)| e.last)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    map.remove(&k);
                }
            }
        }
        let e = map.entry(key).or_insert(Entry {
            count: 0,
            last: now,
        });
        if now.duration_since(e.last) >= self.window {
            e.count = 0;
        }
        e.count += 1;
        e.last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn the_attempt_past_the_limit_is_refused_per_ip_and_per_user() {
        let f = Failures::new(3, Duration::from_secs(60));
        let t = Instant::now();
        for _ in 0..3 {
            let _ = f.begin(A, "alice", t).expect("under the limit");
        }
        assert!(f.begin(A, "bob", t).is_none(), "the address is blocked");
        assert!(f.begin(B, "alice", t).is_none(), "the user is blocked");
        let ok = f.begin(B, "bob", t).expect("another address and user");
        f.succeeded(ok);
        assert_eq!(f.ip_failures(B, t), 0);
    }

    #[test]
    fn success_takes_back_only_its_own_count() {
        let f = Failures::new(3, Duration::from_secs(60));
        let t = Instant::now();
        let _ = f.begin(A, "mallory", t).unwrap();
        let _ = f.begin(A, "mallory", t).unwrap();
        let ok = f.begin(A, "alice", t).unwrap();
        f.succeeded(ok);
        assert_eq!(
            f.ip_failures(A, t),
            2,
            "alice's login did not clear the address"
        );
    }

    #[test]
    fn ipv6_is_counted_per_64() {
        let f = Failures::new(1, Duration::from_secs(60));
        let t = Instant::now();
        let _ = f.begin("2001:db8::1".parse().unwrap(), "a", t).unwrap();
        assert!(f.begin("2001:db8::2".parse().unwrap(), "b", t).is_none());
        assert!(f
            .begin("2001:db8:0:1::1".parse().unwrap(), "c", t)
            .is_some());
    }

    #[test]
    fn counts_are_forgotten_after_the_window() {
        let f = Failures::new(2, Duration::from_secs(60));
        let t = Instant::now();
        let _ = f.begin(A, "u", t).unwrap();
        let _ = f.begin(A, "u", t).unwrap();
        assert!(f.begin(A, "u", t + Duration::from_secs(59)).is_none());
        assert!(f.begin(A, "u", t + Duration::from_secs(60)).is_some());
    }

    #[test]
    fn maps_stay_bounded() {
        let f = Failures::new(5, Duration::from_secs(3600));
        let t = Instant::now();
        for i in 0..(MAX_KEYS as u32 + 10) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = f.begin(ip, &format!("u{i}"), t + Duration::from_millis(i.into()));
        }
        let maps = f.inner.lock().unwrap();
        assert_eq!(maps.ips.len(), MAX_KEYS);
        assert!(
            !maps.ips.contains_key(&IpAddr::V4(0x0a00_0000.into())),
            "the oldest went first"
        );
    }
}
