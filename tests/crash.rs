//! Crashes: `kill -9` under load, and segments cut or padded by hand. After a restart every
//! message that got a 250 is in the queue, whole.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{file_len, queued_id, without_received, Client, Pigeon};

/// The content of message `i` of sender thread `t`: unique and reproducible, so a message
/// found in the spool can be checked byte for byte without having seen its 250.
fn content(t: usize, i: usize) -> Vec<u8> {
    let mut c = format!("Subject: load {t}-{i}\r\nX-Token: {t}-{i}\r\n\r\n").into_bytes();
    for line in 0..30 {
        c.extend_from_slice(format!("{t}-{i} line {line} {}\r\n", "abcdefgh".repeat(8)).as_bytes());
    }
    c
}

/// Sends messages until the connection dies or `count` are done; returns (id, t, i) for
/// every message that got a 250.
fn sender(
    pigeon_addr: std::net::SocketAddr,
    t: usize,
    count: usize,
    acked: Arc<AtomicUsize>,
) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut c = Client::greeted(pigeon_addr);
    if !c.try_send(b"EHLO load\r\n") || c.try_reply().is_none() {
        return out;
    }
    for i in 0..count {
        let mut batch =
            format!("MAIL FROM:<s{t}@x.test>\r\nRCPT TO:<r{i}@y.test>\r\nDATA\r\n").into_bytes();
        if !c.try_send(&batch) {
            return out;
        }
        for _ in 0..3 {
            if c.try_reply().is_none() {
                return out;
            }
        }
        batch = content(t, i);
        batch.extend_from_slice(b".\r\n");
        if !c.try_send(&batch) {
            return out;
        }
        match c.try_reply() {
            Some(r) if r.code == 250 => {
                out.push((queued_id(&r), t, i));
                acked.fetch_add(1, Ordering::SeqCst);
            }
            _ => return out,
        }
    }
    out
}

fn token(body: &[u8]) -> (usize, usize) {
    let text = String::from_utf8_lossy(body);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("X-Token: "))
        .expect("X-Token");
    let (t, i) = line.split_once('-').unwrap();
    (t.parse().unwrap(), i.parse().unwrap())
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_message() {
    let mut pigeon = Pigeon::start("127.0.0.31", "", "");
    let acked = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let (addr, acked) = (pigeon.addr, acked.clone());
            std::thread::spawn(move || sender(addr, t, 400, acked))
        })
        .collect();
    // Kill while the senders are mid-stream: after enough acknowledgements, or 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.load(Ordering::SeqCst) < 300 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    pigeon.kill9();
    let sent: Vec<(String, usize, usize)> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert!(
        sent.len() >= 50,
        "too few messages before the kill: {}",
        sent.len()
    );
    assert!(
        sent.len() < 6 * 400,
        "the kill came after all senders had finished"
    );

    // Offline, before any repair: every acknowledged id is readable.
    let before: Vec<String> = pigeon.queued_ids();
    pigeon.restart();
    assert!(pigeon.stop().success(), "{}", pigeon.log());
    let after: Vec<String> = pigeon.queued_ids();
    assert_eq!(
        before, after,
        "repair changed which whole messages are readable"
    );
    let index: HashMap<&str, usize> = after
        .iter()
        .enumerate()
        .map(|(n, id)| (id.as_str(), n))
        .collect();
    for (id, t, i) in &sent {
        assert!(
            index.contains_key(id.as_str()),
            "acknowledged {id} ({t}-{i}) lost"
        );
    }
    // Every message in the queue is whole: acknowledged or not, its content is exactly
    // what its sender sent. (Check all of the unacknowledged, a sample of the rest.)
    let acked_ids: HashMap<&str, (usize, usize)> = sent
        .iter()
        .map(|(id, t, i)| (id.as_str(), (*t, *i)))
        .collect();
    for (n, id) in after.iter().enumerate() {
        let known = acked_ids.get(id.as_str());
        if known.is_some() && n % 10 != 0 {
            continue;
        }
        let body = pigeon.queued_body(id);
        let body = without_received(&body);
        let (t, i) = token(body);
        if let Some(&expected) = known {
            assert_eq!((t, i), expected, "{id} holds another message");
        }
        assert_eq!(body, content(t, i).as_slice(), "{id} is not whole");
    }
}

fn only_segment(pigeon: &Pigeon) -> std::path::PathBuf {
    let dir = pigeon.spool().join("shard-000");
    let mut segs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    assert_eq!(segs.len(), 1, "{segs:?}");
    segs.pop().unwrap()
}

fn send_five(pigeon: &Pigeon) -> Vec<String> {
    let mut c = Client::greeted(pigeon.addr);
    assert_eq!(c.cmd("EHLO c").code, 250);
    (0..5)
        .map(|i| queued_id(&c.send_message("a@x.test", &["b@y.test"], &content(0, i))))
        .collect()
}

#[test]
fn a_segment_cut_mid_record_recovers_to_the_last_whole_record() {
    let mut pigeon = Pigeon::start_with_shards("127.0.0.32", 1, "", "");
    let ids = send_five(&pigeon);
    pigeon.kill9();
    let seg = only_segment(&pigeon);
    // Cut inside the fifth message's record (delivery attempts may have appended outcome
    // records after it; they go too).
    let bytes = std::fs::read(&seg).unwrap();
    let fifth = bytes
        .windows(12)
        .position(|w| w == b"X-Token: 0-4")
        .expect("fifth message");
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(fifth as u64 + 20).unwrap();
    drop(f);
    assert_eq!(pigeon.queued_ids(), ids[..4].to_vec());

    pigeon.restart();
    assert!(
        pigeon.log().contains("truncating torn tail"),
        "{}",
        pigeon.log()
    );
    let cut = file_len(&seg);
    assert!(cut < fifth as u64, "the torn record is gone from the file");
    let mut c = Client::greeted(pigeon.addr);
    assert_eq!(c.cmd("EHLO c").code, 250);
    let new = queued_id(&c.send_message("a@x.test", &["b@y.test"], &content(1, 0)));
    assert!(pigeon.stop().success());
    let mut expected = ids[..4].to_vec();
    expected.push(new);
    assert_eq!(pigeon.queued_ids(), expected);
    assert_eq!(
        file_len(&seg),
        cut,
        "a restart writes to a new segment, not after the cut"
    );
}

#[test]
fn garbage_after_the_last_record_is_truncated_and_nothing_is_lost() {
    let mut pigeon = Pigeon::start_with_shards("127.0.0.33", 1, "", "");
    let ids = send_five(&pigeon);
    pigeon.kill9();
    let seg = only_segment(&pigeon);
    let whole = file_len(&seg);
    // What a crash mid-append can leave: a plausible length, then junk.
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&200u32.to_le_bytes()).unwrap();
    f.write_all(&[0xAB; 100]).unwrap();
    drop(f);
    assert_eq!(pigeon.queued_ids(), ids);
    pigeon.restart();
    assert!(pigeon.stop().success());
    assert_eq!(file_len(&seg), whole);
    assert_eq!(pigeon.queued_ids(), ids);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            without_received(&pigeon.queued_body(id)),
            content(0, i).as_slice()
        );
    }
}
