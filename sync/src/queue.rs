//! The durable push queue: a SQLite file in WAL mode, shared by
//! `larder-sync enqueue` (Nix's post-build-hook), the watcher's scanner and
//! its pusher, each with its own connection.
//!
//! A path is a row of `pending` until its copy succeeded; only then is it
//! deleted. A failed copy bumps `attempts` and pushes `next_attempt_at` out
//! by an exponential [`Backoff`]. The scanner records how far it read the
//! store DB (`checkpoint`) in the same transaction as the paths it found, so
//! a kill -9 at any moment loses nothing and re-finds nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};

use crate::error::{Result, SyncError};

/// How long a queue operation waits for another process's write.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// `PRAGMA user_version` of a queue file this code understands.
const QUEUE_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE pending (
    path TEXT PRIMARY KEY NOT NULL,
    enqueued_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error TEXT
);
CREATE INDEX pending_due ON pending (next_attempt_at);
CREATE TABLE checkpoint (store_db TEXT PRIMARY KEY NOT NULL, row_id INTEGER NOT NULL);
CREATE TABLE last_error (id INTEGER PRIMARY KEY CHECK (id = 1), at INTEGER NOT NULL, message TEXT NOT NULL);
";

/// Added to version-1 files when first opened by this code: the target the
/// queue's paths are pushed to (one queue, one target).
const TARGET_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS target (id INTEGER PRIMARY KEY CHECK (id = 1), uri TEXT NOT NULL);";

/// Milliseconds since the Unix epoch: the queue's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Retry delays: `base * 2^(attempts-1)`, at most `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub fn delay(&self, attempts: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempts.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

/// What `larder-sync status` and the metrics report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    pub depth: u64,
    /// The oldest pending path and when it was enqueued (ms).
    pub oldest: Option<(String, i64)>,
    /// The last failed push: when (ms) and why.
    pub last_error: Option<(i64, String)>,
}

/// One pending path, as `larder-sync status` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPath {
    pub path: String,
    pub enqueued_at: i64,
    /// Failed copies so far (0: not tried yet).
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
}

pub struct Queue {
    conn: Connection,
    path: PathBuf,
}

