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

use crate::gcroots;

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
        // A re-push: a fresh link renamed over the old one gives it a new
        // mtime (std cannot set a symlink's own times without following it
        // into the read-only store), and the right target whatever the old
        // link said; the root never disappears. Should retention have taken
        // the old link meanwhile, the rename makes it again.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            gcroots::replace_link(&pusher_dir, &path.to_string(), Path::new(&target))?;
            Ok(ArrivalRoot {
                link,
                created: false,
            })
        }
        Err(e) => Err(e),
    }
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

    #[test]
    fn concurrent_roots_of_one_path_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = StorePath::from_basename("m28i9qy4zq4nwkz5cz3gj6ivani791d8-smoke").unwrap();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..200 {
                        root_arrival(dir.path(), "ci", "/nix/store", &path).unwrap();
                    }
                });
            }
        });
        // One link, no temporaries left behind.
        let names: Vec<_> = fs::read_dir(dir.path().join("receive-ci"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["m28i9qy4zq4nwkz5cz3gj6ivani791d8-smoke"]);
    }
}
