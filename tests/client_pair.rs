//! pigeon's delivery client against pigeon's own server, both sans-io, in one process: a
//! deterministic pair in the manner of quinn-proto's `Pair`. Bytes are shuttled both ways
//! (optionally a few at a time) until neither side has anything left to say; no socket, no
//! clock.
//!
//! What it proves: several transactions on one connection, with pipelining, recipients the
//! server refuses, a message refused before MAIL for its size, RSET only after a failed
//! transaction, and the content the client sends arriving byte for byte in the server's
//! spool form.

use std::net::SocketAddr;
use std::sync::Arc;

use pigeon::deliver::client::envelope::Envelope;
use pigeon::deliver::client::machine::{Client, ClientConfig, ClientEvent};
use pigeon::session::state::{Event, Session, SessionConfig};
use pigeon::smtp::envelope::Envelope as Stored;
use pigeon::smtp::{Enhanced, Reply};

const MAX_SIZE: usize = 2000;

fn server_config() -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        hostname: "mx.y.test".into(),
        max_message_size: MAX_SIZE,
        max_recipients: 4,
        max_errors: 1000,
        max_messages_per_session: u32::MAX,
        max_recipients_per_session: u32::MAX,
        relay_domains: vec!["y.test".into()],
        body_canons: Vec::new(),
    })
}

/// The two state machines and the bytes in flight between them.
struct Pair {
    server: Session,
    client: Client,
    /// Written by one side, not yet read by the other.
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    /// Read but not yet consumed (a partial command or reply).
    server_in: Vec<u8>,
    client_in: Vec<u8>,
    /// Most bytes moved per read; `usize::MAX` for whole writes.
    read_size: usize,
    /// Every byte the client wrote, commands and content.
    client_wrote: Vec<u8>,
    /// The content the driver writes on the next `SendContent`, in wire form.
    content: Vec<u8>,
    /// Messages the server stored.
    stored: Vec<(Stored, Vec<u8>)>,
    server_closed: bool,
    events: Vec<ClientEvent>,
}

impl Pair {
    fn new(read_size: usize) -> Pair {
        let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        Pair {
            // Not a relay client: only recipients at y.test are accepted.
            server: Session::new(server_config(), peer, false),
            client: Client::new(ClientConfig {
                helo_name: "out.x.test".into(),
                ..Default::default()
            }),
            to_server: Vec::new(),
            to_client: Vec::new(),
            server_in: Vec::new(),
            client_in: Vec::new(),
            read_size,
            client_wrote: Vec::new(),
            content: Vec::new(),
            stored: Vec::new(),
            server_closed: false,
            events: Vec::new(),
        }
    }

    /// Shuttles bytes until both sides are quiet; returns the client events seen.
    fn drive(&mut self) -> Vec<ClientEvent> {
        for _ in 0..100_000 {
            if !self.step() {
                return std::mem::take(&mut self.events);
            }
        }
        panic!("the pair never went quiet");
    }

    /// One round each way; false when nothing moved.
    fn step(&mut self) -> bool {
        let mut moved = false;

        let mut out = Vec::new();
        self.server.take_output(&mut out);
        moved |= !out.is_empty();
        self.to_client.extend_from_slice(&out);

        moved |= read(&mut self.to_client, &mut self.client_in, self.read_size);
        let used = self.client.handle_input(&self.client_in);
        self.client_in.drain(..used);
        moved |= used > 0;
        while let Some(event) = self.client.poll_event() {
            moved = true;
            if event == ClientEvent::SendContent {
                // What the glommio driver does from the spool's mapping.
                let mut wire = self.content.clone();
                wire.extend_from_slice(b".\r\n");
                self.client_wrote.extend_from_slice(&wire);
                self.to_server.extend_from_slice(&wire);
                self.client.handle_content_sent();
            }
            self.events.push(event);
        }

        let mut out = Vec::new();
        self.client.take_output(&mut out);
        moved |= !out.is_empty();
        self.client_wrote.extend_from_slice(&out);
        self.to_server.extend_from_slice(&out);

        moved |= read(&mut self.to_server, &mut self.server_in, self.read_size);
        let used = self.server.handle_input(&self.server_in);
        self.server_in.drain(..used);
        moved |= used > 0;
        while let Some(event) = self.server.poll_event() {
            moved = true;
            match event {
                Event::Message(envelope, body) => {
                    self.stored.push((*envelope, body));
                    let id = format!("ID{}", self.stored.len());
                    self.server.handle_stored(Ok(&id));
                }
                Event::Close => self.server_closed = true,
                // This server never offers STARTTLS or AUTH.
                Event::StartTls => unreachable!("STARTTLS is not offered"),
                Event::Authenticate(_) => unreachable!("AUTH is not offered"),
            }
        }
        moved
    }

