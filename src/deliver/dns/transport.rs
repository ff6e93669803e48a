//! One question on the wire: a hickory-proto [`Message`] over glommio UDP, again over TCP when
//! the answer is truncated, each nameserver in turn.
//!
//! Inputs: a name and a record type. Output: the first usable response (NOERROR or NXDOMAIN)
//! from any nameserver, or the reason each one failed. This layer does not interpret
//! records; [`super::resolver`] does.
//!
//! Defences against forged answers (RFC 5452 §9.1): every attempt uses a fresh random query
//! id (hickory-proto draws it from `rand`'s OS-seeded thread RNG) and a fresh socket on its
//! own kernel-chosen ephemeral port, the socket is connected so the kernel drops datagrams from
//! other sources, and a datagram counts only if its id, QR bit and question match ours.
//! Others are ignored and the wait goes on until the deadline.
//!
//! Queries carry no EDNS(0) OPT record, so a conforming server keeps UDP answers within
//! 512 bytes (RFC 1035 §4.2.1) and sets TC on anything larger, which we then fetch over TCP
//! (RFC 7766 §5). MX and address sets rarely exceed 512 bytes, and staying small avoids
//! fragmented UDP answers, which middleboxes drop (the point of DNS Flag Day 2020).
//!
//! Each nameserver is tried once per question, starting with the one that answered last,
//! so a dead first nameserver costs one timeout, not one per question. There is no second
//! round: the queue retries the whole delivery on its own schedule.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpStream, UdpSocket};
use glommio::timer::Timer;
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::ProtoError;
use thiserror::Error;

/// Receive buffer for UDP answers. Conforming answers to our EDNS-less queries fit in 512
/// bytes; the slack lets an oversized answer from a non-conforming server still decode
/// instead of arriving cut short.
const UDP_BUFFER: usize = 4096;

/// Why one nameserver gave no usable answer to one question.
#[derive(Debug, Error)]
pub(super) enum AttemptError {
    /// No matching answer before the deadline.
    #[error("timed out")]
    Timeout,
    /// A socket error (ICMP port unreachable shows up here as "connection refused").
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server answered, but with an error code (SERVFAIL, REFUSED, ...).
    #[error("answered {0}")]
    Rcode(ResponseCode),
    /// The TCP answer did not decode or did not answer our question. Over TCP this is a
    /// broken server rather than a forgery, so it ends the attempt.
    #[error("malformed answer")]
    Malformed,
    /// The UDP answer was truncated and the TCP retry failed.
    #[error("truncated over UDP, and over TCP: {0}")]
    Tcp(Box<AttemptError>),
}

/// Why no nameserver gave a usable answer to one question.
#[derive(Debug, Error)]
pub(super) enum QueryError {
    /// The resolver has no nameserver to ask.
    #[error("no nameserver configured")]
    NoNameservers,
    /// The question could not be encoded (a name too long for the wire format).
    #[error("cannot encode the query: {0}")]
    Encode(#[from] ProtoError),
    /// Every nameserver failed; one entry per nameserver, in the order tried.
    #[error("{}", Attempts(.0))]
    Failed(Vec<(SocketAddr, AttemptError)>),
}

/// Formats the per-nameserver failures as `addr: reason; addr: reason`.
struct Attempts<'a>(&'a [(SocketAddr, AttemptError)]);

impl fmt::Display for Attempts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (server, error)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{server}: {error}")?;
        }
        Ok(())
    }
}

/// The nameservers of one resolver, and how to ask them.
pub(super) struct Transport {
    nameservers: Vec<SocketAddr>,
    timeout: Duration,
    /// Index of the nameserver to try first: the last one that answered.
    preferred: Cell<usize>,
    /// UDP queries sent (one per attempt).
    pub(super) udp_queries: Cell<u64>,
    /// TCP retries after a truncated UDP answer.
    pub(super) tcp_queries: Cell<u64>,
}

impl Transport {
    /// A transport asking `nameservers`, giving each attempt (UDP, then TCP if truncated)
    /// `timeout`.
    pub(super) fn new(nameservers: Vec<SocketAddr>, timeout: Duration) -> Transport {
        Transport {
            nameservers,
            timeout,
            preferred: Cell::new(0),
            udp_queries: Cell::new(0),
            tcp_queries: Cell::new(0),
        }
    }

