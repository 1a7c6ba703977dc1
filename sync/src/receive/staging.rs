//! The staging area: uploaded NARs on disk, decompressed on the way in,
//! until their narinfo arrives and they are imported.
//!
//! Layout under `--staging-dir` (nothing else there is touched):
//! - `upload-*`: a NAR being received (removed if the upload fails);
//! - `staged-<n>.nar`: a complete, verified, decompressed NAR, known in
//!   memory by the URL it was uploaded to (`nar/<filehash>.nar.xz`);
//! - `import-*/`: left by earlier versions, which imported with
//!   `nix copy --from file://`; removed at start.
//!
//! The index of staged NARs lives only in memory: after a restart every
//! entry is stale ([`Staging::open`] removes them), Nix's HEAD on the NAR
//! then says 404 and the pusher's retry uploads it again.
//!
//! Memory per upload is bounded: a few body chunks in a channel, the
//! decoder's window (xz is capped at [`XZ_MEMLIMIT`], zstd at its default
//! 128 MiB window limit) and a 64 KiB write buffer; never a whole NAR.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use larder_store::Sha256Hash;
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

/// The xz decoder's memory limit: Nix's default preset 6 needs ~9 MiB,
/// `xz -9` ~65 MiB; a stream asking for more is refused, not obeyed.
pub const XZ_MEMLIMIT: u64 = 80 << 20;
const WRITE_BUFFER: usize = 64 << 10;

/// How a NAR upload is compressed, from its URL's extension (as Nix 2.8
/// names them: `.nar`, `.nar.xz`, `.nar.zst`, `.nar.bz2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Xz,
    Zstd,
    Bzip2,
}

impl Compression {
    /// The narinfo `Compression:` value Nix writes for it.
    pub fn narinfo_name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
        }
    }

    /// Split `nar/<filehash>.nar[.ext]`'s file name into the file hash
    /// (nix32, unchecked) and the compression. `Err` carries the unknown
    /// extension.
    pub fn from_file_name(name: &str) -> Result<(&str, Compression), String> {
        let (hash, ext) = name.split_once('.').ok_or_else(|| name.to_owned())?;
        let compression = match ext {
            "nar" => Compression::None,
            "nar.xz" => Compression::Xz,
            "nar.zst" => Compression::Zstd,
            "nar.bz2" => Compression::Bzip2,
            other => return Err(other.to_owned()),
        };
        Ok((hash, compression))
    }
}

/// What was computed while receiving one NAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digests {
    /// SHA-256 and size of the decompressed NAR (narinfo `NarHash`/`NarSize`).
    pub nar_hash: Sha256Hash,
    pub nar_size: u64,
    /// SHA-256 and size of the bytes as uploaded (`FileHash`/`FileSize`).
    pub file_hash: Sha256Hash,
    pub file_size: u64,
}

/// Why receiving a NAR failed.
#[derive(Debug)]
pub enum StageError {
    /// The decompressed NAR passed `limit` bytes.
    TooLarge {
        limit: u64,
    },
    /// The compressed stream is not valid for its compression.
    Corrupt(String),
    /// The decompressed bytes are not one well-formed NAR (garbage,
    /// truncated, trailing bytes): Nix would fail to import it.
    NotNar(larder_store::nar_check::NarSyntaxError),
    Io(io::Error),
}

/// A verified NAR waiting for its narinfo.
#[derive(Debug, Clone)]
pub struct StagedNar {
    pub file: PathBuf,
    pub digests: Digests,
    /// Narinfos still expected for it, per pusher name: one per PUT and
    /// per HEAD answered 200 (Nix skips the PUT then). Two paths with
    /// identical contents share one NAR URL, and Nix may push them
    /// concurrently; a pusher's narinfo only ever drops its own claim.
    claims: HashMap<String, u32>,
    staged_at: SystemTime,
}

/// The staging directory and the in-memory index of its staged NARs.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    staged: Mutex<HashMap<String, StagedNar>>,
    next: AtomicU64,
}

