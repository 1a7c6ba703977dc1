//! The `larder-sync` binary: flags, logging, and one function per subcommand.

/// `println!` that a closed stdout (`larder-sync roots | head`) does not
/// panic: output is for a reader, and `roots --prune`, `keep` or `export`
/// must finish their work whether or not anyone still reads it.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod cli;
mod export;
mod roots;

use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;
use std::time::Duration;

use larder_store::StoreLocation;
use larder_sync::daemon::{self, DaemonConfig};
use larder_sync::gcroots::Retention;
use larder_sync::nix::{LocalStore, SigCheck};
use larder_sync::push::PushConfig;
use larder_sync::queue::{Backoff, Queue, now_ms};
use larder_sync::uri::{StoreUri, parse_keys, sanitize, store_path_arg};
use larder_sync::watch::{WatchConfig, Watcher};
use larder_sync::{Result, SyncError, lease, pull};

use crate::cli::{Cli, Command, PullArgs, ReceiveArgs, WatchArgs};

/// `watch-exec`'s exit status when the queue did not drain in time (EX_TEMPFAIL).
const EXIT_NOT_DRAINED: u8 = 75;

/// `filter` with `object_store=warn` added unless it names `object_store`:
/// the S3 client logs every retry of a request at `info` (ten lines before
/// an unreachable endpoint's one error).
fn log_filter(filter: &str) -> String {
    if filter.contains("object_store") || filter.trim().is_empty() {
        filter.to_owned()
    } else {
        format!("{filter},object_store=warn")
    }
}

fn main() -> ExitCode {
    let cli: Cli = larder_store::cli::parse(&cli::CONVENTION);
    larder_store::cli::init_logging(&cli::CONVENTION, &log_filter(&cli.log));
    if matches!(
        cli.command,
        Command::Watch(_)
            | Command::WatchExec { .. }
            | Command::Daemon { .. }
            | Command::Receive(_)
    ) {
        ignore_hangups();
    }
    let result = match cli.command {
        Command::Enqueue { ref paths } => return enqueue(&cli, paths),
        Command::Watch(ref args) => watch_config(&cli, args).and_then(Watcher::start).map(|w| {
            tracing::info!("watching {} for new paths", cli.store_root.display());
            w.wait();
            ExitCode::SUCCESS
        }),
        Command::WatchExec {
            ref watch,
            drain_timeout_secs,
            ref command,
        } => watch_exec(
            &cli,
            watch,
            command,
            Duration::from_secs(drain_timeout_secs),
        ),
        Command::Status { limit } => status(&cli, limit),
        Command::Pull(ref args) => pull_once(&cli, args),
        Command::Daemon { ref builders } => DaemonConfig::load(builders).map(|c| daemon::run(&c)),
        Command::Roots(ref args) => roots::list(&cli, args),
        Command::Keep(ref args) => roots::keep(&cli, args),
        Command::Receive(ref args) => receive(&cli, args),
        Command::Export(ref args) => export::export(&cli, args),
        Command::S3Gc(ref args) => export::s3_gc(&cli, args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("larder-sync: {e}");
        // Usage and configuration errors exit 2, like clap's own.
        match e {
            SyncError::Usage(_) | SyncError::Config { .. } => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    })
}

/// SIGHUP's default action would kill a long-running larder-sync (exit
/// 129, no log line; `receive` then leaves pushes half done). Settings are
/// read once at start, so a hangup is logged and ignored, as larder-server
/// does: restart to apply changes. The handler is in place before this
/// returns; a thread of its own logs each hangup.
fn ignore_hangups() {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGHUP; it will stop larder-sync");
            return;
        }
    };
    let hangup = match runtime.block_on(async { signal(SignalKind::hangup()) }) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGHUP; it will stop larder-sync");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("sighup".into())
        .spawn(move || {
            let mut hangup = hangup;
            runtime.block_on(async {
                while hangup.recv().await.is_some() {
                    tracing::warn!(
                        "SIGHUP ignored: larder-sync reads its settings only at start; restart it to apply changes"
                    );
                }
            });
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the SIGHUP thread; hangups are ignored silently");
    }
}

