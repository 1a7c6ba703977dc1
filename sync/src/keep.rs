//! `larder-sync keep`, on the cache host: root what `nix copy --to
//! ssh-ng://cache-host` registers, which Nix itself roots nowhere.
//!
//! It follows the host store DB's `ValidPaths` row ids read-only (as the
//! watcher's scanner does on a builder) and roots every new path under
//! `<gc-root-dir>/<source>/<basename>` (default source `ssh`), then applies
//! the source's retention ([`crate::retention`]). Skipped: `.drv` files,
//! paths built on the host itself (`ultimate`), and paths another larder
//! source already keeps (`receive`, `pull`), so each arrival is counted for
//! the source it came through. A row is only looked at once it is
//! `settle` old, so that those sources have had time to root it first. The
//! checkpoint (`<gc-root-dir>/.<source>.checkpoint`, the last row id
//! handled) makes a restart resume without rooting anything twice or
//! missing a row; a first start begins at the newest row (or row 0 with
//! `from_start`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use larder_store::StoreLocation;
use larder_store::db::StoreDb;

use crate::error::{Result, SyncError};
use crate::gcroots::{self, Retention};
use crate::nix::LocalStore;
use crate::retention::{self, Closures};

/// Rows read from the store DB per query.
const SCAN_LIMIT: usize = 1000;

#[derive(Debug, Clone)]
pub struct KeepConfig {
    pub local: LocalStore,
    pub gc_root_dir: PathBuf,
    /// The source directory's name under `gc_root_dir`.
    pub source: String,
    pub retention: Retention,
    /// How old a registration must be before it is rooted.
    pub settle: Duration,
    pub from_start: bool,
    /// Retention is applied after a pass that rooted something, and at
    /// least this often (it walks every root's closure in the store DB).
    pub prune_every: Duration,
}

/// What one [`Keeper::step`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeepReport {
    pub rooted: Vec<PathBuf>,
    pub removed: Vec<PathBuf>,
}

pub struct Keeper {
    config: KeepConfig,
    db: StoreDb,
    checkpoint: PathBuf,
    last_prune: Option<Instant>,
}

impl Keeper {
    /// Open the host store DB and set the checkpoint on a first start.
    pub fn open(config: KeepConfig) -> Result<Keeper> {
        let location = StoreLocation::new(config.local.root());
        let db = StoreDb::open(&location)?;
        let checkpoint = config
            .gc_root_dir
            .join(format!(".{}.checkpoint", config.source));
        let keeper = Keeper {
            config,
            db,
            checkpoint,
            last_prune: None,
        };
        if keeper.config.from_start {
            keeper.save_checkpoint(0)?;
        } else if keeper.load_checkpoint()?.is_none() {
            keeper.save_checkpoint(keeper.db.max_row_id_blocking()?)?;
        }
        Ok(keeper)
    }

    fn load_checkpoint(&self) -> Result<Option<i64>> {
        match std::fs::read_to_string(&self.checkpoint) {
            Ok(text) => text.trim().parse().map(Some).map_err(|_| {
                SyncError::Usage(format!(
                    "checkpoint {} holds {:?}, not a row id; delete it to start from now",
                    self.checkpoint.display(),
                    text.trim()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&self.checkpoint, e)),
        }
    }

    fn save_checkpoint(&self, row: i64) -> Result<()> {
        std::fs::create_dir_all(&self.config.gc_root_dir)
            .map_err(|e| io_err(&self.config.gc_root_dir, e))?;
        let tmp = self.checkpoint.with_extension("tmp");
        std::fs::write(&tmp, format!("{row}\n")).map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, &self.checkpoint).map_err(|e| io_err(&self.checkpoint, e))
    }

    /// Root the settled registrations since the checkpoint, then prune.
    pub fn step(&mut self) -> Result<KeepReport> {
        let mut report = KeepReport::default();
        let dir = self.config.gc_root_dir.join(&self.config.source);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let settled_before = now - i64::try_from(self.config.settle.as_secs()).unwrap_or(0);
        let mut closures = Closures::new(self.db.clone());
        let mut kept_elsewhere: Option<HashSet<String>> = None;
        let location = self.db.location().clone();
        'scan: loop {
            let from = self.load_checkpoint()?.unwrap_or(0);
            let rows = self.db.paths_after_blocking(from, SCAN_LIMIT)?;
            let mut last = from;
            for (row, path) in &rows {
                let Some(info) = self.db.path_info_by_path_blocking(path)? else {
                    last = *row; // gone again (GC'd) before we looked
                    continue;
                };
                if info.registration_time > settled_before {
                    if last != from {
                        self.save_checkpoint(last)?;
                    }
                    break 'scan;
                }
                last = *row;
                if path.name().ends_with(".drv") || info.ultimate {
                    continue;
                }
                let full = location.display_path(path);
                let elsewhere = match &kept_elsewhere {
                    Some(set) => set,
                    None => kept_elsewhere.insert(self.kept_by_other_sources(&mut closures)?),
                };
                if elsewhere.contains(&full) {
                    continue;
                }
                let link = gcroots::root(&self.config.local, &dir, &path.to_string(), &full)?;
                tracing::info!(path = %full, source = %self.config.source, "rooted arrival");
                report.rooted.push(link);
            }
            if last != from {
                self.save_checkpoint(last)?;
            }
            if rows.len() < SCAN_LIMIT {
                break;
            }
        }
        let due = self
            .last_prune
            .is_none_or(|at| at.elapsed() >= self.config.prune_every);
        if report.rooted.is_empty() && !due {
            return Ok(report);
        }
        self.last_prune = Some(Instant::now());
        report.removed = retention::prune_source(
            &mut closures,
            &self.config.gc_root_dir,
            &self.config.source,
            self.config.retention,
        )?;
        Ok(report)
    }

    /// Every path in the closure of a root of another source.
    fn kept_by_other_sources(&self, closures: &mut Closures) -> Result<HashSet<String>> {
        let mut kept = HashSet::new();
        for source in retention::sources(&self.config.gc_root_dir)? {
            if source == self.config.source {
                continue;
            }
            for root in retention::roots_of(&self.config.gc_root_dir, &source)? {
                if !kept.contains(&root.target) {
                    kept.extend(closures.closure(&root.target)?);
                }
            }
        }
        Ok(kept)
    }
}

fn io_err(path: &Path, source: std::io::Error) -> SyncError {
    SyncError::GcRoot {
        path: path.to_owned(),
        source,
    }
}
