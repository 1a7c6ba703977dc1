//! Export store paths into an S3 bucket as a Nix binary cache.
//!
//! Per path, references first (so a reader that finds a narinfo finds its
//! references' narinfos too):
//! 1. skip it when the bucket already holds it whole: its `<hash>.narinfo`
//!    parses, is for this path and names a NAR that is there (a garbage
//!    narinfo, or one whose NAR is gone, is replaced), and with a signer,
//!    carries a signature by one of the signer's keys (one written without
//!    the signer, or before a key rotation, gets its narinfo re-signed in
//!    place, NAR untouched);
//! 2. dump the NAR from the store (a producer thread), hash it, compress it
//!    with zstd, hash the compressed bytes, and hand them over in parts of
//!    `part-size-mib` through a channel of two parts to the uploader, which
//!    keeps at most two parts in flight: memory stays at a few parts
//!    whatever the NAR's size;
//! 3. the upload goes to `tmp/…` first (its name is only known once its
//!    hash is), and is completed only when the dump succeeded and its
//!    NarHash and NarSize equal the store DB's; then it is copied to
//!    `nar/<filehash>.nar.zst` (server-side) and the temporary deleted;
//! 4. `<hash>.ls` and the build log `log/<drv>` when the store has one;
//! 5. the narinfo, last, signed by larder-signer when a socket is given.
//!
//! A kill at any point leaves at most a `tmp/` object or a NAR without
//! narinfo, both of which the bucket GC removes once they are older than
//! its grace period; never a narinfo without its NAR.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use larder_store::db::{PathInfo, StoreDb};
use larder_store::nar::NarPlan;
use larder_store::narinfo::NarInfo;
use larder_store::{Sha256Hash, StoreLocation, StorePath};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};

use super::bucket::{Bucket, Credentials, MAX_NARINFO, S3Target, TooBig, s3_error};
use super::signer::SignerSocket;
use crate::error::{Result, SyncError};

/// Parts in flight to the bucket at once (and parts queued by the dumper).
const PARTS_IN_FLIGHT: usize = 2;

/// What an export did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// Paths whose objects were written, references first.
    pub exported: Vec<String>,
    /// Paths the bucket already had.
    pub present: usize,
    /// Paths the bucket had without a signature by the signer's keys,
    /// whose narinfo was re-signed in place.
    pub resigned: Vec<String>,
    /// Uncompressed NAR bytes exported.
    pub nar_bytes: u64,
    /// Compressed bytes uploaded.
    pub file_bytes: u64,
}

/// Exports from one local store into one bucket.
pub struct Exporter {
    bucket: Bucket,
    db: StoreDb,
    signer: Option<SignerSocket>,
    initialized: bool,
}

/// What the bucket holds for one path.
enum InBucket {
    /// No narinfo (or one that does not describe this path's NAR).
    Missing,
    /// A narinfo, signed by the signer when there is one.
    Done,
    /// A narinfo of this very NAR lacking the signer's signature: where
    /// its compressed NAR is, and that file's hash and size.
    Unsigned {
        url: String,
        file_hash: Sha256Hash,
        file_size: u64,
    },
}

/// What the dump of one NAR produced.
struct Sums {
    nar_hash: Sha256Hash,
    nar_size: u64,
    file_hash: Sha256Hash,
    file_size: u64,
}

impl Exporter {
    /// Open the store DB at `location` and a client for `target`, with
    /// credentials from the environment.
    ///
    /// # Errors
    /// [`SyncError::S3Credentials`], [`SyncError::S3`], or a store DB error.
    pub fn open(
        target: S3Target,
        location: &StoreLocation,
        signer_socket: Option<PathBuf>,
    ) -> Result<Exporter> {
        let credentials = Credentials::from_env()?;
        Ok(Exporter {
            bucket: Bucket::open(target, &credentials)?,
            db: StoreDb::open(location)?,
            signer: signer_socket.map(SignerSocket::new),
            initialized: false,
        })
    }

    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// Check the bucket answers; write `nix-cache-info` when missing.
    ///
    /// # Errors
    /// [`SyncError::S3`] saying what to fix.
    pub fn check(&mut self) -> Result<()> {
        if !self.initialized {
            self.bucket.check_and_init(self.db.location().store_dir())?;
            self.initialized = true;
        }
        Ok(())
    }

