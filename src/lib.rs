//! pigeon: a mail transfer agent on a thread-per-core io_uring runtime.
//!
//! # The data path
//!
//! ```text
//!  client ──TCP──▶ accept ──▶ session ──▶ spool ──▶ queue ──▶ deliver ──▶ outcome
//!                 (listener) (sans-io    (segments,   (not yet  (not yet   (not yet
//!                             SMTP state  group        built)    built)     built)
//!                             machine)    commit)
//! ```
//!
//! Each shard (one pinned glommio executor per CPU, [`runtime::shard`]) binds every
//! listener with SO_REUSEPORT ([`accept::listener`]). A connection becomes a
//! [`session::state::Session`], a sans-io state machine driven by
//! [`session::driver`]. A finished message goes to the shard's spool
//! ([`spool::commit`]): one record with envelope and content, and the client gets 250 only
//! once that record is durable. At start, [`spool::recover`] repairs a torn tail.
//!
//! # Layout
//!
//! - [`smtp`]: the grammar (commands, replies, addresses). Pure.
//! - [`session`]: the server side: state machine, DATA/BDAT scanners, driver.
//! - [`spool`]: record format, writer, recovery, offline inspection.
//! - [`accept`], [`runtime`]: sockets and executors.
//! - [`config`]: the one typed configuration.

#![warn(missing_docs)]

pub mod accept;
pub mod config;
pub mod deliver;
pub mod outcome;
pub mod queue;
pub mod runtime;
pub mod session;
pub mod smtp;
pub mod spool;
