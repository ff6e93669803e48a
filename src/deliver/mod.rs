//! Delivery: everything that moves a spooled message on to the next hop.
//!
//! - `scheduler`: each shard's loop that turns ready jobs into connections.
//! - `attempt`: one connection's worth of transactions for one domain.
//! - `route`: the next hops for a domain (static route or MX).
//! - `dns`: the stub resolver (hickory-proto over glommio UDP/TCP) with its cache.
//! - `client`: the sans-io SMTP client and its glommio driver.

pub mod attempt;
pub mod client;
pub mod dns;
pub mod route;
pub mod scheduler;