    /// Which of `paths` (full store paths) have no narinfo in the bucket.
    ///
    /// # Errors
    /// A bad path, or [`SyncError::S3`].
    /// With a signer, a narinfo without a signature by one of its keys
    /// counts as missing (the export re-signs it).
    pub fn missing(&mut self, paths: &[String]) -> Result<Vec<String>> {
        let keys = self.signer_key_names()?;
        let mut out = Vec::new();
        for p in paths {
            let sp = self.parse(p)?;
            if !matches!(self.in_bucket(&sp, None, keys.as_deref())?, InBucket::Done) {
                out.push(p.clone());
            }
        }
        Ok(out)
    }

    /// The signer's key names, asked once per call of `missing` or
    /// `export` so that a key rotation is seen; `None` without a signer.
    fn signer_key_names(&mut self) -> Result<Option<Vec<String>>> {
        self.signer
            .as_mut()
            .map(SignerSocket::key_names)
            .transpose()
    }

    /// What the bucket holds for `path`. Done: a narinfo that parses, for
    /// this path, whose NAR is there, and with `keys` (the signer's) one of
    /// its signatures is by one of them. Anything else (no narinfo, a
    /// garbage or oversized one, one whose NAR was deleted) is Missing: it
    /// is exported again and the new narinfo replaces the old, so a re-run
    /// repairs the bucket. A whole but unsigned narinfo is Unsigned (to be
    /// re-signed in place) only when `info` (the store DB's) says it
    /// describes the same NAR.
    ///
    /// # Errors
    /// [`SyncError::S3`].
    fn in_bucket(
        &self,
        path: &StorePath,
        info: Option<&PathInfo>,
        keys: Option<&[String]>,
    ) -> Result<InBucket> {
        let key = narinfo_key(path);
        let text = match self.bucket.get_small(&key, MAX_NARINFO)? {
            None => return Ok(InBucket::Missing),
            Some(Ok(text)) => text,
            Some(Err(TooBig(size))) => {
                tracing::warn!(%key, size, "narinfo in the bucket is oversized: exporting again");
                return Ok(InBucket::Missing);
            }
        };
        let narinfo = match String::from_utf8_lossy(&text).parse::<NarInfo>() {
            Ok(narinfo) if narinfo.store_path == *path => narinfo,
            Ok(_) => {
                tracing::warn!(%key, "narinfo in the bucket is for another path: exporting again");
                return Ok(InBucket::Missing);
            }
            Err(e) => {
                tracing::warn!(%key, "narinfo in the bucket does not parse ({e}): exporting again");
                return Ok(InBucket::Missing);
            }
        };
        if narinfo.url.contains("..") || !self.bucket.exists(&narinfo.url)? {
            tracing::warn!(%key, url = %narinfo.url, "narinfo in the bucket names a NAR that is not there: exporting again");
            return Ok(InBucket::Missing);
        }
        let Some(keys) = keys else {
            return Ok(InBucket::Done);
        };
        let signed = narinfo.sigs.iter().any(|sig| {
            sig.split_once(':')
                .is_some_and(|(name, _)| keys.iter().any(|k| k == name))
        });
        if signed {
            return Ok(InBucket::Done);
        }
        match (info, narinfo.file_hash, narinfo.file_size) {
            (Some(info), Some(file_hash), Some(file_size))
                if narinfo.nar_hash == info.nar_hash && narinfo.nar_size == info.nar_size =>
            {
                Ok(InBucket::Unsigned {
                    url: narinfo.url,
                    file_hash,
                    file_size,
                })
            }
            _ => Ok(InBucket::Missing),
        }
    }

    fn parse(&self, path: &str) -> Result<StorePath> {
        let location = self.db.location();
        location
            .parse_path(path.trim_end_matches('/'))
            .map_err(|source| SyncError::BadPath {
                arg: path.to_owned(),
                store_dir: location.store_dir().to_owned(),
                source,
            })
    }

