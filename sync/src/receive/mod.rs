//! `larder-sync receive`: the upload half of Nix's HTTP binary-cache
//! protocol, so a plain `nix copy --to http(s)://cache/` (Nix 2.8's
//! HttpBinaryCacheStore, no custom client) lands paths in the cache host's
//! store, rooted so its GC keeps them.
//!
//! What Nix 2.8 sends, and what happens to it:
//! 1. `GET /nix-cache-info`, then `GET /<hash>.narinfo` per path, answered
//!    from the host store's DB ([`routes`]): 200 means "already there".
//! 2. `HEAD` then `PUT /nar/<filehash>.nar.xz`: the body streams through a
//!    decompressor into [`staging`], hashed on the way; the compressed
//!    bytes must hash to `<filehash>`, the NAR must stay under the limit.
//! 3. `PUT /<hash>.narinfo`, last: [`intake`] checks it against the staged
//!    NAR and the store (every reference already valid), [`trust`] checks
//!    required signatures, [`root`] roots the path, [`import`] streams the
//!    staged NAR to the real Nix ([`daemon`]: `nix-daemon --stdio`).
//!
//! Every request needs a pusher's token ([`auth`]); refusals are one-line
//! 4xx bodies ([`error`]) counted in [`metrics`]. Reads (`nix-cache-info`,
//! narinfo) need it too: Nix sends its netrc credentials on every
//! request, and an open receiver would tell anyone what the store holds.
//!
//! Async (actix-web) for the connections; SQLite, decompression and
//! imports run on blocking threads.

pub mod auth;
pub mod ca;
pub mod daemon;
pub mod error;
pub mod import;
pub mod intake;
pub mod metrics;
pub mod retention;
pub mod root;
mod routes;
pub mod staging;
pub mod state;
pub mod trust;

use std::path::PathBuf;
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use larder_store::StoreLocation;
use larder_store::db::StoreDb;

use crate::error::{Result, SyncError};
use auth::Tokens;
use metrics::ReceiveMetrics;
use retention::ReceiveRetention;
use staging::Staging;
use state::{Limits, ReceiveState};
use trust::SigPolicy;

/// Where the receiver listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// `ADDR:PORT`.
    Tcp(String),
    /// `unix:PATH` (for a reverse proxy on the same host).
    Unix(PathBuf),
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Listen, String> {
        match s.strip_prefix("unix:") {
            Some("") => Err("unix: needs a socket path".into()),
            Some(path) => Ok(Listen::Unix(path.into())),
            None if s.contains(':') => Ok(Listen::Tcp(s.to_owned())),
            None => Err(format!("{s:?} is neither ADDR:PORT nor unix:PATH")),
        }
    }
}

/// Everything `receive` is started with (flags, see `larder-sync receive --help`).
#[derive(Debug, Clone)]
pub struct ReceiveConfig {
    pub listen: Listen,
    /// Mode of a `unix:PATH` socket (`--socket-mode`).
    pub socket_mode: u32,
    /// `/` for the host store, or a chroot store's root.
    pub store_root: PathBuf,
    pub tokens_file: PathBuf,
    pub staging_dir: PathBuf,
    pub gc_root_dir: PathBuf,
    /// Retention of the `receive-<pusher>` sources (`--keep-last`, …).
    pub policies: crate::retention::Policies,
    /// How often retention runs.
    pub prune_interval: Duration,
    /// Roots younger than this are not counted or removed.
    pub settle: Duration,
    /// Largest NAR accepted, decompressed, in bytes.
    pub max_nar_size: u64,
    pub max_concurrent_uploads: usize,
    /// Largest total of staged NARs, decompressed, in bytes (`--max-staging-mib`).
    pub max_staging: u64,
    pub upload_timeout: Duration,
    /// Longest pause between two chunks of an upload's body.
    pub idle_timeout: Duration,
    pub priority: u32,
    pub metrics_listen: Option<String>,
    /// `PUSHER=keyname:base64`, repeatable.
    pub require_sigs_from: Vec<String>,
}

