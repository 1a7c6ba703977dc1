//! The watcher: a scanner thread follows the local store DB's `ValidPaths`
//! row ids and enqueues new paths with its checkpoint; a pusher thread
//! drains the queue. Both loops survive errors (logged, retried next tick).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use larder_store::StoreLocation;
use larder_store::db::StoreDb;

use crate::error::{Result, SyncError};
use crate::metrics::{self, Metrics};
use crate::push::{PushConfig, Pusher};
use crate::queue::{Queue, now_ms};
use crate::target;

/// Rows read from the store DB per query.
const SCAN_LIMIT: usize = 1000;

#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub push: PushConfig,
    pub queue_path: PathBuf,
    /// Start from row 0 (the whole store) instead of the checkpoint or now.
    pub from_start: bool,
    pub include_drvs: bool,
    pub poll_interval: Duration,
    pub metrics_listen: Option<String>,
    /// Check the target answers before starting ([`crate::target::check`]).
    pub check_target: bool,
}

/// Follows one store DB and enqueues what appears in it.
pub struct Scanner {
    db: StoreDb,
    queue: Queue,
    key: String,
    include_drvs: bool,
}

impl Scanner {
    /// Open the store DB and the queue; set the checkpoint on a first start
    /// (now, or row 0 with `from_start`).
    pub fn open(location: &StoreLocation, config: &WatchConfig) -> Result<Scanner> {
        let db = StoreDb::open(location)?;
        let mut queue = Queue::open(&config.queue_path)?;
        let key = db.db_path().display().to_string();
        let start = match (config.from_start, queue.checkpoint(&key)?) {
            (true, _) => Some(0),
            (false, None) => Some(db.max_row_id_blocking()?),
            (false, Some(_)) => None,
        };
        if let Some(row) = start {
            queue.reset_checkpoint(&key, row)?;
        }
        Ok(Scanner {
            db,
            queue,
            key,
            include_drvs: config.include_drvs,
        })
    }

    pub fn db(&self) -> &StoreDb {
        &self.db
    }

    /// Enqueue every path registered since the checkpoint; returns how many.
    pub fn scan(&mut self) -> Result<usize> {
        let mut found = 0;
        loop {
            let from = self.queue.checkpoint(&self.key)?.unwrap_or(0);
            let rows = self.db.paths_after_blocking(from, SCAN_LIMIT)?;
            let Some(&(last, _)) = rows.last() else {
                return Ok(found);
            };
            let location = self.db.location();
            let paths: Vec<String> = rows
                .iter()
                .filter(|(_, p)| self.include_drvs || !p.name().ends_with(".drv"))
                .map(|(_, p)| location.display_path(p))
                .collect();
            found += self
                .queue
                .enqueue_with_checkpoint(&paths, Some((&self.key, last)))?;
            if rows.len() < SCAN_LIMIT {
                return Ok(found);
            }
        }
    }
}

/// Wakes the pusher early when the scanner found something.
#[derive(Default)]
struct Wake {
    flag: Mutex<bool>,
    cond: Condvar,
}

impl Wake {
    fn notify(&self) {
        *self.flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cond.notify_all();
    }

    fn wait(&self, timeout: Duration) {
        let guard = self.flag.lock().unwrap_or_else(|e| e.into_inner());
        let (mut guard, _) = self
            .cond
            .wait_timeout_while(guard, timeout, |woken| !*woken)
            .unwrap_or_else(|e| e.into_inner());
        *guard = false;
    }
}

/// A running watcher (scanner + pusher threads, optional metrics listener).
pub struct Watcher {
    config: WatchConfig,
    location: StoreLocation,
    stop: Arc<AtomicBool>,
    wake: Arc<Wake>,
    threads: Vec<JoinHandle<()>>,
}

