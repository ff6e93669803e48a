//! One shard: a glommio executor pinned to a CPU, owning its spool segment, its listeners
//! (bound with SO_REUSEPORT, so the kernel spreads connections across shards) and every
//! session accepted on them, plus its delivery scheduler and connections. What shards
//! share is in [`crate::runtime::shared::Shared`]: the configuration, the ready queues, the
//! segment reference counts, rate limiters and the delivery log, all lock-free.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::{Rc, Weak};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use ipnet::IpNet;

use crate::accept::listener;
use crate::config::TimeoutsConfig;
use crate::deliver::dns::Resolver;
use crate::deliver::scheduler;
use crate::outcome::log::{self, LogBuffer, LogEvent};
use crate::queue::deferred::Deferred;
use crate::runtime::memory::long_lived;
use crate::runtime::shared::Shared;
use crate::runtime::shutdown::{ShardStop, StopFlag};
use crate::session::state::SessionConfig;
use crate::spool::commit::{ShardSpool, SpoolOptions};
use crate::spool::read::SegmentReader;

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

/// What every task on a shard shares: owned by the shard, handed out as `Rc`.
pub struct ShardContext {
    /// This shard's number.
    pub id: u8,
    /// This shard's spool writer.
    pub spool: Rc<ShardSpool>,
    /// Limits and identity for sessions.
    pub session: Arc<SessionConfig>,
    /// Read timeouts.
    pub timeouts: TimeoutsConfig,
    /// Clients that may relay to any domain.
    pub relay_networks: Vec<IpNet>,
    /// The shard's stop state.
    pub stop: ShardStop,
    /// When the stop began; sessions in DATA have until then plus the grace.
    pub stop_deadline: Cell<Option<Instant>>,
    /// Sessions alive on this shard.
    pub sessions: Cell<usize>,
    /// State shared with the other shards: queues, segment counts, the delivery log.
    pub shared: Arc<Shared>,
    /// Jobs this shard deferred, until their retry time.
    pub deferred: RefCell<Deferred>,
    /// This shard's maps of segment files, for reading content to deliver.
    pub reader: SegmentReader,
    /// This shard's DNS resolver and cache.
    pub resolver: Resolver,
    /// Delivery work on this shard: connections open and transactions being settled.
    pub attempts: Cell<usize>,
    /// Finished messages whose records wait to be killed together
    /// (`outcome::settle::finish_pending`).
    pub finishing: RefCell<Vec<crate::queue::message::Finish>>,
    /// Delivery connections open on this shard, per domain (for a fair share of each
    /// domain's limit across shards).
    pub domain_connections: RefCell<HashMap<String, u32>>,
    /// How many shards run.
    pub shard_count: u32,
    /// TLS for listeners that offer it (from `[tls]`), and the generation of the shared
    /// configuration it was built from.
    tls: RefCell<(u64, Option<futures_rustls::TlsAcceptor>)>,
    /// TLS for delivery (STARTTLS as client).
    pub tls_out: crate::deliver::client::tls::TlsClients,
    /// Delivery log lines waiting for the shard's next append.
    log_lines: LogBuffer,
}

impl ShardContext {
    /// Writes one event to the delivery log (within [`log::FLUSH_INTERVAL`]).
    pub fn log(&self, event: &LogEvent<'_>) {
        self.log_lines.push(&self.shared.log, event);
    }

    /// Runs `work` in a task of its own, counted in [`ShardContext::attempts`] until it
    /// ends, so that a stopping shard waits for it.
    pub fn spawn_counted(self: &Rc<Self>, work: impl std::future::Future<Output = ()> + 'static) {
        self.attempts.set(self.attempts.get() + 1);
        let ctx = self.clone();
        glommio::spawn_local(async move {
            work.await;
            ctx.attempts.set(ctx.attempts.get() - 1);
        })
        .detach();
    }

    /// Whether a client at `ip` may relay to any domain.
    pub fn may_relay(&self, ip: IpAddr) -> bool {
        crate::accept::limits::in_networks(&self.relay_networks, ip)
    }

