//! NAR dump throughput: larder's dumper (walk + stream, in-process, bytes
//! counted and discarded) against `nix-store --dump` of the same paths to
//! /dev/null, in the same run, warm cache.
//!
//! The closure is made once from real files (`/usr/lib`, `/usr/share`)
//! with `nix-store --add` into a chroot store under `bench/work/` (gitignored)
//! and reused by later runs. Results go to `bench/results/nar_dump.md`.
//!
//! `cargo run --release -p larder-bench --bin nar_dump [-- REPS]`

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use larder_bench::Error;
use larder_bench::closure::{self, SOURCES};
use larder_bench::report::{machine, median};
use larder_store::nar::NarPlan;

const INTERPRETATION: &str = "
Reading: the per-path ratio is what a cache that runs `nix-store --dump` per request gets; most of it is nix-store's start-up. The single-NAR ratio compares the dumping itself: both sides are bound by the kernel's page-cache copy (`_copy_to_iter` is ~50% of larder's reader profile; before the chunk-buffer pool, page faults and memset of fresh 512 KiB buffers were another ~25%). Going clearly past it needs zero-copy (`sendfile`/`splice` to the socket), which a stream of `Bytes` cannot do.
";
const MIB: f64 = (1 << 20) as f64;

/// What is dumped: each path as its own NAR, or one NAR of many paths.
struct Scenario {
    title: String,
    paths: Vec<PathBuf>,
    nar_bytes: u64,
}

impl Scenario {
    fn new(title: String, paths: Vec<PathBuf>) -> Result<Scenario, Error> {
        let nar_bytes = paths
            .iter()
            .map(|p| NarPlan::walk(p).map(|plan| plan.nar_size()))
            .sum::<Result<_, _>>()?;
        Ok(Scenario {
            title,
            paths,
            nar_bytes,
        })
    }

    /// (larder, nix-store) timings of `reps` repetitions after a warm-up.
    fn measure(&self, reps: usize) -> Result<Vec<(Duration, Duration)>, Error> {
        let runtime = tokio::runtime::Runtime::new()?;
        let ours = || runtime.block_on(dump_ours(&self.paths, self.nar_bytes));
        let theirs = || dump_nix_store(&self.paths);
        ours()?;
        theirs()?;
        (0..reps)
            .map(|rep| {
                let (o, t) = (ours()?, theirs()?);
                println!(
                    "{}, rep {rep}: larder {o:.2?}, nix-store {t:.2?}",
                    self.title
                );
                Ok((o, t))
            })
            .collect()
    }
}

fn main() -> Result<(), Error> {
    let reps: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 3,
    };
    let bench = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = closure::work_dir();
    let location = closure::location(&work);
    let paths = closure::real_paths(&work, &location)?;
    let count = paths.len();
    let scenarios = [
        Scenario::new(format!("{count} NARs, one per store path"), paths)?,
        Scenario::new(
            "one NAR of the whole store directory (no per-process start-up)".into(),
            vec![location.real_store_dir()],
        )?,
    ];
    let mut md = header(&scenarios[0])?;
    for scenario in &scenarios {
        section(&mut md, scenario, &scenario.measure(reps)?)?;
    }
    let startup = nix_store_startup(&work)?;
    writeln!(
        md,
        "`nix-store --dump` of an empty file takes {startup:.2?} (process start-up): {:.2?} of the per-path run's nix-store time.",
        startup * count as u32
    )?;
    md.push_str(INTERPRETATION);
    print!("{md}");
    fs::create_dir_all(bench.join("results"))?;
    fs::write(bench.join("results/nar_dump.md"), md)?;
    Ok(())
}

/// Walks and streams every path, counting the bytes.
async fn dump_ours(paths: &[PathBuf], expected: u64) -> Result<Duration, Error> {
    let start = Instant::now();
    let mut total = 0;
    for path in paths {
        let plan = NarPlan::walk_async(path.clone()).await?;
        let mut stream = plan.stream(0)?;
        while let Some(chunk) = stream.next_chunk().await {
            total += chunk?.len() as u64;
        }
    }
    let elapsed = start.elapsed();
    if total != expected {
        return Err(format!("dumped {total} bytes, expected {expected}").into());
    }
    Ok(elapsed)
}

/// `nix-store --dump` of every path to /dev/null, one process per path as a
/// cache calling it would.
fn dump_nix_store(paths: &[PathBuf]) -> Result<Duration, Error> {
    let start = Instant::now();
    for path in paths {
        let status = Command::new("nix-store")
            .arg("--dump")
            .arg(path)
            .stdout(fs::File::create("/dev/null")?)
            .status()?;
        if !status.success() {
            return Err(format!("nix-store --dump {} failed", path.display()).into());
        }
    }
    Ok(start.elapsed())
}

/// The mean time of a `nix-store --dump` that has nothing to read.
fn nix_store_startup(work: &Path) -> Result<Duration, Error> {
    let empty = work.join("empty");
    fs::write(&empty, b"")?;
    let runs = 50;
    let elapsed = dump_nix_store(&vec![empty; runs])?;
    Ok(elapsed / runs as u32)
}

fn header(closure: &Scenario) -> Result<String, Error> {
    let mut md = String::new();
    writeln!(md, "# NAR dump throughput\n")?;
    writeln!(md, "Machine: {}.\n", machine()?)?;
    writeln!(
        md,
        "Closure: {} store paths, {:.0} MiB of NAR, made by `nix-store --add` of children of {} (real files) into a chroot store. Page cache warm (one pass of each side first); larder walks and streams in-process, counting the bytes; `nix-store --dump` writes to /dev/null; one NAR at a time, repetitions alternate.\n",
        closure.paths.len(),
        closure.nar_bytes as f64 / MIB,
        SOURCES.join(", ")
    )?;
    Ok(md)
}

fn section(
    md: &mut String,
    scenario: &Scenario,
    timings: &[(Duration, Duration)],
) -> Result<(), Error> {
    let mbs = |d: Duration| scenario.nar_bytes as f64 / MIB / d.as_secs_f64();
    let ours = median(timings.iter().map(|(o, _)| mbs(*o)).collect());
    let theirs = median(timings.iter().map(|(_, t)| mbs(*t)).collect());
    writeln!(md, "## {}\n", scenario.title)?;
    writeln!(md, "| rep | larder | `nix-store --dump` |")?;
    writeln!(md, "|---|---|---|")?;
    for (rep, (o, t)) in timings.iter().enumerate() {
        writeln!(
            md,
            "| {rep} | {o:.2?} ({:.0} MiB/s) | {t:.2?} ({:.0} MiB/s) |",
            mbs(*o),
            mbs(*t)
        )?;
    }
    writeln!(
        md,
        "\nMedian: larder {ours:.0} MiB/s, nix-store {theirs:.0} MiB/s: **{:.2}×**.\n",
        ours / theirs
    )?;
    Ok(())
}
