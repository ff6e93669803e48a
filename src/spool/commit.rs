//! The shard's spool writer: appends records to the active segment and releases every
//! waiting session with one `fdatasync` (group commit).
//!
//! Sessions call [`ShardSpool::append`]; a single committer task per shard owns the active
//! segment file. It takes every append queued since its last sync, writes them in order,
//! syncs once, then answers each. Appends that arrive during a sync form the next batch, so
//! under load one sync releases many 250s. The shard runs on one thread, so none of this
//! takes a lock.
//!
//! The committer also kills records in place (`spool::record`, the `DEAD` bit): in its own
//! active segment, or in any older segment of any shard, each killed octet is written and
//! its file synced with the batch it came in, before anyone is answered.
//!
//! A failed write or sync ends the process (see [`fatal`]): after a failed `fdatasync`,
//! Linux may have dropped the dirty pages, and a later sync can report success for data
//! that is gone. Restart and replay is the only safe answer.

use std::cell::Cell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use futures_channel::{mpsc, oneshot};
use futures_lite::{future, StreamExt};
use glommio::io::{BufferedFile, OpenOptions};
use thiserror::Error;

use crate::config::FsyncPolicy;
use crate::smtp::reply::{replies, Reply};
use crate::spool::location::SegmentKey;
use crate::spool::location::{segment_path, shard_dir, Location};
use crate::spool::record::{segment_header, MessageId, DEAD_MESSAGE, KIND_OFFSET};
use crate::spool::segments::Segments;

/// Exit status after a spool write or sync failed (EX_IOERR from sysexits.h).
pub const EXIT_SPOOL_FAILURE: i32 = 74;

/// Parts larger than this are written on their own instead of being copied into the
/// batch buffer: a 1 MiB body is not worth a memcpy to save one write.
const COALESCE_LIMIT: usize = 64 * 1024;

/// How long the committer waits without appends before checking whether its segment has
/// drained.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Why an append was not made durable.
#[derive(Debug, Error)]
pub enum SpoolError {
    /// The committer is gone (the shard is stopping).
    #[error("spool is closed")]
    Closed,
}

impl SpoolError {
    /// The reply a client gets when its message could not be stored.
    pub fn reply(&self) -> Reply {
        replies::local_error()
    }
}

/// Settings for one shard's spool.
#[derive(Clone, Debug)]
pub struct SpoolOptions {
    /// The spool directory (all shards).
    pub path: PathBuf,
    /// Sync before acknowledging, or not.
    pub fsync: FsyncPolicy,
    /// Start a new segment once the active one is this large.
    pub segment_size: u64,
    /// New mail is refused below this much free space.
    pub min_free_space: u64,
    /// Reference counts of all segments (shared by the shards).
    pub segments: Arc<Segments>,
}

struct Append {
    parts: Vec<Vec<u8>>,
    records: u32,
    /// Message records to kill in the same batch.
    kills: Vec<Location>,
    done: oneshot::Sender<Location>,
}

/// One shard's handle on its spool. Not `Send`: it lives on its shard.
pub struct ShardSpool {
    shard: u8,
    /// The sequence number of the segment the committer appends to, if one is open.
    active: Rc<Cell<Option<u64>>>,
    counter: Cell<u32>,
    has_space: Cell<bool>,
    queue: mpsc::UnboundedSender<Append>,
}

