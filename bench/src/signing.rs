//! The cost of keeping the key in larder-signer (issue 4): one ed25519
//! signature in-process (`SecretKey::sign`) against a request over the
//! signer's socket (which also checks the path against the store DB), for
//! the same fingerprints; and, once larder-server takes `--signer-socket`,
//! narinfo through the signer with the server's signature cache cold (a
//! fresh server without a cache dir: it signs ahead in the background
//! while the pass runs), kept (a restarted server reading back the
//! signatures its cache dir kept, issue 13) and warm (its second pass),
//! against no signer and nginx.

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use larder_signer::signing_key::SecretKey;
use larder_store::StoreLocation;
use larder_store::db::StoreDb;
use larder_store::path::StorePathHash;
use larder_store::signer_proto::{Reply, Request, encode_frame, read_frame_blocking};

use crate::Error;
use crate::http::Connection;
use crate::load::{Pass, fetch_narinfos};
use crate::results::Results;
use crate::servers::{Server, binary, larder, server_has, signer};

const KEY_NAME: &str = "larder-bench-1";

/// Where the signer phase runs: the bench's work dir (the key is kept
/// there) and this run's scratch dir (socket, logs).
pub struct Dirs<'a> {
    pub work: &'a Path,
    pub run: &'a Path,
}

/// Every signer measurement this build allows.
pub fn measure(
    results: &mut Results,
    nginx: &Server,
    location: &StoreLocation,
    hashes: &[String],
    reps: usize,
    dirs: Dirs,
) -> Result<(), Error> {
    let key = key_file(dirs.work)?;
    let fingerprints = fingerprints(location, hashes)?;
    in_process(results, &key, &fingerprints, reps)?;
    let socket = dirs.run.join("signer.sock");
    let _signer = signer(&socket, &key, location.root(), dirs.run)?;
    round_trips(results, &socket, &fingerprints, reps)?;
    if !server_has("--signer-socket")? {
        println!("larder-server has no --signer-socket yet: no signed narinfo rounds");
        return Ok(());
    }
    let socket = socket.to_str().ok_or("socket path not UTF-8")?;
    let plain = larder(location.root(), &[], dirs.run)?;
    fetch_narinfos(plain.addr(), hashes)?;
    let kept_dir = dirs.run.join("signature-cache");
    let kept_flags = [
        "--signer-socket",
        socket,
        "--cache-dir",
        kept_dir.to_str().ok_or("run dir not UTF-8")?,
    ];
    {
        let filling = larder(location.root(), &kept_flags, dirs.run)?;
        fetch_narinfos(filling.addr(), hashes)?;
        wait_for(|| Ok(kept_lines(&kept_dir)? >= hashes.len()))?;
    }
    // Rounds are cheap (a fresh server and four narinfo passes of ~30 ms)
    // and noisy: twice as many as the other measurements' repetitions.
    for _ in 0..reps * 2 {
        let signed = larder(location.root(), &["--signer-socket", socket], dirs.run)?;
        let narinfos =
            |server: &Server| server.measure(|| Ok(fetch_narinfos(server.addr(), hashes)?.0));
        results.record(SIGNER_NGINX, narinfos(nginx)?);
        results.record(SIGNER_NONE, narinfos(&plain)?);
        results.record(SIGNER_COLD, narinfos(&signed)?);
        results.record(SIGNER_WARM, narinfos(&signed)?);
        check_signed(&signed, &hashes[0])?;
        drop(signed);
        // The first request waits for the kept signatures to be read
        // back (after the signer named its keys): in the pass.
        let kept = larder(location.root(), &kept_flags, dirs.run)?;
        results.record(SIGNER_KEPT, narinfos(&kept)?);
        check_signed(&kept, &hashes[0])?;
    }
    Ok(())
}

