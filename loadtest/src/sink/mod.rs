//! `pigeon-load sink`: an SMTP server that accepts, counts and discards (or saves), with
//! faults injected on request.
//!
//! - [`config`]: what every session of a run shares (identity, extensions, delays).
//! - [`fault`]: which RCPT or message gets which injected reply.
//! - [`session`]: the sans-io server session.
//! - [`shard`]: executors, listeners, connection loops, counters.
//!
//! The main thread only starts the shards, watches the recipient total and the clock,
//! raises the stop flag, merges the shards' counts and prints them as JSON.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::report::{self, ReportError};
use crate::SinkArgs;

pub mod config;
pub mod fault;
pub mod session;
pub mod shard;

use config::{DelayError, Delays, SinkConfig};
use fault::{Fault, FaultError, FaultPlan};
use shard::{AddressCounts, Shared};

/// Why the sink could not start, or could not report.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A `--fault` is malformed, or the faults of a stage add up to over 100%.
    #[error(transparent)]
    Fault(#[from] FaultError),
    /// A `--delay` is malformed.
    #[error(transparent)]
    Delay(#[from] DelayError),
    /// The `--save` directory (its `tmp` and `new`) cannot be made.
    #[error("--save {}: {source}", dir.display())]
    Save {
        /// The directory given.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The certificate or key cannot be loaded (pigeon's own message).
    #[error("{0}")]
    Tls(#[from] pigeon::accept::tls::ServerTlsError),
    /// Only one of `--tls-cert` and `--tls-key` was given.
    #[error("--tls-cert and --tls-key go together")]
    TlsHalf,
    /// `--auth` is not `USER:PASSWORD`.
    #[error("--auth wants USER:PASSWORD")]
    AuthSpec,
    /// The SIGTERM/SIGINT handler cannot be installed.
    #[error(transparent)]
    Signal(io::Error),
    /// A shard's executor cannot be started.
    #[error(transparent)]
    Spawn(io::Error),
    /// A shard cannot listen on an address.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: glommio::GlommioError<()>,
    },
    /// A shard ended before saying whether it listens.
    #[error("shard {0} died")]
    ShardDied(usize),
    /// A shard's executor failed instead of returning its counts.
    #[error("shard failed: {0}")]
    ShardFailed(#[source] glommio::GlommioError<()>),
    /// The report cannot be made into JSON or written.
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// What the sink prints when it stops.
#[derive(Debug, Serialize)]
struct Report {
    /// The addresses it listened on (ports resolved).
    listen: Vec<String>,
    shards: usize,
    connections: u64,
    transactions: u64,
    messages: u64,
    recipients: u64,
    rcpt_refused: u64,
    data_refused: u64,
    disconnects: u64,
    /// TLS handshakes completed after STARTTLS.
    tls_sessions: u64,
    /// STARTTLS refused or cut off (injected), or handshakes that failed.
    starttls_failed: u64,
    auth_ok: u64,
    auth_failed: u64,
    /// `--expect-recipients` was reached (false: stopped by time or signal).
    reached_expected: bool,
    /// When it was seen reached, seconds since the Unix epoch (0 if not): the end of a run
    /// that is timed from outside, before the sink waits for connections to close.
    reached_unix: f64,
    /// Seconds from the first accepted recipient to the last.
    first_to_last_seconds: f64,
    /// Recipients per second over that span.
    recipients_per_second: f64,
    elapsed_seconds: f64,
    domains: BTreeMap<String, u64>,
    addresses: BTreeMap<String, AddressCounts>,
}

/// Runs the sink until it has the expected recipients, the time cap, or SIGTERM/SIGINT.
pub fn run(args: SinkArgs) -> Result<(), SinkError> {
    let faults = args
        .fault
        .iter()
        .map(|s| Fault::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(dir) = &args.save {
        for sub in ["tmp", "new"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|source| SinkError::Save {
                dir: dir.clone(),
                source,
            })?;
        }
    }
    let mut delays = Delays::default();
    for d in &args.delay {
        delays.add(d)?;
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(futures_rustls::TlsAcceptor::from(
            pigeon::accept::tls::server_config(cert, key)?,
        )),
        (None, None) => None,
        _ => return Err(SinkError::TlsHalf),
    };
    let auth = match &args.auth {
        Some(spec) => {
            let (user, pass) = spec.split_once(':').ok_or(SinkError::AuthSpec)?;
            Some((user.to_owned(), pass.to_owned()))
        }
        None => None,
    };
    let config = SinkConfig::new(
        &args.hostname,
        args.save.is_some(),
        tls.is_some(),
        auth,
        delays,
    );
    let shared = Arc::new(Shared {
        plan: FaultPlan::new(faults)?,
        stop: AtomicBool::new(false),
        save: args.save.clone(),
        config,
        tls,
        epoch: Instant::now(),
        connections: AtomicU64::new(0),
        transactions: AtomicU64::new(0),
        messages: AtomicU64::new(0),
        recipients: AtomicU64::new(0),
        rcpt_refused: AtomicU64::new(0),
        data_refused: AtomicU64::new(0),
        disconnects: AtomicU64::new(0),
        first_recipient: AtomicU64::new(0),
        last_recipient: AtomicU64::new(0),
        saved: AtomicU64::new(0),
        tls_sessions: AtomicU64::new(0),
        starttls_failed: AtomicU64::new(0),
        auth_ok: AtomicU64::new(0),
        auth_failed: AtomicU64::new(0),
    });
    // A signal raises the same flag the clock does, so the counts are printed either way.
    let signalled = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, signalled.clone()).map_err(SinkError::Signal)?;
    }

    let shards = crate::shard_count(args.shards, usize::MAX);
    // Shard 0 binds first so that port 0 becomes one concrete port all shards share.
    let (tx, rx) = mpsc::channel();
    let mut handles = vec![
        shard::spawn(0, args.listen.clone(), shared.clone(), tx.clone())
            .map_err(SinkError::Spawn)?,
    ];
    let bound = rx.recv().map_err(|_| SinkError::ShardDied(0))??;
    for id in 1..shards {
        handles.push(
            shard::spawn(id, bound.clone(), shared.clone(), tx.clone())
                .map_err(SinkError::Spawn)?,
        );
        rx.recv().map_err(|_| SinkError::ShardDied(id))??;
    }
    let listen: Vec<String> = bound.iter().map(|a| a.to_string()).collect();
    // Tests and scripts wait for this line.
    eprintln!("pigeon-load sink: listening on {}", listen.join(","));

    let deadline = shared.epoch + Duration::from_secs(args.max_seconds);
    let mut reached_expected = false;
    let mut reached_unix = 0.0;
    loop {
        if let Some(n) = args.expect_recipients {
            if shared.recipients.load(std::sync::atomic::Ordering::Acquire) >= n {
                reached_expected = true;
                reached_unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                break;
            }
        }
        if Instant::now() >= deadline || signalled.load(Relaxed) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = shared.epoch.elapsed();
    shared.stop.store(true, Relaxed);

    let mut domains = BTreeMap::new();
    let mut addresses: BTreeMap<String, AddressCounts> = BTreeMap::new();
    for h in handles {
        let counts = h.join().map_err(SinkError::ShardFailed)?;
        for (d, n) in counts.domains {
            *domains.entry(d).or_insert(0) += n;
        }
        for (addr, c) in listen.iter().zip(counts.addresses) {
            let a = addresses.entry(addr.clone()).or_default();
            a.connections += c.connections;
            a.messages += c.messages;
            a.recipients += c.recipients;
        }
    }
    let first = shared.first_recipient.load(Relaxed);
    let span = if first == 0 {
        0.0
    } else {
        shared
            .last_recipient
            .load(Relaxed)
            .saturating_sub(first - 1) as f64
            / 1e9
    };
    let recipients = shared.recipients.load(Relaxed);
    let report = Report {
        listen,
        shards,
        connections: shared.connections.load(Relaxed),
        transactions: shared.transactions.load(Relaxed),
        messages: shared.messages.load(Relaxed),
        recipients,
        rcpt_refused: shared.rcpt_refused.load(Relaxed),
        data_refused: shared.data_refused.load(Relaxed),
        disconnects: shared.disconnects.load(Relaxed),
        tls_sessions: shared.tls_sessions.load(Relaxed),
        starttls_failed: shared.starttls_failed.load(Relaxed),
        auth_ok: shared.auth_ok.load(Relaxed),
        auth_failed: shared.auth_failed.load(Relaxed),
        reached_expected,
        reached_unix,
        first_to_last_seconds: span,
        recipients_per_second: if span > 0.0 {
            recipients as f64 / span
        } else {
            0.0
        },
        elapsed_seconds: elapsed.as_secs_f64(),
        domains,
        addresses,
    };
    if reached_expected {
        eprintln!(
            "pigeon-load sink: {recipients} recipients, {span:.3} s from the first to the last"
        );
    }
    let json = report::to_json(&report)?;
    println!("{json}");
    if let Some(path) = &args.json {
        report::write(path, &json)?;
    }
    Ok(())
}
