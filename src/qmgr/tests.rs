//! The queue manager and its settler on a real spool in a temporary directory, with no
//! sockets: each test hands the queue manager an [`AttemptReport`], as a delivery agent
//! would, and checks what an operator would find afterwards: the records in the spool
//! (what a restart replays), the lines of the delivery log, the recipients on the shard's
//! timer, the finishes waiting for their kill, and the reports (DSNs) on the ready queues.
//!
//! - `shard`: the shard's delivery side wired over a temporary spool, and its readers.
//! - `outcomes`: 2xx, 4xx, 5xx and mixed transactions.
//! - `expiry`: `delivery.max_age`.
//! - `destinations`: a whole job failed before any transaction.
//! - `reports`: which reports (DSNs) the sender gets.
//! - `dispatch`: the queue manager's loop, without agents.
//!
//! [`AttemptReport`]: crate::deliver::report::AttemptReport

mod destinations;
mod dispatch;
mod expiry;
mod outcomes;
mod reports;
mod shard;

use serde_json::Value;

use crate::smtp::reply::Reply;
use shard::{reply, Found, Shard};

/// The sender of every test message that has one.
const SENDER: &str = "s@sender.example";

/// The next hop took the message.
fn delivered() -> Reply {
    reply(250, (2, 0, 0), "Ok: queued as 4F2A")
}

/// The next hop asks to try again later.
fn greylisted() -> Reply {
    reply(451, (4, 7, 1), "Greylisted, try again later")
}

/// The next hop refuses the recipient for good.
fn no_such_user() -> Reply {
    reply(550, (5, 1, 1), "No such user here")
}

/// A string field of a log line.
fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// The events of every log line so far, in order.
fn events(shard: &Shard) -> Vec<String> {
    shard.log().iter().map(|l| text(&l["event"])).collect()
}

/// The one report (DSN) message in the spool: the only record from `<>`.
fn the_report(shard: &Shard) -> Found {
    let reports: Vec<Found> = shard
        .messages()
        .into_iter()
        .filter(|m| matches!(m, Found::Message { sender, .. } if sender.is_empty()))
        .collect();
    assert_eq!(reports.len(), 1, "one report in the spool: {reports:?}");
    reports.into_iter().next().unwrap()
}
