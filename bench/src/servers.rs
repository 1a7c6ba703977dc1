//! The servers measured, as child processes on free loopback ports:
//! larder-server and larder-signer (release builds from the workspace) and
//! nginx with a generated configuration. Stopped when the guard drops.

use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::Error;
use crate::load::Pass;

/// A running server process, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Server {
    name: String,
    child: Child,
    /// Where its HTTP listeners are (none for the signer).
    pub addrs: Vec<SocketAddr>,
    pub log: PathBuf,
}

impl Server {
    fn spawn(
        name: &str,
        cmd: &mut Command,
        log: PathBuf,
        addrs: Vec<SocketAddr>,
        socket: Option<&Path>,
    ) -> Result<Server, Error> {
        let out = File::create(&log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let mut server = Server {
            name: name.to_owned(),
            child,
            addrs,
            log,
        };
        server.wait_ready(socket)?;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) the server has used so far: the process
    /// and its direct children (nginx's workers).
    pub fn cpu_time(&self) -> Result<Duration, Error> {
        let pid = self.pid();
        let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))?;
        let mut ticks = cpu_ticks(pid, false)?;
        for child in children.split_whitespace() {
            ticks += cpu_ticks(child.parse()?, false)?;
        }
        Ok(ticks_to_time(ticks))
    }

    /// `f`'s pass, with the CPU time this server and `other` (e.g. a
    /// proxy in front of it) used meanwhile.
    pub fn measure_with(
        &self,
        other: &Server,
        f: impl FnOnce() -> Result<Pass, Error>,
    ) -> Result<Pass, Error> {
        let before = self.cpu_time()? + other.cpu_time()?;
        let mut pass = f()?;
        let after = self.cpu_time()? + other.cpu_time()?;
        pass.cpu = Some(after.saturating_sub(before));
        Ok(pass)
    }

    /// `f`'s pass, with the CPU time this server used meanwhile.
    pub fn measure(&self, f: impl FnOnce() -> Result<Pass, Error>) -> Result<Pass, Error> {
        let before = self.cpu_time()?;
        let mut pass = f()?;
        pass.cpu = Some(self.cpu_time()?.saturating_sub(before));
        Ok(pass)
    }

    /// The first HTTP listener.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Until every listener accepts connections, and the unix socket too.
    fn wait_ready(&mut self, socket: Option<&Path>) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let ready = |s: &Server| {
            s.addrs.iter().all(|a| TcpStream::connect(a).is_ok())
                && socket.is_none_or(|p| UnixStream::connect(p).is_ok())
        };
        while !ready(self) {
            if let Some(status) = self.child.try_wait()? {
                let log = fs::read_to_string(&self.log).unwrap_or_default();
                return Err(format!("{} exited with {status}:\n{log}", self.name).into());
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not start listening", self.name).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // nginx's workers exit with a SIGTERM'd master, not a SIGKILL'd one.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address nothing listens on right now.
pub fn free_addr() -> Result<SocketAddr, Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Where [`pin_binaries`] put this run's copies.
static PINNED: OnceLock<PathBuf> = OnceLock::new();

/// Copies the release builds of larder-server and larder-signer to
/// `dir/bin` and runs those from then on: others rebuilding the workspace
/// during a run must not change the binary between measurements.
pub fn pin_binaries(dir: &Path) -> Result<(), Error> {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin)?;
    for name in ["larder-server", "larder-signer"] {
        fs::copy(binary(name)?, bin.join(name))?;
    }
    PINNED
        .set(bin)
        .map_err(|_| Error::from("binaries pinned twice"))
}

/// The pinned copy of a workspace binary, or its release build.
pub fn binary(name: &str) -> Result<PathBuf, Error> {
    if let Some(bin) = PINNED.get() {
        return Ok(bin.join(name));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("release").join(name);
    if !path.is_file() {
        return Err(format!(
            "{} missing: cargo build --release -p larder-server -p larder-signer",
            path.display()
        )
        .into());
    }
    Ok(path)
}

/// Whether `larder-server --help` offers `flag`, and does not call it
/// unimplemented (flags land while the benchmark exists).
pub fn server_has(flag: &str) -> Result<bool, Error> {
    let help = Command::new(binary("larder-server")?)
        .arg("--help")
        .output()?;
    let help = String::from_utf8_lossy(&help.stdout);
    Ok(help
        .split("\n\n")
        .any(|option| option.contains(flag) && !option.contains("not implemented")))
}

/// larder-server on `store_root` with extra flags, logging warnings only.
pub fn larder(store_root: &Path, flags: &[&str], dir: &Path) -> Result<Server, Error> {
    let addr = free_addr()?;
    let mut cmd = Command::new(binary("larder-server")?);
    cmd.arg("--bind")
        .arg(addr.to_string())
        .arg("--store-root")
        .arg(store_root)
        .args(["--log", "warn"])
        .args(flags);
    Server::spawn(
        "larder-server",
        &mut cmd,
        dir.join("larder-server.log"),
        vec![addr],
        None,
    )
}

/// larder-signer on `socket` with one key, checking against `store_root`.
pub fn signer(socket: &Path, key: &Path, store_root: &Path, dir: &Path) -> Result<Server, Error> {
    let mut cmd = Command::new(binary("larder-signer")?);
    cmd.arg("serve")
        .arg("--socket")
        .arg(socket)
        .arg("--key-file")
        .arg(key)
        .arg("--store-root")
        .arg(store_root);
    Server::spawn(
        "larder-signer",
        &mut cmd,
        dir.join("larder-signer.log"),
        Vec::new(),
        Some(socket),
    )
}

/// nginx serving each of `roots` as static files on a port of its own:
/// sendfile, keep-alive, no access log, as many workers as cores.
pub fn nginx(roots: &[&Path], dir: &Path) -> Result<Server, Error> {
    let addrs = roots
        .iter()
        .map(|_| free_addr())
        .collect::<Result<Vec<_>, _>>()?;
    let servers: String = roots
        .iter()
        .zip(&addrs)
        .map(|(root, addr)| format!("  server {{ listen {addr}; root {}; }}\n", root.display()))
        .collect();
    start_nginx("nginx", &servers, addrs, dir)
}

/// nginx in front of larder-server at `larder`, proxying as
/// `contrib/nginx/larder.conf` does (memory buffers of 64 KiB, keep-alive
/// upstream), with
/// that recipe's internal locations for `--accel-redirect /_larder_cache/`
/// aliased to `cache_dir` (unused unless larder-server redirects).
pub fn nginx_front(
    name: &str,
    larder: SocketAddr,
    cache_dir: &Path,
    dir: &Path,
) -> Result<Server, Error> {
    let addr = free_addr()?;
    let cache = cache_dir.display();
    let site = format!(
        "  upstream larder {{ server {larder}; keepalive 32; }}\n\
         server {{\n  listen {addr};\n  proxy_buffering on;\n  proxy_max_temp_file_size 0;\n\
           proxy_buffer_size 64k;\n  proxy_buffers 8 64k;\n  proxy_busy_buffers_size 128k;\n\
           proxy_http_version 1.1;\n\
           proxy_set_header Connection \"\";\n  proxy_set_header Host $host;\n\
           proxy_set_header X-Larder-Offload on;\n\
           location / {{ proxy_pass http://larder; }}\n\
           location /_larder_cache/file/ {{ internal; alias {cache}/; etag off; \
             add_header ETag $upstream_http_etag; error_page 403 404 = @larder_no_offload; }}\n\
           location /_larder_cache/encoded/ {{ internal; alias {cache}/; etag off; max_ranges 0; \
             add_header ETag $upstream_http_etag; add_header Content-Encoding zstd; \
             add_header Vary Accept-Encoding; error_page 403 404 = @larder_no_offload; }}\n\
           location @larder_no_offload {{ proxy_pass http://larder$request_uri; \
             proxy_set_header X-Larder-Offload off; proxy_set_header Connection \"\"; }}\n\
         }}\n"
    );
    start_nginx(name, &site, vec![addr], dir)
}

/// nginx (master and one worker per core) with `servers` in its `http {}`,
/// its files under `<dir>/<name>`, listening on `addrs`.
fn start_nginx(
    name: &str,
    servers: &str,
    addrs: Vec<SocketAddr>,
    dir: &Path,
) -> Result<Server, Error> {
    let prefix = dir.join(name);
    fs::create_dir_all(prefix.join("tmp"))?;
    let tmp = prefix.join("tmp");
    let temps: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|t| format!("  {t}_temp_path {};\n", tmp.join(t).display()))
        .collect();
    let config = format!(
        "daemon off;\nmaster_process on;\nuser root;\nworker_processes auto;\npid {pid};\nerror_log {log} warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  tcp_nodelay on;\n\
         keepalive_timeout 75s;\n  keepalive_requests 1000000;\n{temps}\
         types {{ text/x-nix-narinfo narinfo; text/x-nix-cache-info nix-cache-info; application/x-nix-nar nar; application/zstd zst; }}\n\
         default_type application/octet-stream;\n{servers}}}\n",
        pid = prefix.join("nginx.pid").display(),
        log = prefix.join("error.log").display(),
    );
    let conf = prefix.join("nginx.conf");
    fs::write(&conf, config)?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .args(["-e", "stderr"]);
    Server::spawn(name, &mut cmd, prefix.join("stderr.log"), addrs, None)
}

/// utime + stime of a process in clock ticks; with `children`, the
/// cutime + cstime of its waited-for children instead.
pub fn cpu_ticks(pid: u32, children: bool) -> Result<u64, Error> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .ok_or_else(|| format!("bad /proc/{pid}/stat"))?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14-17 of stat(5); `rest`
    // starts at field 3.
    let first = if children { 13 } else { 11 };
    let field =
        |i: usize| -> Result<u64, Error> { Ok(fields.get(i).ok_or("short /proc stat")?.parse()?) };
    Ok(field(first)? + field(first + 1)?)
}