/// Refuse a `--gc-root-dir` outside the store's own GC-root directory:
/// the receiver roots with plain symlinks, which Nix's garbage collector
/// finds only under `<state>/gcroots`, so anywhere else every pushed path
/// would be collected by the next `nix-collect-garbage` (seen with a chroot
/// store and Nix 2.8: a closure pushed and "rooted" under `/tmp/x` gone
/// after `nix-store --gc`).
fn check_gc_root_dir(location: &StoreLocation, dir: &std::path::Path) -> Result<()> {
    if crate::gcroots::under_store_gcroots(location, dir) {
        return Ok(());
    }
    let gcroots = location.state_dir().join("gcroots");
    Err(SyncError::Usage(format!(
        "--gc-root-dir {}: outside the store's GC-root directory {}, where Nix's \
         garbage collector would not see its links and would delete every pushed \
         path; use a directory under it (the default is {})",
        dir.display(),
        gcroots.display(),
        gcroots.join("larder").display()
    )))
}

/// How often staged NARs whose narinfo never came are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Check the configuration, clean the staging dir, and serve until killed.
pub fn run(config: ReceiveConfig) -> Result<()> {
    let tokens = Tokens::load(&config.tokens_file)?;
    let sigs = SigPolicy::parse(&config.require_sigs_from, tokens.names())?;
    let keep = ReceiveRetention {
        policies: config.policies.clone(),
        interval: config.prune_interval,
        settle: config.settle,
    };
    keep.check_sources(tokens.names())?;
    if config.max_concurrent_uploads == 0
        || config.max_concurrent_uploads > tokio::sync::Semaphore::MAX_PERMITS
        || config.max_nar_size == 0
    {
        return Err(SyncError::Usage(
            "--max-concurrent-uploads (at most 4096) and --max-nar-size-mib must be at least 1"
                .into(),
        ));
    }
    let location = StoreLocation::new(&config.store_root);
    check_gc_root_dir(&location, &config.gc_root_dir)?;
    let db = StoreDb::open(&location)?;
    let staging = Staging::open(&config.staging_dir).map_err(|e| {
        SyncError::Usage(format!(
            "staging dir {}: {e} (set --staging-dir)",
            config.staging_dir.display()
        ))
    })?;
    std::fs::create_dir_all(&config.gc_root_dir).map_err(|source| SyncError::GcRoot {
        path: config.gc_root_dir.clone(),
        source,
    })?;
    // Before any request: what a killed receiver left mid-move is put
    // back even when a policy-less receiver never runs a retention pass.
    for source in crate::retention::sources(&config.gc_root_dir)? {
        if source.starts_with(retention::SOURCE_PREFIX)
            && let Err(e) = crate::retention::recover_source(&config.gc_root_dir, &source, true)
        {
            tracing::warn!("{e}");
        }
    }
    let per_pusher = (config.max_concurrent_uploads / 2).max(1);
    let pusher_uploads = tokens
        .names()
        .map(|n| (n.to_owned(), tokio::sync::Semaphore::new(per_pusher)))
        .collect();
    let metrics = ReceiveMetrics::new();
    metrics.init_pushers(tokens.names());
    let state = web::Data::new(ReceiveState {
        tokens,
        sigs,
        staging,
        db,
        daemons: daemon::Daemons::new(&config.store_root),
        location,
        gc_root_dir: config.gc_root_dir.clone(),
        limits: Limits {
            max_nar_size: config.max_nar_size,
            max_staging: config.max_staging,
            upload_timeout: config.upload_timeout,
            idle_timeout: config.idle_timeout,
        },
        uploads: tokio::sync::Semaphore::new(config.max_concurrent_uploads),
        pusher_uploads,
        priority: config.priority,
        metrics,
    });
    actix_web::rt::System::new().block_on(serve(config, state, keep))
}

