//! Reading message content back for delivery, straight from a memory map of the segment:
//! no copy per recipient or per attempt. Each shard keeps its own maps (`Rc`, no lock).
//!
//! The active segment grows while it is read. A file is therefore mapped once at the size
//! it may grow to (its segment size, twice over), and a map serves only the bytes the file
//! held when last measured (`fstat`): a record past them has the file measured again
//! instead of mapped again. Remapping cost an `mmap`, a `munmap` (whose TLB flush
//! interrupts the other cores), an `open` and two `stat`s every few messages under load.
//! Records are read only after the committer answered for them, so their bytes are on
//! file by then.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use memmap2::{Mmap, MmapOptions};

use crate::spool::record::{decode, Record};
use crate::spool::recover::segment_path;
use crate::spool::replay::SegmentKey;

/// A segment file mapped at the size it may grow to; read up to the size it had when
/// last measured.
struct SegmentMap {
    file: File,
    /// `None` when the file and the reserve were both empty.
    map: Option<Mmap>,
    /// Octets on file when last measured: what [`SegmentMap::bytes`] serves.
    valid: Cell<usize>,
}

impl SegmentMap {
    /// Maps `path` read-only at its size or `reserve` octets, whichever is larger.
    fn open(path: &Path, reserve: usize) -> io::Result<SegmentMap> {
        let file = File::open(path)?;
        let len = usize::try_from(file.metadata()?.len()).map_err(io::Error::other)?;
        let size = len.max(reserve);
        let map = if size == 0 {
            None
        } else {
            // SAFETY: as for `recover::MappedSegment`: segment files are appended to by the
            // shard that owns them and truncated only at start, before any map exists; the
            // one write into written bytes is a kill (a single kind octet, outside the
            // CRC). The map may reach past the end of the file, where a read would fault:
            // `bytes` never serves more than the file held when measured, and the file
            // never shrinks while the server runs.
            Some(unsafe { MmapOptions::new().len(size).map(&file)? })
        };
        Ok(SegmentMap {
            file,
            map,
            valid: Cell::new(len),
        })
    }

    /// The bytes on file as of the last measure.
    fn bytes(&self) -> &[u8] {
        self.map.as_deref().map_or(&[], |m| &m[..self.valid.get()])
    }

    /// Measures the file again. False when it has outgrown the map: map it anew.
    fn remeasure(&self) -> io::Result<bool> {
        let len = usize::try_from(self.file.metadata()?.len()).map_err(io::Error::other)?;
        if len > self.map.as_ref().map_or(0, |m| m.len()) {
            return Ok(false);
        }
        self.valid.set(len.max(self.valid.get()));
        Ok(true)
    }
}

/// Message content borrowed from a segment map, kept alive as long as this lives.
pub struct Content {
    map: Rc<SegmentMap>,
    start: usize,
    end: usize,
}

impl Content {
    /// The content in wire form (CRLF, dot-stuffed, `Received:` first), without the
    /// final `.CRLF`; or, from [`SegmentReader::frame`], the whole record frame.
    pub fn bytes(&self) -> &[u8] {
        &self.map.bytes()[self.start..self.end]
    }
}

/// One shard's maps of segment files.
pub struct SegmentReader {
    spool: PathBuf,
    /// How much of each file to map: twice the segment size, as a batch may carry a
    /// segment past its size before the next one opens.
    reserve: usize,
    maps: RefCell<HashMap<SegmentKey, Rc<SegmentMap>>>,
}

impl SegmentReader {
    /// A reader for the spool at `spool`, whose segments are `segment_size` octets.
    pub fn new(spool: PathBuf, segment_size: u64) -> SegmentReader {
        SegmentReader {
            spool,
            reserve: usize::try_from(segment_size.saturating_mul(2)).unwrap_or(usize::MAX),
            maps: RefCell::default(),
        }
    }

    /// The content of the message record at `offset` in `segment`, checked against its CRC.
    pub fn content(&self, segment: SegmentKey, offset: u64) -> io::Result<Content> {
        self.record(segment, offset, false)
    }

    /// The whole frame of the message record at `offset` in `segment` (header, envelope,
    /// content), checked against its CRC: what compaction copies verbatim.
    pub fn frame(&self, segment: SegmentKey, offset: u64) -> io::Result<Content> {
        self.record(segment, offset, true)
    }

