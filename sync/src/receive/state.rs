//! What every request handler shares: configuration, the tokens, the
//! staging area, the store DB (read-only) and the metrics. Data only; the
//! behaviour lives in the modules named for it.

use std::path::PathBuf;
use std::time::Duration;

use larder_store::StoreLocation;
use larder_store::db::StoreDb;

use super::auth::Tokens;
use super::daemon::Daemons;
use super::metrics::ReceiveMetrics;
use super::staging::Staging;
use super::trust::SigPolicy;

/// Per-request limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest NAR accepted, in decompressed bytes.
    pub max_nar_size: u64,
    /// Largest total of staged NARs, decompressed (`--max-staging-mib`).
    pub max_staging: u64,
    /// Longest one NAR upload may take, queueing for a slot included.
    pub upload_timeout: Duration,
    /// Longest wait for the next body chunk. Nix 2.8 retries a PUT whose
    /// connection broke by sending the headers again without the body
    /// (seen in the kill -9 test): such a request is cut off here, with
    /// 408, instead of holding an upload slot for --upload-timeout-secs.
    pub idle_timeout: Duration,
}

pub struct ReceiveState {
    pub tokens: Tokens,
    pub sigs: SigPolicy,
    pub staging: Staging,
    /// The host store's DB, read-only: validity and references.
    pub db: StoreDb,
    /// Where imports go: `nix-daemon --stdio` connections to the store.
    pub daemons: Daemons,
    pub location: StoreLocation,
    pub gc_root_dir: PathBuf,
    pub limits: Limits,
    /// One permit per NAR upload in progress (`--max-concurrent-uploads`).
    pub uploads: tokio::sync::Semaphore,
    /// Per pusher name, the upload slots that pusher may hold at once
    /// (half of `--max-concurrent-uploads`, at least 1): one token
    /// trickling bytes cannot take every slot. Taken before `uploads`.
    pub pusher_uploads: std::collections::HashMap<String, tokio::sync::Semaphore>,
    /// `Priority:` in `nix-cache-info`.
    pub priority: u32,
    pub metrics: ReceiveMetrics,
}

impl ReceiveState {
    pub fn update_staging_gauge(&self) {
        self.metrics
            .staging_bytes
            .set(i64::try_from(self.staging.staged_bytes()).unwrap_or(i64::MAX));
    }
}
