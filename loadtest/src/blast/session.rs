//! One blast session on a glommio shard: connect, EHLO, then transactions until the run's
//! message budget or time is used up, then QUIT.
//!
//! The dialogue is simple enough to drive directly (pigeon's delivery `Client` settles
//! per-recipient outcomes; a load generator wants every reply code and the final-reply
//! latency instead), but replies are read with pigeon's own
//! [`parse_reply`](pigeon::smtp::response::parse_reply) and extensions with
//! [`Extensions::from_ehlo`].

use std::cell::RefCell;
use std::io;
use std::time::{Duration, Instant};

use futures_lite::future;
use futures_rustls::client::TlsStream;
use glommio::net::TcpStream;
use pigeon::deliver::client::extensions::Extensions;
use pigeon::smtp::reply::Reply;
use pigeon::smtp::response::parse_reply;

use crate::blast::{Plan, Tally};

/// A server that says nothing for this long is taken as stuck.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Transport errors in a row after which a session gives up instead of reconnecting.
const MAX_FAILURES: u32 = 3;

/// The transport: plain TCP, or TLS after STARTTLS (pigeon's own connection type).
type Stream = pigeon::runtime::conn::Conn<TlsStream<TcpStream>>;

/// A connection with a reply buffer.
struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Conn {
    async fn open(target: &str) -> io::Result<Conn> {
        let stream = TcpStream::connect(target)
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        // Commands are small writes the server answers: no Nagle delay on them.
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(REPLY_TIMEOUT));
        let _ = stream.set_write_timeout(Some(REPLY_TIMEOUT));
        Ok(Conn {
            stream: Stream::Plain(stream),
            buf: vec![0; 8192],
            start: 0,
            end: 0,
        })
    }

    /// Runs the client side of the TLS handshake (after the server's 220 to STARTTLS),
    /// bounded by the reply timeout. Unread bytes from before are dropped: a server that
    /// pipelined something after its 220 is not to be believed (RFC 3207 §4.2).
    async fn start_tls(self, plan: &Plan) -> io::Result<(Conn, &'static str)> {
        let mut stream = self.stream;
        let Some(tcp) = stream.take_plain() else {
            return Err(io::Error::other("STARTTLS twice"));
        };
        let tls = plan
            .tls
            .as_ref()
            .ok_or_else(|| io::Error::other("no TLS"))?;
        let connector = futures_rustls::TlsConnector::from(tls.config.clone());
        let handshake = async { Some(connector.connect(tls.name.clone(), tcp).await) };
        let timeout = async {
            glommio::timer::sleep(REPLY_TIMEOUT).await;
            None
        };
        let stream = future::or(handshake, timeout)
            .await
            .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))??;
        let version = crate::tls::version_name(stream.get_ref().1);
        let conn = Conn {
            stream: Stream::Tls(Box::new(stream)),
            buf: self.buf,
            start: 0,
            end: 0,
        };
        Ok((conn, version))
    }

    async fn read_reply(&mut self) -> io::Result<Reply> {
        loop {
            match parse_reply(&self.buf[self.start..self.end]) {
                Ok(Some((reply, used))) => {
                    self.start += used;
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::other(e.to_string())),
            }
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
            } else if self.end == self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
                if self.end == self.buf.len() {
                    self.buf.resize(self.buf.len() * 2, 0);
                }
            }
            let n = self.stream.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.end += n;
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes, true).await
    }
}

