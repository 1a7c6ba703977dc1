//! Importing one verified upload into the host store with the real Nix.
//!
//! The staged NAR is hard-linked into a fresh one-path `file://` binary
//! cache (`nix-cache-info`, the narinfo rewritten to `Compression: none`
//! and a `nar/<narhash>.nar` URL), then
//! `nix copy --no-recursive --no-check-sigs --from file://DIR [--to ROOT] PATH`
//! adds it: through nix-daemon for the host store where there is one, or
//! into a chroot store. Nix registers a path only once its files are
//! complete and holds a lock per path, so a crash never leaves a
//! half-imported path and two imports of one path are harmless. The
//! directory is removed on success and failure alike.

use std::fs;
use std::path::Path;

use larder_store::narinfo::NarInfo;

use super::error::{ReceiveError, ReceiveResult};
use super::staging::Staging;
use crate::nix::{LocalStore, nix, run};

/// Import the path of `info` from the NAR staged under `url`. Returns
/// `Ok(false)` when no NAR is staged there (any more). Blocking.
pub fn import(
    local: &LocalStore,
    staging: &Staging,
    info: &NarInfo,
    url: &str,
) -> ReceiveResult<bool> {
    let dir = staging.new_import_dir().map_err(io_err)?;
    let nar_name = format!("{}.nar", info.nar_hash.to_nix32());
    fs::create_dir(dir.path().join("nar")).map_err(io_err)?;
    if !staging
        .link(url, &dir.path().join("nar").join(&nar_name))
        .map_err(io_err)?
    {
        return Ok(false);
    }
    write_cache(dir.path(), info, &nar_name).map_err(io_err)?;

    let mut cmd = nix();
    cmd.args(["copy", "--no-recursive", "--no-check-sigs", "--from"])
        .arg(format!("file://{}", dir.path().display()));
    // A pushed `.drv` is itself the path to import: without `--derivation`
    // Nix 2.8 tries to build its outputs (a 500). Only there: on any other
    // path the flag makes Nix look for a deriver.
    if info.store_path.name().ends_with(".drv") {
        cmd.arg("--derivation");
    }
    if local.root() != Path::new("/") {
        cmd.arg("--to").arg(local.root());
    }
    cmd.arg(format!("{}/{}", info.store_dir, info.store_path));
    run(&mut cmd).map_err(|e| {
        tracing::error!("import of {} failed: {e}", info.store_path);
        ReceiveError::Internal(format!(
            "importing {} into the cache's store failed (see the receiver's log)",
            info.store_path
        ))
    })?;
    Ok(true)
}

/// `nix-cache-info` and the rewritten narinfo of a one-path file cache.
fn write_cache(dir: &Path, info: &NarInfo, nar_name: &str) -> std::io::Result<()> {
    fs::write(
        dir.join("nix-cache-info"),
        format!("StoreDir: {}\n", info.store_dir),
    )?;
    let local = NarInfo {
        url: format!("nar/{nar_name}"),
        compression: "none".into(),
        file_hash: None,
        file_size: None,
        ..info.clone()
    };
    fs::write(
        dir.join(format!("{}.narinfo", info.store_path.hash())),
        local.to_string(),
    )
}

fn io_err(e: std::io::Error) -> ReceiveError {
    tracing::error!("staging: {e}");
    ReceiveError::Internal("cannot prepare the import in the staging dir".into())
}