    /// Asks for `rtype` records of `name` (class IN, recursion desired). Returns the first
    /// NOERROR or NXDOMAIN response; anything else moves on to the next nameserver.
    pub(super) async fn query(
        &self,
        name: &Name,
        rtype: RecordType,
    ) -> Result<Message, QueryError> {
        if self.nameservers.is_empty() {
            return Err(QueryError::NoNameservers);
        }
        let question = Query::query(name.clone(), rtype);
        let count = self.nameservers.len();
        let first = self.preferred.get() % count;
        let mut failures = Vec::new();
        for index in (first..count).chain(0..first) {
            let server = self.nameservers[index];
            match self.attempt(server, &question).await {
                Ok(response) => {
                    self.preferred.set(index);
                    return Ok(response);
                }
                Err(Failure::Encode(e)) => return Err(QueryError::Encode(e)),
                Err(Failure::Attempt(e)) => {
                    tracing::debug!(%server, %name, %rtype, error = %e, "nameserver failed");
                    failures.push((server, e));
                }
            }
        }
        Err(QueryError::Failed(failures))
    }

    /// One question to one nameserver: UDP, then TCP if the answer was truncated.
    async fn attempt(&self, server: SocketAddr, question: &Query) -> Result<Message, Failure> {
        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        query.add_query(question.clone());
        let wire = query.to_vec().map_err(Failure::Encode)?;
        let id = query.metadata.id;

        self.udp_queries.set(self.udp_queries.get() + 1);
        let response = within(self.timeout, udp(server, id, &wire, question)).await?;
        let response = if response.metadata.truncation {
            // RFC 7766 §5: a truncated answer is retried over TCP, same server, same question.
            self.tcp_queries.set(self.tcp_queries.get() + 1);
            within(self.timeout, tcp(server, id, &wire, question))
                .await
                .map_err(|e| AttemptError::Tcp(Box::new(e)))?
        } else {
            response
        };
        match response.metadata.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => Ok(response),
            code => Err(AttemptError::Rcode(code).into()),
        }
    }
}

/// How an attempt ended without a usable answer: a fault of this nameserver (try the next)
/// or of the question itself (no nameserver can help).
enum Failure {
    Attempt(AttemptError),
    Encode(ProtoError),
}

impl From<AttemptError> for Failure {
    fn from(e: AttemptError) -> Failure {
        Failure::Attempt(e)
    }
}

/// Runs `exchange`, giving up with [`AttemptError::Timeout`] after `timeout`. One deadline
/// for the whole exchange, so neither a slow TCP peer nor a stream of non-matching
/// datagrams can stretch it. Dropping the exchange cancels its pending io_uring operation.
async fn within<T>(
    timeout: Duration,
    exchange: impl Future<Output = Result<T, AttemptError>>,
) -> Result<T, AttemptError> {
    futures_lite::future::or(exchange, async {
        Timer::new(timeout).await;
        Err(AttemptError::Timeout)
    })
    .await
}

/// Sends `wire` in one datagram and waits for the datagram that answers it.
async fn udp(
    server: SocketAddr,
    id: u16,
    wire: &[u8],
    question: &Query,
) -> Result<Message, AttemptError> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    // Not glommio's `UdpSocket::bind`: it sets SO_REUSEPORT, and with it the kernel may give
    // two of our sockets the same ephemeral port. Two concurrent questions to one nameserver
    // (A and AAAA) would then share a 4-tuple and could receive each other's answers, which
    // we would ignore and time out. A plain bind gets a port of its own.
    let bound = std::net::UdpSocket::bind(local)?;
    // SAFETY: `into_raw_fd` hands over an open UDP socket that nothing else owns; the glommio
    // socket takes ownership and closes it on drop. glommio does not need O_NONBLOCK: its
    // direct receives pass MSG_DONTWAIT, the rest goes through io_uring.
    let socket = unsafe { UdpSocket::from_raw_fd(bound.into_raw_fd()) };
    socket.connect(server).await.map_err(io::Error::from)?;
    socket.send(wire).await.map_err(io::Error::from)?;
    let mut buf = vec![0; UDP_BUFFER];
    loop {
        let len = socket.recv(&mut buf).await.map_err(io::Error::from)?;
        // Undecodable or non-matching datagrams are ignored, not errors: otherwise one forged
        // packet would be enough to make us give up on the real answer (RFC 5452 §9.1).
        match Message::from_vec(&buf[..len]) {
            Ok(response) if answers(&response, id, question) => return Ok(response),
            Ok(_) => tracing::debug!(%server, "ignored a datagram that does not answer our query"),
            Err(e) => tracing::debug!(%server, error = %e, "ignored an undecodable datagram"),
        }
    }
}