/// Nix runs the post-build-hook synchronously and a failing hook stops all
/// builds, so `enqueue` never fails: it reports errors loudly on stderr
/// (which Nix shows in the build log) and exits 0. A path that could not be
/// enqueued is still found by a running watcher in the store DB.
fn enqueue(cli: &Cli, args: &[String]) -> ExitCode {
    let location = StoreLocation::new(&cli.store_root);
    let mut from_env: Vec<String> = std::env::var("OUT_PATHS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    // Nix 2.8.0 sets DRV_PATH but leaves OUT_PATHS empty (NixOS/nix#6446).
    if let (true, Ok(drv)) = (from_env.is_empty(), std::env::var("DRV_PATH")) {
        match larder_sync::drv::outputs_of(&location, &drv) {
            Ok(outputs) => from_env = outputs,
            Err(e) => eprintln!("larder-sync enqueue: ERROR: outputs of {drv} not enqueued: {e}"),
        }
    }
    let mut paths = Vec::new();
    for arg in args.iter().chain(&from_env) {
        match store_path_arg(&location, arg) {
            Ok(p) => paths.push(p),
            Err(e) => eprintln!("larder-sync enqueue: ERROR: not enqueued: {e}"),
        }
    }
    let result = Queue::open(&cli.queue).and_then(|mut q| q.enqueue(&paths));
    if let Err(e) = result {
        eprintln!(
            "larder-sync enqueue: ERROR: {} path(s) NOT enqueued (the build goes on): {e}",
            paths.len()
        );
    }
    ExitCode::SUCCESS
}

fn watch_config(cli: &Cli, args: &WatchArgs) -> Result<WatchConfig> {
    let skip_upstream = args
        .skip_upstream
        .iter()
        .map(|u| u.parse())
        .collect::<Result<_>>()?;
    if args.batch_size == 0 {
        return Err(SyncError::Usage("--batch-size must be at least 1".into()));
    }
    let target: larder_sync::uri::StoreUri = args.to.parse()?;
    if target.scheme() == "s3" {
        // Checked here, before the queue records the URI or a log line
        // shows it, also with --no-target-check.
        larder_sync::s3::S3Target::parse(&target)?;
    }
    Ok(WatchConfig {
        push: PushConfig {
            local: LocalStore::new(&cli.store_root),
            target,
            skip_upstream,
            batch_size: args.batch_size,
            backoff: Backoff {
                base: Duration::from_millis(args.retry_base_ms),
                cap: Duration::from_secs(args.retry_max_secs),
            },
            sign_key: args.sign_key.clone(),
            no_check_sigs: args.no_check_sigs,
            signer_socket: args.signer_socket.clone(),
        },
        check_target: !args.no_target_check,
        queue_path: cli.queue.clone(),
        from_start: args.from_start,
        include_drvs: args.include_drvs,
        poll_interval: Duration::from_millis(args.poll_interval_ms.max(10)),
        metrics_listen: args.metrics_listen.clone(),
    })
}

/// Run `command` while watching; push everything, then exit with its status.
fn watch_exec(
    cli: &Cli,
    args: &WatchArgs,
    command: &[String],
    drain_timeout: Duration,
) -> Result<ExitCode> {
    let watcher = Watcher::start(watch_config(cli, args)?)?;
    let status = std::process::Command::new(&command[0])
        .args(&command[1..])
        .status()
        .map_err(|source| SyncError::Spawn {
            program: command[0].clone(),
            source,
        })?;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    tracing::info!(%status, "command finished; waiting until the queue is drained");
    if !watcher.drain(drain_timeout)? {
        let stats = Queue::open(&cli.queue)?.stats()?;
        tracing::error!(
            pending = stats.depth,
            "queue not drained after {}s (last error: {})",
            drain_timeout.as_secs(),
            stats.last_error.map(|e| e.1).unwrap_or_default()
        );
        return Ok(ExitCode::from(EXIT_NOT_DRAINED));
    }
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

fn status(cli: &Cli, limit: usize) -> Result<ExitCode> {
    let queue = Queue::open_existing(&cli.queue)?;
    let stats = queue.stats()?;
    let now = now_ms();
    let secs_ago = |at: i64| (now - at).max(0) / 1000;
    say!("queue: {}", cli.queue.display());
    say!(
        "target: {}",
        queue
            .target()?
            .as_deref()
            .unwrap_or("- (no watcher ran yet)")
    );
    match lease::holder(&cli.queue)? {
        Some(pid) => say!("watcher: alive (pid {pid}), pushing this queue"),
        None => say!("watcher: none running (paths wait until one starts)"),
    }
    say!("pending: {}", stats.depth);
    match stats.oldest {
        Some((path, at)) => say!("oldest pending: {}s ({path})", secs_ago(at)),
        None => say!("oldest pending: -"),
    }
    match stats.last_error {
        Some((at, msg)) => say!("last error: {}s ago: {msg}", secs_ago(at)),
        None => say!("last error: -"),
    }
    let pending = queue.pending(limit)?;
    for p in &pending {
        match &p.last_error {
            None => say!(
                "  pending {} (enqueued {}s ago)",
                p.path,
                secs_ago(p.enqueued_at)
            ),
            Some(err) => {
                let retry = (p.next_attempt_at - now).max(0) / 1000;
                say!(
                    "  failed  {} ({} attempts, retry in {retry}s): {}",
                    p.path,
                    p.attempts,
                    err.replace('\n', "\n      ")
                );
            }
        }
    }
    if stats.depth > pending.len() as u64 {
        say!(
            "  … and {} more (--limit)",
            stats.depth - pending.len() as u64
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn pull_once(cli: &Cli, args: &PullArgs) -> Result<ExitCode> {
    let source: StoreUri = args.from.parse()?;
    let sigs = if args.no_check_sigs {
        SigCheck::Skip
    } else {
        parse_keys(&args.trusted_keys)?;
        SigCheck::Require(args.trusted_keys.clone())
    };
    let location = StoreLocation::new(&cli.store_root);
    let paths = args
        .paths
        .iter()
        .map(|p| store_path_arg(&location, p))
        .collect::<Result<_>>()?;
    let req = pull::PullRequest {
        builder: args
            .builder
            .as_deref()
            .map_or_else(|| source.builder_name(), sanitize),
        name: sanitize(&args.name),
        source,
        sigs,
        gc_root_dir: args.gc_root_dir.clone(),
        paths,
        roots: args.roots.clone(),
        retention: Retention {
            keep_last: args.keep_last,
            max_age: args.max_age_secs.map(Duration::from_secs),
        },
        reuse_unchanged: false,
    };
    let report = pull::pull(&LocalStore::new(&cli.store_root), &req)?;
    for root in &report.gc_roots {
        say!("rooted {}", root.display());
    }
    for root in &report.removed {
        say!("removed {}", root.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn receive(cli: &Cli, args: &ReceiveArgs) -> Result<ExitCode> {
    let (gc_root_dir, policies) = roots::policies(cli, &args.retention)?;
    let config = larder_sync::receive::ReceiveConfig {
        listen: args.listen.parse().map_err(SyncError::Usage)?,
        socket_mode: args.socket_mode,
        store_root: cli.store_root.clone(),
        tokens_file: args.tokens.clone(),
        staging_dir: args.staging_dir.clone(),
        gc_root_dir,
        policies,
        prune_interval: Duration::from_secs(args.prune_interval_secs),
        settle: Duration::from_secs(args.settle_secs),
        max_nar_size: args.max_nar_size_mib.saturating_mul(1 << 20),
        max_concurrent_uploads: usize::from(args.max_concurrent_uploads),
        max_staging: args.max_staging_mib.saturating_mul(1 << 20),
        upload_timeout: Duration::from_secs(args.upload_timeout_secs),
        idle_timeout: Duration::from_secs(args.upload_idle_timeout_secs.max(1)),
        priority: args.priority,
        metrics_listen: args.metrics_listen.clone(),
        require_sigs_from: args.require_sigs_from.clone(),
    };
    larder_sync::receive::run(config).map(|()| ExitCode::SUCCESS)
}
