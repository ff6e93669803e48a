//! `pigeon-load`: a load generator (`blast`) and a counting sink (`sink`) for any SMTP
//! server, modelled on Postfix's `smtp-source` and `smtp-sink` but reporting more: reply
//! codes, HdrHistogram latencies, counts per domain and per address, injected faults.
//!
//! Both sides run on glommio, one executor per shard, like pigeon itself, so that the tool
//! is not the bottleneck of the measurement it makes. Both are bounded: `blast` by a message
//! count and a time cap, `sink` by an expected recipient count and a time cap.
//!
//! Layout: [`sink`] (server: fault plan, sans-io session, shard driver), [`blast`]
//! (client: content, session driver, report) and [`report`] (the JSON both end with).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod blast;
mod report;
mod sink;
mod tls;

/// Command line.
#[derive(Parser, Debug)]
#[command(name = "pigeon-load", version, about = "SMTP load generator and sink")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Accept SMTP, discard (or save) the messages, count them, inject faults on request.
    Sink(SinkArgs),
    /// Send a bounded load of messages to an SMTP server and report rates and latencies.
    Blast(BlastArgs),
}

/// Options of `pigeon-load sink`.
#[derive(clap::Args, Debug, Clone)]
pub struct SinkArgs {
    /// Addresses to listen on, comma-separated (`127.0.0.2:25,127.0.0.3:25`); port 0 picks
    /// a free port, the same one on every shard.
    #[arg(long, value_delimiter = ',', required = true)]
    pub listen: Vec<std::net::SocketAddr>,
    /// Executors (threads), each bound to every address with SO_REUSEPORT; default: one
    /// per CPU.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Save each accepted message as a file under DIR/new (Maildir-like: written under
    /// DIR/tmp, then renamed), instead of discarding it.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Inject a fault; repeatable. `rcpt:CODE:PCT`, `data:CODE:PCT`, `mail:CODE:PCT`,
    /// `starttls:CODE:PCT`, `disconnect:rcpt:PCT`, `disconnect:data:PCT`,
    /// `disconnect:starttls:PCT` (a 220, then no handshake). 4xx and disconnects hit a
    /// given recipient (or message) on its first try only, so a retry passes; STARTTLS
    /// faults are drawn per connection.
    #[arg(long)]
    pub fault: Vec<String>,
    /// Exit once this many recipients have been accepted in completed messages, and
    /// print the time from the first to the last.
    #[arg(long)]
    pub expect_recipients: Option<u64>,
    /// Exit after this many seconds whatever happened.
    #[arg(long, default_value_t = 600)]
    pub max_seconds: u64,
    /// Also write the counts as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Host name in the greeting and EHLO reply.
    #[arg(long, default_value = "sink.pigeon-load.test")]
    pub hostname: String,
    /// Offer STARTTLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) for --tls-cert.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Offer AUTH PLAIN (under TLS when STARTTLS is offered) and require it before MAIL;
    /// only `USER:PASSWORD` passes.
    #[arg(long)]
    pub auth: Option<String>,
    /// Delay replies at a stage; repeatable. `greeting:MS`, `mail:MS`, `rcpt:MS`, `data:MS`
    /// (the reply after the content).
    #[arg(long)]
    pub delay: Vec<String>,
}

/// Options of `pigeon-load blast`.
#[derive(clap::Args, Debug, Clone)]
pub struct BlastArgs {
    /// The server, `HOST:PORT`.
    #[arg(long)]
    pub target: String,
    /// Concurrent SMTP sessions, spread over the shards.
    #[arg(long, default_value_t = 10)]
    pub sessions: usize,
    /// Messages to send in all (default 1000 unless --seconds is given).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Send for this many seconds instead of a message count.
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Hard cap on the run, in seconds, whatever else was asked.
    #[arg(long, default_value_t = 600)]
    pub max_seconds: u64,
    /// Recipients per message.
    #[arg(long, default_value_t = 1)]
    pub recipients: usize,
    /// Recipient domains (`d0.test` … `d{D-1}.test`).
    #[arg(long, default_value_t = 1)]
    pub domains: usize,
    /// Percentage of recipients at the hot domain `d0.test`; the rest spread over the others.
    #[arg(long)]
    pub hot_domain_share: Option<u8>,
    /// Message size in octets (headers included, before dot-stuffing).
    #[arg(long, default_value_t = 5120, conflicts_with = "eml")]
    pub size: usize,
    /// Send this message file instead of a generated one (line endings made CRLF).
    #[arg(long)]
    pub eml: Option<PathBuf>,
    /// Never pipeline, even when the server offers PIPELINING.
    #[arg(long)]
    pub no_pipelining: bool,
    /// Target rate in messages per second over all sessions.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Executors (threads); default: one per CPU, at most one per session.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Write the JSON result to this file instead of stdout.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// First recipient number (`u{N}`); change it to send to fresh recipients.
    #[arg(long, default_value_t = 0)]
    pub first_recipient: u64,
    /// Run STARTTLS after EHLO (sessions fail if the server does not offer it).
    #[arg(long)]
    pub starttls: bool,
    /// Verify the server's certificate against these CA certificates (PEM); without it any
    /// certificate is accepted.
    #[arg(long, requires = "starttls")]
    pub tls_ca: Option<PathBuf>,
    /// The TLS server name to send and verify; default: the target's host.
    #[arg(long, requires = "starttls")]
    pub tls_name: Option<String>,
    /// Authenticate with AUTH PLAIN as `USER:PASSWORD` (after STARTTLS).
    #[arg(long)]
    pub auth: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Cmd::Sink(args) => sink::run(args).map_err(Into::into),
        Cmd::Blast(args) => blast::run(args).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pigeon-load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The number of executors to start: `asked`, else one per CPU, never more than `cap`.
fn shard_count(asked: Option<usize>, cap: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    asked.unwrap_or(cpus).clamp(1, cap.max(1))
}
