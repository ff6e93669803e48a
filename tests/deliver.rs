//! Delivery end to end: Python's smtplib sends to pigeon; pigeon looks up MX records on a
//! real DNS server (hickory-server) and delivers to real SMTP sinks (aiosmtpd) on
//! 127.0.0.x addresses; outcomes are checked at the sinks, in the delivery log and in the
//! queue.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::dns::{a, mx, DnsServer};
use common::sink::Sink;
use common::{python, queued_id, wait_until, Client, Pigeon};

/// Port the sinks listen on (pigeon's `delivery.port`).
const SMTP: u16 = 2600;

fn at(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), SMTP)
}

/// pigeon configured to resolve through `dns` and deliver to port [`SMTP`].
fn pigeon(ip: &str, dns: &DnsServer, extra: &str) -> Pigeon {
    let config = format!(
        "[dns]\nnameservers = [\"{}\"]\n\n[delivery]\nport = {SMTP}\nretry = [\"1s\"]\n\n\
         [domain.default]\nmax_connections = 4\n\n{extra}",
        dns.addr
    );
    Pigeon::start(ip, "", &config)
}

fn smtplib_send(pigeon: &Pigeon, from: &str, to: &[&str], content: &str) -> String {
    let script = r#"
import smtplib, sys
host, port, sender, content = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rcpts = sys.argv[5:]
s = smtplib.SMTP(host, port, timeout=30)
s.ehlo("client.test")
code, text = s.mail(sender)
assert code == 250, text
for r in rcpts:
    code, text = s.rcpt(r)
    assert code == 250, (r, code, text)
code, text = s.data(content.encode())
assert code == 250, text
print(text.decode().split()[-1])
s.quit()
"#;
    let port = pigeon.addr.port().to_string();
    let ip = pigeon.addr.ip().to_string();
    let mut args = vec![ip.as_str(), port.as_str(), from, content];
    args.extend_from_slice(to);
    python(script, &args).trim().to_owned()
}

fn segment_count(pigeon: &Pigeon) -> usize {
    common::segment_files(&pigeon.spool()).len()
}

#[test]
fn mail_reaches_the_preferred_mx_intact_and_the_spool_drains() {
    let dns = DnsServer::start(
        "127.0.53.41",
        "test.",
        vec![
            mx("dest.test.", 10, "mx1.dest.test."),
            mx("dest.test.", 20, "mx2.dest.test."),
            a("mx1.dest.test.", "127.0.0.42"),
            a("mx2.dest.test.", "127.0.0.43"),
        ],
    );
    let preferred = Sink::start(&[(at("127.0.0.42"), "accept")]);
    let backup = Sink::start(&[(at("127.0.0.43"), "accept")]);
    let mut pigeon = pigeon("127.0.0.41", &dns, "");
    let content =
        "From: a@src.test\r\nSubject: relayed\r\n\r\nline one\r\n.line with a dot\r\n\r\nend\r\n";
    let id = smtplib_send(
        &pigeon,
        "a@src.test",
        &["b@dest.test", "c@Dest.Test"],
        content,
    );

    let t = preferred.wait_for(Duration::from_secs(20), |t| !t.is_empty());
    assert_eq!(t.len(), 1, "both recipients in one transaction");
    assert_eq!(t[0].mail_from, "a@src.test");
    assert_eq!(t[0].rcpt_tos, vec!["b@dest.test", "c@Dest.Test"]);
    let received = String::from_utf8(t[0].data.clone()).unwrap();
    assert!(
        received.starts_with("Received: from client.test"),
        "{received}"
    );
    assert!(received.contains(&format!("id {id}")), "{received}");
    assert!(
        received.ends_with(content),
        "body changed in transit:\n{received}"
    );
    assert!(backup.transactions().is_empty());

    wait_until(Duration::from_secs(10), "delivered events", || {
        pigeon
            .delivery_events()
            .iter()
            .filter(|e| e["event"] == "delivered")
            .count()
            == 2
    });
    let events = pigeon.delivery_events();
    let delivered: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "delivered")
        .collect();
    assert!(delivered
        .iter()
        .all(|e| e["id"] == id.as_str() && e["host"] == "mx1.dest.test"));
    assert!(delivered[0]["reply"].as_str().unwrap().starts_with("250"));
    // The drained segment is sealed and deleted after the committer's idle check.
    wait_until(Duration::from_secs(10), "the spool to drain", || {
        segment_count(&pigeon) == 0
    });
    assert!(pigeon.stop().success());
    assert!(pigeon.queued_ids().is_empty(), "{}", pigeon.queue_list());
}

