//! The serve benchmark's load against a server that is already running,
//! for profiling it (`perf record -g -p PID` meanwhile):
//!
//! `fetch ADDR narinfo|nar CONNECTIONS [zstd] [PASSES]`
//!
//! fetches the closure's narinfos (one connection), or every NAR they name
//! over CONNECTIONS connections (`zstd`: with `Accept-Encoding: zstd`),
//! PASSES times (default 1), printing each pass's time, after the time of
//! the first narinfo pass, which finds the NAR URLs.

use std::net::SocketAddr;

use larder_bench::load::{ZSTD, fetch_all, fetch_narinfos};
use larder_bench::{Error, closure, fixtures};

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, what, connections, rest @ ..] = args.as_slice() else {
        return Err("usage: fetch ADDR narinfo|nar CONNECTIONS [zstd] [PASSES]".into());
    };
    let addr: SocketAddr = addr.parse()?;
    let connections: usize = connections.parse()?;
    let headers = if rest.first().is_some_and(|a| a == "zstd") {
        ZSTD
    } else {
        &[]
    };
    let passes: usize = rest.iter().find_map(|a| a.parse().ok()).unwrap_or(1);
    let work = closure::work_dir();
    let paths = closure::store_paths(&work, &closure::location(&work))?;
    let hashes = paths
        .iter()
        .map(|p| fixtures::hash_part(p))
        .collect::<Result<Vec<_>, _>>()?;
    // The first pass finds the NAR URLs; on a fresh server it is the
    // cold one (signatures, DB connections, the process itself).
    let (first, urls) = fetch_narinfos(addr, &hashes)?;
    println!("first narinfo pass: {:.3?}", first.elapsed);
    for _ in 0..passes {
        let pass = match what.as_str() {
            "narinfo" => fetch_narinfos(addr, &hashes)?.0,
            "nar" => fetch_all(addr, &urls, connections, headers)?,
            other => return Err(format!("unknown load {other:?}").into()),
        };
        println!("{what}: {:.3?}, {} bytes", pass.elapsed, pass.bytes);
    }
    Ok(())
}