    /// Export the closures of `paths` (full store paths), references first,
    /// skipping what the bucket already has.
    ///
    /// # Errors
    /// The first path that fails stops the export (what was written before
    /// stays: each path is complete on its own).
    pub fn export(&mut self, paths: &[String]) -> Result<ExportReport> {
        self.check()?;
        let roots = paths
            .iter()
            .map(|p| self.parse(p))
            .collect::<Result<Vec<_>>>()?;
        let mut infos = HashMap::new();
        for (path, _) in self.db.closure_blocking(&roots, &|_| true)? {
            let info =
                self.db
                    .path_info_by_path_blocking(&path)?
                    .ok_or_else(|| SyncError::Export {
                        path: self.db.location().display_path(&path),
                        detail: "left the store during the export".into(),
                    })?;
            infos.insert(path, info);
        }
        let keys = self.signer_key_names()?;
        let mut report = ExportReport::default();
        for path in references_first(&infos) {
            let info = &infos[&path];
            match self.in_bucket(&info.path, Some(info), keys.as_deref())? {
                InBucket::Done => {
                    report.present += 1;
                    continue;
                }
                InBucket::Unsigned {
                    url,
                    file_hash,
                    file_size,
                } => {
                    let sums = Sums {
                        nar_hash: info.nar_hash,
                        nar_size: info.nar_size,
                        file_hash,
                        file_size,
                    };
                    self.write_narinfo(info, url, &sums)?;
                    report
                        .resigned
                        .push(self.db.location().display_path(&info.path));
                    continue;
                }
                InBucket::Missing => {}
            }
            let sums = self.export_path(info)?;
            report.nar_bytes += sums.nar_size;
            report.file_bytes += sums.file_size;
            report
                .exported
                .push(self.db.location().display_path(&info.path));
        }
        Ok(report)
    }

