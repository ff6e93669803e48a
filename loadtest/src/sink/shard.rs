//! One sink shard: a glommio executor bound to every listening address (SO_REUSEPORT, so
//! the kernel spreads connections over shards) and the connections it accepts.
//!
//! Totals that the main thread watches live in [`Shared`] as atomics; counts keyed by
//! domain or address stay in the shard ([`ShardCounts`], no lock, no sharing) and are
//! merged once the shard has stopped.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use futures_lite::future;
use futures_rustls::server::TlsStream;
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};

use crate::sink::config::SinkConfig;
use crate::sink::fault::FaultPlan;
use crate::sink::session::{Event, SinkSession};
use crate::sink::SinkError;

/// Read size: a 5 KiB message with its commands is one read.
const READ_CHUNK: usize = 16 * 1024;

/// A client silent this long is dropped (RFC 5321 §4.5.3.2.7 gives a server 5 minutes;
/// a load sink has no patient clients to wait for).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// After the stop, connections still open get this long to say QUIT.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// State every shard and the main thread share. Counters are totals over all shards.
pub struct Shared {
    /// The injected faults.
    pub plan: FaultPlan,
    /// Raised by the main thread: stop accepting, let sessions finish, report.
    pub stop: AtomicBool,
    /// Where to save messages, if at all.
    pub save: Option<PathBuf>,
    /// What sessions offer and check.
    pub config: SinkConfig,
    /// TLS for STARTTLS, when a certificate was given.
    pub tls: Option<futures_rustls::TlsAcceptor>,
    /// When the sink started; recipient times are nanoseconds since then.
    pub epoch: Instant,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// MAIL commands accepted.
    pub transactions: AtomicU64,
    /// Messages accepted (250 after the content).
    pub messages: AtomicU64,
    /// Recipients of accepted messages.
    pub recipients: AtomicU64,
    /// RCPTs refused by injected faults.
    pub rcpt_refused: AtomicU64,
    /// Messages refused by injected faults after their content.
    pub data_refused: AtomicU64,
    /// Connections closed by injected faults.
    pub disconnects: AtomicU64,
    /// Nanoseconds from `epoch` to the first accepted recipient, plus one (0: none yet).
    pub first_recipient: AtomicU64,
    /// Nanoseconds from `epoch` to the latest accepted recipient.
    pub last_recipient: AtomicU64,
    /// Numbers saved files.
    pub saved: AtomicU64,
    /// TLS handshakes completed.
    pub tls_sessions: AtomicU64,
    /// STARTTLS refused or cut off by an injected fault, or handshakes that failed.
    pub starttls_failed: AtomicU64,
    /// AUTH successes.
    pub auth_ok: AtomicU64,
    /// AUTH failures.
    pub auth_failed: AtomicU64,
}

/// Counts for one listening address.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct AddressCounts {
    /// Connections accepted on it.
    pub connections: u64,
    /// Messages accepted on it.
    pub messages: u64,
    /// Recipients of those messages.
    pub recipients: u64,
}

/// Counts one shard keeps to itself until it stops.
#[derive(Debug, Default)]
pub struct ShardCounts {
    /// Accepted recipients per domain (lower-cased).
    pub domains: HashMap<String, u64>,
    /// Per listening address, in `--listen` order.
    pub addresses: Vec<AddressCounts>,
}

struct Shard {
    shared: Arc<Shared>,
    counts: RefCell<ShardCounts>,
    open: Cell<usize>,
}

/// Starts shard `id` on its own thread: binds `addresses`, reports the bound addresses on
/// `ready`, serves until [`Shared::stop`], and returns its counts.
pub fn spawn(
    id: usize,
    addresses: Vec<SocketAddr>,
    shared: Arc<Shared>,
    ready: mpsc::Sender<Result<Vec<SocketAddr>, SinkError>>,
) -> std::io::Result<glommio::ExecutorJoinHandle<ShardCounts>> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    LocalExecutorBuilder::new(Placement::Fixed(id % cpus))
        .name(&format!("sink-{id}"))
        .spawn(move || async move { serve(addresses, shared, ready).await })
        .map_err(|e| std::io::Error::other(e.to_string()))
}

