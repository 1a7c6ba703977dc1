//! Walking a path on disk into a [`NarPlan`], and streaming its NAR.
//!
//! The walk `lstat`s and never follows symlinks. Streaming reads files with
//! `read()` (never mmap: uprobes have corrupted mmapped NARs elsewhere) into
//! 256 KiB buffers, small files' headers and contents coalesced. Chunks are
//! read on demand: each read is one job on the process's file-read pool
//! ([`read_pool`]), started when the consumer takes the chunk before it (one
//! chunk of read-ahead, unless [`NarStream::without_read_ahead`]). A consumer that stops polling, such as a client that
//! stops reading, holds one chunk and no thread; the memory held is a chunk
//! or two whatever the file sizes. A file whose size is not the one the walk
//! saw is an error, never a silently corrupt NAR.

use std::fs;
use std::future::Future;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::OnceLock;

use bytes::Bytes;
use futures_core::Stream;

use crate::blocking_pool::{BlockingPool, PoolTask};
use crate::nar::{NarNode, NarPlan};

mod error;
mod reader;
pub use error::DumpError;
use error::io_error;
pub use reader::CHUNK_SIZE;
use reader::ChunkReader;

/// Threads of the file-read pool unless [`set_read_threads`] said otherwise.
pub const DEFAULT_READ_THREADS: usize = 16;

static READ_POOL: OnceLock<BlockingPool> = OnceLock::new();

/// Sizes the process's file-read pool; only the first call before the pool
/// is first used counts. Returns false when it was too late.
pub fn set_read_threads(threads: usize) -> bool {
    READ_POOL
        .set(BlockingPool::new("larder-read", threads))
        .is_ok()
}

/// The process's pool for blocking file reads: NAR chunks, walks, and
/// other bodies read from files (the server's cached and static files).
/// [`DEFAULT_READ_THREADS`] threads unless [`set_read_threads`] came first.
pub fn read_pool() -> &'static BlockingPool {
    READ_POOL.get_or_init(|| BlockingPool::new("larder-read", DEFAULT_READ_THREADS))
}

impl NarPlan {
    /// Walks `path` (blocking) into the plan of its NAR.
    pub fn walk(path: &Path) -> Result<NarPlan, DumpError> {
        Ok(NarPlan::new(walk_node(path)?)?)
    }

    /// [`NarPlan::walk`] on the file-read pool.
    pub async fn walk_async(path: PathBuf) -> Result<NarPlan, DumpError> {
        let root = path.clone();
        let task = read_pool().run(move || NarPlan::walk(&path));
        task.await.map_err(|e| DumpError::Io {
            path: root,
            source: io::Error::other(e),
        })?
    }

    /// The NAR from byte `offset` to its end; see [`NarPlan::stream_range`].
    pub fn stream(&self, offset: u64) -> Result<NarStream, DumpError> {
        self.stream_range(offset, self.nar_size())
    }

    /// The NAR's bytes `start..end`, read on the file-read pool on demand:
    /// files before `start` are not read, the file holding it is entered
    /// with a seek. Every error (a file changed or vanished) comes as an
    /// item; the stream yields exactly `end - start` bytes when it has none.
    pub fn stream_range(&self, start: u64, end: u64) -> Result<NarStream, DumpError> {
        let reader = self.reader(start, end)?;
        Ok(NarStream {
            state: ReadState::Idle(Box::new(reader)),
            total: end - start,
            remaining: end - start,
            read_ahead: true,
        })
    }

    /// Writes the whole NAR to `out` (blocking).
    pub fn write_to(&self, out: &mut impl Write) -> Result<(), DumpError> {
        let mut reader = self.reader(0, self.nar_size())?;
        while let Some(chunk) = reader.next_chunk()? {
            out.write_all(&chunk).map_err(DumpError::Write)?;
        }
        Ok(())
    }

    fn reader(&self, start: u64, end: u64) -> Result<ChunkReader, DumpError> {
        if start > end || end > self.nar_size() {
            return Err(DumpError::OffsetOutOfRange {
                start,
                end,
                size: self.nar_size(),
            });
        }
        Ok(ChunkReader::new(self, start, end))
    }
}

