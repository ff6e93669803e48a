//! Receiving mail end to end: Python's smtplib and raw dialogues against the real binary,
//! checked through `pigeon queue` on the spool it wrote.

mod common;

use common::{python, queued_id, without_received, Client, Pigeon};

/// smtplib (a client we did not write) uses every extension pigeon offers; each message
/// shows up in `pigeon queue list` under the id from its 250, with its body byte for byte.
#[test]
fn smtplib_messages_arrive_in_the_queue_byte_identical() {
    let mut pigeon = Pigeon::start("127.0.0.11", "", "");
    let out_dir = pigeon.dir.path().join("sent");
    std::fs::create_dir(&out_dir).unwrap();
    let script = r#"
import smtplib, socket, sys, os
host, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def save(name, content, reply):
    code, text = reply
    assert code == 250, (name, code, text)
    qid = text.decode().split()[-1]
    open(os.path.join(out, name + ".eml"), "wb").write(content)
    print(name, qid)

s = smtplib.SMTP(host, port, timeout=10)
s.ehlo("client.test")
for ext in ["pipelining", "size", "8bitmime", "smtputf8", "chunking", "enhancedstatuscodes"]:
    assert s.has_extn(ext), ext
assert int(s.esmtp_features["size"]) == 50 * 1024 * 1024

# 1. plain ASCII with SIZE, lines starting with dots, two recipients.
plain = b"From: a@x.test\r\nSubject: plain\r\n\r\nhello\r\n.one dot\r\n..two dots\r\n.\r\nend\r\n"
assert s.mail("a@x.test", ["SIZE=%d" % len(plain)])[0] == 250
assert s.rcpt("b@y.test")[0] == 250
assert s.rcpt("c@z.test")[0] == 250
save("plain", plain, s.data(plain))

# 2. 8BITMIME with raw 8-bit content.
eight = "Subject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße, żółw, 日本\r\n".encode()
assert s.mail("a@x.test", ["BODY=8BITMIME", "SIZE=%d" % len(eight)])[0] == 250
assert s.rcpt("b@y.test")[0] == 250
save("eightbit", eight, s.data(eight))

# 3. SMTPUTF8: UTF-8 addresses and headers.
utf = "From: δοκιμή@παράδειγμα.δοκιμή\r\nSubject: ünïcödé\r\n\r\nτεστ\r\n".encode()
assert s.mail("δοκιμή@παράδειγμα.δοκιμή", ["SMTPUTF8", "BODY=8BITMIME"])[0] == 250
assert s.rcpt("用户@例子.广告")[0] == 250
save("smtputf8", utf, s.data(utf))

# 4. smtplib's own sendmail (adds SIZE itself, converts bare LF to CRLF).
s.sendmail("a@x.test", ["d@y.test"], "Subject: sendmail\n\nvia sendmail\n")
s.quit()

# 5. PIPELINING: the whole envelope in one write, replies read afterwards.
sock = socket.create_connection((host, port), timeout=10)
f = sock.makefile("rb")
def reply():
    lines = []
    while True:
        line = f.readline()
        lines.append(line)
        if line[3:4] == b" ":
            return int(line[:3]), b"".join(lines)
assert reply()[0] == 220
sock.sendall(b"EHLO client.test\r\nMAIL FROM:<p@x.test>\r\nRCPT TO:<q@y.test>\r\nRCPT TO:<r@y.test>\r\nDATA\r\n")
assert [reply()[0] for _ in range(5)] == [250, 250, 250, 250, 354]
piped = b"Subject: pipelined\r\n\r\nbody\r\n"
sock.sendall(piped + b".\r\nNOOP\r\n")
code, text = reply()
save("pipelined", piped, (code, text.strip()))
assert reply()[0] == 250

# 6. BDAT (RFC 3030), three chunks in one write, a dot at a chunk's line start.
chunks = [b"Subject: bdat\r\n\r\nfirst ", b"line\r\n.leading dot\r\n", b"last line\r\n"]
sock.sendall(b"MAIL FROM:<p@x.test>\r\nRCPT TO:<q@y.test>\r\n"
             + b"BDAT %d\r\n" % len(chunks[0]) + chunks[0]
             + b"BDAT %d\r\n" % len(chunks[1]) + chunks[1]
             + b"BDAT %d LAST\r\n" % len(chunks[2]) + chunks[2])
assert [reply()[0] for _ in range(4)] == [250, 250, 250, 250]
code, text = reply()
save("bdat", b"".join(chunks), (code, text.strip()))
sock.sendall(b"QUIT\r\n")
assert reply()[0] == 221
"#;
    let out = python(
        script,
        &[
            &pigeon.addr.ip().to_string(),
            &pigeon.addr.port().to_string(),
            out_dir.to_str().unwrap(),
        ],
    );
    assert!(pigeon.stop().success(), "graceful stop:\n{}", pigeon.log());

    let list = pigeon.queue_list();
    let ids = pigeon.queued_ids();
    assert_eq!(
        ids.len(),
        6,
        "five named messages and one sendmail():\n{list}"
    );
    let sent: Vec<(&str, &str)> = out
        .lines()
        .map(|l| l.split_once(' ').expect("name id"))
        .collect();
    assert_eq!(sent.len(), 5);
    for (name, id) in sent {
        assert!(
            ids.iter().any(|i| i == id),
            "{name} ({id}) missing from:\n{list}"
        );
        let expected = std::fs::read(out_dir.join(format!("{name}.eml"))).unwrap();
        let stored = pigeon.queued_body(id);
        assert_eq!(
            String::from_utf8_lossy(without_received(&stored)),
            String::from_utf8_lossy(&expected),
            "{name}"
        );
    }
    assert!(list.contains("<用户@例子.广告>"), "{list}");
    assert!(list.contains("<c@z.test>"), "{list}");
}