impl ShardSpool {
    /// Starts the spool of `shard`, writing new segments from `first_seq` on. Returns the
    /// handle and the committer task's future, which ends after the handle is dropped and
    /// every queued append is durable.
    pub fn start(
        shard: u8,
        first_seq: u64,
        options: SpoolOptions,
    ) -> io::Result<(Rc<ShardSpool>, impl std::future::Future<Output = ()>)> {
        let dir = shard_dir(&options.path, shard);
        if !dir.exists() {
            std::fs::create_dir_all(&dir)?;
            // The shard's directory entry must be durable before any segment in it is.
            std::fs::File::open(&options.path)?.sync_all()?;
        }
        let (tx, rx) = mpsc::unbounded();
        let active = Rc::new(Cell::new(None));
        let spool = Rc::new(ShardSpool {
            shard,
            active: active.clone(),
            counter: Cell::new(0),
            has_space: Cell::new(free_space(&options.path)? >= options.min_free_space),
            queue: tx,
        });
        let committer = Committer {
            shard,
            options,
            next_seq: first_seq,
            active: None,
            announced: active,
        };
        let watch = watch_free_space(Rc::downgrade(&spool), committer.options.clone());
        let task = async move {
            let watcher = glommio::spawn_local(watch).detach();
            committer.run(rx).await;
            watcher.cancel();
        };
        Ok((spool, task))
    }

    /// A new queue id.
    pub fn next_id(&self) -> MessageId {
        let n = self.counter.get().wrapping_add(1);
        self.counter.set(n);
        MessageId::new(crate::clock::now_micros(), self.shard, n)
    }

    /// True if `segment` is the one this shard appends to now: a record killed there is
    /// synced with the append it goes with, at no extra cost.
    pub fn is_active(&self, segment: SegmentKey) -> bool {
        segment.shard == self.shard && self.active.get() == Some(segment.seq)
    }

    /// False when free space is below `spool.min_free_space`: new mail is refused then.
    pub fn has_space(&self) -> bool {
        self.has_space.get()
    }

    /// Appends `records` whole records made of `parts` (concatenated, in order) and waits
    /// until they are durable under the fsync policy. Each record takes one reference on
    /// the segment it lands in (see `spool::segments`), before this returns.
    pub async fn append(&self, parts: Vec<Vec<u8>>, records: u32) -> Result<Location, SpoolError> {
        self.append_and_kill(parts, records, Vec::new()).await
    }

    /// Kills the message records at `kills` in place and waits until that is durable.
    /// Only then may their references be released (see `spool::segments`).
    pub async fn kill(&self, kills: Vec<Location>) -> Result<(), SpoolError> {
        self.append_and_kill(Vec::new(), 0, kills).await.map(drop)
    }

    /// [`ShardSpool::append`] and [`ShardSpool::kill`] in one batch: both are durable when
    /// this returns, or (after a crash) either may be.
    pub async fn append_and_kill(
        &self,
        parts: Vec<Vec<u8>>,
        records: u32,
        kills: Vec<Location>,
    ) -> Result<Location, SpoolError> {
        let (done, wait) = oneshot::channel();
        self.queue
            .unbounded_send(Append {
                parts,
                records,
                kills,
                done,
            })
            .map_err(|_| SpoolError::Closed)?;
        wait.await.map_err(|_| SpoolError::Closed)
    }
}

struct ActiveSegment {
    file: BufferedFile,
    seq: u64,
    len: u64,
}

struct Committer {
    shard: u8,
    options: SpoolOptions,
    next_seq: u64,
    active: Option<ActiveSegment>,
    /// What [`ShardSpool::is_active`] reads.
    announced: Rc<Cell<Option<u64>>>,
}