    /// The message record at `offset`: its frame, or only its content. A record not wholly
    /// within what the map serves has the file measured again, then mapped again, before
    /// it counts as missing or torn.
    fn record(&self, segment: SegmentKey, offset: u64, frame: bool) -> io::Result<Content> {
        let offset = usize::try_from(offset).map_err(io::Error::other)?;
        let mut torn = None;
        for step in 0..3 {
            let map = self.map(segment, step == 2)?;
            if step == 1 && !map.remeasure()? {
                continue; // Outgrown the map: the next step maps it anew.
            }
            let Some(bytes) = map.bytes().get(offset..) else {
                continue;
            };
            let (start, end) = match decode(bytes) {
                Ok((Record::Message(_), len)) if frame => (offset, offset + len),
                Ok((Record::Message(m), _)) => {
                    let start = m.content.as_ptr() as usize - map.bytes().as_ptr() as usize;
                    (start, start + m.content.len())
                }
                Ok(_) => return Err(io::Error::other("not a message record")),
                // Torn: the bytes measured predate the record's last ones.
                Err(e) => {
                    torn = Some(e);
                    continue;
                }
            };
            return Ok(Content { map, start, end });
        }
        Err(io::Error::other(torn.map_or_else(
            || "record beyond the end of its segment".to_string(),
            |e| e.to_string(),
        )))
    }

    /// Drops the maps of segment files that were deleted after draining: a map keeps an
    /// unlinked file's blocks allocated until it goes.
    pub fn prune(&self) {
        let spool = &self.spool;
        self.maps
            .borrow_mut()
            .retain(|k, _| segment_path(spool, k.shard, k.seq).exists());
    }

    fn map(&self, segment: SegmentKey, fresh: bool) -> io::Result<Rc<SegmentMap>> {
        if !fresh {
            if let Some(m) = self.maps.borrow().get(&segment) {
                return Ok(m.clone());
            }
        }
        let path = segment_path(&self.spool, segment.shard, segment.seq);
        let map = Rc::new(SegmentMap::open(&path, self.reserve)?);
        self.maps.borrow_mut().insert(segment, map.clone());
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::spool::record::{encode_message, segment_header, MessageId};

    /// A message record whose content is `body`.
    fn record(n: u64, body: &[u8]) -> Vec<u8> {
        let env = crate::spool::record::tests::envelope();
        let mut bytes = encode_message(MessageId::new(n, 0, 0), 0, &env, false, &[body]);
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn a_growing_segment_is_read_through_one_map_and_a_torn_tail_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = SegmentKey { shard: 0, seq: 1 };
        let path = segment_path(dir.path(), 0, 1);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut file = File::create(&path).unwrap();
        file.write_all(&segment_header(1)).unwrap();
        let first = record(1, b"first\r\n");
        file.write_all(&first).unwrap();
        // A reserve of 1 MiB: the file grows within it.
        let reader = SegmentReader::new(dir.path().to_owned(), 512 * 1024);
        let at = segment_header(1).len() as u64;
        let a = reader.content(key, at).unwrap();
        assert_eq!(a.bytes(), b"first\r\n");

        // Appended after the map was made: found by measuring the file again.
        let second = record(2, b"second\r\n");
        file.write_all(&second).unwrap();
        let b = reader.content(key, at + first.len() as u64).unwrap();
        assert_eq!(b.bytes(), b"second\r\n");
        assert!(Rc::ptr_eq(&a.map, &b.map), "mapped again");
        assert_eq!(a.bytes(), b"first\r\n", "earlier content still readable");

        // Half a record on file: refused, and readable once the rest is written.
        let third = record(3, b"third\r\n");
        let third_at = at + (first.len() + second.len()) as u64;
        file.write_all(&third[..third.len() / 2]).unwrap();
        let err = reader.content(key, third_at).err().expect("a torn record");
        assert!(!err.to_string().is_empty());
        file.write_all(&third[third.len() / 2..]).unwrap();
        assert_eq!(reader.content(key, third_at).unwrap().bytes(), b"third\r\n");
        let frame = reader.frame(key, third_at).unwrap();
        assert_eq!(frame.bytes(), &third[..]);

        // Past the reserve: mapped anew at the file's size.
        let big = vec![b'x'; 2 * 1024 * 1024];
        let mut body = big.clone();
        body.extend_from_slice(b"\r\n");
        let fourth = record(4, &body);
        file.write_all(&fourth).unwrap();
        let fourth_at = third_at + third.len() as u64;
        let d = reader.content(key, fourth_at).unwrap();
        assert_eq!(d.bytes(), &body[..]);
        assert!(!Rc::ptr_eq(&a.map, &d.map));
        assert_eq!(a.bytes(), b"first\r\n", "the old map lives on while in use");

        // Nothing there at all.
        assert!(reader
            .content(key, fourth_at + fourth.len() as u64)
            .is_err());
    }
}