/// Sends `wire` over a new TCP connection with the 2-byte length prefix (RFC 1035 §4.2.2)
/// and reads one answer.
async fn tcp(
    server: SocketAddr,
    id: u16,
    wire: &[u8],
    question: &Query,
) -> Result<Message, AttemptError> {
    let mut stream = TcpStream::connect(server).await.map_err(io::Error::from)?;
    // A query holds one question: a 12-byte header, a name of at most 255 bytes and 4 bytes
    // of type and class, so its length always fits the 16-bit prefix.
    let len = u16::try_from(wire.len()).expect("a one-question query is under 300 bytes");
    let mut framed = Vec::with_capacity(2 + wire.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(wire);
    stream.write_all(&framed).await?;
    let mut prefix = [0; 2];
    stream.read_exact(&mut prefix).await?;
    let mut body = vec![0; usize::from(u16::from_be_bytes(prefix))];
    stream.read_exact(&mut body).await?;
    match Message::from_vec(&body) {
        Ok(response) if answers(&response, id, question) => Ok(response),
        _ => Err(AttemptError::Malformed),
    }
}

/// True if `response` answers the query with `id` and `question`.
///
/// Some servers leave the question out of error responses (REFUSED, SERVFAIL); those are
/// accepted on the id alone. A forged one can only make us try the next nameserver sooner,
/// whereas a forged NOERROR or NXDOMAIN must also guess the question.
fn answers(response: &Message, id: u16, question: &Query) -> bool {
    let meta = &response.metadata;
    if meta.id != id || meta.message_type != MessageType::Response {
        return false;
    }
    match response.queries.as_slice() {
        // Name equality is case-insensitive, as DNS names are (RFC 4343), so servers that
        // echo the name in another case still match.
        [q] => {
            q.name() == question.name()
                && q.query_type() == question.query_type()
                && q.query_class() == question.query_class()
        }
        [] => !matches!(
            meta.response_code,
            ResponseCode::NoError | ResponseCode::NXDomain
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn question() -> Query {
        Query::query(Name::from_str("example.org.").unwrap(), RecordType::MX)
    }

    fn response(id: u16, code: ResponseCode, q: Option<Query>) -> Message {
        let mut m = Message::error_msg(id, hickory_proto::op::OpCode::Query, code);
        if let Some(q) = q {
            m.add_query(q);
        }
        m
    }

    #[test]
    fn matching_requires_id_type_and_question() {
        let q = question();
        assert!(answers(
            &response(7, ResponseCode::NoError, Some(q.clone())),
            7,
            &q
        ));
        assert!(!answers(
            &response(8, ResponseCode::NoError, Some(q.clone())),
            7,
            &q
        ));
        let other = Query::query(Name::from_str("example.org.").unwrap(), RecordType::A);
        assert!(!answers(
            &response(7, ResponseCode::NoError, Some(other)),
            7,
            &q
        ));
        let upper = Query::query(Name::from_str("EXAMPLE.org.").unwrap(), RecordType::MX);
        assert!(answers(
            &response(7, ResponseCode::NoError, Some(upper)),
            7,
            &q
        ));
        // A query echoed back is not an answer.
        let mut echo = response(7, ResponseCode::NoError, Some(q.clone()));
        echo.metadata.message_type = MessageType::Query;
        assert!(!answers(&echo, 7, &q));
    }

    #[test]
    fn questionless_responses_only_count_as_errors() {
        let q = question();
        assert!(answers(&response(7, ResponseCode::ServFail, None), 7, &q));
        assert!(answers(&response(7, ResponseCode::Refused, None), 7, &q));
        assert!(!answers(&response(7, ResponseCode::NoError, None), 7, &q));
        assert!(!answers(&response(7, ResponseCode::NXDomain, None), 7, &q));
    }

    #[test]
    fn failures_name_each_nameserver() {
        let e = QueryError::Failed(vec![
            ("127.0.0.1:53".parse().unwrap(), AttemptError::Timeout),
            (
                "127.0.0.2:53".parse().unwrap(),
                AttemptError::Rcode(ResponseCode::ServFail),
            ),
        ]);
        assert_eq!(
            e.to_string(),
            "127.0.0.1:53: timed out; 127.0.0.2:53: answered Server Failure"
        );
    }
}