#[test]
fn a_mailing_list_arrives_once_per_recipient_within_transaction_limits() {
    // 100 domains, MX hosts spread over four sink addresses; one domain holds 40%.
    let mut records = Vec::new();
    for d in 0..100 {
        records.push(mx(&format!("d{d}.test."), 10, &format!("mx.d{d}.test.")));
        records.push(a(
            &format!("mx.d{d}.test."),
            &format!("127.0.0.{}", 51 + d % 4),
        ));
    }
    let dns = DnsServer::start("127.0.53.50", "test.", records);
    let sink = Sink::start(
        &(51..55)
            .map(|i| (at(&format!("127.0.0.{i}")), "accept"))
            .collect::<Vec<_>>(),
    );
    let mut pigeon = pigeon("127.0.0.50", &dns, "[limits]\nmax_recipients = 10000\n");
    let recipients: Vec<String> = (0..10_000)
        .map(|i| {
            if i < 4000 {
                format!("u{i}@d0.test")
            } else {
                format!("u{i}@d{}.test", 1 + i % 99)
            }
        })
        .collect();

    // One message, 10,000 recipients, sent with PIPELINING in one write.
    let mut c = Client::greeted(pigeon.addr);
    assert_eq!(c.cmd("EHLO list.test").code, 250);
    let mut batch = String::from("MAIL FROM:<list@src.test>\r\n");
    for r in &recipients {
        batch.push_str(&format!("RCPT TO:<{r}>\r\n"));
    }
    batch.push_str("DATA\r\n");
    c.send(batch.as_bytes());
    for _ in 0..=recipients.len() {
        assert_eq!(c.reply().code, 250);
    }
    assert_eq!(c.reply().code, 354);
    c.send(b"Subject: newsletter\r\n\r\nHello list\r\n.\r\n");
    let id = queued_id(&c.reply());

    let t = sink.wait_for(Duration::from_secs(120), |t| {
        t.iter().map(|t| t.rcpt_tos.len()).sum::<usize>() >= recipients.len()
    });
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for tx in &t {
        assert!(
            tx.rcpt_tos.len() <= 100,
            "transaction with {} recipients",
            tx.rcpt_tos.len()
        );
        assert!(String::from_utf8_lossy(&tx.data).contains(&format!("id {id}")));
        for r in &tx.rcpt_tos {
            *seen.entry(r.as_str()).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), recipients.len());
    assert!(
        seen.values().all(|&n| n == 1),
        "a recipient got the message twice"
    );
    // Connections are reused: d0.test alone needs 40 transactions.
    let connections = sink.connections();
    assert!(
        connections < t.len(),
        "{connections} connections for {} transactions",
        t.len()
    );
    assert!(pigeon.stop().success());
}

