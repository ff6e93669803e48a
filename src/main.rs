//! The `pigeon` command: serve, check a config, look at the queue.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{mpsc, Arc};

use clap::{Parser, Subcommand};

use pigeon::clock::now_micros;
use pigeon::config::{Config, Loaded};
use pigeon::outcome::log::DeliveryLog;
use pigeon::queue::deferred::Deferred;
use pigeon::queue::message::QueuedMessage;
use pigeon::runtime::memory::long_lived;
use pigeon::runtime::shard;
use pigeon::runtime::shared::Shared;
use pigeon::runtime::shutdown::{spawn_signal_thread, StopFlag};
use pigeon::spool::inspect::{describe, message_content, queued_messages, short_age};
use pigeon::spool::location::SegmentKey;
use pigeon::spool::record::MessageId;
use pigeon::spool::recover::{kill_records, repair};
use pigeon::spool::replay::{replay, RecipientState};
use pigeon::spool::segments::Segments;

#[global_allocator]
static GLOBAL: pigeon::runtime::memory::Allocator = pigeon::runtime::memory::Allocator;

#[derive(Parser)]
#[command(
    name = "pigeon",
    version,
    about = "A high-performance mail transfer agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (built-in defaults without --config).
    Serve {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file; exits non-zero naming the bad key.
    CheckConfig {
        /// TOML configuration file.
        file: PathBuf,
    },
    /// Look at the queue (offline: stop the server first).
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Add or replace a SMTP AUTH user: reads the password (one line) on standard input and
    /// writes `USER:argon2-hash` into FILE (created with mode 0600).
    Passwd {
        /// The login name (no ':', white space or control characters).
        user: String,
        /// The users file (`auth.users_file`).
        #[arg(long)]
        file: PathBuf,
    },
    /// DKIM key management.
    Dkim {
        #[command(subcommand)]
        command: DkimCommand,
    },
}

