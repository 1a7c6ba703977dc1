//! Command-line flags, parsed under larder's convention
//! ([`larder_store::cli`]): every setting flag also reads
//! `LARDER_SYNC_<FLAG>` (named in `--help`) and a key of the `--config`
//! file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use larder_store::cli::Convention;

/// larder-sync's name and environment prefix. Actions are flags only.
pub const CONVENTION: Convention = Convention {
    binary: "larder-sync",
    env_prefix: "LARDER_SYNC",
    actions: &["once", "prune", "dry-run"],
};

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
        default_value = "/var/lib/larder-sync/queue.sqlite",
        global = true
    )]
    pub queue: PathBuf,
    /// Root of the local store: `/` for the host store, or a chroot store's root (`nix --store ROOT`).
    #[arg(long, default_value = "/", global = true)]
    pub store_root: PathBuf,
    /// Log filter (tracing-subscriber EnvFilter syntax), e.g. `larder_sync=debug,info`.
    /// The S3 client's line per retry is shown only when the filter names
    /// `object_store` (else `object_store=warn` is added): an endpoint that
    /// does not answer is one error line, not eleven.
    #[arg(long, default_value = "info", global = true)]
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
    /// Print the queue's target, whether a watcher pushes it (pid), and the
    /// pending paths with their last error.
    Status {
        /// Pending paths listed at most.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Copy closures from a builder into the local store and root them.
    Pull(PullArgs),
    /// Pull each builder of a builders file (TOML, `[[builder]]` tables) at its interval.
    Daemon {
        /// The builders file (`sync/src/daemon.rs` documents its format).
        #[arg(long)]
        builders: PathBuf,
    },
    /// List the GC roots larder keeps on this (cache) host: per source, what,
    /// since when and until when; `--prune` removes those outside retention.
    Roots(RootsArgs),
    /// On the cache host: root every path that arrives by `nix copy --to
    /// ssh-ng://` (which roots nothing) under `<gc-root-dir>/ssh/`, and
    /// apply retention.
    Keep(KeepArgs),
    /// Accept `nix copy --to http(s)://…` uploads from token holders into the store at --store-root.
    Receive(ReceiveArgs),
    /// Write the closures of PATHS into an S3 bucket as a Nix binary cache
    /// (`--to s3://BUCKET?endpoint=…&region=…`; credentials from
    /// AWS_ACCESS_KEY_ID[_FILE] / AWS_SECRET_ACCESS_KEY[_FILE]).
    Export(ExportArgs),
    /// Delete from an S3 bucket what larder's GC roots (and --root) no
    /// longer reach: narinfos first, then their NARs, listings and logs.
    S3Gc(S3GcArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The bucket: s3://BUCKET?endpoint=URL&region=R[&compression-level=N][&part-size-mib=M].
    #[arg(long)]
    pub to: String,
    /// Sign each narinfo with larder-signer's keys, asked over this socket.
    #[arg(long)]
    pub signer_socket: Option<PathBuf>,
    /// Store paths whose closures are exported.
    #[arg(required = true)]
    pub paths: Vec<String>,
}

#[derive(Debug, Args)]
pub struct S3GcArgs {
    /// The bucket, as for `export --to`.
    #[arg(long)]
    pub to: String,
    /// Larder's GC-root directory: every root in every source directory is
    /// kept, with its closure [default: <store-root>/nix/var/nix/gcroots/larder].
    #[arg(long)]
    pub gc_root_dir: Option<PathBuf>,
    /// Keep this store path's closure too (repeatable).
    #[arg(long = "root")]
    pub roots: Vec<String>,
    /// Objects younger than this are never deleted (an export in flight).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    pub grace_secs: u64,
    /// Print what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Where larder's GC roots live and how long they are kept.
#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// Larder's GC-root directory, one subdirectory per source
    /// [default: <store-root>/nix/var/nix/gcroots/larder].
    #[arg(long)]
    pub gc_root_dir: Option<PathBuf>,
    /// Keep the newest N distinct closures of each source.
    #[arg(long)]
    pub keep_last: Option<usize>,
    /// Keep every closure that arrived in the last D days.
    #[arg(long)]
    pub max_age_days: Option<u64>,
    /// Another policy for one source: `SOURCE=last:N,days:D` (repeatable),
    /// e.g. `receive-ci=last:5,days:14`.
    #[arg(long = "policy")]
    pub policies: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RootsArgs {
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Only this source (a subdirectory of --gc-root-dir).
    #[arg(long)]
    pub source: Option<String>,
    /// Remove the roots outside retention (default: only list them).
    #[arg(long)]
    pub prune: bool,
    /// A root of a `receive-<pusher>` source counts for retention (and may
    /// be removed) once it is this old, as `receive --settle-secs` counts
    /// it (the same key of the receiver's config file): a push in progress
    /// is not yet one closure. Other sources root whole closures: not
    /// applied to them.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    pub settle_secs: u64,
}

#[derive(Debug, Args)]
pub struct KeepArgs {
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// The source directory arrivals are rooted in.
    #[arg(long, default_value = "ssh")]
    pub source: String,
    /// A registration is rooted once it is this old (other larder sources,
    /// `receive` and `pull`, root theirs first and are not counted twice).
    #[arg(long, default_value_t = 5)]
    pub settle_secs: u64,
    /// How often the store DB is polled.
    #[arg(long, default_value_t = 2000)]
    pub poll_interval_ms: u64,
    /// On a first start, root every copied path already in the store (default: from now on).
    #[arg(long)]
    pub from_start: bool,
    /// Apply retention at least this often (and after every pass that rooted something).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub prune_interval_secs: u64,
    /// Do one pass and exit (for a timer).
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Target store URI (file://, http(s)://, ssh://, ssh-ng://, s3://).
    #[arg(long)]
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
    #[arg(long, default_value_t = 1000)]
    pub poll_interval_ms: u64,
    /// Paths per `nix copy`.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// First retry delay after a failed push; doubles per attempt.
    #[arg(long, default_value_t = 1000)]
    pub retry_base_ms: u64,
    /// Longest retry delay.
    #[arg(long, default_value_t = 60)]
    pub retry_max_secs: u64,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9101).
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Sign each path with this secret key file (`nix key generate-secret`)
    /// before pushing; the target must trust its public key.
    #[arg(long)]
    pub sign_key: Option<PathBuf>,
    /// `nix copy --no-check-sigs`: the target accepts unsigned paths from a
    /// trusted user (e.g. `trusted-users` on an ssh-ng cache host).
    #[arg(long)]
    pub no_check_sigs: bool,
    /// For an s3:// target: sign each narinfo with larder-signer's keys,
    /// asked over this socket.
    #[arg(long)]
    pub signer_socket: Option<PathBuf>,
    /// Start even if the target does not answer yet (e.g. a service starting
    /// before the network); by default the target is checked first.
    #[arg(long)]
    pub no_target_check: bool,
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
    #[arg(long, default_value = "127.0.0.1:5001")]
    pub listen: String,
    /// Mode of a unix:PATH socket (octal): 0660 lets a proxy in the
    /// receiver's group connect; the umask is not asked.
    #[arg(long, default_value = "0660", value_parser = parse_socket_mode)]
    pub socket_mode: u32,
    /// Pushers, one `NAME TOKEN` (or `NAME sha256:<hex of the token>`) per line; mode 0600.
    #[arg(long)]
    pub tokens: PathBuf,
    /// Uploads in progress and NARs waiting for their narinfo (emptied at startup).
    #[arg(long, default_value = "/var/lib/larder-sync/staging")]
    pub staging_dir: PathBuf,
    /// Where arrivals are rooted (`<gc-root-dir>/receive-<pusher>/<path>`)
    /// and how long: retention of the `receive-<pusher>` sources, applied by
    /// the receiver itself (`--policy receive-<pusher>=last:N,days:D`).
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Apply retention this often (and once at startup).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub prune_interval_secs: u64,
    /// A root counts for retention (and may be removed) once it is this
    /// old: a push in progress is not yet one closure.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    pub settle_secs: u64,
    /// Largest NAR accepted, decompressed (refused with 413 beyond).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub max_nar_size_mib: u64,
    /// NAR uploads received at once; more wait for a slot.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub max_concurrent_uploads: u16,
    /// Longest one NAR upload may take, waiting for a slot included (408 beyond).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub upload_timeout_secs: u64,
    /// Longest pause between two chunks of an upload's body (408 beyond).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub upload_idle_timeout_secs: u64,
    /// Largest total of staged NARs and uploads in progress, decompressed
    /// (an upload that would pass it is refused with 503 and Retry-After).
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
    pub max_staging_mib: u64,
    /// `Priority:` in /nix-cache-info.
    #[arg(long, default_value_t = 50)]
    pub priority: u32,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9102).
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// PUSHER=keyname:base64: that pusher's uploads must carry a signature by this key (repeatable).
    #[arg(long, value_delimiter = ' ')]
    pub require_sigs_from: Vec<String>,
}

/// An octal file mode for a socket: read/write bits only, `0660`/`0o660`.
fn parse_socket_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| m & !0o666 == 0)
        .ok_or_else(|| format!("{s:?} is not a socket mode: octal read/write bits, e.g. 0660"))
}
