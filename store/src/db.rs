//! Read-only access to a Nix store's SQLite DB (`<root>/nix/var/nix/db`).
//!
//! Nix keeps writing while larder reads, in WAL mode, so every connection is
//! opened `SQLITE_OPEN_READ_ONLY` (never `immutable=1`) with a busy timeout,
//! and a lookup that reads a row and its references does so in one read
//! transaction. Connections live in a small pool: a query checks one out,
//! runs its cached prepared statements, and puts it back, so each DB
//! thread effectively has its own. The async methods run the query on the
//! DB's own [`BlockingPool`] (`threads` of [`StoreDbOptions`]), never on the
//! reactor and never on tokio's shared blocking pool, so lookups cannot
//! queue behind file reads or anything else that blocks; the `*_blocking`
//! variants are for threads that may block.
//!
//! The one exception is [`StoreDb::path_info_now`], the narinfo lookup: the
//! hop to a DB thread and back cost 49 of a narinfo's 71 µs (issue 13), so
//! it runs on the caller's thread, on a connection whose busy timeout is 0:
//! a lock Nix holds makes it give up at once (the caller then takes the
//! hop), so it never waits on a writer. In WAL mode readers take no lock a
//! writer holds, except during recovery and checkpoint restarts.
//!
//! Rows are checked, not trusted: a path, hash or reference that does not
//! parse, or a NULL `narSize`, is a [`DbError::Corrupt`] naming the row.

mod error;
mod open;
mod pathinfo;
mod query;
mod schema;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

use crate::blocking_pool::BlockingPool;
use crate::location::StoreLocation;
use crate::path::{StorePath, StorePathHash};
pub use error::DbError;
pub use pathinfo::{NixPathInfoJson, PathInfo};
use query::QueryError;
pub use schema::SCHEMA_VERSION;

/// How [`StoreDb`] uses SQLite; [`Default`] is 5 s, 16 connections and
/// [`StoreDbOptions::DEFAULT_THREADS`] threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreDbOptions {
    /// How long a query waits for a lock Nix holds before failing.
    pub busy_timeout: Duration,
    /// Idle connections kept for reuse; more are opened under load and
    /// closed when returned to a full pool.
    pub max_idle_connections: usize,
    /// Threads that run the async methods' queries (at least 1).
    pub threads: usize,
}

impl StoreDbOptions {
    /// Default DB threads: a lookup takes tens of microseconds, so a few
    /// threads answer thousands of lookups a second.
    pub const DEFAULT_THREADS: usize = 4;
}

impl Default for StoreDbOptions {
    fn default() -> Self {
        StoreDbOptions {
            busy_timeout: Duration::from_secs(5),
            max_idle_connections: 16,
            threads: StoreDbOptions::DEFAULT_THREADS,
        }
    }
}

/// A read-only handle on a store's DB; cheap to clone.
#[derive(Clone)]
pub struct StoreDb {
    inner: Arc<Inner>,
}

struct Inner {
    location: StoreLocation,
    db_path: PathBuf,
    options: StoreDbOptions,
    idle: Mutex<Vec<Connection>>,
    /// Connections with a busy timeout of 0, for [`StoreDb::path_info_now`];
    /// opened on the DB's threads only (opening touches files).
    idle_now: Mutex<Vec<Connection>>,
    /// Where the async methods' queries run.
    pool: BlockingPool,
}

impl Inner {
    fn error(&self, e: QueryError) -> DbError {
        match e {
            QueryError::Sqlite(source) => DbError::Sqlite {
                path: self.db_path.clone(),
                source,
            },
            QueryError::Corrupt { row, what } => DbError::Corrupt {
                path: self.db_path.clone(),
                row,
                what,
            },
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere cannot leave a list of idle connections inconsistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl std::fmt::Debug for StoreDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreDb")
            .field("db_path", &self.inner.db_path)
            .field("store_dir", &self.inner.location.store_dir())
            .finish_non_exhaustive()
    }
}

impl StoreDb {
    /// Open the DB of the store at `location` with default options. Blocks
    /// briefly (file checks and one query): call it at startup or from a
    /// blocking thread.
    pub fn open(location: &StoreLocation) -> Result<Self, DbError> {
        Self::open_with(location, StoreDbOptions::default())
    }

