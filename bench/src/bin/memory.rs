//! Only the serve bench's memory scenario (`memory_under_load`): 64 clients
//! downloading the big store's one NAR, identity then zstd, each on a fresh
//! server, `REPS` times (default 2).
//!
//! `cargo build --release -p larder-server -p larder-bench` then
//! `target/release/memory [REPS] [WORK]`. `WORK` is a bench work directory
//! whose big store already exists (default `bench/work`); it is only read.
//! Logs go to a fresh temporary directory.

use std::path::PathBuf;

use larder_bench::load::ZSTD;
use larder_bench::memory::memory_under_load;
use larder_bench::{Error, closure, fixtures};

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let reps: usize = match args.next() {
        Some(n) => n.parse()?,
        None => 2,
    };
    let work = args.next().map_or_else(closure::work_dir, PathBuf::from);
    let list = work.join("big-store.txt");
    if !list.exists() {
        return Err(format!("{} missing: run the serve bench once", list.display()).into());
    }
    let (big, hash) = fixtures::big_store(&work, &work.join("all.nar"))?;
    let run = tempfile::tempdir()?;
    for _ in 0..reps {
        memory_under_load(&big, &hash, &[], run.path())?;
        memory_under_load(&big, &hash, ZSTD, run.path())?;
    }
    Ok(())
}
