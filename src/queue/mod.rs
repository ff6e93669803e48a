//! What is due, for which destination. No sockets, no files: delivery takes jobs from
//! here and reports back; the spool remembers.
//!
//! - `message`: a queued message shared by every shard, and a [`message::Job`]: some of
//!   its recipients at one domain.
//! - `recipients`: a message's addresses in one compact store.
//! - `ready`: lock-free per-domain ready queues that every shard drains.
//! - `deferred`: a shard's timer of jobs waiting for their retry time.
//! - `retry`: the backoff schedule with jitter, and expiry.
//! - `limits`: per-destination rate limits, global across shards.

pub mod content;
pub mod deferred;
pub mod limits;
pub mod message;
pub mod queues;
pub mod ready;
pub mod recipients;
pub mod requeue;
pub mod retry;