#[derive(Subcommand)]
enum DkimCommand {
    /// Make a signing key, write it (PKCS#8 PEM, mode 0600) and print the DNS record.
    Keygen {
        /// The signing domain (d=).
        #[arg(long)]
        domain: String,
        /// The selector (s=).
        #[arg(long)]
        selector: String,
        /// `rsa` or `ed25519`.
        #[arg(long)]
        algo: String,
        /// RSA key size (2048 to 8192).
        #[arg(long, default_value_t = 2048)]
        bits: usize,
        /// Where to write the private key; an existing file is not overwritten.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// One line per message, then its recipients.
    List {
        /// The spool directory.
        #[arg(long)]
        spool: PathBuf,
    },
    /// Everything about one message.
    Show {
        /// The queue id from the 250 reply.
        id: String,
        /// The spool directory.
        #[arg(long)]
        spool: PathBuf,
        /// Print only the message content, as it will be delivered.
        #[arg(long)]
        body: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PIGEON_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve { config } => serve(config.as_deref()),
        Command::CheckConfig { file } => Config::load(&file)
            .and_then(|config| Loaded::load(&config))
            .map(|_| println!("{}: ok", file.display()))
            .map_err(|e| e.to_string()),
        Command::Queue {
            command: QueueCommand::List { spool },
        } => queue_list(&spool),
        Command::Passwd { user, file } => passwd(&user, &file),
        Command::Dkim {
            command:
                DkimCommand::Keygen {
                    domain,
                    selector,
                    algo,
                    bits,
                    out,
                },
        } => dkim_keygen(&domain, &selector, &algo, bits, &out),
        Command::Queue {
            command: QueueCommand::Show { id, spool, body },
        } => queue_show(&spool, &id, body),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pigeon: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config_path: Option<&Path>) -> Result<(), String> {
    pigeon::runtime::memory::no_huge_pages();
    // The configuration, the files it names and the shared state live as long as the
    // process: in the long-lived heap, so that none of it pins a page that the traffic's
    // short-lived objects fill and free.
    let (config, files) = long_lived(|| {
        let config = match config_path {
            Some(path) => Config::load(path)?,
            None => Config::defaults(),
        };
        let files = Loaded::load(&config)?;
        Ok::<_, pigeon::config::ConfigError>((config, files))
    })
    .map_err(|e| e.to_string())?;
    let spool = &config.spool.path.clone();
    std::fs::create_dir_all(spool).map_err(|e| format!("spool.path {}: {e}", spool.display()))?;
    // Before the repair: another server's records must never be taken for torn tails.
    let _lock = pigeon::spool::lock::lock(spool).map_err(|e| e.to_string())?;
    let repaired = repair(spool).map_err(|e| format!("recovering {}: {e}", spool.display()))?;
    tracing::info!(
        records = repaired.records,
        truncated = repaired.truncated.len(),
        removed = repaired.removed.len(),
        "spool recovered"
    );
    let shards = config.shard_count();
    let shared = long_lived(|| share(config, files))?;
    let mut deferred: Vec<Deferred> = (0..shards).map(|_| Deferred::new()).collect();
    requeue(spool, &shared, &mut deferred)?;

    let flag = StopFlag::default();
    let reloading = shared.clone();
    spawn_signal_thread(flag.clone(), move || reloading.reload())
        .map_err(|e| format!("signal handling: {e}"))?;
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
        .map_err(|e| format!("starting shard {id}: {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut addresses = Vec::new();
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(bound)) => addresses = bound,
            Ok(Err(e)) => {
                flag.raise();
                return Err(e);
            }
            Err(_) => return Err("a shard died while starting".into()),
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
        Err("a shard failed".into())
    } else {
        Ok(())
    }
}

/// The state the shards share: the configuration, the delivery log, the spool's segment
/// references, and the loaded files (DKIM keys, AUTH users, TLS).
fn share(config: Config, files: Loaded) -> Result<Arc<Shared>, String> {
    let spool = &config.spool.path.clone();
    let config = Arc::new(config);
    let log = DeliveryLog::open(&config.log.delivery)
        .map_err(|e| format!("log.delivery {}: {e}", config.log.delivery.display()))?;
    let segments = Arc::new(Segments::new(spool.clone()));
    let shared = Shared::new(config, segments, log, files);
    if let Some(auth) = &shared.auth {
        tracing::info!(users = auth.credentials().len(), "SMTP AUTH users loaded");
    }
    Ok(Arc::new(shared))
}

/// Queues again everything the spool still owes: due recipients to the ready queues,
/// deferred ones to the shards' timers (spread over the shards), and counts the segment
/// references the records hold; segments with none are deleted.
fn requeue(spool: &Path, shared: &Shared, deferred: &mut [Deferred]) -> Result<(), String> {
    let replayed = replay(spool).map_err(|e| format!("replaying {}: {e}", spool.display()))?;
    let now = now_micros();
    let (mut messages, mut recipients, mut held) = (0usize, 0usize, 0usize);
    // Finished messages whose kill was cut short, and copies a copy forward left behind,
    // are killed now, durably, before any reference is counted: every segment is sealed
    // below, which deletes those with nothing live in them.
    let stale = replayed.stale_records();
    kill_records(spool, &stale).map_err(|e| format!("killing finished records: {e}"))?;
    replayed.hold(&shared.segments);
    for m in replayed.live() {
        let pending: Vec<(u32, u32, u64)> = m
            .states
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match *s {
                RecipientState::Pending {
                    attempts,
                    next_attempt_micros,
                } => Some((i as u32, attempts, next_attempt_micros)),
                RecipientState::Done(_) => None,
            })
            .collect();
        let states = m
            .states
            .iter()
            .map(|s| match *s {
                RecipientState::Done(kind) => kind as u8,
                RecipientState::Pending { .. } => 0,
            })
            .collect();
        let message = QueuedMessage::new(
            m.id,
            m.segment,
            m.offset,
            m.received_micros,
            m.sender.clone(),
            &m.recipients,
            m.smtputf8,
            m.eight_bit,
            m.size,
            states,
        )
        .with_dsn(
            &m.mail_params,
            m.recipient_params.iter().map(String::as_str),
        )
        .with_held(m.held())
        .into_shared();
        messages += 1;
        recipients += pending.len();
        shared.enqueue(
            &message,
            pending.iter().filter(|p| p.2 <= now).map(|p| (p.0, p.1)),
        );
        let later = pending.iter().filter(|p| p.2 > now).map(|p| (p.0, p.1));
        for (_, job) in shared.jobs(&message, later) {
            let due = job
                .recipients
                .iter()
                // `pending` is in index order (built from `enumerate`).
                .map(|&i| {
                    pending
                        .binary_search_by_key(&i, |p| p.0)
                        .map_or(0, |k| pending[k].2)
                })
                .min()
                .unwrap_or(0);
            deferred[held % deferred.len()].insert(now, due, job);
            held += 1;
        }
    }
    for seg in &replayed.segments {
        // Every existing segment is sealed: this run writes new ones.
        shared.segments.seal(SegmentKey {
            shard: seg.shard,
            seq: seg.seq,
        });
    }
    tracing::info!(
        messages,
        recipients,
        deferred_jobs = held,
        "queue rebuilt from the spool"
    );
    Ok(())
}

/// `pigeon passwd USER --file FILE`.
fn passwd(user: &str, file: &Path) -> Result<(), String> {
    use pigeon::auth::credentials::{hash_password, set_password, valid_user};
    valid_user(user).map_err(|e| format!("{user:?}: {e}"))?;
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("reading the password from standard input: {e}"))?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err("empty password (give it on standard input)".into());
    }
    let hash = hash_password(password).map_err(|e| e.to_string())?;
    let replaced = set_password(file, user, &hash).map_err(|e| e.to_string())?;
    let what = if replaced { "replaced" } else { "added" };
    eprintln!("{user}: {what} in {}", file.display());
    Ok(())
}

