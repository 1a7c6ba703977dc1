//! Pull: copy closures from a builder into the local store with
//! `nix copy --from` (only missing paths travel; signatures checked unless
//! told not to), then root each under `<gc-root-dir>/<builder>/` and apply
//! retention ([`crate::retention`]: distinct closures).

use std::path::PathBuf;
use std::process::Command;

use crate::error::{Result, SyncError};
use larder_store::StoreLocation;

use crate::gcroots::{self, Retention};
use crate::nix::{self, LocalStore, SigCheck};
use crate::retention::{self, Closures};
use crate::uri::StoreUri;

/// Symlinks followed when resolving a builder's root (profiles are two deep).
const MAX_LINKS: usize = 40;

#[derive(Debug, Clone)]
pub struct PullRequest {
    pub source: StoreUri,
    pub sigs: SigCheck,
    pub gc_root_dir: PathBuf,
    /// The directory name under `gc_root_dir` (default: the URI's host).
    pub builder: String,
    /// GC root name: `<name>` for one path, `<name>-<i>` for several.
    pub name: String,
    /// Store paths on the builder.
    pub paths: Vec<String>,
    /// Symlinks on the builder resolving to store paths (profiles).
    pub roots: Vec<String>,
    pub retention: Retention,
    /// A path some root of this builder already points to is not rooted
    /// again: that root is renewed (its mtime) instead. The daemon sets it,
    /// so an unchanged profile adds no root and `keep_last` counts distinct
    /// closures, not pulls.
    pub reuse_unchanged: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullReport {
    pub paths: Vec<String>,
    pub gc_roots: Vec<PathBuf>,
    pub removed: Vec<PathBuf>,
}

pub fn pull(local: &LocalStore, req: &PullRequest) -> Result<PullReport> {
    let mut paths = req.paths.clone();
    for root in &req.roots {
        paths.push(resolve_root(&req.source, root)?);
    }
    if paths.is_empty() {
        return Err(SyncError::Usage(
            "nothing to pull: give store paths or --root".into(),
        ));
    }
    nix::copy_from(&req.source, local, &req.sigs, &paths)?;
    let dir = req.gc_root_dir.join(&req.builder);
    let mut report = PullReport {
        paths: paths.clone(),
        ..PullReport::default()
    };
    let existing = if req.reuse_unchanged {
        retention::roots_of(&req.gc_root_dir, &req.builder)?
    } else {
        Vec::new()
    };
    for (i, path) in paths.iter().enumerate() {
        let newest_same = existing
            .iter()
            .filter(|r| r.target == *path)
            .max_by_key(|r| (r.arrived, r.link.clone()));
        if let Some(same) = newest_same {
            let name = same.link.file_name().unwrap_or_default().to_string_lossy();
            report.gc_roots.push(gcroots::link(&dir, &name, path)?);
            continue;
        }
        let name = if paths.len() == 1 {
            req.name.clone()
        } else {
            format!("{}-{}", req.name, i + 1)
        };
        report
            .gc_roots
            .push(gcroots::add(local, &dir, &name, path)?);
    }
    let mut closures = Closures::open(&StoreLocation::new(local.root()))?;
    report.removed =
        retention::prune_source(&mut closures, &req.gc_root_dir, &req.builder, req.retention)?;
    Ok(report)
}

/// The store path a symlink on an ssh builder (e.g. a profile) points to,
/// followed link by link under the builder's `remote-store` root.
fn resolve_root(source: &StoreUri, root: &str) -> Result<String> {
    let fail = |detail: String| SyncError::Root {
        root: root.to_owned(),
        builder: source.to_string(),
        detail,
    };
    if !source.is_ssh() {
        return Err(fail(
            "roots can only be resolved on ssh:// and ssh-ng:// builders; give store paths".into(),
        ));
    }
    let safe = |s: &str| {
        s.starts_with('/')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._+-".contains(c))
    };
    let prefix = source.param("remote-store").unwrap_or("");
    if !safe(root) || !(prefix.is_empty() || safe(prefix)) {
        return Err(fail(
            "only absolute paths of [A-Za-z0-9/._+-] are accepted".into(),
        ));
    }
    let script = format!(
        "p={root}; n=0; while [ -L \"{prefix}$p\" ] && [ $n -lt {MAX_LINKS} ]; do \
         t=$(readlink \"{prefix}$p\"); case $t in /*) p=$t;; *) p=$(dirname \"$p\")/$t;; esac; \
         n=$((n+1)); done; echo \"$p\""
    );
    let mut cmd = Command::new("ssh");
    if let Ok(opts) = std::env::var("NIX_SSHOPTS") {
        cmd.args(opts.split_whitespace());
    }
    cmd.args(["-o", "BatchMode=yes", source.ssh_host(), &script]);
    let out = nix::run(&mut cmd).map_err(|e| fail(e.to_string()))?;
    let target = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let store_path: String = target
        .strip_prefix("/nix/store/")
        .and_then(|rest| rest.split('/').next())
        .map(|base| format!("/nix/store/{base}"))
        .ok_or_else(|| fail(format!("it resolves to {target:?}, not a store path")))?;
    Ok(store_path)
}
