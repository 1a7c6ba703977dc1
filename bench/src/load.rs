//! Load: a list of URLs fetched over N keep-alive connections (one thread
//! each, taking the next URL from a shared counter), timed as a whole.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::Error;
use crate::http::Connection;

/// `Accept-Encoding: zstd`, as Nix ≥ 2.14 and curl send it.
pub const ZSTD: &[(&str, &str)] = &[("Accept-Encoding", "zstd")];

/// One timed pass.
#[derive(Debug, Clone, Copy)]
pub struct Pass {
    pub elapsed: Duration,
    /// Body bytes received (compressed ones, for compressed responses).
    pub bytes: u64,
    /// CPU time the server (or tool) used meanwhile, when measured.
    pub cpu: Option<Duration>,
}

impl Pass {
    pub fn new(elapsed: Duration, bytes: u64) -> Pass {
        Pass {
            elapsed,
            bytes,
            cpu: None,
        }
    }
}

/// GETs every target once over `connections` connections; every answer
/// must be a 200 (with `Content-Encoding: zstd` when `headers` ask for it).
pub fn fetch_all(
    addr: SocketAddr,
    targets: &[String],
    connections: usize,
    headers: &[(&str, &str)],
) -> Result<Pass, Error> {
    let next = AtomicUsize::new(0);
    let bytes = AtomicU64::new(0);
    let want_zstd = headers == ZSTD;
    let start = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..connections)
            .map(|_| {
                scope.spawn(|| -> Result<(), Error> {
                    let mut connection = Connection::new(addr);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(target) = targets.get(i) else {
                            return Ok(());
                        };
                        let response = connection.get(target, headers, false)?;
                        if response.status != 200 {
                            return Err(format!("GET {target}: status {}", response.status).into());
                        }
                        if want_zstd && response.content_encoding.as_deref() != Some("zstd") {
                            return Err(format!("GET {target}: not zstd-encoded").into());
                        }
                        bytes.fetch_add(response.body_len, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().map_err(|_| Error::from("load thread panicked"))?)
    })?;
    Ok(Pass::new(start.elapsed(), bytes.into_inner()))
}

/// Every narinfo in turn over one connection: the time, and the NAR URLs
/// (absolute targets) the narinfos name.
pub fn fetch_narinfos(addr: SocketAddr, hashes: &[String]) -> Result<(Pass, Vec<String>), Error> {
    let mut connection = Connection::new(addr);
    let mut urls = Vec::with_capacity(hashes.len());
    let mut bytes = 0;
    let start = Instant::now();
    for hash in hashes {
        let response = connection.get(&format!("/{hash}.narinfo"), &[], true)?;
        if response.status != 200 {
            return Err(format!("GET /{hash}.narinfo: status {}", response.status).into());
        }
        bytes += response.body_len;
        urls.push(response.body);
    }
    let elapsed = start.elapsed();
    let urls = urls
        .iter()
        .map(|body| {
            let text = std::str::from_utf8(body)?;
            let url = text
                .lines()
                .find_map(|l| l.strip_prefix("URL: "))
                .ok_or_else(|| format!("narinfo without URL: {text}"))?;
            Ok(format!("/{url}"))
        })
        .collect::<Result<_, Error>>()?;
    Ok((Pass::new(elapsed, bytes), urls))
}

/// `clients` connections each downloading `target` at once, until done or
/// until `stop` is set; the bytes received in all.
pub fn concurrent_downloads(
    addr: SocketAddr,
    target: &str,
    clients: usize,
    headers: &[(&str, &str)],
    stop: &AtomicBool,
) -> Result<u64, Error> {
    let bytes = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| -> Result<(), Error> {
                    let mut stream = crate::http::Streaming::open(addr, target, headers)?;
                    while !stop.load(Ordering::Relaxed) {
                        match stream.read_some()? {
                            0 => break,
                            n => bytes.fetch_add(n as u64, Ordering::Relaxed),
                        };
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().map_err(|_| Error::from("load thread panicked"))?)
    })?;
    Ok(bytes.into_inner())
}