#[test]
fn a_451_is_retried_and_a_550_bounces_to_the_sender_as_a_dsn() {
    let dns = DnsServer::start(
        "127.0.53.60",
        "test.",
        vec![
            a("later.test.", "127.0.0.61"),
            a("nobody.test.", "127.0.0.62"),
            a("src.test.", "127.0.0.63"),
        ],
    );
    let later = Sink::start(&[(at("127.0.0.61"), "tempfail-once")]);
    let nobody = Sink::start(&[(at("127.0.0.62"), "reject")]);
    let sender_mx = Sink::start(&[(at("127.0.0.63"), "accept")]);
    let mut pigeon = pigeon("127.0.0.60", &dns, "");
    let content =
        "From: me@src.test\r\nSubject: hello there\r\nMessage-ID: <orig@src.test>\r\n\r\nbody\r\n";
    let id = smtplib_send(
        &pigeon,
        "me@src.test",
        &["x@later.test", "y@nobody.test"],
        content,
    );

    // 451 first, then delivered on the retry a second later.
    let t = later.wait_for(Duration::from_secs(30), |t| !t.is_empty());
    assert_eq!(t[0].rcpt_tos, vec!["x@later.test"]);
    // The 550 comes back to the sender's own MX as an RFC 3464 report.
    let dsn = sender_mx.wait_for(Duration::from_secs(30), |t| !t.is_empty());
    assert_eq!(dsn[0].mail_from, "<>", "a DSN has the null sender");
    assert_eq!(dsn[0].rcpt_tos, vec!["me@src.test"]);
    // pigeon did try the refusing MX (it refuses at RCPT, so no transaction completes).
    assert!(nobody.connections() >= 1);
    let checked = python(
        r#"
import email, email.policy, sys
msg = email.message_from_bytes(open(sys.argv[1], "rb").read(), policy=email.policy.default)
assert msg.get_content_type() == "multipart/report", msg.get_content_type()
assert msg.get_param("report-type") == "delivery-status"
parts = list(msg.iter_parts())
status = parts[1]
assert status.get_content_type() == "message/delivery-status"
groups = [g for g in status.get_payload()]
rcpt = groups[1]
print(rcpt["Final-Recipient"], "|", rcpt["Action"], "|", rcpt["Status"], "|", rcpt["Diagnostic-Code"])
print(parts[2].get_content_type(), "|", "Subject: hello there" in parts[2].as_string())
"#,
        &[sender_mx.dir.path().join("msg-1.eml").to_str().unwrap()],
    );
    let lines: Vec<&str> = checked.lines().collect();
    let fields: Vec<&str> = lines[0].split(" | ").collect();
    assert_eq!(fields[0], "rfc822; y@nobody.test");
    assert_eq!(fields[1], "failed");
    assert_eq!(fields[2], "5.1.1");
    assert!(fields[3].starts_with("smtp; 550 5.1.1"), "{}", fields[3]);
    assert_eq!(lines[1], "text/rfc822-headers | True");

    wait_until(
        Duration::from_secs(10),
        "the log to show every outcome",
        || {
            let e = pigeon.delivery_events();
            ["deferred", "delivered", "bounced"]
                .iter()
                .all(|k| e.iter().any(|x| x["event"] == *k && x["id"] == id.as_str()))
        },
    );
    assert!(pigeon.stop().success());
}

#[test]
fn null_mx_nxdomain_unreachable_and_expiry_each_get_their_outcome() {
    let dns = DnsServer::start(
        "127.0.53.70",
        "test.",
        vec![
            mx("nullmx.test.", 0, "."),
            a("refused.test.", "127.0.0.72"),
            a("src.test.", "127.0.0.71"),
        ],
    );
    let sender_mx = Sink::start(&[(at("127.0.0.71"), "accept")]);
    // Nothing listens on 127.0.0.72: every connection is refused. The retry schedule is
    // 1s and messages expire after 3s.
    let mut pigeon = pigeon("127.0.0.70", &dns, "");
    pigeon.stop();
    let config_path = pigeon.dir.path().join("pigeon.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        config.replace("retry = [\"1s\"]", "retry = [\"1s\"]\nmax_age = \"3s\""),
    )
    .unwrap();
    pigeon.restart();
    let id = smtplib_send(
        &pigeon,
        "me@src.test",
        &["a@nullmx.test", "b@missing.test", "c@refused.test"],
        "Subject: edges\r\n\r\nbody\r\n",
    );
    let dsns = sender_mx.wait_for(Duration::from_secs(30), |t| {
        t.iter()
            .flat_map(|t| std::str::from_utf8(&t.data))
            .filter(|d| d.contains("Final-Recipient"))
            .count()
            >= 3
    });
    let all: String = dsns
        .iter()
        .map(|t| String::from_utf8_lossy(&t.data).into_owned())
        .collect();
    for (rcpt, status) in [
        ("a@nullmx.test", "5.1.10"),
        ("b@missing.test", "5.1.2"),
        ("c@refused.test", "4.4.7"),
    ] {
        let group = all
            .split("Final-Recipient: rfc822; ")
            .find(|g| g.starts_with(rcpt))
            .unwrap_or_else(|| panic!("no report for {rcpt}:\n{all}"));
        assert!(
            group.contains(&format!("Status: {status}")),
            "{rcpt} should be {status}:\n{group}"
        );
    }
    let of = |r: &str| -> Vec<String> {
        pigeon
            .delivery_events()
            .iter()
            .filter(|e| e["recipient"] == r && e["id"] == id.as_str())
            .map(|e| e["event"].as_str().unwrap().to_owned())
            .collect()
    };
    // The log is written every 100 ms: the report can arrive before the line.
    wait_until(
        Duration::from_secs(5),
        "the expiry in the delivery log",
        || of("c@refused.test").last().is_some_and(|e| e == "expired"),
    );
    assert_eq!(of("a@nullmx.test"), vec!["bounced"]);
    assert_eq!(of("b@missing.test"), vec!["bounced"]);
    let refused = of("c@refused.test");
    assert!(
        refused.len() >= 2 && refused[..refused.len() - 1].iter().all(|e| e == "deferred"),
        "{refused:?}"
    );
    assert_eq!(refused.last().unwrap(), "expired");
    assert!(pigeon.stop().success());
}