/// One row of the bad-input table: what the client sends after the greeting (in one
/// write), and the reply codes it must get, in order.
struct Case {
    name: &'static str,
    input: Vec<u8>,
    expect: Vec<u16>,
}

fn case(name: &'static str, input: impl AsRef<[u8]>, expect: &[u16]) -> Case {
    Case {
        name,
        input: input.as_ref().to_vec(),
        expect: expect.to_vec(),
    }
}

const E: &str = "EHLO client.test\r\n";
const M: &str = "MAIL FROM:<a@x.test>\r\n";
const R: &str = "RCPT TO:<b@y.test>\r\n";

fn data_case(name: &'static str, content: &[u8], expect_final: u16) -> Case {
    let mut input = format!("{E}{M}{R}DATA\r\n").into_bytes();
    input.extend_from_slice(content);
    case(name, input, &[250, 250, 250, 354, expect_final])
}

fn cases() -> Vec<Case> {
    let long_cmd = format!("NOOP {}\r\nNOOP\r\n", "x".repeat(600));
    let mut bdat_big = format!("{E}{M}{R}BDAT 5000 LAST\r\n").into_bytes();
    bdat_big.extend(std::iter::repeat_n(b'a', 5000));
    bdat_big.extend_from_slice(b"NOOP\r\n");
    let mut data_big = "x".repeat(70).repeat(80).into_bytes();
    data_big.extend_from_slice(b"\r\n.\r\n");
    let long_line = format!("{}\r\n.\r\n", "y".repeat(1200));
    let mut looping = "Received: from a by b; Sat, 28 Nov 2026 00:00:00 +0000\r\n".repeat(50);
    looping.push_str("Subject: loop\r\n\r\nbody\r\n.\r\n");
    let twenty_errors = "FOO\r\n".repeat(20);
    let mut expect_errors = vec![500; 20];
    expect_errors.push(421);
    vec![
        // Grammar.
        case("unknown command", "FOO\r\n", &[500]),
        case("empty line", "\r\n", &[500]),
        case("EHLO without a name", "EHLO\r\n", &[501]),
        case(
            "lower-case verbs",
            "ehlo c\r\nmail from:<a@x.test>\r\n",
            &[250, 250],
        ),
        case(
            "space after the colon is tolerated",
            format!("{E}MAIL FROM: <a@x.test>\r\n"),
            &[250, 250],
        ),
        case(
            "command line over 512 octets, session goes on",
            long_cmd,
            &[500, 250],
        ),
        case("NUL in a command", "NO\0OP\r\n", &[500]),
        case(
            "DATA with an argument",
            format!("{E}{M}{R}DATA now\r\n"),
            &[250, 250, 250, 501],
        ),
        case(
            "bad BDAT size",
            format!("{E}{M}{R}BDAT -1\r\n"),
            &[250, 250, 250, 501],
        ),
        // Sequence (RFC 5321 §4.1.4).
        case("MAIL before EHLO", M, &[503]),
        case("RCPT before MAIL", format!("{E}{R}"), &[250, 503]),
        case("DATA before MAIL", format!("{E}DATA\r\n"), &[250, 503]),
        case(
            "DATA before RCPT",
            format!("{E}{M}DATA\r\n"),
            &[250, 250, 503],
        ),
        case("nested MAIL", format!("{E}{M}{M}"), &[250, 250, 503]),
        case(
            "RSET ends the transaction",
            format!("{E}{M}{R}RSET\r\nDATA\r\n"),
            &[250, 250, 250, 250, 503],
        ),
        case(
            "DATA after all recipients failed",
            format!("{E}{M}RCPT TO:<b@elsewhere.test>\r\nDATA\r\n"),
            &[250, 250, 554, 554],
        ),
        case(
            "DATA after BDAT",
            format!("{E}{M}{R}BDAT 3\r\nabcDATA\r\n"),
            &[250, 250, 250, 250, 503],
        ),
        case(
            "BDAT without MAIL reads its chunk and goes on",
            format!("{E}BDAT 5 LAST\r\nhelloNOOP\r\n"),
            &[250, 503, 250],
        ),
        // Addresses.
        case(
            "MAIL without angle brackets",
            format!("{E}MAIL FROM:a@x.test\r\n"),
            &[250, 501],
        ),
        case(
            "MAIL without FROM:",
            format!("{E}MAIL a@x.test\r\n"),
            &[250, 501],
        ),
        case(
            "sender without a domain",
            format!("{E}MAIL FROM:<a>\r\n"),
            &[250, 501],
        ),
        case(
            "recipient with an empty domain",
            format!("{E}{M}RCPT TO:<b@>\r\n"),
            &[250, 250, 501],
        ),
        case(
            "null recipient",
            format!("{E}{M}RCPT TO:<>\r\n"),
            &[250, 250, 501],
        ),
        case(
            "recipient with a trailing dot",
            format!("{E}{M}RCPT TO:<b@y.test.>\r\n"),
            &[250, 250, 501],
        ),
        case(
            "two @ unquoted",
            format!("{E}{M}RCPT TO:<b@elsewhere.test@y.test>\r\n"),
            &[250, 250, 501],
        ),
        case(
            "address literal with a bad IP",
            format!("{E}{M}RCPT TO:<b@[1.2.3]>\r\n"),
            &[250, 250, 501],
        ),
        case(
            "non-ASCII sender without SMTPUTF8",
            format!("{E}MAIL FROM:<δ@x.test>\r\n"),
            &[250, 553],
        ),
        case(
            "non-ASCII recipient without SMTPUTF8",
            format!("{E}{M}RCPT TO:<δ@y.test>\r\n"),
            &[250, 250, 553],
        ),
        case(
            "non-ASCII recipient with SMTPUTF8",
            format!("{E}MAIL FROM:<a@x.test> SMTPUTF8\r\nRCPT TO:<δ@y.test>\r\n"),
            &[250, 250, 250],
        ),
        case(
            "upper-case local domain",
            format!("{E}{M}RCPT TO:<b@Y.TEST>\r\n"),
            &[250, 250, 250],
        ),
        // Relay control: this server relays for nobody and accepts mail for y.test only.
        case(
            "relay to another domain",
            format!("{E}{M}RCPT TO:<b@elsewhere.test>\r\n"),
            &[250, 250, 554],
        ),
        case(
            "source route to another domain",
            format!("{E}{M}RCPT TO:<@y.test:b@elsewhere.test>\r\n"),
            &[250, 250, 554],
        ),
        case(
            "IP literal destination",
            format!("{E}{M}RCPT TO:<b@[127.0.0.1]>\r\n"),
            &[250, 250, 554],
        ),
        // ESMTP parameters.
        case(
            "SIZE over the limit",
            format!("{E}MAIL FROM:<a@x.test> SIZE=999999999\r\n"),
            &[250, 552],
        ),
        case(
            "SIZE not a number",
            format!("{E}MAIL FROM:<a@x.test> SIZE=abc\r\n"),
            &[250, 501],
        ),
        case(
            "unknown MAIL parameter",
            format!("{E}MAIL FROM:<a@x.test> FOO=bar\r\n"),
            &[250, 555],
        ),
        case(
            "BODY=BINARYMIME is not offered",
            format!("{E}MAIL FROM:<a@x.test> BODY=BINARYMIME\r\n"),
            &[250, 555],
        ),
        case("DSN NOTIFY with a bad value", format!("{E}{M}RCPT TO:<b@y.test> NOTIFY=SOMETIMES\r\n"), &[250, 250, 501]),
        case("DSN RET with a bad value", format!("{E}MAIL FROM:<a@x.test> RET=ALL\r\n"), &[250, 501]),
        case("DSN ORCPT without an address type", format!("{E}{M}RCPT TO:<b@y.test> ORCPT=b@y.test\r\n"), &[250, 250, 501]),
        case(
            "DSN parameters accepted",
            format!("{E}MAIL FROM:<a@x.test> RET=HDRS ENVID=x1\r\nRCPT TO:<b@y.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b@y.test\r\n"),
            &[250, 250, 250],
        ),
        case(
            "unknown RCPT parameter",
            format!("{E}{M}RCPT TO:<b@y.test> FOO=1\r\n"),
            &[250, 250, 555],
        ),
        case(
            "parameters after HELO",
            "HELO c\r\nMAIL FROM:<a@x.test> SIZE=10\r\n",
            &[250, 555],
        ),
        // Limits.
        case(
            "fourth recipient over max_recipients = 3",
            format!("{E}{M}{R}{R}{R}{R}"),
            &[250, 250, 250, 250, 250, 452],
        ),
        data_case("DATA over max_message_size", &data_big, 552),
        case(
            "BDAT over max_message_size, stays in step",
            bdat_big,
            &[250, 250, 250, 552, 250],
        ),
        case(
            "twenty errors end the session",
            twenty_errors,
            &expect_errors,
        ),
        // Content faults and SMTP smuggling: none of these ends DATA early.
        data_case(
            "smuggling LF.LF",
            b"x\n.\nMAIL FROM:<evil@x.test>\r\n\r\n.\r\n",
            554,
        ),
        data_case(
            "smuggling CR.CR",
            b"x\r.\rMAIL FROM:<evil@x.test>\r\n\r\n.\r\n",
            554,
        ),
        data_case(
            "smuggling LF.CRLF",
            b"x\n.\r\nMAIL FROM:<evil@x.test>\r\n\r\n.\r\n",
            554,
        ),
        data_case(
            "smuggling CRLF.LF",
            b"x\r\n.\nMAIL FROM:<evil@x.test>\r\n\r\n.\r\n",
            554,
        ),
        data_case(
            "smuggling CRLF.CR",
            b"x\r\n.\rMAIL FROM:<evil@x.test>\r\n\r\n.\r\n",
            554,
        ),
        data_case(
            "smuggling CR.CRLF",
            b"x\r.\r\nMAIL FROM:<evil@x.test>\r\n\r\n.\r\n",
            554,
        ),
        data_case("NUL in content", b"a\0b\r\n.\r\n", 554),
        data_case("fifty Received headers: a mail loop", looping.as_bytes(), 554),
        data_case("line over 998 octets", long_line.as_bytes(), 554),
        case(
            "bare LF in BDAT content",
            format!("{E}{M}{R}BDAT 4 LAST\r\na\nb\n"),
            &[250, 250, 250, 554],
        ),
        // Other verbs.
        case("VRFY", "VRFY postmaster\r\n", &[252]),
        case("EXPN", "EXPN list\r\n", &[502]),
        case("HELP", "HELP\r\n", &[214]),
        case(
            "STARTTLS is not offered",
            format!("{E}STARTTLS\r\n"),
            &[250, 502],
        ),
        case(
            "AUTH is not offered",
            format!("{E}AUTH PLAIN\r\n"),
            &[250, 502],
        ),
        case("NOOP and QUIT", "NOOP\r\nQUIT\r\n", &[250, 221]),
        // The ones that are accepted, to prove the server is not simply refusing everything.
        data_case("plain message", b"Subject: ok\r\n\r\nfine\r\n.\r\n", 250),
        case(
            "empty BDAT LAST",
            format!("{E}{M}{R}BDAT 0 LAST\r\n"),
            &[250, 250, 250, 250],
        ),
    ]
}