/// Clock ticks (`getconf CLK_TCK`, 100 on Linux) as time.
pub fn ticks_to_time(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 10)
}

/// VmRSS and VmHWM of a process, in KiB.
pub fn memory_kib(pid: u32) -> Result<(u64, u64), Error> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64, Error> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .ok_or_else(|| format!("no {name} in /proc/{pid}/status").into())
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// The larder-server binary a bench runs when none is named: the release
/// build if there is one (`target/release/larder-server`, relative to the
/// checkout's root, where benches are run from), else the debug build.
pub fn default_binary() -> PathBuf {
    let release = Path::new("target/release/larder-server");
    if release.exists() {
        release.to_owned()
    } else {
        PathBuf::from("target/debug/larder-server")
    }
}

/// Fails unless this process's soft RLIMIT_NOFILE (`Max open files` in
/// `/proc/self/limits`) is at least `want` descriptors; the servers a bench
/// starts inherit it. The error says which `ulimit -n` to run.
pub fn check_nofile(want: u64) -> Result<(), Error> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if soft < want {
        return Err(
            format!("open-file limit {soft} < {want}: run `ulimit -n {want}` first").into(),
        );
    }
    Ok(())
}

/// Start `binary` (a larder-server) on the store under `root`, bound to
/// `addr`, with `extra` flags, its output in `work/server.log`; returns
/// once `addr` accepts connections.
///
/// # Errors
/// The log file or the process cannot be made, or the server does not
/// accept connections within 20 s.
pub fn start_server(
    binary: &Path,
    root: &Path,
    addr: SocketAddr,
    extra: &[String],
    work: &Path,
) -> Result<Child, Error> {
    let log = File::create(work.join("server.log"))?;
    let child = Command::new(binary)
        .arg("--store-root")
        .arg(root)
        .args(["--bind", &addr.to_string()])
        .args(extra)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return Err("server did not start".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child)
}
