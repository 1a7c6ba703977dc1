//! Where a store is: the store dir clients see, and where its files and DB
//! really live. For the host store both agree (`/nix/store` under `/`); for a
//! chroot store (`nix --store /tmp/x`) the DB records `/nix/store/...` while
//! the files live in `/tmp/x/nix/store`.

use std::path::{Path, PathBuf};

use crate::path::{StorePath, StorePathError};

/// A store's logical dir (what paths are called, e.g. `/nix/store`) and its
/// root (where `<store dir>` and `nix/var/nix` really are on disk). Mirrors
/// the `store` and `real` settings of Nix's local store
/// (`src/libstore/local-fs-store.hh`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLocation {
    /// The store dir recorded in the DB and announced to clients.
    store_dir: String,
    /// The directory under which `store_dir` and `nix/var` really are.
    root: PathBuf,
}

impl StoreLocation {
    /// The store dir Nix uses unless built otherwise.
    pub const DEFAULT_STORE_DIR: &'static str = "/nix/store";

    /// A store whose logical dir is `/nix/store`, rooted at `root` (`/` for the host store).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_store_dir(root, Self::DEFAULT_STORE_DIR)
    }

    /// A store whose logical dir is `store_dir` (a trailing `/` is
    /// dropped), rooted at `root`.
    pub fn with_store_dir(root: impl Into<PathBuf>, store_dir: &str) -> Self {
        StoreLocation {
            store_dir: store_dir.trim_end_matches('/').to_owned(),
            root: root.into(),
        }
    }

    /// The logical store dir, without trailing `/`: what the DB records and
    /// clients see.
    pub fn store_dir(&self) -> &str {
        &self.store_dir
    }

    /// The directory the store's files and state really lie under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<rel>` for an absolute `rel` such as `/nix/store`.
    fn under_root(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// The directory that really holds the store's files.
    pub fn real_store_dir(&self) -> PathBuf {
        self.under_root(&self.store_dir)
    }

    /// The real location of a store path's files.
    pub fn real_path(&self, path: &StorePath) -> PathBuf {
        self.real_store_dir().join(path.to_string())
    }

    /// Nix's state directory, `<root>/nix/var/nix`.
    pub fn state_dir(&self) -> PathBuf {
        self.under_root("/nix/var/nix")
    }

    /// The store DB, `<state>/db/db.sqlite`.
    pub fn db_path(&self) -> PathBuf {
        self.state_dir().join("db/db.sqlite")
    }

    /// The DB's schema version file, `<state>/db/schema`.
    pub fn schema_path(&self) -> PathBuf {
        self.state_dir().join("db/schema")
    }

    /// Build logs live under `<root>/nix/var/log/nix/drvs/<2 chars>/<rest>[.bz2]`.
    pub fn log_dir(&self) -> PathBuf {
        self.under_root("/nix/var/log/nix/drvs")
    }

    /// Parse an absolute path as seen by clients (`/nix/store/<hash>-<name>`).
    pub fn parse_path(&self, full: &str) -> Result<StorePath, StorePathError> {
        StorePath::from_absolute(&self.store_dir, full)
    }

    /// Render a store path as clients see it.
    pub fn display_path(&self, path: &StorePath) -> String {
        format!("{}/{}", self.store_dir, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chroot_store_keeps_logical_and_real_dirs_apart() {
        let loc = StoreLocation::new("/tmp/x");
        let p = loc
            .parse_path("/nix/store/8y7yr95drh588a264899m27vi59a9f4q-d")
            .unwrap();
        assert_eq!(
            loc.real_path(&p),
            PathBuf::from("/tmp/x/nix/store/8y7yr95drh588a264899m27vi59a9f4q-d")
        );
        assert_eq!(
            loc.display_path(&p),
            "/nix/store/8y7yr95drh588a264899m27vi59a9f4q-d"
        );
        assert_eq!(
            loc.db_path(),
            PathBuf::from("/tmp/x/nix/var/nix/db/db.sqlite")
        );
        let host = StoreLocation::new("/");
        assert_eq!(host.real_store_dir(), PathBuf::from("/nix/store"));
    }
}
