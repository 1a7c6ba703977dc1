//! From a checked [`Config`] to the open store and the shared
//! [`AppState`], and the one error type of everything that can fail before
//! the server listens.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use larder_store::StoreLocation;
use larder_store::db::{DbError, StoreDb, StoreDbOptions};
use thiserror::Error;

use crate::config::{self, Config};
use crate::listen::tls;
use crate::metrics::Metrics;
use crate::nar::nar_cache::{self, NarCache};
use crate::nar::plan_cache::PlanCache;
use crate::path_info_memo::PathInfoMemo;
use crate::signer_client::{SignerClient, SignerClientMetrics};
use crate::state::AppState;

/// Why the server did not start; each names the setting to fix.
#[derive(Debug, Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("store-root {root}: {source}")]
    Store { root: String, source: DbError },
    #[error(
        "bind {bind}: cannot listen: {source}; pick a free address with --bind (or remove a stale socket file)"
    )]
    Bind {
        bind: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cache(#[from] nar_cache::CacheError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("HTTP server: {0}")]
    Server(std::io::Error),
}

fn open_store(config: &Config) -> Result<(StoreLocation, StoreDb), StartupError> {
    let location = StoreLocation::with_store_dir(&config.store_root, &config.store_dir);
    let options = StoreDbOptions {
        threads: config.db_threads,
        ..StoreDbOptions::default()
    };
    let db = StoreDb::open_with(&location, options).map_err(|source| StartupError::Store {
        root: config.store_root.display().to_string(),
        source,
    })?;
    Ok((location, db))
}

/// `--check-config`: the settings resolved, and the store DB opens. Touches
/// nothing else (run as root, it must not create files the server's user
/// would then not own). Opening the DB creates its WAL index if missing,
/// which a reader that may not create it needs (see README).
pub fn check(config: &Config) -> Result<String, StartupError> {
    let (location, db) = open_store(config)?;
    let newest = db
        .max_row_id_blocking()
        .map_err(|source| StartupError::Store {
            root: config.store_root.display().to_string(),
            source,
        })?;
    Ok(format!(
        "store {} (files under {}), newest path row {newest}",
        location.store_dir(),
        location.real_store_dir().display()
    ))
}

/// Open the store and the caches.
pub fn app_state(config: &Config) -> Result<AppState, StartupError> {
    // Before any file is read: the pool is sized once per process.
    if !larder_store::dump::set_read_threads(config.read_threads) {
        tracing::warn!("the file-read pool was already in use; read-threads not applied");
    }
    let (location, db) = open_store(config)?;
    let metrics = Arc::new(Metrics::new()?);
    let nar_cache = match &config.cache_dir {
        Some(dir) => {
            let max_bytes = config.cache_size_mib.saturating_mul(1 << 20);
            Some(Arc::new(NarCache::open(dir, max_bytes, metrics.clone())?))
        }
        None => None,
    };
    let signer_client = match &config.signer {
        Some(s) => Some(Arc::new(SignerClient::new(
            s.socket.clone(),
            Duration::from_millis(s.timeout_ms),
            s.cache_entries,
            SignerClientMetrics::new(&metrics.registry)?,
        ))),
        None => None,
    };
    Ok(AppState {
        config: config.clone(),
        location,
        db,
        metrics,
        nar_cache,
        path_info_memo: PathInfoMemo::new(Duration::from_millis(config.path_info_ttl_ms), 100_000),
        plan_cache: PlanCache::new(NonZeroUsize::new(4096).expect("non-zero")),
        signer_client,
    })
}
