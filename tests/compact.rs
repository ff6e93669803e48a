//! Compaction end to end: a message deferred for long is copied forward, so the segments
//! behind it are deleted while it waits; a crash after that neither loses its deferred
//! recipient nor repeats the recipients already delivered. Real pigeon, real aiosmtpd
//! sinks, real `kill -9`.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::sink::Sink;
use common::{python, wait_until, Pigeon};

/// Where the sink that always answers 451 (and later accepts) listens.
const DEFER: &str = "127.0.6.2:2600";
/// Where the sink that accepts everything listens.
const ACCEPT: &str = "127.0.6.3:2600";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Every segment file in the spool, as (shard directory, sequence number).
fn segments(spool: &Path) -> BTreeSet<(String, u64)> {
    let mut out = BTreeSet::new();
    for shard in std::fs::read_dir(spool).into_iter().flatten() {
        let shard = shard.unwrap().path();
        let name = shard.file_name().unwrap().to_string_lossy().into_owned();
        for seg in std::fs::read_dir(&shard).into_iter().flatten() {
            let seg = seg.unwrap().path();
            if seg.extension().is_some_and(|e| e == "seg") {
                let stem = seg.file_stem().unwrap().to_str().unwrap();
                out.insert((name.clone(), u64::from_str_radix(stem, 16).unwrap()));
            }
        }
    }
    out
}