fn dkim_keygen(
    domain: &str,
    selector: &str,
    algo: &str,
    bits: usize,
    out: &Path,
) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let algorithm: pigeon::dkim::Algorithm = algo.parse().map_err(|e| format!("--algo: {e}"))?;
    let (pem, key) = pigeon::dkim::generate(algorithm, bits).map_err(|e| e.to_string())?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    file.write_all(pem.as_bytes())
        .map_err(|e| format!("{}: {e}", out.display()))?;
    // TXT strings are at most 255 octets (RFC 1035 §3.3); long keys are split.
    let record = key.dns_record();
    let chunks: Vec<String> = record
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    println!(
        "{selector}._domainkey.{domain}. IN TXT ( {} )",
        chunks.join(" ")
    );
    Ok(())
}

fn queue_list(spool: &Path) -> Result<(), String> {
    let messages = queued_messages(spool).map_err(|e| format!("{}: {e}", spool.display()))?;
    let now = now_micros() / 1_000_000;
    let mut recipients = 0;
    println!(
        "{:<20} {:>10} {:>5}  SENDER / RECIPIENTS",
        "ID", "SIZE", "AGE"
    );
    for m in &messages {
        let age = now.saturating_sub(m.received_micros / 1_000_000);
        println!(
            "{:<20} {:>10} {:>5}  <{}>",
            m.id,
            m.size,
            short_age(age),
            m.sender
        );
        for (rcpt, state) in m.recipients.iter().zip(&m.states) {
            println!("{:<38}  <{}> {}", "", rcpt, describe(state, now));
        }
        recipients += m.recipients.len();
    }
    println!("{} messages, {} recipients", messages.len(), recipients);
    Ok(())
}

fn queue_show(spool: &Path, id: &str, body_only: bool) -> Result<(), String> {
    let parsed: MessageId = id
        .parse()
        .map_err(|_| format!("{id:?} is not a queue id"))?;
    let err = |e: std::io::Error| format!("{}: {e}", spool.display());
    if body_only {
        let content = message_content(spool, parsed).map_err(err)?;
        let content = content.ok_or_else(|| format!("{id}: not in the queue"))?;
        use std::io::Write;
        return std::io::stdout()
            .write_all(&content)
            .map_err(|e| e.to_string());
    }
    let messages = queued_messages(spool).map_err(err)?;
    let m = messages
        .iter()
        .find(|m| m.id == parsed)
        .ok_or_else(|| format!("{id}: not in the queue"))?;
    let now = now_micros() / 1_000_000;
    let received = m.received_micros / 1_000_000;
    println!("id: {}", m.id);
    println!(
        "received: {} ({} ago)",
        received,
        short_age(now.saturating_sub(received))
    );
    println!("size: {}", m.size);
    println!("client: {} ({})", m.peer, m.helo);
    println!("sender: <{}>", m.sender);
    println!("mail parameters: {}", m.mail_params);
    for (rcpt, state) in m.recipients.iter().zip(&m.states) {
        println!("recipient: <{}> {}", rcpt, describe(state, now));
    }
    Ok(())
}
