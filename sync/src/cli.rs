//! Command-line flags. Every flag of the push side also reads an
//! environment variable (named in `--help`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "larder-sync",
    version,
    about = "Push built paths to a Nix cache and pull closures from builders, with the real `nix copy`"
)]
pub struct Cli {
    /// The durable queue (SQLite). `enqueue`, `watch` and `status` must agree on it.
    #[arg(
        long,
        env = "LARDER_SYNC_QUEUE",
        default_value = "/var/lib/larder-sync/queue.sqlite",
        global = true
    )]
    pub queue: PathBuf,
    /// Root of the local store: `/` for the host store, or a chroot store's root (`nix --store ROOT`).
    #[arg(
        long,
        env = "LARDER_SYNC_STORE_ROOT",
        default_value = "/",
        global = true
    )]
    pub store_root: PathBuf,
    /// Log filter (tracing-subscriber syntax).
    #[arg(long, env = "LARDER_SYNC_LOG", default_value = "info", global = true)]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Append paths to the queue (for Nix's post-build-hook: also reads $OUT_PATHS). Always exits 0.
    Enqueue { paths: Vec<String> },
    /// Follow the local store and push every new path to the target.
    Watch(WatchArgs),
    /// Watch while running CMD, wait until everything is pushed, exit with CMD's status.
    WatchExec {
        #[command(flatten)]
        watch: WatchArgs,
        /// Give up waiting for the queue to drain after this many seconds (exit 75).
        #[arg(long, default_value_t = 3600)]
        drain_timeout_secs: u64,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print queue depth, the oldest pending path's age and the last error.
    Status,
    /// Copy closures from a builder into the local store and root them.
    Pull(PullArgs),
    /// Pull each builder of a config file at its interval.
    Daemon {
        #[arg(long)]
        config: PathBuf,
    },
    /// Accept `nix copy --to http(s)://…` uploads from token holders into the store at --store-root.
    Receive(ReceiveArgs),
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Target store URI (file://, http(s)://, ssh://, ssh-ng://, s3://).
    #[arg(long, env = "LARDER_SYNC_TO")]
    pub to: String,
    /// Push the existing store too (re-scan from the first row).
    #[arg(long)]
    pub from_start: bool,
    /// Push `.drv` files as well.
    #[arg(long)]
    pub include_drvs: bool,
    /// Don't push paths this cache already serves (repeatable), e.g. https://cache.nixos.org.
    #[arg(long)]
    pub skip_upstream: Vec<String>,
    /// How often the store DB is polled.
    #[arg(long, env = "LARDER_SYNC_POLL_MS", default_value_t = 1000)]
    pub poll_interval_ms: u64,
    /// Paths per `nix copy`.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// First retry delay after a failed push; doubles per attempt.
    #[arg(long, env = "LARDER_SYNC_RETRY_BASE_MS", default_value_t = 1000)]
    pub retry_base_ms: u64,
    /// Longest retry delay.
    #[arg(long, env = "LARDER_SYNC_RETRY_MAX_SECS", default_value_t = 60)]
    pub retry_max_secs: u64,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9101).
    #[arg(long, env = "LARDER_SYNC_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The builder's store URI (ssh-ng://, ssh://, http(s)://, file://).
    #[arg(long)]
    pub from: String,
    /// A public key whose signatures are accepted (repeatable); default: Nix's trusted-public-keys.
    #[arg(long = "trusted-key")]
    pub trusted_keys: Vec<String>,
    /// Accept unsigned paths.
    #[arg(long)]
    pub no_check_sigs: bool,
    /// Where GC roots go: `<dir>/<builder>/<name>`.
    #[arg(long)]
    pub gc_root_dir: PathBuf,
    /// Directory name for this builder under --gc-root-dir (default: the URI's host).
    #[arg(long)]
    pub builder: Option<String>,
    /// GC root name.
    #[arg(long)]
    pub name: String,
    /// A symlink on an ssh builder to pull, e.g. /nix/var/nix/profiles/system (repeatable).
    #[arg(long = "root")]
    pub roots: Vec<String>,
    /// Keep only the newest N roots of this builder.
    #[arg(long)]
    pub keep_last: Option<usize>,
    /// Remove this builder's roots older than this (the newest is always kept).
    #[arg(long)]
    pub max_age_secs: Option<u64>,
    /// Store paths on the builder.
    pub paths: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Where to listen: ADDR:PORT, or unix:PATH behind a reverse proxy.
    #[arg(long, env = "LARDER_SYNC_LISTEN", default_value = "127.0.0.1:5001")]
    pub listen: String,
    /// Pushers, one `NAME TOKEN` (or `NAME sha256:<hex of the token>`) per line; mode 0600.
    #[arg(long, env = "LARDER_SYNC_TOKENS")]
    pub tokens: PathBuf,
    /// Uploads in progress and NARs waiting for their narinfo (emptied at startup).
    #[arg(
        long,
        env = "LARDER_SYNC_STAGING_DIR",
        default_value = "/var/lib/larder-sync/staging"
    )]
    pub staging_dir: PathBuf,
    /// Where arrivals are rooted, `<dir>/receive-<pusher>/<path>` [default: <store-root>/nix/var/nix/gcroots/larder].
    #[arg(long, env = "LARDER_SYNC_GC_ROOT_DIR")]
    pub gc_root_dir: Option<PathBuf>,
    /// Largest NAR accepted, decompressed (refused with 413 beyond).
    #[arg(long, env = "LARDER_SYNC_MAX_NAR_SIZE_MIB", default_value_t = 4096)]
    pub max_nar_size_mib: u64,
    /// NAR uploads received at once; more wait for a slot.
    #[arg(long, env = "LARDER_SYNC_MAX_CONCURRENT_UPLOADS", default_value_t = 8)]
    pub max_concurrent_uploads: usize,
    /// Longest one NAR upload may take, waiting for a slot included (408 beyond).
    #[arg(long, env = "LARDER_SYNC_UPLOAD_TIMEOUT_SECS", default_value_t = 600)]
    pub upload_timeout_secs: u64,
    /// Longest pause between two chunks of an upload's body (408 beyond).
    #[arg(
        long,
        env = "LARDER_SYNC_UPLOAD_IDLE_TIMEOUT_SECS",
        default_value_t = 60
    )]
    pub upload_idle_timeout_secs: u64,
    /// `Priority:` in /nix-cache-info.
    #[arg(long, env = "LARDER_SYNC_PRIORITY", default_value_t = 50)]
    pub priority: u32,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9102).
    #[arg(long, env = "LARDER_SYNC_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// PUSHER=keyname:base64: that pusher's uploads must carry a signature by this key (repeatable).
    #[arg(long, env = "LARDER_SYNC_REQUIRE_SIGS_FROM", value_delimiter = ' ')]
    pub require_sigs_from: Vec<String>,
}
