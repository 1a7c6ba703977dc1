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
    parse_temporary(name).is_some()
}

/// The root a [`temporary_name`] stands in for, and the pid that made it:
/// `.<name>.tmp-<pid>-<n>`, nothing looser (a user's `.notes.tmp-old`
/// is not ours).
fn parse_temporary(name: &str) -> Option<(&str, u32)> {
    let (root, tail) = name.strip_prefix('.')?.rsplit_once(".tmp-")?;
    let (pid, n) = tail.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if root.is_empty() || !digits(pid) || !digits(n) {
        return None;
    }
    Some((root, pid.parse().ok()?))
}

/// A temporary older than this was left by a crash whatever its pid says
/// (a pid reused since, or one of another pid namespace): the moves it
/// stands in for last microseconds. Its ctime is when it got its name.
const STALE_TEMPORARY: Duration = Duration::from_secs(3600);

/// Put back what a process killed in the middle of replacing or removing
/// a root of `dir` left there; returns the temporaries it took.
///
/// [`remove_unless_renewed`] renames a root aside before it judges it, and
/// a root is replaced by renaming a fresh link over it: kill -9 between
/// the two steps (seen in 15 of 40 receivers killed during a pass) leaves
/// `.<name>.tmp-<pid>-<n>`, which Nix's GC still takes as a root under
/// `gcroots` but which retention never lists, so its path was kept
/// forever; and a root renewed, then renamed aside, had lost its name (for
/// an indirect root outside `gcroots`, its rooting). Each such temporary
/// is put back under its name unless a root is there already, and then
/// removed: a root that was due to go is ranked again and goes, a renewed
/// one stays, nothing kept is lost. Only temporaries of processes that
/// are gone are taken (this process's own too when `at_startup`, before
/// it has made any: a restarted service in a container often gets its old
/// pid again), or any older than an hour. Best effort: one that cannot be
/// put back is logged and left.
pub fn recover_temporaries(dir: &Path, at_startup: bool) -> std::io::Result<Vec<PathBuf>> {
    use std::io::ErrorKind::{AlreadyExists, NotFound};
    use std::os::unix::fs::MetadataExt;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let me = std::process::id();
    let mut taken = Vec::new();
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some((name, pid)) = file_name.to_str().and_then(parse_temporary) else {
            continue;
        };
        let tmp = entry.path();
        let meta = match std::fs::symlink_metadata(&tmp) {
            Ok(m) => m,
            Err(e) if e.kind() == NotFound => continue,
            Err(e) => return Err(e),
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        let named =
            std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(meta.ctime()).unwrap_or(0));
        let old = named + STALE_TEMPORARY <= std::time::SystemTime::now();
        let gone = if pid == me {
            at_startup
        } else {
            !process_alive(pid)
        };
        if !(gone || old) {
            continue;
        }
        // A hard link of the symlink itself: EEXIST if a root is there.
        let put_back = match std::fs::hard_link(&tmp, dir.join(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == AlreadyExists => Ok(()),
            Err(e) if e.kind() == NotFound => continue, // taken meanwhile
            Err(e) => Err(e),
        };
        let done = put_back.and_then(|()| match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != NotFound => Err(e),
            _ => Ok(()),
        });
        match done {
            Ok(()) => taken.push(tmp),
            Err(e) => tracing::warn!(
                temporary = %tmp.display(),
                "cannot put back a root left by an interrupted move: {e}"
            ),
        }
    }
    Ok(taken)
}

/// Whether process `pid` runs here; without `/proc` every pid looks alive
/// (only age then counts).
fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
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
    replace_link(dir, name, Path::new(path)).map_err(io_err(&link))?;
    Ok(link)
}

/// Make `<dir>/<name>` a symlink to `target` by renaming a fresh link over
/// it (or into place): the root never disappears, and the new link has a
/// fresh mtime. The temporary's name is unique to this call
/// ([`temporary_name`]): with one shared name, concurrent replacements of
/// one link removed or renamed each other's temporary (ENOENT, a 500 on
/// the narinfo PUT; found by 20 concurrent `nix copy`, `load_push_storm`).
pub fn replace_link(dir: &Path, name: &str, target: &Path) -> std::io::Result<()> {
    let tmp = temporary_name(dir, name);
    // Only a crash of a process with this pid long ago left one.
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, dir.join(name)).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
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

    /// A pid no process has any more: a child that ran and was reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    }

    /// What kill -9 leaves between the two steps of a move: a root renamed
    /// aside and never removed, one renamed aside while renewed and never
    /// linked back, a fresh link never renamed over its root. Each is put
    /// back (or dropped beside a root already there); what a live process
    /// is moving, and what is no temporary of ours, stays as it is.
    #[test]
    fn what_a_killed_process_left_mid_move_is_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let sym =
            |name: &str, target: &str| std::os::unix::fs::symlink(target, d.join(name)).unwrap();
        let dead = dead_pid();
        let me = std::process::id();
        // Renamed aside, its name free: put back with its old mtime.
        sym(&format!(".aside.tmp-{dead}-0"), "/nix/store/aside");
        let old = backdate(&d.join(format!(".aside.tmp-{dead}-0")), 1_000_000_000);
        // A fresh link beside a root that is still there: dropped.
        sym("kept", "/nix/store/kept");
        sym(&format!(".kept.tmp-{dead}-1"), "/nix/store/kept");
        // Moving now (this process), not ours, or no symlink: left alone.
        sym(&format!(".live.tmp-{me}-2"), "/nix/store/live");
        sym(".user.tmp-notes", "/nix/store/user");
        std::fs::write(d.join(format!(".file.tmp-{dead}-3")), "x").unwrap();

        let taken = recover_temporaries(d, false).unwrap();
        assert_eq!(taken.len(), 2, "{taken:?}");
        let aside = d.join("aside");
        assert_eq!(
            std::fs::read_link(&aside).unwrap(),
            Path::new("/nix/store/aside")
        );
        assert_eq!(
            std::fs::symlink_metadata(&aside)
                .unwrap()
                .modified()
                .unwrap(),
            old
        );
        let mut names: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let expected = [
            format!(".file.tmp-{dead}-3"),
            format!(".live.tmp-{me}-2"),
            ".user.tmp-notes".to_owned(),
            "aside".to_owned(),
            "kept".to_owned(),
        ];
        assert_eq!(names, expected);
        // Started afresh, this pid's own temporaries are a crash's too.
        assert_eq!(recover_temporaries(d, true).unwrap().len(), 1);
        assert_eq!(
            std::fs::read_link(d.join("live")).unwrap(),
            Path::new("/nix/store/live")
        );
        assert!(
            recover_temporaries(&d.join("absent"), true)
                .unwrap()
                .is_empty()
        );
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
        for not_ours in [
            ".p.tmp-",
            ".p.tmp-12",
            ".p.tmp-x-3",
            "..tmp-1-2",
            "p.tmp-1-2",
            ".p.tmp-1-2x",
        ] {
            assert!(!is_temporary(not_ours), "{not_ours}");
        }
    }
}
