//! One shard: a glommio executor pinned to a CPU. This module builds the shard's stages
//! and wires them, and nothing else: its spool writer, its listeners (bound with
//! SO_REUSEPORT, so the kernel spreads connections across shards) with the sessions and
//! intake behind them, its delivery agents and its queue manager. What shards share is
//! in [`crate::runtime::shared::Shared`]. It then waits for the stop and drains the
//! stages in order: listeners, the queue manager's loop, sessions and delivery work, the
//! last batch of finishes, the log, the spool.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::{LocalExecutorBuilder, Placement};
use ipnet::IpNet;

use crate::accept::listener::{self, Acceptor};
use crate::deliver::agent::Agents;
use crate::deliver::client::tls::TlsClients;
use crate::deliver::dns::Resolver;
use crate::intake::Intake;
use crate::outcome::log::ShardLog;
use crate::outcome::settle::Settler;
use crate::qmgr::{dispatch, QueueManager};
use crate::queue::deferred::Deferred;
use crate::runtime::memory::long_lived;
use crate::runtime::shared::Shared;
use crate::runtime::shutdown::{ShardStop, StopFlag};
use crate::session::driver::Services;
use crate::session::state::SessionConfig;
use crate::session::tls::Acceptors;
use crate::spool::commit::{ShardSpool, SpoolOptions};
use crate::spool::read::SegmentReader;
use crate::task::TaskCount;

/// How long one DNS query may take before the next nameserver is asked.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// The nameservers from `dns.nameservers`, else /etc/resolv.conf.
fn nameservers(config: &crate::config::Config) -> Vec<SocketAddr> {
    if config.dns.nameservers.is_empty() {
        return Resolver::system_nameservers().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no nameservers in /etc/resolv.conf; using 127.0.0.1:53");
            vec![SocketAddr::from(([127, 0, 0, 1], 53))]
        });
    }
    config.dns.nameservers.clone()
}

/// Runs shard `id` to completion on its own thread: binds, reports the bound addresses
/// on `ready`, serves until `flag` is raised, drains, and makes the spool durable.
pub fn spawn(
    id: u8,
    shared: Arc<Shared>,
    first_seq: u64,
    deferred: Deferred,
    flag: StopFlag,
    ready: mpsc::Sender<Result<Vec<SocketAddr>, String>>,
) -> std::io::Result<glommio::ExecutorJoinHandle<()>> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let builder = LocalExecutorBuilder::new(Placement::Fixed(id as usize % cpus))
        .name(&format!("shard-{id}"));
    builder
        .spawn(move || async move {
            if let Err(e) = serve(id, shared, first_seq, deferred, flag, &ready).await {
                let _ = ready.send(Err(format!("shard {id}: {e}")));
            }
        })
        .map_err(|e| std::io::Error::other(e.to_string()))
}

async fn serve(
    id: u8,
    shared: Arc<Shared>,
    first_seq: u64,
    deferred: Deferred,
    flag: StopFlag,
    ready: &mpsc::Sender<Result<Vec<SocketAddr>, String>>,
) -> std::io::Result<()> {
    let config = shared.config.clone();
    let options = SpoolOptions {
        segments: shared.segments.clone(),
        path: config.spool.path.clone(),
        fsync: config.spool.fsync,
        segment_size: config.spool.segment_size.0,
        min_free_space: config.spool.min_free_space.0,
    };
    // The shard's own state lives as long as the shard: in the long-lived heap
    // (`runtime::memory`), away from the pages its traffic fills and frees.
    let (spool, committer) = long_lived(|| ShardSpool::start(id, first_seq, options))?;
    let committer = glommio::spawn_local(committer).detach();
    let stop = Rc::new(ShardStop::default());
    let wired = long_lived(|| wire(id, &shared, spool, deferred, stop.clone()))?;
    let log_flusher =
        glommio::spawn_local(ShardLog::flush_every(Rc::downgrade(&wired.log))).detach();
    let mut bound = Vec::new();
    let mut accepting = Vec::new();
    for l in &config.listeners {
        let listener = listener::bind(l.address)?;
        bound.push(listener.local_addr()?);
        let acceptor = wired.acceptor.clone();
        accepting.push(
            glommio::spawn_local(listener::accept_loop(listener, acceptor, l.clone())).detach(),
        );
    }
    let _ = ready.send(Ok(bound));
    let dispatcher = glommio::spawn_local(dispatch::run(wired.qmgr.clone())).detach();

    stop.watch(flag, config.timeouts.shutdown_grace).await;
    for task in accepting {
        task.await;
    }
    dispatcher.await;
    // Sessions end themselves: idle ones at once, ones in DATA by the deadline; delivery
    // connections finish their transaction or are dropped at the deadline. The extra
    // second covers writing their last reply and settling their last report.
    let give_up = stop.deadline().unwrap_or_else(Instant::now) + Duration::from_secs(1);
    let sessions = wired.acceptor.sessions.clone();
    let delivery = wired.qmgr.tasks.clone();
    future::zip(sessions.drained(give_up), delivery.drained(give_up)).await;
    // Settles that ended after the dispatcher's last look left finishes waiting.
    wired.qmgr.finish_pending().await;
    log_flusher.cancel();
    if sessions.alive() > 0 {
        tracing::warn!(
            shard = id,
            sessions = sessions.alive(),
            "sessions still open at stop"
        );
    }
    // The committer ends once every handle on the spool is gone (sessions end by the
    // deadline: their reads race it) and its last batch is durable.
    drop(wired);
    if let Some(()) = committer.await {
        tracing::debug!(shard = id, "spool closed");
    }
    Ok(())
}

