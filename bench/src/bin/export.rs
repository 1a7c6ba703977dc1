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

use larder_bench::report::{load_average, machine};
use larder_bench::servers::{binary, cpu_ticks, ticks_to_time};
use larder_bench::{Error, closure};
use larder_store::nar::NarPlan;
use larder_tests::garage::TestGarage;

const MIB: f64 = (1 << 20) as f64;

/// What one command cost: wall time and the CPU time (user + system) of
/// the command and its children.
struct Cost {
    wall: Duration,
    cpu: Duration,
}

fn run(cmd: &mut Command) -> Result<Cost, Error> {
    let me = std::process::id();
    let cpu_before = cpu_ticks(me, true)?;
    let start = Instant::now();
    let out = cmd.output()?;
    let wall = start.elapsed();
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let cpu = ticks_to_time(cpu_ticks(me, true)? - cpu_before);
    Ok(Cost { wall, cpu })
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
    struct Row {
        rep: usize,
        s3: Cost,
        garage_cpu: Duration,
        s3_bytes: u64,
        file: Cost,
        file_bytes: u64,
        load: String,
    }
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
        let garage_pid = garage.pid().ok_or("garage is not running")?;
        let garage_before = cpu_ticks(garage_pid, false)?;
        let s3 = run(&mut export)?;
        let garage_cpu = ticks_to_time(cpu_ticks(garage_pid, false)? - garage_before);
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
        let load = load_average()?;
        println!(
            "rep {rep}: s3 {:.1} s ({:.0} MiB/s, larder-sync CPU {:.1} s, Garage CPU {:.1} s), \
             file {:.1} s ({:.0} MiB/s, CPU {:.1} s), load {load}",
            s3.wall.as_secs_f64(),
            nar_bytes as f64 / MIB / s3.wall.as_secs_f64(),
            s3.cpu.as_secs_f64(),
            garage_cpu.as_secs_f64(),
            file.wall.as_secs_f64(),
            nar_bytes as f64 / MIB / file.wall.as_secs_f64(),
            file.cpu.as_secs_f64(),
        );
        rows.push(Row {
            rep,
            s3,
            garage_cpu,
            s3_bytes,
            file,
            file_bytes,
            load,
        });
    }

    let mut md = String::new();
    writeln!(md, "# Export to S3-compatible storage\n")?;
    writeln!(
        md,
        "`target/release/export {limit_mib} {reps}`: {} store paths of the benchmark closure, \
         {:.0} MiB of NARs, from a chroot store on this machine (2 cores, shared). \
         **s3**: `larder-sync export --to s3://…` (zstd level 3, 8 MiB parts, NAR dump, hashes \
         and upload streamed) into Garage {} on loopback (1 node, sqlite metadata, its own block compression off: the NARs arrive compressed), fresh each \
         rep. **file**: `nix copy --to file://DIR?compression=zstd` (Nix 2.8, zstd level 3) of \
         the same paths into a fresh directory. Stored bytes: Garage's data directory \
         (compressed NARs, listings, narinfos), the file cache's directory.\n",
        paths.len(),
        nar_bytes as f64 / MIB,
        larder_tests::garage::GARAGE_VERSION
    )?;
    writeln!(
        md,
        "CPU is user + system time: larder-sync's (and its children's) and Garage's for s3, \
         Nix's for file. Load is the 1/5/15-minute load average right after the rep. {}\n",
        machine()?
    )?;
    writeln!(
        md,
        "| rep | s3 (s) | s3 MiB/s | larder-sync CPU (s) | Garage CPU (s) | s3 stored MiB | file (s) | file MiB/s | nix CPU (s) | file stored MiB | s3 time / file time | s3 CPU / file CPU | load |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")?;
    for r in &rows {
        let mibs = |d: Duration| nar_bytes as f64 / MIB / d.as_secs_f64();
        writeln!(
            md,
            "| {} | {:.1} | {:.0} | {:.1} | {:.1} | {:.0} | {:.1} | {:.0} | {:.1} | {:.0} | {:.2} | {:.2} | {} |",
            r.rep,
            r.s3.wall.as_secs_f64(),
            mibs(r.s3.wall),
            r.s3.cpu.as_secs_f64(),
            r.garage_cpu.as_secs_f64(),
            r.s3_bytes as f64 / MIB,
            r.file.wall.as_secs_f64(),
            mibs(r.file.wall),
            r.file.cpu.as_secs_f64(),
            r.file_bytes as f64 / MIB,
            r.s3.wall.as_secs_f64() / r.file.wall.as_secs_f64(),
            (r.s3.cpu + r.garage_cpu).as_secs_f64() / r.file.cpu.as_secs_f64(),
            r.load
        )?;
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results/export.md");
    std::fs::write(&out, md)?;
    println!("wrote {}", out.display());
    Ok(())
}
