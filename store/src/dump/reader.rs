//! Reading a byte range of a NAR from disk, in chunks (blocking).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;

use super::error::{DumpError, io_error};
use crate::nar::{NarPlan, SegmentData};

/// The size of the chunks a NAR is streamed in. With the one chunk a stream
/// reads ahead it bounds a stream's memory: about (1 read ahead + 1 being
/// sent) × 256 KiB = 512 KiB per download, whatever the client does
/// (600 stalled downloads: 340 MB RSS in `bench/` stalled). 128 KiB–1 MiB chunks measured alike in
/// `bench/` (nar_dump), so the smaller wins.
pub const CHUNK_SIZE: usize = 256 * 1024;
/// How many full-size buffers the process keeps for reuse (8 MiB).
const POOL_MAX: usize = 32;
/// A full-size buffer: a chunk plus one spare byte, which lets the read that
/// completes a file prove its end.
const BUFFER_SIZE: usize = CHUNK_SIZE + 1;
/// Chunks smaller than this get a buffer of their own size: small
/// allocations are cheap, and a small NAR should not pin a full buffer.
const POOLED_FROM: usize = 64 * 1024;

/// Full-size chunk buffers, given back when the consumer drops a chunk: a
/// fresh 256 KiB allocation costs page faults and zeroing, about a quarter of
/// the reader's CPU time in `bench/` before this pool. Shared by all streams,
/// so a stream's first chunk reuses another's buffer.
static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn take_buffer(len: usize) -> Vec<u8> {
    let reused = (len >= POOLED_FROM)
        .then(|| POOL.lock().ok()?.pop())
        .flatten();
    reused.unwrap_or_else(|| vec![0; if len >= POOLED_FROM { BUFFER_SIZE } else { len }])
}

/// The bytes of one chunk; a full-size buffer goes back to the pool when the
/// chunk is dropped.
struct Chunk {
    buf: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if self.buf.len() == BUFFER_SIZE
            && let Ok(mut pool) = POOL.lock()
            && pool.len() < POOL_MAX
        {
            pool.push(std::mem::take(&mut self.buf));
        }
    }
}

/// The file being read: its handle, path, expected size and read position.
#[derive(Debug)]
struct OpenFile {
    file: File,
    path: PathBuf,
    size: u64,
    pos: u64,
}

impl OpenFile {
    fn open(path: &Path, size: u64, pos: u64) -> Result<OpenFile, DumpError> {
        // O_NOFOLLOW: the walk saw a regular file; never read through a
        // symlink that replaced it since.
        let mut file = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io_error(path))?;
        if pos > 0 {
            file.seek(SeekFrom::Start(pos)).map_err(io_error(path))?;
        }
        Ok(OpenFile {
            file,
            path: path.to_owned(),
            size,
            pos,
        })
    }

    /// Reads up to `take` bytes of the file into `buf` (which may be longer:
    /// a read asking for one byte more than the file has left proves its end
    /// without another syscall). Returns the bytes read; errors when the file
    /// ends early or goes on past its size.
    fn read_into(&mut self, buf: &mut [u8], take: usize) -> Result<usize, DumpError> {
        let left = self.size - self.pos;
        let ask = if take as u64 == left {
            buf.len().min(take + 1)
        } else {
            take
        };
        let n = read_retrying(&mut self.file, &mut buf[..ask]).map_err(io_error(&self.path))?;
        if n == 0 && take > 0 {
            return Err(self.size_changed(self.pos));
        }
        if n as u64 > left {
            return Err(self.size_changed(self.pos + n as u64));
        }
        self.pos += n as u64;
        if self.pos == self.size && n == ask {
            // The read did not prove the end: ask again.
            let mut probe = [0u8; 1];
            if read_retrying(&mut self.file, &mut probe).map_err(io_error(&self.path))? > 0 {
                return Err(self.size_changed(self.size + 1));
            }
        }
        Ok(n)
    }

    /// The error for a file seen to have changed size: `seen` is what the
    /// reads showed; its size now is more telling, when we can get it.
    fn size_changed(&self, seen: u64) -> DumpError {
        DumpError::SizeChanged {
            path: self.path.clone(),
            expected: self.size,
            actual: self.file.metadata().map_or(seen, |m| m.len()),
        }
    }
}

fn read_retrying(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

/// Produces a byte range of a NAR as chunks of up to [`CHUNK_SIZE`] bytes.
#[derive(Debug)]
pub(super) struct ChunkReader {
    plan: NarPlan,
    /// The segment holding `pos`, and `pos`'s offset within it.
    segment: usize,
    within: u64,
    pos: u64,
    end: u64,
    /// The file of the current segment, once opened.
    file: Option<OpenFile>,
}

impl ChunkReader {
    /// Reads `plan`'s bytes `start..end`; the caller checked the range.
    pub(super) fn new(plan: &NarPlan, start: u64, end: u64) -> ChunkReader {
        let (segment, within) = plan.locate(start).unwrap_or((plan.segment_count(), 0));
        ChunkReader {
            plan: plan.clone(),
            segment,
            within,
            pos: start,
            end,
            file: None,
        }
    }

    pub(super) fn next_chunk(&mut self) -> Result<Option<Bytes>, DumpError> {
        if self.pos == self.end {
            return Ok(None);
        }
        let want = CHUNK_SIZE.min(usize::try_from(self.end - self.pos).unwrap_or(CHUNK_SIZE));
        let mut buf = take_buffer(want + 1);
        let mut filled = 0;
        while filled < want {
            filled += self.fill(&mut buf[filled..], want - filled)?;
        }
        Ok(Some(Bytes::from_owner(Chunk { buf, len: filled })))
    }

    /// Copies up to `want` bytes of the current segment into `buf`, moving on
    /// to the next segment at its end.
    fn fill(&mut self, buf: &mut [u8], want: usize) -> Result<usize, DumpError> {
        let segment = self.plan.segment(self.segment).expect("pos < end");
        let left = segment.len() - self.within;
        let take = want.min(usize::try_from(left).unwrap_or(want));
        let n = match segment.data {
            SegmentData::Literal(bytes) => {
                let from = self.within as usize;
                buf[..take].copy_from_slice(&bytes[from..from + take]);
                take
            }
            SegmentData::Contents { path, size } => {
                let file = match &mut self.file {
                    Some(file) => file,
                    None => self.file.insert(OpenFile::open(path, size, self.within)?),
                };
                file.read_into(buf, take)?
            }
        };
        self.pos += n as u64;
        self.within += n as u64;
        if self.within == segment.len() {
            self.segment += 1;
            self.within = 0;
            self.file = None;
        }
        Ok(n)
    }
}
