//! What every shard shares: the configuration, the ready queues, the segment reference
//! counts, the rate limiters and the delivery log. All of it is lock-free or immutable,
//! so sharing it costs atomics, never a lock, with two exceptions off the per-message
//! path: connection admission (a lock per client-map shard, once per connection) and the
//! TLS configuration (read once per handshake after a reload, written on SIGHUP).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crossbeam_skiplist::SkipMap;

use crate::accept::limits::Admission;
use crate::accept::tls::ServerTlsError;
use crate::auth::Authenticator;
use crate::config::{Config, DomainPolicy, Loaded};
use crate::dkim::{Canonicalization, Signer};
use crate::outcome::log::DeliveryLog;
use crate::queue::limits::RateLimit;
use crate::queue::message::{jobs_for, Job, QueuedMessage};
use crate::queue::ready::ReadyQueues;
use crate::runtime::memory::long_lived;
use crate::spool::segments::Segments;

/// State shared by all shards.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Arc<Config>,
    /// Per-domain ready queues.
    pub ready: ReadyQueues,
    /// Which segments still hold live records.
    pub segments: Arc<Segments>,
    /// The delivery log.
    pub log: DeliveryLog,
    /// DKIM signers, from `[[dkim]]`.
    pub dkim: Vec<Signer>,
    /// Connections open, in total and per client, and the limits on them.
    pub admission: Arc<Admission>,
    /// The TLS server configuration from `[tls]`, replaced by [`Shared::reload`].
    tls: RwLock<Option<Arc<rustls::ServerConfig>>>,
    /// Bumped on every successful reload, so shards know to rebuild their acceptors.
    tls_generation: AtomicU64,
    /// SMTP AUTH users and failure counts, from `[auth]`.
    pub auth: Option<Authenticator>,
    /// The roots of `delivery.ca_file`, for each shard's delivery TLS (none: the system's).
    pub ca_roots: Option<rustls::RootCertStore>,
    limiters: SkipMap<String, Arc<RateLimit>>,
    /// Each domain's resolved policy, computed once: it is asked for per message (the
    /// transaction size) and per scheduler tick.
    policies: SkipMap<String, Arc<DomainPolicy>>,
}

impl Shared {
    /// Shared state for a run with `config` and the files it names, loaded.
    pub fn new(
        config: Arc<Config>,
        segments: Arc<Segments>,
        log: DeliveryLog,
        files: Loaded,
    ) -> Shared {
        let limits = &config.limits;
        let admission = Admission::new(
            limits.max_connections,
            limits.max_connections_per_ip,
            limits.connection_rate_per_ip.map(|r| (r.count, r.per)),
            limits.exempt(&config.relay).to_vec(),
        );
        let shards = config.shard_count();
        let auth = (config.auth.as_ref().zip(files.users))
            .map(|(auth, users)| Authenticator::new(auth, users));
        Shared {
            admission: Arc::new(admission),
            // A first configuration is generation 1, so shards build their acceptor.
            tls_generation: AtomicU64::new(u64::from(files.tls.is_some())),
            tls: RwLock::new(files.tls),
            config,
            ready: ReadyQueues::new(shards),
            segments,
            log,
            dkim: files.dkim,
            auth,
            ca_roots: files.ca_roots,
            limiters: SkipMap::new(),
            policies: SkipMap::new(),
        }
    }

