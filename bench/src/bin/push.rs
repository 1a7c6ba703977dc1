//! Pushing the benchmark closure (>1.3 GiB of NARs) into a cache host, in
//! the same run, three ways, each into a fresh destination:
//! `nix copy --to http://…` through `larder-sync receive` (a netrc token;
//! the receiver decompresses into staging and imports through the real
//! Nix's `nix-daemon --stdio`),
//! `nix copy --to file://DIR` (a static binary cache: the floor), and
//! `nix copy --to ssh-ng://root@127.0.0.1?remote-store=…` through a real
//! sshd on loopback. http:// and file:// use the same client-side
//! compression (`zstd`, `none`; `xz`, Nix's default, on a subset). Then the
//! receiver's peak RSS (VmHWM) while one path of more than 1 GiB arrives.
//!
//! `cargo build --release -p larder-sync -p larder-bench` then
//! `target/release/push [REPS] [XZ_MIB] [LIMIT_MIB]` (defaults 3, 128,
//! the whole closure; XZ_MIB 0 skips xz; LIMIT_MIB takes the first paths
//! up to that size and skips the big NAR, to try it out).
//! `LARDER_SYNC_BIN` picks another receiver binary. Writes `bench/results/push.{md,tsv}` (the TSV after every
//! pass, so an interrupted run keeps what it measured).

use std::fmt::Write as _;
use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use larder_bench::servers::{binary, free_addr, memory_kib};
use larder_bench::{Error, closure, fixtures, report};
use larder_store::StoreLocation;
use larder_store::nar::NarPlan;
use larder_tests::sshd::Sshd;

const MIB: f64 = (1 << 20) as f64;
const TOKEN: &str = "bench-token-0123456789abcdef";
/// What stops the client from remembering a previous run's narinfos.
const NO_CACHE: [&str; 6] = [
    "--option",
    "narinfo-cache-positive-ttl",
    "0",
    "--option",
    "narinfo-cache-negative-ttl",
    "0",
];

/// One timed push.
struct Pass {
    /// e.g. `receive zstd`, `file zstd`, `ssh-ng`.
    name: String,
    rep: usize,
    nar_bytes: u64,
    elapsed: Duration,
    /// The receiver's VmHWM (KiB), for passes through it.
    hwm_kib: Option<u64>,
}

impl Pass {
    fn mib_s(&self) -> f64 {
        self.nar_bytes as f64 / MIB / self.elapsed.as_secs_f64()
    }
}

/// A running `larder-sync receive` into a fresh store, killed on drop.
struct Receiver {
    child: Child,
    url: String,
    netrc: PathBuf,
}

