//! Compress once, serve many: a bounded on-disk cache of zstd-compressed
//! NARs, keyed by NAR hash and zstd level.
//!
//! A file is filled while the first request for it streams (the compressor
//! writes each chunk to the client and to a temporary file), and published
//! by `rename` only once the whole NAR compressed without error: a crash or
//! an aborted download leaves at most a temporary file, which the next start
//! deletes, never a partial file that could be served. The index is SQLite
//! (size and last use of each file); past the size limit the least recently
//! used files are evicted. Every method blocks: call them on the blocking
//! pool.
//!
//! [`NarCache::fill_with`] compresses a whole NAR into the cache before
//! anything is sent, for a `Range` request on a NAR that is not cached (a
//! download resumed after the file was evicted): a range is served only
//! from a complete file.

use std::fs::{File, Permissions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use thiserror::Error;

use crate::metrics::Metrics;

#[derive(Debug, Error)]
pub enum CacheError {
    #[error("cache-dir {dir}: {source}; check that it is a writable directory")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cache-dir {dir}: index {source}; delete {dir}/index.sqlite to start afresh")]
    Index {
        dir: PathBuf,
        source: rusqlite::Error,
    },
}

pub struct NarCache {
    dir: PathBuf,
    max_bytes: u64,
    index: Mutex<Connection>,
    /// Use counter for LRU order: monotonic, unlike wall-clock time.
    clock: AtomicU64,
    metrics: Arc<Metrics>,
}

/// A cache file being written; removed on drop unless published.
pub struct CacheFill {
    key: String,
    tmp: PathBuf,
    file: Option<File>,
    size: u64,
}

/// The name of `key`'s file in the cache directory (nginx's internal
/// locations name it too, see `accel-redirect`).
pub fn file_name(key: &str) -> String {
    format!("{key}.nar.zst")
}

impl NarCache {
    pub fn open(dir: &Path, max_bytes: u64, metrics: Arc<Metrics>) -> Result<NarCache, CacheError> {
        let io = |source| CacheError::Io {
            dir: dir.to_owned(),
            source,
        };
        let tmp = dir.join("tmp");
        // Leftovers of fills a crash interrupted.
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io)?;
        }
        std::fs::create_dir_all(&tmp).map_err(io)?;
        let index =
            Connection::open(dir.join("index.sqlite")).map_err(|source| CacheError::Index {
                dir: dir.to_owned(),
                source,
            })?;
        let cache = NarCache {
            dir: dir.to_owned(),
            max_bytes,
            clock: AtomicU64::new(0),
            index: Mutex::new(index),
            metrics,
        };
        cache.init().map_err(|source| CacheError::Index {
            dir: dir.to_owned(),
            source,
        })?;
        Ok(cache)
    }

    fn init(&self) -> rusqlite::Result<()> {
        let conn = self.conn();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             -- The index is advisory (last-used times, sizes): a commit need
             -- not reach the disk before the download goes on. FULL cost an
             -- fsync per cache hit, more than nginx's whole pass (bench/).
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS files (
                 key TEXT PRIMARY KEY, size INTEGER NOT NULL, last_used INTEGER NOT NULL);",
        )?;
        // Forget rows whose file is gone (deleted by hand, or a crash
        // between rename and insert left a file with no row: harmless).
        let keys: Vec<String> = conn
            .prepare("SELECT key FROM files")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for key in keys.iter().filter(|k| !self.path(k).is_file()) {
            conn.execute("DELETE FROM files WHERE key = ?1", [key])?;
        }
        let last: Option<i64> =
            conn.query_row("SELECT MAX(last_used) FROM files", [], |r| r.get(0))?;
        self.clock
            .store(last.unwrap_or(0) as u64, Ordering::Relaxed);
        let total: i64 =
            conn.query_row("SELECT COALESCE(SUM(size), 0) FROM files", [], |r| r.get(0))?;
        self.metrics.cache_bytes.set(total);
        Ok(())
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A connection has no invariant a panicking holder could break.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(file_name(key))
    }

    fn tick(&self) -> i64 {
        (self.clock.fetch_add(1, Ordering::Relaxed) + 1) as i64
    }

    /// The cached file for `key`, opened, with its size.
    pub fn get(&self, key: &str) -> Option<(File, u64)> {
        let conn = self.conn();
        let found = conn
            .query_row("SELECT size FROM files WHERE key = ?1", [key], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "NAR cache index lookup failed");
                None
            });
        let opened = found.and_then(|size| self.open_whole(key, size as u64));
        match &opened {
            Some(_) => {
                self.metrics.cache_hits.inc();
                let used = conn.execute(
                    "UPDATE files SET last_used = ?1 WHERE key = ?2",
                    params![self.tick(), key],
                );
                if let Err(e) = used {
                    tracing::warn!(error = %e, "NAR cache index update failed");
                }
            }
            None => self.metrics.cache_misses.inc(),
        }
        opened
    }

    /// `key`'s file, opened, if it has the `size` the index recorded. A
    /// file of another size (cut short on disk, or replaced by hand) is a
    /// miss, logged: served as it is it would end early, and nginx
    /// (`accel-redirect`) would send it as a clean but short 200. The
    /// miss compresses the NAR again, and that fill replaces the file.
    fn open_whole(&self, key: &str, size: u64) -> Option<(File, u64)> {
        let file = File::open(self.path(key)).ok()?;
        let on_disk = file.metadata().ok()?.len();
        if on_disk != size {
            tracing::warn!(
                file = %self.path(key).display(),
                on_disk,
                size,
                "NAR cache file has the wrong size; compressing the NAR again"
            );
            return None;
        }
        Some((file, size))
    }

    /// Start writing the file for `key`; `None` (logged) if the cache dir
    /// cannot take it: the download then goes on without caching.
    pub fn fill(&self, key: &str) -> Option<CacheFill> {
        let name = format!("{key}.{}.{}", std::process::id(), self.tick());
        let tmp = self.dir.join("tmp").join(name);
        // 0640 whatever the umask (the units and the NixOS module set
        // UMask=0077, which made every file 0600): with accel-redirect,
        // nginx's user, in the cache directory's group, opens the published
        // file itself. Who reaches the files at all is the directory's mode
        // (0700; 0750 for offload); they are compressed copies of
        // world-readable store paths.
        let created = File::create(&tmp).and_then(|file| {
            file.set_permissions(Permissions::from_mode(0o640))
                .map(|()| file)
        });
        match created {
            Ok(file) => Some(CacheFill {
                key: key.to_owned(),
                tmp,
                file: Some(file),
                size: 0,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a NAR cache file");
                None
            }
        }
    }

    /// Make a complete fill visible, then evict down to the size limit.
    pub fn publish(&self, mut fill: CacheFill) {
        let Some(file) = fill.file.take() else {
            return;
        };
        let published = file
            .sync_all()
            .and_then(|()| std::fs::rename(&fill.tmp, self.path(&fill.key)));
        if let Err(e) = published {
            tracing::warn!(error = %e, "cannot publish a NAR cache file");
            let _ = std::fs::remove_file(&fill.tmp);
            return;
        }
        let conn = self.conn();
        let recorded = conn.execute(
            "INSERT OR REPLACE INTO files (key, size, last_used) VALUES (?1, ?2, ?3)",
            params![fill.key, fill.size as i64, self.tick()],
        );
        if let Err(e) = recorded.and_then(|_| self.evict(&conn)) {
            tracing::warn!(error = %e, "NAR cache index update failed");
        }
    }

    /// Compress a whole NAR (`chunks`, in order) at zstd `level` with
    /// `threads` workers (0: single-threaded) into the file for `key`, and
    /// publish it. Blocking. Errors: the NAR's own (a file changed), zstd's,
    /// or a cache file that could not be written (nothing is published).
    pub fn fill_with(
        &self,
        key: &str,
        chunks: impl Iterator<Item = std::io::Result<Bytes>>,
        level: i32,
        threads: u32,
    ) -> std::io::Result<()> {
        let fill = self
            .fill(key)
            .ok_or_else(|| std::io::Error::other("cannot create a NAR cache file"))?;
        let mut encoder = zstd::stream::write::Encoder::new(FillWriter(fill), level)?;
        if threads > 1 {
            encoder.multithread(threads)?;
        }
        for chunk in chunks {
            encoder.write_all(&chunk?)?;
        }
        let FillWriter(fill) = encoder.finish()?;
        if fill.file.is_none() {
            return Err(std::io::Error::other("NAR cache write failed"));
        }
        self.publish(fill);
        Ok(())
    }

    /// Delete least recently used files until the total fits the limit.
    fn evict(&self, conn: &Connection) -> rusqlite::Result<()> {
        let mut total: i64 =
            conn.query_row("SELECT COALESCE(SUM(size), 0) FROM files", [], |r| r.get(0))?;
        while total as u64 > self.max_bytes {
            let Some((key, size)) = conn
                .query_row(
                    "SELECT key, size FROM files ORDER BY last_used LIMIT 1",
                    [],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()?
            else {
                break;
            };
            if let Err(e) = std::fs::remove_file(self.path(&key)) {
                tracing::warn!(error = %e, "cannot delete an evicted NAR cache file");
            }
            conn.execute("DELETE FROM files WHERE key = ?1", [&key])?;
            total -= size;
            self.metrics.cache_evictions.inc();
        }
        self.metrics.cache_bytes.set(total);
        Ok(())
    }
}

impl CacheFill {
    /// Append compressed bytes; a failed write abandons the fill (logged),
    /// never the download.
    pub fn write(&mut self, data: &[u8]) {
        if let Some(file) = &mut self.file {
            match file.write_all(data) {
                Ok(()) => self.size += data.len() as u64,
                Err(e) => {
                    tracing::warn!(error = %e, "NAR cache write failed; not caching this NAR");
                    self.file = None;
                }
            }
        }
    }
}

/// A [`CacheFill`] as a `Write` for the zstd encoder.
struct FillWriter(CacheFill);

impl Write for FillWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.write(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for CacheFill {
    fn drop(&mut self) {
        // Gone already when published; otherwise an aborted download or a
        // failed write left it.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, max_bytes: u64) -> NarCache {
        NarCache::open(dir, max_bytes, Arc::new(Metrics::new().unwrap())).unwrap()
    }

    fn put(cache: &NarCache, key: &str, len: usize) {
        let mut fill = cache.fill(key).unwrap();
        fill.write(&vec![7; len]);
        cache.publish(fill);
    }

    fn tmp_files(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("tmp")).unwrap().count()
    }

    #[test]
    fn a_file_of_the_wrong_size_is_a_miss_until_a_fill_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 20);
        put(&cache, "k", 1000);
        let file = dir.path().join(file_name("k"));
        for wrong in [400, 1001] {
            std::fs::write(&file, vec![7; wrong]).unwrap();
            assert!(cache.get("k").is_none(), "{wrong} bytes");
        }
        put(&cache, "k", 1000);
        assert_eq!(cache.get("k").unwrap().1, 1000);
    }

    #[test]
    fn a_fill_before_serving_publishes_the_whole_zstd_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 20);
        let chunks = [
            Bytes::from_static(b"nix-archive-1"),
            Bytes::from(vec![3; 5000]),
        ];
        cache
            .fill_with("k", chunks.clone().into_iter().map(Ok), 1, 0)
            .unwrap();
        let (file, len) = cache.get("k").unwrap();
        let whole = zstd::decode_all(file).unwrap();
        assert_eq!(whole, [&chunks[0][..], &chunks[1][..]].concat());
        assert_eq!(
            len,
            std::fs::metadata(dir.path().join("k.nar.zst"))
                .unwrap()
                .len()
        );
        // A NAR that fails half-way publishes nothing.
        let failing = [Ok(chunks[0].clone()), Err(std::io::Error::other("changed"))];
        assert!(cache.fill_with("bad", failing.into_iter(), 1, 0).is_err());
        assert!(cache.get("bad").is_none());
        assert_eq!(tmp_files(dir.path()), 0);
    }

    #[test]
    fn published_files_are_group_readable_whatever_the_umask() {
        // nginx (accel-redirect) reads them as a member of the directory's
        // group; the units' UMask=0077 alone would make them 0600. The
        // test's umask (022) would give 0644: exactly 0640 is the explicit
        // mode.
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 20);
        put(&cache, "k", 10);
        let mode = std::fs::metadata(dir.path().join("k.nar.zst"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640, "{mode:o}");
    }

    #[test]
    fn least_recently_used_files_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 250);
        put(&cache, "a", 100);
        put(&cache, "b", 100);
        assert!(cache.get("a").is_some());
        put(&cache, "c", 100);
        assert_eq!(cache.get("a").map(|(_, len)| len), Some(100));
        assert!(cache.get("b").is_none());
        assert!(!dir.path().join("b.nar.zst").exists());
        assert!(cache.get("c").is_some());
        assert_eq!(cache.metrics.cache_evictions.get(), 1);
        assert_eq!(cache.metrics.cache_bytes.get(), 200);
    }

    #[test]
    fn unpublished_and_crashed_fills_are_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 20);
        put(&cache, "kept", 10);
        {
            let mut aborted = cache.fill("aborted").unwrap();
            aborted.write(b"partial");
        }
        assert!(cache.get("aborted").is_none());
        assert_eq!(tmp_files(dir.path()), 0);
        // A crash mid-fill leaves a temporary file; a restart deletes it and
        // keeps what was published.
        let leftover = cache.fill("crashed").unwrap();
        std::mem::forget(leftover);
        assert_eq!(tmp_files(dir.path()), 1);
        drop(cache);
        let cache = open(dir.path(), 1 << 20);
        assert_eq!(tmp_files(dir.path()), 0);
        assert!(cache.get("crashed").is_none());
        assert_eq!(cache.get("kept").map(|(_, len)| len), Some(10));
        // A file deleted by hand is forgotten, not served.
        std::fs::remove_file(dir.path().join("kept.nar.zst")).unwrap();
        let cache = open(dir.path(), 1 << 20);
        assert!(cache.get("kept").is_none());
        assert_eq!(cache.metrics.cache_bytes.get(), 0);
    }
}
