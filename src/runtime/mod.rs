//! Thread-per-core: one pinned glommio executor per shard, and the way they stop.

pub mod conn;
pub mod files;
pub mod memory;
pub mod server;
pub mod shard;
pub mod shared;
pub mod shutdown;
