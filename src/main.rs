//! The `pigeon` command: serve, check a config, look at the queue.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use pigeon::clock::now_micros;
use pigeon::config::Config;
use pigeon::runtime::files::Loaded;
use pigeon::runtime::server::serve;
use pigeon::spool::inspect::{describe, message_content, queued_messages, short_age};
use pigeon::spool::record::MessageId;

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

/// Why a command failed; printed after `pigeon: `.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Serve(#[from] pigeon::runtime::server::ServeError),
    #[error("{0}")]
    Config(#[from] pigeon::config::ConfigError),
    #[error("{0}")]
    Files(#[from] pigeon::runtime::files::LoadError),
    /// A file or directory named on the command line.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Standard input or output.
    #[error("{what}: {source}")]
    Stdio {
        what: &'static str,
        source: std::io::Error,
    },
    /// A command-line argument, named, and what is wrong with it.
    #[error("{arg}: {reason}")]
    Argument { arg: String, reason: String },
    #[error("{0}: not in the queue")]
    NotQueued(String),
    #[error("{0}")]
    Password(#[from] pigeon::auth::credentials::HashError),
    #[error("{0}")]
    UsersFile(#[from] pigeon::auth::credentials::CredentialsError),
    #[error("{0}")]
    Dkim(#[from] pigeon::dkim::DkimError),
}

impl CliError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
        move |source| CliError::Io {
            path: path.to_owned(),
            source,
        }
    }
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
        Command::Serve { config } => serve(config.as_deref()).map_err(CliError::from),
        Command::CheckConfig { file } => Config::load(&file)
            .map_err(CliError::from)
            .and_then(|config| Loaded::load(&config).map_err(CliError::from))
            .map(|_| println!("{}: ok", file.display())),
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

/// `pigeon passwd USER --file FILE`.
fn passwd(user: &str, file: &Path) -> Result<(), CliError> {
    use pigeon::auth::credentials::{hash_password, set_password, valid_user};
    valid_user(user).map_err(|reason| CliError::Argument {
        arg: format!("{user:?}"),
        reason: reason.to_owned(),
    })?;
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|source| CliError::Stdio {
            what: "reading the password from standard input",
            source,
        })?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(CliError::Argument {
            arg: "password".into(),
            reason: "empty (give it on standard input)".into(),
        });
    }
    let hash = hash_password(password)?;
    let replaced = set_password(file, user, &hash)?;
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
) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let algorithm: pigeon::dkim::Algorithm =
        algo.parse()
            .map_err(|e: pigeon::dkim::DkimError| CliError::Argument {
                arg: "--algo".into(),
                reason: e.to_string(),
            })?;
    let (pem, key) = pigeon::dkim::generate(algorithm, bits)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(CliError::io(out))?;
    file.write_all(pem.as_bytes()).map_err(CliError::io(out))?;
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

fn queue_list(spool: &Path) -> Result<(), CliError> {
    let messages = queued_messages(spool).map_err(CliError::io(spool))?;
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

fn queue_show(spool: &Path, id: &str, body_only: bool) -> Result<(), CliError> {
    let parsed: MessageId = id.parse().map_err(|_| CliError::Argument {
        arg: format!("{id:?}"),
        reason: "not a queue id".into(),
    })?;
    if body_only {
        let content = message_content(spool, parsed).map_err(CliError::io(spool))?;
        let content = content.ok_or_else(|| CliError::NotQueued(id.to_owned()))?;
        use std::io::Write;
        return std::io::stdout()
            .write_all(&content)
            .map_err(|source| CliError::Stdio {
                what: "writing the content",
                source,
            });
    }
    let messages = queued_messages(spool).map_err(CliError::io(spool))?;
    let m = messages
        .iter()
        .find(|m| m.id == parsed)
        .ok_or_else(|| CliError::NotQueued(id.to_owned()))?;
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