async fn serve(
    addresses: Vec<SocketAddr>,
    shared: Arc<Shared>,
    ready: mpsc::Sender<Result<Vec<SocketAddr>, SinkError>>,
) -> ShardCounts {
    let shard = Rc::new(Shard {
        shared,
        counts: RefCell::new(ShardCounts {
            domains: HashMap::new(),
            addresses: vec![AddressCounts::default(); addresses.len()],
        }),
        open: Cell::new(0),
    });
    let mut listeners = Vec::new();
    let mut bound = Vec::new();
    for a in &addresses {
        match TcpListener::bind(*a).and_then(|l| Ok((l.local_addr()?, l))) {
            Ok((local, l)) => {
                bound.push(local);
                listeners.push(l);
            }
            Err(e) => {
                let _ = ready.send(Err(SinkError::Bind {
                    addr: *a,
                    source: e,
                }));
                return ShardCounts::default();
            }
        }
    }
    let _ = ready.send(Ok(bound));
    let tasks: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| glommio::spawn_local(accept_loop(l, i, shard.clone())).detach())
        .collect();
    for t in tasks {
        t.await;
    }
    let give_up = Instant::now() + STOP_GRACE;
    while shard.open.get() > 0 && Instant::now() < give_up {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    // Sessions still open are dropped with the executor; their counts are already in.
    shard.counts.take()
}

