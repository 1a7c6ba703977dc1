//! Real larder binaries as child processes: found in the workspace's target
//! dir (the README's test command builds them before the tests), killed
//! when the guard drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The built binary `name` (e.g. `larder-signer`). `LARDER_BIN_DIR`
/// overrides the directory; otherwise `<target>/debug` or `<target>/release`,
/// whichever is newer.
pub fn binary(name: &str) -> PathBuf {
    let dirs: Vec<PathBuf> = match std::env::var_os("LARDER_BIN_DIR") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
            vec![target.join("debug"), target.join("release")]
        }
    };
    dirs.iter()
        .map(|d| d.join(name))
        .filter(|p| p.is_file())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            panic!("{name} is not built in {dirs:?}; run `cargo build --workspace --bins` (scripts/test.sh does)")
        })
}

/// A running child process, killed (SIGKILL) and reaped on drop.
pub struct Running {
    child: Child,
    name: String,
}

impl Running {
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Running {
            child,
            name: name.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panic if the process has exited.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early with {status}", self.name);
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Wait until `ready()` holds, for at most 20 s, checking the process lives.
pub fn wait_until(process: &mut Running, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        process.assert_alive();
        assert!(
            Instant::now() < deadline,
            "{} did not become ready",
            process.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}
