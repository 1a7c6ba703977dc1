//! What can go wrong walking a path on disk or streaming its NAR.

use std::io;
use std::path::{Path, PathBuf};

use crate::nar::{BadName, NarError};

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} changed during the dump: it has {actual} bytes, not {expected}")]
    SizeChanged {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{path} is neither a regular file, a directory nor a symlink: a NAR cannot hold it")]
    UnsupportedFileType { path: PathBuf },
    #[error("{path}: a NAR cannot hold this name: {reason}")]
    BadName { path: PathBuf, reason: BadName },
    #[error(transparent)]
    Nar(#[from] NarError),
    #[error("byte range {start}..{end} is not within the NAR's {size} bytes")]
    OffsetOutOfRange { start: u64, end: u64, size: u64 },
    #[error("cannot write the NAR: {0}")]
    Write(io::Error),
    #[error("the NAR reader stopped after {produced} of {expected} bytes")]
    Incomplete { produced: u64, expected: u64 },
}

pub(super) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> DumpError + '_ {
    move |source| DumpError::Io {
        path: path.to_owned(),
        source,
    }
}
