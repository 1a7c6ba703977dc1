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

use super::bucket::{Bucket, MAX_NARINFO, TooBig, s3_error};
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
        .as_secs();
    let young = |m: &ObjectMeta| is_young(now, m.last_modified.timestamp(), grace);
    let mut report = GcReport::default();
    let delete = |m: &ObjectMeta, report: &mut GcReport| -> Result<()> {
        if !dry_run {
            bucket.delete_path(&m.location)?;
        }
        report.deleted.push(m.location.to_string());
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
            delete(m, &mut report)?;
        }
    }

    // What the remaining narinfos name.
    let mut nars: HashSet<String> = HashSet::new();
    let mut logs: HashSet<String> = HashSet::new();
    for hash in &remaining {
        let key = format!("{hash}.narinfo");
        let Some(body) = bucket.get_small(&key, MAX_NARINFO)? else {
            continue;
        };
        let named = match body {
            Err(TooBig(size)) => Err(format!("it is {size} bytes, over {MAX_NARINFO}")),
            Ok(text) => String::from_utf8_lossy(&text)
                .parse::<NarInfo>()
                .map_err(|e| e.to_string())
                .and_then(|info| match nar_key(&info.url) {
                    Some(nar) => Ok((nar.to_owned(), info.deriver)),
                    None => Err(format!("its URL {:?} is not nar/<file>", info.url)),
                }),
        };
        match named {
            Ok((nar, deriver)) => {
                nars.insert(nar);
                if let Some(d) = deriver {
                    logs.insert(format!("log/{d}"));
                }
            }
            // Unreadable, or naming its NAR in a way this GC does not
            // follow: keep whatever it might name (every NAR stays).
            Err(e) => {
                tracing::warn!(%key, "kept narinfo not understood, keeping all NARs and logs: {e}");
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
            delete(m, &mut report)?;
        }
    }
    Ok(report)
}

/// Phase 2 when some kept narinfo is not understood: only listings and
/// abandoned uploads go.
fn finish_without_nars(
    objects: &[ObjectMeta],
    remaining: &HashSet<String>,
    young: &dyn Fn(&ObjectMeta) -> bool,
    mut delete: impl FnMut(&ObjectMeta, &mut GcReport) -> Result<()>,
    mut report: GcReport,
) -> Result<GcReport> {
    for m in objects {
        let key = m.location.as_ref();
        let unused = key.starts_with("tmp/")
            || key
                .strip_suffix(".ls")
                .is_some_and(|h| is_hash(h) && !remaining.contains(h));
        if unused && !young(m) {
            delete(m, &mut report)?;
        }
    }
    Ok(report)
}

/// The bucket key of a narinfo's `URL` when it is the plain `nar/<file>`
/// larder writes; `None` for anything a client would resolve elsewhere
/// (`nar/../x`, `./nar/x`, `nar//x`, an absolute URL, escapes).
fn nar_key(url: &str) -> Option<&str> {
    let file = url.strip_prefix("nar/")?;
    let plain = !file.is_empty()
        && file != "."
        && file != ".."
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'+'));
    plain.then_some(url)
}

/// Whether an object modified at `modified` (Unix seconds) is younger than
/// `grace` at `now`. In i128: `--grace-secs` is any u64, and a grace over
/// i64::MAX cast to i64 went negative and made every object old. An object
/// from the future (a skewed clock) is young.
fn is_young(now: u64, modified: i64, grace: Duration) -> bool {
    i128::from(now) - i128::from(modified) < i128::from(grace.as_secs())
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

    #[test]
    fn the_grace_period_holds_for_any_length_and_any_clock() {
        let day = Duration::from_secs(86_400);
        assert!(is_young(1_000_000, 1_000_000 - 10, day));
        assert!(!is_young(1_000_000, 1_000_000 - 86_400, day));
        assert!(is_young(1_000_000, 0, Duration::from_secs(u64::MAX)));
        assert!(is_young(1_000_000, i64::MIN, Duration::from_secs(u64::MAX)));
        assert!(is_young(1_000_000, 2_000_000, Duration::ZERO));
        assert!(!is_young(1_000_000, 1_000_000, Duration::ZERO));
    }

    #[test]
    fn only_plain_nar_urls_are_followed() {
        for url in ["nar/1abc.nar.zst", "nar/x.nar", "nar/a_b-c+d.nar.xz"] {
            assert_eq!(nar_key(url), Some(url));
        }
        for url in [
            "nar/",
            "nar/..",
            "nar/../nix-cache-info",
            "nar//x.nar",
            "./nar/x.nar",
            "/nar/x.nar",
            "nar/x.nar?y",
            "nar/x%2enar",
            "nar/sub/x.nar",
            "https://elsewhere/nar/x.nar",
            "nix-cache-info",
            "",
        ] {
            assert_eq!(nar_key(url), None, "{url}");
        }
    }
}
