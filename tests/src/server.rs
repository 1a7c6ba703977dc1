//! The real `larder-server` binary on a free loopback port, serving a
//! [`TestStore`]: started by [`LarderServer::start`], ready once `/health`
//! answers, killed on drop. The binary must be built first
//! (`cargo build --workspace --bins`, as `scripts/test.sh` does).

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::TestStore;
use crate::process::{Running, binary, binary_for_any_user, free_port, wait_until};

pub struct LarderServer {
    process: Running,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl LarderServer {
    /// Serve `store` with extra command-line flags (e.g. `--compression zstd`).
    pub fn start(store: &TestStore, flags: &[&str]) -> Self {
        Self::start_with_env(store, flags, &[])
    }

    /// [`LarderServer::start`] signing through larder-signer's socket
    /// (`--signer-socket`), plus `flags`.
    pub fn start_signed(store: &TestStore, signer_socket: &Path, flags: &[&str]) -> Self {
        let socket = signer_socket.to_str().expect("a UTF-8 socket path");
        let mut args = vec!["--signer-socket", socket];
        args.extend_from_slice(flags);
        Self::start(store, &args)
    }

    /// [`LarderServer::start`] with extra environment variables.
    pub fn start_with_env(store: &TestStore, flags: &[&str], env: &[(&str, &OsStr)]) -> Self {
        Self::start_as(store, flags, env, None)
    }

    /// [`LarderServer::start_with_env`] as another user: `Some((uid, gid))`.
    pub fn start_as(
        store: &TestStore,
        flags: &[&str],
        env: &[(&str, &OsStr)],
        user: Option<(u32, u32)>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("server.log");
        let port = free_port();
        // Another user may not reach the checkout's target dir.
        let program = match user {
            Some(_) => binary_for_any_user("larder-server"),
            None => binary("larder-server"),
        };
        let mut cmd = Command::new(program);
        cmd.arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--store-root")
            .arg(store.root())
            .args(["--log", "larder_server=debug,info"])
            .args(flags)
            .envs(env.iter().copied())
            .stdout(File::create(&log).expect("log file"))
            .stderr(File::create(&log).expect("log file"));
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
        }
        let mut server = LarderServer {
            process: Running::spawn("larder-server", &mut cmd),
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        let health = format!("{}/health", server.url);
        let agent = ureq::agent();
        wait_until(&mut server.process, || agent.get(&health).call().is_ok());
        server
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Send a signal (`TERM`, `HUP`, …) to the server.
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }

    /// Wait (at most 60 s) for the server to exit; its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.process.wait_exit()
    }

    /// Whether the server has exited.
    pub fn exited(&mut self) -> bool {
        self.process.exited()
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A request for `path` (starting with `/`) on this server.
    pub fn request(&self, method: &str, path: &str) -> ureq::Request {
        ureq::request(method, &format!("{}{path}", self.url))
    }

    /// GET `path`: status, headers we look at, and the whole body. Non-2xx
    /// statuses are returned, not errors.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.request("GET", path);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        Reply::from(req.call())
    }

    /// The value of one series in `/metrics`, e.g.
    /// `larder_signature_cache_total{result="hit"}`; panics if absent.
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics", &[]).text();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for LarderServer {
    fn drop(&mut self) {
        self.process.kill();
        if std::thread::panicking() {
            eprintln!("--- larder-server log ---\n{}", self.log());
        }
    }
}

/// A finished response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    fn from(result: Result<ureq::Response, ureq::Error>) -> Reply {
        let response = match result {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("request failed: {e}"),
        };
        let status = response.status();
        let headers = response
            .headers_names()
            .into_iter()
            .filter_map(|name| {
                let value = response.header(&name)?.to_owned();
                Some((name, value))
            })
            .collect();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut response.into_reader(), &mut body).expect("read body");
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A header's value (names are case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}
