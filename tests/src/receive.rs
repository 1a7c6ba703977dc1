//! The real `larder-sync receive` on a free loopback port, importing into a
//! [`TestStore`]: a tokens file and staging dir of its own, a netrc for
//! `nix copy --to http://…`, killed on drop and restartable on the same
//! port (for crash tests). Its log is printed when a test fails.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::process::{Running, binary, free_port, wait_until};
use crate::{TestStore, nix_command};

/// The pusher every test receiver knows: `ci` with this token.
pub const PUSHER: &str = "ci";
pub const TOKEN: &str = "ci-token-0123456789";
/// A second pusher and its token ([`TestReceiver::add_second_pusher`]).
pub const OTHER: &str = "other";
pub const OTHER_TOKEN: &str = "other-token-0123456789";

pub struct TestReceiver {
    process: Option<Running>,
    port: u16,
    store_root: PathBuf,
    extra: Vec<String>,
    pub staging: PathBuf,
    pub tokens: PathBuf,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl TestReceiver {
    /// Receive into `store` for pusher [`PUSHER`] with extra flags.
    pub fn start(store: &TestStore, extra: &[&str]) -> TestReceiver {
        let dir = tempfile::Builder::new()
            .prefix("larder-receive-")
            .tempdir()
            .expect("tempdir");
        let tokens = dir.path().join("tokens");
        fs::write(&tokens, format!("# test pushers\n{PUSHER} {TOKEN}\n")).unwrap();
        fs::set_permissions(&tokens, fs::Permissions::from_mode(0o600)).unwrap();
        let mut receiver = TestReceiver {
            process: None,
            port: free_port(),
            store_root: store.root().to_owned(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            staging: dir.path().join("staging"),
            tokens,
            log: dir.path().join("receive.log"),
            dir,
        };
        receiver.restart();
        receiver
    }

    /// `larder-sync receive` with this receiver's flags (not started).
    pub fn command(&self) -> Command {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = Command::new(binary("larder-sync"));
        cmd.env("NIX_CONFIG", crate::larder_nix_config())
            .env("LARDER_SYNC_LOG", "larder_sync=debug,info")
            .arg("--store-root")
            .arg(&self.store_root)
            .arg("receive")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--tokens")
            .arg(&self.tokens)
            .arg("--staging-dir")
            .arg(&self.staging)
            .args(&self.extra)
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        cmd
    }

    /// SIGKILL the receiver (a crash).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Give the tokens file a second pusher ([`OTHER`], [`OTHER_TOKEN`])
    /// beside [`PUSHER`], and restart on it.
    pub fn add_second_pusher(&mut self) {
        fs::write(
            &self.tokens,
            format!("{PUSHER} {TOKEN}\n{OTHER} {OTHER_TOKEN}\n"),
        )
        .expect("write the tokens file");
        fs::set_permissions(&self.tokens, fs::Permissions::from_mode(0o600))
            .expect("chmod the tokens file");
        self.restart();
    }

    /// (Re)start on the same port; returns once it answers.
    pub fn restart(&mut self) {
        self.kill();
        let mut process = Running::spawn("larder-sync receive", &mut self.command());
        let url = format!("{}/nix-cache-info", self.url());
        let agent = ureq::agent();
        wait_until(&mut process, || {
            agent
                .get(&url)
                .set("Authorization", &format!("Bearer {TOKEN}"))
                .call()
                .is_ok()
        });
        self.process = Some(process);
    }

    /// Send a signal (`HUP`, `TERM`, …) to the running receiver.
    pub fn signal(&self, signal: &str) {
        self.process
            .as_ref()
            .expect("receiver running")
            .signal(signal);
    }

    /// Panic if the receiver has exited.
    pub fn assert_alive(&mut self) {
        self.process
            .as_mut()
            .expect("receiver running")
            .assert_alive();
    }

    /// The running receiver's process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Running::pid)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A netrc file giving `login`/`token` for 127.0.0.1.
    pub fn netrc(&self, login: &str, token: &str) -> PathBuf {
        let path = self
            .dir
            .path()
            .join(format!("netrc-{login}-{}", token.len()));
        fs::write(
            &path,
            format!("machine 127.0.0.1 login {login} password {token}\n"),
        )
        .unwrap();
        path
    }

    /// Where arrivals of [`PUSHER`] are rooted (the default --gc-root-dir).
    pub fn pusher_roots(&self) -> PathBuf {
        self.store_root
            .join("nix/var/nix/gcroots/larder")
            .join(format!("receive-{PUSHER}"))
    }

    /// Names in the staging dir (empty when nothing is left behind).
    pub fn staging_entries(&self) -> Vec<String> {
        fs::read_dir(&self.staging)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A request with the pusher's token as Basic auth (as Nix sends it).
    pub fn request(&self, method: &str, path: &str) -> ureq::Request {
        let basic = base64_basic(PUSHER, TOKEN);
        ureq::request(method, &format!("{}{path}", self.url()))
            .set("Authorization", &format!("Basic {basic}"))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TestReceiver {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- larder-sync receive log ---\n{}", self.log());
        }
    }
}

/// Options that stop Nix from remembering a cache's answers across runs
/// (`~/.cache/nix/binary-cache-v6.sqlite`): test ports are reused, and a
/// test that empties a store must not be told "already there" by the cache.
pub const NO_NARINFO_CACHE: [&str; 6] = [
    "--option",
    "narinfo-cache-positive-ttl",
    "0",
    "--option",
    "narinfo-cache-negative-ttl",
    "0",
];

/// `nix copy --to URL` from `from` with a netrc file: what a CI runner does.
pub fn push(from: &TestStore, url: &str, netrc: &Path, paths: &[String]) -> Output {
    nix_command("nix")
        .args(["copy", "--store"])
        .arg(from.root())
        .args(["--to", url, "--option", "netrc-file"])
        .arg(netrc)
        .args(NO_NARINFO_CACHE)
        .args(paths)
        .output()
        .expect("run nix copy")
}

/// `user:password` in base64, for a hand-made Basic header.
pub fn base64_basic(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// A Nix expression for a closure of `n` paths plus a top: `<tag>-i`
/// refers to `<tag>-(i-1)`, and the top (the expression's value) refers to
/// all of them.
pub fn chain_expr(tag: &str, n: usize) -> String {
    format!(
        r#"let
          mk = i: prev: derivation {{ name = "{tag}-${{toString i}}"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; inherit prev; args = ["-c" "echo {tag} ${{toString i}} $prev > $out"]; }};
          chain = builtins.foldl' (acc: i: acc ++ [ (mk i (if acc == [] then "" else builtins.elemAt acc (i - 1))) ]) [] (builtins.genList (x: x) {n});
        in derivation {{ name = "{tag}-top"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; deps = chain; args = ["-c" "echo $deps > $out"]; }}"#
    )
}

/// Build [`chain_expr`] in `store`. Returns every path, the top last.
pub fn chain_closure(store: &TestStore, tag: &str, n: usize) -> Vec<String> {
    let top = store.build_expr(&chain_expr(tag, n)).remove(0);
    let out = crate::run_stdout(store.nix("nix-store").args(["-qR", &top]));
    let mut paths: Vec<String> = out.lines().map(str::to_owned).collect();
    paths.retain(|p| p != &top);
    paths.push(top);
    paths
}

/// Status and body of a hand-made request (non-2xx statuses included).
pub fn send(req: ureq::Request, body: &[u8]) -> (u16, String) {
    match req.send_bytes(body) {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("request failed: {e}"),
    }
}

/// The NAR of a regular file holding `contents`, written by hand (NAR
/// strings: length, bytes, zero padding to 8).
pub fn file_nar(contents: &[u8]) -> Vec<u8> {
    let mut n = Vec::new();
    for t in [
        &b"nix-archive-1"[..],
        b"(",
        b"type",
        b"regular",
        b"contents",
        contents,
        b")",
    ] {
        n.extend_from_slice(&(t.len() as u64).to_le_bytes());
        n.extend_from_slice(t);
        n.resize(n.len() + (8 - t.len() % 8) % 8, 0);
    }
    n
}

/// Copy `paths` (with their closures) from `from` straight into the cache
/// host's store `host`, as a build or substitution on the host would leave
/// them: valid there and rooted by nothing.
pub fn copy_unrooted(from: &TestStore, host: &TestStore, paths: &[String]) {
    crate::run(
        nix_command("nix")
            .args(["copy", "--no-check-sigs", "--store"])
            .arg(from.root())
            .arg("--to")
            .arg(host.root())
            .args(paths),
    );
}
