//! What the server benchmark serves besides the closure's store, made once
//! under `bench/work/` and reused: static `nix copy --to file://` exports
//! (for nginx), the NARs concatenated (for the `zstd` CLI), and a store
//! holding one path of more than 1 GiB (for the memory test).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use larder_store::StoreLocation;

use crate::Error;
use crate::closure::{NIX_CONFIG, nix_store_add};

/// Marks a fixture as complete: a half-made one is made again.
const DONE: &str = ".complete";

fn done(dir: &Path) -> bool {
    dir.join(DONE).exists()
}

/// `nix copy --to file://<work>/export-<compression>?compression=…` of the
/// paths: what a static binary cache holds.
pub fn export(
    work: &Path,
    location: &StoreLocation,
    paths: &[String],
    compression: &str,
) -> Result<PathBuf, Error> {
    let dir = work.join(format!("export-{compression}"));
    if done(&dir) {
        return Ok(dir);
    }
    println!("exporting the closure to {} ({compression})", dir.display());
    let _ = fs::remove_dir_all(&dir);
    let status = Command::new("nix")
        .env("NIX_CONFIG", NIX_CONFIG)
        .arg("copy")
        .arg("--no-check-sigs")
        .arg("--from")
        .arg(location.root())
        .arg("--to")
        .arg(format!(
            "file://{}?compression={compression}",
            dir.display()
        ))
        .args(paths)
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("nix copy to {} failed: {status}", dir.display()).into());
    }
    fs::write(dir.join(DONE), "")?;
    Ok(dir)
}

/// Every NAR file of an uncompressed export, concatenated (each distinct
/// NAR once): the input of `zstd -1 -T0`.
pub fn concatenated_nars(work: &Path, export_none: &Path) -> Result<PathBuf, Error> {
    let file = work.join("all.nar");
    let marker = work.join("all.nar.complete");
    if marker.exists() {
        return Ok(file);
    }
    let mut nars: Vec<PathBuf> = fs::read_dir(export_none.join("nar"))?
        .map(|e| Ok(e?.path()))
        .collect::<Result<_, std::io::Error>>()?;
    nars.sort();
    let mut out = fs::File::create(&file)?;
    for nar in nars {
        std::io::copy(&mut fs::File::open(nar)?, &mut out)?;
    }
    fs::write(marker, "")?;
    Ok(file)
}

/// A chroot store with one path whose NAR is over 1 GiB: the concatenated
/// NARs added as a file. Returns the store's location and the path's hash.
pub fn big_store(work: &Path, all_nars: &Path) -> Result<(StoreLocation, String), Error> {
    let location = StoreLocation::new(work.join("big-store"));
    let list = work.join("big-store.txt");
    if !list.exists() {
        println!(
            "adding {} to {}",
            all_nars.display(),
            location.root().display()
        );
        let out = nix_store_add(location.root(), &[all_nars.to_owned()])?;
        fs::write(&list, out)?;
    }
    let path = fs::read_to_string(&list)?;
    Ok((location, hash_part(path.trim())?))
}

/// The 32-character hash of `/nix/store/<hash>-<name>`.
pub fn hash_part(store_path: &str) -> Result<String, Error> {
    store_path
        .rsplit('/')
        .next()
        .and_then(|base| base.get(..32))
        .map(str::to_owned)
        .ok_or_else(|| format!("not a store path: {store_path:?}").into())
}