/// Poll `done` for at most 60 s.
fn wait_for(mut done: impl FnMut() -> Result<bool, Error>) -> Result<(), Error> {
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while !done()? {
        if Instant::now() > deadline {
            return Err("timed out waiting for the signature cache".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

/// Lines in the signature logs of a server's cache dir.
fn kept_lines(dir: &Path) -> Result<usize, Error> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut lines = 0;
    for entry in entries {
        let path = entry?.path();
        if path.to_string_lossy().ends_with(".log") {
            lines += fs::read_to_string(path)?.lines().count();
        }
    }
    Ok(lines)
}

/// The bench's signing key, made once with `larder-signer generate-key`.
fn key_file(work: &Path) -> Result<PathBuf, Error> {
    let key = work.join("signer.sec");
    if !key.exists() {
        let status = Command::new(binary("larder-signer")?)
            .args(["generate-key", "--name", KEY_NAME, "--out"])
            .arg(&key)
            .status()?;
        if !status.success() {
            return Err(format!("larder-signer generate-key failed: {status}").into());
        }
    }
    Ok(key)
}

/// Each path's fingerprint, from the store DB.
fn fingerprints(location: &StoreLocation, hashes: &[String]) -> Result<Vec<String>, Error> {
    let db = StoreDb::open(location)?;
    hashes
        .iter()
        .map(|h| {
            let info = db
                .path_info_blocking(&h.parse::<StorePathHash>()?)?
                .ok_or_else(|| format!("{h} not in the store"))?;
            Ok(info.fingerprint(location.store_dir()))
        })
        .collect()
}

/// Signing every fingerprint in-process, `reps` times.
fn in_process(
    results: &mut Results,
    key: &Path,
    fingerprints: &[String],
    reps: usize,
) -> Result<(), Error> {
    let key: SecretKey = fs::read_to_string(key)?.trim().parse()?;
    for _ in 0..reps {
        let start = Instant::now();
        let bytes = fingerprints
            .iter()
            .map(|fp| key.sign(fp).to_string().len() as u64)
            .sum();
        let elapsed = start.elapsed();
        results.record(SIGN_IN_PROCESS, Pass::new(elapsed, bytes));
    }
    Ok(())
}

/// What the signed narinfo rounds record: each round's four passes pair up.
pub const SIGNER_NGINX: &str = "narinfo, 1 connection: nginx (signer rounds)";
pub const SIGNER_NONE: &str = "narinfo, 1 connection: larder, no signer (signer rounds)";
pub const SIGNER_COLD: &str = "narinfo, signer, cache cold: larder";
pub const SIGNER_WARM: &str = "narinfo, signer, cache warm: larder";
pub const SIGNER_KEPT: &str =
    "narinfo, signer, restarted, signatures kept in the cache dir: larder";

/// What [`in_process`] and [`round_trips`] record.
pub const SIGN_IN_PROCESS: &str = "ed25519 sign of every fingerprint, in-process";
pub const SIGN_OVER_SOCKET: &str = "every fingerprint signed by larder-signer, 1 socket connection";

/// Every fingerprint sent to the signer in turn over one connection, the
/// way the server's client asks, `reps` times.
fn round_trips(
    results: &mut Results,
    socket: &Path,
    fingerprints: &[String],
    reps: usize,
) -> Result<(), Error> {
    let mut stream = UnixStream::connect(socket)?;
    for _ in 0..reps {
        let start = Instant::now();
        let mut bytes = 0;
        for fp in fingerprints {
            let request = Request::Sign {
                fingerprint: fp.clone(),
                keys: None,
            };
            std::io::Write::write_all(&mut stream, &encode_frame(&request)?)?;
            match read_frame_blocking::<Reply, _>(&mut stream)? {
                Reply::Signatures(sigs) if !sigs.is_empty() => {
                    bytes += sigs.iter().map(|s| s.len() as u64).sum::<u64>()
                }
                other => return Err(format!("signer answered {other:?} for {fp}").into()),
            }
        }
        let elapsed = start.elapsed();
        results.record(SIGN_OVER_SOCKET, Pass::new(elapsed, bytes));
    }
    Ok(())
}

/// The narinfo carries a signature by the bench's key.
fn check_signed(server: &Server, hash: &str) -> Result<(), Error> {
    let response = Connection::new(server.addr()).get(&format!("/{hash}.narinfo"), &[], true)?;
    let text = String::from_utf8(response.body)?;
    if !text.contains(&format!("Sig: {KEY_NAME}:")) {
        return Err(format!("narinfo through the signer is not signed:\n{text}").into());
    }
    Ok(())
}
