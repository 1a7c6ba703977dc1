//! Rooting arrivals so the cache host's garbage collector keeps them.
//!
//! Layout (the retention policy works over it): one symlink per arrived
//! path, `<gc-root-dir>/receive-<pusher>/<store path basename>` →
//! `<store dir>/<basename>`. With the default `--gc-root-dir`
//! (`<store-root>/nix/var/nix/gcroots/larder`) Nix's GC finds the links
//! itself. The link is made *before* the import (so no GC can run between
//! registration and rooting) and its mtime is the time of the latest push.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use larder_store::StorePath;

/// A root made by [`root_arrival`].
#[derive(Debug)]
pub struct ArrivalRoot {
    pub link: PathBuf,
    /// False when the link already existed (a re-push): then a failed
    /// import must not remove it.
    pub created: bool,
}

impl ArrivalRoot {
    /// Undo a root this push created (its import failed).
    pub fn undo(self) {
        if self.created {
            let _ = fs::remove_file(&self.link);
        }
    }
}

/// Root `path` for pusher `source`: create
/// `<dir>/receive-<source>/<basename>` → `<store_dir>/<basename>`, or touch
/// its mtime if it exists. Safe against concurrent calls for one path.
pub fn root_arrival(
    dir: &Path,
    source: &str,
    store_dir: &str,
    path: &StorePath,
) -> io::Result<ArrivalRoot> {
    let pusher_dir = dir.join(format!("receive-{source}"));
    fs::create_dir_all(&pusher_dir)?;
    let link = pusher_dir.join(path.to_string());
    let target = format!("{store_dir}/{path}");
    match std::os::unix::fs::symlink(&target, &link) {
        Ok(()) => Ok(ArrivalRoot {
            link,
            created: true,
        }),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if fs::read_link(&link)? != Path::new(&target) {
                // Not ours to interpret: replace it atomically.
                let tmp = pusher_dir.join(format!(".{path}.tmp"));
                let _ = fs::remove_file(&tmp);
                std::os::unix::fs::symlink(&target, &tmp)?;
                fs::rename(&tmp, &link)?;
            }
            touch_link(&link)?;
            Ok(ArrivalRoot {
                link,
                created: false,
            })
        }
        Err(e) => Err(e),
    }
}

/// Give a symlink a fresh mtime. std cannot set a symlink's own times
/// (it follows the link into the read-only store), so the link is
/// re-created next to it and renamed over it: the root never disappears.
fn touch_link(link: &Path) -> io::Result<()> {
    let target = fs::read_link(link)?;
    let dir = link.parent().unwrap_or(Path::new("."));
    let name = link.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.touch"));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp)?;
    fs::rename(&tmp, link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_once_touches_on_repush_and_undoes_only_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = StorePath::from_basename("m28i9qy4zq4nwkz5cz3gj6ivani791d8-smoke").unwrap();
        let first = root_arrival(dir.path(), "ci", "/nix/store", &path).unwrap();
        assert!(first.created);
        let link = dir
            .path()
            .join("receive-ci/m28i9qy4zq4nwkz5cz3gj6ivani791d8-smoke");
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new("/nix/store/m28i9qy4zq4nwkz5cz3gj6ivani791d8-smoke")
        );
        let again = root_arrival(dir.path(), "ci", "/nix/store", &path).unwrap();
        assert!(!again.created);
        again.undo();
        assert!(fs::symlink_metadata(&link).is_ok());
        first.undo();
        assert!(fs::symlink_metadata(&link).is_err());
    }
}
