//! One server per spool.
//!
//! A second `pigeon serve` on a spool in use would repair it at start, cutting what it takes
//! for torn tails (the records the first server is writing), and, its listeners bound with
//! `SO_REUSEPORT`, would even share the first one's ports. So a server holds an exclusive
//! `flock` on `pigeon.pid` in the spool while it runs, taken before anything in the spool
//! is touched; the kernel drops it when the process ends, however it ends (`kill -9`
//! included), so a crash never leaves a stale lock behind. The file holds the holder's
//! pid, for the operator and for the refusal. Postfix's master does the same with
//! `master.lock`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The lock file's name in the spool directory.
pub const LOCK_FILE: &str = "pigeon.pid";

/// The spool's lock, held until this is dropped (or the process ends).
#[derive(Debug)]
pub struct SpoolLock {
    _file: File,
}

/// Why the spool could not be locked.
#[derive(Debug, Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("spool.path {}: in use by another pigeon (pid {pid})", .spool.display())]
    Held {
        /// The spool directory.
        spool: PathBuf,
        /// What the lock file says, or `unknown`.
        pid: String,
    },
    /// The lock file could not be opened, locked or written.
    #[error("spool.path {}: locking {LOCK_FILE}: {source}", .spool.display())]
    Io {
        /// The spool directory.
        spool: PathBuf,
        /// The failure.
        source: io::Error,
    },
}

/// Takes the lock of the spool at `spool` (an existing directory) for this process.
pub fn lock(spool: &Path) -> Result<SpoolLock, LockError> {
    let io_error = |source| LockError::Io {
        spool: spool.to_owned(),
        source,
    };
    // Not truncated on open: until the lock is ours, the pid in it is the holder's.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(spool.join(LOCK_FILE))
        .map_err(io_error)?;
    // SAFETY: flock takes a descriptor we own and integer flags.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock {
            return Err(io_error(e));
        }
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        let pid = match pid.trim() {
            "" => "unknown".to_string(),
            p => p.to_string(),
        };
        return Err(LockError::Held {
            spool: spool.to_owned(),
            pid,
        });
    }
    file.set_len(0).map_err(io_error)?;
    file.seek(SeekFrom::Start(0)).map_err(io_error)?;
    writeln!(file, "{}", std::process::id()).map_err(io_error)?;
    Ok(SpoolLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        let pid = std::process::id().to_string();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap(),
            format!("{pid}\n")
        );
        // flock locks belong to the open file, so a second open in this process conflicts
        // as another process's would.
        match lock(dir.path()) {
            Err(LockError::Held { pid: held, .. }) => assert_eq!(held, pid),
            other => panic!("not refused: {other:?}"),
        }
        drop(first);
        let again = lock(dir.path()).unwrap();
        drop(again);
        assert!(matches!(
            lock(&dir.path().join("missing")),
            Err(LockError::Io { .. })
        ));
    }
}
