//! The glommio loop around a [`Session`]: socket bytes in, replies out, messages to
//! intake. Everything SMTP is decided by the session; this file moves bytes, applies the
//! read deadlines, and runs the TLS handshakes, password checks and message submissions
//! the session asks for, through the [`Services`] it is given.
//!
//! Three clocks bound a session, so that a client trickling one byte at a time cannot hold
//! it open: a command line must be complete within `timeouts.command` of the moment the
//! session began waiting for it (not of the last byte); message content gets
//! `timeouts.data` per read; and the whole session ends at `timeouts.session`, at the next
//! command, or — for content already under way — one `timeouts.data` later.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use futures_lite::future;
use futures_rustls::server::TlsStream;
use glommio::net::TcpStream;

use crate::auth::{Authenticator, Verdict};
use crate::config::{ListenerMode, TimeoutsConfig, TlsMode};
use crate::intake::Intake;
use crate::runtime::shutdown::ShardStop;
use crate::session::auth::Login;
use crate::session::state::{AuthPolicy, Event, Session, SessionConfig};
use crate::session::tls::Acceptors;

/// Read size: big enough that a 5 KiB message is one read, small enough for many sessions.
const READ_CHUNK: usize = 16 * 1024;

enum Read {
    Bytes(std::io::Result<usize>),
    /// The shard began to stop while the session waited for a command.
    Stopping,
    /// The stop's grace period ran out while the session was still inside content.
    Deadline,
}

/// A session's connection: plain, or TLS after STARTTLS or on an implicit-TLS listener.
type Conn = crate::runtime::conn::Conn<TlsStream<TcpStream>>;

/// What one shard's sessions are given: their limits and identity, the read timeouts,
/// the shard's stop, TLS, password checks and intake.
pub struct Services {
    /// Limits and identity.
    pub config: Arc<SessionConfig>,
    /// Read timeouts.
    pub timeouts: TimeoutsConfig,
    /// The shard's stop.
    pub stop: Rc<ShardStop>,
    /// TLS for STARTTLS and implicit-TLS listeners.
    pub tls: Acceptors,
    /// SMTP AUTH users and failure counts, from `[auth]`.
    pub auth: Option<Arc<Authenticator>>,
    /// Where accepted messages go.
    pub intake: Rc<Intake>,
}

/// What the listener found out about the client before the session began.
#[derive(Clone, Copy, Debug)]
pub struct Client {
    /// The client's address.
    pub peer: SocketAddr,
    /// It may relay to any domain (`relay.networks`).
    pub may_relay: bool,
    /// It is exempt from the per-session limits (`limits.exempt`).
    pub exempt: bool,
}

/// Runs the server side of a TLS handshake, bounded by the command timeout and by the
/// end of a stop's grace period (a handshake holds the shard's spool, through intake,
/// and the spool closes only when every holder is gone).
async fn handshake(services: &Services, stream: TcpStream) -> Option<Conn> {
    let acceptor = services.tls.acceptor()?;
    let accept = async { acceptor.accept(stream).await.ok() };
    let timeout = async {
        glommio::timer::sleep(services.timeouts.command).await;
        None
    };
    let stopped = async {
        services.stop.deadline_passed().await;
        None
    };
    match future::or(accept, future::or(timeout, stopped)).await {
        Some(tls) => Some(Conn::Tls(Box::new(tls))),
        None => {
            tracing::debug!("TLS handshake failed or timed out");
            None
        }
    }
}

