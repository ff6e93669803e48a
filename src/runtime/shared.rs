//! What every shard shares: the configuration, the queues, the segment reference counts,
//! the delivery log, the DKIM signers, connection admission, the TLS configuration and
//! the AUTH users. All of it is lock-free or immutable, so sharing it costs atomics,
//! never a lock, with two exceptions off the per-message path: connection admission (a
//! lock per client-map shard, once per connection) and the TLS configuration (read once
//! per handshake after a reload, written on SIGHUP). Each stage is handed the parts it
//! uses (`runtime::shard` wires them); none of them sees this struct.

use std::sync::Arc;
use std::time::Instant;

use crate::accept::limits::Admission;
use crate::accept::tls::ServerTlsError;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::dkim::signers::Signers;
use crate::outcome::log::DeliveryLog;
use crate::queue::queues::Queues;
use crate::runtime::files::Loaded;
use crate::session::tls::ServerTls;
use crate::spool::segments::Segments;

/// State shared by all shards.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Arc<Config>,
    /// The ready queues and every domain's shaping.
    pub queues: Arc<Queues>,
    /// Which segments still hold live records.
    pub segments: Arc<Segments>,
    /// The delivery log.
    pub log: Arc<DeliveryLog>,
    /// DKIM signers, from `[[dkim]]`.
    pub signers: Arc<Signers>,
    /// Connections open, in total and per client, and the limits on them.
    pub admission: Arc<Admission>,
    /// The TLS server configuration from `[tls]`, replaced by [`Shared::reload`].
    pub tls: Arc<ServerTls>,
    /// SMTP AUTH users and failure counts, from `[auth]`.
    pub auth: Option<Arc<Authenticator>>,
    /// The roots each shard's delivery TLS verifies against (`runtime::files::Loaded`).
    pub ca_roots: rustls::RootCertStore,
}

impl Shared {
    /// Shared state for a run with `config` and the `files` it names, loaded once.
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
        let auth = (config.auth.as_ref().zip(files.users))
            .map(|(auth, users)| Arc::new(Authenticator::new(auth, users)));
        let tls = Arc::new(ServerTls::default());
        if let Some(first) = files.tls {
            tls.replace(first);
        }
        Shared {
            admission: Arc::new(admission),
            tls,
            queues: Arc::new(Queues::new(config.clone())),
            config,
            segments,
            log: Arc::new(log),
            signers: Arc::new(Signers::new(files.dkim)),
            auth,
            ca_roots: files.ca_roots,
        }
    }

    /// Loads the `[tls]` certificate and key again (if configured) for handshakes that
    /// start from now on; sessions already in TLS keep the configuration they began with.
    /// On error the previous configuration stays.
    pub fn load_tls(&self) -> Result<(), ServerTlsError> {
        let Some(tls) = &self.config.tls else {
            return Ok(());
        };
        let fresh = crate::accept::tls::server_config(&tls.cert, &tls.key)?;
        self.tls.replace(fresh);
        Ok(())
    }

    /// What SIGHUP does: reads again the files named in the configuration (the `[tls]`
    /// certificate and key, the `[auth]` users file). A file that fails to load is logged
    /// and the running version of it kept, so a bad edit never takes the server down.
    pub fn reload(&self) {
        let started = Instant::now();
        match self.load_tls() {
            Ok(()) if self.config.tls.is_some() => tracing::info!(
                generation = self.tls.generation(),
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
}
