//! GC roots for pulled closures: `<gc-root-dir>/<builder>/<name>`, each an
//! indirect root registered with the local store (so its garbage collector
//! keeps the closure), and retention that removes old ones. Removing a root
//! is removing its symlink: the store's `gcroots/auto` entry then dangles
//! and Nix's next GC drops it and reclaims the space.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{Result, SyncError};
use crate::nix::{self, LocalStore};

/// Which roots of a builder to keep. The newest root is always kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub keep_last: Option<usize>,
    pub max_age: Option<Duration>,
}

/// Root `path` as `<dir>/<name>` (replacing an older root of that name).
pub fn add(local: &LocalStore, dir: &Path, name: &str, path: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|source| SyncError::GcRoot {
        path: dir.to_owned(),
        source,
    })?;
    let link = dir.join(name);
    nix::add_root(local, path, &link)?;
    Ok(link)
}

/// Remove the roots in `dir` that `retention` no longer keeps; returns them.
pub fn prune(dir: &Path, retention: Retention) -> Result<Vec<PathBuf>> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| SyncError::GcRoot { path, source }
    };
    let mut roots = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let meta = std::fs::symlink_metadata(entry.path()).map_err(io_err(&entry.path()))?;
        if meta.file_type().is_symlink() {
            let mtime = meta.modified().map_err(io_err(&entry.path()))?;
            roots.push((entry.path(), mtime));
        }
    }
    let expired = expired(roots, retention, SystemTime::now());
    for root in &expired {
        std::fs::remove_file(root).map_err(io_err(root))?;
        tracing::info!(root = %root.display(), "removed GC root (retention)");
    }
    Ok(expired)
}

/// The roots to remove: beyond the newest `keep_last`, or older than
/// `max_age`; never the newest one.
pub fn expired(
    mut roots: Vec<(PathBuf, SystemTime)>,
    retention: Retention,
    now: SystemTime,
) -> Vec<PathBuf> {
    roots.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    roots
        .into_iter()
        .enumerate()
        .skip(1)
        .filter(|(i, (_, mtime))| {
            let too_many = retention.keep_last.is_some_and(|n| *i >= n);
            let too_old = retention
                .max_age
                .is_some_and(|max| now.duration_since(*mtime).unwrap_or_default() > max);
            too_many || too_old
        })
        .map(|(_, (path, _))| path)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots(ages: &[u64], now: SystemTime) -> Vec<(PathBuf, SystemTime)> {
        ages.iter()
            .map(|a| {
                (
                    PathBuf::from(format!("r{a}")),
                    now - Duration::from_secs(*a),
                )
            })
            .collect()
    }

    #[test]
    fn keeps_the_last_n_and_the_young() {
        let now = SystemTime::now();
        let all = roots(&[30, 10, 20, 40], now);
        let keep2 = Retention {
            keep_last: Some(2),
            max_age: None,
        };
        assert_eq!(
            expired(all.clone(), keep2, now),
            [PathBuf::from("r30"), PathBuf::from("r40")]
        );
        let young = Retention {
            keep_last: None,
            max_age: Some(Duration::from_secs(25)),
        };
        assert_eq!(
            expired(all.clone(), young, now),
            [PathBuf::from("r30"), PathBuf::from("r40")]
        );
        assert!(expired(all, Retention::default(), now).is_empty());
    }

    #[test]
    fn the_newest_root_is_never_removed() {
        let now = SystemTime::now();
        let old = roots(&[1000, 2000], now);
        let strict = Retention {
            keep_last: Some(0),
            max_age: Some(Duration::from_secs(1)),
        };
        assert_eq!(expired(old, strict, now), [PathBuf::from("r2000")]);
    }
}