/// A shard's stages, wired: each gets the handles it uses and nothing else.
struct Wired {
    acceptor: Rc<Acceptor>,
    qmgr: Rc<QueueManager>,
    log: Rc<ShardLog>,
}

/// Builds shard `id`'s stages over `spool`: the log, the spool reader, intake, the
/// session services and the listeners' acceptor, the delivery agents, the settler and
/// the queue manager.
fn wire(
    id: u8,
    shared: &Arc<Shared>,
    spool: Rc<ShardSpool>,
    deferred: Deferred,
    stop: Rc<ShardStop>,
) -> std::io::Result<Wired> {
    let config = &shared.config;
    let log = ShardLog::new(shared.log.clone());
    let reader = Rc::new(SegmentReader::new(config.spool.path.clone()));
    let relay_networks: Arc<[IpNet]> = config.relay.networks.clone().into();
    let intake = Rc::new(Intake {
        hostname: config.hostname.clone(),
        spool: spool.clone(),
        signers: shared.signers.clone(),
        relay_networks: relay_networks.clone(),
        queues: shared.queues.clone(),
        log: log.clone(),
    });
    let services = Rc::new(Services {
        config: Arc::new(SessionConfig {
            hostname: config.hostname.clone(),
            max_message_size: config.limits.max_message_size.0 as usize,
            max_recipients: config.limits.max_recipients,
            max_errors: config.limits.max_errors,
            max_messages_per_session: config.limits.max_messages_per_connection,
            max_recipients_per_session: config.limits.max_recipients_per_connection,
            relay_domains: config.relay.domains.clone(),
            body_canons: shared.signers.body_canons(),
        }),
        timeouts: config.timeouts.clone(),
        stop: stop.clone(),
        tls: Acceptors::new(shared.tls.clone()),
        auth: shared.auth.clone(),
        intake,
    });
    let acceptor = Rc::new(Acceptor {
        admission: shared.admission.clone(),
        relay_networks,
        sessions: TaskCount::new(),
        services,
    });
    let agents = Rc::new(Agents {
        shard: id,
        helo: config.hostname.clone(),
        port: config.delivery.port,
        max_age: config.delivery.max_age,
        resolver: Resolver::new(nameservers(config), DNS_TIMEOUT),
        tls: TlsClients::new(shared.ca_roots.clone()).map_err(std::io::Error::other)?,
        reader: reader.clone(),
        queues: shared.queues.clone(),
        stop: stop.clone(),
    });
    let settler = Settler {
        spool,
        reader,
        segments: shared.segments.clone(),
        queues: shared.queues.clone(),
        log: log.clone(),
        delivery: config.delivery.clone(),
        hostname: config.hostname.clone(),
    };
    let qmgr = QueueManager::new(settler, agents, deferred, config.spool.compact_after, stop);
    Ok(Wired {
        acceptor,
        qmgr,
        log,
    })
}
