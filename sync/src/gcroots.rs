//! GC roots for pulled closures: `<gc-root-dir>/<builder>/<name>`, each an
//! indirect root registered with the local store (so its garbage collector
//! keeps the closure), and retention that removes old ones. Removing a root
//! is removing its symlink: the store's `gcroots/auto` entry then dangles
//! and Nix's next GC drops it and reclaims the space. Which roots go is
//! decided in [`crate::retention`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Result, SyncError};
use crate::nix::{self, LocalStore};

/// Which roots of a source to keep (see [`crate::retention`]): the newest
/// `keep_last` distinct closures and/or those that arrived within
/// `max_age`. The newest closure is always kept; neither set keeps all.
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

/// A fresh name beside `<dir>/<name>` for a temporary link that is then
/// renamed over it: `.<name>.tmp-<pid>-<n>`, with `n` counted per process,
/// so concurrent replacements of one link (two threads, or two processes
/// sharing the directory) never remove or rename each other's temporary.
pub fn temporary_name(dir: &Path, name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Whether `name` is one of [`temporary_name`]'s: not a root of its own,
/// only a moment's stand-in for one.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// Remove the root `link` only if its mtime is still `planned`, the time
/// a retention pass decided on; true when it went.
///
/// A renewal (a re-push or a receiver's narinfo 200) renames a fresh link
/// over `link` at any moment, and the pusher is told the path is kept, so
/// checking the mtime and then unlinking would lose a renewal that lands
/// between the two calls (1 in 3 000 renewals under a pass a second).
/// Instead the link is first renamed aside (atomic: whatever is at `link`
/// then is what this call holds, still a symlink beside it, and a later
/// renewal makes a new `link`), and its mtime judged there: unchanged, it
/// is removed; renewed, it is linked back unless a newer one is already
/// in place.
pub fn remove_unless_renewed(link: &Path, planned: std::time::SystemTime) -> std::io::Result<bool> {
    use std::io::ErrorKind::{AlreadyExists, NotFound};
    let dir = link.parent().unwrap_or(Path::new("."));
    let name = link.file_name().unwrap_or_default().to_string_lossy();
    let aside = temporary_name(dir, &name);
    match std::fs::rename(link, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    let renewed = std::fs::symlink_metadata(&aside)
        .and_then(|m| m.modified())
        .map_or(true, |t| t != planned);
    if renewed {
        // A hard link of the symlink itself (linkat without
        // AT_SYMLINK_FOLLOW) fails with EEXIST if a newer root is there.
        match std::fs::hard_link(&aside, link) {
            Ok(()) => {}
            Err(e) if e.kind() == AlreadyExists => {}
            Err(e) => {
                let _ = std::fs::rename(&aside, link);
                return Err(e);
            }
        }
    }
    std::fs::remove_file(&aside)?;
    Ok(!renewed)
}

/// Make `<dir>/<name>` a symlink to `path`, atomically (a temporary link
/// renamed over the old one), so a root never disappears while it is
/// replaced. It is a GC root by itself only under the store's
/// `gcroots` directory; elsewhere use [`add`].
pub fn link(dir: &Path, name: &str, path: &str) -> Result<PathBuf> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| SyncError::GcRoot { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let link = dir.join(name);
    let tmp = temporary_name(dir, name);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(path, &tmp).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &link).map_err(io_err(&link))?;
    Ok(link)
}

/// Whether `dir` lies under the store's own GC-root directory
/// (`<root>/nix/var/nix/gcroots`), where a plain symlink is a root.
pub fn under_store_gcroots(location: &larder_store::StoreLocation, dir: &Path) -> bool {
    dir.starts_with(location.state_dir().join("gcroots"))
}

/// Root `path` as `<dir>/<name>`: a plain symlink under the store's
/// `gcroots` directory, an indirect root (`nix-store --add-root`) elsewhere.
pub fn root(local: &LocalStore, dir: &Path, name: &str, path: &str) -> Result<PathBuf> {
    let location = larder_store::StoreLocation::new(local.root());
    if under_store_gcroots(&location, dir) {
        link(dir, name, path)
    } else {
        add(local, dir, name, path)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, utimensat};

    use super::*;

    /// Give the symlink `link` itself the mtime `secs` after the epoch.
    fn backdate(link: &Path, secs: i64) -> SystemTime {
        let t = Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        };
        let times = Timestamps {
            last_access: t,
            last_modification: t,
        };
        utimensat(CWD, link, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
    }

    /// A renewal (a fresh link renamed over the root) racing a removal
    /// planned on the old mtime: whichever lands first, the root is there
    /// once the renewal returned, and nothing is left beside it.
    #[test]
    fn a_renewal_racing_a_removal_is_never_lost() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("p");
        for round in 0..400 {
            let _ = std::fs::remove_file(&root);
            std::os::unix::fs::symlink("/nix/store/p", &root).unwrap();
            let planned = backdate(&root, 1_000_000_000);
            // Both start together; the removal waits a little longer each round
            // (0 to ~4 000 spins), so the two calls interleave every way.
            let start = std::sync::Barrier::new(2);
            std::thread::scope(|s| {
                s.spawn(|| {
                    start.wait();
                    for _ in 0..(round % 40) * 100 {
                        std::hint::spin_loop();
                    }
                    remove_unless_renewed(&root, planned).unwrap();
                });
                s.spawn(|| {
                    start.wait();
                    link(dir.path(), "p", "/nix/store/p").unwrap();
                });
            });
            assert!(std::fs::symlink_metadata(&root).is_ok(), "round {round}");
            let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
            assert_eq!(names.len(), 1, "round {round}: {names:?}");
        }
    }

    #[test]
    fn only_an_unrenewed_root_goes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("p");
        std::os::unix::fs::symlink("/nix/store/p", &root).unwrap();
        let planned = backdate(&root, 1_000_000_000);
        assert!(!remove_unless_renewed(&root, planned + Duration::from_secs(1)).unwrap());
        assert_eq!(
            std::fs::read_link(&root).unwrap(),
            Path::new("/nix/store/p")
        );
        assert!(remove_unless_renewed(&root, planned).unwrap());
        assert!(!remove_unless_renewed(&root, planned).unwrap(), "gone");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(is_temporary(".p.tmp-12-3") && !is_temporary("p") && !is_temporary(".p"));
    }
}
