//! A view's roots, found on disk: symlinks (profiles, `result` links, GC
//! roots) followed to the store path they end in, GC-root directories
//! searched for such symlinks (as Nix's GC searches `gcroots/`), and a
//! roots file listing one absolute store path (or symlink) a line (a line
//! that is not absolute, or not a path at all, is skipped alone). Read again every
//! poll by [`super::members`], so a root added or removed is seen without
//! a restart.
//!
//! Symlink targets are the host's view of the store (`/nix/store/…`): for a
//! chroot store (`store-root` other than `/`) an absolute target outside
//! the store dir is looked up under the store root first (a profile link
//! such as `/nix/var/nix/profiles/x`, as Nix writes them for `--store
//! /tmp/x`), then as it is (an indirect root's out-link, `/tmp/result`). A root inside a store path (`/nix/store/…-x/bin/y`)
//! roots that store path. Anything not ending in the store is ignored.

use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use larder_store::{StoreLocation, StorePath};

/// As many symlinks as Linux follows in one lookup.
const MAX_HOPS: usize = 40;
/// How deep a GC-root directory is searched.
const MAX_DEPTH: usize = 16;

/// The largest roots file read (a line a root: a million roots).
pub const MAX_ROOTS_FILE: u64 = 128 << 20;

/// The bytes of a roots file: a regular file of at most
/// [`MAX_ROOTS_FILE`] bytes. A FIFO or device would hang the read, or fill
/// memory, on every poll.
///
/// # Errors
/// The file cannot be read, or is not such a file.
pub fn read_roots_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() || meta.len() > MAX_ROOTS_FILE {
        return Err(std::io::Error::other(format!(
            "not a regular file of at most {} MiB",
            MAX_ROOTS_FILE >> 20
        )));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_ROOTS_FILE)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Where a view's roots are declared.
#[derive(Debug, Clone)]
pub struct RootSpec {
    pub location: StoreLocation,
    pub roots: Vec<PathBuf>,
    pub roots_file: Option<PathBuf>,
    pub gc_root_dirs: Vec<PathBuf>,
}

