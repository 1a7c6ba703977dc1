//! From a checked [`Config`] to the open store and the shared
//! [`AppState`], and the one error type of everything that can fail before
//! the server listens.

use std::num::NonZeroUsize;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
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
use crate::view::{View, Views};

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
    #[error("cache-dir {dir}: {detail}")]
    CacheDir { dir: String, detail: String },
    #[error(
        "store-dir {store_dir}: the store DB records paths such as {example}, so every narinfo would be 404; set --store-dir to their directory"
    )]
    StoreDir { store_dir: String, example: String },
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("HTTP server: {0}")]
    Server(std::io::Error),
    /// A view's roots, roots file or tokens file is wrong, or its first
    /// closure could not be computed.
    #[error("{0}")]
    View(String),
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

/// `--check-config`, and the first thing the server does: everything that
/// would stop it from starting or serving, without creating anything (run
/// as root, it must not create files the server's user would then not own).
/// Opening the DB creates its WAL index if missing, which a reader that may
/// not create it needs (see README). Listening is not tried here.
pub fn check(config: &Config) -> Result<String, StartupError> {
    let (location, db) = open_store(config)?;
    let store_err = |source| StartupError::Store {
        root: config.store_root.display().to_string(),
        source,
    };
    let newest = db.max_row_id_blocking().map_err(store_err)?;
    if let Some(example) = db.any_path_blocking().map_err(store_err)? {
        if !example.starts_with(&format!("{}/", location.store_dir())) {
            return Err(StartupError::StoreDir {
                store_dir: location.store_dir().to_owned(),
                example,
            });
        }
    }
    if let Some((cert, key)) = &config.tls {
        tls::server_config(cert, key)?;
    }
    if let Some(dir) = &config.cache_dir {
        check_cache_dir(dir)?;
    }
    check_view_keys(config)?;
    for view in &config.views {
        crate::view::config::check_paths(view).map_err(StartupError::View)?;
        if let Some(file) = &view.tokens_file {
            crate::view::tokens::Tokens::load(file)
                .map_err(|e| StartupError::View(format!("[[view]] {:?}: {e}", view.name)))?;
        }
    }
    Ok(format!(
        "store {} (files under {}), newest path row {newest}, {} view(s)",
        location.store_dir(),
        location.real_store_dir().display(),
        config.views.len().max(1)
    ))
}

/// The cache dir is a writable directory, or can be created: its nearest
/// existing ancestor is a writable directory.
fn check_cache_dir(dir: &Path) -> Result<(), StartupError> {
    let fail = |detail: String| StartupError::CacheDir {
        dir: dir.display().to_string(),
        detail,
    };
    if !dir.is_absolute() {
        return Err(fail("use an absolute path".to_owned()));
    }
    let existing = dir
        .ancestors()
        .find(|p| std::fs::symlink_metadata(p).is_ok())
        .unwrap_or(Path::new("/"));
    let meta = std::fs::metadata(existing).map_err(|e| fail(e.to_string()))?;
    if !meta.is_dir() {
        return Err(fail(format!(
            "{} is not a directory; remove it or choose another cache-dir",
            existing.display()
        )));
    }
    if !writable(existing) {
        let what = if existing == dir {
            "is not writable by this user".to_owned()
        } else {
            format!(
                "does not exist and cannot be created: {} is not writable by this user",
                existing.display()
            )
        };
        return Err(fail(format!(
            "{what}; create it for the server's user (systemd: CacheDirectory=)"
        )));
    }
    Ok(())
}

/// Whether this process may create files in `dir`, from its mode bits and
/// this process's effective uid and groups (`/proc/self`): as access(2)
/// would say, without `unsafe`. Root may.
fn writable(dir: &Path) -> bool {
    let (Ok(meta), Ok(me)) = (std::fs::metadata(dir), std::fs::metadata("/proc/self")) else {
        // No /proc: let the real start find out.
        return true;
    };
    let mode = meta.mode();
    if me.uid() == 0 {
        return true;
    }
    if meta.uid() == me.uid() {
        return mode & 0o300 == 0o300;
    }
    let groups = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let in_group = me.gid() == meta.gid()
        || groups
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .is_some_and(|g| g.split_whitespace().any(|g| g == meta.gid().to_string()));
    if in_group {
        mode & 0o030 == 0o030
    } else {
        mode & 0o003 == 0o003
    }
}