    /// Loads the `[tls]` certificate and key (if configured) again, as at start
    /// (`config::Loaded`), for handshakes that start from now on; sessions already in TLS
    /// keep the configuration they began with. On error the previous configuration stays.
    pub fn load_tls(&self) -> Result<(), ServerTlsError> {
        let Some(tls) = &self.config.tls else {
            return Ok(());
        };
        let fresh = crate::accept::tls::server_config(&tls.cert, &tls.key)?;
        *self.tls.write().unwrap_or_else(|e| e.into_inner()) = Some(fresh);
        self.tls_generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// What SIGHUP does: reads again the files named in the configuration (the `[tls]`
    /// certificate and key, the `[auth]` users file). A file that fails to load is logged
    /// and the running version of it kept, so a bad edit never takes the server down.
    pub fn reload(&self) {
        let started = Instant::now();
        match self.load_tls() {
            Ok(()) if self.config.tls.is_some() => tracing::info!(
                generation = self.tls_generation(),
                ms = started.elapsed().as_millis() as u64,
                "SIGHUP: TLS certificate and key reloaded"
            ),
            Ok(()) => {}
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: TLS reload failed; keeping the old certificate")
            }
        }
        if let Some(auth) = &self.auth {
            match auth.reload() {
                Ok(users) => tracing::info!(users, "SIGHUP: users file reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: users file reload failed; keeping the old users")
                }
            }
        }
    }

    /// The TLS configuration's generation: it changes whenever [`Shared::reload`] loads
    /// a new one.
    pub fn tls_generation(&self) -> u64 {
        self.tls_generation.load(Ordering::Acquire)
    }

    /// The current TLS server configuration, if `[tls]` is set.
    pub fn tls_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The signers for mail from `from_domain`: those of the closest configured domain
    /// at or above it (`news.example.com` is signed by an `example.com` key unless it has
    /// keys of its own). Two keys for that domain sign twice.
    pub fn signers_for(&self, from_domain: &str) -> Vec<&Signer> {
        let covers = |d: &str| {
            from_domain == d
                || (from_domain.len() > d.len()
                    && from_domain.ends_with(d)
                    && from_domain.as_bytes()[from_domain.len() - d.len() - 1] == b'.')
        };
        let Some(best) = self
            .dkim
            .iter()
            .filter(|s| covers(&s.domain))
            .map(|s| s.domain.len())
            .max()
        else {
            return Vec::new();
        };
        self.dkim
            .iter()
            .filter(|s| s.domain.len() == best && covers(&s.domain))
            .collect()
    }

    /// The distinct body canonicalizations the signers use.
    pub fn body_canons(&self) -> Vec<Canonicalization> {
        let mut canons: Vec<Canonicalization> = self.dkim.iter().map(|s| s.body_canon).collect();
        canons.sort_by_key(|c| c.name());
        canons.dedup();
        canons
    }

    /// The shaping for `domain`.
    pub fn policy(&self, domain: &str) -> Arc<DomainPolicy> {
        if let Some(e) = self.policies.get(domain) {
            return e.value().clone();
        }
        // Kept for as long as the server runs: in the long-lived heap.
        long_lived(|| {
            let policy = Arc::new(self.config.domain_policy(domain));
            self.policies
                .get_or_insert(domain.to_owned(), policy)
                .value()
                .clone()
        })
    }

    /// The rate limiter of `domain`, if its policy sets a rate.
    pub fn rate_limit(&self, domain: &str, policy: &DomainPolicy) -> Option<Arc<RateLimit>> {
        let rate = policy.rate?;
        if let Some(e) = self.limiters.get(domain) {
            return Some(e.value().clone());
        }
        let limiter = long_lived(|| {
            let limiter = Arc::new(RateLimit::new(rate.count, rate.per));
            self.limiters
                .get_or_insert(domain.to_owned(), limiter)
                .value()
                .clone()
        });
        Some(limiter)
    }

    /// Queues the given recipients (index, attempts so far) of `message` as ready jobs.
    pub fn enqueue(
        &self,
        message: &Arc<QueuedMessage>,
        pending: impl IntoIterator<Item = (u32, u32)>,
    ) {
        for (domain, job) in self.jobs(message, pending) {
            self.ready.push(&domain, job);
        }
    }

    /// Splits the given recipients (index, attempts so far) of `message` into jobs of at
    /// most each domain's `max_recipients_per_transaction`.
    pub fn jobs(
        &self,
        message: &Arc<QueuedMessage>,
        pending: impl IntoIterator<Item = (u32, u32)>,
    ) -> Vec<(String, Job)> {
        let per_transaction = |d: &str| self.policy(d).max_recipients_per_transaction as usize;
        jobs_for(message, pending, per_transaction)
    }
}
