//! `pigeon-load blast`: a bounded SMTP load against any server.
//!
//! - [`content`]: the message, built once in wire form.
//! - [`session`]: one SMTP session on a shard.
//!
//! Sessions claim message numbers from one shared counter until the budget is spent or the
//! time is up, so the total is exact however sessions are spread over shards. Each shard
//! tallies replies and latencies for itself ([`Tally`]); the main thread merges them once
//! the shards are done, and meanwhile draws a progress line if stderr is a terminal.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::report::{self, ReportError};
use crate::BlastArgs;

pub mod content;
pub mod session;

/// Latencies are recorded in microseconds, from 1 µs to 10 minutes, 3 significant digits.
const LATENCY_MAX_MICROS: u64 = 600_000_000;

/// The run, shared read-only by every session (except the two counters).
#[derive(Debug)]
pub struct Plan {
    /// `host:port`.
    pub target: String,
    /// The message in wire form, terminator included.
    pub content: Vec<u8>,
    /// The envelope sender.
    pub sender: String,
    /// Messages to send in all.
    pub messages: u64,
    /// Recipients per message.
    pub recipients: usize,
    /// Number of recipient domains.
    pub domains: usize,
    /// Percentage at `d0.test`, if skewed.
    pub hot_share: Option<u8>,
    /// Pipeline when offered.
    pub pipelining: bool,
    /// Sessions in all (for rate spacing).
    pub sessions: usize,
    /// Time between two messages of one session, when a rate is set.
    pub interval: Option<Duration>,
    /// First recipient number.
    pub first_recipient: u64,
    /// When the run began.
    pub start: Instant,
    /// No new message after this.
    pub deadline: Instant,
    /// Next message number to claim.
    pub next: AtomicU64,
    /// Transactions finished (any outcome), for the progress line.
    pub done: AtomicU64,
    /// STARTTLS after EHLO, when asked.
    pub tls: Option<BlastTls>,
    /// The AUTH PLAIN initial response (RFC 4616, base64), when asked.
    pub auth: Option<String>,
}

/// How sessions run STARTTLS.
#[derive(Debug)]
pub struct BlastTls {
    /// The rustls client configuration (verifying or not, see [`crate::tls`]).
    pub config: Arc<rustls::ClientConfig>,
    /// The name sent (SNI) and, when verifying, checked.
    pub name: rustls::pki_types::ServerName<'static>,
}

impl Plan {
    /// Claims the next message number, or `None` when the budget or the time is spent.
    pub fn claim(&self) -> Option<u64> {
        if !self.has_time() {
            return None;
        }
        let i = self.next.fetch_add(1, Relaxed);
        (i < self.messages).then_some(i)
    }

    /// True until the deadline.
    pub fn has_time(&self) -> bool {
        Instant::now() < self.deadline
    }

    /// The recipients of message `index`: `u{g}@d{j}.test`, `g` numbering every recipient
    /// of the run, so no two recipients are the same (a retry test can resend them by
    /// starting over at the same `--first-recipient`).
    pub fn recipients(&self, index: u64) -> Vec<String> {
        (0..self.recipients as u64)
            .map(|k| {
                let g = self.first_recipient + index * self.recipients as u64 + k;
                format!("u{g}@d{}.test", self.domain_of(g))
            })
            .collect()
    }

