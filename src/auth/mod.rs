//! SMTP AUTH's server-side checks: the users file ([`credentials`]) and the failure counts
//! that stop password guessing ([`failures`]), behind one [`Authenticator`] every shard
//! shares. The SASL exchange itself is sans-io, in `session::auth`; the session never
//! touches the users file or the counts: it asks its driver through
//! `Event::Authenticate` and gets a [`Verdict`] back.

pub mod credentials;
pub mod failures;

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::config::AuthConfig;
use credentials::{Credentials, CredentialsError};
use failures::Failures;

/// What an AUTH attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The password is right.
    Accepted,
    /// Wrong password or unknown user.
    Rejected,
    /// The client address or the user is past `max_failures`: refused unchecked.
    Blocked,
}

/// The users and the failure counts, shared by all shards.
#[derive(Debug)]
pub struct Authenticator {
    users_file: PathBuf,
    /// Swapped whole by [`Authenticator::reload`]; readers clone the `Arc` and let go.
    credentials: RwLock<Arc<Credentials>>,
    failures: Failures,
    /// How long a blocked attempt waits before it is refused.
    pub failure_delay: Duration,
    /// MAIL FROM must be the login name.
    pub sender_match: bool,
}

impl Authenticator {
    /// The authenticator of `[auth]`, with the users already read from its users file
    /// (`runtime::files::Loaded::users`); [`Authenticator::reload`] reads that file again.
    pub fn new(config: &AuthConfig, credentials: Credentials) -> Authenticator {
        Authenticator {
            users_file: config.users_file.clone(),
            credentials: RwLock::new(Arc::new(credentials)),
            failures: Failures::new(config.max_failures, config.failure_window),
            failure_delay: config.failure_delay,
            sender_match: config.sender_match,
        }
    }

    /// Reads the users file again and swaps it in; on error the old users stay. Returns
    /// the number of users. Sessions checking a password keep the set they started with.
    pub fn reload(&self) -> Result<usize, CredentialsError> {
        let fresh = Arc::new(Credentials::load(&self.users_file)?);
        let n = fresh.len();
        *self.credentials.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(n)
    }

    /// The current users.
    pub fn credentials(&self) -> Arc<Credentials> {
        self.credentials
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The failure counts.
    pub fn failures(&self) -> &Failures {
        &self.failures
    }

    /// Checks `user`'s `password` from a client at `ip`, unless the address or the user is
    /// past the limit. `verify` runs the (slow) argon2 check and must not block the
    /// caller's executor: the driver hands it to a blocking thread.
    pub async fn authenticate<F, Fut>(&self, ip: IpAddr, user: &str, verify: F) -> Verdict
    where
        F: FnOnce(Arc<Credentials>) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let Some(attempt) = self.failures.begin(ip, user, Instant::now()) else {
            return Verdict::Blocked;
        };
        if verify(self.credentials()).await {
            self.failures.succeeded(attempt);
            Verdict::Accepted
        } else {
            Verdict::Rejected
        }
    }
}

/// Whether `ip` is in one of `nets`, an IPv4-mapped IPv6 address counting as its IPv4
/// address (a dual-stack listener reports IPv4 clients that way).
pub fn in_networks(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    nets.iter().any(|n| n.contains(&ip))
}

/// The address a client is counted by, for connection limits and failed logins alike:
/// IPv4, or the /64 of IPv6 (one subscriber's whole prefix).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}