    fn start(&mut self, envelope: Envelope, content: &[u8]) -> Vec<ClientEvent> {
        self.content = content.to_vec();
        self.client.start_transaction(envelope);
        self.drive()
    }

    /// Client bytes written from here on.
    fn written_since(&self, mark: usize) -> String {
        String::from_utf8_lossy(&self.client_wrote[mark..]).into_owned()
    }
}

/// Moves up to `max` bytes from the wire to the reader's buffer.
fn read(wire: &mut Vec<u8>, into: &mut Vec<u8>, max: usize) -> bool {
    let n = wire.len().min(max);
    into.extend(wire.drain(..n));
    n > 0
}

fn envelope(sender: &str, recipients: &[&str], size: usize) -> Envelope {
    Envelope {
        sender: sender.into(),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        size: size as u64,
        needs_8bit: false,
        needs_smtputf8: false,
        mail_dsn: String::new(),
        rcpt_dsn: Vec::new(),
    }
}

fn results(events: &[ClientEvent]) -> Vec<(usize, u16, Option<Enhanced>)> {
    let [.., ClientEvent::TransactionDone { results }] = events else {
        panic!("no TransactionDone at the end of {events:?}");
    };
    results
        .iter()
        .map(|(i, r)| (*i, r.code, r.enhanced))
        .collect()
}

fn recipients(stored: &Stored) -> Vec<&str> {
    stored
        .recipients
        .iter()
        .map(|r| r.mailbox.as_str())
        .collect()
}

/// Wire form with a dot-stuffed line, as the spool holds it.
const BODY: &[u8] =
    b"Subject: one\r\n\r\nHello\r\n..a line that began with a dot\r\n.\t.\r\nend\r\n";