    /// Write one path's NAR, listing, log and (last) narinfo.
    fn export_path(&mut self, info: &PathInfo) -> Result<Sums> {
        let location = self.db.location().clone();
        let path_text = location.display_path(&info.path);
        let export_err = |detail: String| SyncError::Export {
            path: path_text.clone(),
            detail,
        };
        let plan = NarPlan::walk(&location.real_path(&info.path))
            .map_err(|e| export_err(e.to_string()))?;
        let mut listing = b"{\"version\":1,\"root\":".to_vec();
        listing.extend_from_slice(&plan.listing_json());
        listing.push(b'}');

        let tmp_key = format!(
            "tmp/{}-{}-{}.nar.zst",
            info.path.hash(),
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let sums = self.upload_nar(plan, &tmp_key, info, &path_text)?;
        let nar_key = format!("nar/{}.nar.zst", sums.file_hash.to_nix32());
        if !self.bucket.exists(&nar_key)? {
            let (from, to) = (
                ObjectPath::from(tmp_key.as_str()),
                ObjectPath::from(nar_key.as_str()),
            );
            self.bucket
                .block_on(self.bucket.store.copy(&from, &to))
                .map_err(|e| {
                    s3_error(
                        &self.bucket.target,
                        &format!("COPY {tmp_key} to {nar_key}"),
                        &e,
                    )
                })?;
        }
        self.bucket.delete(&tmp_key)?;
        self.bucket
            .put(&format!("{}.ls", info.path.hash()), listing)?;
        if let Some(drv) = &info.deriver
            && let Some(log) = read_log(&location, drv).map_err(|e| export_err(e.to_string()))?
        {
            self.bucket.put(&format!("log/{drv}"), log)?;
        }
        self.write_narinfo(info, nar_key, &sums)?;
        tracing::debug!(path = %path_text, nar = sums.nar_size, file = sums.file_size, "exported");
        Ok(sums)
    }

    /// Write `info`'s narinfo naming the NAR at `url`: the store DB's
    /// signatures plus the signer's (a fresh signature, also when the
    /// bucket's narinfo had other ones).
    fn write_narinfo(&mut self, info: &PathInfo, url: String, sums: &Sums) -> Result<()> {
        let mut narinfo = NarInfo {
            store_dir: self.db.location().store_dir().to_owned(),
            store_path: info.path.clone(),
            url,
            compression: "zstd".into(),
            file_hash: Some(sums.file_hash),
            file_size: Some(sums.file_size),
            nar_hash: info.nar_hash,
            nar_size: info.nar_size,
            references: info.references.clone(),
            deriver: info.deriver.clone(),
            sigs: info.sigs.clone(),
            ca: info.ca.clone(),
        };
        if let Some(signer) = &mut self.signer {
            for sig in signer.sign(&narinfo.fingerprint())? {
                if !narinfo.sigs.contains(&sig) {
                    narinfo.sigs.push(sig);
                }
            }
        }
        self.bucket
            .put(&narinfo_key(&info.path), narinfo.to_string().into_bytes())
    }

    /// Dump, compress and upload one NAR to `key`; checked against the DB
    /// before the upload is completed.
    fn upload_nar(
        &self,
        plan: NarPlan,
        key: &str,
        info: &PathInfo,
        path_text: &str,
    ) -> Result<Sums> {
        let target = &self.bucket.target;
        let (level, part_size) = (target.level, target.part_size);
        let (parts_tx, mut parts) = tokio::sync::mpsc::channel::<Bytes>(PARTS_IN_FLIGHT);
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let dumper = std::thread::Builder::new()
            .name("larder-s3-dump".into())
            .spawn(move || {
                let result = dump_compressed(&plan, level, part_size, parts_tx);
                let _ = done_tx.send(result);
            })
            .map_err(|e| SyncError::Export {
                path: path_text.to_owned(),
                detail: format!("cannot start the dump thread: {e}"),
            })?;
        let store = self.bucket.store.clone();
        let location = ObjectPath::from(key);
        let expected = (info.nar_hash, info.nar_size);
        let outcome: std::result::Result<Sums, UploadError> = self.bucket.block_on(async move {
            let first = parts.recv().await;
            let second = match first {
                Some(_) => parts.recv().await,
                None => None,
            };
            // Decide before completing anything: a failed or mismatching
            // dump must never become an object.
            let finish = |result: Result<Sums, String>| -> std::result::Result<Sums, UploadError> {
                let sums = result.map_err(UploadError::Dump)?;
                if (sums.nar_hash, sums.nar_size) != expected {
                    return Err(UploadError::Dump(format!(
                        "its NAR reads as {} ({} bytes) but the store DB says {} ({} bytes): \
                         the path is corrupt or changed; run `nix-store --verify-path` on it",
                        sums.nar_hash, sums.nar_size, expected.0, expected.1
                    )));
                }
                Ok(sums)
            };
            match (first, second) {
                (None, _) => {
                    let r = done
                        .await
                        .unwrap_or_else(|_| Err("the dump thread died".into()));
                    finish(r.and_then(|_| Err("the dump produced no bytes".into())))
                }
                (Some(only), None) => {
                    let r = done
                        .await
                        .unwrap_or_else(|_| Err("the dump thread died".into()));
                    let sums = finish(r)?;
                    store
                        .put(&location, PutPayload::from(only))
                        .await
                        .map_err(UploadError::Store)?;
                    Ok(sums)
                }
                (Some(a), Some(b)) => {
                    let upload = store
                        .put_multipart(&location)
                        .await
                        .map_err(UploadError::Store)?;
                    let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size);
                    let mut next = Some(a);
                    let mut queued = Some(b);
                    while let Some(part) = next {
                        if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                            drop(parts);
                            let _ = writer.abort().await;
                            return Err(UploadError::Store(e));
                        }
                        writer.put(part);
                        next = match queued.take() {
                            Some(q) => Some(q),
                            None => parts.recv().await,
                        };
                    }
                    let r = done
                        .await
                        .unwrap_or_else(|_| Err("the dump thread died".into()));
                    match finish(r) {
                        Ok(sums) => {
                            writer.finish().await.map_err(UploadError::Store)?;
                            Ok(sums)
                        }
                        Err(e) => {
                            let _ = writer.abort().await;
                            Err(e)
                        }
                    }
                }
            }
        });
        let _ = dumper.join();
        outcome.map_err(|e| match e {
            UploadError::Dump(detail) => SyncError::Export {
                path: path_text.to_owned(),
                detail,
            },
            UploadError::Store(e) => {
                s3_error(target, &format!("upload of {path_text} to {key}"), &e)
            }
        })
    }
}

enum UploadError {
    Dump(String),
    Store(object_store::Error),
}

/// `<hash>.narinfo`.
pub fn narinfo_key(path: &StorePath) -> String {
    format!("{}.narinfo", path.hash())
}

