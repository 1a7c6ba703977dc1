//! The pusher's one step: take the due paths from the queue, drop what
//! needs no copy, `nix copy` the rest, and record the outcome.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use larder_store::StoreLocation;
use larder_store::db::StoreDb;

use crate::error::{Result, SyncError};
use crate::lease::{self, PushLock};
use crate::metrics::Metrics;
use crate::nix::{self, LocalStore};
use crate::progress::Progress;
use crate::queue::{Backoff, Queue};
use crate::s3::S3Target;
use crate::s3::export::Exporter;
use crate::uri::StoreUri;

/// What the pusher copies where.
#[derive(Debug, Clone)]
pub struct PushConfig {
    pub local: LocalStore,
    pub target: StoreUri,
    /// Caches whose paths need no push (e.g. `https://cache.nixos.org`).
    pub skip_upstream: Vec<StoreUri>,
    pub batch_size: usize,
    pub backoff: Backoff,
    /// Sign paths with this secret key (`nix store sign`) before copying,
    /// for a target that requires signatures and trusts the builder's key.
    pub sign_key: Option<PathBuf>,
    /// `nix copy --no-check-sigs`: for a target where this user is trusted.
    pub no_check_sigs: bool,
    /// For an `s3://` target: larder-signer's socket, to sign narinfos.
    pub signer_socket: Option<PathBuf>,
}

/// What Nix says when a store that requires signatures gets an unsigned path.
const UNSIGNED: &str = "lacks a valid signature";

/// Added to a push error that is a refused signature: the two setups that fix it.
pub const UNSIGNED_HINT: &str = "hint: the target requires signatures and this path has none it \
trusts. Either sign on the builder (`--sign-key /etc/nix/builder.sec`, a key from `nix key \
generate-secret`) and add its public key to the cache host's trusted-public-keys, or make this \
ssh user a trusted-user on the cache host and pass `--no-check-sigs` (see README, \"ssh-ng push\"). \
Restart the watcher after fixing it: pending paths are retried at once";

pub struct Pusher {
    config: PushConfig,
    queue: Queue,
    db: StoreDb,
    metrics: Arc<Metrics>,
    progress: Progress,
    done: u64,
    lock: Option<PushLock>,
    /// The pid last seen holding the push lock (logged once per holder).
    waiting_for: Option<u32>,
    /// For an `s3://` target: larder writes the bucket itself (opened on
    /// first use).
    s3: Option<Exporter>,
}

/// What one step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StepOutcome {
    pub pushed: usize,
    pub skipped: usize,
    pub failed: usize,
}

impl StepOutcome {
    pub fn handled(&self) -> usize {
        self.pushed + self.skipped + self.failed
    }
}

