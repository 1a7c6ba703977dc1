//! The cost of a view (README "Private caches"): narinfo requests against
//! a rooted view of 10 000 paths and against the same server without
//! views, the time to recompute the view after a root changes, and the
//! memory the view holds.
//!
//! The store: 10 000 `builtins.toFile` paths in a chroot store, path `i`
//! referring to path `i/2` (a tree), and a top path referring to the
//! 5 000 leaves; one GC-root symlink to the top. Every narinfo of the 10 000
//! is asked in turn over one keep-alive connection (`--path-info-ttl-ms 0`:
//! every request reaches the DB, the worst case for the ratio; and with the
//! default memo), passes alternating between the two servers, medians
//! reported. Then a second root is added and the time until its path is
//! served is measured from outside, and the recomputation itself from the
//! server's `larder_view_recompute_seconds`.
//!
//! `cargo build --release -p larder-server && cargo run -p larder-bench
//! --bin views` (the server measured is the release build; the client's
//! work is the same for both servers); prints the Markdown of
//! `bench/results/views.md`.

use std::path::Path;
use std::time::{Duration, Instant};

use larder_bench::Error;
use larder_bench::http::Connection;
use larder_bench::load::fetch_narinfos;
use larder_bench::report::{load_average, machine, median};
use larder_bench::servers::{larder, memory_kib};
use larder_store::StoreLocation;
use larder_store::db::StoreDb;

const PATHS: usize = 10_000;
const PASSES: usize = 5;

