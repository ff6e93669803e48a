//! Where things are in the spool: a segment's name ([`SegmentKey`]), a record's place
//! ([`Location`]) and the paths of shard directories and segment files. Every other spool
//! module names places with these, so they live apart from all of them.

use std::path::{Path, PathBuf};

/// Names one segment file: the shard that wrote it and its sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentKey {
    /// The shard.
    pub shard: u8,
    /// The sequence number within the shard.
    pub seq: u64,
}

/// Where a record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// The segment.
    pub segment: SegmentKey,
    /// Offset of the record frame in the segment.
    pub offset: u64,
}

/// The directory of a shard inside the spool.
pub fn shard_dir(spool: &Path, shard: u8) -> PathBuf {
    spool.join(format!("shard-{shard:03}"))
}

/// The path of segment `seq` of a shard.
pub fn segment_path(spool: &Path, shard: u8, seq: u64) -> PathBuf {
    shard_dir(spool, shard).join(format!("{seq:016x}.seg"))
}