impl Pusher {
    pub fn new(config: PushConfig, queue: Queue, db: StoreDb, metrics: Arc<Metrics>) -> Pusher {
        let progress = Progress::new(config.target.as_str());
        Pusher {
            config,
            queue,
            db,
            metrics,
            progress,
            done: 0,
            lock: None,
            waiting_for: None,
            s3: None,
        }
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Push one batch of due paths; a failed copy is recorded in the queue
    /// (with backoff), not returned: only queue errors are.
    pub fn step(&mut self) -> Result<StepOutcome> {
        if !self.hold_lock()? {
            return Ok(StepOutcome::default());
        }
        let due = self.queue.due(self.config.batch_size)?;
        if due.is_empty() {
            return Ok(StepOutcome::default());
        }
        let mut outcome = StepOutcome::default();
        let (present, gone) = self.partition_local(due);
        if !gone.is_empty() {
            tracing::warn!(count = gone.len(), first = %gone[0], "paths left the local store before they were pushed; dropping them");
            self.queue.complete(&gone)?;
            outcome.skipped += gone.len();
        }
        if !present.is_empty() {
            self.push_batch(&present, &mut outcome)?;
        }
        self.record(outcome)
    }

    /// Whether this pusher holds the queue's push lock (taking it if free).
    /// Another process holding it pushes the same queue; this one waits.
    fn hold_lock(&mut self) -> Result<bool> {
        if self.lock.is_some() {
            return Ok(true);
        }
        let path = self.queue.path().to_owned();
        self.lock = lease::try_acquire(&path)?;
        if self.lock.is_some() {
            self.waiting_for = None;
            return Ok(true);
        }
        let holder = lease::holder(&path)?;
        if holder != self.waiting_for {
            tracing::info!(
                pid = holder.unwrap_or(0),
                queue = %path.display(),
                "another larder-sync pushes this queue; this one only enqueues until it stops"
            );
            self.waiting_for = holder;
        }
        Ok(false)
    }

    /// Push `paths` in one copy. If that fails and the target still answers
    /// (`nix store ping`), some path of the batch is refused: bisect so the
    /// others are not held back by it. A target that does not answer is
    /// down, and the whole batch waits out its backoff.
    fn push_batch(&mut self, paths: &[String], outcome: &mut StepOutcome) -> Result<()> {
        let error = match self.try_push(paths) {
            Ok(copied) => return self.pushed(paths, &copied, outcome),
            Err(error) => error,
        };
        if paths.len() > 1 {
            match self.ping() {
                Ok(()) => return self.bisect(paths, outcome),
                Err(ping) => {
                    tracing::warn!(target = %self.config.target, "target does not answer: {ping}")
                }
            }
        }
        self.failed(paths, &error.to_string(), outcome)
    }

    /// Push each half of `paths` on its own, splitting failing halves
    /// further; a path that fails alone is failed with its own error.
    fn bisect(&mut self, paths: &[String], outcome: &mut StepOutcome) -> Result<()> {
        let (first, second) = paths.split_at(paths.len() / 2);
        for half in [first, second] {
            match self.try_push(half) {
                Ok(copied) => self.pushed(half, &copied, outcome)?,
                Err(e) if half.len() == 1 => self.failed(half, &e.to_string(), outcome)?,
                Err(_) => self.bisect(half, outcome)?,
            }
        }
        Ok(())
    }

    /// Ask which of `paths` need a copy and copy those; returns them. The
    /// error is Nix's (the queue is not touched).
    fn try_push(&mut self, paths: &[String]) -> std::result::Result<Vec<String>, SyncError> {
        if self.config.target.scheme() == "s3" {
            let exporter = self.exporter()?;
            let to_copy = exporter.missing(paths)?;
            if !to_copy.is_empty() {
                exporter.export(&to_copy)?;
            }
            return Ok(to_copy);
        }
        let to_copy = self.needing_copy(paths)?;
        if !to_copy.is_empty() {
            if let Some(key) = &self.config.sign_key {
                nix::sign(&self.config.local, key, &to_copy)?;
            }
            nix::copy_to(
                &self.config.local,
                &self.config.target,
                self.config.no_check_sigs,
                &to_copy,
            )?;
        }
        Ok(to_copy)
    }

    /// The `s3://` exporter, opened on first use.
    fn exporter(&mut self) -> Result<&mut Exporter> {
        if self.s3.is_none() {
            let target = S3Target::parse(&self.config.target)?;
            let location = self.db.location().clone();
            let exporter = Exporter::open(target, &location, self.config.signer_socket.clone())?;
            self.s3 = Some(exporter);
        }
        Ok(self.s3.as_mut().expect("opened above"))
    }

    /// Does the target answer? (`nix store ping`, or for s3:// a HEAD of
    /// its `nix-cache-info`.)
    fn ping(&mut self) -> Result<()> {
        if self.config.target.scheme() == "s3" {
            return self.exporter()?.bucket().exists("nix-cache-info").map(drop);
        }
        nix::ping(&self.config.target)
    }

    /// `paths` are on the target now; `copied` of them by this push.
    fn pushed(
        &mut self,
        paths: &[String],
        copied: &[String],
        outcome: &mut StepOutcome,
    ) -> Result<()> {
        self.queue.complete(paths)?;
        outcome.pushed += copied.len();
        outcome.skipped += paths.len() - copied.len();
        if !copied.is_empty() {
            tracing::info!(count = copied.len(), target = %self.config.target, "pushed");
        }
        Ok(())
    }

    fn failed(&mut self, paths: &[String], error: &str, outcome: &mut StepOutcome) -> Result<()> {
        let hinted;
        let error = if error.contains(UNSIGNED) {
            hinted = format!("{error}\n{UNSIGNED_HINT}");
            hinted.as_str()
        } else {
            error
        };
        tracing::error!(count = paths.len(), first = %paths[0], target = %self.config.target, "push failed, will retry: {error}");
        self.queue.fail(paths, error, self.config.backoff)?;
        self.metrics.push_failures.inc();
        outcome.failed += paths.len();
        Ok(())
    }

    fn record(&mut self, outcome: StepOutcome) -> Result<StepOutcome> {
        self.metrics.pushed.inc_by(outcome.pushed as u64);
        self.metrics.skipped.inc_by(outcome.skipped as u64);
        self.done += (outcome.pushed + outcome.skipped) as u64;
        let stats = self.queue.stats()?;
        self.metrics.observe(&stats);
        self.progress.update(self.done, stats.depth);
        Ok(outcome)
    }

    /// Split into paths still valid locally and paths gone (garbage
    /// collected, or never valid): those can never be pushed.
    fn partition_local(&self, paths: Vec<String>) -> (Vec<String>, Vec<String>) {
        let location: &StoreLocation = self.db.location();
        paths.into_iter().partition(|p| {
            match location.parse_path(p) {
                // A DB error keeps the path: better a failed copy than a lost path.
                Ok(sp) => self.db.query_valid_blocking(&sp).unwrap_or(true),
                Err(_) => false,
            }
        })
    }

    /// The paths neither the target nor an upstream cache has.
    fn needing_copy(&self, paths: &[String]) -> Result<Vec<String>> {
        let target = OsString::from(self.config.target.as_str());
        let mut have: HashSet<String> = nix::valid_paths(&target, paths)?;
        for upstream in &self.config.skip_upstream {
            let rest: Vec<String> = paths
                .iter()
                .filter(|p| !have.contains(*p))
                .cloned()
                .collect();
            match nix::valid_paths(&OsString::from(upstream.as_str()), &rest) {
                Ok(found) => have.extend(found),
                Err(e) => {
                    tracing::warn!(%upstream, "cannot ask upstream cache, pushing anyway: {e}")
                }
            }
        }
        Ok(paths
            .iter()
            .filter(|p| !have.contains(*p))
            .cloned()
            .collect())
    }
}
