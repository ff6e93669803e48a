//! The server TLS a session's STARTTLS (or an implicit-TLS listener) hands its socket to:
//! the current configuration, replaced whole on SIGHUP ([`ServerTls`], shared by every
//! shard), and each shard's acceptor built from it ([`Acceptors`]), rebuilt only when a
//! reload has happened since, so handshakes already done keep theirs.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use futures_rustls::TlsAcceptor;

/// The TLS server configuration from `[tls]`, if any, and its generation.
#[derive(Debug, Default)]
pub struct ServerTls {
    config: RwLock<Option<Arc<rustls::ServerConfig>>>,
    /// Bumped on every replacement, so shards know to rebuild their acceptors.
    generation: AtomicU64,
}

impl ServerTls {
    /// Puts `config` in place for handshakes that start from now on.
    pub fn replace(&self, config: Arc<rustls::ServerConfig>) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Some(config);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The configuration's generation: it changes with every [`ServerTls::replace`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current configuration, if `[tls]` is set.
    pub fn current(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// One shard's acceptor over the shared [`ServerTls`].
pub struct Acceptors {
    tls: Arc<ServerTls>,
    cached: RefCell<(u64, Option<TlsAcceptor>)>,
}

impl Acceptors {
    /// Acceptors for `tls`, built on first use.
    pub fn new(tls: Arc<ServerTls>) -> Acceptors {
        Acceptors {
            tls,
            cached: RefCell::new((0, None)),
        }
    }

    /// The acceptor for a handshake starting now; `None` without `[tls]`.
    pub fn acceptor(&self) -> Option<TlsAcceptor> {
        let generation = self.tls.generation();
        let mut cached = self.cached.borrow_mut();
        if cached.0 != generation {
            // The generation is read first: a reload in between only means one more rebuild.
            *cached = (generation, self.tls.current().map(Into::into));
        }
        cached.1.clone()
    }
}
