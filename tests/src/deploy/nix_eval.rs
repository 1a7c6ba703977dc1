//! The NixOS module evaluated with the real Nix: its builtins-only parts
//! with `nix-instantiate`, the whole module with the vendored nixpkgs lib's
//! `evalModules` ([`module`]), values passed in as JSON.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::workspace_root;
use crate::{nix_command, require_nix};

/// `nix-instantiate --parse FILE`; `Err` carries Nix's message.
pub fn parse(file: &Path) -> Result<(), String> {
    require_nix();
    let out = nix_command("nix-instantiate")
        .arg("--parse")
        .arg(file)
        .output()
        .expect("run nix-instantiate");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Evaluate `fun input` strictly, where `fun` is a Nix expression over
/// `root` (the workspace root, a path) and `input` is `input` as a Nix value.
/// For example `eval("import (root + \"/nixos-module/toml.nix\")", &json)`.
pub fn eval(fun: &str, input: &Value) -> Result<Value, String> {
    require_nix();
    let dir = tempfile::tempdir().expect("tempdir");
    let input_file = dir.path().join("input.json");
    std::fs::write(&input_file, input.to_string()).expect("write input");
    let expr = format!("{{ root, input }}: ({fun}) (builtins.fromJSON (builtins.readFile input))");
    let out = nix_command("nix-instantiate")
        .args(["--eval", "--strict", "--json", "--argstr", "root"])
        .arg(workspace_root())
        .arg("--argstr")
        .arg("input")
        .arg(&input_file)
        .arg("-E")
        .arg(&expr)
        .output()
        .expect("run nix-instantiate");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("nix-instantiate printed non-JSON: {e}"))
}

/// Settings rendered to TOML by `nixos-module/toml.nix`.
pub fn render_toml(settings: &Value) -> Result<String, String> {
    match eval("import (root + \"/nixos-module/toml.nix\")", settings)? {
        Value::String(text) => Ok(text),
        other => Err(format!("toml.nix returned {other}, not a string")),
    }
}

/// An attribute of `nixos-module/<file>` (e.g. `hardening.nix`, `common`).
pub fn module_data(file: &str, attr: &str) -> Value {
    let fun = format!("_: (import (root + \"/nixos-module/{file}\")).{attr}");
    eval(&fun, &Value::Null).unwrap_or_else(|e| panic!("evaluating {file} {attr}: {e}"))
}

/// The NixOS module evaluated with the real module system
/// (`nixos-module/tests/eval.nix`: nixpkgs' lib from [`nixpkgs_lib`], a declaration
/// of the NixOS options it sets, a stub `pkgs`) under `config`, a module
/// as JSON (`{"services": {"larder": {...}}}`). Returns `failed` (the
/// failed assertions' messages), `packagePath` (the fake package's store
/// path), `systemd`, `users`, `networking`, `nix`.
///
/// Runs `nix eval --impure` rather than `nix-instantiate --eval`: the
/// latter is read-only, so the config files the module writes
/// (`builtins.toFile` in the stub) would have a path but no contents, and
/// the tests hand those very files to the binaries.
pub fn module(config: &Value) -> Result<Value, String> {
    module_attr(config, "")
}

/// One attribute of [`module`]'s result (`failed`), evaluating only what
/// it needs: a config that trips an assertion may not evaluate in full.
pub fn module_attr(config: &Value, attr: &str) -> Result<Value, String> {
    require_nix();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("config.json");
    std::fs::write(&input, config.to_string()).expect("write config");
    let eval = workspace_root().join("nixos-module/tests/eval.nix");
    let select = if attr.is_empty() {
        String::new()
    } else {
        format!(".{attr}")
    };
    let expr = format!(
        "(import {} {{ config = builtins.fromJSON (builtins.readFile {}); nixpkgsLib = {}; }}){select}",
        nix_string(&eval),
        nix_string(&input),
        nix_string(&nixpkgs_lib()),
    );
    let out = nix_command("nix")
        .args(["eval", "--impure", "--json", "--expr", &expr])
        .output()
        .expect("run nix eval");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("nix eval printed non-JSON: {e}"))
}

/// nixpkgs' `lib` for evaluating the module: `$LARDER_NIXPKGS_LIB`, or the
/// project's shared copy `../shared/nixpkgs-lib` beside the checkout (where
/// CI puts it). Never vendored into the project.
pub fn nixpkgs_lib() -> PathBuf {
    let dir = std::env::var_os("LARDER_NIXPKGS_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/nixpkgs-lib"));
    assert!(
        dir.join("lib/default.nix").is_file(),
        "nixpkgs lib not found at {}: put the project's shared/ beside the checkout (as CI does) or set LARDER_NIXPKGS_LIB to a nixpkgs lib checkout",
        dir.display()
    );
    dir
}

/// `path` as a Nix string literal (JSON string syntax is Nix's for these).
fn nix_string(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).expect("a string")
}
