//! `nix-instantiate` on the NixOS module's pure parts (builtins only: no
//! nixpkgs exists offline), with values passed in as JSON.

use std::path::Path;

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

/// A command line from `nixos-module/args.nix`: `args.<which> input`.
pub fn args(which: &str, input: &Value) -> Vec<String> {
    let fun = format!("(import (root + \"/nixos-module/args.nix\")).{which}");
    let value = eval(&fun, input).unwrap_or_else(|e| panic!("args.nix {which}: {e}"));
    serde_json::from_value(value).expect("args.nix returns a list of strings")
}
