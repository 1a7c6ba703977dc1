//! Store contents and binary-cache exports shared by several tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use larder_store::narinfo::NarInfo;

use crate::{TestStore, nix_command, run, shell_derivation};

/// A small closure built by the real Nix: `top` refers to `mid`, which
/// refers to `leaf`; each has a deriver. Returns `top`'s store path.
pub fn three_path_closure(store: &TestStore) -> String {
    let leaf = shell_derivation("leaf", "echo leaf > $out");
    let mid = format!(
        r#"derivation {{ name = "mid"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; leaf = {leaf}; args = ["-c" "mkdir $out; echo $leaf > $out/ref; echo x > $out/f"]; }}"#
    );
    let top = format!(
        r#"derivation {{ name = "top"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; mid = {mid}; args = ["-c" "echo $mid > $out"]; }}"#
    );
    store.build_expr(&top).remove(0)
}

/// `nix copy --to file://<dir>?compression=<compression> <path>`.
pub fn export_file_cache(store: &TestStore, path: &str, dir: &Path, compression: &str) {
    run(store
        .nix("nix")
        .args(["copy", "--to"])
        .arg(format!(
            "file://{}?compression={compression}",
            dir.display()
        ))
        .arg(path));
}

pub fn file_uri(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// Every narinfo of a file cache, parsed; each must render back to the
/// exact bytes Nix wrote.
pub fn read_narinfos(dir: &Path) -> Vec<(PathBuf, NarInfo)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "narinfo") {
            let text = fs::read_to_string(&p).unwrap();
            let info: NarInfo = text
                .parse()
                .unwrap_or_else(|e| panic!("{}: {e}\n{text}", p.display()));
            // What we render is what Nix wrote, byte for byte.
            assert_eq!(info.to_string(), text, "{}", p.display());
            out.push((p, info));
        }
    }
    out
}

/// Replace every narinfo's signatures with `sign(fingerprint)`.
pub fn sign_file_cache(dir: &Path, sign: impl Fn(&str) -> Vec<String>) {
    for (p, mut info) in read_narinfos(dir) {
        info.sigs = sign(&info.fingerprint());
        fs::write(p, info.to_string()).unwrap();
    }
}

/// `nix copy --from <uri>` into a fresh store with `require-sigs` and only
/// `trusted_key` trusted. Returns the output; callers assert on success.
pub fn copy_with_sigs(uri: &str, path: &str, trusted_key: &str) -> Output {
    let dest = tempfile::tempdir().unwrap();
    // Nix's narinfo disk cache is keyed by the cache's URL: another test's
    // server on the same (reused) port may have served this path signed by
    // another key, and the client would trust that stale narinfo.
    let nix_cache = tempfile::tempdir().unwrap();
    nix_command("nix")
        .env("XDG_CACHE_HOME", nix_cache.path())
        .args(["copy", "--from", uri, "--to"])
        .arg(dest.path())
        .args(["--option", "require-sigs", "true"])
        .args(["--option", "trusted-public-keys", trusted_key])
        .arg(path)
        .output()
        .unwrap()
}

/// A fresh Nix signing key made by the real `nix key generate-secret`,
/// written to `dir/name`: (secret key file, public key).
pub fn keypair(name: &str, dir: &Path) -> (PathBuf, String) {
    let secret = dir.join(name);
    let key =
        crate::run_stdout(nix_command("nix").args(["key", "generate-secret", "--key-name", name]));
    std::fs::write(&secret, &key).unwrap();
    let public = crate::run_stdout(
        nix_command("nix")
            .args(["key", "convert-secret-to-public"])
            .stdin(std::fs::File::open(&secret).unwrap()),
    );
    (secret, public.trim().to_owned())
}

/// The names of the compressed NARs larder-server's cache at `dir` has
/// published (`<key>.nar.zst`, complete files; fills in progress sit in
/// `tmp/`), sorted.
pub fn cached_nars(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".nar.zst"))
        .collect();
    names.sort();
    names
}

/// Wait (up to 30 s) until the cache at `dir` holds `n` compressed NARs:
/// a fill is published just after the client has its last byte.
pub fn wait_for_cached_nars(dir: &Path, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let have = cached_nars(dir).len();
        if have >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{have} of {n} NARs cached in {}",
            dir.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
