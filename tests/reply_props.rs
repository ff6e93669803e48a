//! Property tests on reply parsing: how the server's bytes are cut into reads never changes
//! the replies the client sees, or the error it stops at; and what pigeon's server writes,
//! the client reads back unchanged.

use pigeon::smtp::response::{parse_reply, ReplyError};
use pigeon::smtp::{Enhanced, Reply};
use proptest::prelude::*;

/// Every reply in `buf`, then the error if one stops the parse.
fn parse_whole(buf: &[u8]) -> Vec<Result<Reply, ReplyError>> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        match parse_reply(&buf[pos..]) {
            Ok(Some((reply, used))) => {
                assert!(used > 0);
                out.push(Ok(reply));
                pos += used;
            }
            Ok(None) => return out,
            Err(e) => {
                out.push(Err(e));
                return out;
            }
        }
    }
}

/// The same, fed in reads cut at `cuts`, keeping unconsumed bytes as a driver does.
fn parse_split(buf: &[u8], cuts: &[usize]) -> Vec<Result<Reply, ReplyError>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (buf.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(buf.len());
    let mut out = Vec::new();
    let mut pending = Vec::new();
    let mut from = 0;
    for to in cuts {
        pending.extend_from_slice(&buf[from..to]);
        from = to;
        loop {
            match parse_reply(&pending) {
                Ok(Some((reply, used))) => {
                    out.push(Ok(reply));
                    pending.drain(..used);
                }
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    out
}

/// Replies as pigeon's own server writes them (text never starts with a digit, so it cannot
/// be mistaken for an enhanced status code).
fn reply() -> impl Strategy<Value = Reply> {
    let enhanced = prop_oneof![
        Just(None),
        (
            prop_oneof![Just(2u8), Just(4), Just(5)],
            0u16..1000,
            0u16..1000
        )
            .prop_map(|(c, s, d)| Some(Enhanced(c, s, d))),
    ];
    (
        200u16..600,
        enhanced,
        proptest::collection::vec("[A-Za-z][ -~]{0,40}", 1..6),
    )
        .prop_map(|(code, enhanced, lines)| Reply {
            code,
            enhanced,
            lines: lines.into_iter().map(Into::into).collect(),
        })
}

/// Pieces of plausible and implausible server output.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => reply().prop_map(|r| r.to_wire_string().into_bytes()),
        1 => Just(b"250-a\n250 b\n".to_vec()),
        1 => Just(b"354\r\n".to_vec()),
        1 => Just(b"250\r\n".to_vec()),
        1 => Just(b"250-x\r\n251 y\r\n".to_vec()),
        1 => Just(b"250\rx\r\n".to_vec()),
        1 => "[ -~]{0,20}\r?\n".prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..20),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn any_split_parses_like_the_whole(
        pieces in proptest::collection::vec(piece(), 1..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..24),
    ) {
        let buf = pieces.concat();
        prop_assert_eq!(parse_split(&buf, &cuts), parse_whole(&buf));
    }

    #[test]
    fn what_the_server_writes_the_client_reads(replies in proptest::collection::vec(reply(), 1..8)) {
        let mut buf = Vec::new();
        for r in &replies {
            r.write_to(&mut buf);
        }
        let parsed: Vec<Reply> = parse_whole(&buf).into_iter().map(Result::unwrap).collect();
        prop_assert_eq!(parsed, replies);
    }

    #[test]
    fn random_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_whole(&buf);
    }
}

/// Long inputs around the caps, cut everywhere near them: the verdict does not move.
#[test]
fn caps_hold_under_any_cut() {
    let line = b"250-0123456789012345678901234567890123456789\r\n";
    let mut long_reply = line.repeat(70_000 / line.len());
    long_reply.extend_from_slice(b"250 end\r\n");
    let mut long_line = b"250 ".to_vec();
    long_line.extend(std::iter::repeat_n(b'x', 5000));
    long_line.extend_from_slice(b"\r\n");
    for buf in [long_reply, long_line] {
        let whole = parse_whole(&buf);
        assert!(matches!(whole.as_slice(), [Err(_)]), "{whole:?}");
        for cut in (0..buf.len()).step_by(97) {
            assert_eq!(parse_split(&buf, &[cut]), whole, "cut at {cut}");
        }
    }
}
