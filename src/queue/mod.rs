//! What is due, for which destination. No sockets: delivery agents take jobs from here,
//! the queue manager puts them back; the spool remembers.
//!
//! - `message`: a queued message shared by every shard, and a [`message::Job`]: some of
//!   its recipients at one domain.
//! - `recipients`: a message's addresses in one compact store.
//! - `ready`: lock-free per-domain ready queues that every shard drains.
//! - `deferred`: a shard's timer of jobs waiting for their retry time.
//! - `retry`: the backoff schedule with jitter, and expiry.
//! - `limits`: per-destination rate limits, global across shards.
//! - `queues`: the ready queues with each domain's shaping and each shard's wake-up, as
//!   every shard shares them.
//! - `content`: reading a queued message's content from wherever its record is now.
//! - `requeue`: rebuilding all of this from the spool at start.

pub mod content;
pub mod deferred;
pub mod limits;
pub mod message;
pub mod queues;
pub mod ready;
pub mod recipients;
pub mod requeue;
pub mod retry;
