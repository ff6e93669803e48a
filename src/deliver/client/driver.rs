//! The glommio loop around a delivery [`Client`]: connect, move bytes, apply the RFC 5321
//! §4.5.3.2 timeout of whatever the client waits for, and write message content straight
//! from the spool's memory map when the client asks for it. After STARTTLS the same loop
//! runs over rustls.

use std::net::SocketAddr;
use std::time::Duration;

use futures_lite::future;
use futures_rustls::client::TlsStream;
use futures_rustls::TlsConnector;
use glommio::net::TcpStream;

use crate::config::TlsPolicy;
use crate::deliver::client::envelope::Envelope;
use crate::deliver::client::machine::{Client, ClientConfig, ClientEvent, StartTls};
use crate::deliver::client::tls::{server_name, version_name, TlsClients};
use crate::deliver::client::waits::DATA_BLOCK_TIMEOUT;
use crate::smtp::reply::{Enhanced, Reply};

/// RFC 5321 does not give a connect timeout; 30 s is Postfix's `smtp_connect_timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// RFC 3207 gives no handshake timeout; 5 minutes, like the command replies around it
/// (Postfix's `smtp_starttls_timeout` is 300 s too).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

const READ_CHUNK: usize = 8 * 1024;

/// Content up to this size is copied into one buffer with the final `.CRLF` and sent in
/// one write; larger content goes out straight from the spool's map, then the dot.
const COPY_CONTENT_UP_TO: usize = 64 * 1024;

/// The room of a connection's batch buffer. A batch of transactions is written in pieces
/// of at most this much rather than gathered whole (content that does not fit with its
/// commands goes out from the spool's map): a buffer that grew to a 256 KiB batch
/// stays that size while its connection lives, and when connections close after a burst
/// those blocks leave the allocator's pages of their size class pinned by whatever
/// long-lived block shares them (measured in `docs/benchmarks.md`, "Memory per queued
/// recipient").
const WRITE_BUFFER: usize = COPY_CONTENT_UP_TO + 8 * 1024;

/// A delivery connection: plain, or TLS after STARTTLS.
type Conn = crate::runtime::conn::Conn<TlsStream<TcpStream>>;

/// How TLS is to be used on one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsUse {
    /// The domain's policy.
    pub policy: TlsPolicy,
    /// The retry in plain text after a failed opportunistic handshake: no STARTTLS.
    pub plain: bool,
}

/// Why [`Connection::open`] gave up.
#[derive(Debug)]
pub struct OpenError {
    /// The reply to record for the recipients (a 4xx).
    pub reply: Reply,
    /// The TLS handshake failed under `opportunistic`: the same host may be tried again in
    /// plain text (as Postfix does).
    pub retry_plain: bool,
}

impl From<Reply> for OpenError {
    fn from(reply: Reply) -> OpenError {
        OpenError {
            reply,
            retry_plain: false,
        }
    }
}

/// An open SMTP connection to one receiving host, ready for transactions.
pub struct Connection {
    stream: Conn,
    client: Client,
    input: Vec<u8>,
    filled: usize,
    output: Vec<u8>,
    /// [`Connection::send_many`]'s buffer, kept apart from `output` (which trades places
    /// with the client's command buffer) so that it keeps its [`WRITE_BUFFER`] of room.
    batch: Vec<u8>,
    /// The host name (MX or route) this connection goes to.
    pub host: String,
    /// The address connected to.
    pub addr: SocketAddr,
    /// The TLS version in use (`TLSv1.3`, `TLSv1.2`), none in plain text.
    pub tls: Option<&'static str>,
}

/// How a transaction ended when it did not end normally: the reply every recipient still
/// undecided gets, and those recipients (indices into the envelope).
pub type Broken = (Reply, Vec<usize>);

/// How a transaction ended: one reply per recipient index, or how the connection broke.
pub type Outcome = Result<Vec<(usize, Reply)>, Broken>;

fn temporary(text: String) -> Reply {
    Reply::new(451, Enhanced(4, 4, 1), text)
}

