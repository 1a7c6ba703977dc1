//! Export throughput to an S3-compatible store: the benchmark closure (cut
//! to about 1 GiB of NARs) exported by `larder-sync export --to s3://…`
//! into a local Garage on loopback, against `nix copy --to
//! file://DIR?compression=zstd` of the same paths (the floor: same zstd
//! level, no network, no signatures), each into a fresh destination, in
//! the same run.
//!
//! `cargo build --release -p larder-sync -p larder-bench` then
//! `target/release/export [LIMIT_MIB] [REPS]` (defaults 1024, 1). Needs
//! `garage` on PATH (`scripts/setup.sh --test`). Writes
//! `bench/results/export.md`.

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use larder_bench::servers::binary;
use larder_bench::{Error, closure};
use larder_store::nar::NarPlan;
use larder_tests::garage::TestGarage;

const MIB: f64 = (1 << 20) as f64;

fn run(cmd: &mut Command) -> Result<Duration, Error> {
    let start = Instant::now();
    let out = cmd.output()?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(elapsed)
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let out = Command::new("du").arg("-sb").arg(dir).output();
    out.ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let limit_mib: u64 = args.next().map_or(Ok(1024), |a| a.parse())?;
    let reps: usize = args.next().map_or(Ok(1), |a| a.parse())?;

    let work = closure::work_dir();
    let location = closure::location(&work);
    let all = closure::store_paths(&work, &location)?;
    let mut paths = Vec::new();
    let mut nar_bytes = 0u64;
    for p in all {
        let size = NarPlan::walk(&location.real_path(&location.parse_path(&p)?))?.nar_size();
        if nar_bytes + size > limit_mib << 20 && !paths.is_empty() {
            continue;
        }
        nar_bytes += size;
        paths.push(p);
    }
    println!(
        "{} paths, {:.0} MiB of NARs",
        paths.len(),
        nar_bytes as f64 / MIB
    );
    let sync = binary("larder-sync")?;
    let mut rows = Vec::new();
    for rep in 1..=reps {
        let garage = TestGarage::start();
        let mut export = Command::new(&sync);
        export
            .env("NIX_CONFIG", closure::NIX_CONFIG)
            .envs(garage.env())
            .arg("--store-root")
            .arg(location.root())
            .args(["--log", "warn", "export", "--to", &garage.uri()])
            .args(&paths);
        let s3 = run(&mut export)?;
        let s3_bytes = dir_bytes(&garage.dir().join("data"));
        drop(garage);

        let dir = tempfile::tempdir_in(&work)?;
        let mut copy = Command::new("nix");
        copy.env("NIX_CONFIG", closure::NIX_CONFIG)
            .arg("--store")
            .arg(location.root())
            .args(["copy", "--to"])
            .arg(format!("file://{}?compression=zstd", dir.path().display()))
            .args(&paths);
        let file = run(&mut copy)?;
        let file_bytes = dir_bytes(dir.path());
        println!(
            "rep {rep}: s3 {:.1} s ({:.0} MiB/s), file {:.1} s ({:.0} MiB/s)",
            s3.as_secs_f64(),
            nar_bytes as f64 / MIB / s3.as_secs_f64(),
            file.as_secs_f64(),
            nar_bytes as f64 / MIB / file.as_secs_f64()
        );
        rows.push((rep, s3, s3_bytes, file, file_bytes));
    }

    let mut md = String::new();
    writeln!(md, "# Export to S3-compatible storage\n")?;
    writeln!(
        md,
        "`target/release/export {limit_mib} {reps}`: {} store paths of the benchmark closure, \
         {:.0} MiB of NARs, from a chroot store on this machine (2 cores, shared). \
         **s3**: `larder-sync export --to s3://…` (zstd level 3, 8 MiB parts, NAR dump, hashes \
         and upload streamed) into Garage {} on loopback (1 node, sqlite metadata), fresh each \
         rep. **file**: `nix copy --to file://DIR?compression=zstd` (Nix 2.8, zstd level 3) of \
         the same paths into a fresh directory. Stored bytes: Garage's data directory \
         (compressed NARs, listings, narinfos), the file cache's directory.\n",
        paths.len(),
        nar_bytes as f64 / MIB,
        larder_tests::garage::GARAGE_VERSION
    )?;
    writeln!(
        md,
        "| rep | s3 (s) | s3 MiB/s | s3 stored MiB | file (s) | file MiB/s | file stored MiB | s3 time / file time |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|")?;
    for (rep, s3, s3_bytes, file, file_bytes) in &rows {
        writeln!(
            md,
            "| {rep} | {:.1} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.2} |",
            s3.as_secs_f64(),
            nar_bytes as f64 / MIB / s3.as_secs_f64(),
            *s3_bytes as f64 / MIB,
            file.as_secs_f64(),
            nar_bytes as f64 / MIB / file.as_secs_f64(),
            *file_bytes as f64 / MIB,
            s3.as_secs_f64() / file.as_secs_f64()
        )?;
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results/export.md");
    std::fs::write(&out, md)?;
    println!("wrote {}", out.display());
    Ok(())
}