/// Serves one connection until it closes. `tls` and `mode` are the listener's.
pub async fn run(
    tcp: TcpStream,
    services: &Services,
    client: Client,
    tls: TlsMode,
    mode: ListenerMode,
) {
    let peer = client.peer;
    let session_deadline = Instant::now() + services.timeouts.session;
    // Replies are small writes the client waits for; don't hold them back for an ACK.
    let _ = tcp.set_nodelay(true);
    let mut stream = match tls {
        TlsMode::Implicit => match handshake(services, tcp).await {
            Some(conn) => conn,
            None => return,
        },
        _ => Conn::Plain(tcp),
    };
    let mut session = Session::new(services.config.clone(), peer, client.may_relay);
    match tls {
        TlsMode::Implicit => session.set_tls_active(),
        TlsMode::Starttls => session.offer_starttls(),
        TlsMode::None => {}
    }
    if client.exempt {
        session.exempt_from_limits();
    }
    if let Some(auth) = &services.auth {
        session.offer_auth(AuthPolicy {
            required: mode == ListenerMode::Submission,
            sender_match: auth.sender_match,
        });
    }
    // When the command line being read must be complete; set when the session starts
    // waiting for one, cleared by each reply.
    let mut command_deadline: Option<Instant> = None;
    let mut input = vec![0u8; READ_CHUNK];
    let (mut start, mut end) = (0usize, 0usize);
    let mut output = Vec::with_capacity(512);
    let mut told_to_stop = false;
    let mut start_tls = false;
    stream.set_write_timeout(services.timeouts.command);
    loop {
        // Feed the session until it needs more bytes.
        loop {
            session.set_spool_available(services.intake.has_space());
            let used = session.handle_input(&input[start..end]);
            start += used;
            let mut stored = false;
            while let Some(event) = session.poll_event() {
                match event {
                    Event::Message(envelope, body) => {
                        let result = services.intake.submit(&envelope, body).await;
                        match &result {
                            Ok(id) => session.handle_stored(Ok(&id.to_string())),
                            Err(reply) => session.handle_stored(Err(reply.clone())),
                        }
                        stored = true;
                    }
                    Event::Authenticate(login) => {
                        let verdict = authenticate(services, peer, login).await;
                        session.handle_auth_result(verdict);
                        // Input that came with the AUTH waits in the buffer, as after DATA.
                        stored = true;
                    }
                    Event::StartTls => start_tls = true,
                    Event::Close => {}
                }
            }
            if !stored || start == end {
                break;
            }
        }
        session.take_output(&mut output);
        if !output.is_empty() {
            if stream.write_all(&output, true).await.is_err() {
                return;
            }
            output.clear();
            command_deadline = None;
        }
        if session.is_closed() {
            stream.close().await;
            return;
        }
        if std::mem::take(&mut start_tls) {
            // Whatever the client pipelined after STARTTLS was sent in plain text and is
            // dropped unread (RFC 3207 §5; CVE-2011-0411).
            (start, end) = (0, 0);
            let Some(tcp) = stream.take_plain() else {
                return;
            };
            match handshake(services, tcp).await {
                Some(conn) => stream = conn,
                None => return,
            }
            stream.set_write_timeout(services.timeouts.command);
            session.handle_tls_started();
            continue;
        }
        if services.stop.is_stopping() && !told_to_stop {
            told_to_stop = true;
            session.handle_shutdown();
            continue;
        }
        // Make room: unconsumed bytes (a partial command line) move to the front.
        if start == end {
            (start, end) = (0, 0);
        } else if end == input.len() {
            input.copy_within(start..end, 0);
            (start, end) = (0, end - start);
            if end == input.len() {
                // Cannot happen (the session drops over-long lines), but never spin on it.
                input.resize(input.len() * 2, 0);
            }
        }
        let in_content = session.in_content();
        let now = Instant::now();
        let mut timeout = if in_content {
            command_deadline = None;
            // Content under way when the session's time ran out may take one more data
            // timeout: the client gets its 250 and then the 421, rather than losing the
            // message it had nearly sent.
            let hard = session_deadline + services.timeouts.data;
            services
                .timeouts
                .data
                .min(hard.saturating_duration_since(now))
        } else {
            if now >= session_deadline {
                session.handle_session_expired();
                continue;
            }
            let line = *command_deadline.get_or_insert(now + services.timeouts.command);
            line.min(session_deadline).saturating_duration_since(now)
        };
        if let Some(deadline) = services.stop.deadline() {
            timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
            stream.set_write_timeout(timeout);
        }
        stream.set_read_timeout(timeout);
        let read = if in_content || told_to_stop {
            // A read inside message content is abandoned only at the stop deadline, when
            // the session ends anyway: before that, bytes it took would be lost.
            let buf = &mut input[end..];
            future::or(async { Read::Bytes(stream.read(buf).await) }, async {
                services.stop.deadline_passed().await;
                Read::Deadline
            })
            .await
        } else {
            let buf = &mut input[end..];
            future::or(async { Read::Bytes(stream.read(buf).await) }, async {
                services.stop.wait().await;
                Read::Stopping
            })
            .await
        };
        match read {
            Read::Bytes(Ok(0)) => {
                session.handle_eof();
                return;
            }
            Read::Bytes(Ok(n)) => end += n,
            Read::Bytes(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                if Instant::now() >= session_deadline {
                    session.handle_session_expired()
                } else {
                    session.handle_timeout()
                }
            }
            Read::Bytes(Err(_)) => return,
            Read::Stopping => {}
            Read::Deadline => session.handle_deadline(),
        }
    }
}

/// Checks a login against the users file on the shard's blocking thread (argon2 takes
/// tens of milliseconds on purpose, too long for the executor), unless the client or the
/// user is past the failure limit: then, after `auth.failure_delay`, it is refused
/// unchecked. The password is dropped (and wiped) as soon as it is checked.
async fn authenticate(services: &Services, peer: SocketAddr, login: Login) -> Verdict {
    let Some(auth) = &services.auth else {
        return Verdict::Rejected;
    };
    let Login { user, password } = login;
    let checked_user = user.clone();
    let verdict = auth
        .authenticate(peer.ip(), &user, |credentials| {
            glommio::executor()
                .spawn_blocking(move || credentials.verify(&checked_user, password.expose()))
        })
        .await;
    match verdict {
        Verdict::Accepted => tracing::info!(client = %peer, user = %user, "authenticated"),
        Verdict::Rejected => tracing::info!(client = %peer, user = %user, "authentication failed"),
        Verdict::Blocked => {
            tracing::warn!(client = %peer, user = %user, "too many failed authentications");
            glommio::timer::sleep(auth.failure_delay).await;
        }
    }
    verdict
}