    /// The acceptor for a TLS handshake starting now: rebuilt when SIGHUP has loaded a
    /// new certificate since the last one, so handshakes already done keep theirs.
    pub fn tls_acceptor(&self) -> Option<futures_rustls::TlsAcceptor> {
        let generation = self.shared.tls_generation();
        let mut tls = self.tls.borrow_mut();
        if tls.0 != generation {
            // The generation is read first: a reload in between only means one more rebuild.
            *tls = (generation, self.shared.tls_config().map(Into::into));
        }
        tls.1.clone()
    }
}

impl Drop for ShardContext {
    /// The last lines: sessions and settles that outlived the stop's wait still log, and
    /// the context goes only when the last of them has.
    fn drop(&mut self) {
        self.log_lines.flush(&self.shared.log);
    }
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
    let tls_out = long_lived(|| {
        crate::deliver::client::tls::TlsClients::new(shared.ca_roots.clone())
            .map_err(std::io::Error::other)
    })?;
    let ctx = long_lived(|| -> std::io::Result<Rc<ShardContext>> {
        Ok(Rc::new(ShardContext {
            id,
            spool,
            session: Arc::new(SessionConfig {
                hostname: config.hostname.clone(),
                max_message_size: config.limits.max_message_size.0 as usize,
                max_recipients: config.limits.max_recipients,
                max_errors: config.limits.max_errors,
                max_messages_per_session: config.limits.max_messages_per_connection,
                max_recipients_per_session: config.limits.max_recipients_per_connection,
                relay_domains: config.relay.domains.clone(),
                body_canons: shared.body_canons(),
            }),
            timeouts: config.timeouts.clone(),
            relay_networks: config.relay.networks.clone(),
            stop: ShardStop::default(),
            stop_deadline: Cell::new(None),
            sessions: Cell::new(0),
            shared,
            deferred: RefCell::new(deferred),
            reader: SegmentReader::new(config.spool.path.clone()),
            resolver: Resolver::new(nameservers(&config), DNS_TIMEOUT),
            attempts: Cell::new(0),
            finishing: RefCell::new(Vec::new()),
            domain_connections: RefCell::new(HashMap::new()),
            shard_count: config.shard_count() as u32,
            tls: RefCell::new((0, None)),
            tls_out,
            log_lines: LogBuffer::default(),
        }))
    })?;
    let log_flusher = glommio::spawn_local(flush_log(Rc::downgrade(&ctx))).detach();
    let mut bound = Vec::new();
    let mut accepting = Vec::new();
    for l in &config.listeners {
        let listener = listener::bind(l.address)?;
        bound.push(listener.local_addr()?);
        accepting.push(
            glommio::spawn_local(listener::accept_loop(listener, ctx.clone(), l.clone())).detach(),
        );
    }
    let _ = ready.send(Ok(bound));
    let scheduler = glommio::spawn_local(scheduler::run(ctx.clone())).detach();

    ctx.stop.watch(flag).await;
    let grace = config.timeouts.shutdown_grace;
    ctx.stop_deadline.set(Some(Instant::now() + grace));
    for task in accepting {
        task.await;
    }
    // Sessions end themselves: idle ones at once, ones in DATA by the deadline. The extra
    // second covers writing their last reply.
    scheduler.await;
    let give_up = Instant::now() + grace + Duration::from_secs(1);
    while (ctx.sessions.get() > 0 || ctx.attempts.get() > 0) && Instant::now() < give_up {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    // Settles that ended after the scheduler's last look left finishes waiting.
    crate::outcome::settle::finish_pending(&ctx).await;
    log_flusher.cancel();
    if ctx.sessions.get() > 0 {
        tracing::warn!(
            shard = id,
            sessions = ctx.sessions.get(),
            "sessions still open at stop"
        );
    }
    // The committer ends once every handle on the spool is gone (sessions end by the
    // deadline: their reads race it) and its last batch is durable.
    drop(ctx);
    if let Some(()) = committer.await {
        tracing::debug!(shard = id, "spool closed");
    }
    Ok(())
}

/// Appends the shard's gathered log lines every [`log::FLUSH_INTERVAL`] while the shard
/// runs.
async fn flush_log(ctx: Weak<ShardContext>) {
    loop {
        glommio::timer::sleep(log::FLUSH_INTERVAL).await;
        let Some(ctx) = ctx.upgrade() else { return };
        ctx.log_lines.flush(&ctx.shared.log);
    }
}
