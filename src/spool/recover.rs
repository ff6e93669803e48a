//! Reading the spool back: listing segments, scanning them, and repairing a torn tail.
//!
//! Used at start (repair mode: the last segment of each shard is truncated to its last
//! whole record; then stale records are killed, `kill_records`), by `pigeon queue`
//! (read-only) and by delivery (maps of segments, `spool::read`). A segment is read through a memory
//! map; scanning stops at the first record that is torn or fails its CRC, as sled's
//! recovery does: nothing after a bad record can be trusted.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::spool::location::{segment_path, Location};
use crate::spool::record::{
    decode, FrameError, Record, DEAD_MESSAGE, KIND_OFFSET, SEGMENT_HEADER_LEN, SEGMENT_MAGIC,
};

/// One segment file found in the spool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentFile {
    /// The shard that wrote it.
    pub shard: u8,
    /// Its sequence number within the shard.
    pub seq: u64,
    /// Where it is.
    pub path: PathBuf,
}

/// Lists every segment of every shard, in (shard, seq) order. A missing spool is empty.
pub fn list_segments(spool: &Path) -> io::Result<Vec<SegmentFile>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(spool) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(shard) = name
            .to_str()
            .and_then(|n| n.strip_prefix("shard-")?.parse::<u8>().ok())
        else {
            continue;
        };
        for seg in fs::read_dir(entry.path())? {
            let seg = seg?;
            let name = seg.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| u64::from_str_radix(n.strip_suffix(".seg")?, 16).ok())
            else {
                continue;
            };
            out.push(SegmentFile {
                shard,
                seq,
                path: seg.path(),
            });
        }
    }
    out.sort_by_key(|s| (s.shard, s.seq));
    Ok(out)
}

/// A segment mapped into memory for reading.
pub struct MappedSegment {
    map: Option<Mmap>,
}