impl Connection {
    /// Connects to `addr` and runs the greeting, EHLO and, as `tls` says, STARTTLS and EHLO
    /// again. On failure returns the reply to record for the recipients (always a 4xx:
    /// another host or a later try may work), and whether to try this host in plain text.
    pub async fn open(
        addr: SocketAddr,
        host: &str,
        helo: &str,
        tls: TlsUse,
        clients: &TlsClients,
    ) -> Result<Connection, OpenError> {
        let stream = TcpStream::connect_timeout(addr, CONNECT_TIMEOUT)
            .await
            .map_err(|e| temporary(format!("connect to {host}[{addr}]: {e}")))?;
        // Commands and the content's last segment are small writes followed by a wait for
        // a reply: with Nagle's algorithm each would sit out the peer's delayed ACK (40 ms).
        let _ = stream.set_nodelay(true);
        let starttls = match tls.policy {
            TlsPolicy::Disabled => StartTls::Never,
            TlsPolicy::Opportunistic if tls.plain => StartTls::Never,
            TlsPolicy::Opportunistic => StartTls::IfOffered,
            TlsPolicy::Required | TlsPolicy::Verify => StartTls::Required,
        };
        let client = Client::new(ClientConfig {
            helo_name: helo.to_owned(),
            starttls,
        });
        let mut conn = Connection {
            stream: Conn::Plain(stream),
            client,
            input: vec![0; READ_CHUNK],
            filled: 0,
            output: Vec::new(),
            batch: Vec::new(),
            host: host.to_owned(),
            addr,
            tls: None,
        };
        let mut event = conn.next_event().await;
        if event == ClientEvent::StartTls {
            conn.start_tls(tls.policy, clients).await?;
            event = conn.next_event().await;
        }
        if event == ClientEvent::Ready {
            return Ok(conn);
        }
        let error = match event {
            // Our own refusal (TLS required but not to be had): say so, naming the host.
            ClientEvent::Failed { reply, .. } if reply.enhanced == Some(Enhanced(4, 7, 4)) => {
                let text = format!("{} by host {host}[{addr}]", reply.lines.join(" "));
                Reply::new(451, Enhanced(4, 7, 4), text).into()
            }
            ClientEvent::Failed { reply, .. } => {
                // A refusal to talk is about this host, not the recipients: try elsewhere
                // or later, never bounce on it.
                let text = format!("{host}[{addr}] refused to talk: {reply}");
                if reply.code >= 500 {
                    temporary(text)
                } else {
                    Reply {
                        lines: vec![text.into()],
                        ..reply
                    }
                }
                .into()
            }
            other => temporary(format!("{host}[{addr}]: unexpected {other:?}")).into(),
        };
        // After a refused greeting or EHLO the server still waits for QUIT (RFC 5321
        // §3.1), which the client has queued; a session that broke has nothing to say.
        if !conn.client.is_closed() {
            conn.quit().await;
        }
        Err(error)
    }

