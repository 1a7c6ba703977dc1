//! Real larder binaries as child processes, killed when the guard drops.
//!
//! The binaries are the ones cargo built for this very test run: the test
//! executable lives in `<target>/<profile>/deps/`, the workspace's binaries
//! in `<target>/<profile>/` (the README's test command builds them before
//! the tests). Never "whichever build is newest": a stale release build
//! must not stand in for the code under test.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The directory of this test run's binaries: `LARDER_BIN_DIR` if set,
/// otherwise the profile directory the running test executable was built
/// into (`<target>/debug` for `cargo test`, `<target>/release` for
/// `cargo test --release`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LARDER_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    // <target>/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("{} is not under <target>/<profile>/deps", exe.display()))
}

/// The built binary `name` (e.g. `larder-signer`) of this test run.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is not built; run `cargo build --workspace --bins` with the same profile first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// [`binary`] copied where every user can run it, for tests that start a
/// binary as another user (`nobody`): the checkout may live in a directory
/// only its owner can enter (a `mktemp -d`, a 0700 home). The copy lives in
/// `<tmp>/larder-test-bins/`, named after the source's size and mtime so
/// that concurrent and repeated runs share it and a rebuild gets a new one.
pub fn binary_for_any_user(name: &str) -> PathBuf {
    let source = binary(name);
    let meta = source.metadata().expect("binary metadata");
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join("larder-test-bins");
    std::fs::create_dir_all(&dir).expect("create the shared binary dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .expect("make the shared binary dir reachable");
    let copy = dir.join(format!("{name}-{}-{mtime}", meta.len()));
    if !copy.is_file() {
        // Copy, then rename: a concurrent test never runs a half-written file.
        let partial = tempfile::NamedTempFile::new_in(&dir).expect("temporary file");
        std::fs::copy(&source, partial.path()).expect("copy the binary");
        std::fs::set_permissions(partial.path(), std::fs::Permissions::from_mode(0o755))
            .expect("make the binary executable");
        // Closed before the rename: exec of a file open for writing is ETXTBSY.
        partial
            .into_temp_path()
            .persist(&copy)
            .expect("publish the binary copy");
        forget_old_copies(&dir, name, &copy);
    }
    copy
}

/// Remove copies of `name` other than `current` made over an hour ago:
/// every rebuild makes a new one, and a test run lasts minutes.
fn forget_old_copies(dir: &Path, name: &str, current: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{name}-");
    for entry in entries.flatten() {
        let path = entry.path();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        let ours = entry.file_name().to_string_lossy().starts_with(&prefix);
        if ours && old && path != current {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `cmd.spawn()`, retried while it fails with ETXTBSY: a binary copied a
/// moment ago ([`binary_for_any_user`]) can still be open for writing in a
/// child that another test thread forked before the copy was closed (the
/// fd is closed only at that child's exec).
pub fn spawn_retrying_busy(cmd: &mut Command) -> std::io::Result<Child> {
    const ETXTBSY: i32 = 26;
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// A running child process, killed (SIGKILL) and reaped on drop.
pub struct Running {
    child: Child,
    name: String,
}

impl Running {
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        cmd.stdin(Stdio::null());
        let child = spawn_retrying_busy(cmd).unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
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

    /// Send `signal` (a name `kill -s` knows: `TERM`, `HUP`, `STOP`, `CONT`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {signal} {}", self.name);
    }

    /// Wait for the process to exit, for at most 60 s; its exit status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
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

/// A loopback port that refuses connections for as long as this lives: a
/// TCP socket bound to it that never listens. Unlike a port from
/// [`free_port`], no other test can start a server on it meanwhile (a
/// "nothing listens there" case that found a Garage of a parallel test).
pub struct ClosedPort {
    _socket: socket2::Socket,
    pub port: u16,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&any.into()).expect("bind a loopback port");
        let port = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("a bound address")
            .port();
        ClosedPort {
            _socket: socket,
            port,
        }
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        ClosedPort::new()
    }
}