impl Receiver {
    fn start(host_root: &Path, dir: &Path) -> Result<Receiver, Error> {
        let tokens = dir.join("tokens");
        fs::write(&tokens, format!("bench {TOKEN}\n"))?;
        fs::set_permissions(&tokens, fs::Permissions::from_mode(0o600))?;
        let netrc = dir.join("netrc");
        let addr = free_addr()?;
        fs::write(
            &netrc,
            format!("machine 127.0.0.1 login bench password {TOKEN}\n"),
        )?;
        let log = fs::File::create(dir.join("receive.log"))?;
        let child = Command::new(receiver_binary()?)
            .env("NIX_CONFIG", closure::NIX_CONFIG)
            .env("LARDER_SYNC_LOG", "warn")
            .arg("--store-root")
            .arg(host_root)
            .arg("receive")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--tokens")
            .arg(&tokens)
            .arg("--staging-dir")
            .arg(dir.join("staging"))
            .args([
                "--max-nar-size-mib",
                "8192",
                "--upload-timeout-secs",
                "3600",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut receiver = Receiver {
            child,
            url: format!("http://{addr}"),
            netrc,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = receiver.child.try_wait()? {
                return Err(format!("larder-sync receive exited: {status}").into());
            }
            if Instant::now() > deadline {
                return Err("larder-sync receive does not listen".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(receiver)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The receiver measured: `$LARDER_SYNC_BIN`, or the workspace's
/// release build.
fn receiver_binary() -> Result<PathBuf, Error> {
    match std::env::var_os("LARDER_SYNC_BIN") {
        Some(bin) => Ok(PathBuf::from(bin)),
        None => binary("larder-sync"),
    }
}

/// `nix copy --no-check-sigs --from SOURCE --to URI PATHS` with extra
/// options and environment; its wall time.
fn nix_copy(
    source: &Path,
    uri: &str,
    paths: &[String],
    extra: &[&str],
    env: &[(&str, &str)],
) -> Result<Duration, Error> {
    let started = Instant::now();
    let out = Command::new("nix")
        .env("NIX_CONFIG", closure::NIX_CONFIG)
        .envs(env.iter().copied())
        .args(["copy", "--no-check-sigs", "--from"])
        .arg(source)
        .args(["--to", uri])
        .args(extra)
        .args(paths)
        .stdin(Stdio::null())
        .output()?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        return Err(format!(
            "nix copy --to {uri} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(elapsed)
}

/// Everything one run shares.
struct Bench {
    run: PathBuf,
    sshd: Sshd,
    passes: Vec<Pass>,
    results: PathBuf,
    summary: Summary,
    started: Instant,
    /// Report name: `$LARDER_PUSH_OUT`, default `push`.
    out: String,
}

impl Bench {
    fn record(&mut self, pass: Pass) -> Result<(), Error> {
        println!(
            "{} #{}: {:.1} s, {:.1} MiB/s{}",
            pass.name,
            pass.rep,
            pass.elapsed.as_secs_f64(),
            pass.mib_s(),
            pass.hwm_kib
                .map(|k| format!(", receiver VmHWM {:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_default()
        );
        self.passes.push(pass);
        let mut tsv = String::from("name\trep\tnar_bytes\tseconds\tmib_per_s\treceiver_hwm_kib\n");
        for p in &self.passes {
            let _ = writeln!(
                tsv,
                "{}\t{}\t{}\t{:.3}\t{:.1}\t{}",
                p.name,
                p.rep,
                p.nar_bytes,
                p.elapsed.as_secs_f64(),
                p.mib_s(),
                p.hwm_kib.map(|k| k.to_string()).unwrap_or_default()
            );
        }
        fs::write(self.results.join(format!("{}.tsv", self.out)), tsv)?;
        self.summary.load_after = report::load_average()?;
        self.summary.took = self.started.elapsed();
        fs::write(
            self.results.join(format!("{}.md", self.out)),
            render(&self.passes, &self.summary),
        )?;
        Ok(())
    }

    /// A fresh scratch dir under the run dir (the previous one removed).
    fn fresh(&self, name: &str) -> Result<PathBuf, Error> {
        let dir = self.run.join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Whether `LARDER_PUSH_TARGETS` (comma-separated: file, receive,
    /// ssh-ng, big, xz; default all) names `target`.
    fn wants(target: &str) -> bool {
        std::env::var("LARDER_PUSH_TARGETS").map_or(true, |t| t.split(',').any(|x| x == target))
    }

    fn push_file(
        &mut self,
        source: &Path,
        paths: &[String],
        nar_bytes: u64,
        compression: &str,
        label: &str,
        rep: usize,
    ) -> Result<(), Error> {
        let dir = self.fresh("file")?;
        let uri = format!("file://{}?compression={compression}", dir.display());
        let elapsed = nix_copy(source, &uri, paths, &[], &[])?;
        let _ = fs::remove_dir_all(&dir);
        self.record(Pass {
            name: format!("file {label}"),
            rep,
            nar_bytes,
            elapsed,
            hwm_kib: None,
        })
    }

    /// Through a fresh receiver into a fresh store; also samples the
    /// receiver's VmRSS every 100 ms (VmHWM is the kernel's own peak).
    fn push_receive(
        &mut self,
        source: &Path,
        paths: &[String],
        nar_bytes: u64,
        compression: &str,
        label: &str,
        rep: usize,
    ) -> Result<(), Error> {
        let dir = self.fresh("receive")?;
        let host = dir.join("host");
        // Opening the store creates its DB, which the receiver checks.
        count_valid(&host)?;
        let receiver = Receiver::start(&host, &dir)?;
        let pid = receiver.child.id();
        let uri = format!("{}?compression={compression}", receiver.url);
        let netrc = receiver.netrc.to_string_lossy().into_owned();
        let mut extra: Vec<&str> = vec!["--option", "netrc-file", &netrc];
        extra.extend(NO_CACHE);
        let done = AtomicBool::new(false);
        let peak = AtomicU64::new(0);
        let elapsed = std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    if let Ok((rss, _)) = memory_kib(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            let elapsed = nix_copy(source, &uri, paths, &extra, &[]);
            done.store(true, Ordering::Relaxed);
            elapsed
        })?;
        let hwm = memory_kib(pid)?.1;
        drop(receiver);
        let imported = count_valid(&host)?;
        let _ = fs::remove_dir_all(&dir);
        if imported < paths.len() {
            return Err(format!(
                "receive: only {imported} of {} paths valid in the host store",
                paths.len()
            )
            .into());
        }
        self.record(Pass {
            name: format!("receive {label}"),
            rep,
            nar_bytes,
            elapsed,
            hwm_kib: Some(hwm),
        })
    }

    fn push_ssh_ng(
        &mut self,
        source: &Path,
        paths: &[String],
        nar_bytes: u64,
        rep: usize,
    ) -> Result<(), Error> {
        let dir = self.fresh("ssh-ng")?;
        let uri = self.sshd.ssh_ng_uri(&dir);
        let opts = self.sshd.nix_sshopts();
        let elapsed = nix_copy(source, &uri, paths, &[], &[("NIX_SSHOPTS", &opts)])?;
        let _ = fs::remove_dir_all(&dir);
        self.record(Pass {
            name: "ssh-ng".to_owned(),
            rep,
            nar_bytes,
            elapsed,
            hwm_kib: None,
        })
    }
}

/// Valid paths in a chroot store (`nix path-info --all`).
fn count_valid(root: &Path) -> Result<usize, Error> {
    let out = Command::new("nix")
        .env("NIX_CONFIG", closure::NIX_CONFIG)
        .args(["path-info", "--all", "--store"])
        .arg(root)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "nix path-info --all --store {}: {}",
            root.display(),
            out.status
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?.lines().count())
}

/// The NAR size of each path, from a walk of its files.
fn nar_sizes(location: &StoreLocation, paths: &[String]) -> Result<Vec<u64>, Error> {
    paths
        .iter()
        .map(|p| {
            let real = location.real_path(&location.parse_path(p)?);
            Ok(NarPlan::walk(&real)?.nar_size())
        })
        .collect()
}

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let reps: usize = args.next().map_or(Ok(3), |a| a.parse())?;
    let xz_mib: u64 = args.next().map_or(Ok(128), |a| a.parse())?;
    // A smaller closure, for trying the benchmark out (no big NAR then).
    let limit_mib: Option<u64> = args.next().map(|a| a.parse()).transpose()?;

    let work = closure::work_dir();
    let location = closure::location(&work);
    let mut paths = closure::store_paths(&work, &location)?;
    let mut sizes = nar_sizes(&location, &paths)?;
    if let Some(limit) = limit_mib {
        let mut total = 0;
        let keep = sizes
            .iter()
            .take_while(|s| {
                total += **s;
                total <= limit << 20
            })
            .count()
            .max(1);
        paths.truncate(keep);
        sizes.truncate(keep);
    }
    let nar_bytes: u64 = sizes.iter().sum();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let export_none = fixtures::export(&work, &location, &paths, "none")?;
    let all_nars = fixtures::concatenated_nars(&work, &export_none)?;
    let (big, _) = fixtures::big_store(&work, &all_nars)?;
    let big_path = fs::read_to_string(work.join("big-store.txt"))?
        .trim()
        .to_owned();
    let big_bytes = nar_sizes(&big, std::slice::from_ref(&big_path))?[0];

    // xz on a subset: the client's single-threaded xz bounds both ends.
    let mut xz_paths = Vec::new();
    let mut xz_bytes = 0;
    for (p, size) in paths.iter().zip(&sizes) {
        if xz_bytes >= xz_mib << 20 {
            break;
        }
        xz_paths.push(p.clone());
        xz_bytes += size;
    }

    let out = std::env::var("LARDER_PUSH_OUT").unwrap_or_else(|_| "push".to_owned());
    let run = work.join(format!("{out}-run"));
    let _ = fs::remove_dir_all(&run);
    fs::create_dir_all(&run)?;
    // The host side's nix.conf for sessions through sshd (no build users).
    let conf = run.join("host-conf");
    fs::create_dir_all(&conf)?;
    fs::write(conf.join("nix.conf"), closure::NIX_CONFIG)?;
    let sshd = Sshd::start_with_env(&[("NIX_CONF_DIR", conf.to_str().ok_or("non-UTF-8 path")?)]);
    let load_before = report::load_average()?;
    let mut bench = Bench {
        run,
        sshd,
        passes: Vec::new(),
        results: Path::new(env!("CARGO_MANIFEST_DIR")).join("results"),
        summary: Summary {
            reps,
            paths: paths.len(),
            nar_bytes,
            largest,
            xz_paths: xz_paths.len(),
            xz_bytes,
            load_before,
            load_after: String::new(),
            took: Duration::ZERO,
            machine: report::machine()?,
            receiver: receiver_binary().map_or_else(|e| e.to_string(), |b| b.display().to_string()),
        },
        started: Instant::now(),
        out,
    };
    // Passes of earlier partial runs (`LARDER_PUSH_MERGE=a.tsv,b.tsv`),
    // reported with this run's.
    if let Ok(files) = std::env::var("LARDER_PUSH_MERGE") {
        for file in files.split(',') {
            for line in fs::read_to_string(file)?.lines().skip(1) {
                let f: Vec<&str> = line.split('\t').collect();
                let [name, rep, bytes, secs, _, hwm] = f[..] else {
                    return Err(format!("{file}: bad line {line:?}").into());
                };
                bench.passes.push(Pass {
                    name: name.to_owned(),
                    rep: rep.parse()?,
                    nar_bytes: bytes.parse()?,
                    elapsed: Duration::from_secs_f64(secs.parse()?),
                    hwm_kib: (!hwm.is_empty()).then(|| hwm.parse()).transpose()?,
                });
            }
        }
    }
    let root = location.root().to_owned();
    let big_root = big.root().to_owned();
    let big_list = std::slice::from_ref(&big_path);
    let big_label = format!("zstd, one {:.0} MiB NAR", big_bytes as f64 / MIB);
    println!(
        "{} paths, {:.1} MiB of NARs (largest {:.1} MiB); {reps} repetitions",
        paths.len(),
        nar_bytes as f64 / MIB,
        largest as f64 / MIB
    );
    // The most telling first: a slow shared machine may not get through all.
    for rep in 1..=reps {
        for compression in ["none", "zstd"] {
            if Bench::wants(&format!("file {compression}")) {
                bench.push_file(&root, &paths, nar_bytes, compression, compression, rep)?;
            }
            if Bench::wants(&format!("receive {compression}")) {
                bench.push_receive(&root, &paths, nar_bytes, compression, compression, rep)?;
            }
            if compression == "none" && Bench::wants("ssh-ng") {
                bench.push_ssh_ng(&root, &paths, nar_bytes, rep)?;
            }
        }
        if rep == 1 && limit_mib.is_none() && Bench::wants("big") {
            // One NAR of more than 1 GiB: the receiver's memory.
            bench.push_receive(&big_root, big_list, big_bytes, "zstd", &big_label, 1)?;
        }
        if rep == 1 && xz_mib > 0 && Bench::wants("xz") {
            bench.push_file(&root, &xz_paths, xz_bytes, "xz", "xz (subset)", 1)?;
            bench.push_receive(&root, &xz_paths, xz_bytes, "xz", "xz (subset)", 1)?;
        }
    }
    let _ = fs::remove_dir_all(&bench.run);
    println!("{}", render(&bench.passes, &bench.summary));
    Ok(())
}

struct Summary {
    reps: usize,
    paths: usize,
    nar_bytes: u64,
    largest: u64,
    xz_paths: usize,
    xz_bytes: u64,
    load_before: String,
    load_after: String,
    took: Duration,
    machine: String,
    /// The `larder-sync` binary measured.
    receiver: String,
}

/// The median of a measurement's passes, by name.
fn median_of(passes: &[Pass], name: &str, f: impl Fn(&Pass) -> f64) -> Option<f64> {
    let values: Vec<f64> = passes.iter().filter(|p| p.name == name).map(f).collect();
    (!values.is_empty()).then(|| report::median(values))
}

/// receive/file: the median of the ratios of passes taken side by side.
fn ratio(passes: &[Pass], label: &str) -> Option<f64> {
    let file: Vec<&Pass> = passes
        .iter()
        .filter(|p| p.name == format!("file {label}"))
        .collect();
    let recv: Vec<&Pass> = passes
        .iter()
        .filter(|p| p.name == format!("receive {label}"))
        .collect();
    let ratios: Vec<f64> = file
        .iter()
        .filter_map(|f| {
            let r = recv.iter().find(|r| r.rep == f.rep)?;
            Some(r.mib_s() / f.mib_s())
        })
        .collect();
    (!ratios.is_empty()).then(|| report::median(ratios))
}

fn render(passes: &[Pass], s: &Summary) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Push: `larder-sync receive` against `file://` and `ssh-ng://`\n"
    );
    let _ = writeln!(
        md,
        "Written by `push {}` (bench/src/bin/push.rs) after every pass. Machine: {}. Load average {} before, {} at the last pass; {:.0} s of passes so far.\n",
        s.reps,
        s.machine,
        s.load_before,
        s.load_after,
        s.took.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "Closure: {} paths, {:.1} MiB of NARs (largest {:.1} MiB), pushed from a chroot store with `nix copy --no-check-sigs` (Nix 2.8) into a fresh destination each time. MiB/s = NAR bytes / wall time of the client's `nix copy`, median of {} runs; receive/file is the median of the per-run ratios (receive's MiB/s over file's, measured side by side). Receiver: `{}`; its RSS is the VmHWM of the `larder-sync receive` process (its `nix-daemon --stdio` import children are separate processes).\n",
        s.paths,
        s.nar_bytes as f64 / MIB,
        s.largest as f64 / MIB,
        s.reps,
        s.receiver
    );
    let _ = writeln!(
        md,
        "| push | MiB/s | seconds | receive/file | receiver VmHWM (MiB) |\n|---|---:|---:|---:|---:|"
    );
    let mut names: Vec<&str> = Vec::new();
    for p in passes {
        if !names.contains(&p.name.as_str()) {
            names.push(&p.name);
        }
    }
    for name in names {
        let mib_s = median_of(passes, name, Pass::mib_s).unwrap_or(0.0);
        let secs = median_of(passes, name, |p| p.elapsed.as_secs_f64()).unwrap_or(0.0);
        let ratio = name
            .strip_prefix("receive ")
            .and_then(|label| ratio(passes, label))
            .map(|r| format!("{r:.2}×"))
            .unwrap_or_default();
        let hwm = passes
            .iter()
            .filter(|p| p.name == name)
            .filter_map(|p| p.hwm_kib)
            .max()
            .map(|k| format!("{:.1}", k as f64 / 1024.0))
            .unwrap_or_default();
        let _ = writeln!(md, "| {name} | {mib_s:.1} | {secs:.1} | {ratio} | {hwm} |");
    }
    if s.xz_paths > 0 {
        let _ = writeln!(
            md,
            "\nxz (subset): the first {} paths ({:.1} MiB of NARs), one run each: both ends are bound by the client's single-threaded xz compressor.",
            s.xz_paths,
            s.xz_bytes as f64 / MIB
        );
    }
    md
}