    /// Runs the TLS handshake after the server's 220 to STARTTLS, bounded by
    /// [`HANDSHAKE_TIMEOUT`]. Input read before it is dropped (RFC 3207 §5: it may have been
    /// injected in plain text).
    async fn start_tls(
        &mut self,
        policy: TlsPolicy,
        clients: &TlsClients,
    ) -> Result<(), OpenError> {
        self.filled = 0;
        let (host, addr) = (&self.host, self.addr);
        // The client sends STARTTLS only in plain text, so the stream is plain here.
        let Some(tcp) = self.stream.take_plain() else {
            return Err(Reply::new(451, Enhanced(4, 7, 5), "TLS negotiated twice").into());
        };
        let verify = policy == TlsPolicy::Verify;
        let config = if verify {
            clients.verified.clone()
        } else {
            clients.unverified.clone()
        };
        let name = server_name(host, addr.ip());
        let handshake = async {
            TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())
        };
        let timeout = async {
            glommio::timer::sleep(HANDSHAKE_TIMEOUT).await;
            Err("timed out".to_string())
        };
        match future::or(handshake, timeout).await {
            Ok(tls) => {
                let (_, session) = tls.get_ref();
                let version = version_name(session);
                let cipher = session
                    .negotiated_cipher_suite()
                    .map(|c| format!("{:?}", c.suite()))
                    .unwrap_or_default();
                let trust = if verify { "Trusted" } else { "Untrusted" };
                tracing::debug!(%host, %addr, version, cipher, "{trust} TLS connection established");
                self.tls = Some(version);
                self.stream = Conn::Tls(Box::new(tls));
                self.client.handle_tls_started();
                Ok(())
            }
            Err(e) => {
                tracing::debug!(%host, %addr, error = %e, "TLS handshake failed");
                self.client.handle_eof();
                // RFC 3463 X.7.5: cryptographic failure; Postfix's "Cannot start TLS:
                // handshake failure" uses it too.
                Err(OpenError {
                    reply: Reply::new(
                        451,
                        Enhanced(4, 7, 5),
                        format!("TLS handshake with {host}[{addr}] failed: {e}"),
                    ),
                    retry_plain: policy == TlsPolicy::Opportunistic,
                })
            }
        }
    }

    /// Runs one transaction. `content` is the message in wire form, written as it is,
    /// followed by the final `.CRLF`. Returns one reply per recipient index, or how the
    /// connection broke.
    pub async fn send(&mut self, envelope: Envelope, content: &[u8]) -> Outcome {
        self.client.start_transaction(envelope);
        loop {
            match self.next_event().await {
                ClientEvent::SendContent => {
                    self.flush().await;
                    self.stream.set_write_timeout(DATA_BLOCK_TIMEOUT);
                    let written = async {
                        if content.len() <= COPY_CONTENT_UP_TO {
                            // One write instead of two: the copy costs less than a send.
                            self.output.clear();
                            self.output.extend_from_slice(content);
                            self.output.extend_from_slice(b".\r\n");
                            let sent = self.stream.write_all(&self.output, true).await;
                            self.output.clear();
                            return sent;
                        }
                        self.stream.write_all(content, false).await?;
                        self.stream.write_all(b".\r\n", true).await
                    };
                    if let Err(e) = written.await {
                        let reply =
                            temporary(format!("lost connection while sending content: {e}"));
                        self.client.handle_eof();
                        return Err((reply, self.pending_after_eof()));
                    }
                    self.client.handle_content_sent();
                }
                ClientEvent::TransactionDone { results } => return Ok(results),
                ClientEvent::Failed { reply, pending } => return Err((reply, pending)),
                ClientEvent::Ready | ClientEvent::StartTls | ClientEvent::Closed => {
                    return Err((
                        temporary("connection closed during a transaction".into()),
                        Vec::new(),
                    ))
                }
            }
        }
    }

    /// Whether transactions can go out chunked and many at a time ([`Connection::send_many`]):
    /// the server offers CHUNKING and PIPELINING.
    pub fn can_chunk(&self) -> bool {
        self.client.can_chunk()
    }

    /// Runs several transactions with `BDAT LAST` (RFC 3030), written without waiting and
    /// answered in one go: one write per [`WRITE_BUFFER`] of the batch and, usually, one
    /// read for the lot. `messages` holds
    /// each envelope and its content in the spool's wire form (the dot-stuffing is removed
    /// here). Returns one result per message, in order, as [`Connection::send`] does; once
    /// one is `Err` the connection is gone and so are the rest.
    ///
    /// Only when [`Connection::can_chunk`].
    pub async fn send_many(&mut self, messages: Vec<(Envelope, &[u8])>) -> Vec<Outcome> {
        let mut results: Vec<Option<Outcome>> = messages.iter().map(|_| None).collect();
        if self.client.is_closed() {
            // Whatever it queued when it closed is about the last batch, not this one.
            while self.client.poll_event().is_some() {}
        }
        let mut in_flight = std::collections::VecDeque::new();
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        batch.reserve_exact(WRITE_BUFFER);
        let mut written = Ok(());
        let mut commands = Vec::new();
        for (i, (envelope, wire)) in messages.into_iter().enumerate() {
            let content = crate::smtp::data::unstuffed(wire);
            if let Err(ended) = self
                .client
                .start_chunked_transaction(envelope, content.len() as u64)
            {
                // Ended before anything was sent (refused here, or the session is over).
                results[i] = Self::outcome(ended);
                continue;
            }
            in_flight.push_back(i);
            // Swapped with the client's buffer: the two take turns, no allocation each.
            self.client.take_output(&mut commands);
            if written.is_err() {
                commands.clear();
                continue;
            }
            // Copied only if it fits the buffer with its commands, so the buffer keeps its
            // size (unless one transaction's commands alone outgrow it: thousands of
            // recipients).
            let copy = content.len() <= COPY_CONTENT_UP_TO
                && commands.len() + content.len() <= WRITE_BUFFER;
            let adding = commands.len() + if copy { content.len() } else { 0 };
            if !batch.is_empty() && batch.len() + adding > WRITE_BUFFER {
                self.stream.set_write_timeout(DATA_BLOCK_TIMEOUT);
                written = self.stream.write_all(&batch, false).await;
                batch.clear();
            }
            batch.extend_from_slice(&commands);
            commands.clear();
            if written.is_err() {
                continue;
            }
            if copy {
                batch.extend_from_slice(&content);
                continue;
            }
            // A large body goes out from its own buffer rather than through a copy.
            self.stream.set_write_timeout(DATA_BLOCK_TIMEOUT);
            written = async {
                self.stream.write_all(&batch, false).await?;
                self.stream.write_all(&content, false).await
            }
            .await;
            batch.clear();
        }
        if written.is_ok() && !in_flight.is_empty() {
            self.stream.set_write_timeout(DATA_BLOCK_TIMEOUT);
            written = self.stream.write_all(&batch, true).await;
        }
        batch.clear();
        self.batch = batch;
        if let Err(e) = written {
            tracing::debug!(host = %self.host, error = %e, "lost connection while sending");
            self.client.handle_eof();
        }
        while let Some(&i) = in_flight.front() {
            let event = self.next_event().await;
            let outcome = match event {
                ClientEvent::TransactionDone { .. } | ClientEvent::Failed { .. } => {
                    Self::outcome(event)
                }
                _ => break,
            };
            results[i] = outcome;
            in_flight.pop_front();
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err((
                        temporary("connection closed during a transaction".into()),
                        Vec::new(),
                    ))
                })
            })
            .collect()
    }

    /// A transaction's end as [`Connection::send`] reports it; `None` for other events.
    fn outcome(event: ClientEvent) -> Option<Outcome> {
        match event {
            ClientEvent::TransactionDone { results } => Some(Ok(results)),
            ClientEvent::Failed { reply, pending } => Some(Err((reply, pending))),
            _ => None,
        }
    }

    /// True once the session is over (QUIT answered, or it failed): no more transactions.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Whether the server offered DSN (RFC 3461): it then takes over notifications for the
    /// recipients it accepts.
    pub fn offers_dsn(&self) -> bool {
        self.client.extensions().dsn
    }

    /// Says QUIT and closes, waiting at most the QUIT timeout.
    pub async fn quit(mut self) {
        self.client.quit();
        let _ = futures_lite::future::or(
            async {
                loop {
                    if matches!(self.next_event().await, ClientEvent::Closed) {
                        return;
                    }
                }
            },
            async {
                glommio::timer::sleep(Duration::from_secs(5)).await;
            },
        )
        .await;
        self.stream.close().await;
    }

    fn pending_after_eof(&mut self) -> Vec<usize> {
        while let Some(event) = self.client.poll_event() {
            if let ClientEvent::Failed { pending, .. } = event {
                return pending;
            }
        }
        Vec::new()
    }

    async fn flush(&mut self) {
        self.client.take_output(&mut self.output);
        if self.output.is_empty() {
            return;
        }
        self.stream.set_write_timeout(Duration::from_secs(300));
        if self.stream.write_all(&self.output, true).await.is_err() {
            self.client.handle_eof();
        }
        self.output.clear();
    }

    /// Writes what the client has to say and reads until it has something to report.
    async fn next_event(&mut self) -> ClientEvent {
        loop {
            if let Some(event) = self.client.poll_event() {
                return event;
            }
            // The client stops reading at a reply that needs the driver (354): what it
            // left in the buffer is offered again once the driver has done its part.
            if self.filled > 0 {
                let used = self.client.handle_input(&self.input[..self.filled]);
                if used > 0 {
                    self.input.copy_within(used..self.filled, 0);
                    self.filled -= used;
                    continue;
                }
            }
            self.flush().await;
            if let Some(event) = self.client.poll_event() {
                return event;
            }
            let Some(wait) = self.client.waiting_for() else {
                // Nothing to wait for and nothing to report: the session is over.
                return ClientEvent::Closed;
            };
            if self.filled == self.input.len() {
                self.input.resize(self.input.len() * 2, 0);
            }
            self.stream.set_read_timeout(wait.default_timeout());
            match self.stream.read(&mut self.input[self.filled..]).await {
                Ok(0) => self.client.handle_eof(),
                Ok(n) => {
                    self.filled += n;
                    let used = self.client.handle_input(&self.input[..self.filled]);
                    self.input.copy_within(used..self.filled, 0);
                    self.filled -= used;
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => self.client.handle_timeout(),
                Err(_) => self.client.handle_eof(),
            }
        }
    }
}