impl Queue {
    /// Open the queue at `path`, creating it (and its directory) if needed.
    pub fn open(path: &Path) -> Result<Queue> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SyncError::QueueOpen {
                path: path.to_owned(),
                source,
            })?;
        }
        Self::open_file(path)
    }

    /// Open an existing queue; [`SyncError::QueueMissing`] if there is none.
    pub fn open_existing(path: &Path) -> Result<Queue> {
        if !path.exists() {
            return Err(SyncError::QueueMissing {
                path: path.to_owned(),
            });
        }
        Self::open_file(path)
    }

    fn open_file(path: &Path) -> Result<Queue> {
        let conn = Connection::open(path).map_err(|e| classify(path, e))?;
        let mut queue = Queue {
            conn,
            path: path.to_owned(),
        };
        queue.init_retrying().map_err(|e| classify(path, e))?;
        queue.check_version()?;
        Ok(queue)
    }

    /// [`Self::init`], again while another process holds the file busy.
    ///
    /// Switching a new file to WAL needs it to itself, and SQLite answers
    /// "database is locked" at once instead of calling the busy handler
    /// when two processes create the queue at the same moment (a watcher
    /// starting while the post-build-hook enqueues). Every step of `init`
    /// is idempotent, so it is simply run again, for up to [`BUSY_TIMEOUT`].
    fn init_retrying(&mut self) -> rusqlite::Result<()> {
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        let mut pause = Duration::from_millis(2);
        loop {
            match self.init() {
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                result => return result,
            }
        }
    }

    fn init(&mut self) -> rusqlite::Result<()> {
        self.conn.busy_timeout(BUSY_TIMEOUT)?;
        // Reading the journal mode is the first read of the file: a file
        // that is not SQLite fails here, before anything is written.
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            self.conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))?;
        }
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        // IMMEDIATE: a deferred transaction that reads and then writes can
        // fail with "database is locked" at once, without waiting out the
        // busy timeout, when another process wrote in between.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let tables: i64 = tx.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if version == 0 && tables == 0 {
            tx.execute_batch(SCHEMA)?;
            tx.pragma_update(None, "user_version", QUEUE_VERSION)?;
        }
        if version == QUEUE_VERSION || (version == 0 && tables == 0) {
            tx.execute_batch(TARGET_TABLE)?;
        }
        tx.commit()
    }

    fn check_version(&self) -> Result<()> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if version != QUEUE_VERSION {
            return Err(SyncError::QueueCorrupt {
                path: self.path.clone(),
                detail: format!(
                    "a SQLite file of another kind (user_version {version}, expected {QUEUE_VERSION})"
                ),
            });
        }
        Ok(())
    }

    fn err(&self, source: rusqlite::Error) -> SyncError {
        classify(&self.path, source)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bind the queue to `target`, or check that it is bound to it: a queue
    /// holds paths for one target, and a process pushing them elsewhere
    /// would split them between two caches.
    pub fn claim_target(&mut self, target: &str) -> Result<()> {
        let run = |conn: &mut Connection| -> rusqlite::Result<Option<String>> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let stored: Option<String> = tx
                .query_row("SELECT uri FROM target WHERE id = 1", [], |r| r.get(0))
                .optional()?;
            if stored.is_none() {
                tx.execute("INSERT INTO target (id, uri) VALUES (1, ?1)", [target])?;
            }
            tx.commit()?;
            Ok(stored)
        };
        match run(&mut self.conn).map_err(|e| self.err(e))? {
            Some(stored) if stored != target => Err(SyncError::QueueTarget {
                path: self.path.clone(),
                stored,
                requested: target.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// The target this queue is bound to, if a watcher ever ran on it.
    pub fn target(&self) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT uri FROM target WHERE id = 1", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Make every pending path due now (a restart after fixing the target's
    /// setup should retry at once, not wait out old backoffs); returns how
    /// many were waiting.
    pub fn reset_backoff(&mut self) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE pending SET next_attempt_at = ?1 WHERE next_attempt_at > ?1",
                [now_ms()],
            )
            .map_err(|e| self.err(e))
    }

    /// Up to `limit` pending paths, oldest first, with their last error.
    pub fn pending(&self, limit: usize) -> Result<Vec<PendingPath>> {
        let run = || -> rusqlite::Result<Vec<PendingPath>> {
            let mut stmt = self.conn.prepare_cached(
                "SELECT path, enqueued_at, attempts, next_attempt_at, last_error FROM pending
                 ORDER BY enqueued_at, path LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit as i64], |r| {
                Ok(PendingPath {
                    path: r.get(0)?,
                    enqueued_at: r.get(1)?,
                    attempts: r.get(2)?,
                    next_attempt_at: r.get(3)?,
                    last_error: r.get(4)?,
                })
            })?;
            rows.collect()
        };
        run().map_err(|e| self.err(e))
    }

    /// Add paths (already validated); ones already pending are left as they
    /// are. Returns how many were new.
    pub fn enqueue(&mut self, paths: &[String]) -> Result<usize> {
        self.enqueue_with_checkpoint(paths, None)
    }

    /// Add paths and, in the same transaction, move the scanner's
    /// checkpoint for `store_db` to `row_id`.
    pub fn enqueue_with_checkpoint(
        &mut self,
        paths: &[String],
        checkpoint: Option<(&str, i64)>,
    ) -> Result<usize> {
        let now = now_ms();
        let run = |conn: &mut Connection| -> rusqlite::Result<usize> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut added = 0;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO pending (path, enqueued_at, next_attempt_at) VALUES (?1, ?2, ?2)
                     ON CONFLICT (path) DO NOTHING",
                )?;
                for p in paths {
                    added += insert.execute(params![p, now])?;
                }
            }
            if let Some((store_db, row_id)) = checkpoint {
                tx.execute(
                    "INSERT INTO checkpoint (store_db, row_id) VALUES (?1, ?2)
                     ON CONFLICT (store_db) DO UPDATE SET row_id = max(row_id, excluded.row_id)",
                    params![store_db, row_id],
                )?;
            }
            tx.commit()?;
            Ok(added)
        };
        run(&mut self.conn).map_err(|e| self.err(e))
    }

    /// Set the checkpoint for `store_db` to `row_id`, even backwards
    /// (`--from-start`). [`Queue::enqueue_with_checkpoint`] only moves it
    /// forward, so two scanners racing never lose rows.
    pub fn reset_checkpoint(&mut self, store_db: &str, row_id: i64) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO checkpoint (store_db, row_id) VALUES (?1, ?2)
                 ON CONFLICT (store_db) DO UPDATE SET row_id = excluded.row_id",
                params![store_db, row_id],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// The scanner's last row id for `store_db`, if it ever ran.
    pub fn checkpoint(&self, store_db: &str) -> Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT row_id FROM checkpoint WHERE store_db = ?1",
                [store_db],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Up to `limit` paths due now, oldest first.
    pub fn due(&self, limit: usize) -> Result<Vec<String>> {
        let run = || -> rusqlite::Result<Vec<String>> {
            let mut stmt = self.conn.prepare_cached(
                "SELECT path FROM pending WHERE next_attempt_at <= ?1
                 ORDER BY enqueued_at, path LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now_ms(), limit as i64], |r| r.get(0))?;
            rows.collect()
        };
        run().map_err(|e| self.err(e))
    }

    /// When the next path becomes due (ms), if any is pending.
    pub fn next_due_at(&self) -> Result<Option<i64>> {
        self.conn
            .query_row("SELECT min(next_attempt_at) FROM pending", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Paths whose copy succeeded (or that need none) leave the queue.
    pub fn complete(&mut self, paths: &[String]) -> Result<()> {
        let run = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut delete = tx.prepare_cached("DELETE FROM pending WHERE path = ?1")?;
                for p in paths {
                    delete.execute([p])?;
                }
            }
            tx.commit()
        };
        run(&mut self.conn).map_err(|e| self.err(e))
    }

    /// A failed copy: each path is retried after its backoff delay.
    pub fn fail(&mut self, paths: &[String], error: &str, backoff: Backoff) -> Result<()> {
        let now = now_ms();
        let run = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut attempts_of =
                    tx.prepare_cached("SELECT attempts FROM pending WHERE path = ?1")?;
                let mut update = tx.prepare_cached(
                    "UPDATE pending SET attempts = ?2, next_attempt_at = ?3, last_error = ?4
                     WHERE path = ?1",
                )?;
                for p in paths {
                    let Some(attempts) = attempts_of
                        .query_row([p], |r| r.get::<_, u32>(0))
                        .optional()?
                    else {
                        continue;
                    };
                    let attempts = attempts.saturating_add(1);
                    let delay =
                        i64::try_from(backoff.delay(attempts).as_millis()).unwrap_or(i64::MAX);
                    update.execute(params![p, attempts, now.saturating_add(delay), error])?;
                }
            }
            tx.execute(
                "INSERT INTO last_error (id, at, message) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET at = excluded.at, message = excluded.message",
                params![now, error],
            )?;
            tx.commit()
        };
        run(&mut self.conn).map_err(|e| self.err(e))
    }

    pub fn stats(&self) -> Result<QueueStats> {
        let run = || -> rusqlite::Result<QueueStats> {
            let depth: i64 = self
                .conn
                .query_row("SELECT count(*) FROM pending", [], |r| r.get(0))?;
            let oldest = self
                .conn
                .query_row(
                    "SELECT path, enqueued_at FROM pending ORDER BY enqueued_at, path LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let last_error = self
                .conn
                .query_row("SELECT at, message FROM last_error WHERE id = 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            Ok(QueueStats {
                depth: u64::try_from(depth).unwrap_or(0),
                oldest,
                last_error,
            })
        };
        run().map_err(|e| self.err(e))
    }
}

/// SQLite's "database is locked" (or "table is locked"): another
/// connection holds what this one needs, and trying again may succeed.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// A file that is not a database, or a damaged one, is `QueueCorrupt`;
/// anything else (locked, disk full, permissions) is a plain `Queue` error.
fn classify(path: &Path, source: rusqlite::Error) -> SyncError {
    let corrupt = matches!(
        source.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    ) || matches!(source, rusqlite::Error::SqliteFailure(_, _) if source.to_string().contains("no such table"));
    if corrupt {
        SyncError::QueueCorrupt {
            path: path.to_owned(),
            detail: source.to_string(),
        }
    } else {
        SyncError::Queue {
            path: path.to_owned(),
            source,
        }
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
