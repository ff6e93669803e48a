//! The glommio loop around a [`Session`]: socket bytes in, replies out, messages to the
//! spool. Everything SMTP is decided by the session; this file moves bytes, applies the
//! read deadlines, runs TLS handshakes and password checks the session asks for, and
//! stores each message (DKIM signature, spool record, queue, delivery log).
//!
//! Three clocks bound a session, so that a client trickling one byte at a time cannot hold
//! it open: a command line must be complete within `timeouts.command` of the moment the
//! session began waiting for it (not of the last byte); message content gets
//! `timeouts.data` per read; and the whole session ends at `timeouts.session`, at the next
//! command, or — for content already under way — one `timeouts.data` later.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_lite::future;
use futures_rustls::server::TlsStream;
use glommio::net::TcpStream;

use crate::auth::Verdict;
use crate::config::{ListenerMode, TlsMode};

use crate::dkim;
use crate::outcome::log::LogEvent;
use crate::queue::message::QueuedMessage;
use crate::runtime::shard::ShardContext;
use crate::session::auth::Login;
use crate::session::state::{AuthPolicy, Event, Session};
use crate::smtp::envelope::{received_header, Envelope};
use crate::smtp::reply::Reply;
use crate::spool::record::{encode_message, MessageId};

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

/// Runs the server side of a TLS handshake, bounded by the command timeout.
async fn handshake(ctx: &ShardContext, stream: TcpStream) -> Option<Conn> {
    let acceptor = ctx.tls_acceptor()?;
    let accept = async { acceptor.accept(stream).await.ok() };
    let timeout = async {
        glommio::timer::sleep(ctx.timeouts.command).await;
        None
    };
    match future::or(accept, timeout).await {
        Some(tls) => Some(Conn::Tls(Box::new(tls))),
        None => {
            tracing::debug!("TLS handshake failed or timed out");
            None
        }
    }
}