impl Committer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Append>) {
        loop {
            // The idle check is only for an open segment: no timer while none is.
            let next = if self.active.is_some() {
                future::or(async { Some(rx.next().await) }, async {
                    glommio::timer::sleep(IDLE_CHECK).await;
                    None
                })
                .await
            } else {
                Some(rx.next().await)
            };
            let first = match next {
                Some(Some(first)) => first,
                Some(None) => break,
                None => {
                    self.seal_if_drained().await;
                    continue;
                }
            };
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            let locations = self.write_batch(&mut batch).await;
            let records: u32 = batch.iter().map(|a| a.records).sum();
            if let Some(first) = locations.first().filter(|_| records > 0) {
                // Before anyone learns of these records, so a segment is never deleted
                // under a record whose owner has not yet counted it.
                self.options.segments.add(first.segment, i64::from(records));
            }
            for (append, location) in batch.into_iter().zip(locations) {
                // A session that went away no longer needs its answer.
                let _ = append.done.send(location);
            }
        }
        if let Some(active) = self.active.take() {
            if let Err(e) = active.file.close().await {
                fatal("closing segment", e);
            }
        }
    }

    async fn write_batch(&mut self, batch: &mut [Append]) -> Vec<Location> {
        // A batch of kills alone appends nothing: it needs no new segment.
        let appends = batch.iter().any(|a| !a.parts.is_empty());
        let needs_new = appends
            && self
                .active
                .as_ref()
                .is_none_or(|a| a.len >= self.options.segment_size);
        if needs_new {
            self.open_segment().await;
        }
        let always = self.options.fsync == FsyncPolicy::Always;
        let Some(active) = self.active.as_mut() else {
            // No segment open and nothing to append: only kills, all elsewhere.
            let kills: Vec<Location> = batch
                .iter_mut()
                .flat_map(|a| std::mem::take(&mut a.kills))
                .collect();
            if !kills.is_empty() {
                self.kill_elsewhere(kills, always).await;
            }
            let nowhere = Location {
                segment: SegmentKey {
                    shard: self.shard,
                    seq: self.next_seq,
                },
                offset: 0,
            };
            return vec![nowhere; batch.len()];
        };
        let mut locations = Vec::with_capacity(batch.len());
        let mut buf = Vec::new();
        let mut pos = active.len;
        for append in batch.iter_mut() {
            locations.push(Location {
                segment: SegmentKey {
                    shard: self.shard,
                    seq: active.seq,
                },
                offset: pos + buf.len() as u64,
            });
            for part in std::mem::take(&mut append.parts) {
                if part.len() < COALESCE_LIMIT {
                    buf.extend_from_slice(&part);
                    continue;
                }
                if !buf.is_empty() {
                    pos += write_all_at(&active.file, std::mem::take(&mut buf), pos).await;
                }
                pos += write_all_at(&active.file, part, pos).await;
            }
        }
        if !buf.is_empty() {
            pos += write_all_at(&active.file, buf, pos).await;
        }
        let active_key = SegmentKey {
            shard: self.shard,
            seq: active.seq,
        };
        let mut elsewhere: Vec<Location> = Vec::new();
        // A batch that only kills records in older segments has nothing to sync here.
        let mut touched = pos != active.len;
        for kill in batch.iter_mut().flat_map(|a| std::mem::take(&mut a.kills)) {
            if kill.segment == active_key {
                kill_at(&active.file, kill.offset).await;
                touched = true;
            } else {
                elsewhere.push(kill);
            }
        }
        if always && touched {
            if let Err(e) = active.file.fdatasync().await {
                fatal("fdatasync", e);
            }
        }
        active.len = pos;
        if !elsewhere.is_empty() {
            self.kill_elsewhere(elsewhere, always).await;
        }
        locations
    }

    /// Kills records in segments other than the active one: each file opened once per
    /// batch, written, synced, closed.
    async fn kill_elsewhere(&self, mut kills: Vec<Location>, sync: bool) {
        kills.sort_by_key(|k| (k.segment, k.offset));
        for group in kills.chunk_by(|a, b| a.segment == b.segment) {
            let key = group[0].segment;
            let path = segment_path(&self.options.path, key.shard, key.seq);
            // The record holds a reference on its segment until its kill is durable, so
            // the file exists: failing to open it means the spool is not what we think.
            let file = match OpenOptions::new().write(true).buffered_open(&path).await {
                Ok(f) => f,
                Err(e) => fatal("opening a segment to kill a record", e),
            };
            for kill in group {
                kill_at(&file, kill.offset).await;
            }
            if sync {
                if let Err(e) = file.fdatasync().await {
                    fatal("fdatasync", e);
                }
            }
            if let Err(e) = file.close().await {
                fatal("closing segment", e);
            }
        }
    }

    /// After a quiet spell, a segment whose records are all finished is closed and
    /// sealed, so that a drained spool shrinks back instead of keeping its last segment.
    async fn seal_if_drained(&mut self) {
        let Some(active) = self.active.as_ref() else {
            return;
        };
        let key = SegmentKey {
            shard: self.shard,
            seq: active.seq,
        };
        if self.options.segments.refs(key) == 0 {
            self.close_active().await;
        }
    }

    async fn close_active(&mut self) {
        self.announced.set(None);
        if let Some(old) = self.active.take() {
            if let Err(e) = old.file.close().await {
                fatal("closing segment", e);
            }
            self.options.segments.seal(SegmentKey {
                shard: self.shard,
                seq: old.seq,
            });
        }
    }

    async fn open_segment(&mut self) {
        self.close_active().await;
        let seq = self.next_seq;
        self.next_seq += 1;
        let path = segment_path(&self.options.path, self.shard, seq);
        let file = match BufferedFile::create(&path).await {
            Ok(f) => f,
            Err(e) => fatal("creating segment", e),
        };
        let header = segment_header(seq).to_vec();
        let len = write_all_at(&file, header, 0).await;
        if self.options.fsync == FsyncPolicy::Always {
            // The new file's directory entry must survive a crash along with its records.
            let dir = shard_dir(&self.options.path, self.shard);
            if let Err(e) = file.fdatasync().await {
                fatal("syncing new segment", e);
            }
            // A blocking fsync, but once per segment (64 MiB by default), not per message.
            if let Err(e) = std::fs::File::open(&dir).and_then(|d| d.sync_all()) {
                fatal("syncing spool directory", e);
            }
        }
        self.active = Some(ActiveSegment { file, seq, len });
        self.announced.set(Some(seq));
    }
}

