//! Scripted dialogues for the delivery client: the server's side is bytes written by hand,
//! so each test can play a server pigeon's own would never be (no EHLO, no PIPELINING,
//! garbage, 421 at odd moments), and check the client's output one step at a time.

use pigeon::deliver::client::envelope::Envelope;
use pigeon::deliver::client::extensions::Extensions;
use pigeon::deliver::client::machine::{Client, ClientConfig, ClientEvent};
use pigeon::deliver::client::waits::Wait;
use pigeon::smtp::{Enhanced, Reply};

/// A client and what it wrote, driven by hand.
struct Script {
    client: Client,
}

impl Script {
    fn new() -> Script {
        Script {
            client: Client::new(ClientConfig {
                helo_name: "out.x.test".into(),
                ..Default::default()
            }),
        }
    }

    /// A client past the greeting and an EHLO answered with these extension lines.
    fn ready(extensions: &str) -> Script {
        let mut s = Script::new();
        s.server("220 mx.test ESMTP\r\n");
        assert_eq!(s.out(), "EHLO out.x.test\r\n");
        let mut ehlo = String::new();
        let lines: Vec<&str> = std::iter::once("mx.test Hello")
            .chain(extensions.split_whitespace())
            .collect();
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            let line = line.replace('_', " ");
            ehlo.push_str(&format!("250{sep}{line}\r\n"));
        }
        s.server(&ehlo);
        assert_eq!(s.events(), [ClientEvent::Ready]);
        s
    }

    /// Feeds server bytes; all of them must be consumed.
    fn server(&mut self, bytes: &str) {
        let used = self.client.handle_input(bytes.as_bytes());
        assert_eq!(used, bytes.len(), "unconsumed input in {bytes:?}");
    }

    /// What the client wrote since the last call.
    fn out(&mut self) -> String {
        let mut buf = Vec::new();
        self.client.take_output(&mut buf);
        String::from_utf8(buf).expect("commands are UTF-8")
    }

    fn events(&mut self) -> Vec<ClientEvent> {
        std::iter::from_fn(|| self.client.poll_event()).collect()
    }

    fn start(&mut self, envelope: Envelope) {
        self.client.start_transaction(envelope);
    }

    /// The results of the `TransactionDone` that must be the only pending event.
    fn done(&mut self) -> Vec<(usize, u16)> {
        match self.events().as_slice() {
            [ClientEvent::TransactionDone { results }] => {
                results.iter().map(|(i, r)| (*i, r.code)).collect()
            }
            other => panic!("expected TransactionDone, got {other:?}"),
        }
    }
}

fn envelope(recipients: &[&str]) -> Envelope {
    Envelope {
        sender: "a@x.test".into(),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        size: 100,
        needs_8bit: false,
        needs_smtputf8: false,
        mail_dsn: String::new(),
        rcpt_dsn: Vec::new(),
    }
}

fn failed(events: &[ClientEvent]) -> (&Reply, &[usize]) {
    match events {
        [ClientEvent::Failed { reply, pending }, ClientEvent::Closed] => (reply, pending),
        other => panic!("expected Failed then Closed, got {other:?}"),
    }
}

#[test]
fn helo_fallback_when_ehlo_is_refused() {
    let mut s = Script::new();
    assert_eq!(s.client.waiting_for(), Some(Wait::Greeting));
    s.server("220 old.test SMTP\r\n");
    assert_eq!(s.out(), "EHLO out.x.test\r\n");
    assert_eq!(s.client.waiting_for(), Some(Wait::Ehlo));
    s.server("502 5.5.2 Command not recognized\r\n");
    assert_eq!(s.out(), "HELO out.x.test\r\n");
    assert!(s.events().is_empty());
    s.server("250 old.test\r\n");
    assert_eq!(s.events(), [ClientEvent::Ready]);
    assert_eq!(s.client.extensions(), &Extensions::default());
    assert_eq!(s.client.waiting_for(), None);

    // No extensions: no MAIL parameters, one command at a time.
    s.start(envelope(&["b@y.test"]));
    assert_eq!(s.out(), "MAIL FROM:<a@x.test>\r\n");
    // Nor any 8-bit content: no 8BITMIME after HELO.
    s.server("250 ok\r\n");
    assert_eq!(s.out(), "RCPT TO:<b@y.test>\r\n");
}