/// Serves one connection until it closes. `tls` and `mode` are the listener's.
pub async fn run(tcp: TcpStream, ctx: &ShardContext, tls: TlsMode, mode: ListenerMode) {
    let Ok(peer) = tcp.peer_addr() else { return };
    let session_deadline = Instant::now() + ctx.timeouts.session;
    // Replies are small writes the client waits for; don't hold them back for an ACK.
    let _ = tcp.set_nodelay(true);
    let mut stream = match tls {
        TlsMode::Implicit => match handshake(ctx, tcp).await {
            Some(conn) => conn,
            None => return,
        },
        _ => Conn::Plain(tcp),
    };
    let mut session = Session::new(ctx.session.clone(), peer, ctx.may_relay(peer.ip()));
    match tls {
        TlsMode::Implicit => session.set_tls_active(),
        TlsMode::Starttls => session.offer_starttls(),
        TlsMode::None => {}
    }
    if ctx.shared.admission.is_exempt(peer.ip()) {
        session.exempt_from_limits();
    }
    if let Some(auth) = &ctx.shared.auth {
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
    stream.set_write_timeout(ctx.timeouts.command);
    loop {
        // Feed the session until it needs more bytes.
        loop {
            session.set_spool_available(ctx.spool.has_space());
            let used = session.handle_input(&input[start..end]);
            start += used;
            let mut stored = false;
            while let Some(event) = session.poll_event() {
                match event {
                    Event::Message(envelope, body) => {
                        let result = store(ctx, peer, &envelope, body).await;
                        match &result {
                            Ok(id) => session.handle_stored(Ok(&id.to_string())),
                            Err(reply) => session.handle_stored(Err(reply.clone())),
                        }
                        stored = true;
                    }
                    Event::Authenticate(login) => {
                        let verdict = authenticate(ctx, peer, login).await;
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
            match handshake(ctx, tcp).await {
                Some(conn) => stream = conn,
                None => return,
            }
            stream.set_write_timeout(ctx.timeouts.command);
            session.handle_tls_started();
            continue;
        }
        if ctx.stop.is_stopping() && !told_to_stop {
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
            let hard = session_deadline + ctx.timeouts.data;
            ctx.timeouts.data.min(hard.saturating_duration_since(now))
        } else {
            if now >= session_deadline {
                session.handle_session_expired();
                continue;
            }
            let line = *command_deadline.get_or_insert(now + ctx.timeouts.command);
            line.min(session_deadline).saturating_duration_since(now)
        };
        if let Some(deadline) = ctx.stop_deadline.get() {
            timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
            stream.set_write_timeout(timeout);
        }
        stream.set_read_timeout(timeout);
        let read = if in_content || told_to_stop {
            // A read inside message content is abandoned only at the stop deadline, when
            // the session ends anyway: before that, bytes it took would be lost.
            let buf = &mut input[end..];
            future::or(async { Read::Bytes(stream.read(buf).await) }, async {
                ctx.stop.wait().await;
                let deadline = ctx.stop_deadline.get().unwrap_or_else(Instant::now);
                glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
                Read::Deadline
            })
            .await
        } else {
            let buf = &mut input[end..];
            future::or(async { Read::Bytes(stream.read(buf).await) }, async {
                ctx.stop.wait().await;
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
async fn authenticate(ctx: &ShardContext, peer: SocketAddr, login: Login) -> Verdict {
    let Some(auth) = &ctx.shared.auth else {
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

/// Signs (DKIM), writes one message record and waits until it is durable. Returns its
/// queue id, or the reply the client gets instead.
async fn store(
    ctx: &ShardContext,
    peer: SocketAddr,
    envelope: &Envelope,
    body: Vec<u8>,
) -> Result<MessageId, Reply> {
    let id = ctx.spool.next_id();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let received = received_header(
        envelope,
        &ctx.session.hostname,
        &id.to_string(),
        now.as_secs(),
    );
    let (signatures, signed_by) = dkim_sign(ctx, envelope, &body, now.as_secs())?;
    let received_micros = now.as_micros() as u64;
    let size = (received.len() + signatures.len() + body.len()) as u64;
    let eight_bit = !received.is_ascii() || !body.is_ascii();
    let head = encode_message(
        id,
        received_micros,
        envelope,
        eight_bit,
        &[&received, &signatures, &body],
    );
    let location = ctx
        .spool
        .append(vec![head, received, signatures, body], 1)
        .await
        .map_err(|e| e.reply())?;
    let sender = envelope.sender.as_ref().map_or("", |s| s.as_str());
    let recipients = envelope.recipients.iter().map(|r| r.mailbox.as_str());
    let message = QueuedMessage::new(
        id,
        location.segment,
        location.offset,
        received_micros,
        sender.to_owned(),
        recipients,
        envelope.smtputf8,
        eight_bit,
        size,
        vec![0; envelope.recipients.len()],
    )
    .with_dsn(
        &envelope.mail_params,
        envelope.recipients.iter().map(|r| r.params.as_str()),
    );
    let message = message.into_shared();
    ctx.shared.enqueue(
        &message,
        (0..envelope.recipients.len() as u32).map(|i| (i, 0)),
    );
    let client = peer.to_string();
    ctx.log(&LogEvent {
        event: "received",
        id: Some(id),
        sender,
        recipients: Some(envelope.recipients.len()),
        size: Some(size),
        host: Some(&client),
        dkim: (!signed_by.is_empty()).then_some(signed_by.as_str()),
        auth: envelope.auth.as_deref(),
        ..LogEvent::default()
    });
    tracing::debug!(id = %id, shard = ctx.id, client = %peer, size, "received");
    Ok(id)
}

/// The `DKIM-Signature:` fields for a message, once, whatever its recipient count: one per
/// key of the closest configured domain at or above the From domain, unless the message
/// already carries a signature by that domain and selector. Uses the body hashes the
/// session computed while the content streamed in. Returns the fields and a summary for
/// the log (`d=… s=… a=…; …`).
fn dkim_sign(
    ctx: &ShardContext,
    envelope: &Envelope,
    content: &[u8],
    now_unix: u64,
) -> Result<(Vec<u8>, String), Reply> {
    // Only mail from clients allowed to relay is signed: a stranger sending to one of our
    // relay.domains must not get a From header of ours signed with our key.
    let trusted = ctx.may_relay(envelope.peer.ip()) || envelope.auth.is_some();
    if ctx.shared.dkim.is_empty() || !trusted {
        return Ok((Vec::new(), String::new()));
    }
    // The header section, up to but not including the empty line.
    let headers = if content.starts_with(b"\r\n") {
        &content[..0]
    } else {
        let end = memchr::memmem::find(content, b"\r\n\r\n").map_or(content.len(), |i| i + 2);
        &content[..end]
    };
    let Some(domain) = dkim::from_domain(headers) else {
        return Ok((Vec::new(), String::new()));
    };
    let mut fields = Vec::new();
    let mut summary = Vec::new();
    for signer in ctx.shared.signers_for(&domain) {
        if dkim::already_signed(headers, &signer.domain, &signer.selector) {
            continue;
        }
        let Some((_, hash)) = envelope
            .body_hashes
            .iter()
            .find(|(c, _)| *c == signer.body_canon)
        else {
            continue;
        };
        let field = signer.sign(headers, hash, now_unix).map_err(|e| {
            tracing::error!(d = %signer.domain, s = %signer.selector, error = %e, "DKIM signing failed");
            e.reply()
        })?;
        fields.extend(field);
        summary.push(format!(
            "d={} s={} a={}",
            signer.domain,
            signer.selector,
            signer.key.algorithm().name()
        ));
    }
    Ok((fields, summary.join("; ")))
}
