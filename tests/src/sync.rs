//! The real `larder-sync` binary against a [`TestStore`]: commands with the
//! test's queue file and store root, a watcher process (killed on drop, its
//! log printed when a test fails), and checks on what reached a target.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use larder_store::db::StoreDb;

use crate::process::{Running, binary};
use crate::{TestStore, run};

/// Numbers the watcher logs of one test.
static LOGS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A queue file and a store for `larder-sync` commands.
pub struct SyncSetup {
    pub dir: tempfile::TempDir,
    pub queue: PathBuf,
    pub store_root: PathBuf,
}

impl SyncSetup {
    pub fn new(store: &TestStore) -> SyncSetup {
        let dir = tempfile::Builder::new()
            .prefix("larder-sync-")
            .tempdir()
            .expect("tempdir");
        SyncSetup {
            queue: dir.path().join("state/queue.sqlite"),
            store_root: store.root().to_owned(),
            dir,
        }
    }

    /// `larder-sync --queue … --store-root … ARGS`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary("larder-sync"));
        cmd.env("NIX_CONFIG", crate::larder_nix_config())
            .env("LARDER_SYNC_LOG", "larder_sync=debug,info")
            .arg("--queue")
            .arg(&self.queue)
            .arg("--store-root")
            .arg(&self.store_root)
            .args(args);
        cmd
    }

    /// Wait (60 s at most) until `larder-sync status` satisfies `ready`.
    pub fn wait_for_status(&self, watcher: &mut SyncProcess, ready: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // The watcher may not have created the queue file yet.
            let out = self.output(&["status"]);
            let status = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.success() && ready(&status) {
                return;
            }
            watcher.process.assert_alive();
            assert!(
                Instant::now() < deadline,
                "status never became ready:\n{status}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run larder-sync")
    }

    /// `larder-sync status`, which must succeed.
    pub fn status(&self) -> String {
        String::from_utf8(run(&mut self.command(&["status"])).stdout).expect("utf-8")
    }

    /// Start `larder-sync watch ARGS` (polling every 100 ms, retries capped at 1 s).
    pub fn watch(&self, args: &[&str]) -> SyncProcess {
        self.watch_with_env(args, &[])
    }

    /// [`SyncSetup::watch`] with extra environment variables.
    pub fn watch_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> SyncProcess {
        let mut all = vec![
            "watch",
            "--poll-interval-ms",
            "100",
            "--retry-base-ms",
            "200",
            "--retry-max-secs",
            "1",
        ];
        all.extend(args);
        self.spawn(&all, env)
    }

    /// Start `larder-sync ARGS` with extra environment variables (e.g.
    /// `NIX_SSHOPTS`), its output in a log file.
    pub fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> SyncProcess {
        let log = self.dir.path().join(format!(
            "{}-{}.log",
            args.first().copied().unwrap_or("sync"),
            LOGS.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied())
            .stdout(File::create(&log).expect("log"))
            .stderr(File::create(&log).expect("log"));
        SyncProcess {
            process: Running::spawn("larder-sync", &mut cmd),
            log,
        }
    }
}

/// A running `larder-sync` process whose log is shown if the test fails.
pub struct SyncProcess {
    pub process: Running,
    log: PathBuf,
}

impl SyncProcess {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Wait (20 s at most) until the log contains `needle`.
    pub fn wait_for_log(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains(needle) {
            self.process.assert_alive();
            assert!(
                Instant::now() < deadline,
                "larder-sync never logged {needle:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SyncProcess {
    fn drop(&mut self) {
        self.process.kill();
        if std::thread::panicking() {
            eprintln!("--- larder-sync log ---\n{}", self.log());
        }
    }
}

/// Build `n` distinct one-file derivations named `<tag>-<i>` in one
/// `nix-build`; returns their output paths.
pub fn build_many(store: &TestStore, tag: &str, n: usize) -> Vec<String> {
    let expr = format!(
        r#"map (i: derivation {{ name = "{tag}-${{toString i}}"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; args = ["-c" "echo {tag} ${{toString i}} > $out"]; }}) (builtins.genList (x: x) {n})"#
    );
    let out = run(store
        .nix("nix-build")
        .args(["--no-out-link", "--quiet", "--max-jobs", "4", "-E"])
        .arg(expr));
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The narinfo a `file://` cache writes for a store path.
pub fn narinfo_in(cache: &Path, store_path: &str) -> PathBuf {
    let base = store_path.trim_start_matches("/nix/store/");
    cache.join(format!("{}.narinfo", &base[..32]))
}

/// When each of `paths` arrived in the file cache (its narinfo's mtime), or
/// None for those still missing.
pub fn arrivals(cache: &Path, paths: &[String]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(narinfo_in(cache, p))
                .and_then(|m| m.modified())
                .ok()
        })
        .collect()
}

/// Wait until every path is in the file cache; panics after `timeout`
/// naming how many are missing.
pub fn wait_for_arrival(
    cache: &Path,
    paths: &[String],
    timeout: Duration,
    watcher: &mut SyncProcess,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let missing = arrivals(cache, paths)
            .iter()
            .filter(|a| a.is_none())
            .count();
        if missing == 0 {
            return;
        }
        watcher.process.assert_alive();
        assert!(
            Instant::now() < deadline,
            "{missing} of {} paths never reached {}",
            paths.len(),
            cache.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Records when each path first appears in a store's DB (polled every
/// 5 ms on a thread): a path's registration time, to the polling interval.
pub struct RegistrationClock {
    seen: std::sync::Arc<std::sync::Mutex<HashMap<String, SystemTime>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl RegistrationClock {
    pub fn start(store: &TestStore) -> RegistrationClock {
        let db = StoreDb::open(&store.location()).expect("open store DB");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(HashMap::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let mut last = db.max_row_id_blocking().expect("max row id");
        std::thread::spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
                for (row, path) in db.paths_after_blocking(last, 1000).unwrap_or_default() {
                    last = row;
                    seen2
                        .lock()
                        .unwrap()
                        .insert(format!("/nix/store/{path}"), SystemTime::now());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        RegistrationClock { seen, stop }
    }

    pub fn registered_at(&self, path: &str) -> Option<SystemTime> {
        self.seen.lock().unwrap().get(path).copied()
    }
}

impl Drop for RegistrationClock {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// utime + stime of a process, in clock ticks (from /proc/<pid>/stat).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}