impl Watcher {
    /// Check everything that can be wrong (store DB, queue file and its
    /// target, the target itself, metrics address), make every pending path
    /// due now (the setup may have been fixed since the last failure), then
    /// start the threads.
    pub fn start(config: WatchConfig) -> Result<Watcher> {
        let location = StoreLocation::new(config.push.local.root());
        if config.push.target.scheme() == "s3" {
            // Even with --no-target-check: a malformed s3:// URI (one with
            // credentials in it) must not reach the queue file or an error
            // that repeats it.
            crate::s3::S3Target::parse(&config.push.target)?;
        }
        let mut queue = Queue::open(&config.queue_path)?;
        if queue.target()?.is_some() {
            // A queue of another target is refused before any network check.
            queue.claim_target(config.push.target.as_str())?;
        }
        if let Some(key) = &config.push.sign_key {
            std::fs::File::open(key)
                .map_err(|e| SyncError::Usage(format!("--sign-key {}: {e}", key.display())))?;
        }
        if config.check_target {
            target::check(&config.push.target)?;
        }
        // Bind the queue only to a target that answered: a typo in the URL
        // must not claim it.
        queue.claim_target(config.push.target.as_str())?;
        let reset = queue.reset_backoff()?;
        if reset > 0 {
            tracing::info!(
                count = reset,
                "pending paths retried now (backoff reset at start)"
            );
        }
        let scanner = Scanner::open(&location, &config)?;
        let metrics = Arc::new(Metrics::new());
        if let Some(addr) = &config.metrics_listen {
            metrics::serve(addr, metrics.clone(), &config.queue_path)?;
        }
        let pusher = Pusher::new(config.push.clone(), queue, scanner.db().clone(), metrics);
        let mut watcher = Watcher {
            config,
            location,
            stop: Arc::new(AtomicBool::new(false)),
            wake: Arc::new(Wake::default()),
            threads: Vec::new(),
        };
        watcher.spawn("scanner", move |w| scan_loop(scanner, w))?;
        watcher.spawn("pusher", move |w| push_loop(pusher, w))?;
        Ok(watcher)
    }

    fn spawn(&mut self, name: &str, f: impl FnOnce(LoopCtl) + Send + 'static) -> Result<()> {
        let ctl = LoopCtl {
            stop: self.stop.clone(),
            wake: self.wake.clone(),
            interval: self.config.poll_interval,
        };
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || f(ctl))
            .map_err(|e| SyncError::Usage(format!("cannot start the {name} thread: {e}")))?;
        self.threads.push(handle);
        Ok(())
    }

    /// Scan once more (catching paths registered a moment ago), then wait
    /// until the queue is empty. `Ok(false)` if `timeout` passed first.
    pub fn drain(&self, timeout: Duration) -> Result<bool> {
        let mut scanner = Scanner::open(
            &self.location,
            &WatchConfig {
                from_start: false,
                ..self.config.clone()
            },
        )?;
        scanner.scan()?;
        self.wake.notify();
        let deadline = Instant::now() + timeout;
        let queue = Queue::open(&self.config.queue_path)?;
        while queue.stats()?.depth > 0 {
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(true)
    }

    /// Run until the process is stopped.
    pub fn wait(mut self) {
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify();
    }
}

/// What a loop needs to pace and stop itself.
struct LoopCtl {
    stop: Arc<AtomicBool>,
    wake: Arc<Wake>,
    interval: Duration,
}

impl LoopCtl {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::SeqCst)
    }
}

fn scan_loop(mut scanner: Scanner, ctl: LoopCtl) {
    while ctl.running() {
        match scanner.scan() {
            Ok(0) => {}
            Ok(n) => {
                tracing::debug!(count = n, "new paths enqueued");
                ctl.wake.notify();
            }
            Err(e) => tracing::error!("scanning the store DB: {e}"),
        }
        std::thread::sleep(ctl.interval);
    }
}

fn push_loop(mut pusher: Pusher, ctl: LoopCtl) {
    while ctl.running() {
        match pusher.step() {
            Ok(outcome) if outcome.handled() > 0 && outcome.failed == 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::error!("push queue: {e}"),
        }
        // Sleep until the next retry is due, new paths arrive, or a poll
        // interval passes (post-build-hook enqueues from other processes).
        let until_due = pusher
            .queue()
            .next_due_at()
            .ok()
            .flatten()
            .map(|at| Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)));
        let wait = until_due.map_or(ctl.interval, |d| d.min(ctl.interval));
        if !wait.is_zero() {
            ctl.wake.wait(wait);
        }
    }
}
