//! The reverse-proxy and cache recipes of `contrib/` (nginx, Caddy, Varnish) run for real in
//! front of a test's larder-server and receiver: the recipe file is used as
//! is, except for mechanical substitutions (the public listen address and
//! TLS lines become a loopback port, the two upstream ports the test's),
//! wrapped in what a test needs around it (prefix, pid, temp paths, no
//! admin endpoint). Killed on drop; its log is printed when a test fails.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{Running, free_port, wait_until};
use crate::receive::NO_NARINFO_CACHE;
use crate::{TestStore, nix_command};

/// The recipe's upstream addresses, as written in `contrib/`.
pub const RECIPE_SERVER: &str = "127.0.0.1:5000";
pub const RECIPE_RECEIVE: &str = "127.0.0.1:5001";
/// The `accel-redirect` prefix of the recipe's internal locations.
pub const OFFLOAD_PREFIX: &str = "/_larder_cache/";
/// larder-server's count of cached NARs it handed to nginx.
pub const OFFLOAD_REDIRECTED: &str = r#"larder_nar_offload_total{result="redirected"}"#;
/// larder-server's count of cached NARs it sent itself because nginx's
/// fallback asked (the file was gone or unreadable).
pub const OFFLOAD_FALLBACK: &str = r#"larder_nar_offload_total{result="fallback"}"#;

pub struct TestProxy {
    process: Running,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The workspace's `contrib/<path>`.
pub fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contrib")
        .join(path)
}

/// `text` with every `from` replaced, which must occur.
fn substitute(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the recipe no longer holds {from:?}");
    text.replace(from, to)
}

impl TestProxy {
    /// nginx with `contrib/nginx/larder.conf` included in its `http {}`,
    /// proxying to larder-server on `server` and the receiver on `receive`
    /// (both `127.0.0.1:PORT`).
    pub fn nginx(server: &str, receive: &str) -> TestProxy {
        let (dir, port) = proxy_dir("nginx");
        let site = server_site("larder.conf", port, server);
        let site = substitute(
            &site,
            &format!("server {RECIPE_RECEIVE};"),
            &format!("server {receive};"),
        );
        start_nginx(&site, dir, port)
    }

    /// nginx with `contrib/nginx/larder.conf` as [`TestProxy::nginx`]
    /// (no receiver), its internal locations for larder-server's
    /// `accel-redirect` aliased to `cache_dir`.
    pub fn nginx_offload(server: &str, cache_dir: &Path) -> TestProxy {
        Self::nginx_offload_as(server, cache_dir, None)
    }

    /// [`TestProxy::nginx_offload`], nginx running as another user
    /// (`Some((uid, gid))`), e.g. one that cannot read `cache_dir`.
    pub fn nginx_offload_as(server: &str, cache_dir: &Path, user: Option<(u32, u32)>) -> TestProxy {
        let (dir, port) = proxy_dir("nginx");
        let site = server_site("larder.conf", port, server);
        let site = substitute(
            &site,
            "alias /var/cache/larder-server/;",
            &format!("alias {}/;", cache_dir.display()),
        );
        start_nginx_as(&site, dir, port, user)
    }

    /// nginx with the caching front `contrib/nginx/larder-cache.conf`, its
    /// cache in a temp dir, in front of larder-server on `server`.
    pub fn nginx_cache(server: &str) -> TestProxy {
        let (dir, port) = proxy_dir("nginx");
        let site = server_site("larder-cache.conf", port, server);
        let cache = dir.path().join("cache");
        let site = substitute(
            &site,
            "/var/cache/nginx/larder ",
            &format!("{} ", cache.display()),
        );
        start_nginx(&site, dir, port)
    }

    /// nginx with `contrib/nginx/larder-replicas.conf` in front of the
    /// larder-servers at `replicas` (three `127.0.0.1:PORT`).
    pub fn nginx_replicas(replicas: [&str; 3]) -> TestProxy {
        let (dir, port) = proxy_dir("nginx");
        let mut site = loopback_site(&contrib("nginx/larder-replicas.conf"), port);
        for (i, addr) in replicas.iter().enumerate() {
            site = substitute(&site, &format!("replica{}.example.org:5000", i + 1), addr);
        }
        start_nginx(&site, dir, port)
    }

