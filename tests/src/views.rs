//! Helpers for the view tests (`server_views*.rs`): a config file of
//! `[[view]]` tables beside its tokens and roots, raw HTTP for requests a
//! well-behaved client library will not send, and `nix copy` from a view.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::nix_command;
use crate::receive::NO_NARINFO_CACHE;

/// A token long enough for the server's rules.
pub const TOKEN_A: &str = "token-for-view-a-0123456789abcdef";
pub const TOKEN_B: &str = "token-for-view-b-fedcba9876543210";

/// A directory holding a server config and the files it names.
pub struct ViewFiles {
    pub dir: tempfile::TempDir,
}

impl ViewFiles {
    pub fn new() -> Self {
        ViewFiles {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A tokens file (mode 600) with one `NAME TOKEN` line.
    pub fn tokens(&self, name: &str, token: &str) -> PathBuf {
        let p = self.path(&format!("{name}.tokens"));
        std::fs::write(&p, format!("client {token}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// A GC-root directory with a symlink to each store path.
    pub fn gc_roots(&self, name: &str, paths: &[&str]) -> PathBuf {
        let d = self.path(name);
        std::fs::create_dir_all(&d).unwrap();
        for (i, p) in paths.iter().enumerate() {
            std::os::unix::fs::symlink(p, d.join(format!("root-{i}"))).unwrap();
        }
        d
    }

    /// A netrc file giving `token` for 127.0.0.1.
    pub fn netrc(&self, token: &str) -> PathBuf {
        let p = self.path(&format!("netrc-{}", &token[..12]));
        std::fs::write(
            &p,
            format!("machine 127.0.0.1 login anyone password {token}\n"),
        )
        .unwrap();
        p
    }

    /// Write the server's config file.
    pub fn config(&self, text: &str) -> PathBuf {
        let p = self.path("server.toml");
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Default for ViewFiles {
    fn default() -> Self {
        Self::new()
    }
}

/// `nix copy --from url path` into a fresh store, with `require-sigs` and
/// only `trusted_key`, and the netrc file if given.
pub fn copy_from(url: &str, path: &str, trusted_key: &str, netrc: Option<&Path>) -> Output {
    let dest = tempfile::tempdir().unwrap();
    let mut cmd = nix_command("nix");
    cmd.args(["copy", "--from", url, "--to"])
        .arg(dest.path())
        .args(["--option", "require-sigs", "true"])
        .args(["--option", "trusted-public-keys", trusted_key])
        .args(NO_NARINFO_CACHE);
    if let Some(n) = netrc {
        cmd.args(["--option", "netrc-file"]).arg(n);
    }
    cmd.arg(path).output().unwrap()
}

/// Send `request` (raw bytes, `Connection: close` advised) to `url`'s
/// host and port; the whole response as text.
pub fn raw_http(url: &str, request: &str) -> String {
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw response.
pub fn raw_status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Poll `check` until it holds (at most 30 s).
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
