//! What can go wrong opening or querying a store's DB. Every message names
//! the DB file and, where there is one, the fix.

use std::path::PathBuf;

use thiserror::Error;

use super::schema::SCHEMA_VERSION;

#[derive(Debug, Error)]
pub enum DbError {
    #[error(
        "no Nix store DB schema file at {path}: is the store root right? \
         (the host store's root is `/`; a store used as `nix --store /tmp/x` has root `/tmp/x`)"
    )]
    SchemaMissing { path: PathBuf },
    #[error("cannot read the Nix store DB schema file {path}: {source}")]
    SchemaRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the Nix store DB schema file {path} says {found:?}; larder reads only schema \
         version {SCHEMA_VERSION} (Nix 2.x)"
    )]
    SchemaUnsupported { path: PathBuf, found: String },
    #[error(
        "the Nix store DB {path} does not exist although its schema file does; \
         run any Nix store command on that store (e.g. `nix-store --init`) to create it"
    )]
    DbMissing { path: PathBuf },
    #[error(
        "cannot read the Nix store DB {path} as this user: it is in WAL mode, its index {path}-shm does not exist (no Nix process holds the DB open), and this user may not create it. Run `larder-server --check-config` or `larder-signer check` as root first (the shipped systemd units do, in ExecStartPre=+); the index then stays while larder holds the DB open"
    )]
    NoWalIndex { path: PathBuf },
    #[error("cannot open the Nix store DB {path} read-only: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("query on the Nix store DB {path} failed: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the Nix store DB {path} has a corrupt ValidPaths row (id {row}): {what}")]
    Corrupt {
        path: PathBuf,
        row: i64,
        what: String,
    },
    #[error("a Nix store DB query task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}