#[test]
fn helo_refused_too_ends_politely() {
    let mut s = Script::new();
    s.server("220 hi\r\n");
    s.out();
    s.server("500 what\r\n");
    assert_eq!(s.out(), "HELO out.x.test\r\n");
    s.server("550 5.7.1 not you\r\n");
    match s.events().as_slice() {
        [ClientEvent::Failed { reply, pending }] => {
            assert_eq!(reply.code, 550);
            assert!(pending.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.out(), "QUIT\r\n");
    assert_eq!(s.client.waiting_for(), Some(Wait::Quit));
    s.server("221 bye\r\n");
    assert_eq!(s.events(), [ClientEvent::Closed]);
}

#[test]
fn refused_greeting_gets_quit() {
    let mut s = Script::new();
    s.server("554 5.7.1 No SMTP service here\r\n");
    match s.events().as_slice() {
        [ClientEvent::Failed { reply, pending }] => {
            assert_eq!(reply.enhanced, Some(Enhanced(5, 7, 1)));
            assert!(pending.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // RFC 5321 §3.1: the server still waits for QUIT.
    assert_eq!(s.out(), "QUIT\r\n");
    s.client.handle_eof();
    assert_eq!(s.events(), [ClientEvent::Closed]);
}

#[test]
fn ehlo_4xx_is_a_failure_not_a_fallback() {
    let mut s = Script::new();
    s.server("220 hi\r\n");
    s.out();
    s.server("450 4.3.2 busy\r\n");
    assert!(matches!(
        s.events().as_slice(),
        [ClientEvent::Failed { .. }]
    ));
    assert_eq!(s.out(), "QUIT\r\n");
}

#[test]
fn without_pipelining_one_command_per_step() {
    let mut s = Script::ready("SIZE_1000 8BITMIME");
    s.start(envelope(&["b@y.test", "c@y.test"]));
    assert_eq!(s.out(), "MAIL FROM:<a@x.test> SIZE=100\r\n");
    assert_eq!(s.client.waiting_for(), Some(Wait::Mail));
    s.server("250 2.1.0 ok\r\n");
    assert_eq!(s.out(), "RCPT TO:<b@y.test>\r\n");
    assert_eq!(s.client.waiting_for(), Some(Wait::Rcpt));
    s.server("550 5.1.1 no such user\r\n");
    assert_eq!(s.out(), "RCPT TO:<c@y.test>\r\n");
    s.server("250 2.1.5 ok\r\n");
    assert_eq!(s.out(), "DATA\r\n");
    assert_eq!(s.client.waiting_for(), Some(Wait::DataInit));
    s.server("354 go ahead\r\n");
    assert_eq!(s.events(), [ClientEvent::SendContent]);
    assert_eq!(s.out(), "", "the driver writes the content, not the client");
    assert_eq!(s.client.waiting_for(), None);
    s.client.handle_content_sent();
    assert_eq!(s.client.waiting_for(), Some(Wait::DataTermination));
    s.server("250 2.0.0 queued as X\r\n");
    assert_eq!(s.done(), [(0, 550), (1, 250)]);
    assert!(s.client.is_ready());

    // A successful transaction needs no RSET (RFC 5321 §4.1.1.4).
    s.start(envelope(&["d@y.test"]));
    assert_eq!(s.out(), "MAIL FROM:<a@x.test> SIZE=100\r\n");
    // All recipients refused: no DATA at all, then RSET before the next transaction.
    s.server("250 ok\r\n");
    assert_eq!(s.out(), "RCPT TO:<d@y.test>\r\n");
    s.server("450 4.2.1 mailbox busy\r\n");
    assert_eq!(s.done(), [(0, 450)]);
    assert_eq!(s.out(), "");

    s.start(envelope(&["e@y.test"]));
    assert_eq!(s.out(), "RSET\r\n");
    assert_eq!(s.client.waiting_for(), Some(Wait::Rset));
    s.server("250 2.0.0 ok\r\n");
    assert_eq!(s.out(), "MAIL FROM:<a@x.test> SIZE=100\r\n");
    // A refused sender: no RCPT is sent, every recipient gets the MAIL reply.
    s.server("553 5.1.8 bad sender domain\r\n");
    assert_eq!(s.done(), [(0, 553)]);
    assert_eq!(s.out(), "");
}

#[test]
fn pipelining_sends_the_envelope_in_one_write() {
    let mut s = Script::ready("PIPELINING SIZE_1000");
    s.start(envelope(&["b@y.test", "c@y.test"]));
    assert_eq!(
        s.out(),
        "MAIL FROM:<a@x.test> SIZE=100\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n"
    );
    assert_eq!(s.client.waiting_for(), Some(Wait::Mail));
    s.server("250 ok\r\n250 ok\r\n");
    assert_eq!(s.client.waiting_for(), Some(Wait::Rcpt));
    s.server("550 no\r\n354 go\r\n");
    assert_eq!(s.events(), [ClientEvent::SendContent]);
    s.client.handle_content_sent();
    s.server("451 4.3.0 try later\r\n");
    assert_eq!(s.done(), [(0, 451), (1, 550)]);
    // A failed final reply: RSET goes first, in the same write.
    s.start(envelope(&["b@y.test"]));
    assert_eq!(
        s.out(),
        "RSET\r\nMAIL FROM:<a@x.test> SIZE=100\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"
    );
}

#[test]
fn pipelined_transaction_with_every_recipient_refused() {
    let mut s = Script::ready("PIPELINING");
    s.start(envelope(&["b@y.test", "c@y.test"]));
    s.out();
    // RFC 2920 §3.1: DATA gets 554 (or 503); it is no recipient's result, and no content
    // goes out.
    s.server("250 ok\r\n550 5.1.1 no\r\n551 5.1.6 moved\r\n554 5.5.1 No valid recipients\r\n");
    assert_eq!(s.done(), [(0, 550), (1, 551)]);
    assert_eq!(s.out(), "");
    assert!(s.client.is_ready());

    // A server that answers 354 anyway gets a lone dot, and its reply is ignored too.
    s.start(envelope(&["b@y.test"]));
    assert!(s.out().starts_with("RSET\r\n"));
    s.server("250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n");
    assert!(s.events().is_empty(), "no SendContent");
    assert_eq!(s.out(), ".\r\n");
    assert_eq!(s.client.waiting_for(), Some(Wait::DataTermination));
    s.server("250 2.0.0 queued, for nobody\r\n");
    assert_eq!(s.done(), [(0, 550)]);
}

#[test]
fn pipelined_refused_sender_ignores_the_rcpt_and_data_replies() {
    let mut s = Script::ready("PIPELINING");
    s.start(envelope(&["b@y.test", "c@y.test"]));
    s.out();
    s.server("550 5.7.1 sender blocked\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n");
    assert!(s.events().is_empty(), "the DATA reply is still due");
    assert_eq!(s.client.waiting_for(), Some(Wait::DataInit));
    s.server("503 5.5.1 need MAIL\r\n");
    assert_eq!(s.done(), [(0, 550), (1, 550)]);
}

#[test]
fn server_421_mid_transaction() {
    let mut s = Script::ready("PIPELINING");
    s.start(envelope(&["b@y.test", "c@y.test"]));
    s.out();
    s.server("250 ok\r\n250 ok\r\n421 4.3.2 shutting down\r\n");
    let events = s.events();
    let (reply, pending) = failed(&events);
    assert_eq!((reply.code, reply.enhanced), (421, Some(Enhanced(4, 3, 2))));
    assert_eq!(pending, [0, 1]);
    assert_eq!(s.out(), "");
    assert!(s.client.is_closed());
    assert_eq!(s.client.waiting_for(), None);
    // Too late for another transaction: its recipients fail at once, with a 4xx.
    s.start(envelope(&["d@y.test"]));
    match s.events().as_slice() {
        [ClientEvent::Failed { reply, pending }] => {
            assert_eq!(reply.code, 421);
            assert_eq!(pending, &[0]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn server_421_while_idle_and_after_content() {
    let mut s = Script::ready("");
    s.server("421 4.4.2 idle timeout\r\n");
    let events = s.events();
    let (reply, pending) = failed(&events);
    assert_eq!(reply.code, 421);
    assert!(pending.is_empty());

    let mut s = Script::ready("PIPELINING");
    s.start(envelope(&["b@y.test"]));
    // Input stops at the go-ahead: what follows answers the content.
    let rest = "421 4.3.0 out of space\r\n";
    let input = format!("250 ok\r\n250 ok\r\n354 go\r\n{rest}");
    let used = s.client.handle_input(input.as_bytes());
    assert_eq!(&input[used..], rest);
    assert_eq!(s.events(), [ClientEvent::SendContent]);
    assert_eq!(s.client.handle_input(rest.as_bytes()), 0);
    s.client.handle_content_sent();
    s.server(rest);
    let events = s.events();
    assert_eq!(failed(&events).1, [0]);
}

#[test]
fn garbage_from_the_server_fails_the_session() {
    // A line that is not a reply.
    let mut s = Script::ready("PIPELINING");
    s.start(envelope(&["b@y.test"]));
    s.out();
    let input = b"250 ok\r\nHTTP/1.1 400 Bad Request\r\n250 ok\r\n";
    let used = s.client.handle_input(input);
    assert_eq!(used, input.len(), "everything after a bad reply is dropped");
    let events = s.events();
    let (reply, pending) = failed(&events);
    assert_eq!((reply.code, reply.enhanced), (451, Some(Enhanced(4, 5, 0))));
    assert_eq!(pending, [0]);

    // Caught before its line ends.
    let mut s = Script::new();
    s.server("SSH-2.0-OpenSSH");
    let events = s.events();
    assert_eq!(failed(&events).0.code, 451);

    // A reply nobody asked for.
    let mut s = Script::ready("");
    s.server("250 surprise\r\n");
    let events = s.events();
    assert_eq!(failed(&events).0.code, 451);

    // A reply where none is due, after the final one.
    let mut s = Script::ready("PIPELINING");
    s.start(envelope(&["b@y.test"]));
    s.server("250 ok\r\n250 ok\r\n354 go\r\n");
    assert_eq!(s.events(), [ClientEvent::SendContent]);
    s.client.handle_content_sent();
    s.server("250 queued\r\n250 once more\r\n");
    let events = s.events();
    assert!(matches!(events[0], ClientEvent::TransactionDone { .. }));
    let (reply, pending) = failed(&events[1..]);
    assert_eq!(reply.code, 451);
    assert!(pending.is_empty());
    s.client.handle_content_sent(); // harmless once closed

    // A 2xx to DATA, a reply class that has no meaning there.
    let mut s = Script::ready("PIPELINING");
    s.start(envelope(&["b@y.test"]));
    s.server("250 ok\r\n250 ok\r\n250 ok\r\n");
    let events = s.events();
    assert_eq!(failed(&events).1, [0]);
}

#[test]
fn eight_bit_content_without_8bitmime_is_refused_locally() {
    let mut s = Script::ready("PIPELINING SMTPUTF8");
    let mut env = envelope(&["b@y.test", "c@y.test"]);
    env.needs_8bit = true;
    s.start(env);
    assert_eq!(s.out(), "", "nothing is sent");
    let events = s.events();
    let [ClientEvent::TransactionDone { results }] = events.as_slice() else {
        panic!("{events:?}");
    };
    for (i, (index, reply)) in results.iter().enumerate() {
        assert_eq!(*index, i);
        assert_eq!((reply.code, reply.enhanced), (554, Some(Enhanced(5, 6, 3))));
    }
    assert!(s.client.is_ready());

    // With 8BITMIME it goes out with BODY=8BITMIME.
    let mut s = Script::ready("8BITMIME");
    let mut env = envelope(&["b@y.test"]);
    env.needs_8bit = true;
    s.start(env);
    assert_eq!(s.out(), "MAIL FROM:<a@x.test> BODY=8BITMIME\r\n");
}

#[test]
fn smtputf8_message_without_smtputf8_is_refused_locally() {
    let mut s = Script::ready("PIPELINING 8BITMIME");
    let mut env = envelope(&["b@y.test"]);
    env.needs_smtputf8 = true;
    s.start(env);
    assert_eq!(s.out(), "");
    let events = s.events();
    let [ClientEvent::TransactionDone { results }] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(results[0].1.code, 553);
    assert_eq!(results[0].1.enhanced, Some(Enhanced(5, 6, 7)));

    // A non-ASCII address needs SMTPUTF8 even when the flag was not set.
    s.start(envelope(&["j\u{f6}rg@y.test"]));
    assert_eq!(s.done(), [(0, 553)]);

    let mut s = Script::ready("PIPELINING 8BITMIME SMTPUTF8");
    s.start(envelope(&["j\u{f6}rg@y.test"]));
    assert_eq!(
        s.out(),
        "MAIL FROM:<a@x.test> SMTPUTF8\r\nRCPT TO:<j\u{f6}rg@y.test>\r\nDATA\r\n"
    );
}

#[test]
fn over_the_advertised_size_is_refused_before_mail() {
    let mut s = Script::ready("PIPELINING SIZE_99");
    s.start(envelope(&["b@y.test", "c@y.test"]));
    assert_eq!(s.out(), "");
    assert_eq!(s.done(), [(0, 552), (1, 552)]);
    // Exactly at the limit is fine.
    let mut env = envelope(&["b@y.test"]);
    env.size = 99;
    s.start(env);
    assert!(s.out().starts_with("MAIL FROM:<a@x.test> SIZE=99\r\n"));
}

#[test]
fn multi_line_replies_split_at_every_byte() {
    // The server's side of a session, one entry per client write it answers: multi-line
    // greeting, EHLO, a pipelined transaction with a multi-line refusal, QUIT; bare LF in
    // places.
    let turns: [&str; 5] = [
        "220-mx.test ESMTP\r\n220 second greeting line\r\n",
        "250-mx.test Hello\r\n250-PIPELINING\n250-SIZE 5000\r\n250 8BITMIME\r\n",
        "250 2.1.0 ok\r\n550-5.1.1 The account does not exist;\r\n550 5.1.1 see https://x.test\r\n\
         250 2.1.5 ok\r\n354 go\r\n",
        "250-2.0.0 queued\r\n250 2.0.0 as X1\n",
        "221 2.0.0 bye\r\n",
    ];
    let len: usize = turns.iter().map(|t| t.len()).sum();
    let whole = run(&turns, &[]);
    let (events, written) = &whole;
    assert_eq!(
        written,
        "EHLO out.x.test\r\nMAIL FROM:<a@x.test> SIZE=100\r\nRCPT TO:<b@y.test>\r\n\
         RCPT TO:<c@y.test>\r\nDATA\r\n[content]QUIT\r\n"
    );
    let done = events
        .iter()
        .find_map(|e| match e {
            ClientEvent::TransactionDone { results } => Some(results.clone()),
            _ => None,
        })
        .expect("TransactionDone");
    assert_eq!(
        done[0].1.lines,
        ["The account does not exist;", "see https://x.test"]
    );
    assert_eq!(done[0].1.enhanced, Some(Enhanced(5, 1, 1)));
    assert_eq!(done[1].1.lines, ["queued", "as X1"]);
    assert_eq!(events.last(), Some(&ClientEvent::Closed));

    for cut in 0..=len {
        assert_eq!(run(&turns, &[cut]), whole, "cut at {cut}");
    }
    let every: Vec<usize> = (0..len).collect();
    assert_eq!(run(&turns, &every), whole, "one byte at a time");
}

/// Plays the server's `turns` to a client, acting as a driver would (a transaction on
/// Ready, content on SendContent, QUIT after the transaction). Turn k becomes readable only
/// once the client has made its k-th write, as from a real server; reads are further cut at
/// `cuts` (offsets into all the turns together). Returns the events and what the client
/// wrote, content shown as `[content]`.
fn run(turns: &[&str], cuts: &[usize]) -> (Vec<ClientEvent>, String) {
    let stream: Vec<u8> = turns.concat().into_bytes();
    let turn_ends: Vec<usize> = turns
        .iter()
        .scan(0, |end, t| {
            *end += t.len();
            Some(*end)
        })
        .collect();
    let mut client = Client::new(ClientConfig {
        helo_name: "out.x.test".into(),
        ..Default::default()
    });
    let mut events = Vec::new();
    let mut written = String::new();
    let mut writes = 0;
    let mut pending = Vec::new();
    let mut fed = 0;
    let mut cuts = cuts.to_vec();
    cuts.push(stream.len());
    for cut in cuts {
        loop {
            let readable = turn_ends[writes.min(turn_ends.len() - 1)];
            let to = cut.min(readable).max(fed);
            pending.extend_from_slice(&stream[fed..to]);
            let mut progress = to > fed;
            fed = to;
            let used = client.handle_input(&pending);
            pending.drain(..used);
            while let Some(event) = client.poll_event() {
                match &event {
                    ClientEvent::Ready => {
                        client.start_transaction(envelope(&["b@y.test", "c@y.test"]))
                    }
                    ClientEvent::SendContent => {
                        written.push_str("[content]");
                        writes += 1;
                        client.handle_content_sent();
                    }
                    ClientEvent::TransactionDone { .. } => client.quit(),
                    _ => {}
                }
                events.push(event);
                progress = true;
            }
            let mut out = Vec::new();
            client.take_output(&mut out);
            if !out.is_empty() {
                written.push_str(std::str::from_utf8(&out).expect("UTF-8"));
                writes += 1;
                progress = true;
            }
            if !progress {
                break;
            }
        }
    }
    assert_eq!(fed, stream.len());
    assert!(pending.is_empty());
    (events, written)
}

#[test]
fn end_of_stream_and_timeouts() {
    let mut s = Script::ready("PIPELINING");
    s.start(envelope(&["b@y.test", "c@y.test"]));
    s.server("250 ok\r\n");
    s.client.handle_eof();
    let events = s.events();
    let (reply, pending) = failed(&events);
    assert_eq!((reply.code, reply.enhanced), (421, Some(Enhanced(4, 4, 2))));
    assert_eq!(pending, [0, 1]);
    s.client.handle_eof();
    assert!(s.events().is_empty(), "closed once");

    let mut s = Script::ready("PIPELINING");
    s.start(envelope(&["b@y.test"]));
    s.server("250 ok\r\n250 ok\r\n");
    assert_eq!(s.client.waiting_for(), Some(Wait::DataInit));
    s.client.handle_timeout();
    let events = s.events();
    let (reply, pending) = failed(&events);
    assert_eq!(reply.code, 421);
    assert_eq!(reply.lines, ["Timeout waiting for DATA reply"]);
    assert_eq!(pending, [0]);

    // After QUIT, the end of the stream is just the end.
    let mut s = Script::ready("");
    s.client.quit();
    assert_eq!(s.out(), "QUIT\r\n");
    s.client.handle_eof();
    assert_eq!(s.events(), [ClientEvent::Closed]);
}

#[test]
fn quit_mid_transaction_abandons_it() {
    let mut s = Script::ready("PIPELINING");
    s.start(envelope(&["b@y.test"]));
    s.out();
    s.client.quit();
    let events = s.events();
    let (reply, pending) = failed(&events);
    assert_eq!(reply.code, 451);
    assert_eq!(pending, [0]);
    assert_eq!(s.out(), "", "no QUIT into a stream in an unknown state");
}

#[test]
fn empty_recipient_list_is_done_at_once() {
    let mut s = Script::ready("PIPELINING");
    s.start(envelope(&[]));
    assert_eq!(s.done(), []);
    assert_eq!(s.out(), "");
}

#[test]
#[should_panic(expected = "start_transaction while")]
fn start_before_ready_is_a_driver_bug() {
    let mut s = Script::new();
    s.start(envelope(&["b@y.test"]));
}