impl RootSpec {
    /// Every store path the roots name now, sorted and without duplicates.
    /// Blocks (directory walks, `readlink`); unreadable entries are skipped.
    pub fn resolve(&self) -> Vec<StorePath> {
        let mut out = Vec::new();
        for root in &self.roots {
            out.extend(self.store_path_of(root));
        }
        if let Some(file) = &self.roots_file {
            match read_roots_file(file) {
                Ok(bytes) => out.extend(self.roots_file_lines(&bytes)),
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "cannot read roots-file")
                }
            }
        }
        for dir in &self.gc_root_dirs {
            self.walk(dir, 0, &mut out);
        }
        out.sort();
        out.dedup();
        out
    }

    /// The store paths a roots file's text names: one absolute path (a
    /// store path or a symlink to one) a line, as bytes; blank lines and
    /// `#` comments skipped. A line that is not absolute (it would be
    /// looked up from the server's working directory) or does not end in
    /// the store is skipped alone: a garbage line (not UTF-8, NUL, …)
    /// never costs the other lines their roots.
    fn roots_file_lines(&self, text: &[u8]) -> Vec<StorePath> {
        text.split(|&b| b == b'\n')
            .map(|line| line.trim_ascii())
            .filter(|line| line.first() == Some(&b'/') && !line.contains(&0))
            .filter_map(|line| self.store_path_of(Path::new(std::ffi::OsStr::from_bytes(line))))
            .collect()
    }

    fn walk(&self, dir: &Path, depth: usize, out: &mut Vec<StorePath>) {
        if depth > MAX_DEPTH {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_symlink() {
                out.extend(self.store_path_of(&path));
            } else if kind.is_dir() {
                self.walk(&path, depth + 1, out);
            }
        }
    }

    /// The store path `path` is in, or that the symlink chain from `path`
    /// ends in.
    fn store_path_of(&self, path: &Path) -> Option<StorePath> {
        let mut here = path.to_path_buf();
        for _ in 0..MAX_HOPS {
            if let Some(p) = self.in_store(&here) {
                return Some(p);
            }
            let target = std::fs::read_link(&here).ok()?;
            here = if target.is_absolute() {
                if let Some(p) = self.in_store(&target) {
                    return Some(p);
                }
                self.on_disk(&target)
            } else {
                here.parent()?.join(target)
            };
        }
        None
    }

    /// The store path `p` (logical, or under the real store dir) is in.
    fn in_store(&self, p: &Path) -> Option<StorePath> {
        let logical = Path::new(self.location.store_dir());
        let real = self.location.real_store_dir();
        let rest = p
            .strip_prefix(logical)
            .or_else(|_| p.strip_prefix(&real))
            .ok()?;
        match rest.components().next()? {
            Component::Normal(name) => StorePath::from_basename(name.to_str()?).ok(),
            _ => None,
        }
    }

    /// Where an absolute path of the store's own filesystem view is: under
    /// the store root if it exists there, else as it is.
    fn on_disk(&self, p: &Path) -> PathBuf {
        match p.strip_prefix("/") {
            Ok(rel) if self.location.root() != Path::new("/") => {
                let inside = self.location.root().join(rel);
                if std::fs::symlink_metadata(&inside).is_ok() {
                    inside
                } else {
                    p.to_path_buf()
                }
            }
            _ => p.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    const A: &str = "0123456789abcdfghijklmnpqrsvwxyz-a";
    const B: &str = "1123456789abcdfghijklmnpqrsvwxyz-b";
    const C: &str = "2123456789abcdfghijklmnpqrsvwxyz-c";
    const D: &str = "3123456789abcdfghijklmnpqrsvwxyz-d";

    #[test]
    fn symlinks_dirs_and_files_resolve_to_store_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("chroot");
        std::fs::create_dir_all(root.join("nix/var/nix/profiles")).unwrap();
        // A profile inside the chroot: profile -> profile-1-link -> /nix/store/A
        symlink(
            format!("/nix/store/{A}"),
            root.join("nix/var/nix/profiles/p-1-link"),
        )
        .unwrap();
        symlink("p-1-link", root.join("nix/var/nix/profiles/p")).unwrap();
        let gc = dir.path().join("gcroots");
        std::fs::create_dir_all(gc.join("deep/er")).unwrap();
        symlink("/nix/var/nix/profiles/p", gc.join("profile")).unwrap();
        symlink(format!("/nix/store/{B}/bin/x"), gc.join("deep/er/file")).unwrap();
        symlink("/etc/passwd", gc.join("outside")).unwrap();
        symlink("loop", gc.join("loop")).unwrap();
        // An indirect root: an out-link outside the chroot, by its real path.
        let out_link = dir.path().join("result");
        symlink(format!("/nix/store/{D}"), &out_link).unwrap();
        symlink(&out_link, gc.join("auto")).unwrap();
        let file = dir.path().join("roots");
        std::fs::write(&file, format!("# c\n/nix/store/{C}\n\n/etc\n")).unwrap();
        let spec = RootSpec {
            location: StoreLocation::new(&root),
            roots: vec![],
            roots_file: Some(file),
            gc_root_dirs: vec![gc],
        };
        let got: Vec<String> = spec.resolve().iter().map(|p| p.to_string()).collect();
        assert_eq!(got, [A, B, C, D]);
    }

    #[test]
    fn garbage_lines_in_a_roots_file_cost_only_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("roots");
        let mut text =
            b"\x00\xff\xfe not utf-8 \x80\n../x\nrelative\n/nix/store/\n/nix/store/..\n".to_vec();
        text.extend_from_slice(format!("  /nix/store/{A}  \r\n/nix/store/{B}\x00\n").as_bytes());
        std::fs::write(&file, text).unwrap();
        let spec = RootSpec {
            location: StoreLocation::new(dir.path()),
            roots: vec![],
            roots_file: Some(file),
            gc_root_dirs: vec![],
        };
        let got: Vec<String> = spec.resolve().iter().map(|p| p.to_string()).collect();
        assert_eq!(got, [A]);
        // A device would never end (a FIFO would block): refused unread.
        assert!(read_roots_file(Path::new("/dev/zero")).is_err());
    }
}
