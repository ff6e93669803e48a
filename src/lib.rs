//! pigeon: a mail transfer agent on a thread-per-core io_uring runtime.
//!
//! # The data path
//!
//! ```text
//!  client ──TCP──▶ accept ──▶ session ──▶ spool ──▶ queue ──▶ deliver ──▶ outcome
//!                 (listener) (sans-io    (segments,  (per-domain (DNS, sans-io (delivered,
//!                             SMTP state  group       ready      SMTP client) deferred,
//!                             machine)    commit)     queues)                  bounced)
//! ```
//!
//! Each shard (one pinned glommio executor per CPU, [`runtime::shard`]) binds every
//! listener with SO_REUSEPORT ([`accept::listener`]). A connection becomes a
//! [`session::state::Session`], a sans-io state machine driven by
//! [`session::driver`]. A finished message goes to the shard's spool
//! ([`spool::commit`]): one record with envelope and content, and the client gets 250 only
//! once that record is durable. Its recipients are then queued by domain
//! ([`queue::ready`]), where any shard's scheduler ([`deliver::scheduler`]) may pick them
//! up, look up the MX hosts ([`deliver::dns`]) and deliver ([`deliver::attempt`]). Every
//! outcome is spooled before it is acted on ([`outcome::settle`]). At start,
//! [`spool::recover`] repairs a torn tail and [`spool::replay`] rebuilds the queue.
//!
//! # Layout
//!
//! - [`smtp`]: the grammar (commands, replies, addresses). Pure.
//! - [`session`]: the server side: state machine, DATA/BDAT scanners, driver.
//! - [`spool`]: record format, writer, recovery, replay, segment lifetimes, compaction,
//!   inspection.
//! - [`queue`]: ready and deferred jobs, retry schedule, rate limits.
//! - [`deliver`]: scheduler, attempts, routes, DNS resolver, SMTP client.
//! - [`outcome`]: settling results, bounces (DSN), the delivery log.
//! - [`accept`], [`runtime`]: listeners, admission limits and server TLS; executors,
//!   shared state, connections and stopping.
//! - [`auth`]: SMTP AUTH's users file and failure counts (the SASL exchange is in
//!   [`session`]).
//! - [`dkim`]: DKIM signing (RFC 6376, RFC 8463). Pure.
//! - [`config`]: the one typed configuration.

#![warn(missing_docs)]

pub mod accept;
pub mod auth;
pub mod clock;
pub mod config;
pub mod deliver;
pub mod dkim;
pub mod intake;
pub mod outcome;
pub mod qmgr;
pub mod queue;
pub mod runtime;
pub mod session;
pub mod smtp;
pub mod spool;
pub mod task;