/// The whole conversation; `read_size` cuts every read to at most that many bytes.
fn conversation(read_size: usize) -> Pair {
    let mut p = Pair::new(read_size);

    let events = p.drive();
    assert_eq!(events, [ClientEvent::Ready]);
    let ext = p.client.extensions().clone();
    assert!(ext.pipelining && ext.eight_bit_mime && ext.smtputf8 && ext.chunking);
    assert_eq!(ext.size, Some(MAX_SIZE as u64));
    assert_eq!(p.written_since(0), "EHLO out.x.test\r\n");

    // 1. Mixed recipients, pipelined: the relay refusal is per recipient.
    let mark = p.client_wrote.len();
    let events = p.start(
        envelope(
            "a@x.test",
            &["b@y.test", "c@elsewhere.test", "d@y.test"],
            BODY.len(),
        ),
        BODY,
    );
    assert_eq!(events[0], ClientEvent::SendContent);
    assert_eq!(
        results(&events),
        [
            (0, 250, Some(Enhanced(2, 0, 0))),
            (1, 554, Some(Enhanced(5, 7, 1))),
            (2, 250, Some(Enhanced(2, 0, 0))),
        ]
    );
    let mut expected = format!(
        "MAIL FROM:<a@x.test> SIZE={}\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@elsewhere.test>\r\n\
         RCPT TO:<d@y.test>\r\nDATA\r\n",
        BODY.len()
    )
    .into_bytes();
    expected.extend_from_slice(BODY);
    expected.extend_from_slice(b".\r\n");
    assert_eq!(p.written_since(mark).as_bytes(), expected);
    assert_eq!(p.stored.len(), 1);
    let (stored, body) = &p.stored[0];
    assert_eq!(body, BODY, "the server stored exactly the wire form sent");
    assert_eq!(stored.sender.as_ref().map(|m| m.as_str()), Some("a@x.test"));
    assert_eq!(recipients(stored), ["b@y.test", "d@y.test"]);
    assert!(p.client.is_ready());

    // 2. Every recipient refused: the pipelined DATA gets 554, which is no one's result,
    //    and no content is sent.
    let mark = p.client_wrote.len();
    let events = p.start(
        envelope("a@x.test", &["e@z.test", "f@w.test"], 10),
        b"x\r\n",
    );
    assert!(!events.contains(&ClientEvent::SendContent));
    assert_eq!(
        results(&events),
        [
            (0, 554, Some(Enhanced(5, 7, 1))),
            (1, 554, Some(Enhanced(5, 7, 1)))
        ]
    );
    assert!(
        p.written_since(mark).ends_with("DATA\r\n"),
        "no content after DATA"
    );
    assert!(
        !p.written_since(mark).starts_with("RSET"),
        "no RSET after a successful transaction"
    );
    assert_eq!(p.stored.len(), 1);

    // 3. Over the server's SIZE: refused before MAIL, nothing written.
    let mark = p.client_wrote.len();
    let events = p.start(envelope("a@x.test", &["b@y.test"], MAX_SIZE + 1), b"");
    assert_eq!(results(&events), [(0, 552, Some(Enhanced(5, 3, 4)))]);
    assert_eq!(p.written_since(mark), "");

    // 4. After the failed transaction 2, RSET first; null sender, 8-bit body.
    let mark = p.client_wrote.len();
    let body8 = "Subject: caf\u{e9}\r\n\r\n\u{e9}t\u{e9}\r\n".as_bytes();
    let mut env = envelope("", &["b@y.test"], body8.len());
    env.needs_8bit = true;
    let events = p.start(env, body8);
    assert_eq!(results(&events), [(0, 250, Some(Enhanced(2, 0, 0)))]);
    assert!(
        p.written_since(mark).starts_with(&format!(
            "RSET\r\nMAIL FROM:<> SIZE={} BODY=8BITMIME\r\n",
            body8.len()
        )),
        "{}",
        p.written_since(mark)
    );
    let (stored, body) = &p.stored[1];
    assert_eq!(body, body8);
    assert_eq!(stored.sender, None);
    assert!(stored.mail_params.contains("BODY=8BITMIME"));

    // 5. More recipients than the server takes: the fifth gets 452 4.5.3, to retry later.
    let rcpts = [
        "r1@y.test",
        "r2@y.test",
        "r3@y.test",
        "r4@y.test",
        "r5@y.test",
    ];
    let events = p.start(envelope("a@x.test", &rcpts, BODY.len()), BODY);
    let r = results(&events);
    assert!(r[..4].iter().all(|&(_, code, _)| code == 250), "{r:?}");
    assert_eq!(r[4], (4, 452, Some(Enhanced(4, 5, 3))));
    assert_eq!(recipients(&p.stored[2].0), &rcpts[..4]);
    assert_eq!(p.stored[2].1, BODY);

    // 6. Goodbye.
    p.client.quit();
    let events = p.drive();
    assert_eq!(events, [ClientEvent::Closed]);
    assert!(p.server_closed);
    assert!(p.client.is_closed());
    assert_eq!(p.client.waiting_for(), None);
    p
}

#[test]
fn transactions_on_one_connection() {
    conversation(usize::MAX);
}

#[test]
fn reads_cut_small_change_nothing() {
    let whole = conversation(usize::MAX);
    for read_size in [1, 2, 3, 7, 64] {
        let cut = conversation(read_size);
        assert_eq!(
            cut.client_wrote, whole.client_wrote,
            "read size {read_size}"
        );
        let bodies = |p: &Pair| p.stored.iter().map(|s| s.1.clone()).collect::<Vec<_>>();
        assert_eq!(bodies(&cut), bodies(&whole), "read size {read_size}");
    }
}

