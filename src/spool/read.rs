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

use crate::spool::location::segment_path;
use crate::spool::location::SegmentKey;
use crate::spool::record::{decode, Record};
use crate::spool::recover::MappedSegment;

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

#[cfg(test)]
mod tests {
    use std::fs::File;
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
    fn a_growing_segment_is_read_as_it_grows_and_a_torn_tail_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = SegmentKey { shard: 0, seq: 1 };
        let path = segment_path(dir.path(), 0, 1);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut file = File::create(&path).unwrap();
        let header = segment_header(1);
        file.write_all(&header).unwrap();
        let first = record(1, b"first\r\n");
        file.write_all(&first).unwrap();
        let reader = SegmentReader::new(dir.path().to_owned());
        let at = header.len() as u64;
        let a = reader.content(key, at).unwrap();
        assert_eq!(a.bytes(), b"first\r\n");
        let end = at + first.len() as u64;
        assert!(reader.content(key, end).is_err(), "nothing past the end");

        // Appended after the first map was made.
        let second = record(2, b"second\r\n");
        file.write_all(&second).unwrap();
        assert_eq!(reader.content(key, end).unwrap().bytes(), b"second\r\n");
        assert_eq!(a.bytes(), b"first\r\n", "earlier content still readable");

        // Half a record on file: refused; read once it is whole, whole frame too.
        let third = record(3, b"third\r\n");
        let third_at = end + second.len() as u64;
        file.write_all(&third[..third.len() / 2]).unwrap();
        assert!(reader.content(key, third_at).is_err(), "a torn record");
        file.write_all(&third[third.len() / 2..]).unwrap();
        assert_eq!(reader.content(key, third_at).unwrap().bytes(), b"third\r\n");
        assert_eq!(reader.frame(key, third_at).unwrap().bytes(), &third[..]);
    }
}
