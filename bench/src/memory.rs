//! The server's memory while many clients download one big NAR at once:
//! VmRSS sampled every 100 ms from `/proc/<pid>/status`, and VmHWM (the
//! kernel's own peak) at the end, for a fresh server per encoding.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use larder_store::StoreLocation;

use crate::Error;
use crate::load::{concurrent_downloads, fetch_narinfos};
use crate::servers::{larder, memory_kib};

/// Concurrent downloads.
pub const CLIENTS: usize = 64;
/// How long they run at most (the whole transfer would take minutes).
const WINDOW: Duration = Duration::from_secs(15);
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

pub struct MemoryUse {
    /// `identity` or `zstd` (Content-Encoding).
    pub encoding: &'static str,
    pub idle_kib: u64,
    /// Largest VmRSS sampled under load.
    pub peak_rss_kib: u64,
    /// VmHWM after the load.
    pub hwm_kib: u64,
    pub window: Duration,
    /// Body and header bytes all clients received in the window.
    pub received: u64,
}

/// [`CLIENTS`] downloads of the NAR of `hash` (in the store at `location`),
/// with `headers`, for up to [`WINDOW`].
pub fn memory_under_load(
    location: &StoreLocation,
    hash: &str,
    headers: &[(&str, &str)],
    run: &Path,
) -> Result<MemoryUse, Error> {
    let server = larder(location.root(), &[], run)?;
    let (addr, pid) = (server.addr(), server.pid());
    let url = fetch_narinfos(addr, &[hash.to_owned()])?.1.remove(0);
    let idle_kib = memory_kib(pid)?.0;
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let (received, peak_rss_kib) = std::thread::scope(|scope| -> Result<_, Error> {
        let load = scope.spawn(|| concurrent_downloads(addr, &url, CLIENTS, headers, &stop));
        let mut peak = 0;
        let sampled = loop {
            if load.is_finished() || start.elapsed() >= WINDOW {
                break Ok(());
            }
            match memory_kib(pid) {
                Ok((rss, _)) => peak = peak.max(rss),
                Err(e) => break Err(e),
            }
            std::thread::sleep(SAMPLE_EVERY);
        };
        stop.store(true, Ordering::Relaxed);
        let received = load
            .join()
            .map_err(|_| Error::from("load thread panicked"))??;
        sampled?;
        Ok((received, peak))
    })?;
    let window = start.elapsed();
    let hwm_kib = memory_kib(pid)?.1;
    let encoding = if headers.is_empty() {
        "identity"
    } else {
        "zstd"
    };
    println!(
        "memory, {CLIENTS} clients, {encoding}: idle {idle_kib} KiB, peak RSS {peak_rss_kib} KiB, HWM {hwm_kib} KiB, {:.0} MiB in {window:.1?}",
        received as f64 / f64::from(1 << 20)
    );
    Ok(MemoryUse {
        encoding,
        idle_kib,
        peak_rss_kib,
        hwm_kib,
        window,
        received,
    })
}