#[test]
fn content_the_server_refuses_is_every_accepted_recipients_result() {
    let mut p = Pair::new(usize::MAX);
    assert_eq!(p.drive(), [ClientEvent::Ready]);
    // Our SIZE estimate is under the limit but the content is over it: only the server's
    // reply to the content can tell (RFC 1870 §6.3).
    let big = b"x\r\n".repeat(MAX_SIZE);
    let events = p.start(envelope("a@x.test", &["b@y.test", "c@q.test"], 10), &big);
    assert_eq!(
        results(&events),
        [
            (0, 552, Some(Enhanced(5, 3, 4))),
            (1, 554, Some(Enhanced(5, 7, 1)))
        ]
    );
    assert!(p.stored.is_empty());
    // The transaction failed: RSET before the next one, which goes through.
    let mark = p.client_wrote.len();
    let events = p.start(envelope("a@x.test", &["b@y.test"], 3), b"x\r\n");
    assert_eq!(results(&events), [(0, 250, Some(Enhanced(2, 0, 0)))]);
    assert!(p.written_since(mark).starts_with("RSET\r\nMAIL"));
}

#[test]
fn server_shutdown_mid_session_fails_the_transaction() {
    let mut p = Pair::new(usize::MAX);
    assert_eq!(p.drive(), [ClientEvent::Ready]);
    p.content = BODY.to_vec();
    p.client
        .start_transaction(envelope("a@x.test", &["b@y.test"], BODY.len()));
    // The server is told to stop before it has read the client's commands.
    p.server.handle_shutdown();
    let events = p.drive();
    assert_eq!(
        events,
        [
            ClientEvent::Failed {
                reply: Reply::new(
                    421,
                    Enhanced(4, 3, 2),
                    "Service shutting down, closing connection"
                ),
                pending: vec![0],
            },
            ClientEvent::Closed,
        ]
    );
    assert!(p.stored.is_empty());
}

/// What the glommio driver's `send_many` does: every transaction chunked, commands and
/// content written together before any reply is read. Returns, per transaction, `None` when
/// it went out, or the event that ended it at once.
fn start_chunked(p: &mut Pair, batch: Vec<(Envelope, &[u8])>) -> Vec<Option<ClientEvent>> {
    let mut ended = Vec::new();
    for (envelope, wire) in batch {
        let content = pigeon::smtp::data::unstuffed(wire);
        let started = p
            .client
            .start_chunked_transaction(envelope, content.len() as u64);
        let mut out = Vec::new();
        p.client.take_output(&mut out);
        if started.is_ok() {
            out.extend_from_slice(&content);
        }
        p.client_wrote.extend_from_slice(&out);
        p.to_server.extend_from_slice(&out);
        ended.push(started.err());
    }
    ended
}