/// Sends `count` messages of about `size` octets (one connection, one message at a time)
/// from `sender` to `rcpts`; returns their queue ids.
fn send(pigeon: &Pigeon, rcpts: &[&str], count: usize, size: usize) -> Vec<String> {
    let script = r#"
import smtplib, sys
host, port, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rcpts = sys.argv[5:]
s = smtplib.SMTP(host, port, timeout=60)
s.ehlo("client.test")
line = "x" * 76 + "\r\n"
for i in range(count):
    body = "Subject: m%d\r\n\r\n" % i + line * (size // len(line))
    code, text = s.mail("a@src.test")
    assert code == 250, text
    for r in rcpts:
        code, text = s.rcpt(r)
        assert code == 250, (r, code, text)
    code, text = s.data(body.encode())
    assert code == 250, text
    print(text.decode().split()[-1])
s.quit()
"#;
    let port = pigeon.addr.port().to_string();
    let ip = pigeon.addr.ip().to_string();
    let (count, size) = (count.to_string(), size.to_string());
    let mut args = vec![ip.as_str(), port.as_str(), count.as_str(), size.as_str()];
    args.extend_from_slice(rcpts);
    python(script, &args).lines().map(str::to_owned).collect()
}

/// How many times the sink got `rcpt`.
fn deliveries(sink: &Sink, rcpt: &str) -> usize {
    sink.transactions()
        .iter()
        .flat_map(|t| t.rcpt_tos.iter())
        .filter(|r| *r == rcpt)
        .count()
}

#[test]
fn a_long_deferred_message_is_copied_forward_and_old_segments_go() {
    let mut defer = Sink::start(&[(addr(DEFER), "tempfail")]);
    let accept = Sink::start(&[(addr(ACCEPT), "accept")]);
    // One shard: the filler mail must roll the very segment the deferred message is in.
    let mut pigeon = Pigeon::start_with_shards(
        "127.0.6.1",
        1,
        "segment_size = \"1MiB\"\ncompact_after = \"1s\"",
        &format!(
            "[delivery]\nretry = [\"1s\"]\n\n[domain.\"defer.test\"]\nroute = [\"{DEFER}\"]\n\n\
             [domain.\"ok.test\"]\nroute = [\"{ACCEPT}\"]\n\n\
             [domain.default]\nroute = [\"127.0.0.1:9\"]\n"
        ),
    );
    let spool = pigeon.spool();

    let stuck = send(
        &pigeon,
        &["stuck@defer.test", "one@ok.test", "two@ok.test"],
        1,
        20_000,
    )
    .remove(0);
    wait_until(Duration::from_secs(20), "the accepting recipients", || {
        deliveries(&accept, "one@ok.test") == 1 && deliveries(&accept, "two@ok.test") == 1
    });
    let first = segments(&spool);
    assert_eq!(first.len(), 1, "one segment so far: {first:?}");
    let first = first.into_iter().next().unwrap();

    // About 8 MiB of other mail, delivered at once: eight or more segments go by.
    let filler = send(&pigeon, &["filler@ok.test"], 80, 100_000);
    wait_until(
        Duration::from_secs(60),
        "the filler to be delivered",
        || deliveries(&accept, "filler@ok.test") == filler.len(),
    );
    let mut seen = BTreeSet::new();
    wait_until(
        Duration::from_secs(30),
        "old segments to be deleted",
        || {
            let now = segments(&spool);
            seen.extend(now.iter().cloned());
            !now.contains(&first) && now.len() <= 2
        },
    );
    let newest = seen.iter().map(|s| s.1).max().unwrap();
    assert!(newest >= 7, "too few segments went by: {seen:?}");
    // Stays small while the message keeps being deferred and copied.
    std::thread::sleep(Duration::from_secs(3));
    let now = segments(&spool);
    assert!(now.len() <= 2, "segments pile up again: {now:?}");
    assert!(
        defer.connections() >= 3,
        "the deferred message was not retried"
    );

    pigeon.kill9();
    let list = pigeon.queue_list();
    assert_eq!(pigeon.queued_ids(), vec![stuck.clone()], "{list}");
    let line = |rcpt: &str| {
        list.lines()
            .find(|l| l.contains(&format!("<{rcpt}>")))
            .unwrap_or_else(|| panic!("{rcpt} not listed:\n{list}"))
            .to_owned()
    };
    assert!(line("one@ok.test").ends_with("delivered"), "{list}");
    assert!(line("two@ok.test").ends_with("delivered"), "{list}");
    assert!(line("stuck@defer.test").contains("deferred"), "{list}");

    // After the crash: the deferred recipient is tried again, the others are not.
    let tried = defer.connections();
    pigeon.restart();
    wait_until(Duration::from_secs(20), "a retry after the restart", || {
        defer.connections() > tried
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(deliveries(&accept, "one@ok.test"), 1, "delivered again");
    assert_eq!(deliveries(&accept, "two@ok.test"), 1, "delivered again");

    // The receiver recovers: delivered exactly once, and the spool drains.
    drop(defer);
    defer = Sink::start(&[(addr(DEFER), "accept")]);
    wait_until(Duration::from_secs(20), "the deferred recipient", || {
        deliveries(&defer, "stuck@defer.test") == 1
    });
    wait_until(Duration::from_secs(20), "the spool to drain", || {
        segments(&spool).len() <= 1
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(deliveries(&defer, "stuck@defer.test"), 1);
    assert_eq!(deliveries(&accept, "one@ok.test"), 1);
    assert!(pigeon.stop().success());
    assert!(pigeon.queued_ids().is_empty(), "{}", pigeon.queue_list());
}

/// Two shards deliver each other's messages, so each segment holds outcomes about
/// messages in the other shard's segments. Once everything is delivered, the spool must
/// drain to nothing: a finished message's record is killed in place, so no segment waits
/// for another (before that, two such segments waited for each other forever, across
/// restarts).
#[test]
fn a_drained_spool_of_two_shards_shrinks_to_nothing() {
    const ACCEPT2: &str = "127.0.6.5:2600";
    let accept = Sink::start(&[(addr(ACCEPT2), "accept")]);
    let mut pigeon = Pigeon::start_with_shards(
        "127.0.6.4",
        2,
        "segment_size = \"1MiB\"",
        &format!("[domain.default]\nroute = [\"{ACCEPT2}\"]\n"),
    );
    let spool = pigeon.spool();
    // Four connections at once, spread over both shards by the kernel: about 6 MiB.
    let ids: Vec<String> = std::thread::scope(|s| {
        let senders: Vec<_> = (0..4)
            .map(|i| {
                let pigeon = &pigeon;
                s.spawn(move || send(pigeon, &[&format!("r{i}@x.test")], 30, 50_000))
            })
            .collect();
        senders
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(ids.len(), 120);
    wait_until(Duration::from_secs(60), "every delivery", || {
        accept.transactions().len() >= 120
    });
    wait_until(Duration::from_secs(30), "the spool to drain", || {
        segments(&spool).is_empty()
    });
    assert!(pigeon.stop().success());
    pigeon.restart();
    assert!(pigeon.stop().success());
    assert!(segments(&spool).is_empty(), "{:?}", segments(&spool));
    assert!(pigeon.queued_ids().is_empty(), "{}", pigeon.queue_list());
    assert_eq!(
        accept.transactions().len(),
        120,
        "something was delivered twice"
    );
}
