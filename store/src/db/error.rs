//! What can go wrong opening or querying a store's DB. Every message names
//! the DB file and, where there is one, the fix.

use std::path::PathBuf;

use thiserror::Error;

use super::schema::SCHEMA_VERSION;

/// An error opening or querying a Nix store's SQLite DB
/// (`<root>/nix/var/nix/db/db.sqlite`, the DB of `src/libstore/local-store.cc`).
/// `path` is always the file concerned, so a message says where to look.
#[derive(Debug, Error)]
pub enum DbError {
    /// `<state>/db/schema` does not exist: usually a wrong store root.
    #[error(
        "no Nix store DB schema file at {path}: is the store root right? \
         (the host store's root is `/`; a store used as `nix --store /tmp/x` has root `/tmp/x`)"
    )]
    SchemaMissing {
        /// The schema file looked for.
        path: PathBuf,
    },
    /// The schema file exists but cannot be read (permissions, I/O).
    #[error("cannot read the Nix store DB schema file {path}: {source}")]
    SchemaRead {
        /// The schema file.
        path: PathBuf,
        /// Why reading it failed.
        source: std::io::Error,
    },
    /// The schema file names a version other than [`SCHEMA_VERSION`].
    #[error(
        "the Nix store DB schema file {path} says {found:?}; larder reads only schema \
         version {SCHEMA_VERSION} (Nix 2.x)"
    )]
    SchemaUnsupported {
        /// The schema file.
        path: PathBuf,
        /// Its trimmed contents (lossily decoded as UTF-8).
        found: String,
    },
    /// The schema file exists but `db.sqlite` does not.
    #[error(
        "the Nix store DB {path} does not exist although its schema file does; \
         run any Nix store command on that store (e.g. `nix-store --init`) to create it"
    )]
    DbMissing {
        /// The missing `db.sqlite`.
        path: PathBuf,
    },
    /// The DB is in WAL mode, its `-shm` index is missing and this user may
    /// not create it in the DB's directory, so SQLite cannot read it.
    #[error(
        "cannot read the Nix store DB {path} as this user: it is in WAL mode, its index {path}-shm does not exist (no Nix process holds the DB open), and this user may not create it. Run `larder-server --check-config` or `larder-signer check` as root first (the shipped systemd units do, in ExecStartPre=+); the index then stays while larder holds the DB open"
    )]
    NoWalIndex {
        /// The `db.sqlite` file.
        path: PathBuf,
    },
    /// SQLite refused to open the DB read-only.
    #[error("cannot open the Nix store DB {path} read-only: {source}")]
    Open {
        /// The `db.sqlite` file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A query failed (locked beyond the busy timeout, I/O, SQL error).
    #[error("query on the Nix store DB {path} failed: {source}")]
    Sqlite {
        /// The `db.sqlite` file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A `ValidPaths` row (or its references) does not parse: a path,
    /// hash or reference larder cannot read, or a NULL `narSize`.
    #[error("the Nix store DB {path} has a corrupt ValidPaths row (id {row}): {what}")]
    Corrupt {
        /// The `db.sqlite` file.
        path: PathBuf,
        /// The row's `id` in `ValidPaths`.
        row: i64,
        /// What is wrong with it.
        what: String,
    },
    /// The blocking task running a query panicked or was cancelled.
    #[error("a Nix store DB query task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The DB's thread pool lost the query (it panicked, or the pool
    /// could not start a thread).
    #[error("a Nix store DB query did not run: {0}")]
    Pool(#[from] crate::blocking_pool::PoolStopped),
}

impl DbError {
    /// Another connection holds the DB locked beyond the busy timeout
    /// (`SQLITE_BUSY`, `SQLITE_LOCKED`): transient, so a client should be
    /// told to retry (503), not that the server broke. Nix's own write
    /// transactions never cause it (the DB is in WAL mode, readers go on
    /// while it writes); a connection in `locking_mode=EXCLUSIVE`, a
    /// rollback-journal DB being written, or WAL recovery can.
    pub fn is_busy(&self) -> bool {
        let code = match self {
            DbError::Sqlite { source, .. } | DbError::Open { source, .. } => {
                source.sqlite_error_code()
            }
            _ => None,
        };
        matches!(
            code,
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }
}
