//! pigeon: a mail transfer agent on a thread-per-core io_uring runtime.
//!
//! # The data path
//!
//! ```text
//!  client ─TCP─▶ accept ─▶ session ─▶ intake ─▶ spool        qmgr ─▶ deliver ─▶ next hop
//!               (admit)   (sans-io   (Received, (segments,  (queue    (agents:
//!                          SMTP)      DKIM,      group       manager)  route, SMTP
//!                                     append)    commit)      ▲  │      client)
//!                                        │                    │  ▼         │
//!                                        └──────▶ queue ──────┘ outcome ◀──┘
//!                                                (ready,        (settler: done,
//!                                                 deferred)      retry, bounce, log)
//! ```
//!
//! Each shard (one pinned glommio executor per CPU) binds every listener with
//! SO_REUSEPORT ([`accept::listener`]). A connection becomes a
//! [`session::state::Session`], a sans-io state machine driven by [`session::driver`],
//! which only moves bytes. A finished message goes to [`intake::Intake::submit`]: the
//! `Received:` header, DKIM signatures, one spool record ([`spool::commit`]), durable
//! before the client gets its 250, and its recipients queued by domain
//! ([`queue::queues`]). Each shard's queue manager ([`qmgr`]) opens delivery agents'
//! connections ([`deliver::attempt`]) for domains with ready jobs; an agent reports every
//! job as an [`deliver::report::AttemptReport`], and the queue manager hands the report to
//! the one settler ([`outcome::settle`]), which spools each outcome before acting on it.
//! At start, [`spool::recover`] repairs a torn tail, [`spool::replay`] folds the records
//! and [`queue::requeue`] rebuilds the queue. [`runtime`] builds and wires all of it.
//!
//! # Layout
//!
//! Stages import downwards only (`tests/layers.rs` checks it):
//! accept → session → intake → {outcome, queue, spool}; qmgr → {outcome, deliver, queue,
//! spool}; outcome → {deliver, queue, spool}; deliver → {queue, spool}; queue → spool.
//!
//! - [`accept`]: listeners, admission limits, server TLS files.
//! - [`session`]: the server side: the sans-io state machine (one file per verb), the
//!   driver, the TLS acceptors.
//! - [`intake`]: Postfix's cleanup: from an accepted message to a queued one.
//! - [`spool`]: record format, writer, recovery, replay, segment lifetimes, inspection.
//! - [`queue`]: queued messages and jobs, ready queues with their wake-ups, deferred
//!   timers, retry schedule, rate limits, requeue at start.
//! - [`qmgr`]: the queue manager: dispatch, settling reports, batched finishes,
//!   compaction.
//! - [`deliver`]: delivery agents, routes, DNS resolver, SMTP client.
//! - [`outcome`]: the settler, notices and DSNs, the delivery log.
//! - [`runtime`]: executors, shared state, wiring, the server process and its stop.
//! - Base modules every stage may use: [`smtp`] (the grammar, the envelope, the DATA
//!   codec; pure), [`config`] (the one typed configuration), [`dkim`] (signing; pure),
//!   [`auth`] (users file, failure counts, relay networks), [`clock`], [`task`].

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
