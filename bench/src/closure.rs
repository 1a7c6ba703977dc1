//! The benchmark closure: children of a few system directories (real files:
//! big libraries, small files, deep trees, symlinks) added with
//! `nix-store --add` to a chroot store under `bench/work/store`, once,
//! then given references the way a real closure has them (see
//! [`add_references`]): a narinfo's cost depends on them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use larder_store::StoreLocation;
use larder_store::nar::NarPlan;
use larder_store::path::validate_name;

use crate::Error;

/// Where the store paths are taken from: every child of these is a path.
pub const SOURCES: &[&str] = &[
    "/usr/share",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/python3/dist-packages",
    "/usr/lib/python3.11",
    "/usr/lib/llvm-14/lib",
    "/usr/lib/jvm",
    "/usr/lib/gcc/x86_64-linux-gnu",
];
/// The closure's total NAR size, at least.
const CLOSURE_BYTES: u64 = 1300 << 20;
/// Nix settings for the benchmark's own `nix` calls: the same file the
/// scripts and tests use.
pub const NIX_CONFIG: &str = include_str!("../../scripts/nix.conf");

/// `bench/work`, where generated stores and exports live (gitignored).
pub fn work_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("work")
}

/// The closure's chroot store.
pub fn location(work: &Path) -> StoreLocation {
    StoreLocation::new(work.join("store"))
}

/// The closure's store paths as clients see them (`/nix/store/…`), sorted,
/// adding them to the store on first use.
pub fn store_paths(work: &Path, location: &StoreLocation) -> Result<Vec<String>, Error> {
    let list = work.join("paths.txt");
    if !list.exists() {
        let sources = pick_sources()?;
        println!(
            "adding {} paths to {}",
            sources.len(),
            location.root().display()
        );
        let out = nix_store_add(location.root(), &sources)?;
        fs::write(&list, out)?;
    }
    let mut paths: Vec<String> = fs::read_to_string(&list)?
        .lines()
        .map(str::to_owned)
        .collect();
    paths.sort();
    paths.dedup();
    let marker = work.join("references.complete");
    if !marker.exists() {
        add_references(location.root(), &paths)?;
        // Exports made before hold narinfos without them.
        for export in ["export-none", "export-zstd"] {
            let _ = fs::remove_file(work.join(export).join(".complete"));
        }
        fs::write(marker, "")?;
    }
    Ok(paths)
}

/// The references path `i` of `paths` gets: up to 8 earlier paths (a DAG,
/// as Nix requires; 4 on average, about what a nixpkgs path has), and
/// itself for every third path (a library whose RPATH names its own
/// directory).
fn references_of(paths: &[String], i: usize) -> Vec<&str> {
    let mut refs: Vec<&str> = (0..(i * 7) % 9)
        .filter(|_| i > 0)
        .map(|j| paths[(i * 31 + j * 17) % i].as_str())
        .collect();
    if i.is_multiple_of(3) {
        refs.push(&paths[i]);
    }
    refs.sort_unstable();
    refs.dedup();
    refs
}

/// `nix-store --add` registers no references, so give the paths
/// [`references_of`] with Nix itself: `nix-store --load-db` of their
/// path infos (`nix path-info --json`) with the references added. The
/// files, NAR hashes and sizes stay as added, but Nix's `--load-db`
/// rewrites each row it is given: every path also loses the `ca` of
/// `nix-store --add` (checked with Nix 2.8; a fixed-output claim would be
/// false with references anyway) and its `ultimate` flag, so its narinfo
/// has no `CA:` line, as an input-addressed path's has none.
fn add_references(root: &Path, paths: &[String]) -> Result<(), Error> {
    println!("registering references between the {} paths", paths.len());
    let out = nix_stdout("nix", root, &["path-info", "--json"], paths)?;
    let infos: Vec<serde_json::Value> = serde_json::from_str(&out)?;
    let mut registration = String::new();
    for (i, path) in paths.iter().enumerate() {
        let info = infos
            .iter()
            .find(|v| v["path"].as_str() == Some(path))
            .ok_or_else(|| format!("nix path-info did not list {path}"))?;
        let (Some(hash), Some(size)) = (info["narHash"].as_str(), info["narSize"].as_u64()) else {
            return Err(format!("no narHash/narSize for {path}").into());
        };
        let refs = references_of(paths, i);
        // The `--dump-db` format: path, hash, size, deriver, count, refs.
        registration.push_str(&format!("{path}\n{hash}\n{size}\n\n{}\n", refs.len()));
        for r in refs {
            registration.push_str(r);
            registration.push('\n');
        }
    }
    let mut child = Command::new("nix-store")
        .env("NIX_CONFIG", NIX_CONFIG)
        .arg("--store")
        .arg(root)
        .arg("--load-db")
        .stdin(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    std::io::Write::write_all(
        child.stdin.as_mut().ok_or("no stdin for nix-store")?,
        registration.as_bytes(),
    )?;
    drop(child.stdin.take());
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("nix-store --load-db failed: {status}").into());
    }
    Ok(())
}

/// The real locations of [`store_paths`].
pub fn real_paths(work: &Path, location: &StoreLocation) -> Result<Vec<PathBuf>, Error> {
    store_paths(work, location)?
        .iter()
        .map(|line| Ok(location.real_path(&location.parse_path(line)?)))
        .collect()
}

/// `nix-store --store ROOT --add SOURCES…`: the store paths it printed.
pub fn nix_store_add(root: &Path, sources: &[PathBuf]) -> Result<String, Error> {
    fs::create_dir_all(root)?;
    nix_stdout("nix-store", root, &["--add"], sources)
}

/// `PROGRAM --store ROOT ARGS… ITEMS…` with the bench's Nix settings: its
/// standard output, or an error naming the command.
fn nix_stdout(
    program: &str,
    root: &Path,
    args: &[&str],
    items: &[impl AsRef<std::ffi::OsStr>],
) -> Result<String, Error> {
    let out = Command::new(program)
        .env("NIX_CONFIG", NIX_CONFIG)
        .arg("--store")
        .arg(root)
        .args(args)
        .args(items)
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(format!("{program} {} failed: {}", args.join(" "), out.status).into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Children of [`SOURCES`], taken in turn from each, until their NARs add
/// up to [`CLOSURE_BYTES`].
fn pick_sources() -> Result<Vec<PathBuf>, Error> {
    let mut queues: Vec<Vec<PathBuf>> = Vec::new();
    for source in SOURCES {
        let mut children: Vec<PathBuf> = fs::read_dir(source)?
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| validate_name(n).is_ok())
            })
            .collect();
        children.sort();
        children.reverse();
        queues.push(children);
    }
    let mut picked = Vec::new();
    let mut total = 0;
    while total < CLOSURE_BYTES && queues.iter().any(|q| !q.is_empty()) {
        for queue in &mut queues {
            let Some(path) = queue.pop() else { continue };
            // Skip what a NAR cannot hold or we cannot read.
            if let Ok(plan) = NarPlan::walk(&path) {
                total += plan.nar_size();
                picked.push(path);
            }
        }
    }
    Ok(picked)
}
