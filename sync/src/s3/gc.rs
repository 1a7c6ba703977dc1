//! Bucket GC by roots: delete what the kept roots no longer reach.
//!
//! The caller gives the set of store paths to keep (the closures of
//! larder's GC roots, whose retention `roots --prune` / `keep` / `receive`
//! already apply, plus any `--root`). Then, in two phases so that a reader
//! never finds a narinfo whose NAR is gone:
//! 1. every `<hash>.narinfo` whose path is not kept is deleted;
//! 2. every `nar/…` no remaining narinfo names, every `<hash>.ls` whose
//!    narinfo is gone, every `log/<drv>` no remaining narinfo names as
//!    Deriver, and every `tmp/…` (an abandoned upload) is deleted.
//!
//! Nothing younger than the grace period is touched in either phase: an
//! export in flight writes its NAR before its narinfo, so its NAR is young
//! until its narinfo exists (and then names it). `nix-cache-info` is never
//! deleted; keys larder does not write are left alone.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::TryStreamExt;
use larder_store::narinfo::NarInfo;
use object_store::{ObjectMeta, ObjectStore};

use super::bucket::{Bucket, s3_error};
use crate::error::Result;

/// What a GC run deleted (or, dry, would delete).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Keys in the order they were (or would be) deleted.
    pub deleted: Vec<String>,
    /// Narinfos kept.
    pub kept: usize,
    /// Objects spared because they are younger than the grace period.
    pub young: usize,
}

/// Collect `bucket`: keep the narinfos of `keep` (store path hash parts).
/// With `dry_run`, nothing is deleted and the report lists what would be.
///
/// # Errors
/// [`crate::SyncError::S3`]: listing, reading or deleting failed (what was
/// deleted before stays deleted; a second run finishes the job).
pub fn collect(
    bucket: &Bucket,
    keep: &HashSet<String>,
    grace: Duration,
    dry_run: bool,
) -> Result<GcReport> {
    let objects: Vec<ObjectMeta> = bucket
        .block_on(bucket.store.list(None).try_collect())
        .map_err(|e| s3_error(&bucket.target, "LIST", &e))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let young = |m: &ObjectMeta| now - m.last_modified.timestamp() < grace.as_secs() as i64;
    let mut report = GcReport::default();
    let delete = |key: &str, report: &mut GcReport| -> Result<()> {
        if !dry_run {
            bucket.delete(key)?;
        }
        report.deleted.push(key.to_owned());
        Ok(())
    };

    // Phase 1: narinfos.
    let mut remaining: HashSet<String> = HashSet::new();
    for m in &objects {
        let key = m.location.as_ref();
        let Some(hash) = narinfo_hash(key) else {
            continue;
        };
        if keep.contains(hash) {
            report.kept += 1;
            remaining.insert(hash.to_owned());
        } else if young(m) {
            report.young += 1;
            remaining.insert(hash.to_owned());
        } else {
            delete(key, &mut report)?;
        }
    }

    // What the remaining narinfos name.
    let mut nars: HashSet<String> = HashSet::new();
    let mut logs: HashSet<String> = HashSet::new();
    for hash in &remaining {
        let key = format!("{hash}.narinfo");
        let Some(text) = bucket.get(&key)? else {
            continue;
        };
        match String::from_utf8_lossy(&text).parse::<NarInfo>() {
            Ok(info) => {
                nars.insert(info.url);
                if let Some(d) = info.deriver {
                    logs.insert(format!("log/{d}"));
                }
            }
            // Unreadable: keep whatever it might name (every NAR stays).
            Err(e) => {
                tracing::warn!(%key, "narinfo does not parse, keeping all NARs: {e}");
                return finish_without_nars(&objects, &remaining, &young, delete, report);
            }
        }
    }

    // Phase 2: what hangs off narinfos.
    for m in &objects {
        let key = m.location.as_ref();
        let unused = if key.starts_with("nar/") {
            !nars.contains(key)
        } else if key.starts_with("log/") {
            !logs.contains(key)
        } else if key.starts_with("tmp/") {
            true
        } else if let Some(hash) = key.strip_suffix(".ls").filter(|h| is_hash(h)) {
            !remaining.contains(hash)
        } else {
            false
        };
        if !unused {
            continue;
        }
        if young(m) {
            report.young += 1;
        } else {
            delete(key, &mut report)?;
        }
    }
    Ok(report)
}

/// Phase 2 when some kept narinfo is unreadable: only listings go.
fn finish_without_nars(
    objects: &[ObjectMeta],
    remaining: &HashSet<String>,
    young: &dyn Fn(&ObjectMeta) -> bool,
    mut delete: impl FnMut(&str, &mut GcReport) -> Result<()>,
    mut report: GcReport,
) -> Result<GcReport> {
    for m in objects {
        let key = m.location.as_ref();
        if let Some(hash) = key.strip_suffix(".ls").filter(|h| is_hash(h))
            && !remaining.contains(hash)
            && !young(m)
        {
            delete(key, &mut report)?;
        }
    }
    Ok(report)
}

/// The hash part of a `<hash32>.narinfo` key.
fn narinfo_hash(key: &str) -> Option<&str> {
    key.strip_suffix(".narinfo").filter(|h| is_hash(h))
}

fn is_hash(s: &str) -> bool {
    s.len() == 32 && s.parse::<larder_store::StorePathHash>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hash_named_narinfos_count() {
        let h = "0123456789abcdfghijklmnpqrsvwxyz";
        assert_eq!(narinfo_hash(&format!("{h}.narinfo")), Some(h));
        assert_eq!(narinfo_hash("nix-cache-info"), None);
        assert_eq!(narinfo_hash("tmp/x.narinfo"), None);
        assert_eq!(
            narinfo_hash("0123456789abcdfghijklmnpqrsvwxye.narinfo"),
            None
        );
    }
}