/// Check ([`check`], the same code `--check-config` runs), then open the
/// store and the caches.
pub fn app_state(config: &Config) -> Result<AppState, StartupError> {
    // Before any file is read: the pool is sized once per process.
    if !larder_store::dump::set_read_threads(config.read_threads) {
        tracing::warn!("the file-read pool was already in use; read-threads not applied");
    }
    check(config)?;
    let (location, db) = open_store(config)?;
    // Before the socket is bound: the first clients find the DB's
    // connections open, not each of the first lookups opening one. Best
    // effort: `check` above proved the DB readable, and a lock Nix holds
    // right now (the fast connections never wait) must not stop a start.
    if let Err(e) = db.warm_up_blocking(config.workers) {
        tracing::warn!(error = %e, "store DB: connections not opened ahead; the first lookups open them");
    }
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
            Duration::from_secs(s.key_check_secs),
            s.cache_entries,
            config.cache_dir.clone(),
            SignerClientMetrics::new(&metrics.registry)?,
        ))),
        None => None,
    };
    let views = Arc::new(views(config, &location, &db, &metrics)?);
    Ok(AppState {
        views,
        config: config.clone(),
        location,
        db,
        metrics,
        nar_cache,
        path_info_memo: PathInfoMemo::new(Duration::from_millis(config.path_info_ttl_ms), 100_000),
        plan_cache: PlanCache::new(NonZeroUsize::new(4096).expect("non-zero")),
        signer_client,
        draining: std::sync::atomic::AtomicBool::new(false),
    })
}

/// The configured views with their first closures computed and their
/// watchers started; or the one view of the whole store.
fn views(
    config: &Config,
    location: &StoreLocation,
    db: &StoreDb,
    metrics: &Metrics,
) -> Result<Views, StartupError> {
    if config.views.is_empty() {
        return Ok(Views {
            views: vec![Arc::new(View::everything(config.priority))],
        });
    }
    let mut views = Vec::new();
    for c in &config.views {
        let view =
            View::from_config(c, config.priority, location, db).map_err(StartupError::View)?;
        // Exported at 0 from the start, like every series with known labels.
        for status in ["200", "401", "404"] {
            metrics
                .view_requests
                .with_label_values(&[&view.name, status]);
        }
        if let Some(members) = &view.members {
            let gauge = metrics.view_paths.with_label_values(&[&view.name]);
            gauge.set(view.size().unwrap_or(0) as i64);
            let recompute = metrics.view_recompute.clone();
            members
                .clone()
                .watch(db.clone(), move |size, took| {
                    gauge.set(size as i64);
                    recompute.observe(took.as_secs_f64());
                })
                .map_err(|e| StartupError::View(format!("view {}: thread: {e}", view.name)))?;
        }
        tracing::info!(view = %view.name, prefix = ?view.prefix, host = ?view.host, private = view.tokens.is_some(), paths = ?view.size(), "view ready");
        views.push(Arc::new(view));
    }
    Ok(Views { views })
}

/// Every key a view names is one the signer holds, when the signer answers
/// now (it may start after the server: then the first narinfo tells).
fn check_view_keys(config: &Config) -> Result<(), StartupError> {
    use larder_store::signer_proto::{Reply, Request, encode_frame, read_frame_blocking};
    let Some(signer) = &config.signer else {
        return Ok(());
    };
    if config.views.iter().all(|v| v.keys.is_empty()) {
        return Ok(());
    }
    let ask = || -> Result<Vec<String>, String> {
        let mut stream =
            std::os::unix::net::UnixStream::connect(&signer.socket).map_err(|e| e.to_string())?;
        let timeout = Some(Duration::from_millis(signer.timeout_ms));
        stream
            .set_read_timeout(timeout)
            .map_err(|e| e.to_string())?;
        stream
            .set_write_timeout(timeout)
            .map_err(|e| e.to_string())?;
        let frame = encode_frame(&Request::PublicKeys).map_err(|e| e.to_string())?;
        std::io::Write::write_all(&mut stream, &frame).map_err(|e| e.to_string())?;
        match read_frame_blocking(&mut stream).map_err(|e| e.to_string())? {
            Reply::PublicKeys(keys) => Ok(keys),
            _ => Err("unexpected reply".to_owned()),
        }
    };
    let held: Vec<String> = match ask() {
        Ok(keys) => keys
            .iter()
            .filter_map(|k| k.split_once(':').map(|(name, _)| name.to_owned()))
            .collect(),
        Err(e) => {
            tracing::warn!(socket = %signer.socket.display(), error = %e, "cannot check the views' key names with the signer now");
            return Ok(());
        }
    };
    for view in &config.views {
        if let Some(missing) = view.keys.iter().find(|k| !held.contains(k)) {
            return Err(StartupError::View(format!(
                "[[view]] {:?}: keys names {missing:?}, which the signer does not hold (it holds {held:?}); fix keys or the signer's --key-file",
                view.name
            )));
        }
    }
    Ok(())
}
