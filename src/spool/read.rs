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

use memmap2::{MmapOptions, MmapRaw};

use crate::spool::record::{decode, Record};
use crate::spool::recover::segment_path;
use crate::spool::replay::SegmentKey;

/// A segment file mapped at the size it may grow to; read up to the size it had when
/// last measured.
struct SegmentMap {
    /// The file, measured by path: an open descriptor per mapped segment per shard would
    /// count against the process's limit.
    path: PathBuf,
    /// `None` when the file and the reserve were both empty.
    map: Option<MmapRaw>,
    /// Octets on file when last measured: what [`SegmentMap::bytes`] serves.
    valid: Cell<usize>,
}

impl SegmentMap {
    /// Maps `path` read-only at its size or `reserve` octets, whichever is larger (at its
    /// size alone if the larger map is refused: address space is a limit too).
    fn open(path: &Path, reserve: usize) -> io::Result<SegmentMap> {
        let file = File::open(path)?;
        let len = usize::try_from(file.metadata()?.len()).map_err(io::Error::other)?;
        let map = if len.max(reserve) == 0 {
            None
        } else {
            // A raw map: no `&[u8]` ever covers the part past the end of the file, where a
            // read would fault; `bytes` makes slices of the measured part only.
            let mapped = MmapOptions::new()
                .len(len.max(reserve))
                .map_raw_read_only(&file);
            Some(match mapped {
                Ok(m) => m,
                Err(_) if len > 0 => MmapOptions::new().len(len).map_raw_read_only(&file)?,
                Err(e) => return Err(e),
            })
        };
        Ok(SegmentMap {
            path: path.to_owned(),
            map,
            valid: Cell::new(len),
        })
    }

    /// The bytes on file as of the last measure.
    fn bytes(&self) -> &[u8] {
        match &self.map {
            // SAFETY: the first `valid` octets of the map are backed by the file: `valid`
            // is a size `fstat` gave and the file never shrinks while the server runs
            // (repair truncates at start, before any map exists); nothing writes through
            // this read-only map. As for `recover::MappedSegment`, the one change to
            // written bytes is a kill (a single kind octet, outside the CRC) by the
            // committer, which a reader sees before or after, both valid frames.
            Some(m) => unsafe { std::slice::from_raw_parts(m.as_ptr(), self.valid.get()) },
            None => &[],
        }
    }

