//! The real Nix as child processes: `nix copy`, `nix path-info`,
//! `nix-store --add-root`. Failures carry the tail of Nix's stderr.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;

use crate::error::{Result, SyncError};
use crate::uri::StoreUri;

/// Lines of a failed command's stderr kept in the error.
const STDERR_TAIL_LINES: usize = 20;

/// The local store Nix commands act on: the host store (`/`) or a chroot
/// store (`nix --store <root>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `Some(root)` for a chroot store, `None` for the host store (Nix's default).
    fn store_arg(&self) -> Option<&Path> {
        (self.root != Path::new("/")).then_some(self.root.as_path())
    }
}

/// How signatures are checked when copying into the local store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigCheck {
    /// Only paths signed by one of these keys (or, if empty, by a key Nix
    /// already trusts) are accepted.
    Require(Vec<String>),
    /// `--no-check-sigs`: explicitly asked for.
    Skip,
}

#[derive(Deserialize)]
struct PathInfoJson {
    path: String,
    #[serde(default = "valid_default")]
    valid: bool,
}

fn valid_default() -> bool {
    true
}

/// `nix copy --from <local> --to <target> PATHS…`, with `--no-check-sigs`
/// when asked (honoured by the target only for a trusted user).
pub fn copy_to(
    local: &LocalStore,
    target: &StoreUri,
    no_check_sigs: bool,
    paths: &[String],
) -> Result<()> {
    let mut cmd = nix();
    cmd.arg("copy");
    if let Some(root) = local.store_arg() {
        cmd.arg("--from").arg(root);
    }
    if no_check_sigs {
        cmd.arg("--no-check-sigs");
    }
    cmd.args(["--to", target.as_str()]).args(paths);
    run(&mut cmd).map(drop)
}

/// `nix store sign --key-file KEY PATHS…` in the local store: adds the
/// builder's own signature, which a target that requires signatures
/// accepts once it trusts the matching public key.
pub fn sign(local: &LocalStore, key_file: &Path, paths: &[String]) -> Result<()> {
    let mut cmd = nix();
    cmd.args(["store", "sign"]);
    if let Some(root) = local.store_arg() {
        cmd.arg("--store").arg(root);
    }
    cmd.arg("--key-file").arg(key_file).args(paths);
    run(&mut cmd).map(drop)
}

/// Nix's `netrc-file` setting (where `nix copy` finds http(s) credentials),
/// as `nix show-config` reports it with the current `NIX_CONFIG`.
pub fn netrc_file() -> Result<Option<PathBuf>> {
    let out = run(nix().arg("show-config"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("netrc-file = "))
        .map(|v| PathBuf::from(v.trim()))
        .filter(|p| !p.as_os_str().is_empty()))
}

/// `nix store ping --store <target>`: does the target answer at all?
/// It does not read any store path, so a target that refuses one path
/// still answers, while an unreachable or unusable one does not.
pub fn ping(target: &StoreUri) -> Result<()> {
    let mut cmd = nix();
    cmd.args(["store", "ping", "--store", target.as_str()]);
    run(&mut cmd).map(drop)
}

/// `nix copy --from <source> --to <local> PATHS…` with signature checks.
pub fn copy_from(
    source: &StoreUri,
    local: &LocalStore,
    sigs: &SigCheck,
    paths: &[String],
) -> Result<()> {
    let mut cmd = nix();
    cmd.args(["copy", "--from", source.as_str()]);
    if let Some(root) = local.store_arg() {
        cmd.arg("--to").arg(root);
    }
    match sigs {
        SigCheck::Skip => {
            cmd.arg("--no-check-sigs");
        }
        SigCheck::Require(keys) => {
            cmd.args(["--option", "require-sigs", "true"]);
            if !keys.is_empty() {
                cmd.args(["--option", "trusted-public-keys", &keys.join(" ")]);
            }
        }
    }
    cmd.args(paths);
    run(&mut cmd).map(drop)
}

/// Which of `paths` the store at `store` (a URI, or a local root) holds:
/// one `nix path-info --json` for the lot (Nix 2.8 marks missing ones
/// `"valid": false`).
pub fn valid_paths(store: &OsString, paths: &[String]) -> Result<HashSet<String>> {
    if paths.is_empty() {
        return Ok(HashSet::new());
    }
    let mut cmd = nix();
    cmd.args(["path-info", "--json", "--store"])
        .arg(store)
        .args(paths);
    let out = run(&mut cmd)?;
    let infos: Vec<PathInfoJson> =
        serde_json::from_slice(&out.stdout).map_err(|e| SyncError::NixOutput {
            command: describe(&cmd),
            detail: e.to_string(),
        })?;
    Ok(infos
        .into_iter()
        .filter(|i| i.valid)
        .map(|i| i.path)
        .collect())
}

/// Make `link` an indirect GC root of `path` in the local store:
/// `nix-store --realise PATH --add-root LINK` symlinks LINK to the path and
/// registers LINK under the store's `gcroots/auto` (a no-op realise, since
/// the path is valid).
pub fn add_root(local: &LocalStore, path: &str, link: &Path) -> Result<()> {
    let mut cmd = Command::new("nix-store");
    if let Some(root) = local.store_arg() {
        cmd.arg("--store").arg(root);
    }
    cmd.args(["--realise", path, "--add-root"]).arg(link);
    run(&mut cmd).map(drop)
}

/// The `nix` command with `nix-command` enabled for this call only: Debian's
/// Nix 2.8 ships it disabled, and larder-sync must not depend on the
/// host's nix.conf (or a `NIX_CONFIG` that replaced it) to use the `nix`
/// subcommands it runs (`copy`, `store sign`, `store ping`, `path-info`,
/// `show-config`).
pub fn nix() -> Command {
    let mut cmd = Command::new("nix");
    cmd.args(["--extra-experimental-features", "nix-command"]);
    cmd
}

/// Run a command to completion; a non-zero exit is [`SyncError::NixFailed`].
pub fn run(cmd: &mut Command) -> Result<Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| SyncError::Spawn { program, source })?;
    if out.status.success() {
        return Ok(out);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n");
    Err(SyncError::NixFailed {
        command: describe(cmd),
        status: out.status.to_string(),
        stderr: tail,
    })
}

/// A command line for messages, with long path lists shortened.
fn describe(cmd: &Command) -> String {
    // The flag [`nix`] adds says nothing about what failed.
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .skip_while(|a| a == "--extra-experimental-features" || a == "nix-command")
        .collect();
    let shown = if args.len() > 8 {
        format!("{} … (+{} more)", args[..8].join(" "), args.len() - 8)
    } else {
        args.join(" ")
    };
    format!("{} {shown}", cmd.get_program().to_string_lossy())
}