#[test]
fn kill_9_while_delivering_then_every_recipient_arrives_and_the_spool_empties() {
    let dns = DnsServer::start("127.0.53.80", "test.", vec![a("slow.test.", "127.0.0.81")]);
    let sink = Sink::start(&[(at("127.0.0.81"), "accept")]);
    // A rate limit keeps delivery going long enough to be interrupted.
    let mut pigeon = pigeon(
        "127.0.0.80",
        &dns,
        "[domain.\"slow.test\"]\nrate = \"100/s\"\n",
    );
    let total = 300;
    let mut c = Client::greeted(pigeon.addr);
    assert_eq!(c.cmd("EHLO c").code, 250);
    for i in 0..total {
        let r = c.send_message(
            "s@src.test",
            &[&format!("r{i}@slow.test")],
            format!("Subject: {i}\r\n\r\nbody {i}\r\n").as_bytes(),
        );
        queued_id(&r);
    }
    sink.wait_for(Duration::from_secs(30), |t| t.len() >= 30);
    pigeon.kill9();
    let before = sink.transactions().len();
    assert!(before < total, "the kill came after delivery had finished");

    pigeon.restart();
    let t = sink.wait_for(Duration::from_secs(60), |t| {
        let unique: std::collections::HashSet<&String> =
            t.iter().flat_map(|t| &t.rcpt_tos).collect();
        unique.len() >= total
    });
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for r in t.iter().flat_map(|t| &t.rcpt_tos) {
        *seen.entry(r.as_str()).or_default() += 1;
    }
    assert!((0..total).all(|i| seen.contains_key(format!("r{i}@slow.test").as_str())));
    // At least once: only deliveries cut off by the kill may repeat.
    let repeats: usize = seen.values().map(|n| n - 1).sum();
    assert!(repeats <= 8, "{repeats} repeated deliveries");
    wait_until(Duration::from_secs(20), "the spool to drain", || {
        segment_count(&pigeon) == 0
    });
    assert!(pigeon.stop().success());
    assert!(pigeon.queued_ids().is_empty(), "{}", pigeon.queue_list());
}

