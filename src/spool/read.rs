//! Reading message content back for delivery, straight from a memory map of the segment:
//! no copy per recipient or per attempt. Each shard keeps its own maps (`Rc`, no lock).
//!
//! The active segment grows while it is mapped; a record past the end of an existing map
//! is served from a fresh map of the file as it is now. Records are read only after the
//! committer answered for them, so their bytes are on file by then.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;

use crate::spool::record::{decode, Record};
use crate::spool::recover::{segment_path, MappedSegment};
use crate::spool::replay::SegmentKey;

/// Message content borrowed from a segment map, kept alive as long as this lives.
pub struct Content {
    map: Rc<MappedSegment>,
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
#[derive(Default)]
pub struct SegmentReader {
    spool: PathBuf,
    maps: RefCell<HashMap<SegmentKey, Rc<MappedSegment>>>,
}

impl SegmentReader {
    /// A reader for the spool at `spool`.
    pub fn new(spool: PathBuf) -> SegmentReader {
        SegmentReader {
            spool,
            maps: RefCell::default(),
        }
    }

    /// The content of the message record at `offset` in `segment`, checked against its CRC.
    pub fn content(&self, segment: SegmentKey, offset: u64) -> io::Result<Content> {
        let offset = offset as usize;
        for fresh in [false, true] {
            let map = self.map(segment, fresh)?;
            let Some(bytes) = map.bytes().get(offset..) else {
                continue;
            };
            let (start, end) = match decode(bytes) {
                Ok((Record::Message(m), _)) => {
                    let start = m.content.as_ptr() as usize - map.bytes().as_ptr() as usize;
                    (start, start + m.content.len())
                }
                Ok(_) => return Err(io::Error::other("not a message record")),
                // Torn: the map predates the record's last bytes; map again.
                Err(_) if !fresh => continue,
                Err(e) => return Err(io::Error::other(e.to_string())),
            };
            return Ok(Content { map, start, end });
        }
        Err(io::Error::other("record beyond the end of its segment"))
    }

    /// The whole frame of the message record at `offset` in `segment` (header, envelope,
    /// content), checked against its CRC: what compaction copies verbatim.
    pub fn frame(&self, segment: SegmentKey, offset: u64) -> io::Result<Content> {
        let offset = offset as usize;
        for fresh in [false, true] {
            let map = self.map(segment, fresh)?;
            let Some(bytes) = map.bytes().get(offset..) else {
                continue;
            };
            let len = match decode(bytes) {
                Ok((Record::Message(_), len)) => len,
                Ok(_) => return Err(io::Error::other("not a message record")),
                // Torn: the map predates the record's last bytes; map again.
                Err(_) if !fresh => continue,
                Err(e) => return Err(io::Error::other(e.to_string())),
            };
            return Ok(Content {
                map,
                start: offset,
                end: offset + len,
            });
        }
        Err(io::Error::other("record beyond the end of its segment"))
    }

    /// Drops the maps of segment files that were deleted after draining: a map keeps an
    /// unlinked file's blocks allocated until it goes.
    pub fn prune(&self) {
        let spool = &self.spool;
        self.maps
            .borrow_mut()
            .retain(|k, _| segment_path(spool, k.shard, k.seq).exists());
    }

    fn map(&self, segment: SegmentKey, fresh: bool) -> io::Result<Rc<MappedSegment>> {
        if !fresh {
            if let Some(m) = self.maps.borrow().get(&segment) {
                return Ok(m.clone());
            }
        }
        let path = segment_path(&self.spool, segment.shard, segment.seq);
        let map = Rc::new(MappedSegment::open(&path)?);
        self.maps.borrow_mut().insert(segment, map.clone());
        Ok(map)
    }
}
