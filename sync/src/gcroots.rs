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
