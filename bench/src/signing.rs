//! narinfo through larder-signer (issue 4): with the server's signature
//! cache cold (a fresh server) and warm (its second pass), against no
//! signer and nginx in the same rounds; and the in-process cost of one
//! ed25519 signature over the same fingerprints.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use larder_store::StoreLocation;
use larder_store::db::StoreDb;
use larder_store::path::StorePathHash;
use larder_store::signature::{SecretKey, fingerprint};

use crate::Error;
use crate::http::Connection;
use crate::load::{Pass, fetch_narinfos};
use crate::results::Results;
use crate::servers::{Server, binary, larder, signer};

const KEY_NAME: &str = "larder-bench-1";

/// The bench's signing key, made once with `larder-signer generate-key`.
fn key_file(work: &Path) -> Result<std::path::PathBuf, Error> {
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

/// `reps` rounds of: nginx, larder without signer, larder with a signer
/// (first pass cold, second warm). Returns the signer's log-free guard.
pub fn narinfo_rounds(
    results: &mut Results,
    nginx: &Server,
    location: &StoreLocation,
    hashes: &[String],
    reps: usize,
    (work, run): (&Path, &Path),
) -> Result<(), Error> {
    let socket = run.join("signer.sock");
    let _signer = signer(&socket, &key_file(work)?, location.root(), run)?;
    let plain = larder(location.root(), &[], run)?;
    let signer_flag = [
        "--signer-socket",
        socket.to_str().ok_or("socket path not UTF-8")?,
    ];
    fetch_narinfos(nginx.addr(), hashes)?;
    fetch_narinfos(plain.addr(), hashes)?;
    for _ in 0..reps {
        let signed = larder(location.root(), &signer_flag, run)?;
        results.record(
            "narinfo, 1 connection: nginx",
            fetch_narinfos(nginx.addr(), hashes)?.0,
        );
        results.record(
            "narinfo, 1 connection: larder",
            fetch_narinfos(plain.addr(), hashes)?.0,
        );
        let cold = fetch_narinfos(signed.addr(), hashes)?.0;
        results.record("narinfo, signer, cache cold: larder", cold);
        results.record(
            "narinfo, signer, cache warm: larder",
            fetch_narinfos(signed.addr(), hashes)?.0,
        );
        check_signed(&signed, &hashes[0])?;
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

/// Signing every path's fingerprint in-process, `reps` times.
pub fn in_process(
    results: &mut Results,
    location: &StoreLocation,
    hashes: &[String],
    work: &Path,
    reps: usize,
) -> Result<(), Error> {
    let key: SecretKey = fs::read_to_string(key_file(work)?)?.trim().parse()?;
    let db = StoreDb::open(location)?;
    let fingerprints = hashes
        .iter()
        .map(|h| {
            let info = db
                .path_info_blocking(&h.parse::<StorePathHash>()?)?
                .ok_or_else(|| format!("{h} not in the store"))?;
            Ok(fingerprint(
                location.store_dir(),
                &info.path,
                &info.nar_hash,
                info.nar_size,
                &info.references,
            ))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    for _ in 0..reps {
        let start = Instant::now();
        let bytes = fingerprints
            .iter()
            .map(|fp| key.sign(fp).to_string().len() as u64)
            .sum();
        results.record(
            "ed25519 sign of every fingerprint, in-process",
            Pass {
                elapsed: start.elapsed(),
                bytes,
            },
        );
    }
    Ok(())
}
