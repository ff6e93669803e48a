//! The server process: from a configuration to running shards and back to a clean stop.
//! Everything before the first shard starts (loading, locking, recovering the spool,
//! rebuilding the queue) happens here, on the main thread.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use crate::config::{Config, ConfigError};
use crate::outcome::log::DeliveryLog;
use crate::queue::deferred::Deferred;
use crate::queue::requeue::{requeue, RequeueError};
use crate::runtime::files::{LoadError, Loaded};
use crate::runtime::memory::long_lived;
use crate::runtime::shard;
use crate::runtime::shared::Shared;
use crate::runtime::shutdown::{spawn_signal_thread, StopFlag};
use crate::spool::lock::LockError;
use crate::spool::recover::repair;
use crate::spool::segments::Segments;

/// Why the server did not start, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is wrong.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A file the configuration names cannot be loaded.
    #[error("{0}")]
    Files(#[from] LoadError),
    /// The spool directory cannot be made.
    #[error("spool.path {}: {source}", path.display())]
    SpoolDir {
        /// `spool.path`.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Another server holds the spool, or the lock cannot be taken.
    #[error("{0}")]
    Lock(#[from] LockError),
    /// The spool cannot be read or repaired.
    #[error("recovering {}: {source}", path.display())]
    Recover {
        /// `spool.path`.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The queue cannot be rebuilt from the spool.
    #[error("replaying {}: {source}", path.display())]
    Requeue {
        /// `spool.path`.
        path: PathBuf,
        /// What went wrong.
        source: RequeueError,
    },
    /// The delivery log cannot be opened.
    #[error("log.delivery {}: {source}", path.display())]
    Log {
        /// `log.delivery`.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The signal thread cannot start.
    #[error("signal handling: {0}")]
    Signals(std::io::Error),
    /// A shard's thread cannot start.
    #[error("starting shard {id}: {source}")]
    StartShard {
        /// The shard.
        id: usize,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A shard could not bind its listeners or open its spool.
    #[error("{0}")]
    Shard(String),
    /// A shard's thread ended before it said it was ready.
    #[error("a shard died while starting")]
    ShardDied,
    /// A shard's thread panicked.
    #[error("a shard failed")]
    ShardFailed,
}

/// `pigeon serve`: loads the configuration (or the built-in defaults) and the files it
/// names, locks and recovers the spool, rebuilds the queue, starts one shard per core and
/// serves until SIGTERM or SIGINT has stopped every shard.
pub fn serve(config_path: Option<&Path>) -> Result<(), ServeError> {
    crate::runtime::memory::no_huge_pages();
    // The configuration, the files it names and the shared state live as long as the
    // process: in the long-lived heap, so that none of it pins a page that the traffic's
    // short-lived objects fill and free.
    let (config, files) = long_lived(|| {
        let config = match config_path {
            Some(path) => Config::load(path)?,
            None => Config::defaults(),
        };
        let files = Loaded::load(&config)?;
        Ok::<_, ServeError>((config, files))
    })?;
    let spool = &config.spool.path.clone();
    std::fs::create_dir_all(spool).map_err(|source| ServeError::SpoolDir {
        path: spool.clone(),
        source,
    })?;
    // Before the repair: another server's records must never be taken for torn tails.
    let _lock = crate::spool::lock::lock(spool)?;
    let repaired = repair(spool).map_err(|source| ServeError::Recover {
        path: spool.clone(),
        source,
    })?;
    tracing::info!(
        records = repaired.records,
        truncated = repaired.truncated.len(),
        removed = repaired.removed.len(),
        "spool recovered"
    );
    let shards = config.shard_count();
    let shared = long_lived(|| share(config, files))?;
    let mut deferred: Vec<Deferred> = (0..shards).map(|_| Deferred::new()).collect();
    let requeued =
        requeue(spool, &shared.queues, &shared.segments, &mut deferred).map_err(|source| {
            ServeError::Requeue {
                path: spool.clone(),
                source,
            }
        })?;
    tracing::info!(
        messages = requeued.messages,
        recipients = requeued.recipients,
        deferred_jobs = requeued.deferred_jobs,
        "queue rebuilt from the spool"
    );

    let flag = StopFlag::default();
    let reloading = shared.clone();
    spawn_signal_thread(flag.clone(), move || reloading.reload()).map_err(ServeError::Signals)?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(shards);
    for (id, deferred) in deferred.into_iter().enumerate() {
        let first_seq = repaired.next_seq.get(id).copied().unwrap_or(0);
        let handle = shard::spawn(
            id as u8,
            shared.clone(),
            first_seq,
            deferred,
            flag.clone(),
            ready_tx.clone(),
        )
        .map_err(|source| ServeError::StartShard { id, source })?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut addresses = Vec::new();
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(bound)) => addresses = bound,
            Ok(Err(e)) => {
                flag.raise();
                return Err(ServeError::Shard(e));
            }
            Err(_) => return Err(ServeError::ShardDied),
        }
    }
    let listening: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
    tracing::info!(shards, listening = %listening.join(" "), spool = %spool.display(), "ready");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let mut failed = false;
    for h in handles {
        failed |= h.join().is_err();
    }
    tracing::info!("stopped");
    if failed {
        Err(ServeError::ShardFailed)
    } else {
        Ok(())
    }
}

/// The state the shards share: the configuration, the delivery log, the spool's segment
/// references, and the loaded files (DKIM keys, AUTH users, TLS).
fn share(config: Config, files: Loaded) -> Result<Arc<Shared>, ServeError> {
    let spool = &config.spool.path.clone();
    let config = Arc::new(config);
    let log = DeliveryLog::open(&config.log.delivery).map_err(|source| ServeError::Log {
        path: config.log.delivery.clone(),
        source,
    })?;
    let segments = Arc::new(Segments::new(spool.clone()));
    let shared = Shared::new(config, segments, log, files);
    if let Some(auth) = &shared.auth {
        tracing::info!(users = auth.credentials().len(), "SMTP AUTH users loaded");
    }
    Ok(Arc::new(shared))
}
