//! larder-server against nginx serving a static `nix copy --to file://`
//! export of the same closure, in the same run (design.md, "Performance"):
//! warm one pass, then time every narinfo over one keep-alive connection,
//! every NAR once over 1 and 16 connections (identity and zstd, bodies
//! discarded, never decompressed), zstd cold against `zstd -1 -T0`, and the
//! server's memory while 64 clients download a NAR of more than 1 GiB.
//!
//! `cargo build --release -p larder-server -p larder-signer -p larder-bench`
//! then `target/release/serve [REPS]` (default 3). Writes
//! `bench/results/serve.{md,tsv,png}`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use larder_bench::Error;
use larder_bench::load::{Pass, ZSTD, fetch_all, fetch_narinfos};
use larder_bench::memory::memory_under_load;
use larder_bench::results::Results;
use larder_bench::serve_report::{self, Closure, RunInfo};
use larder_bench::servers::{
    Server, cpu_ticks, larder, nginx, nginx_front, pin_binaries, server_has, ticks_to_time,
};
use larder_bench::{closure, fixtures, report, signing};
use larder_store::StoreLocation;

/// What the numbers mean (from profiles of this benchmark).
const NOTES: &str = "
## Reading the numbers

- Each ratio is the median over repetitions of the ratio of two passes taken side by side (larder's and nginx's, or larder's and the `zstd` CLI's), which cancels much of the drift of a shared machine's load. \"Same in CPU time\" compares the CPU (user + system) the servers used for those passes (larder: all its threads; nginx: master and workers; cold zstd: the `zstd` process), which the other users of the machine disturb far less than wall time; the client's own CPU is in neither.
- nginx answers from static files with `sendfile(2)`: the bytes go from the page cache to the socket without entering nginx. larder reads every file into a user-space buffer (copy 1), actix-http's HTTP/1 encoder copies each body chunk into its write buffer (copy 2: `Codec::encode` → `extend_from_slice`, ~11% of the server's CPU with 1 connection and ~25% with 16 in `perf`), and writes it to the socket (copy 3). On a 2-core machine shared with the client, CPU per byte is time per byte: the NAR ratios measure those copies.
- Warm zstd serves files from the compressed-NAR cache; nginx serves the `nix copy` export's `.nar.zst` files, compressed at zstd's default level 3 (smaller than larder's level 1).
- Cold zstd is larder compressing on the fly (no cache, or a fresh one that it fills) against `zstd -1 -T0` reading the concatenated NARs from the page cache.
- Memory: 64 streams at once, each over a fresh TCP connection reading as fast as it can, for a bounded window (the whole 64 × 1.3 GiB would take minutes); the server is fresh for each encoding, so VmHWM is that run's peak.
- To profile one scenario: start `larder-server` by hand, run `target/release/fetch ADDR nar 16 [zstd] [PASSES]` (or `narinfo 1`), and `perf record -g -p PID` meanwhile.
";

/// narinfo passes per repetition: one takes ~30 ms, so a few more than
/// the other measurements keep the median steady on a busy machine.
const NARINFO_PASSES: usize = 5;

/// Everything the runs share.
struct Bench {
    reps: usize,
    store_root: PathBuf,
    hashes: Vec<String>,
    /// Scratch space of this run: logs, compressed-NAR caches.
    run: PathBuf,
    nginx: Server,
    /// NAR URLs in nginx's uncompressed and zstd exports, larder's (identity).
    nginx_urls: Vec<String>,
    nginx_zstd_urls: Vec<String>,
    larder_urls: Vec<String>,
}

/// What is served, made once under `bench/work/` and reused.
struct Fixtures {
    work: PathBuf,
    location: StoreLocation,
    hashes: Vec<String>,
    export_none: PathBuf,
    export_zstd: PathBuf,
    all_nars: PathBuf,
    /// A store with one path over 1 GiB, and its hash.
    big: (StoreLocation, String),
}

impl Fixtures {
    fn prepare() -> Result<Fixtures, Error> {
        let work = closure::work_dir();
        let location = closure::location(&work);
        let paths = closure::store_paths(&work, &location)?;
        let hashes = paths
            .iter()
            .map(|p| fixtures::hash_part(p))
            .collect::<Result<Vec<_>, _>>()?;
        let export_none = fixtures::export(&work, &location, &paths, "none")?;
        let export_zstd = fixtures::export(&work, &location, &paths, "zstd")?;
        let all_nars = fixtures::concatenated_nars(&work, &export_none)?;
        let big = fixtures::big_store(&work, &all_nars)?;
        Ok(Fixtures {
            work,
            location,
            hashes,
            export_none,
            export_zstd,
            all_nars,
            big,
        })
    }
}

fn main() -> Result<(), Error> {
    let reps: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 3,
    };
    let fx = Fixtures::prepare()?;
    let run = fx.work.join("serve-run");
    let _ = fs::remove_dir_all(&run);
    fs::create_dir_all(&run)?;
    pin_binaries(&run)?;
    let load_before = report::load_average()?;
    let started = Instant::now();
    let mut bench = Bench {
        reps,
        store_root: fx.location.root().to_owned(),
        hashes: fx.hashes.clone(),
        nginx: nginx(&[&fx.export_none, &fx.export_zstd], &run)?,
        run,
        nginx_urls: Vec::new(),
        nginx_zstd_urls: Vec::new(),
        larder_urls: Vec::new(),
    };
    let mut results = Results::default();
    let nar_bytes = bench.identity_and_cold_zstd(&mut results, &fx.all_nars)?;
    bench.cached_zstd(&mut results)?;
    let (big, big_hash) = &fx.big;
    let memory = [
        memory_under_load(big, big_hash, &[], &bench.run)?,
        memory_under_load(big, big_hash, ZSTD, &bench.run)?,
    ];
    let dirs = signing::Dirs {
        work: &fx.work,
        run: &bench.run,
    };
    signing::measure(
        &mut results,
        &bench.nginx,
        &fx.location,
        &fx.hashes,
        reps,
        dirs,
    )?;
    let all_nars = fx.all_nars.metadata()?.len();
    let closure = Closure {
        paths: fx.hashes.len(),
        nar_bytes,
        zstd_export_bytes: dir_bytes(&fx.export_zstd.join("nar"))?,
        big_nar_bytes: all_nars,
    };
    let load_after = report::load_average()?;
    let run = RunInfo {
        closure: &closure,
        all_nars,
        load_before: &load_before,
        load_after: &load_after,
        elapsed: started.elapsed(),
        notes: NOTES,
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    serve_report::write(&dir, &results, &memory, &run)
}

impl Bench {
    /// narinfo and identity NARs against nginx, cold Content-Encoding zstd
    /// against `zstd -1 -T0`. Returns the closure's NAR bytes.
    fn identity_and_cold_zstd(
        &mut self,
        results: &mut Results,
        all_nars: &Path,
    ) -> Result<u64, Error> {
        let server = larder(&self.store_root, &["--compression", "none"], &self.run)?;
        let no_memo = self.memo_off_server()?;
        let (ng, ngz, la) = (self.nginx.addrs[0], self.nginx.addrs[1], server.addr());
        // The warm pass: page cache, DB pages, connection set-up.
        self.nginx_urls = fetch_narinfos(ng, &self.hashes)?.1;
        self.nginx_zstd_urls = fetch_narinfos(ngz, &self.hashes)?.1;
        self.larder_urls = fetch_narinfos(la, &self.hashes)?.1;
        fetch_all(ng, &self.nginx_urls, 1, &[])?;
        fetch_all(ngz, &self.nginx_zstd_urls, 1, &[])?;
        let nar_bytes = fetch_all(la, &self.larder_urls, 1, &[])?.bytes;
        let nginx = &self.nginx;
        for _ in 0..self.reps {
            self.narinfo_round(results, &server, no_memo.as_ref())?;
            for n in [1, 16] {
                let pass = nginx.measure(|| fetch_all(ng, &self.nginx_urls, n, &[]))?;
                results.record(&format!("NAR, {n} conn: nginx"), pass);
                let pass = server.measure(|| fetch_all(la, &self.larder_urls, n, &[]))?;
                results.record(&format!("NAR, {n} conn: larder"), pass);
            }
            results.record("zstd -1 -T0 of the concatenated NARs", zstd_cli(all_nars)?);
            for n in [1, 16] {
                let pass = server.measure(|| fetch_all(la, &self.larder_urls, n, ZSTD))?;
                results.record(
                    &format!("zstd cold, Content-Encoding, {n} conn: larder"),
                    pass,
                );
            }
        }
        Ok(nar_bytes)
    }

    /// [`NARINFO_PASSES`] narinfo passes of each server, interleaved.
    fn narinfo_round(
        &self,
        results: &mut Results,
        larder: &Server,
        no_memo: Option<&Server>,
    ) -> Result<(), Error> {
        let narinfos =
            |server: &Server| server.measure(|| Ok(fetch_narinfos(server.addr(), &self.hashes)?.0));
        for _ in 0..NARINFO_PASSES {
            results.record("narinfo, 1 connection: nginx", narinfos(&self.nginx)?);
            results.record("narinfo, 1 connection: larder", narinfos(larder)?);
            if let Some(server) = no_memo {
                results.record("narinfo, 1 connection: larder, memo off", narinfos(server)?);
            }
        }
        Ok(())
    }

    /// larder with its short-lived narinfo memo off, when it has one (a
    /// client asks for each narinfo once, not every second), warmed.
    fn memo_off_server(&self) -> Result<Option<Server>, Error> {
        if !server_has("--path-info-ttl-ms")? {
            return Ok(None);
        }
        let flags = ["--path-info-ttl-ms", "0"];
        let server = larder(&self.store_root, &flags, &self.run)?;
        fetch_narinfos(server.addr(), &self.hashes)?;
        Ok(Some(server))
    }

    /// `.nar.zst` through the compressed-NAR cache: the first pass of a
    /// fresh server is cold (and fills the cache), the next ones are warm,
    /// against nginx serving the pre-compressed export. The same warm
    /// passes behind an nginx front (as `contrib/nginx/larder.conf`):
    /// proxied, and with `--accel-redirect` (nginx sends the cache files).
    fn cached_zstd(&self, results: &mut Results) -> Result<(), Error> {
        let ngz = self.nginx.addrs[1];
        for rep in 0..self.reps {
            let cache = self.run.join(format!("nar-cache-{rep}"));
            let flags = ["--compression", "zstd", "--cache-dir", path_str(&cache)?];
            let larder = larder(&self.store_root, &flags, &self.run)?;
            let la = larder.addr();
            let urls = fetch_narinfos(la, &self.hashes)?.1;
            let pass = larder.measure(|| fetch_all(la, &urls, 1, &[]))?;
            results.record("zstd cold, .nar.zst, 1 conn: larder", pass);
            let proxied = nginx_front("nginx-proxied", la, &cache, &self.run)?;
            let offload_cache = self.run.join(format!("offload-cache-{rep}"));
            let offloading = self.offloading(&offload_cache)?;
            let mut fronts = vec![(&proxied, &larder, "proxied")];
            if let Some((server, front)) = &offloading {
                fronts.push((front, server, "accel-redirect"));
            }
            for n in [1, 16] {
                let pass = self
                    .nginx
                    .measure(|| fetch_all(ngz, &self.nginx_zstd_urls, n, &[]))?;
                results.record(&format!("zstd, {n} conn: nginx (pre-compressed)"), pass);
                let pass = larder.measure(|| fetch_all(la, &urls, n, &[]))?;
                results.record(&format!("zstd warm, .nar.zst, {n} conn: larder"), pass);
                for &(front, server, how) in &fronts {
                    let fa = front.addr();
                    let pass = server.measure_with(front, || fetch_all(fa, &urls, n, &[]))?;
                    results.record(
                        &format!("zstd warm, .nar.zst, {n} conn: nginx → larder, {how}"),
                        pass,
                    );
                }
            }
            let pass = larder.measure(|| fetch_all(la, &self.larder_urls, 1, ZSTD))?;
            results.record("zstd warm, Content-Encoding, 1 conn: larder", pass);
            drop(fronts);
            drop((proxied, larder, offloading));
            fs::remove_dir_all(&cache)?;
            let _ = fs::remove_dir_all(&offload_cache);
        }
        Ok(())
    }

    /// larder-server with `--accel-redirect` and its own compressed-NAR
    /// cache in `cache`, behind an nginx front that sends the cache files;
    /// the cache filled by a first pass through the front; `None` for a
    /// larder-server without `--accel-redirect`.
    fn offloading(&self, cache: &Path) -> Result<Option<(Server, Server)>, Error> {
        if !server_has("--accel-redirect")? {
            return Ok(None);
        }
        let flags = [
            "--compression",
            "zstd",
            "--cache-dir",
            path_str(cache)?,
            "--accel-redirect",
            "/_larder_cache/",
        ];
        let server = larder(&self.store_root, &flags, &self.run)?;
        let front = nginx_front("nginx-offload", server.addr(), cache, &self.run)?;
        let urls = fetch_narinfos(front.addr(), &self.hashes)?.1;
        fetch_all(front.addr(), &urls, 1, &[])?;
        // The last file is published once its compression ends, which can
        // be just after its last byte reached the client.
        std::thread::sleep(Duration::from_secs(1));
        Ok(Some((server, front)))
    }
}

fn path_str(path: &Path) -> Result<&str, Error> {
    path.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", path.display()).into())
}

/// `zstd -1 -T0` of `file` to /dev/null; the pass counts the input bytes.
fn zstd_cli(file: &Path) -> Result<Pass, Error> {
    let cpu_before = cpu_ticks(std::process::id(), true)?;
    let start = Instant::now();
    let status = Command::new("zstd")
        .args(["-1", "-T0", "-q", "-c"])
        .arg(file)
        .stdout(fs::File::create("/dev/null")?)
        .stderr(Stdio::inherit())
        .status()?;
    let elapsed = start.elapsed();
    if !status.success() {
        return Err(format!("zstd failed: {status}").into());
    }
    let cpu = cpu_ticks(std::process::id(), true)? - cpu_before;
    Ok(Pass {
        elapsed,
        bytes: file.metadata()?.len(),
        cpu: Some(ticks_to_time(cpu)),
    })
}

fn dir_bytes(dir: &Path) -> Result<u64, Error> {
    fs::read_dir(dir)?.map(|e| Ok(e?.metadata()?.len())).sum()
}
