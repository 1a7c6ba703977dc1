//! Harness for the deployment tests (`tests/tests/deploy_*.rs`): the files
//! under `nixos-module/`, `contrib/systemd/` and `grafana/` checked with the
//! real tools that consume them (`nix-instantiate`, `systemd-analyze`,
//! Prometheus). A missing tool fails the test with the Debian package to
//! install (`scripts/setup.sh --test` installs them all).

pub mod module;
pub mod nix_eval;
pub mod prometheus;
pub mod promql;
pub mod systemd;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{Running, wait_until};
// One loopback-port helper for all harnesses (it lives with sshd's).
pub use crate::sshd::free_port;

/// The workspace root (where `flake.nix` and `Cargo.lock` are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// Fail, naming the Debian package, unless `program --version` runs.
pub fn require_tool(program: &str, package: &str) {
    let ok = Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "`{program}` is required: apt-get install {package} (scripts/setup.sh --test installs it)"
    );
}

/// Every file under `dir` whose name ends in `suffix`, skipping `target/`
/// and hidden directories, sorted.
pub fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    pending.push(path);
                }
            } else if name.ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// A child process whose stdout and stderr go to a log file, printed if
/// the test panics while it runs.
pub struct Logged {
    pub process: Running,
    log: PathBuf,
}

impl Logged {
    /// Start `cmd`, logging to `<dir>/<name>.log`.
    pub fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> Logged {
        let log = dir.join(format!("{name}.log"));
        let file = File::create(&log).expect("log file");
        cmd.stdout(file.try_clone().expect("log file")).stderr(file);
        Logged {
            process: Running::spawn(name, cmd),
            log,
        }
    }

    /// Wait until `url` answers 200.
    pub fn await_http(&mut self, url: &str) {
        wait_until(&mut self.process, || ureq::get(url).call().is_ok());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        self.process.kill();
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.log());
        }
    }
}