fn main() -> Result<(), Error> {
    let work = tempfile::Builder::new().prefix("larder-views-").tempdir()?;
    let root = work.path().join("store");
    let made = Instant::now();
    let paths = make_store(&root)?;
    eprintln!(
        "store of {} paths made in {:?}",
        paths.len(),
        made.elapsed()
    );
    let hashes: Vec<String> = paths[..PATHS]
        .iter()
        .map(|p| p.rsplit('/').next().unwrap_or(p)[..32].to_owned())
        .collect();
    let roots = work.path().join("gcroots");
    std::fs::create_dir_all(&roots)?;
    std::os::unix::fs::symlink(&paths[PATHS], roots.join("top"))?;
    let config = work.path().join("views.toml");
    std::fs::write(
        &config,
        format!(
            "[[view]]\nname = \"bench\"\ngc-root-dirs = [\"{}\"]\n",
            roots.display()
        ),
    )?;
    let config = config.to_str().ok_or("non-UTF-8 temp dir")?.to_owned();

    let mut out = String::new();
    out.push_str(&format!(
        "Machine: {}; load average at start: {}.\n\n",
        machine()?,
        load_average()?
    ));
    out.push_str("| narinfo pass (10 000 requests, one connection) | no view: median | view of 10 001 paths: median | ratio |\n|---|---|---|---|\n");
    for (label, ttl) in [
        ("memo off (`--path-info-ttl-ms 0`)", "0"),
        ("memo on (default 1000 ms), warm", "1000"),
    ] {
        let plain = larder(&root, &["--path-info-ttl-ms", ttl], work.path())?;
        let viewed = larder(
            &root,
            &["--path-info-ttl-ms", ttl, "--config", &config],
            work.path(),
        )?;
        // Warm both (page cache, DB, memo), then alternate.
        fetch_narinfos(plain.addr(), &hashes)?;
        fetch_narinfos(viewed.addr(), &hashes)?;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..PASSES {
            a.push(
                fetch_narinfos(plain.addr(), &hashes)?
                    .0
                    .elapsed
                    .as_secs_f64(),
            );
            b.push(
                fetch_narinfos(viewed.addr(), &hashes)?
                    .0
                    .elapsed
                    .as_secs_f64(),
            );
        }
        let (a, b) = (median(a), median(b));
        out.push_str(&format!(
            "| {label} | {:.3} s ({:.1} µs/request) | {:.3} s ({:.1} µs/request) | {:.2}× |\n",
            a,
            a * 1e6 / PATHS as f64,
            b,
            b * 1e6 / PATHS as f64,
            b / a
        ));
    }

    // Memory and recomputation, on a fresh pair.
    let plain = larder(&root, &[], work.path())?;
    let viewed = larder(&root, &["--config", &config], work.path())?;
    std::thread::sleep(Duration::from_secs(1));
    let (plain_rss, _) = memory_kib(plain.pid())?;
    let (view_rss, _) = memory_kib(viewed.pid())?;
    let extra = &paths[PATHS + 1];
    let extra_hash = &extra.rsplit('/').next().unwrap_or(extra)[..32];
    let mut connection = Connection::new(viewed.addr());
    let status = |c: &mut Connection| -> Result<u16, Error> {
        Ok(c.get(&format!("/{extra_hash}.narinfo"), &[], false)?.status)
    };
    if status(&mut connection)? != 404 {
        return Err("the extra path is served before its root exists".into());
    }
    let added = Instant::now();
    std::os::unix::fs::symlink(extra, roots.join("extra"))?;
    while status(&mut connection)? != 200 {
        if added.elapsed() > Duration::from_secs(30) {
            return Err("the new root's path never appeared".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let visible = added.elapsed();
    std::fs::remove_file(roots.join("extra"))?;
    let removed = Instant::now();
    while status(&mut connection)? != 404 {
        if removed.elapsed() > Duration::from_secs(30) {
            return Err("the removed root's path never disappeared".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let gone = removed.elapsed();
    let metrics = connection.get("/metrics", &[], true)?;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    let series = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    let recomputes = series("larder_view_recompute_seconds_count");
    let recompute_mean = series("larder_view_recompute_seconds_sum") / recomputes;
    let (view_rss_after, _) = memory_kib(viewed.pid())?;

    // The same closure in process, to separate it from the poll interval.
    let location = StoreLocation::new(&root);
    let db = StoreDb::open(&location)?;
    let top: larder_store::StorePath = location.parse_path(&paths[PATHS])?;
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..PASSES {
        let start = Instant::now();
        let closure = db.closure_blocking(std::slice::from_ref(&top), &|_| true)?;
        times.push(start.elapsed().as_secs_f64());
        size = closure.len();
    }
    out.push_str(&format!(
        "\n| view upkeep | value |\n|---|---|\n\
         | closure of the top root, in process (`StoreDb::closure_blocking`, median of {PASSES}) | {:.1} ms for {size} paths |\n\
         | recomputation in the server (`larder_view_recompute_seconds`, mean of {recomputes}) | {:.1} ms |\n\
         | a new root's path served, from outside (poll every 1 s) | {:.2} s |\n\
         | a removed root's path gone, from outside | {:.2} s |\n\
         | server RSS after start: no view / view | {plain_rss} KiB / {view_rss} KiB (+{} KiB) |\n\
         | view server RSS after two recomputations | {view_rss_after} KiB |\n",
        median(times) * 1e3,
        recompute_mean * 1e3,
        visible.as_secs_f64(),
        gone.as_secs_f64(),
        view_rss.saturating_sub(plain_rss),
    ));
    println!("{out}");
    Ok(())
}

/// The store; returns the 10 000 tree paths, then the top, then one extra
/// path outside the tree.
fn make_store(root: &Path) -> Result<Vec<String>, Error> {
    let expr = format!(
        r#"let
          l = builtins.genList (i: builtins.toFile "p${{toString i}}" (if i == 0 then "root" else "x${{toString i}} ${{builtins.elemAt l (i / 2)}}")) {PATHS};
          top = builtins.toFile "top" (builtins.concatStringsSep " " (builtins.genList (i: builtins.elemAt l (i + {half})) {half}));
          extra = builtins.toFile "extra" "extra";
        in builtins.concatStringsSep "\n" (l ++ [ top extra ])"#,
        half = PATHS / 2
    );
    let out = std::process::Command::new("nix")
        .env("NIX_CONFIG", larder_tests::NIX_CONFIG)
        .arg("--store")
        .arg(root)
        .args(["eval", "--raw", "--impure", "--expr"])
        .arg(&expr)
        .output()?;
    if !out.status.success() {
        return Err(format!("nix eval: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let text = String::from_utf8(out.stdout)?;
    let paths: Vec<String> = text.lines().map(str::to_owned).collect();
    if paths.len() != PATHS + 2 {
        return Err(format!("expected {} paths, got {}", PATHS + 2, paths.len()).into());
    }
    Ok(paths)
}
