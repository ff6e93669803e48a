//! Injected faults: the blast sees them, and the sink counts exactly what it accepted. A
//! 4xx at RCPT hits a recipient on its first try only, so sending the same recipients again
//! gets every one through.

mod common;

use common::{blast, n, Sink};

const LOAD: [&str; 8] = [
    "--sessions",
    "10",
    "--messages",
    "200",
    "--recipients",
    "3",
    "--domains",
    "5",
];

#[test]
fn rcpt_451_first_try_only() {
    let sink = Sink::start("127.0.0.81:0", &["--fault", "rcpt:451:30"]);
    let target = ["--target", sink.addr.as_str()];
    let first = blast(&[&target[..], &LOAD[..]].concat());
    let again = blast(&[&target[..], &LOAD[..]].concat());
    let s = sink.stop();

    let refused = n(&first["replies"]["rcpt"]["451"]);
    assert!((120..240).contains(&refused), "{refused} of 600 refused");
    assert_eq!(n(&first["recipients_accepted"]) + refused, 600, "{first}");
    assert_eq!(n(&s["rcpt_refused"]), refused, "{s}");
    // The retry: no recipient is refused twice.
    assert_eq!(n(&again["replies"]["rcpt"]["451"]), 0, "{again}");
    assert_eq!(n(&again["recipients_accepted"]), 600);
    assert_eq!(
        n(&s["recipients"]),
        n(&first["recipients_accepted"]) + 600,
        "{s}"
    );
    assert_eq!(
        n(&s["messages"]),
        n(&first["messages_accepted"]) + n(&again["messages_accepted"])
    );
    assert_eq!(n(&first["errors"]) + n(&again["errors"]), 0);
}

#[test]
fn data_452_and_rcpt_550() {
    let sink = Sink::start(
        "127.0.0.82:0",
        &["--fault", "data:452:10", "--fault", "rcpt:550:5"],
    );
    let b = blast(
        &[
            &["--target", sink.addr.as_str(), "--no-pipelining"][..],
            &LOAD[..],
        ]
        .concat(),
    );
    let s = sink.stop();
    let data_refused = n(&b["replies"]["dot"]["452"]);
    assert!((5..50).contains(&data_refused), "{b}");
    assert_eq!(n(&s["data_refused"]), data_refused, "{s}");
    assert_eq!(
        n(&s["rcpt_refused"]),
        n(&b["replies"]["rcpt"]["550"]),
        "{s}"
    );
    assert!(n(&s["rcpt_refused"]) > 0);
    assert_eq!(n(&s["messages"]), n(&b["messages_accepted"]));
    assert_eq!(n(&s["recipients"]), n(&b["recipients_accepted"]));
}
