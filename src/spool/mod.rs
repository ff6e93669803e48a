//! The spool: per-shard append-only segment files. A 250 after DATA means the message's
//! record is in a segment and (under `fsync = "always"`) synced.
//!
//! - `location`: segment names, record locations and their paths.
//! - `record`: the on-disk vocabulary and framing.
//! - `commit`: the shard's writer and its group commit.
//! - `recover`: listing, scanning and repairing segments.
//! - `read`: a shard's memory maps of segments, for delivering content.
//! - `segments`: which segments still hold live records; deleting the rest.
//! - `replay`: every record folded into each message's state.
//! - `inspect`: the offline view behind `pigeon queue`.
//! - `lock`: one server per spool.

pub mod commit;
pub mod inspect;
pub mod location;
pub mod lock;
pub mod read;
pub mod record;
pub mod recover;
pub mod replay;
pub mod segments;
