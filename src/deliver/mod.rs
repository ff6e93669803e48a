//! Delivery: everything that moves a spooled message on to the next hop.
//!
//! - `agent`: what a shard's delivery agents share (resolver, TLS, content reader).
//! - `attempt`: one agent's connection: transactions for one domain, each job reported.
//! - `report`: the [`report::AttemptReport`] an agent hands the queue manager.
//! - `route`: the next hops for a domain (static route or MX).
//! - `dns`: the stub resolver (hickory-proto over glommio UDP/TCP) with its cache.
//! - `client`: the sans-io SMTP client and its glommio driver.

pub mod agent;
pub mod attempt;
pub mod client;
pub mod dns;
pub mod report;
pub mod route;