    /// [`StoreDb::open`] with `options`.
    ///
    /// # Errors
    /// [`DbError::SchemaMissing`], [`DbError::SchemaRead`] or
    /// [`DbError::SchemaUnsupported`] when `<state>/db/schema` is absent,
    /// unreadable or not [`SCHEMA_VERSION`]; [`DbError::DbMissing`],
    /// [`DbError::NoWalIndex`] or [`DbError::Open`] when `db.sqlite`
    /// cannot be opened read-only and queried once.
    pub fn open_with(location: &StoreLocation, options: StoreDbOptions) -> Result<Self, DbError> {
        open::check_schema(&location.schema_path())?;
        let db_path = location.db_path();
        let conn = open::open_connection(&db_path, options.busy_timeout)?;
        open::probe(&conn, &db_path)?;
        Ok(StoreDb {
            inner: Arc::new(Inner {
                location: location.clone(),
                db_path,
                pool: BlockingPool::new("larder-db", options.threads),
                options,
                idle: Mutex::new(vec![conn]),
                idle_now: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Where the store is: its logical store dir and its real root.
    pub fn location(&self) -> &StoreLocation {
        &self.inner.location
    }

    /// The `db.sqlite` file this handle reads.
    pub fn db_path(&self) -> &Path {
        &self.inner.db_path
    }

    /// Run `f` on a pooled connection and return the connection afterwards.
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection, &StoreLocation) -> Result<T, QueryError>,
    ) -> Result<T, DbError> {
        let inner = &*self.inner;
        let pooled = inner.idle_pool().pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => open::open_connection(&inner.db_path, inner.options.busy_timeout)?,
        };
        let result = f(&mut conn, &inner.location);
        let mut idle = inner.idle_pool();
        if idle.len() < inner.options.max_idle_connections {
            idle.push(conn);
        }
        drop(idle);
        result.map_err(|e| inner.error(e))
    }

    /// One more connection for [`StoreDb::path_info_now`], unless there
    /// are enough. Blocks (opens a file): for the DB's threads.
    fn add_now_connection(&self) {
        let inner = &*self.inner;
        if lock(&inner.idle_now).len() >= inner.options.max_idle_connections {
            return;
        }
        // Failing here costs only the hop: the lookup itself reports errors.
        if let Ok(conn) = open::open_connection(&inner.db_path, Duration::ZERO) {
            lock(&inner.idle_now).push(conn);
        }
    }

    /// [`StoreDb::path_info`] on the calling thread, when that costs no
    /// wait on Nix: on a connection with a busy timeout of 0 (see the
    /// module's page). `None` when no such connection is free (the next
    /// [`StoreDb::path_info`] opens one) or SQLite answered busy: then ask
    /// [`StoreDb::path_info`].
    pub fn path_info_now(&self, hash: &StorePathHash) -> Option<Result<Option<PathInfo>, DbError>> {
        let inner = &*self.inner;
        let conn = lock(&inner.idle_now).pop()?;
        let result = query::path_info(&conn, &inner.location, hash);
        lock(&inner.idle_now).push(conn);
        match result {
            Err(QueryError::Sqlite(rusqlite::Error::SqliteFailure(e, _)))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                None
            }
            result => Some(result.map_err(|e| inner.error(e))),
        }
    }

    /// Run a blocking query on the DB's own threads.
    async fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&StoreDb) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        let db = self.clone();
        self.inner.pool.run(move || f(&db)).await?
    }

    /// The valid path whose hash part is `hash`, if any, with its
    /// references, read in one transaction (Nix's
    /// `LocalStore::queryPathInfoUncached` in `src/libstore/local-store.cc`).
    /// Blocks.
    ///
    /// # Errors
    /// [`DbError::Sqlite`] when the query fails, [`DbError::Corrupt`] when
    /// the row does not parse.
    pub fn path_info_blocking(&self, hash: &StorePathHash) -> Result<Option<PathInfo>, DbError> {
        self.with_conn(|conn, loc| query::path_info(conn, loc, hash))
    }

    /// [`StoreDb::path_info_blocking`] on the DB's threads.
    ///
    /// # Errors
    /// As [`StoreDb::path_info_blocking`], or [`DbError::Pool`].
    pub async fn path_info(&self, hash: &StorePathHash) -> Result<Option<PathInfo>, DbError> {
        let hash = *hash;
        self.spawn(move |db| {
            db.add_now_connection();
            db.path_info_blocking(&hash)
        })
        .await
    }