/// Resolves when the main thread raises the stop flag; polled, since it lives on another
/// thread and a 20 ms lag is nothing next to a run.
async fn stopped(shared: &Shared) {
    while !shared.stop.load(Relaxed) {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
}

async fn accept_loop(listener: TcpListener, index: usize, shard: Rc<Shard>) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            stopped(&shard.shared).await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok(stream)) => {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    shard.open.set(shard.open.get() + 1);
                    serve_connection(stream, index, &shard).await;
                    shard.open.set(shard.open.get() - 1);
                })
                .detach();
            }
            // Usually EMFILE: back off rather than spin on it.
            Some(Err(_)) => glommio::timer::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The transport: plain TCP, or TLS after STARTTLS (pigeon's own connection type).
type Stream = pigeon::runtime::conn::Conn<TlsStream<TcpStream>>;

async fn serve_connection(tcp: TcpStream, index: usize, shard: &Shard) {
    let shared = &*shard.shared;
    // Replies are small writes the client waits for (as pigeon's sessions do it).
    let _ = tcp.set_nodelay(true);
    let number = shared.connections.fetch_add(1, Relaxed);
    shard.counts.borrow_mut().addresses[index].connections += 1;
    let mut session = SinkSession::new(&shared.config, number);
    let mut input = vec![0u8; READ_CHUNK];
    let (mut start, mut end) = (0usize, 0usize);
    let mut output = Vec::with_capacity(512);
    let _ = tcp.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = tcp.set_write_timeout(Some(IDLE_TIMEOUT));
    let mut stream = Stream::Plain(tcp);
    loop {
        start += session.handle_input(&input[start..end], &shared.plan);
        let mut start_tls = false;
        while let Some(event) = session.poll_event() {
            start_tls |= event == Event::StartTls;
            count(shard, index, event);
        }
        session.take_output(&mut output);
        if !output.is_empty() {
            let delay = session.take_delay();
            if !delay.is_zero() {
                glommio::timer::sleep(delay).await;
            }
            if stream.write_all(&output, true).await.is_err() {
                return;
            }
            output.clear();
        }
        if session.is_closed() {
            stream.close().await;
            return;
        }
        if start_tls {
            // What the client sent after STARTTLS was plain text: dropped (RFC 3207 §5).
            (start, end) = (0, 0);
            let (Some(tcp), Some(acceptor)) = (stream.take_plain(), &shared.tls) else {
                return;
            };
            let handshake = async { Some(acceptor.accept(tcp).await) };
            let timeout = async {
                glommio::timer::sleep(IDLE_TIMEOUT).await;
                None
            };
            match future::or(handshake, timeout).await {
                Some(Ok(tls)) => stream = Stream::Tls(Box::new(tls)),
                _ => {
                    shared.starttls_failed.fetch_add(1, Relaxed);
                    return;
                }
            }
            shared.tls_sessions.fetch_add(1, Relaxed);
            session.handle_tls_started();
            continue;
        }
        // Unconsumed bytes (a partial command line) move to the front.
        if start == end {
            (start, end) = (0, 0);
        } else if end == input.len() {
            input.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }
        match stream.read(&mut input[end..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => end += n,
        }
    }
}

fn count(shard: &Shard, index: usize, event: Event) {
    let shared = &*shard.shared;
    match event {
        Event::Transaction => {
            shared.transactions.fetch_add(1, Relaxed);
        }
        Event::RcptRefused => {
            shared.rcpt_refused.fetch_add(1, Relaxed);
        }
        Event::DataRefused => {
            shared.data_refused.fetch_add(1, Relaxed);
        }
        Event::Disconnect => {
            shared.disconnects.fetch_add(1, Relaxed);
        }
        Event::StartTls => {}
        Event::StartTlsFailed => {
            shared.starttls_failed.fetch_add(1, Relaxed);
        }
        Event::AuthOk => {
            shared.auth_ok.fetch_add(1, Relaxed);
        }
        Event::AuthFailed => {
            shared.auth_failed.fetch_add(1, Relaxed);
        }
        Event::Message {
            sender,
            recipients,
            content,
        } => {
            if let Some(dir) = &shared.save {
                save(shared, dir, &sender, &recipients, &content);
            }
            let n = recipients.len() as u64;
            let mut counts = shard.counts.borrow_mut();
            for r in &recipients {
                let domain = r.rsplit_once('@').map_or("", |(_, d)| d);
                let domain = domain.to_ascii_lowercase();
                *counts.domains.entry(domain).or_insert(0) += 1;
            }
            let a = &mut counts.addresses[index];
            a.messages += 1;
            a.recipients += n;
            // Times first, then the count the main thread watches, so that when it sees the
            // last recipient the time of the last one is already there.
            let now = shared.epoch.elapsed().as_nanos() as u64;
            let _ = shared
                .first_recipient
                .compare_exchange(0, now + 1, Relaxed, Relaxed);
            shared.last_recipient.fetch_max(now, Relaxed);
            shared.messages.fetch_add(1, Relaxed);
            shared
                .recipients
                .fetch_add(n, std::sync::atomic::Ordering::Release);
        }
    }
}

/// Writes the message Maildir-style: into `tmp/`, then renamed into `new/`, so a reader of
/// `new/` never sees half a file. Blocking file IO on the shard is acceptable here: saving
/// is for checking content, not for measuring rates.
fn save(shared: &Shared, dir: &std::path::Path, sender: &str, recipients: &[String], wire: &[u8]) {
    let n = shared.saved.fetch_add(1, Relaxed);
    let name = format!("{}.{n}.pigeon-load", std::process::id());
    let mut file = format!("Return-Path: <{sender}>\r\n").into_bytes();
    for r in recipients {
        file.extend_from_slice(format!("X-Envelope-To: <{r}>\r\n").as_bytes());
    }
    file.extend_from_slice(&pigeon::smtp::data::unstuff(wire));
    let tmp = dir.join("tmp").join(&name);
    let result = std::fs::write(&tmp, &file)
        .and_then(|_| std::fs::rename(&tmp, dir.join("new").join(&name)));
    if let Err(e) = result {
        eprintln!("pigeon-load sink: saving {}: {e}", tmp.display());
    }
}