/// RFC 3461: NOTIFY, RET, ENVID and ORCPT are honoured when pigeon reports (the sinks do
/// not offer DSN, so pigeon itself reports success as "relayed").
#[test]
fn dsn_parameters_choose_which_reports_are_sent() {
    let dns = DnsServer::start(
        "127.0.53.90",
        "test.",
        vec![
            a("ok.test.", "127.0.0.91"),
            a("no.test.", "127.0.0.92"),
            a("slow.test.", "127.0.0.93"),
            a("src.test.", "127.0.0.94"),
        ],
    );
    let _ok = Sink::start(&[(at("127.0.0.91"), "accept")]);
    let _no = Sink::start(&[(at("127.0.0.92"), "reject")]);
    let _slow = Sink::start(&[(at("127.0.0.93"), "tempfail-once")]);
    let sender_mx = Sink::start(&[(at("127.0.0.94"), "accept")]);
    let mut pigeon = pigeon("127.0.0.90", &dns, "");
    pigeon.stop();
    let config_path = pigeon.dir.path().join("pigeon.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        config.replace(
            "retry = [\"1s\"]",
            "retry = [\"1s\"]\ndelay_warning = \"0s\"",
        ),
    )
    .unwrap();
    pigeon.restart();
    let script = r#"
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=30)
s.ehlo("client.test")
assert s.has_extn("dsn")
assert s.mail("me@src.test", ["RET=FULL", "ENVID=abc+2B123"])[0] == 250
assert s.rcpt("happy@ok.test", ["NOTIFY=SUCCESS", "ORCPT=rfc822;alias@ok.test"])[0] == 250
assert s.rcpt("quiet@no.test", ["NOTIFY=NEVER"])[0] == 250
assert s.rcpt("loud@no.test", ["NOTIFY=FAILURE"])[0] == 250
assert s.rcpt("patient@slow.test", ["NOTIFY=DELAY,FAILURE"])[0] == 250
assert s.rcpt("default@ok.test")[0] == 250
code, text = s.data(b"Subject: dsn test\r\n\r\nthe body\r\n")
assert code == 250, text
assert s.mail("me@src.test", ["RET=ALL"])[0] == 501
s.rset()
assert s.mail("me@src.test")[0] == 250
assert s.rcpt("x@ok.test", ["NOTIFY=SOMETIMES"])[0] == 501
s.quit()
"#;
    python(
        script,
        &[
            &pigeon.addr.ip().to_string(),
            &pigeon.addr.port().to_string(),
        ],
    );
    let reports = sender_mx.wait_for(Duration::from_secs(30), |t| t.len() >= 3);
    std::thread::sleep(Duration::from_secs(2));
    let reports = if sender_mx.transactions().len() > reports.len() {
        sender_mx.transactions()
    } else {
        reports
    };
    assert_eq!(
        reports.len(),
        3,
        "one relayed, one failed, one delayed report"
    );
    let summary = python(
        r#"
import email, email.policy, sys
for path in sys.argv[1:]:
    msg = email.message_from_bytes(open(path, "rb").read(), policy=email.policy.default)
    parts = list(msg.iter_parts())
    groups = parts[1].get_payload()
    for g in groups[1:]:
        print(g["Final-Recipient"], g["Action"], g["Status"], g["Original-Recipient"], groups[0]["Original-Envelope-Id"], parts[2].get_content_type())
"#,
        &reports
            .iter()
            .enumerate()
            .map(|(i, _)| {
                sender_mx
                    .dir
                    .path()
                    .join(format!("msg-{}.eml", i + 1))
                    .to_str()
                    .unwrap()
                    .to_owned()
            })
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let mut lines: Vec<&str> = summary.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "rfc822; happy@ok.test relayed 2.0.0 rfc822; alias@ok.test abc+123 text/rfc822-headers",
            "rfc822; loud@no.test failed 5.1.1 None abc+123 message/rfc822",
            "rfc822; patient@slow.test delayed 4.3.0 None abc+123 text/rfc822-headers",
        ],
        "{summary}"
    );
    assert!(pigeon.stop().success());
}