/// The producer: NAR bytes → SHA-256 + length → zstd → SHA-256 + length →
/// parts of `part_size` bytes on `parts` (blocking when two wait).
fn dump_compressed(
    plan: &NarPlan,
    level: i32,
    part_size: usize,
    parts: tokio::sync::mpsc::Sender<Bytes>,
) -> Result<Sums, String> {
    let sink = PartSink {
        parts,
        buf: Vec::with_capacity(part_size),
        part_size,
        hash: Sha256::new(),
        len: 0,
    };
    let encoder = zstd::Encoder::new(sink, level).map_err(|e| e.to_string())?;
    let mut nar = Hashing {
        inner: encoder,
        hash: Sha256::new(),
        len: 0,
    };
    plan.write_to(&mut nar).map_err(|e| e.to_string())?;
    let Hashing {
        inner: encoder,
        hash: nar_hash,
        len: nar_size,
    } = nar;
    let mut sink = encoder.finish().map_err(|e| e.to_string())?;
    sink.send_buffer().map_err(|e| e.to_string())?;
    Ok(Sums {
        nar_hash: Sha256Hash(nar_hash.finalize().into()),
        nar_size,
        file_hash: Sha256Hash(sink.hash.finalize().into()),
        file_size: sink.len,
    })
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The compressed side: hashes, counts, and cuts the bytes into parts.
struct PartSink {
    parts: tokio::sync::mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    part_size: usize,
    hash: Sha256,
    len: u64,
}

impl PartSink {
    fn send_buffer(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let part = std::mem::replace(&mut self.buf, Vec::with_capacity(self.part_size));
        self.parts
            .blocking_send(Bytes::from(part))
            .map_err(|_| std::io::Error::other("the upload stopped"))
    }
}

impl Write for PartSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.part_size - self.buf.len();
        let n = buf.len().min(room);
        self.buf.extend_from_slice(&buf[..n]);
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        if self.buf.len() == self.part_size {
            self.send_buffer()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The build log of `drv` from `<state>/log/nix/drvs/<2>/<rest>[.bz2]`,
/// decompressed (a plain HTTP cache has no Content-Encoding to say bzip2).
fn read_log(location: &StoreLocation, drv: &StorePath) -> std::io::Result<Option<Vec<u8>>> {
    let name = drv.to_string();
    let base = location.log_dir().join(&name[..2]).join(&name[2..]);
    match std::fs::read(&base) {
        Ok(text) => return Ok(Some(text)),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let mut bz2 = base.into_os_string();
    bz2.push(".bz2");
    match std::fs::File::open(&bz2) {
        Ok(file) => {
            let mut text = Vec::new();
            bzip2::read::BzDecoder::new(file).read_to_end(&mut text)?;
            Ok(Some(text))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The paths of `infos` ordered so that each comes after its references
/// (self-references aside); ties in path order, so exports are repeatable.
fn references_first(infos: &HashMap<StorePath, PathInfo>) -> Vec<StorePath> {
    let mut order = Vec::with_capacity(infos.len());
    let mut done: HashSet<&StorePath> = HashSet::new();
    let mut starts: Vec<&StorePath> = infos.keys().collect();
    starts.sort();
    for start in starts {
        // Iterative post-order walk: (path, next reference index).
        let mut stack = vec![(start, 0usize)];
        while let Some((path, i)) = stack.pop() {
            if i == 0 && done.contains(path) {
                continue;
            }
            let refs = &infos[path].references;
            match refs.get(i) {
                Some(r) => {
                    stack.push((path, i + 1));
                    if r != path && infos.contains_key(r) && !done.contains(r) {
                        stack.push((r, 0));
                    }
                }
                None => {
                    if done.insert(path) {
                        order.push(path.clone());
                    }
                }
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_cut_at_part_size_and_hashed_whole() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let mut sink = PartSink {
            parts: tx,
            buf: Vec::new(),
            part_size: 4,
            hash: Sha256::new(),
            len: 0,
        };
        sink.write_all(b"0123456789").unwrap();
        sink.send_buffer().unwrap();
        let mut got = Vec::new();
        while let Ok(p) = rx.try_recv() {
            got.push(p.to_vec());
        }
        assert_eq!(got, [b"0123".to_vec(), b"4567".to_vec(), b"89".to_vec()]);
        assert_eq!(sink.len, 10);
        assert_eq!(
            Sha256Hash(sink.hash.finalize().into()),
            Sha256Hash::digest(b"0123456789")
        );
    }
}
