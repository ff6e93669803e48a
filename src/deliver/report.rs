//! What a delivery agent says about one job when it is done with it: the
//! [`AttemptReport`]. Agents decide nothing about a recipient's fate; the queue manager
//! hands every report to the settler, which records, retries, bounces or expires.

use std::time::Duration;

use crate::queue::message::Job;
use crate::smtp::reply::{Enhanced, Reply};

/// The outcome of one attempt at one job.
#[derive(Debug)]
pub struct AttemptReport {
    /// The job tried: its message and the recipients it held.
    pub job: Job,
    /// One reply per recipient tried: (index into the message's recipients, reply).
    pub results: Vec<(u32, Reply)>,
    /// The server that answered, if a connection was made.
    pub host: Option<String>,
    /// The TLS version of that connection, if it used TLS.
    pub tls: Option<&'static str>,
    /// The server offered DSN, and so took over notifications (RFC 3461 §4.2).
    pub next_hop_dsn: bool,
    /// How long the attempt took for this job: from taking it off the ready queue (or
    /// from the connection's start, for the first job) to the last reply about it.
    pub took: Duration,
}

impl AttemptReport {
    /// Every recipient of `job` gets `reply`, from no server: the route failed, no host
    /// answered, the content could not be read, or the job expired before its turn.
    pub fn all(job: Job, reply: Reply, took: Duration) -> AttemptReport {
        let results = job.recipients.iter().map(|&i| (i, reply.clone())).collect();
        AttemptReport {
            job,
            results,
            host: None,
            tls: None,
            next_hop_dsn: false,
            took,
        }
    }

    /// `job` came off the ready queue past `delivery.max_age`: reported unattempted, with
    /// the reply that its expiry notice quotes.
    pub fn expired(job: Job) -> AttemptReport {
        let reply = Reply::new(
            451,
            Enhanced(4, 4, 7),
            "Message expired: delivery time exceeded",
        );
        AttemptReport::all(job, reply, Duration::ZERO)
    }
}

/// Where an agent sends its reports: the queue manager, in the server.
pub trait Reporter {
    /// Takes one report. Never waits: the agent goes on with its connection while the
    /// report is settled.
    fn report(&self, report: AttemptReport);
}
