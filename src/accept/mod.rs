//! Where connections come in: listeners bound on every shard.

pub mod limits;
pub mod listener;
pub mod tls;
