//! The NixOS module's units as the tests use them: evaluated with
//! [`nix_eval::module`], their command lines run with the built binaries in
//! place of the module's (fake) package and a directory of the test's in
//! place of systemd's credentials directory (`%d`).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::nix_eval;
use crate::process::binary;

/// The evaluated module (see [`nix_eval::module`]).
pub struct ModuleEval {
    pub value: Value,
}

impl ModuleEval {
    /// Evaluate the module under `config`; panics with Nix's message.
    pub fn new(config: &Value) -> ModuleEval {
        let value =
            nix_eval::module(config).unwrap_or_else(|e| panic!("evaluating the module: {e}"));
        ModuleEval { value }
    }

    /// The failed assertions' messages.
    pub fn failed(&self) -> Vec<String> {
        serde_json::from_value(self.value["failed"].clone()).expect("failed is a list of strings")
    }

    /// `systemd.services.<unit>` (unit without `.service`).
    pub fn service(&self, unit: &str) -> &Value {
        let service = &self.value["systemd"]["services"][unit];
        assert!(service.is_object(), "the module defines no {unit}.service");
        service
    }

    /// `serviceConfig.<key>` of `unit` as a string (`ExecStart`, ...).
    pub fn exec(&self, unit: &str, key: &str) -> String {
        self.service(unit)["serviceConfig"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{unit}: no {key}"))
            .to_owned()
    }

    /// The text of the `--config` file on `unit`'s `ExecStart` (the
    /// settings rendered as TOML).
    pub fn config_file(&self, unit: &str) -> String {
        let exec = self.exec(unit, "ExecStart");
        let words = self.words(&exec);
        let path = words
            .iter()
            .skip_while(|w| *w != "--config")
            .nth(1)
            .unwrap_or_else(|| panic!("{unit}: no --config in {exec}"));
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The fake package's store path (`/nix/store/…-larder`).
    pub fn package(&self) -> String {
        self.value["packagePath"]
            .as_str()
            .expect("packagePath")
            .to_owned()
    }

    /// `unit`'s `key` line (ExecStart, ExecStartPre; a leading `+` left
    /// out) as a command: the package's binaries are the built ones, `%d`
    /// is `credentials` (in the environment too, as systemd expands it in
    /// `Environment=`), the environment is the unit's.
    pub fn command(&self, unit: &str, key: &str, credentials: &Path) -> Command {
        let line = self.exec(unit, key);
        let words = self.words(line.trim_start_matches('+'));
        let mut words = words
            .into_iter()
            .map(|w| w.replace("%d", &credentials.display().to_string()));
        let mut cmd = Command::new(words.next().expect("a program"));
        cmd.args(words);
        if let Some(env) = self.service(unit)["environment"].as_object() {
            for (k, v) in env {
                let v = v.as_str().unwrap_or_default();
                cmd.env(k, v.replace("%d", &credentials.display().to_string()));
            }
        }
        cmd
    }

    /// A command line's words, unquoted (`lib.escapeShellArgs`' single
    /// quotes), with `<package>/bin/<program>` made the built binary.
    pub fn words(&self, line: &str) -> Vec<String> {
        let bin = format!("{}/bin/", self.package());
        line.split_whitespace()
            .map(|w| {
                let w = w.trim_matches('\'');
                match w.strip_prefix(&bin) {
                    Some(program) => binary(program).display().to_string(),
                    None => w.to_owned(),
                }
            })
            .collect()
    }
}

/// The module's larder-server started as systemd would: its `ExecStart`
/// behind `systemd-socket-activate` on a free loopback port, logging into
/// `dir`. Returns the process and its `http://127.0.0.1:PORT` once
/// `/health` answers.
pub fn socket_activated_server(
    module: &ModuleEval,
    credentials: &Path,
    dir: &Path,
) -> (super::Logged, String) {
    super::require_tool("systemd-socket-activate", "systemd");
    let port = super::free_port();
    let server_cmd = module.command("larder-server", "ExecStart", credentials);
    let mut server = super::Logged::spawn(
        "larder-server",
        Command::new("systemd-socket-activate")
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(server_cmd.get_program())
            .args(server_cmd.get_args()),
        dir,
    );
    let url = format!("http://127.0.0.1:{port}");
    server.await_http(&format!("{url}/health"));
    (server, url)
}
