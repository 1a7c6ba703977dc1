//! Slow clients against everyone else: narinfo latency (p50/p99) while
//! 0, 100 and 600 clients hold a NAR download open without reading, and
//! while 10 000 idle keep-alive connections are open; the server's thread
//! count and RSS (`/proc/PID/status`) in each state.
//!
//! A stalled reader sends `GET` for a NAR of a 24 MiB path, reads the
//! headers and a little of the body, then stops reading (its receive
//! window fills and the server's send blocks). Every narinfo request goes
//! to the DB (`--path-info-ttl-ms 0`), over one keep-alive connection,
//! with a 5 s timeout counted as a failure.
//!
//! `stalled [SERVER_BINARY] [-- EXTRA SERVER FLAGS]` (default binary:
//! `target/release/larder-server`, else `target/debug/larder-server`).
//! Needs `ulimit -n 20000` or more (the server inherits it). Prints Markdown
//! rows for `bench/results/stalled.md`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use larder_bench::Error;
use larder_bench::servers::{check_nofile, default_binary, start_server};

const NARINFO_REQUESTS: usize = 400;
const TIMEOUT: Duration = Duration::from_secs(5);
const BIG_FILE_MIB: usize = 24;
/// Time for the server to send what the stalled clients accept, before measuring.
const SETTLE: Duration = Duration::from_secs(5);

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (binary, extra) = match args.iter().position(|a| a == "--") {
        Some(i) => (args[..i].first().cloned(), args[i + 1..].to_vec()),
        None => (args.first().cloned(), Vec::new()),
    };
    let binary = binary.map(PathBuf::from).unwrap_or_else(default_binary);
    check_nofile(20_000)?;
    let work = tempdir()?;
    let (root, store_path) = make_store(&work)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut flags = vec!["--path-info-ttl-ms".to_owned(), "0".to_owned()];
    flags.extend(extra.iter().cloned());
    let mut server = start_server(&binary, &root, addr, &flags, &work)?;
    let hash = store_path
        .trim_start_matches("/nix/store/")
        .split('-')
        .next()
        .ok_or("store path without hash")?
        .to_owned();
    let narinfo = format!("/{hash}.narinfo");
    let mut client = Client::connect(addr)?;
    let body = client.get(&narinfo)?.ok_or("narinfo timed out")?;
    let url = body
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .ok_or("narinfo without URL")?
        .to_owned();
    let nar_target = format!("/{url}");
    println!("binary: {}", binary.display());
    println!(
        "| scenario | narinfo p50 | p99 | max | timeouts (5 s) | server threads | server RSS |"
    );
    println!("|---|---|---|---|---|---|---|");
    measure(&mut client, &narinfo, server.id(), "idle")?;
    let mut stalled = Vec::new();
    let mut headless = 0;
    for target in [100, 600] {
        let more = stall(addr, &nar_target, target - stalled.len(), &mut headless)?;
        stalled.extend(more);
        if headless > 0 {
            println!("({headless} of the {target} NAR GETs got no headers within 5 s)");
        }
        std::thread::sleep(SETTLE);
        let mut client = Client::connect(addr)?;
        measure(
            &mut client,
            &narinfo,
            server.id(),
            &format!("{target} stalled NAR readers"),
        )?;
    }
    drop(stalled);
    std::thread::sleep(SETTLE);
    let mut idle = Vec::new();
    for _ in 0..10_000 {
        let mut c = Client::connect(addr)?;
        c.get("/nix-cache-info")?
            .ok_or("nix-cache-info timed out")?;
        idle.push(c);
    }
    let mut client = Client::connect(addr)?;
    measure(
        &mut client,
        &narinfo,
        server.id(),
        "10 000 idle keep-alive connections",
    )?;
    drop(idle);
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn tempdir() -> Result<PathBuf, Error> {
    let dir = std::env::temp_dir().join(format!("larder-stalled-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A chroot store holding one 24 MiB file of random bytes.
fn make_store(work: &Path) -> Result<(PathBuf, String), Error> {
    let root = work.join("store");
    let big = work.join("big.bin");
    let mut data = vec![0u8; BIG_FILE_MIB << 20];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut data)?;
    std::fs::write(&big, &data)?;
    let out = Command::new("nix-store")
        .arg("--store")
        .arg(&root)
        .arg("--add")
        .arg(&big)
        .env("NIX_CONFIG", larder_bench::closure::NIX_CONFIG)
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err("nix-store --add failed".into());
    }
    std::fs::remove_file(&big)?;
    Ok((root, String::from_utf8(out.stdout)?.trim().to_owned()))
}

/// `count` NAR downloads that read their headers and a little, then stop.
/// All requests go out first; those whose headers have not come 10 s later
/// are kept as they are (still waiting) and counted in `headless`.
fn stall(
    addr: SocketAddr,
    target: &str,
    count: usize,
    headless: &mut usize,
) -> Result<Vec<TcpStream>, Error> {
    let mut streams = Vec::new();
    for _ in 0..count {
        let mut stream = TcpStream::connect(addr)?;
        write!(stream, "GET {target} HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
        streams.push(stream);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 16 << 10];
    for stream in &mut streams {
        let left = deadline.saturating_duration_since(Instant::now());
        stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                *headless += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if !buf[..n].starts_with(b"HTTP/1.1 200") {
            return Err(format!("NAR GET: {}", String::from_utf8_lossy(&buf[..n.min(40)])).into());
        }
    }
    Ok(streams)
}

/// One keep-alive connection for small GETs, with a timeout.
struct Client {
    reader: BufReader<TcpStream>,
    addr: SocketAddr,
}

impl Client {
    fn connect(addr: SocketAddr) -> Result<Client, Error> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        Ok(Client {
            reader: BufReader::new(stream),
            addr,
        })
    }

    /// The body, or None on a timeout (the connection is then replaced).
    fn get(&mut self, target: &str) -> Result<Option<String>, Error> {
        match self.try_get(target) {
            Ok(body) => Ok(Some(body)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                *self = Client::connect(self.addr)?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn try_get(&mut self, target: &str) -> io::Result<String> {
        let request = format!("GET {target} HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr);
        self.reader.get_mut().write_all(request.as_bytes())?;
        let mut len = 0;
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                len = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body)?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

fn measure(client: &mut Client, narinfo: &str, pid: u32, scenario: &str) -> Result<(), Error> {
    let mut times = Vec::new();
    let mut timeouts = 0;
    let started = Instant::now();
    for _ in 0..NARINFO_REQUESTS {
        let start = Instant::now();
        match client.get(narinfo)? {
            Some(_) => times.push(start.elapsed()),
            None => timeouts += 1,
        }
        // Enough to show the effect without waiting minutes.
        if timeouts >= 5 || started.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    times.sort();
    let pick = |q: f64| {
        times
            .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
            .map_or("-".to_owned(), |t| {
                format!("{:.2} ms", t.as_secs_f64() * 1e3)
            })
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or("?".to_owned(), |v| v.trim().to_owned())
    };
    println!(
        "| {scenario} | {} | {} | {} | {timeouts} of {} | {} | {} |",
        pick(0.5),
        pick(0.99),
        pick(1.0),
        times.len() + timeouts,
        field("Threads:"),
        field("VmRSS:"),
    );
    Ok(())
}