    /// The valid path `path`, if it is one, with its references. Blocks.
    ///
    /// # Errors
    /// As [`StoreDb::path_info_blocking`].
    pub fn path_info_by_path_blocking(
        &self,
        path: &StorePath,
    ) -> Result<Option<PathInfo>, DbError> {
        self.with_conn(|conn, loc| query::path_info_by_path(conn, loc, path))
    }

    /// [`StoreDb::path_info_by_path_blocking`] on the DB's threads.
    ///
    /// # Errors
    /// As [`StoreDb::path_info_blocking`], or [`DbError::Pool`].
    pub async fn path_info_by_path(&self, path: &StorePath) -> Result<Option<PathInfo>, DbError> {
        let path = path.clone();
        self.spawn(move |db| db.path_info_by_path_blocking(&path))
            .await
    }

    /// [`StoreDb::path_info_by_path_blocking`] for each of `paths`, in
    /// order, in one hop to the DB's threads (a signer checking a batch of
    /// fingerprints pays one hop, not one per path).
    ///
    /// # Errors
    /// As [`StoreDb::path_info_blocking`] (the first failure ends the
    /// batch), or [`DbError::Pool`].
    pub async fn path_infos_by_path(
        &self,
        paths: Vec<StorePath>,
    ) -> Result<Vec<Option<PathInfo>>, DbError> {
        self.spawn(move |db| {
            paths
                .iter()
                .map(|p| db.path_info_by_path_blocking(p))
                .collect()
        })
        .await
    }

    /// Up to `limit` valid paths registered after row `row_id`, by
    /// ascending row id: what a watcher polls with its last seen id.
    /// Blocks.
    ///
    /// # Errors
    /// As [`StoreDb::path_info_blocking`].
    pub fn paths_after_blocking(
        &self,
        row_id: i64,
        limit: usize,
    ) -> Result<Vec<(i64, StorePath)>, DbError> {
        self.with_conn(|conn, loc| query::paths_after(conn, loc, row_id, limit))
    }

    /// [`StoreDb::paths_after_blocking`] on the DB's threads.
    ///
    /// # Errors
    /// As [`StoreDb::path_info_blocking`], or [`DbError::Pool`].
    pub async fn paths_after(
        &self,
        row_id: i64,
        limit: usize,
    ) -> Result<Vec<(i64, StorePath)>, DbError> {
        self.spawn(move |db| db.paths_after_blocking(row_id, limit))
            .await
    }

    /// Up to `limit` valid paths registered after row `row_id`, by
    /// ascending row id, each its row id and its path info:
    /// [`StoreDb::paths_after`] and [`StoreDb::path_infos_by_path`] in one
    /// statement (one read snapshot for the page, a fraction of the cost of
    /// a lookup per path). A corrupt row is its own [`DbError::Corrupt`] in
    /// the page, so a reader paging through the store gets past it.
    ///
    /// # Errors
    /// The DB cannot be opened or read ([`DbError::Sqlite`]), or
    /// [`DbError::Pool`].
    pub async fn path_infos_after(
        &self,
        row_id: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Result<PathInfo, DbError>)>, DbError> {
        self.spawn(move |db| {
            let page =
                db.with_conn(|conn, loc| query::path_infos_after(conn, loc, row_id, limit))?;
            Ok(page
                .into_iter()
                .map(|(id, info)| (id, info.map_err(|e| db.inner.error(e))))
                .collect())
        })
        .await
    }

    /// Get ready for the first requests before they come: open the
    /// connections [`StoreDb::path_info_now`] takes (`now_connections`, at
    /// most `max_idle_connections`; one per thread that serves requests)
    /// and one for the DB's threads, each with the schema read and the
    /// lookup prepared. Otherwise the first lookups after a start open
    /// them, each taking the hop to a DB thread meanwhile. Blocks.
    ///
    /// # Errors
    /// As [`StoreDb::path_info_blocking`]: the DB cannot be opened or read.
    pub fn warm_up_blocking(&self, now_connections: usize) -> Result<(), DbError> {
        let inner = &*self.inner;
        self.with_conn(|conn, _| query::prepare_lookup(conn))?;
        let wanted = now_connections.min(inner.options.max_idle_connections);
        while lock(&inner.idle_now).len() < wanted {
            let conn = open::open_connection(&inner.db_path, Duration::ZERO)?;
            query::prepare_lookup(&conn).map_err(|e| inner.error(e))?;
            lock(&inner.idle_now).push(conn);
        }
        Ok(())
    }