fn walk_node(path: &Path) -> Result<NarNode, DumpError> {
    let meta = fs::symlink_metadata(path).map_err(io_error(path))?;
    let file_type = meta.file_type();
    if file_type.is_file() {
        Ok(NarNode::Regular {
            size: meta.len(),
            executable: meta.permissions().mode() & 0o100 != 0,
            path: path.to_owned(),
        })
    } else if file_type.is_symlink() {
        let target = fs::read_link(path).map_err(io_error(path))?;
        Ok(NarNode::Symlink {
            target: target.into_os_string().into_encoded_bytes(),
        })
    } else if file_type.is_dir() {
        walk_directory(path)
    } else {
        Err(DumpError::UnsupportedFileType {
            path: path.to_owned(),
        })
    }
}

fn walk_directory(path: &Path) -> Result<NarNode, DumpError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(path).map_err(io_error(path))? {
        let name = entry.map_err(io_error(path))?.file_name();
        crate::nar::check_name(name.as_bytes()).map_err(|reason| DumpError::BadName {
            path: path.join(&name),
            reason,
        })?;
        names.push(name);
    }
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let entries = names
        .into_iter()
        .map(|name| {
            let node = walk_node(&path.join(&name))?;
            Ok((name.into_encoded_bytes(), node))
        })
        .collect::<Result<_, DumpError>>()?;
    Ok(NarNode::Directory { entries })
}

/// A NAR's bytes as an async stream; see [`NarPlan::stream_range`].
#[derive(Debug)]
pub struct NarStream {
    state: ReadState,
    total: u64,
    /// Bytes still to come: a reader that stops early is an error, never a
    /// clean short stream.
    remaining: u64,
    /// Whether the next chunk is read as soon as one is taken.
    read_ahead: bool,
}

type ReadJob = PoolTask<(Box<ChunkReader>, Result<Option<Bytes>, DumpError>)>;

/// Where the reader is: waiting for the consumer, or reading a chunk on
/// the pool (it comes back with the chunk).
#[derive(Debug)]
enum ReadState {
    Idle(Box<ChunkReader>),
    Reading(ReadJob),
    Done,
}

fn read_next(mut reader: Box<ChunkReader>) -> ReadJob {
    read_pool().run(move || {
        let chunk = reader.next_chunk();
        (reader, chunk)
    })
}

impl NarStream {
    /// The same stream, reading each chunk only when it is polled for, not
    /// ahead: for a consumer that keeps its own state between chunks (zstd)
    /// and should hold no input chunk while its client is slow.
    pub fn without_read_ahead(mut self) -> NarStream {
        self.read_ahead = false;
        self
    }

    /// How many bytes the stream has still to yield.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The next chunk, without needing a `Stream` extension trait.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, DumpError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    fn incomplete(&mut self) -> DumpError {
        let produced = self.total - self.remaining;
        self.remaining = 0;
        DumpError::Incomplete {
            produced,
            expected: self.total,
        }
    }
}

impl Stream for NarStream {
    type Item = Result<Bytes, DumpError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            let job = match &mut this.state {
                ReadState::Done if this.remaining > 0 => {
                    return Poll::Ready(Some(Err(this.incomplete())));
                }
                ReadState::Done => return Poll::Ready(None),
                ReadState::Idle(_) => {
                    let ReadState::Idle(reader) =
                        std::mem::replace(&mut this.state, ReadState::Done)
                    else {
                        unreachable!()
                    };
                    this.state = ReadState::Reading(read_next(reader));
                    continue;
                }
                ReadState::Reading(job) => job,
            };
            let result = std::task::ready!(Pin::new(job).poll(cx));
            this.state = ReadState::Done;
            return Poll::Ready(match result {
                Ok((reader, Ok(Some(chunk)))) => {
                    this.remaining -= chunk.len() as u64;
                    if this.remaining > 0 {
                        // Read ahead one chunk: the job ends when it is
                        // read, so a consumer that stops holds no thread.
                        this.state = if this.read_ahead {
                            ReadState::Reading(read_next(reader))
                        } else {
                            ReadState::Idle(reader)
                        };
                    }
                    Some(Ok(chunk))
                }
                Ok((_, Err(e))) => {
                    this.remaining = 0;
                    Some(Err(e))
                }
                Ok((_, Ok(None))) | Err(_) if this.remaining > 0 => Some(Err(this.incomplete())),
                Ok((_, Ok(None))) | Err(_) => None,
            });
        }
    }
}