/// Overwrites the kind octet of the message record at `offset` with its dead form.
async fn kill_at(file: &BufferedFile, offset: u64) {
    write_all_at(file, vec![DEAD_MESSAGE], offset + KIND_OFFSET).await;
}

async fn write_all_at(file: &BufferedFile, buf: Vec<u8>, pos: u64) -> u64 {
    let len = buf.len();
    match file.write_at(buf, pos).await {
        Ok(n) if n == len => len as u64,
        // A short write on a regular file means the disk is full: treated like any write
        // error, because the record now has a hole that a later append would not fill.
        Ok(n) => fatal(
            "writing segment",
            format!("short write: {n} of {len} octets"),
        ),
        Err(e) => fatal("writing segment", e),
    }
}

/// Logs a spool failure and exits with [`EXIT_SPOOL_FAILURE`]. Nothing that was not synced
/// has been acknowledged, and recovery at the next start replays what is on disk.
pub fn fatal(what: &str, error: impl std::fmt::Display) -> ! {
    tracing::error!(%error, "spool {what} failed; exiting so recovery can replay the spool");
    eprintln!("pigeon: spool {what} failed: {error}");
    std::process::exit(EXIT_SPOOL_FAILURE)
}

/// Free octets for unprivileged users on the file system holding `path`.
pub fn free_space(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in spool path"))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Re-checks free space every second while the spool handle lives.
async fn watch_free_space(spool: Weak<ShardSpool>, options: SpoolOptions) {
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        let Some(spool) = spool.upgrade() else { return };
        match free_space(&options.path) {
            Ok(free) => {
                let ok = free >= options.min_free_space;
                if ok != spool.has_space.get() {
                    tracing::warn!(
                        free,
                        floor = options.min_free_space,
                        accepting = ok,
                        "spool free space crossed the floor"
                    );
                }
                spool.has_space.set(ok);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read spool free space"),
        }
    }
}