impl Staging {
    /// Create `dir` (mode 0700) if needed and remove what a previous run
    /// left (only names this module makes).
    pub fn open(dir: &Path) -> io::Result<Staging> {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if ["upload-", "staged-", "import-"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                let path = entry.path();
                let result = if entry.file_type()?.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                match result {
                    Ok(()) => tracing::info!("removed stale staging entry {}", path.display()),
                    Err(e) => tracing::warn!("cannot remove stale {}: {e}", path.display()),
                }
            }
        }
        Ok(Staging {
            dir: dir.to_owned(),
            staged: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn index(&self) -> std::sync::MutexGuard<'_, HashMap<String, StagedNar>> {
        self.staged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new file for an upload in progress; removed when dropped.
    pub fn new_upload(&self) -> io::Result<NamedTempFile> {
        tempfile::Builder::new()
            .prefix("upload-")
            .tempfile_in(&self.dir)
    }

    /// HEAD on a NAR by `pusher`: true (and one more narinfo expected
    /// from that pusher) if staged.
    pub fn claim(&self, url: &str, pusher: &str) -> bool {
        match self.index().get_mut(url) {
            Some(e) => {
                *e.claims.entry(pusher.to_owned()).or_default() += 1;
                true
            }
            None => false,
        }
    }

    /// Keep a verified upload under `url`. The URL names the uploaded
    /// bytes' hash, so an upload to a staged URL has the same contents:
    /// it only adds a claim.
    pub fn stage(
        &self,
        url: &str,
        pusher: &str,
        upload: NamedTempFile,
        digests: Digests,
    ) -> io::Result<()> {
        let mut index = self.index();
        if let Some(e) = index.get_mut(url) {
            *e.claims.entry(pusher.to_owned()).or_default() += 1;
            return Ok(());
        }
        let generation = self.next.fetch_add(1, Ordering::SeqCst);
        let file = self.dir.join(format!("staged-{generation}.nar"));
        upload.persist(&file).map_err(|e| e.error)?;
        index.insert(
            url.to_owned(),
            StagedNar {
                file,
                digests,
                claims: HashMap::from([(pusher.to_owned(), 1)]),
                staged_at: SystemTime::now(),
            },
        );
        Ok(())
    }

    /// The entry staged under `url`, if `pusher` has a claim on it.
    pub fn get(&self, url: &str, pusher: &str) -> Option<StagedNar> {
        self.index()
            .get(url)
            .filter(|e| e.claims.get(pusher).is_some_and(|n| *n > 0))
            .cloned()
    }

    /// Open the NAR staged under `url` for reading (under the index lock,
    /// so a concurrent [`Staging::release`] cannot remove it first; the
    /// open file outlives a later removal). `None` if nothing is staged there.
    pub fn open_staged(&self, url: &str) -> io::Result<Option<File>> {
        let index = self.index();
        index.get(url).map(|e| File::open(&e.file)).transpose()
    }

    /// A narinfo from `pusher` naming `url` was handled (imported or
    /// refused): drop one of that pusher's claims, and the NAR with the
    /// last claim of anyone. Another pusher's claims are never touched.
    pub fn release(&self, url: &str, pusher: &str) {
        let mut index = self.index();
        let last = index.get_mut(url).is_some_and(|e| {
            if let Some(n) = e.claims.get_mut(pusher) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    e.claims.remove(pusher);
                }
            }
            e.claims.is_empty()
        });
        if last && let Some(old) = index.remove(url) {
            let _ = fs::remove_file(old.file);
        }
    }

    /// Remove staged NARs older than `max_age` whose narinfo never came.
    pub fn sweep(&self, max_age: Duration) {
        let now = SystemTime::now();
        self.index().retain(|url, e| {
            let keep = now.duration_since(e.staged_at).unwrap_or_default() < max_age;
            if !keep {
                tracing::info!("dropping {url}: its narinfo never arrived");
                let _ = fs::remove_file(&e.file);
            }
            keep
        });
    }

    /// Bytes of staged NARs (uploads in progress not counted).
    pub fn staged_bytes(&self) -> u64 {
        self.index().values().map(|e| e.digests.nar_size).sum()
    }
}

/// Where decompressed NAR bytes go: hashed, counted, bounded, buffered.
struct NarSink {
    out: BufWriter<File>,
    hasher: Sha256,
    size: u64,
    limit: u64,
    syntax: larder_store::nar_check::NarChecker,
}

/// The marker error [`NarSink`] fails with past its limit.
#[derive(Debug)]
struct OverLimit;
impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NAR larger than the limit")
    }
}
impl std::error::Error for OverLimit {}