/// Runs one session; `number` spaces its messages when a rate is set.
pub async fn run(plan: &Plan, number: usize, tally: &RefCell<Tally>) {
    let mut failures = 0;
    let mut sent = 0u64;
    'connections: while failures < MAX_FAILURES && plan.has_time() {
        let (mut conn, pipelining, params) = match open(plan, tally).await {
            Ok(c) => c,
            Err(_) => {
                failures += 1;
                tally.borrow_mut().errors += 1;
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        loop {
            if let Some(interval) = plan.interval {
                // Session `number` of N sends at start + (sent + number/N) × interval.
                let offset = sent as f64 + number as f64 / plan.sessions as f64;
                let due = plan.start + interval.mul_f64(offset);
                let now = Instant::now();
                if due > now {
                    glommio::timer::sleep(due - now).await;
                }
            }
            let Some(index) = plan.claim() else {
                let _ = conn.send(b"QUIT\r\n").await;
                let _ = conn.read_reply().await;
                conn.stream.close().await;
                return;
            };
            sent += 1;
            match transaction(&mut conn, plan, index, pipelining, &params, tally).await {
                Ok(()) => {
                    failures = 0;
                    plan.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(_) => {
                    failures += 1;
                    tally.borrow_mut().errors += 1;
                    continue 'connections;
                }
            }
        }
    }
}

/// Connects, says EHLO, and when asked runs STARTTLS (then EHLO again) and AUTH PLAIN;
/// returns the connection, whether to pipeline, and the MAIL parameters to send.
async fn open(plan: &Plan, tally: &RefCell<Tally>) -> io::Result<(Conn, bool, String)> {
    let mut conn = Conn::open(&plan.target).await?;
    tally.borrow_mut().connections += 1;
    let greeting = conn.read_reply().await?;
    tally.borrow_mut().code("greeting", greeting.code);
    if greeting.code != 220 {
        return Err(io::Error::other("greeting refused"));
    }
    let mut ext = ehlo(&mut conn, tally).await?;
    if plan.tls.is_some() {
        if !ext.starttls {
            return Err(io::Error::other("STARTTLS not offered"));
        }
        conn.send(b"STARTTLS\r\n").await?;
        let go = conn.read_reply().await?;
        tally.borrow_mut().code("starttls", go.code);
        if go.code != 220 {
            return Err(io::Error::other("STARTTLS refused"));
        }
        let version;
        (conn, version) = conn.start_tls(plan).await?;
        *tally.borrow_mut().tls.entry(version).or_insert(0) += 1;
        // RFC 3207 §4.2: what the server said before TLS is forgotten; ask again.
        ext = ehlo(&mut conn, tally).await?;
    }
    if let Some(initial) = &plan.auth {
        conn.send(format!("AUTH PLAIN {initial}\r\n").as_bytes())
            .await?;
        let r = conn.read_reply().await?;
        tally.borrow_mut().code("auth", r.code);
        if r.code != 235 {
            return Err(io::Error::other("AUTH refused"));
        }
    }
    let mut params = String::new();
    if ext.size.is_some() {
        params.push_str(&format!(" SIZE={}", plan.content.len()));
    }
    if ext.eight_bit_mime && !plan.content.is_ascii() {
        params.push_str(" BODY=8BITMIME");
    }
    Ok((conn, ext.pipelining && plan.pipelining, params))
}

/// Sends EHLO and reads the extensions from the reply.
async fn ehlo(conn: &mut Conn, tally: &RefCell<Tally>) -> io::Result<Extensions> {
    conn.send(b"EHLO blast.pigeon-load.test\r\n").await?;
    let ehlo = conn.read_reply().await?;
    tally.borrow_mut().code("ehlo", ehlo.code);
    if ehlo.code != 250 {
        return Err(io::Error::other("EHLO refused"));
    }
    Ok(Extensions::from_ehlo(&ehlo))
}

/// One transaction for message `index`. An `Err` means the connection is unusable.
async fn transaction(
    conn: &mut Conn,
    plan: &Plan,
    index: u64,
    pipelining: bool,
    params: &str,
    tally: &RefCell<Tally>,
) -> io::Result<()> {
    let recipients = plan.recipients(index);
    let mut out = Vec::with_capacity(64 + recipients.len() * 40);
    out.extend_from_slice(format!("MAIL FROM:<{}>{params}\r\n", plan.sender).as_bytes());
    let rcpt_lines: Vec<Vec<u8>> = recipients
        .iter()
        .map(|r| format!("RCPT TO:<{r}>\r\n").into_bytes())
        .collect();
    let mut accepted = 0u64;
    let data_reply = if pipelining {
        // RFC 2920: MAIL, every RCPT and DATA in one write; replies come back in order.
        for l in &rcpt_lines {
            out.extend_from_slice(l);
        }
        out.extend_from_slice(b"DATA\r\n");
        conn.send(&out).await?;
        let mail = conn.read_reply().await?;
        tally.borrow_mut().code("mail", mail.code);
        for _ in &rcpt_lines {
            let r = conn.read_reply().await?;
            tally.borrow_mut().code("rcpt", r.code);
            accepted += u64::from(r.code / 100 == 2);
        }
        let data = conn.read_reply().await?;
        tally.borrow_mut().code("data", data.code);
        data
    } else {
        conn.send(&out).await?;
        let mail = conn.read_reply().await?;
        tally.borrow_mut().code("mail", mail.code);
        if mail.code / 100 != 2 {
            return reset(conn, tally).await;
        }
        for l in &rcpt_lines {
            conn.send(l).await?;
            let r = conn.read_reply().await?;
            tally.borrow_mut().code("rcpt", r.code);
            accepted += u64::from(r.code / 100 == 2);
        }
        if accepted == 0 {
            return reset(conn, tally).await;
        }
        conn.send(b"DATA\r\n").await?;
        let data = conn.read_reply().await?;
        tally.borrow_mut().code("data", data.code);
        data
    };
    if data_reply.code != 354 {
        return reset(conn, tally).await;
    }
    // RFC 2920 §3.1: a server that gave 354 with no recipient gets an empty message.
    let content: &[u8] = if accepted == 0 {
        b".\r\n"
    } else {
        &plan.content
    };
    conn.send(content).await?;
    let sent = Instant::now();
    let reply = conn.read_reply().await?;
    let latency = sent.elapsed();
    let mut t = tally.borrow_mut();
    t.code("dot", reply.code);
    t.record_latency(latency);
    if reply.code == 250 && accepted > 0 {
        t.messages += 1;
        t.recipients += accepted;
    }
    Ok(())
}

/// RSET after a refusal, so the next transaction starts clean.
async fn reset(conn: &mut Conn, tally: &RefCell<Tally>) -> io::Result<()> {
    conn.send(b"RSET\r\n").await?;
    let r = conn.read_reply().await?;
    tally.borrow_mut().code("rset", r.code);
    Ok(())
}