#[test]
fn a_busy_or_dead_mx_is_skipped_for_the_next_in_preference_order() {
    let dns = DnsServer::start(
        "127.0.53.100",
        "test.",
        vec![
            mx("many.test.", 10, "busy.many.test."),
            mx("many.test.", 15, "closed.many.test."),
            mx("many.test.", 20, "dead.many.test."),
            mx("many.test.", 30, "good.many.test."),
            a("busy.many.test.", "127.0.0.101"),
            a("closed.many.test.", "127.0.0.104"),
            a("dead.many.test.", "127.0.0.102"),
            a("good.many.test.", "127.0.0.103"),
        ],
    );
    // 127.0.0.102 has no listener: connection refused.
    let busy = Sink::start(&[(at("127.0.0.101"), "greet-421")]);
    let closed = Sink::start(&[(at("127.0.0.104"), "greet-554")]);
    let good = Sink::start(&[(at("127.0.0.103"), "accept")]);
    let mut pigeon = pigeon("127.0.0.100", &dns, "");
    let id = smtplib_send(
        &pigeon,
        "a@src.test",
        &["b@many.test"],
        "Subject: x\r\n\r\ny\r\n",
    );
    let t = good.wait_for(Duration::from_secs(20), |t| !t.is_empty());
    assert_eq!(t[0].rcpt_tos, vec!["b@many.test"]);
    assert!(
        std::fs::read_to_string(busy.dir.path().join("refused.jsonl")).is_ok_and(|s| !s.is_empty()),
        "the preferred MX was tried first"
    );
    // A server that refuses in its greeting still waits for QUIT (RFC 5321 §3.1), and gets
    // it, and nothing else.
    let commands: Vec<String> = std::fs::read_to_string(closed.dir.path().join("refused.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["command"].as_str().map(str::to_owned)
        })
        .collect();
    assert_eq!(commands, ["QUIT"]);
    wait_until(Duration::from_secs(10), "the delivered event", || {
        pigeon.delivery_events().iter().any(|e| {
            e["event"] == "delivered" && e["id"] == id.as_str() && e["host"] == "good.many.test"
        })
    });
    assert!(pigeon.stop().success());
}

/// A finished message whose record shares a segment with a message still deferred must not
/// be delivered again after a restart: its outcome records have to outlive its record.
#[test]
fn finished_messages_stay_finished_across_restarts_while_old_segments_live() {
    let dns = DnsServer::start(
        "127.0.53.110",
        "test.",
        vec![
            a("ok.test.", "127.0.0.111"),
            a("refused.test.", "127.0.0.112"),
        ],
    );
    let sink = Sink::start(&[(at("127.0.0.111"), "accept")]);
    let config = format!(
        "[dns]\nnameservers = [\"{}\"]\n\n[delivery]\nport = {SMTP}\nretry = [\"1h\"]\n\n\
         [domain.default]\nmax_connections = 4\n",
        dns.addr
    );
    // One shard and small segments, so records spread over several segments.
    let mut pigeon =
        Pigeon::start_with_shards("127.0.0.110", 1, "segment_size = \"1MiB\"", &config);
    let mut c = Client::greeted(pigeon.addr);
    assert_eq!(c.cmd("EHLO c").code, 250);
    queued_id(&c.send_message(
        "s@src.test",
        &["stuck@refused.test"],
        b"Subject: stuck\r\n\r\nx\r\n",
    ));
    let big = format!(
        "Subject: big\r\n\r\n{}",
        "0123456789abcdef0123456789abcdef0123456789abcdef\r\n".repeat(5600)
    );
    for i in 0..8 {
        let r = c.send_message("s@src.test", &[&format!("r{i}@ok.test")], big.as_bytes());
        queued_id(&r);
    }
    sink.wait_for(Duration::from_secs(30), |t| t.len() >= 8);
    wait_until(Duration::from_secs(10), "outcomes to be logged", || {
        pigeon
            .delivery_events()
            .iter()
            .filter(|e| e["event"] == "delivered")
            .count()
            == 8
    });
    assert!(pigeon.stop().success());
    pigeon.restart();
    // A message sent after the restart goes through the same domain's queue behind anything
    // the restart queued again (one shard: one lane, first in first out), so a resurrected
    // message is taken before it; and the graceful stop below finishes any transaction
    // still under way. Once it has arrived and pigeon has stopped, a resurrected message
    // would be at the sink too.
    let mut c = Client::greeted(pigeon.addr);
    assert_eq!(c.cmd("EHLO c").code, 250);
    queued_id(&c.send_message(
        "s@src.test",
        &["after@ok.test"],
        b"Subject: after\r\n\r\nx\r\n",
    ));
    sink.wait_for(Duration::from_secs(30), |t| {
        t.iter()
            .any(|t| t.rcpt_tos.iter().any(|r| r == "after@ok.test"))
    });
    assert!(pigeon.stop().success());
    assert_eq!(
        sink.transactions().len(),
        9,
        "a finished message was delivered again"
    );
    let list = pigeon.queue_list();
    assert_eq!(
        pigeon.queued_ids().len(),
        1,
        "only the stuck message is queued:\n{list}"
    );
    assert!(list.contains("stuck@refused.test"), "{list}");
}
