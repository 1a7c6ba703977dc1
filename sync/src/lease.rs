//! Who pushes a queue: an exclusive `flock` on `<queue>.lock`, beside the
//! queue file, holding the pusher's pid.
//!
//! Any number of processes may *enqueue* into one queue (scanners,
//! `enqueue`, a `watch-exec` next to a running `watch`), but only the
//! holder of this lock pushes, so no path is copied twice at once. The
//! kernel drops the lock when its holder exits, however it exits, so a
//! kill -9 never leaves a stale lease. A process that does not get it keeps
//! scanning and waits for the queue to drain; its pusher takes over if the
//! holder stops.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

use crate::error::{Result, SyncError};

/// The lock file of a queue: `<queue>.lock`.
pub fn lock_path(queue: &Path) -> PathBuf {
    let mut name = queue.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// The held push lock; released on drop (or when the process dies).
#[derive(Debug)]
pub struct PushLock {
    _file: File,
}

fn open(queue: &Path) -> Result<File> {
    let path = lock_path(queue);
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| SyncError::QueueOpen { path, source })
}

/// Take the push lock of `queue` if nobody holds it; `None` if someone does.
pub fn try_acquire(queue: &Path) -> Result<Option<PushLock>> {
    let mut file = open(queue)?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
        Err(e) => {
            return Err(SyncError::QueueOpen {
                path: lock_path(queue),
                source: e.into(),
            });
        }
    }
    let write = |file: &mut File| -> std::io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        file.flush()
    };
    write(&mut file).map_err(|source| SyncError::QueueOpen {
        path: lock_path(queue),
        source,
    })?;
    Ok(Some(PushLock { _file: file }))
}

/// The pid of the process pushing `queue` now, if any.
pub fn holder(queue: &Path) -> Result<Option<u32>> {
    if !lock_path(queue).exists() {
        return Ok(None);
    }
    let mut file = open(queue)?;
    match flock(&file, FlockOperation::NonBlockingLockShared) {
        Ok(()) => return Ok(None),
        Err(rustix::io::Errno::WOULDBLOCK) => {}
        Err(e) => {
            return Err(SyncError::QueueOpen {
                path: lock_path(queue),
                source: e.into(),
            });
        }
    }
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    Ok(text.trim().parse().ok().or(Some(0)))
}