impl Write for NarSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size + buf.len() as u64 > self.limit {
            return Err(io::Error::other(OverLimit));
        }
        self.syntax.feed(buf).map_err(io::Error::other)?;
        self.out.write_all(buf)?;
        self.hasher.update(buf);
        self.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

enum Decoder {
    None(NarSink),
    Xz(xz2::write::XzDecoder<NarSink>),
    Zstd(zstd::stream::write::Decoder<'static, NarSink>),
    Bzip2(bzip2::write::BzDecoder<NarSink>),
}

impl Decoder {
    fn new(compression: Compression, sink: NarSink) -> io::Result<Decoder> {
        Ok(match compression {
            Compression::None => Decoder::None(sink),
            Compression::Xz => {
                let stream = xz2::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, 0)
                    .map_err(io::Error::other)?;
                Decoder::Xz(xz2::write::XzDecoder::new_stream(sink, stream))
            }
            Compression::Zstd => Decoder::Zstd(zstd::stream::write::Decoder::new(sink)?),
            Compression::Bzip2 => Decoder::Bzip2(bzip2::write::BzDecoder::new(sink)),
        })
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Decoder::None(w) => w.write_all(data),
            Decoder::Xz(w) => w.write_all(data),
            Decoder::Zstd(w) => w.write_all(data),
            Decoder::Bzip2(w) => w.write_all(data),
        }
    }

    fn finish(self) -> io::Result<NarSink> {
        let mut sink = match self {
            Decoder::None(w) => w,
            Decoder::Xz(mut w) => w.finish()?,
            Decoder::Zstd(mut w) => {
                w.flush()?;
                w.into_inner()
            }
            Decoder::Bzip2(mut w) => w.finish()?,
        };
        sink.flush()?;
        Ok(sink)
    }
}

fn classify(e: io::Error, limit: u64) -> StageError {
    if e.get_ref().is_some_and(|i| i.is::<OverLimit>()) {
        StageError::TooLarge { limit }
    } else if let Some(bad) = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<larder_store::nar_check::NarSyntaxError>())
    {
        StageError::NotNar(bad.clone())
    } else if matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof
    ) || e.get_ref().is_some_and(|i| i.is::<xz2::stream::Error>())
    {
        StageError::Corrupt(e.to_string())
    } else if e.kind() == io::ErrorKind::Other && e.raw_os_error().is_none() {
        // zstd reports corrupt frames as `Other` with a message.
        StageError::Corrupt(e.to_string())
    } else {
        StageError::Io(e)
    }
}

/// Receive one upload into `upload` from `chunks` (ends when the sender is
/// dropped), decompressing with `compression` and refusing more than
/// `limit` decompressed bytes. Blocking: run it on a blocking thread.
pub fn receive(
    upload: NamedTempFile,
    compression: Compression,
    limit: u64,
    mut chunks: tokio::sync::mpsc::Receiver<Bytes>,
) -> Result<(NamedTempFile, Digests), StageError> {
    let file = upload.reopen().map_err(StageError::Io)?;
    let sink = NarSink {
        out: BufWriter::with_capacity(WRITE_BUFFER, file),
        hasher: Sha256::new(),
        size: 0,
        limit,
        syntax: larder_store::nar_check::NarChecker::new(),
    };
    let mut decoder = Decoder::new(compression, sink).map_err(StageError::Io)?;
    // Uncompressed, the file is the NAR: one SHA-256 pass, not two.
    let mut file_hasher = (compression != Compression::None).then(Sha256::new);
    let mut file_size = 0u64;
    while let Some(chunk) = chunks.blocking_recv() {
        if let Some(h) = &mut file_hasher {
            h.update(&chunk);
        }
        file_size += chunk.len() as u64;
        decoder.write_all(&chunk).map_err(|e| classify(e, limit))?;
    }
    let sink = decoder.finish().map_err(|e| classify(e, limit))?;
    sink.syntax.finish().map_err(StageError::NotNar)?;
    let nar_hash = Sha256Hash(sink.hasher.finalize().into());
    let digests = Digests {
        nar_hash,
        nar_size: sink.size,
        file_hash: file_hasher.map_or(nar_hash, |h| Sha256Hash(h.finalize().into())),
        file_size,
    };
    Ok((upload, digests))
}