    /// The highest row id in use (0 for an empty store): a watcher's start
    /// point when it should only see paths registered from now on. Blocks.
    ///
    /// # Errors
    /// [`DbError::Sqlite`] when the query fails.
    pub fn max_row_id_blocking(&self) -> Result<i64, DbError> {
        self.with_conn(|conn, _| query::max_row_id(conn))
    }

    /// [`StoreDb::max_row_id_blocking`] on the DB's threads.
    ///
    /// # Errors
    /// As [`StoreDb::max_row_id_blocking`], or [`DbError::Pool`].
    pub async fn max_row_id(&self) -> Result<i64, DbError> {
        self.spawn(|db| db.max_row_id_blocking()).await
    }

    /// One path the DB records, as written there (`/nix/store/…`), or
    /// `None` for an empty store: startup checks compare it with the
    /// configured store dir. Blocks.
    ///
    /// # Errors
    /// [`DbError::Sqlite`] when the query fails.
    pub fn any_path_blocking(&self) -> Result<Option<String>, DbError> {
        self.with_conn(|conn, _| query::any_path(conn))
    }

    /// True when `path` is a valid path of the store (Nix's
    /// `isValidPath`). Blocks.
    ///
    /// # Errors
    /// [`DbError::Sqlite`] when the query fails.
    pub fn query_valid_blocking(&self, path: &StorePath) -> Result<bool, DbError> {
        self.with_conn(|conn, loc| query::query_valid(conn, loc, path))
    }

    /// True when the derivation `drv` is valid in the store, or a valid
    /// path records it as its deriver (Nix's `nix copy` of outputs does
    /// not copy the `.drv`, yet `nix store copy-log` sends its log). The
    /// second check scans `ValidPaths` (no index on `deriver`). Blocks.
    ///
    /// # Errors
    /// [`DbError::Sqlite`] when the query fails.
    pub fn known_derivation_blocking(&self, drv: &StorePath) -> Result<bool, DbError> {
        self.with_conn(|conn, loc| query::known_derivation(conn, loc, drv))
    }

    /// [`StoreDb::known_derivation_blocking`] on the DB's threads.
    ///
    /// # Errors
    /// As [`StoreDb::known_derivation_blocking`], or [`DbError::Pool`].
    pub async fn known_derivation(&self, drv: &StorePath) -> Result<bool, DbError> {
        let drv = drv.clone();
        self.spawn(move |db| db.known_derivation_blocking(&drv))
            .await
    }

    /// The closure of `roots` (every valid path they reach through the
    /// `Refs` table, roots included, each with its deriver), read in one
    /// transaction: Nix's `computeFSClosure` over references. Paths for
    /// which `follow` is false are left out and not walked through; roots
    /// that are not valid are skipped. Blocks (about 5 µs per path).
    ///
    /// # Errors
    /// [`DbError::Sqlite`] when a query fails, [`DbError::Corrupt`] when a
    /// path in the closure does not parse.
    pub fn closure_blocking(
        &self,
        roots: &[StorePath],
        follow: &dyn Fn(&StorePath) -> bool,
    ) -> Result<Vec<(StorePath, Option<StorePath>)>, DbError> {
        self.with_conn(|conn, loc| query::closure(conn, loc, roots, follow))
    }

    /// [`StoreDb::query_valid_blocking`] on the DB's threads.
    ///
    /// # Errors
    /// As [`StoreDb::query_valid_blocking`], or [`DbError::Pool`].
    pub async fn query_valid(&self, path: &StorePath) -> Result<bool, DbError> {
        let path = path.clone();
        self.spawn(move |db| db.query_valid_blocking(&path)).await
    }
}

impl Inner {
    /// The pool stays usable even if a thread panicked while holding it:
    /// a `Vec` of connections has no invariant to break.
    fn idle_pool(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}