#[test]
fn bad_and_edge_inputs_get_exact_reply_codes_and_nothing_is_spooled() {
    let mut pigeon = Pigeon::start(
        "127.0.0.12",
        "",
        "[relay]\nnetworks = []\ndomains = [\"y.test\"]\n\n\
         [limits]\nmax_recipients = 3\nmax_message_size = 4096\nmax_errors = 20\n",
    );
    let cases = cases();
    assert!(cases.len() >= 40);
    let mut accepted = 0;
    let mut failures = Vec::new();
    for c in &cases {
        let mut client = Client::greeted(pigeon.addr);
        client.send(&c.input);
        let mut got = Vec::new();
        for _ in &c.expect {
            match client.try_reply() {
                Some(r) => {
                    if r.code == 250 && r.text.contains("queued as") {
                        accepted += 1;
                    }
                    got.push(r);
                }
                None => break,
            }
        }
        let codes: Vec<u16> = got.iter().map(|r| r.code).collect();
        if codes != c.expect {
            failures.push(format!(
                "{}: expected {:?}, got {:?}",
                c.name, c.expect, got
            ));
        }
        // Every reply but the greeting, EHLO/HELO and 354 carries an enhanced status code.
        for r in got
            .iter()
            .filter(|r| r.code != 354 && !r.text.starts_with("mx.test"))
        {
            let class = r.code / 100;
            assert!(
                r.text.starts_with(&format!("{class}.")),
                "{}: no enhanced status code in {r:?}",
                c.name
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(pigeon.stop().success());
    let ids = pigeon.queued_ids();
    assert_eq!(
        ids.len(),
        accepted,
        "only the accepted messages are spooled"
    );
    assert_eq!(accepted, 2);
    for id in ids {
        let body = pigeon.queued_body(&id);
        assert!(
            !String::from_utf8_lossy(&body).contains("evil"),
            "smuggled content spooled"
        );
    }
}

#[test]
fn size_limit_spools_nothing_and_the_session_continues() {
    let mut pigeon = Pigeon::start("127.0.0.13", "", "[limits]\nmax_message_size = 2048\n");
    let mut c = Client::greeted(pigeon.addr);
    assert_eq!(c.cmd("EHLO c").code, 250);
    let big = format!("Subject: big\r\n\r\n{}\r\n", "z".repeat(3000));
    let r = c.send_message("a@x.test", &["b@y.test"], big.as_bytes());
    assert_eq!((r.code, &r.text[..5]), (552, "5.3.4"));
    let r = c.send_message("a@x.test", &["b@y.test"], b"Subject: small\r\n\r\nok\r\n");
    let id = queued_id(&r);
    assert!(pigeon.stop().success());
    assert_eq!(pigeon.queued_ids(), vec![id]);
}
