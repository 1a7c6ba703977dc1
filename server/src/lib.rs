//! larder-server: a Nix binary cache served straight from a Nix store.
//!
//! # Request flow
//!
//! `main.rs` reads the [`config::Settings`] (flags, `LARDER_*` environment,
//! TOML file), resolves them into a checked [`config::Config`], and calls
//! [`run`]. `run` opens the store DB read-only once (so a wrong
//! `--store-root` fails at startup, naming the setting), builds the shared
//! [`state::AppState`], binds, and hands connections to actix-web's workers:
//! one single-threaded async runtime per core, each with its own pool of
//! blocking threads.
//!
//! A request then goes:
//!
//! 1. **Metrics middleware** (in [`run`]): times the request to its response
//!    headers and counts it by matched route pattern and status.
//! 2. **Router** ([`routes`]): one file per endpoint. Every handler
//!    answers GET and HEAD.
//! 3. **Lookup** ([`state::AppState::lookup`]): the 32-character hash part is
//!    validated, then the DB is queried on a blocking thread (never on the
//!    reactor). Malformed and absent hashes are both 404. narinfo and `.ls`
//!    lookups go through a short-lived memo ([`path_info_memo`]).
//! 4. **Decide before the headers.** NAR, listing, log and file handlers do
//!    everything that can fail first: the NAR route walks the store path
//!    into a [`larder_store::nar::NarPlan`] (every file `lstat`ed, sizes
//!    known) and checks it against the DB's NAR hash and size. Then the
//!    status and `Content-Length` are certain.
//!    A zstd response first looks in the compressed-NAR cache
//!    ([`nar_cache`], when `cache-dir` is set): a hit is served as a static
//!    file with its `Content-Length`, without walking the store path.
//! 5. **Stream.** Bodies come from blocking threads through bounded
//!    channels ([`body`], and [`compress`] for zstd), wrapped in
//!    [`body::MeteredStream`] for byte counts and durations. A failure after
//!    the headers is yielded as an error item, and actix then drops the
//!    connection: the client sees a broken download, never a clean short
//!    one, which Nix would treat as a hard failure with no fallback.
//! 6. **Errors** ([`error::ServerError`]): one enum, one exhaustive match to
//!    a status; the client gets the status phrase, the log gets the detail.
//!
//! The server holds no key. narinfo signatures are the DB's own plus, with
//! `signer-socket` set, larder-signer's ([`state::AppState::signatures`],
//! [`signer_client`]): asked over a unix socket, cached per fingerprint.

pub mod body;
pub mod compress;
pub mod config;
pub mod error;
pub mod listen;
pub mod metrics;
pub mod nar_cache;
pub mod path_info_memo;
pub mod plan_cache;
pub mod range;
pub mod routes;
pub mod signer_client;
pub mod state;
pub mod systemd;
pub mod tls;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use larder_store::StoreLocation;
use larder_store::db::{DbError, StoreDb};
use thiserror::Error;

use crate::config::Config;
use crate::listen::Listener;
use crate::metrics::Metrics;
use crate::nar_cache::NarCache;
use crate::path_info_memo::PathInfoMemo;
use crate::plan_cache::PlanCache;
use crate::signer_client::{SignerClient, SignerClientMetrics};
use crate::state::AppState;

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
    let db = StoreDb::open(&location).map_err(|source| StartupError::Store {
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
fn app_state(config: &Config) -> Result<AppState, StartupError> {
    let (location, db) = open_store(config)?;
    let metrics = Arc::new(Metrics::new()?);
    let cache = match &config.cache_dir {
        Some(dir) => {
            let max_bytes = config.cache_size_mib.saturating_mul(1 << 20);
            Some(Arc::new(NarCache::open(dir, max_bytes, metrics.clone())?))
        }
        None => None,
    };
    let signer = match &config.signer {
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
        cache,
        memo: PathInfoMemo::new(Duration::from_millis(config.path_info_ttl_ms), 100_000),
        plans: PlanCache::new(NonZeroUsize::new(4096).expect("non-zero")),
        signer,
    })
}

/// Open the store, bind, and serve until SIGINT/SIGTERM.
pub async fn run(config: Config) -> Result<(), StartupError> {
    let state = web::Data::new(app_state(&config)?);
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .wrap_fn(metrics::observe_request)
            .configure(routes::configure)
    })
    .workers(config.workers)
    .max_connections(config.max_connections)
    .keep_alive(Duration::from_secs(config.keep_alive_secs))
    .client_request_timeout(Duration::from_secs(config.request_timeout_secs))
    .shutdown_timeout(config.shutdown_timeout_secs)
    .on_connect(|conn, _| {
        // Small responses (narinfo) must not wait for Nagle.
        if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
            let _ = tcp.set_nodelay(true);
        }
    });
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls::server_config(cert, key)?),
        None => None,
    };
    let bind_error = |source| StartupError::Bind {
        bind: format!("{:?}", config.bind),
        source,
    };
    let server = match (listen::open(&config.bind)?, tls) {
        (Listener::Tcp(l), None) => server.listen(l),
        (Listener::Tcp(l), Some(tls)) => server.listen_rustls_0_23(l, tls),
        (Listener::Unix(l), None) => server.listen_uds(l),
        (Listener::Unix(_), Some(_)) => {
            return Err(bind_error(std::io::Error::other(
                "TLS is for TCP sockets; put a TLS proxy in front of a unix socket",
            )));
        }
    }
    .map_err(bind_error)?;
    tracing::info!(
        bind = ?config.bind,
        store_root = %config.store_root.display(),
        store_dir = %config.store_dir,
        "larder-server listening"
    );
    let running = server.run();
    systemd::notify_ready();
    running.await.map_err(StartupError::Server)
}
