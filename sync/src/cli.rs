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