fn all_results(events: &[ClientEvent]) -> Vec<Vec<(usize, u16, Option<Enhanced>)>> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::TransactionDone { results } => Some(
                results
                    .iter()
                    .map(|(i, r)| (*i, r.code, r.enhanced))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

#[test]
fn chunked_transactions_go_out_together_and_are_answered_in_order() {
    for read_size in [usize::MAX, 1, 5, 64] {
        let mut p = Pair::new(read_size);
        assert_eq!(p.drive(), [ClientEvent::Ready]);
        assert!(p.client.can_chunk());
        let big = b"x\r\n".repeat(MAX_SIZE);
        let sent = start_chunked(
            &mut p,
            vec![
                // 1. Mixed recipients.
                (
                    envelope("a@x.test", &["b@y.test", "c@elsewhere.test"], BODY.len()),
                    BODY,
                ),
                // 2. Every recipient refused: the BDAT gets a 554 that is no one's result,
                //    and the server reads past the chunk all the same.
                (envelope("a@x.test", &["e@z.test"], 3), b"x\r\n"),
                // 3. Over the server's SIZE: refused here, nothing written.
                (envelope("a@x.test", &["b@y.test"], MAX_SIZE + 1), b"x\r\n"),
                // 4. Content over the limit the SIZE estimate did not show: the server's
                //    reply to the chunk is the accepted recipients' result.
                (envelope("a@x.test", &["d@y.test"], 10), &big),
                // 5. A message whose every line starts with a dot.
                (envelope("", &["f@y.test"], 9), b"..a\r\n..\r\n"),
            ],
        );
        let local = [vec![(0, 552, Some(Enhanced(5, 3, 4)))]];
        assert_eq!(
            sent.iter().map(Option::is_none).collect::<Vec<_>>(),
            [true, true, false, true, true]
        );
        assert_eq!(all_results(&[sent[2].clone().unwrap()]), local);
        let mark = p.client_wrote.len();
        let events = p.drive();
        assert_eq!(
            p.written_since(mark),
            "",
            "read size {read_size}: nothing written while the replies came in"
        );
        assert_eq!(
            all_results(&events),
            [
                vec![
                    (0, 250, Some(Enhanced(2, 0, 0))),
                    (1, 554, Some(Enhanced(5, 7, 1)))
                ],
                vec![(0, 554, Some(Enhanced(5, 7, 1)))],
                vec![(0, 552, Some(Enhanced(5, 3, 4)))],
                vec![(0, 250, Some(Enhanced(2, 0, 0)))],
            ],
            "read size {read_size}"
        );
        assert_eq!(p.stored.len(), 2, "read size {read_size}");
        // The same message as DATA delivers (BODY's ".\t." line is a stuffed "\t.").
        let content = pigeon::smtp::data::unstuff;
        assert_eq!(content(&p.stored[0].1), content(BODY));
        assert_eq!(recipients(&p.stored[0].0), ["b@y.test"]);
        assert_eq!(p.stored[1].1, b"..a\r\n..\r\n");
        assert!(p.client.is_ready());
        // Each transaction written behind another began with RSET (3 of the 4 that went
        // out); the next, with nothing in flight and the last one a success, does not.
        assert_eq!(p.written_since(0).matches("RSET\r\n").count(), 3);
        let mark = p.client_wrote.len();
        start_chunked(
            &mut p,
            vec![(envelope("a@x.test", &["b@y.test"], 3), b"x\r\n")],
        );
        assert!(p.written_since(mark).starts_with("MAIL FROM:<a@x.test>"));
        assert_eq!(
            all_results(&p.drive()),
            [vec![(0, 250, Some(Enhanced(2, 0, 0)))]]
        );
        assert_eq!(p.stored.len(), 3);
    }
}

#[test]
fn a_lost_connection_fails_every_chunked_transaction_in_flight() {
    let mut p = Pair::new(usize::MAX);
    assert_eq!(p.drive(), [ClientEvent::Ready]);
    start_chunked(
        &mut p,
        vec![
            (envelope("a@x.test", &["b@y.test"], 3), b"x\r\n"),
            (envelope("a@x.test", &["c@y.test", "d@y.test"], 3), b"y\r\n"),
        ],
    );
    // The connection drops before any reply.
    p.client.handle_eof();
    let mut events = Vec::new();
    while let Some(e) = p.client.poll_event() {
        events.push(e);
    }
    let lost = Reply::new(421, Enhanced(4, 4, 2), "Connection lost");
    assert_eq!(
        events,
        [
            ClientEvent::Failed {
                reply: lost.clone(),
                pending: vec![0]
            },
            ClientEvent::Failed {
                reply: lost,
                pending: vec![0, 1]
            },
            ClientEvent::Closed,
        ]
    );
}

#[test]
fn a_transaction_started_after_the_session_closed_ends_at_once_with_its_own_event() {
    let mut p = Pair::new(usize::MAX);
    assert_eq!(p.drive(), [ClientEvent::Ready]);
    start_chunked(
        &mut p,
        vec![(envelope("a@x.test", &["b@y.test"], 3), b"x\r\n")],
    );
    let events = p.drive();
    assert_eq!(
        all_results(&events),
        [vec![(0, 250, Some(Enhanced(2, 0, 0)))]]
    );
    // An unprompted 421: the session is over, and the client says so with events that
    // belong to no transaction, left queued here.
    let input = b"421 4.3.2 going down\r\n";
    assert_eq!(p.client.handle_input(input), input.len());
    assert!(p.client.is_closed());
    // A new transaction gets its own failure back, whatever is still queued.
    let ended = start_chunked(
        &mut p,
        vec![(envelope("a@x.test", &["c@y.test", "d@y.test"], 3), b"y\r\n")],
    );
    assert_eq!(
        ended,
        [Some(ClientEvent::Failed {
            reply: Reply::new(421, Enhanced(4, 4, 2), "Connection already closed"),
            pending: vec![0, 1],
        })]
    );
    assert_eq!(p.stored.len(), 1);
    let stale: Vec<_> = std::iter::from_fn(|| p.client.poll_event()).collect();
    assert_eq!(stale.last(), Some(&ClientEvent::Closed));
}
