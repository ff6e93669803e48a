//! pigeon between the load tools: `blast` → pigeon → `sink`, with the sink refusing 30% of
//! recipients with 451 on their first try. pigeon must still deliver every recipient
//! (counted at the sink), and its delivery log must show the deferrals.
//!
//! Needs the `pigeon` binary next to this test's: `cargo test --workspace` builds it.

mod common;

use std::time::{Duration, Instant};

use common::{blast, n, temp_dir, Pigeon, Sink};

#[test]
fn every_recipient_arrives_through_a_sink_that_defers_thirty_percent() {
    let sink = Sink::start(
        "127.0.0.150:0",
        &["--fault", "rcpt:451:30", "--expect-recipients", "600"],
    );
    let dir = temp_dir("through-pigeon");
    let log = dir.join("delivery.log");
    let config = format!(
        "hostname = \"mx.test\"\nshards = 2\n\n[spool]\npath = \"{}\"\n\n[log]\ndelivery = \"{}\"\n\n\
         [[listener]]\naddress = \"127.0.0.151:2525\"\n\n[delivery]\nretry = [\"1s\"]\n\n\
         [domain.default]\nroute = [\"{}\"]\nmax_connections = 8\n",
        dir.join("spool").display(),
        log.display(),
        sink.addr
    );
    let _pigeon = Pigeon::serve(&dir, &config, "127.0.0.151:2525");

    let sent = blast(&[
        "--target",
        "127.0.0.151:2525",
        "--sessions",
        "10",
        "--messages",
        "200",
        "--recipients",
        "3",
        "--domains",
        "5",
    ]);
    assert_eq!(n(&sent["recipients_accepted"]), 600, "{sent}");
    // The sink exits once it has accepted all 600 recipients (or after its time cap).
    let got = sink.finish();
    assert_eq!(n(&got["recipients"]), 600, "{got}");
    let refused = n(&got["rcpt_refused"]);
    assert!(refused > 100, "{got}");

    // The sink counted the last recipient before pigeon read its 250 and logged it: wait
    // for the log to catch up.
    let read = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut events = read();
    while events.iter().filter(|e| e["event"] == "delivered").count() < 600
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
        events = read();
    }
    let count = |kind: &str| events.iter().filter(|e| e["event"] == kind).count() as u64;
    assert_eq!(count("delivered"), 600);
    assert_eq!(count("deferred"), refused, "every 451 is a logged deferral");
    assert!(events
        .iter()
        .filter(|e| e["event"] == "deferred")
        .all(|e| e["reply"].as_str().unwrap().starts_with("451")));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A mailing-list burst through two shards into a sink that takes chunked batches: every
/// recipient arrives, and pigeon then stops on SIGTERM. (A scheduler that spun on a domain
/// whose jobs another shard's batch had taken once hung a shard here for good: nothing
/// more was delivered, and the stop never came.)
#[test]
fn a_mailing_list_burst_arrives_whole_and_pigeon_still_stops() {
    let (messages, per_message) = (300u64, 100u64);
    let sink = Sink::start(
        "127.0.0.152:0",
        &["--expect-recipients", &(messages * per_message).to_string()],
    );
    let dir = temp_dir("through-pigeon-list");
    let config = format!(
        "hostname = \"mx.test\"\nshards = 2\n\n[spool]\npath = \"{}\"\n\n[log]\ndelivery = \"{}\"\n\n\
         [[listener]]\naddress = \"127.0.0.153:2525\"\n\n\
         [domain.default]\nroute = [\"{}\"]\nmax_connections = 32\n",
        dir.join("spool").display(),
        dir.join("delivery.log").display(),
        sink.addr
    );
    let mut pigeon = Pigeon::serve(&dir, &config, "127.0.0.153:2525");
    let sent = blast(&[
        "--target",
        "127.0.0.153:2525",
        "--sessions",
        "20",
        "--messages",
        &messages.to_string(),
        "--recipients",
        &per_message.to_string(),
        "--domains",
        "100",
        "--hot-domain-share",
        "40",
    ]);
    let got = sink.finish();
    // Stopped with a bound: a hung shard must fail the test, not hang it.
    let stopped = pigeon.stop_within(Duration::from_secs(20));
    assert_eq!(
        n(&sent["recipients_accepted"]),
        messages * per_message,
        "{sent}"
    );
    assert_eq!(n(&got["recipients"]), messages * per_message, "{got}");
    assert!(
        stopped.is_some_and(|s| s.success()),
        "pigeon did not stop within 20 s of SIGTERM: {stopped:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
