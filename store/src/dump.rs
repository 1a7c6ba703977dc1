//! Walking a path on disk into a [`NarPlan`], and streaming its NAR.
//!
//! The walk `lstat`s and never follows symlinks. Streaming reads files with
//! `read()` (never mmap: uprobes have corrupted mmapped NARs elsewhere) on a
//! blocking thread into large buffers, small files' headers and contents
//! coalesced, and hands them to the async side through a bounded channel: the
//! memory held is a few buffers whatever the file sizes, and the reader stops
//! when the stream is dropped. A file whose size is not the one the walk saw
//! is an error, never a silently corrupt NAR.

use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use tokio::sync::mpsc;

use crate::nar::{NarNode, NarPlan};

mod error;
mod reader;
pub use error::DumpError;
use error::io_error;
pub use reader::CHUNK_SIZE;
use reader::ChunkReader;

/// How many chunks may wait in the channel for the consumer.
const CHANNEL_CHUNKS: usize = 2;

impl NarPlan {
    /// Walks `path` (blocking) into the plan of its NAR.
    pub fn walk(path: &Path) -> Result<NarPlan, DumpError> {
        Ok(NarPlan::new(walk_node(path)?)?)
    }

    /// [`NarPlan::walk`] on a blocking thread.
    pub async fn walk_async(path: PathBuf) -> Result<NarPlan, DumpError> {
        let root = path.clone();
        let task = tokio::task::spawn_blocking(move || NarPlan::walk(&path));
        task.await.map_err(|e| DumpError::Io {
            path: root,
            source: io::Error::other(e),
        })?
    }

    /// The NAR from byte `offset` to its end; see [`NarPlan::stream_range`].
    pub fn stream(&self, offset: u64) -> Result<NarStream, DumpError> {
        self.stream_range(offset, self.nar_size())
    }

    /// The NAR's bytes `start..end`, read on a blocking thread: files before
    /// `start` are not read, the file holding it is entered with a seek.
    /// Every error (a file changed or vanished) comes as an item; the stream
    /// yields exactly `end - start` bytes when it has none.
    pub fn stream_range(&self, start: u64, end: u64) -> Result<NarStream, DumpError> {
        let mut reader = self.reader(start, end)?;
        let (sender, receiver) = mpsc::channel(CHANNEL_CHUNKS);
        let produce = move || {
            loop {
                let item = match reader.next_chunk() {
                    Ok(Some(chunk)) => Ok(chunk),
                    Ok(None) => return,
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                // The consumer dropped the stream, or we are done.
                if sender.blocking_send(item).is_err() || failed {
                    return;
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(produce)),
            Err(_) => drop(std::thread::spawn(produce)),
        }
        Ok(NarStream {
            receiver,
            total: end - start,
            remaining: end - start,
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
    receiver: mpsc::Receiver<Result<Bytes, DumpError>>,
    total: u64,
    /// Bytes still to come: a reader that stops early is an error, never a
    /// clean short stream.
    remaining: u64,
}

impl NarStream {
    /// How many bytes the stream has still to yield.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The next chunk, without needing a `Stream` extension trait.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, DumpError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for NarStream {
    type Item = Result<Bytes, DumpError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = std::task::ready!(self.receiver.poll_recv(cx));
        Poll::Ready(match item {
            Some(Ok(chunk)) => {
                self.remaining -= chunk.len() as u64;
                Some(Ok(chunk))
            }
            Some(Err(e)) => {
                self.remaining = 0;
                self.receiver.close();
                Some(Err(e))
            }
            None if self.remaining > 0 => {
                let produced = self.total - self.remaining;
                self.remaining = 0;
                Some(Err(DumpError::Incomplete {
                    produced,
                    expected: self.total,
                }))
            }
            None => None,
        })
    }
}