async fn serve(
    config: ReceiveConfig,
    state: web::Data<ReceiveState>,
    keep: ReceiveRetention,
) -> Result<()> {
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .default_service(web::to(routes::dispatch))
    })
    .on_connect(|_, ext| {
        ext.insert(routes::Poisoned::default());
    });
    let listen_err = |e: std::io::Error| {
        SyncError::Usage(format!(
            "cannot listen on {:?}: {e} (set --listen)",
            config.listen
        ))
    };
    let server = match &config.listen {
        Listen::Tcp(addr) => server.bind(addr.as_str()),
        // The socket gets its mode before the server runs (the umask,
        // 0077 in the units, would leave a proxy outside).
        Listen::Unix(path) => {
            // Only a socket a crash left: never a file, never a live
            // receiver's socket.
            if larder_store::unix_socket::remove_stale(path).map_err(listen_err)? {
                tracing::info!(socket = %path.display(), "removed a stale socket");
            }
            server.bind_uds(path).and_then(|server| {
                std::fs::set_permissions(
                    path,
                    std::os::unix::fs::PermissionsExt::from_mode(config.socket_mode),
                )
                .map(|()| server)
            })
        }
    }
    .map_err(listen_err)?
    .run();
    let metrics = match &config.metrics_listen {
        Some(addr) => {
            let m = state.clone();
            Some(
                HttpServer::new(move || {
                    App::new().app_data(m.clone()).route(
                        "/metrics",
                        web::get().to(|s: web::Data<ReceiveState>| async move {
                            s.update_staging_gauge();
                            HttpResponse::Ok()
                                .content_type("text/plain; version=0.0.4; charset=utf-8")
                                .body(s.metrics.render())
                        }),
                    )
                })
                .workers(1)
                .bind(addr.as_str())
                .map_err(|source| SyncError::Metrics {
                    addr: addr.clone(),
                    source,
                })?
                .run(),
            )
        }
        None => None,
    };
    let sweeper = state.clone();
    let max_age = config
        .upload_timeout
        .checked_mul(2)
        .unwrap_or(Duration::MAX);
    actix_web::rt::spawn(async move {
        loop {
            actix_web::rt::time::sleep(SWEEP_INTERVAL).await;
            sweeper.staging.sweep(max_age);
            sweeper.update_staging_gauge();
        }
    });
    // Import connections end soon after a push pauses: each holds Nix's
    // temporary roots on what it imported (see `daemon`).
    let reaper = state.clone();
    actix_web::rt::spawn(async move {
        loop {
            actix_web::rt::time::sleep(daemon::REAP_INTERVAL).await;
            let s = reaper.clone();
            let _ = actix_web::rt::task::spawn_blocking(move || s.daemons.reap()).await;
        }
    });
    if keep.is_active() {
        let pruner = state.clone();
        let keep = std::sync::Arc::new(keep);
        actix_web::rt::spawn(async move {
            loop {
                let (s, k) = (pruner.clone(), keep.clone());
                let pass =
                    actix_web::rt::task::spawn_blocking(move || k.prune(&s.db, &s.gc_root_dir))
                        .await;
                match pass {
                    Ok(Ok(removed)) => tracing::debug!(removed, "retention pass"),
                    Ok(Err(e)) => tracing::error!("retention pass failed, retrying: {e}"),
                    Err(e) => tracing::error!("retention pass panicked: {e}"),
                }
                actix_web::rt::time::sleep(keep.interval).await;
            }
        });
    }
    tracing::info!(
        "receiving pushes on {:?} into the store at {} (staging {}, GC roots {})",
        config.listen,
        config.store_root.display(),
        config.staging_dir.display(),
        config.gc_root_dir.display()
    );
    let result = match metrics {
        Some(m) => futures_util::future::try_join(server, m).await.map(drop),
        None => server.await,
    };
    result.map_err(|e| SyncError::Usage(format!("receiver stopped: {e}")))
}
