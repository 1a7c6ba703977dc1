//! Every way larder-sync fails, each message naming the file, setting or
//! builder involved and what to do about it.

use std::path::PathBuf;

use larder_store::db::DbError;
use larder_store::named_base64::KeyError;
use larder_store::path::StorePathError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SyncError {
    #[error(
        "the queue file {path} is not a larder-sync queue ({detail}); it was left untouched. \
         Move it aside (`mv {path} {path}.bad`) and start again: a watcher started with \
         `--from-start` finds every path of the store again"
    )]
    QueueCorrupt { path: PathBuf, detail: String },
    #[error(
        "the queue file {path} belongs to target {stored}, not {requested}: one queue feeds \
         one target. Give this process its own queue (`--queue /var/lib/larder-sync/other.sqlite` \
         or LARDER_SYNC_QUEUE), or push to {stored}. If {stored} is retired for good, move \
         the file aside and start the new watcher with `--from-start`"
    )]
    QueueTarget {
        path: PathBuf,
        stored: String,
        requested: String,
    },
    #[error(
        "target {target} does not answer: {detail}\n(checked before anything runs; is the URI right, \
         and for http(s) the token in netrc-file?)"
    )]
    TargetCheck { target: String, detail: String },
    #[error("cannot open the queue file {path}: {source}")]
    QueueOpen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no queue file at {path}: nothing was enqueued there yet (is --queue / LARDER_SYNC_QUEUE right?)"
    )]
    QueueMissing { path: PathBuf },
    #[error("queue file {path}: {source}")]
    Queue {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "unknown store URI scheme in {uri:?}: larder-sync speaks ssh-ng://, ssh://, \
         http://, https://, file:// and s3://"
    )]
    UnknownScheme { uri: String },
    #[error(
        "malformed trusted key {key:?}: {source}; a Nix public key is `name:base64` \
         (e.g. from `nix key convert-secret-to-public`)"
    )]
    BadKey { key: String, source: KeyError },
    #[error("{arg:?} is not a store path under {store_dir}: {source}")]
    BadPath {
        arg: String,
        store_dir: String,
        source: StorePathError,
    },
    #[error(transparent)]
    StoreDb(#[from] DbError),
    #[error("cannot run `{program}` (is Nix installed and on PATH?): {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}):\n{stderr}")]
    NixFailed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` printed output larder-sync cannot read: {detail}")]
    NixOutput { command: String, detail: String },
    #[error("GC root {path}: {source}")]
    GcRoot {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot resolve root {root:?} on builder {builder}: {detail}")]
    Root {
        root: String,
        builder: String,
        detail: String,
    },
    /// A file larder-sync reads besides `--config` (`kind`: "tokens file",
    /// "builders file") is wrong; exit code 2.
    #[error("{kind} {path}: {detail}")]
    Config {
        kind: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("metrics listener on {addr}: {source}")]
    Metrics {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    /// An S3 request failed; `detail` names the request and a hint, never a credential.
    #[error("S3 target {target}: {detail}")]
    S3 { target: String, detail: String },
    #[error("S3 credentials: {detail}")]
    S3Credentials { detail: String },
    #[error("larder-signer at {socket}: {detail}")]
    Signer { socket: PathBuf, detail: String },
    /// What was read from the store does not match the store DB.
    #[error("{path}: {detail}")]
    Export { path: String, detail: String },
}

pub type Result<T, E = SyncError> = std::result::Result<T, E>;
