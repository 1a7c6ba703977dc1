//! 10 000 concurrent keep-alive connections held by one larder-server:
//! the server's RSS, open file descriptors and threads before, while the
//! connections are open (each has been answered once and stays idle),
//! after 1 in 10 of them downloaded a 1 MiB NAR and went idle again (what
//! a connection keeps after a large body), and after they close; three rounds (`LARDER_ROUNDS`), so that a leak
//! shows as growth from round to round. Loopback only; bounded in count and time (each
//! request has a 10 s timeout).
//!
//! `connections [SERVER_BINARY] [-- EXTRA SERVER FLAGS]` (default binary:
//! `target/release/larder-server`, else `target/debug/larder-server`).
//! Needs `ulimit -n 20000` or more: this process holds 10 000 sockets and
//! the server, which inherits the limit, as many (the systemd units and
//! the NixOS module set `LimitNOFILE=65536`). Prints Markdown rows for
//! `docs/reliability.md`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use larder_bench::Error;
use larder_bench::servers::{check_nofile, default_binary, start_server};

const CONNECTIONS: usize = 10_000;
/// Rounds by default; `LARDER_ROUNDS` overrides.
const ROUNDS: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(10);
/// Time for the server to notice closed connections before measuring.
const SETTLE: Duration = Duration::from_secs(3);

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (binary, extra) = match args.iter().position(|a| a == "--") {
        Some(i) => (args[..i].first().cloned(), args[i + 1..].to_vec()),
        None => (args.first().cloned(), Vec::new()),
    };
    let binary = binary.map(PathBuf::from).unwrap_or_else(default_binary);
    check_nofile(2 * CONNECTIONS as u64)?;
    let work = std::env::temp_dir().join(format!("larder-connections-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let (root, nar) = make_store(&work)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut server = start_server(&binary, &root, addr, &extra, &work)?;
    let pid = server.id();
    println!("binary: {}", binary.display());
    println!("| round | state | server RSS | open fds | threads | requests failed |");
    println!("|---|---|---|---|---|---|");
    row(0, "before", pid, 0)?;
    let rounds = std::env::var("LARDER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS);
    for round in 1..=rounds {
        let started = Instant::now();
        let mut open = Vec::with_capacity(CONNECTIONS);
        let mut failed = 0;
        for _ in 0..CONNECTIONS {
            match connect_and_get(addr) {
                Ok(c) => open.push(c),
                Err(_) => failed += 1,
            }
        }
        let opened = started.elapsed();
        row(
            round,
            &format!("{} open ({opened:.1?} to open)", open.len()),
            pid,
            failed,
        )?;
        // Still answered on every connection after the others opened.
        let mut again_failed = 0;
        for c in open.iter_mut().step_by(100) {
            if get(c, "/nix-cache-info").is_err() {
                again_failed += 1;
            }
        }
        row(round, "second request on 1 in 100", pid, again_failed)?;
        let mut nar_failed = 0;
        for c in open.iter_mut().step_by(10) {
            if get(c, &nar).is_err() {
                nar_failed += 1;
            }
        }
        row(round, "a 1 MiB NAR on 1 in 10, idle again", pid, nar_failed)?;
        drop(open);
        std::thread::sleep(SETTLE);
        row(round, "after close", pid, 0)?;
    }
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// A chroot store holding one path of 1 MiB; returns the store's root and
/// that path's NAR URL.
fn make_store(work: &Path) -> Result<(PathBuf, String), Error> {
    let root = work.join("store");
    let file = work.join("one-mebibyte");
    std::fs::write(&file, vec![b'x'; 1 << 20])?;
    let out = Command::new("nix-store")
        .arg("--store")
        .arg(&root)
        .arg("--add")
        .arg(&file)
        .env("NIX_CONFIG", larder_bench::closure::NIX_CONFIG)
        .output()?;
    if !out.status.success() {
        return Err("nix-store --add failed".into());
    }
    let path = String::from_utf8(out.stdout)?;
    let base = path.trim().rsplit('/').next().unwrap_or_default();
    // nix-serve's URL form names the store path's hash part alone.
    Ok((root, format!("/nar/{}.nar", &base[..32.min(base.len())])))
}

fn connect_and_get(addr: SocketAddr) -> std::io::Result<BufReader<TcpStream>> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut reader = BufReader::new(stream);
    get(&mut reader, "/nix-cache-info")?;
    Ok(reader)
}

/// `GET target` on a keep-alive connection; reads the whole answer.
fn get(reader: &mut BufReader<TcpStream>, target: &str) -> std::io::Result<()> {
    let request = format!("GET {target} HTTP/1.1\r\nHost: bench\r\n\r\n");
    reader.get_mut().write_all(request.as_bytes())?;
    let mut len = 0;
    let mut line = String::new();
    let mut first = true;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if first && !line.starts_with("HTTP/1.1 200") {
            return Err(std::io::Error::other(line.clone()));
        }
        first = false;
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
    reader.read_exact(&mut body)
}

fn row(round: usize, state: &str, pid: u32, failed: usize) -> Result<(), Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or("?".to_owned(), |v| v.trim().to_owned())
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    println!(
        "| {round} | {state} | {} | {fds} | {} | {failed} |",
        field("VmRSS:"),
        field("Threads:")
    );
    Ok(())
}