    /// Measures the file again. False when it has outgrown the map: map it anew.
    fn remeasure(&self) -> io::Result<bool> {
        let len = std::fs::metadata(&self.path)?.len();
        let len = usize::try_from(len).map_err(io::Error::other)?;
        if len > self.map.as_ref().map_or(0, MmapRaw::len) {
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

/// The most of a file a map reserves ahead of its size: address space per cached segment
/// per shard.
const MAX_RESERVE: u64 = 1 << 30;

/// One shard's maps of segment files.
pub struct SegmentReader {
    spool: PathBuf,
    /// How much of each file to map: twice the segment size (a batch may carry a segment
    /// past its size before the next one opens), at most [`MAX_RESERVE`].
    reserve: usize,
    maps: RefCell<HashMap<SegmentKey, Rc<SegmentMap>>>,
}

impl SegmentReader {
    /// A reader for the spool at `spool`, whose segments are `segment_size` octets.
    pub fn new(spool: PathBuf, segment_size: u64) -> SegmentReader {
        SegmentReader {
            spool,
            reserve: usize::try_from(segment_size.saturating_mul(2).min(MAX_RESERVE)).unwrap_or(0),
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
    /// within what the map serves has the file measured again (and mapped again, if it
    /// outgrew the map) before it counts as missing or torn.
    fn record(&self, segment: SegmentKey, offset: u64, frame: bool) -> io::Result<Content> {
        let offset = usize::try_from(offset).map_err(io::Error::other)?;
        let map = self.map(segment, false)?;
        let short = match find(map.clone(), offset, frame) {
            Found::Record(content) => return Ok(content),
            Found::Wrong(e) => return Err(e),
            Found::Short(e) => e,
        };
        let map = if map.remeasure()? {
            map
        } else {
            self.map(segment, true)?
        };
        match find(map, offset, frame) {
            Found::Record(content) => Ok(content),
            Found::Wrong(e) => Err(e),
            // As measured now, it is what is on file (records are read only after the
            // committer answered for them).
            Found::Short(_) => Err(short),
        }
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

/// What [`find`] made of the bytes at an offset.
enum Found {
    Record(Content),
    /// A whole record, but not a message.
    Wrong(io::Error),
    /// No whole record within what the map serves (missing, or torn as measured).
    Short(io::Error),
}

/// The message record at `offset` in `map`: its frame, or only its content.
fn find(map: Rc<SegmentMap>, offset: usize, frame: bool) -> Found {
    let Some(bytes) = map.bytes().get(offset..) else {
        return Found::Short(io::Error::other("record beyond the end of its segment"));
    };
    let (start, end) = match decode(bytes) {
        Ok((Record::Message(_), len)) if frame => (offset, offset + len),
        Ok((Record::Message(m), _)) => {
            let start = m.content.as_ptr() as usize - map.bytes().as_ptr() as usize;
            (start, start + m.content.len())
        }
        Ok(_) => return Found::Wrong(io::Error::other("not a message record")),
        Err(e) => return Found::Short(io::Error::other(e.to_string())),
    };
    Found::Record(Content { map, start, end })
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
        let header = segment_header(1);
        file.write_all(&header).unwrap();
        // The first record ends the file on a page boundary, so that reading a byte past
        // the end of the file would touch an unbacked page of the map and fault.
        let overhead = record(1, b"").len();
        let body = vec![b'a'; 4096 - header.len() - overhead];
        let first = record(1, &body);
        file.write_all(&first).unwrap();
        let at = header.len() as u64;
        let end = at + first.len() as u64;
        assert_eq!(end, 4096);
        // A reserve of 1 MiB: the file grows within it.
        let reader = SegmentReader::new(dir.path().to_owned(), 512 * 1024);
        let a = reader.content(key, at).unwrap();
        assert_eq!(a.bytes(), &body[..]);
        assert!(reader.content(key, end).is_err(), "nothing past the end");

        // Appended after the map was made: found by measuring the file again.
        let second = record(2, b"second\r\n");
        file.write_all(&second).unwrap();
        let b = reader.content(key, end).unwrap();
        assert_eq!(b.bytes(), b"second\r\n");
        assert!(Rc::ptr_eq(&a.map, &b.map), "mapped again");
        assert_eq!(a.bytes(), &body[..], "earlier content still readable");

        // Half a record on file: refused, without mapping again; read once it is whole.
        let third = record(3, b"third\r\n");
        let third_at = end + second.len() as u64;
        file.write_all(&third[..third.len() / 2]).unwrap();
        assert!(reader.content(key, third_at).is_err(), "a torn record");
        assert!(Rc::ptr_eq(&reader.map(key, false).unwrap(), &a.map));
        file.write_all(&third[third.len() / 2..]).unwrap();
        assert_eq!(reader.content(key, third_at).unwrap().bytes(), b"third\r\n");
        let frame = reader.frame(key, third_at).unwrap();
        assert_eq!(frame.bytes(), &third[..]);
        assert!(Rc::ptr_eq(&frame.map, &a.map));

        // Past the reserve: mapped anew at the file's size.
        let mut big = vec![b'x'; 2 * 1024 * 1024];
        big.extend_from_slice(b"\r\n");
        let fourth = record(4, &big);
        file.write_all(&fourth).unwrap();
        let fourth_at = third_at + third.len() as u64;
        let d = reader.content(key, fourth_at).unwrap();
        assert_eq!(d.bytes(), &big[..]);
        assert!(!Rc::ptr_eq(&a.map, &d.map));
        assert_eq!(a.bytes(), &body[..], "the old map lives on while in use");

        // Nothing there at all.
        assert!(reader
            .content(key, fourth_at + fourth.len() as u64)
            .is_err());
    }
}
