//! Property tests on the sans-io session: how the input is cut into reads never changes
//! what the client hears or what is stored, and no input makes it panic.

use std::net::SocketAddr;
use std::sync::Arc;

use pigeon::session::state::{Event, Session, SessionConfig};
use proptest::prelude::*;

fn config() -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        hostname: "mx.test".into(),
        max_message_size: 2048,
        max_recipients: 4,
        max_errors: 1000,
        max_messages_per_session: u32::MAX,
        max_recipients_per_session: u32::MAX,
        relay_domains: vec!["y.test".into()],
        body_canons: Vec::new(),
    })
}

/// What a session produced: every reply byte, and every stored message (envelope, body).
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    output: Vec<u8>,
    stored: Vec<(String, Vec<u8>)>,
}

/// Feeds `input` cut at `cuts` (offsets), the way the driver does: unconsumed bytes are
/// offered again with the next read appended; stored messages get ids ID1, ID2, ...
fn drive(input: &[u8], cuts: &[usize], may_relay: bool) -> Outcome {
    let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let mut session = Session::new(config(), peer, may_relay);
    let mut outcome = Outcome {
        output: Vec::new(),
        stored: Vec::new(),
    };
    let mut pending = Vec::new();
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(input.len());
    let mut from = 0;
    for to in cuts {
        pending.extend_from_slice(&input[from..to]);
        from = to;
        pump(&mut session, &mut pending, &mut outcome);
    }
    outcome
}

fn pump(session: &mut Session, pending: &mut Vec<u8>, outcome: &mut Outcome) {
    loop {
        let used = session.handle_input(pending);
        pending.drain(..used);
        let mut stored = false;
        while let Some(event) = session.poll_event() {
            if let Event::Message(envelope, body) = event {
                outcome.stored.push((format!("{envelope:?}"), body));
                let id = format!("ID{}", outcome.stored.len());
                session.handle_stored(Ok(&id));
                stored = true;
            }
        }
        if !stored || pending.is_empty() {
            break;
        }
    }
    let mut out = Vec::new();
    session.take_output(&mut out);
    outcome.output.extend_from_slice(&out);
}

/// Pieces of plausible and implausible SMTP.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"EHLO client.test\r\n".to_vec()),
        Just(b"HELO client.test\r\n".to_vec()),
        Just(b"MAIL FROM:<a@x.test>\r\n".to_vec()),
        Just(b"MAIL FROM:<> SIZE=100 BODY=8BITMIME\r\n".to_vec()),
        Just(b"RCPT TO:<b@y.test>\r\n".to_vec()),
        Just(b"RCPT TO:<c@elsewhere.test>\r\n".to_vec()),
        Just(b"RCPT TO:<bad>\r\n".to_vec()),
        Just(b"DATA\r\n".to_vec()),
        Just(b"RSET\r\n".to_vec()),
        Just(b"NOOP\n".to_vec()),
        Just(b"QUIT\r\n".to_vec()),
        // Message content, possibly with smuggling sequences, then the real end.
        proptest::collection::vec(
            prop_oneof![
                Just(&b"line\r\n"[..]),
                Just(&b".dot\r\n"[..]),
                Just(&b"\n.\n"[..]),
                Just(&b"\r.\r"[..]),
                Just(&b"x"[..]),
                Just(&b"\r\n"[..]),
            ],
            0..40
        )
        .prop_map(|parts| {
            let mut v = parts.concat();
            v.extend_from_slice(b"\r\n.\r\n");
            v
        }),
        // A BDAT chunk with exactly the octets it announces.
        (proptest::collection::vec(any::<u8>(), 0..60), any::<bool>()).prop_map(|(data, last)| {
            let mut v =
                format!("BDAT {}{}\r\n", data.len(), if last { " LAST" } else { "" }).into_bytes();
            v.extend_from_slice(&data);
            v
        }),
        "[ -~]{0,100}\r\n".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..30),
    ]
}

fn dialogue() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(piece(), 1..30).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_split_gives_the_same_replies_and_messages(
        input in dialogue(),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
        may_relay in any::<bool>(),
    ) {
        let whole = drive(&input, &[], may_relay);
        let split = drive(&input, &cuts, may_relay);
        prop_assert_eq!(&whole, &split);
    }

    #[test]
    fn random_bytes_never_panic_and_replies_stay_well_formed(
        input in proptest::collection::vec(any::<u8>(), 0..3000),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let out = drive(&input, &cuts, true);
        let text = out.output;
        prop_assert!(text.ends_with(b"\r\n"));
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            prop_assert!(line.len() >= 5 && line.ends_with(b"\r"), "line {:?}", line);
            prop_assert!(line[..3].iter().all(u8::is_ascii_digit), "line {:?}", line);
            prop_assert!(line[3] == b' ' || line[3] == b'-', "line {:?}", line);
        }
    }
}

/// The exhaustive form of the split property for one dialogue full of edge cases: every
/// single cut point, and one byte at a time.
#[test]
fn every_cut_of_a_tricky_dialogue_is_equivalent() {
    let input: &[u8] = b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n\
        Subject: t\r\n\r\n..stuffed\r\nx\n.\nMAIL FROM:<evil@x.test>\r\n.\r\n\
        MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nok\r\n.\r\n\
        MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT 5\r\n.a\r\nbBDAT 3 LAST\r\nc\r\n\
        NOOP\r\nQUIT\r\n";
    let whole = drive(input, &[], true);
    assert_eq!(
        whole.stored.len(),
        2,
        "{:?}",
        String::from_utf8_lossy(&whole.output)
    );
    assert_eq!(whole.stored[0].1, b"ok\r\n");
    assert_eq!(whole.stored[1].1, b"..a\r\nbc\r\n");
    let text = String::from_utf8_lossy(&whole.output);
    assert!(text.contains("554 5.6.0"), "{text}");
    for cut in 0..=input.len() {
        assert_eq!(drive(input, &[cut], true), whole, "cut at {cut}");
    }
    let every: Vec<usize> = (0..input.len()).collect();
    assert_eq!(drive(input, &every, true), whole, "one byte at a time");
}
