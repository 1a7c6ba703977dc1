//! The real `larder-signer` binary serving a [`TestStore`]: a fresh key made
//! by `larder-signer generate-key`, a socket in a directory of its own,
//! killed on drop and restartable on the same socket and key.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{Running, binary, wait_until};
use crate::{TestStore, run_stdout};

pub struct TestSigner {
    process: Option<Running>,
    pub socket: PathBuf,
    pub key_file: PathBuf,
    pub public_key: String,
    store_root: PathBuf,
    extra: Vec<String>,
    _key_dir: tempfile::TempDir,
    _socket_dir: tempfile::TempDir,
}

/// `larder-signer generate-key`: returns the key file and the public key.
pub fn generate_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(format!("{name}.sec"));
    let public = run_stdout(
        Command::new(binary("larder-signer"))
            .args(["generate-key", "--name", name, "--out"])
            .arg(&key),
    );
    (key, public.trim().to_owned())
}

impl TestSigner {
    /// Start a signer for `store` with extra `serve` flags.
    pub fn start(store: &TestStore, extra: &[&str]) -> Self {
        let key_dir = tempfile::tempdir().unwrap();
        let socket_dir = tempfile::tempdir().unwrap();
        let (key_file, public_key) = generate_key(key_dir.path(), "larder-test-1");
        let mut signer = TestSigner {
            process: None,
            socket: socket_dir.path().join("signer.sock"),
            key_file,
            public_key,
            store_root: store.root().to_owned(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            _key_dir: key_dir,
            _socket_dir: socket_dir,
        };
        signer.restart();
        signer
    }

    /// The directory holding the socket (to open it up to another user).
    pub fn socket_dir(&self) -> &Path {
        self._socket_dir.path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Running::pid)
    }

    /// Send a signal (`HUP`, `STOP`, `CONT`, `TERM`) to the signer.
    pub fn signal(&self, signal: &str) {
        self.process
            .as_ref()
            .expect("signer running")
            .signal(signal);
    }

    /// Wait (at most 60 s) for the signer to exit; its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let status = self.process.as_mut().expect("signer running").wait_exit();
        self.process = None;
        status
    }

    /// Serve with these extra `serve` flags from the next [`TestSigner::restart`]
    /// on (e.g. `--key-file` a second key: rotation).
    pub fn set_extra(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
    }

    /// The `serve` command [`TestSigner::restart`] runs, for a second signer.
    pub fn serve_command(&self) -> Command {
        let mut cmd = Command::new(binary("larder-signer"));
        cmd.arg("serve")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--key-file")
            .arg(&self.key_file)
            .arg("--store-root")
            .arg(&self.store_root)
            .args(&self.extra);
        cmd
    }

    /// SIGKILL the signer, leaving its socket file behind as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// (Re)start on the same socket and key; returns once it listens.
    pub fn restart(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.socket);
        let mut process = Running::spawn("larder-signer", &mut self.serve_command());
        let socket = self.socket.clone();
        wait_until(&mut process, || socket.exists());
        self.process = Some(process);
    }
}
