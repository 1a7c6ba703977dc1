//! Shared harness for larder's end-to-end tests: the real `nix` binaries,
//! chroot stores in temporary directories, and helpers to run commands.
//!
//! Every test that needs Nix calls [`require_nix`], which fails loudly (never
//! skips) when `nix` is missing: the README's test command installs it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use larder_store::StoreLocation;

pub mod deploy;
pub mod fixtures;
pub mod garage;
pub mod interrupted;
pub mod mounts;
pub mod nar_stream;
pub mod process;
pub mod proxy;
pub mod receive;
pub mod server;
pub mod signer;
pub mod sshd;
pub mod sync;
pub mod views;

/// The `NIX_CONFIG` every test uses, the same file `scripts/run.sh` and
/// `scripts/test.sh` export (`scripts/nix.conf`): no sandbox (tests run as
/// root inside CI containers), no substituters (there is no internet), no
/// build users. Builds in a chroot store still run in a chroot, so `/bin/sh`
/// and its libraries are bind-mounted with `sandbox-paths`.
pub const NIX_CONFIG: &str = include_str!("../../scripts/nix.conf");

/// [`NIX_CONFIG`] without `experimental-features`: the environment larder's
/// own processes get in tests, as on a stock Debian host (Nix 2.8 with
/// `nix-command` disabled), so that every test proves larder enables what
/// it uses itself.
pub fn larder_nix_config() -> String {
    NIX_CONFIG
        .lines()
        .filter(|l| !l.trim_start().starts_with("experimental-features"))
        .map(|l| format!("{l}\n"))
        .collect()
}

pub fn require_nix() {
    let ok = Command::new("nix")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "the real `nix` is required (apt-get install nix-bin); run the README's test command"
    );
}

/// A `Command` for a Nix binary with the test configuration.
pub fn nix_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("NIX_CONFIG", NIX_CONFIG);
    cmd
}

/// Run a command; panic with its stderr if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn run_stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).expect("utf-8 output")
}

/// A chroot Nix store (`nix --store <root>`) in a temporary directory: its
/// DB records `/nix/store/...` while files live under `<root>/nix/store`.
pub struct TestStore {
    dir: tempfile::TempDir,
}

impl TestStore {
    pub fn new() -> Self {
        require_nix();
        let dir = tempfile::Builder::new()
            .prefix("larder-store-")
            .tempdir()
            .expect("tempdir");
        let store = TestStore { dir };
        // Any store command initialises the DB.
        run(store.nix("nix-store").args(["--init"]));
        store
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn location(&self) -> StoreLocation {
        StoreLocation::new(self.root())
    }

    /// The `--store` argument naming this store.
    pub fn uri(&self) -> String {
        self.root().display().to_string()
    }

    /// A Nix command operating on this store.
    pub fn nix(&self, program: &str) -> Command {
        let mut cmd = nix_command(program);
        cmd.arg("--store").arg(self.root());
        cmd
    }

    /// `nix-store --add` each path; returns the store paths (`/nix/store/...`).
    pub fn add<I, S>(&self, paths: I) -> Vec<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = run_stdout(self.nix("nix-store").arg("--add").args(paths));
        out.lines().map(str::to_owned).collect()
    }

    /// Build a Nix expression (a string of Nix code) into this store; returns output paths.
    pub fn build_expr(&self, expr: &str) -> Vec<String> {
        let out = run_stdout(
            self.nix("nix-build")
                .args(["--no-out-link", "-E"])
                .arg(expr),
        );
        out.lines().map(str::to_owned).collect()
    }

    /// Where the files of a store path (`/nix/store/...`) really are.
    pub fn real_path(&self, store_path: &str) -> PathBuf {
        self.root().join(store_path.trim_start_matches('/'))
    }
}

impl Default for TestStore {
    fn default() -> Self {
        Self::new()
    }
}

/// A derivation without nixpkgs: `/bin/sh -c script`, with `PATH` set.
pub fn shell_derivation(name: &str, script: &str) -> String {
    format!(
        r#"derivation {{ name = "{name}"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; args = ["-c" ''{script}'']; }}"#
    )
}

/// The 32-character hash part of a `/nix/store/<hash>-<name>` path.
pub fn hash_part(store_path: &str) -> &str {
    let base = store_path.rsplit('/').next().unwrap_or(store_path);
    &base[..32]
}

/// The narinfo URL path (`/<hash>.narinfo`) of a store path.
pub fn narinfo_url(store_path: &str) -> String {
    format!("/{}.narinfo", hash_part(store_path))
}