impl MappedSegment {
    /// Maps a segment file read-only.
    pub fn open(path: &Path) -> io::Result<MappedSegment> {
        let file = File::open(path)?;
        if file.metadata()?.len() == 0 {
            return Ok(MappedSegment { map: None });
        }
        // SAFETY: pigeon's spool files are appended to by the shard that owns them, and
        // truncated only at start before any mapping exists. The one write into written
        // bytes is a kill: a single kind octet (any shard, in place), which a reader sees
        // either before or after, both valid frames (the DEAD bit is outside the CRC). No
        // other byte changes under a reader except at the tail, which the CRC rejects.
        let map = unsafe { Mmap::map(&file)? };
        Ok(MappedSegment { map: Some(map) })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

/// What scanning a segment found.
#[derive(Debug)]
pub struct Scan<'a> {
    /// Every whole record, with its offset in the file.
    pub records: Vec<(u64, Record<'a>)>,
    /// Octets up to the end of the last whole record (0 if the header is bad).
    pub valid_len: u64,
    /// Why scanning stopped before the end of the file, if it did.
    pub stopped: Option<FrameError>,
}

/// Scans a segment's bytes, header first.
pub fn scan(bytes: &[u8]) -> Scan<'_> {
    if bytes.len() < SEGMENT_HEADER_LEN || &bytes[..8] != SEGMENT_MAGIC {
        let stopped = (!bytes.is_empty()).then_some(FrameError::Corrupt("bad segment header"));
        return Scan {
            records: Vec::new(),
            valid_len: 0,
            stopped,
        };
    }
    let mut records = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    let mut stopped = None;
    while pos < bytes.len() {
        match decode(&bytes[pos..]) {
            Ok((record, len)) => {
                records.push((pos as u64, record));
                pos += len;
            }
            Err(e) => {
                stopped = Some(e);
                break;
            }
        }
    }
    Scan {
        records,
        valid_len: pos as u64,
        stopped,
    }
}

/// What start-up recovery did to the spool.
#[derive(Debug, Default)]
pub struct Repair {
    /// Whole records found (messages and outcomes).
    pub records: usize,
    /// Segments cut back to their last whole record: path, old length, new length.
    pub truncated: Vec<(PathBuf, u64, u64)>,
    /// Segments removed because not even their header was whole.
    pub removed: Vec<PathBuf>,
    /// The next free segment number of each shard seen (index = shard).
    pub next_seq: Vec<u64>,
}

/// Kills message records in place at start, before anything is served (see
/// `Replay::stale_records`): each octet written, each file synced once.
pub fn kill_records(spool: &Path, records: &[Location]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut records = records.to_vec();
    records.sort_by_key(|r| (r.segment, r.offset));
    for group in records.chunk_by(|a, b| a.segment == b.segment) {
        let key = group[0].segment;
        let file = OpenOptions::new()
            .write(true)
            .open(segment_path(spool, key.shard, key.seq))?;
        for r in group {
            file.write_all_at(&[DEAD_MESSAGE], r.offset + KIND_OFFSET)?;
        }
        file.sync_data()?;
    }
    Ok(())
}

/// Repairs the spool at start: the last segment of each shard is truncated after its last
/// whole record, and made durable, before any new record is written. Earlier segments were
/// sealed after a successful fsync, so a bad record there is corruption, not a crash: it is
/// reported and left in place for an operator to inspect.
pub fn repair(spool: &Path) -> io::Result<Repair> {
    let segments = list_segments(spool)?;
    let mut out = Repair::default();
    for (i, seg) in segments.iter().enumerate() {
        let is_last = segments
            .get(i + 1)
            .is_none_or(|next| next.shard != seg.shard);
        let next = &mut out.next_seq;
        if next.len() <= seg.shard as usize {
            next.resize(seg.shard as usize + 1, 0);
        }
        next[seg.shard as usize] = next[seg.shard as usize].max(seg.seq + 1);
        let mapped = MappedSegment::open(&seg.path)?;
        let file_len = mapped.bytes().len() as u64;
        let scan = scan(mapped.bytes());
        out.records += scan.records.len();
        let (valid_len, stopped) = (scan.valid_len, scan.stopped);
        drop(mapped);
        let Some(why) = stopped else { continue };
        if !is_last {
            tracing::error!(segment = %seg.path.display(), offset = valid_len, %why,
                "bad record in a sealed segment; records after it are unreadable");
            continue;
        }
        if valid_len == 0 {
            tracing::warn!(segment = %seg.path.display(), "removing segment with no whole header");
            fs::remove_file(&seg.path)?;
            out.removed.push(seg.path.clone());
        } else {
            tracing::warn!(segment = %seg.path.display(), from = file_len, to = valid_len,
                %why, "truncating torn tail");
            let f = OpenOptions::new().write(true).open(&seg.path)?;
            f.set_len(valid_len)?;
            f.sync_all()?;
            out.truncated.push((seg.path.clone(), file_len, valid_len));
        }
        File::open(seg.path.parent().expect("segment has a directory"))?.sync_all()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::location::shard_dir;
    use crate::spool::record::{encode_message, segment_header, MessageId};

    fn segment_with(n: usize) -> (Vec<u8>, Vec<u64>) {
        let env = crate::spool::record::tests::envelope();
        let mut bytes = segment_header(1).to_vec();
        let mut ends = Vec::new();
        for i in 0..n {
            let body = format!("message {i}\r\n");
            bytes.extend(encode_message(
                MessageId::new(i as u64, 0, 0),
                0,
                &env,
                false,
                &[body.as_bytes()],
            ));
            bytes.extend_from_slice(body.as_bytes());
            ends.push(bytes.len() as u64);
        }
        (bytes, ends)
    }

    #[test]
    fn scan_stops_at_torn_tail() {
        let (bytes, ends) = segment_with(3);
        for cut in ends[1]..ends[2] {
            let s = scan(&bytes[..cut as usize]);
            assert_eq!(s.records.len(), 2);
            assert_eq!(s.valid_len, ends[1]);
            assert_eq!(s.stopped.is_some(), cut > ends[1]);
        }
    }

    #[test]
    fn repair_truncates_last_segment_of_each_shard() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, ends) = segment_with(3);
        fs::create_dir_all(shard_dir(dir.path(), 0)).unwrap();
        fs::write(segment_path(dir.path(), 0, 1), &bytes).unwrap();
        let torn = &bytes[..(ends[2] - 5) as usize];
        fs::write(segment_path(dir.path(), 0, 2), torn).unwrap();
        fs::write(segment_path(dir.path(), 0, 3), &b"PGN"[..]).unwrap();
        let r = repair(dir.path()).unwrap();
        assert_eq!(r.records, 5);
        assert_eq!(r.removed, vec![segment_path(dir.path(), 0, 3)]);
        assert!(
            r.truncated.is_empty(),
            "only the last segment of a shard is cut"
        );
        assert_eq!(r.next_seq, vec![4]);

        fs::remove_file(segment_path(dir.path(), 0, 1)).unwrap();
        let r = repair(dir.path()).unwrap();
        assert_eq!(
            r.truncated,
            vec![(segment_path(dir.path(), 0, 2), ends[2] - 5, ends[1])]
        );
        assert_eq!(
            fs::metadata(segment_path(dir.path(), 0, 2)).unwrap().len(),
            ends[1]
        );
    }
}