    /// varnishd with `contrib/varnish/larder.vcl` (its backend port made
    /// `server`'s) and the flags the recipe names, in the foreground, as
    /// the invoking user (`-j none`), with a 256 MiB memory store.
    pub fn varnish(server: &str) -> TestProxy {
        let (dir, port) = proxy_dir("varnish");
        let vcl = fs::read_to_string(contrib("varnish/larder.vcl")).expect("VCL recipe");
        let (host, backend_port) = server.rsplit_once(':').expect("ADDR:PORT");
        let vcl = substitute(
            &vcl,
            ".host = \"127.0.0.1\";",
            &format!(".host = \"{host}\";"),
        );
        let vcl = substitute(
            &vcl,
            ".port = \"5000\";",
            &format!(".port = \"{backend_port}\";"),
        );
        assert!(
            vcl.contains("http_gzip_support=off"),
            "the recipe's flags changed"
        );
        let file = dir.path().join("larder.vcl");
        fs::write(&file, vcl).unwrap();
        let log = dir.path().join("varnishd.log");
        let mut cmd = Command::new("varnishd");
        cmd.args(["-F", "-j", "none", "-a", &format!("127.0.0.1:{port}")])
            .arg("-n")
            .arg(dir.path().join("work"))
            .arg("-f")
            .arg(&file)
            .args(["-p", "http_gzip_support=off", "-s", "malloc,256m"])
            .args(["-T", "none"])
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::create(&log).unwrap());
        TestProxy::spawn("varnishd", &mut cmd, port, log, dir)
    }

    /// Caddy with `contrib/caddy/Caddyfile`, its site address made
    /// `http://127.0.0.1:PORT` (no certificate), proxying as
    /// [`TestProxy::nginx`] does.
    pub fn caddy(server: &str, receive: &str) -> TestProxy {
        let (dir, port) = proxy_dir("caddy");
        let recipe = fs::read_to_string(contrib("caddy/Caddyfile")).expect("Caddyfile");
        let mut site = substitute(
            &recipe,
            "cache.example.org {",
            &format!("http://127.0.0.1:{port} {{"),
        );
        site = substitute(
            &site,
            &format!("reverse_proxy {RECIPE_SERVER}"),
            &format!("reverse_proxy {server}"),
        );
        site = substitute(
            &site,
            &format!("reverse_proxy {RECIPE_RECEIVE}"),
            &format!("reverse_proxy {receive}"),
        );
        let log = dir.path().join("caddy.log");
        let config = format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{site}");
        let file = dir.path().join("Caddyfile");
        fs::write(&file, config).unwrap();
        let mut cmd = Command::new("caddy");
        cmd.args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&file)
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::create(&log).unwrap());
        TestProxy::spawn("caddy", &mut cmd, port, log, dir)
    }

    fn spawn(
        name: &str,
        cmd: &mut Command,
        port: u16,
        log: PathBuf,
        dir: tempfile::TempDir,
    ) -> TestProxy {
        let mut process = Running::spawn(name, cmd);
        let addr = format!("127.0.0.1:{port}");
        wait_until(&mut process, || std::net::TcpStream::connect(&addr).is_ok());
        TestProxy {
            process,
            port,
            log,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`: the "one public URL".
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many requests nginx logged as answered so far (its access log).
    pub fn requests_logged(&self) -> usize {
        fs::read_to_string(self._dir.path().join("access.log"))
            .map(|l| l.lines().count())
            .unwrap_or(0)
    }
}

/// `nix-store --dump` of `path` in `store`: the oracle for NAR bytes.
pub fn dump_of(store: &TestStore, path: &str) -> Vec<u8> {
    run_stdout_bytes(
        nix_command("nix-store")
            .arg("--dump")
            .arg(store.real_path(path)),
    )
}

fn run_stdout_bytes(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// GET `url` with `curl` (through a proxy): status, headers (lower-case
/// names), body. curl sends no `Accept-Encoding` unless `headers` has one.
pub fn curl(url: &str, headers: &[&str]) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "-", "-D"]).arg(&head);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let body = run_stdout_bytes(cmd.arg(url));
    let head = fs::read_to_string(head).unwrap().to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, body)
}

/// The substitution of `top` through `proxy` into a fresh store by the
/// real `nix copy --from`, with require-sigs and only `key` trusted.
pub fn substitute_through(proxy: &TestProxy, top: &str, key: &str) -> std::process::Output {
    let fresh = tempfile::tempdir().unwrap();
    nix_command("nix")
        .args(["copy", "--from", &proxy.url(), "--to"])
        .arg(fresh.path())
        .args(["--option", "require-sigs", "true"])
        .args(["--option", "trusted-public-keys", key])
        .args(NO_NARINFO_CACHE)
        .arg(top)
        .output()
        .unwrap()
}

/// A temp dir for a proxy's files, and a free loopback port for it.
fn proxy_dir(name: &str) -> (tempfile::TempDir, u16) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("larder-{name}-"))
        .tempdir()
        .expect("tempdir");
    (dir, free_port())
}

/// An nginx recipe with its public `listen 443 ssl` and TLS lines made a
/// plain loopback `port`.
/// The nginx recipe `contrib/nginx/<recipe>` as [`loopback_site`], its
/// larder-server upstream made `server` (`127.0.0.1:PORT`).
fn server_site(recipe: &str, port: u16, server: &str) -> String {
    let site = loopback_site(&contrib(&format!("nginx/{recipe}")), port);
    substitute(
        &site,
        &format!("server {RECIPE_SERVER};"),
        &format!("server {server};"),
    )
}

fn loopback_site(recipe: &Path, port: u16) -> String {
    let recipe = fs::read_to_string(recipe).expect("nginx recipe");
    let site = substitute(
        &recipe,
        "listen 443 ssl;",
        &format!("listen 127.0.0.1:{port};"),
    );
    site.lines()
        .filter(|l| {
            let l = l.trim_start();
            ![
                "listen [::]:443 ssl;",
                "ssl_certificate ",
                "ssl_certificate_key ",
            ]
            .iter()
            .any(|tls| l.starts_with(tls))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// nginx in the foreground, one process, with `site` included in its
/// `http {}` and every temp path in `dir`.
fn start_nginx(site: &str, dir: tempfile::TempDir, port: u16) -> TestProxy {
    start_nginx_as(site, dir, port, None)
}

/// [`start_nginx`] as `user` (`Some((uid, gid))`): its dir is opened to
/// everyone so that nginx can write its logs and temp files there.
fn start_nginx_as(
    site: &str,
    dir: tempfile::TempDir,
    port: u16,
    user: Option<(u32, u32)>,
) -> TestProxy {
    if user.is_some() {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    }
    fs::write(dir.path().join("larder.conf"), site).unwrap();
    let temps: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|t| format!("  {t}_temp_path {};\n", dir.path().join(t).display()))
        .collect();
    let log = dir.path().join("error.log");
    let config = format!(
        "daemon off;\n# One process, so that killing it stops it all.\nmaster_process off;\npid {pid};\n\
         error_log {log} info;\nevents {{ worker_connections 256; }}\n\
         http {{\n  access_log {access};\n{temps}  include {site};\n}}\n",
        pid = dir.path().join("nginx.pid").display(),
        log = log.display(),
        access = dir.path().join("access.log").display(),
        site = dir.path().join("larder.conf").display(),
    );
    let conf = dir.path().join("nginx.conf");
    fs::write(&conf, config).unwrap();
    let mut cmd = Command::new("nginx");
    cmd.arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .args(["-e", log.to_str().unwrap()]);
    if let Some((uid, gid)) = user {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(gid);
    }
    TestProxy::spawn("nginx", &mut cmd, port, log, dir)
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.process.kill();
        if std::thread::panicking() {
            eprintln!("--- proxy log ---\n{}", self.log());
        }
    }
}
