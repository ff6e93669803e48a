//! What a shard's delivery agents share: the identity they greet with, the resolver, the
//! TLS client configurations, the spool reader for content, the queues they take jobs
//! from, and the shard's stop. An agent owns none of the queue's state and settles
//! nothing; it reports ([`crate::deliver::report`]).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::deliver::client::tls::TlsClients;
use crate::deliver::dns::Resolver;
use crate::queue::queues::Queues;
use crate::runtime::shutdown::ShardStop;
use crate::spool::read::SegmentReader;

/// One shard's delivery side.
pub struct Agents {
    /// This shard's number: its own lane of each ready queue comes first.
    pub shard: u8,
    /// The EHLO name (the server's `hostname`).
    pub helo: String,
    /// The port of MX hosts and of route hosts given without one (`delivery.port`).
    pub port: u16,
    /// A job older than this (`delivery.max_age`) expires instead of being tried.
    pub max_age: Duration,
    /// This shard's DNS resolver and cache.
    pub resolver: Resolver,
    /// TLS for STARTTLS as a client.
    pub tls: TlsClients,
    /// This shard's maps of segment files, for reading content to deliver.
    pub reader: Rc<SegmentReader>,
    /// The ready queues and every domain's shaping.
    pub queues: Arc<Queues>,
    /// The shard's stop.
    pub stop: Rc<ShardStop>,
}
