//! The glommio loop around a delivery [`Client`]: connect, move bytes, apply the RFC 5321
//! §4.5.3.2 timeout of whatever the client waits for, and write message content straight
//! from the spool's memory map when the client asks for it.

use std::net::SocketAddr;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::deliver::client::state::{Client, ClientConfig, ClientEvent, Envelope};
use crate::smtp::reply::{Enhanced, Reply};

/// RFC 5321 does not give a connect timeout; 30 s is Postfix's `smtp_connect_timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

const READ_CHUNK: usize = 8 * 1024;

/// An open SMTP connection to one receiving host, ready for transactions.
pub struct Connection {
    stream: TcpStream,
    client: Client,
    input: Vec<u8>,
    filled: usize,
    output: Vec<u8>,
    /// The host name (MX or route) this connection goes to.
    pub host: String,
    /// The address connected to.
    pub addr: SocketAddr,
}

/// How a transaction ended when it did not end normally: the reply every recipient still
/// undecided gets, and those recipients (indices into the envelope).
pub type Broken = (Reply, Vec<usize>);

fn temporary(text: String) -> Reply {
    Reply::new(451, Enhanced(4, 4, 1), text)
}

impl Connection {
    /// Connects to `addr` and runs the greeting and EHLO. On failure returns the reply to
    /// record for the recipients (always a 4xx: another host or a later try may work).
    pub async fn open(addr: SocketAddr, host: &str, helo: &str) -> Result<Connection, Reply> {
        let stream = TcpStream::connect_timeout(addr, CONNECT_TIMEOUT)
            .await
            .map_err(|e| temporary(format!("connect to {host}[{addr}]: {e}")))?;
        // Commands and the content's last segment are small writes followed by a wait for
        // a reply: with Nagle's algorithm each would sit out the peer's delayed ACK (40 ms).
        let _ = stream.set_nodelay(true);
        let client = Client::new(ClientConfig {
            helo_name: helo.to_owned(),
        });
        let mut conn = Connection {
            stream,
            client,
            input: vec![0; READ_CHUNK],
            filled: 0,
            output: Vec::new(),
            host: host.to_owned(),
            addr,
        };
        match conn.next_event().await {
            ClientEvent::Ready => Ok(conn),
            ClientEvent::Failed { reply, .. } => {
                // A refusal to talk is about this host, not the recipients: try elsewhere
                // or later, never bounce on it.
                let text = format!("{host}[{addr}] refused to talk: {reply}");
                Err(if reply.code >= 500 {
                    temporary(text)
                } else {
                    Reply {
                        lines: vec![text.into()],
                        ..reply
                    }
                })
            }
            other => Err(temporary(format!("{host}[{addr}]: unexpected {other:?}"))),
        }
    }

    /// Runs one transaction. `content` is the message in wire form, written as it is,
    /// followed by the final `.CRLF`. Returns one reply per recipient index, or how the
    /// connection broke.
    pub async fn send(
        &mut self,
        envelope: Envelope,
        content: &[u8],
    ) -> Result<Vec<(usize, Reply)>, Broken> {
        self.client.start_transaction(envelope);
        loop {
            match self.next_event().await {
                ClientEvent::SendContent => {
                    self.flush().await;
                    let _ = self
                        .stream
                        .set_write_timeout(Some(Duration::from_secs(180)));
                    let written = async {
                        self.stream.write_all(content).await?;
                        self.stream.write_all(b".\r\n").await
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
                ClientEvent::Ready | ClientEvent::Closed => {
                    return Err((
                        temporary("connection closed during a transaction".into()),
                        Vec::new(),
                    ))
                }
            }
        }
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
        let _ = self.stream.close().await;
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
        let _ = self
            .stream
            .set_write_timeout(Some(Duration::from_secs(300)));
        if self.stream.write_all(&self.output).await.is_err() {
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
            let _ = self.stream.set_read_timeout(Some(wait.default_timeout()));
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