    fn domain_of(&self, g: u64) -> u64 {
        let d = self.domains.max(1) as u64;
        match self.hot_share {
            Some(pct) if d > 1 => {
                // A hash, not `g % 100`, so the hot share does not follow message boundaries.
                if mix(g) % 100 < u64::from(pct) {
                    0
                } else {
                    1 + mix(g ^ 0x5555) % (d - 1)
                }
            }
            _ => g % d,
        }
    }
}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What one shard saw; merged into the report.
#[derive(Debug)]
pub struct Tally {
    /// Reply code counts per step (`greeting`, `ehlo`, `mail`, `rcpt`, `data`, `dot`, `rset`).
    pub codes: BTreeMap<&'static str, BTreeMap<u16, u64>>,
    /// Messages answered 250 after the dot.
    pub messages: u64,
    /// Accepted recipients of those messages.
    pub recipients: u64,
    /// Connections opened.
    pub connections: u64,
    /// Transport or protocol errors (each ends a connection).
    pub errors: u64,
    /// Microseconds from the final dot to its reply.
    pub latency: Histogram<u64>,
    /// TLS sessions established, by protocol version.
    pub tls: BTreeMap<&'static str, u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            codes: BTreeMap::new(),
            messages: 0,
            recipients: 0,
            connections: 0,
            errors: 0,
            // The bounds are constants that hdrhistogram accepts.
            latency: Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, 3).expect("valid bounds"),
            tls: BTreeMap::new(),
        }
    }

    /// Counts a reply code at `step`.
    pub fn code(&mut self, step: &'static str, code: u16) {
        *self.codes.entry(step).or_default().entry(code).or_insert(0) += 1;
    }

    /// Records the time from the final dot to its reply.
    pub fn record_latency(&mut self, d: Duration) {
        let micros = (d.as_micros() as u64).clamp(1, LATENCY_MAX_MICROS);
        let _ = self.latency.record(micros);
    }

    fn merge(&mut self, other: Tally) {
        for (step, codes) in other.codes {
            let mine = self.codes.entry(step).or_default();
            for (code, n) in codes {
                *mine.entry(code).or_insert(0) += n;
            }
        }
        self.messages += other.messages;
        self.recipients += other.recipients;
        self.connections += other.connections;
        self.errors += other.errors;
        for (version, n) in other.tls {
            *self.tls.entry(version).or_insert(0) += n;
        }
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
struct Latency {
    count: u64,
    min: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

/// The JSON result.
#[derive(Debug, Serialize)]
struct Report {
    target: String,
    sessions: usize,
    shards: usize,
    pipelining: bool,
    message_size: usize,
    recipients_per_message: usize,
    /// Transactions started.
    messages_attempted: u64,
    /// Messages answered 250 after the dot.
    messages_accepted: u64,
    recipients_accepted: u64,
    connections: u64,
    errors: u64,
    seconds: f64,
    messages_per_second: f64,
    recipients_per_second: f64,
    /// Step → reply code → count.
    replies: BTreeMap<&'static str, BTreeMap<u16, u64>>,
    /// From the final dot to the reply, in milliseconds.
    latency_ms: Latency,
    /// TLS sessions by protocol version (empty without `--starttls`).
    tls_sessions: BTreeMap<&'static str, u64>,
    /// AUTH was used.
    auth: bool,
}

/// Why the blast could not start, or could not report.
#[derive(Debug, thiserror::Error)]
pub enum BlastError {
    /// `--sessions` or `--recipients` is 0.
    #[error("--sessions and --recipients must be at least 1")]
    NoSessionsOrRecipients,
    /// `--hot-domain-share` is over 100.
    #[error("--hot-domain-share is a percentage")]
    HotShare,
    /// The `--eml` file cannot be read.
    #[error("{}: {source}", path.display())]
    ReadEml {
        /// The file given.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// `--rate` is zero or negative.
    #[error("--rate must be positive")]
    Rate,
    /// The TLS client cannot be set up (CA file, server name), with pigeon's message.
    #[error("{0}")]
    Tls(String),
    /// `--auth` is not `USER:PASSWORD`.
    #[error("--auth wants USER:PASSWORD")]
    AuthSpec,
    /// `--auth` without `--starttls`.
    #[error("--auth needs --starttls: servers take passwords only over TLS")]
    AuthWithoutTls,
    /// A shard's executor cannot be started.
    #[error(transparent)]
    Spawn(glommio::GlommioError<()>),
    /// A shard's executor failed instead of returning its tally.
    #[error("shard failed: {0}")]
    ShardFailed(#[source] glommio::GlommioError<()>),
    /// The report cannot be made into JSON or written.
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// Runs the blast and prints its report.
pub fn run(args: BlastArgs) -> Result<(), BlastError> {
    if args.sessions == 0 || args.recipients == 0 {
        return Err(BlastError::NoSessionsOrRecipients);
    }
    if args.hot_domain_share.is_some_and(|p| p > 100) {
        return Err(BlastError::HotShare);
    }
    let sender = "blast@pigeon-load.test".to_string();
    let content = match &args.eml {
        Some(path) => {
            content::from_eml(&std::fs::read(path).map_err(|source| BlastError::ReadEml {
                path: path.clone(),
                source,
            })?)
        }
        None => content::generate(args.size, &sender),
    };
    let max = Duration::from_secs(args.max_seconds);
    let run_for = args
        .seconds
        .map_or(max, |s| Duration::from_secs(s).min(max));
    let messages = match (args.messages, args.seconds) {
        (Some(m), _) => m,
        (None, Some(_)) => u64::MAX,
        (None, None) => 1000,
    };
    let interval = match args.rate {
        Some(r) if r > 0.0 => Some(Duration::from_secs_f64(args.sessions as f64 / r)),
        Some(_) => return Err(BlastError::Rate),
        None => None,
    };
    let tls = if args.starttls {
        let host = args
            .tls_name
            .clone()
            .unwrap_or_else(|| host_of(&args.target));
        Some(BlastTls {
            config: crate::tls::client_config(args.tls_ca.as_deref()).map_err(BlastError::Tls)?,
            name: crate::tls::server_name(&host).map_err(BlastError::Tls)?,
        })
    } else {
        None
    };
    let auth = match &args.auth {
        Some(user_pass) => {
            let (user, pass) = user_pass.split_once(':').ok_or(BlastError::AuthSpec)?;
            if !args.starttls {
                return Err(BlastError::AuthWithoutTls);
            }
            // RFC 4616: authzid (empty) NUL authcid NUL passwd.
            Some(data_encoding::BASE64.encode(format!("\0{user}\0{pass}").as_bytes()))
        }
        None => None,
    };
    let start = Instant::now();
    let plan = Arc::new(Plan {
        target: args.target.clone(),
        content,
        sender,
        messages,
        recipients: args.recipients,
        domains: args.domains,
        hot_share: args.hot_domain_share,
        pipelining: !args.no_pipelining,
        sessions: args.sessions,
        interval,
        first_recipient: args.first_recipient,
        start,
        deadline: start + run_for,
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        tls,
        auth,
    });

    let shards = crate::shard_count(args.shards, args.sessions);
    let finished = Arc::new(AtomicUsize::new(0));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut handles = Vec::new();
    for id in 0..shards {
        // Sessions id, id + shards, id + 2·shards… run on shard id.
        let numbers: Vec<usize> = (id..args.sessions).step_by(shards).collect();
        let plan = plan.clone();
        let finished = finished.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(id % cpus))
            .name(&format!("blast-{id}"))
            .spawn(move || async move {
                let tally = Rc::new(RefCell::new(Tally::new()));
                let tasks: Vec<_> = numbers
                    .into_iter()
                    .map(|n| {
                        let (plan, tally) = (plan.clone(), tally.clone());
                        glommio::spawn_local(async move { session::run(&plan, n, &tally).await })
                            .detach()
                    })
                    .collect();
                for t in tasks {
                    t.await;
                }
                finished.fetch_add(1, Relaxed);
                tally.replace(Tally::new())
            })
            .map_err(BlastError::Spawn)?;
        handles.push(handle);
    }

    // A progress line only for a person watching: never into a CI log or a pipe.
    let tty = std::io::stderr().is_terminal();
    while finished.load(Relaxed) < shards {
        std::thread::sleep(Duration::from_millis(if tty { 250 } else { 20 }));
        if tty {
            let done = plan.done.load(Relaxed);
            let secs = start.elapsed().as_secs_f64();
            eprint!(
                "\r{done} messages, {:.0} msg/s, {secs:.1} s   ",
                done as f64 / secs.max(1e-9)
            );
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    if tty {
        eprintln!();
    }
    let mut tally = Tally::new();
    for h in handles {
        tally.merge(h.join().map_err(BlastError::ShardFailed)?);
    }
    let ms = |q: f64| tally.latency.value_at_quantile(q) as f64 / 1000.0;
    let report = Report {
        target: args.target.clone(),
        sessions: args.sessions,
        shards,
        pipelining: !args.no_pipelining,
        // The size as sent to the user, before stuffing and without the terminator.
        message_size: pigeon::smtp::data::unstuff(&plan.content[..plan.content.len() - 3]).len(),
        recipients_per_message: args.recipients,
        messages_attempted: plan.done.load(Relaxed),
        messages_accepted: tally.messages,
        recipients_accepted: tally.recipients,
        connections: tally.connections,
        errors: tally.errors,
        seconds,
        messages_per_second: tally.messages as f64 / seconds,
        recipients_per_second: tally.recipients as f64 / seconds,
        replies: tally.codes.clone(),
        latency_ms: Latency {
            count: tally.latency.len(),
            min: tally.latency.min() as f64 / 1000.0,
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            max: tally.latency.max() as f64 / 1000.0,
        },
        tls_sessions: tally.tls.clone(),
        auth: args.auth.is_some(),
    };
    eprint!("{}", table(&report));
    let json = report::to_json(&report)?;
    match &args.json {
        Some(path) => report::write(path, &json)?,
        None => println!("{json}"),
    }
    Ok(())
}

/// The host part of `host:port` (`[v6]:port` too).
fn host_of(target: &str) -> String {
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

/// The human-readable summary for stderr.
fn table(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "pigeon-load blast → {}", r.target);
    let _ = writeln!(
        s,
        "  {} sessions on {} shards, pipelining {}, {} octets × {} recipients",
        r.sessions,
        r.shards,
        if r.pipelining { "on" } else { "off" },
        r.message_size,
        r.recipients_per_message
    );
    let _ = writeln!(
        s,
        "  {:>10} messages accepted of {} in {:.3} s: {:.1} msg/s, {:.1} rcpt/s",
        r.messages_accepted,
        r.messages_attempted,
        r.seconds,
        r.messages_per_second,
        r.recipients_per_second
    );
    let l = &r.latency_ms;
    let _ = writeln!(
        s,
        "  reply after dot (ms): p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  (n={})",
        l.p50, l.p90, l.p99, l.max, l.count
    );
    for (step, codes) in &r.replies {
        let list: Vec<String> = codes.iter().map(|(c, n)| format!("{c}×{n}")).collect();
        let _ = writeln!(s, "  {step:>8}: {}", list.join("  "));
    }
    for (version, n) in &r.tls_sessions {
        let _ = writeln!(
            s,
            "  {version}: {n} sessions{}",
            if r.auth { ", AUTH PLAIN" } else { "" }
        );
    }
    if r.errors > 0 {
        let _ = writeln!(s, "  errors: {} (connections lost or refused)", r.errors);
    }
    s
}
