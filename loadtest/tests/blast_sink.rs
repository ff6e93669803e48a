//! `pigeon-load blast` → `pigeon-load sink`: both ends count the same messages and
//! recipients, with and without pipelining, over several addresses and domains.

mod common;

use common::{blast, n, Sink};

fn blast_into_sink(ip: &str, extra: &[&str]) {
    let sink = Sink::start(&format!("{ip}:0"), &["--expect-recipients", "600"]);
    let mut args = vec![
        "--target",
        &sink.addr,
        "--sessions",
        "10",
        "--messages",
        "200",
        "--recipients",
        "3",
        "--domains",
        "5",
    ];
    args.extend_from_slice(extra);
    let b = blast(&args);
    let s = sink.finish();

    assert_eq!(n(&b["replies"]["dot"]["250"]), 200, "{b}");
    assert_eq!(n(&b["messages_accepted"]), 200);
    assert_eq!(n(&b["recipients_accepted"]), 600);
    assert_eq!(n(&b["errors"]), 0);
    assert_eq!(s["reached_expected"], true, "{s}");
    assert_eq!(n(&s["messages"]), 200, "{s}");
    assert_eq!(n(&s["recipients"]), 600);
    assert_eq!(n(&s["transactions"]), 200);
    assert_eq!(n(&s["connections"]), 10);
    let domains = s["domains"].as_object().unwrap();
    assert_eq!(domains.len(), 5, "{s}");
    assert!(domains.values().all(|v| n(v) == 120), "{s}");
    assert_eq!(n(&s["addresses"][&sink_addr(&s)]["recipients"]), 600);
}

fn sink_addr(s: &serde_json::Value) -> String {
    s["listen"][0].as_str().unwrap().to_owned()
}

#[test]
fn counts_agree_with_pipelining() {
    blast_into_sink("127.0.0.61", &[]);
}

#[test]
fn counts_agree_without_pipelining() {
    blast_into_sink("127.0.0.62", &["--no-pipelining"]);
}

#[test]
fn counts_per_address_and_hot_domain() {
    let sink = Sink::start(
        "127.0.0.63:0,127.0.0.64:0",
        &["--expect-recipients", "1500"],
    );
    let (a, b) = (sink.addrs[0].clone(), sink.addrs[1].clone());
    let common = [
        "--sessions",
        "4",
        "--messages",
        "50",
        "--recipients",
        "10",
        "--domains",
        "100",
        "--hot-domain-share",
        "40",
        "--size",
        "1000",
    ];
    let r1 = blast(&[&["--target", a.as_str()][..], &common[..]].concat());
    let r2 = blast(
        &[
            &["--target", b.as_str(), "--first-recipient", "500"][..],
            &common[..],
            &["--rate", "500"][..],
        ]
        .concat(),
    );
    // 1000 recipients so far; a third blast pushes the sink to its expected 1500.
    let r3 = blast(&[
        "--target",
        &a,
        "--messages",
        "50",
        "--recipients",
        "10",
        "--first-recipient",
        "1000",
    ]);
    let s = sink.finish();
    for r in [&r1, &r2, &r3] {
        assert_eq!(n(&r["recipients_accepted"]), 500, "{r}");
    }
    assert_eq!(n(&s["recipients"]), 1500, "{s}");
    assert_eq!(n(&s["addresses"][&a]["recipients"]), 1000, "{s}");
    assert_eq!(n(&s["addresses"][&b]["recipients"]), 500, "{s}");
    assert_eq!(n(&s["addresses"][&b]["messages"]), 50);
    // d0.test: 40% of the 1000 skewed recipients, plus every one of the third blast (one
    // domain); the rest spread over d1..d99.
    let hot = n(&s["domains"]["d0.test"]) - 500;
    assert!((330..470).contains(&hot), "{hot} of 1000 at the hot domain");
    assert!(s["domains"].as_object().unwrap().len() > 50);
}
