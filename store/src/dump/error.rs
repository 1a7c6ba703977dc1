//! What can go wrong walking a path on disk or streaming its NAR.

use std::io;
use std::path::{Path, PathBuf};

use crate::nar::{BadName, NarError};

/// An error walking a store path on disk or producing its NAR (the
/// serialisation of `src/libutil/archive.cc`'s `dumpPath`). Paths are the
/// real files on disk, under the store's real directory.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// `lstat`, `readdir`, `readlink`, `open` or `read` failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A regular file's length differs from the walk's: it changed while
    /// being dumped, and the NAR would be corrupt.
    #[error("{path} changed during the dump: it has {actual} bytes, not {expected}")]
    SizeChanged {
        /// The file.
        path: PathBuf,
        /// Its length when walked, in bytes.
        expected: u64,
        /// Its length when read, in bytes.
        actual: u64,
    },
    /// A socket, FIFO or device: NAR has no encoding for it.
    #[error("{path} is neither a regular file, a directory nor a symlink: a NAR cannot hold it")]
    UnsupportedFileType {
        /// The file.
        path: PathBuf,
    },
    /// A directory entry whose name NAR cannot hold (see [`BadName`]).
    #[error("{path}: a NAR cannot hold this name: {reason}")]
    BadName {
        /// The entry.
        path: PathBuf,
        /// What is wrong with its name.
        reason: BadName,
    },
    /// The walked tree does not make a valid NAR plan.
    #[error(transparent)]
    Nar(#[from] NarError),
    /// A byte range asked of the NAR lies (partly) outside it.
    #[error("byte range {start}..{end} is not within the NAR's {size} bytes")]
    OffsetOutOfRange {
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// The NAR's length, in bytes.
        size: u64,
    },
    /// Writing the NAR to its destination failed.
    #[error("cannot write the NAR: {0}")]
    Write(io::Error),
    /// The reader ended before producing every byte of the range.
    #[error("the NAR reader stopped after {produced} of {expected} bytes")]
    Incomplete {
        /// Bytes produced, from the start of the range.
        produced: u64,
        /// Bytes the range holds.
        expected: u64,
    },
}

/// Maps an I/O error on `path` to [`DumpError::Io`].
pub(super) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> DumpError + '_ {
    move |source| DumpError::Io {
        path: path.to_owned(),
        source,
    }
}
