//! `larder-sync roots` and `larder-sync keep`: the cache host's side of
//! keeping what arrives ([`larder_sync::retention`], [`larder_sync::keep`]).

use std::cmp::Reverse;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use larder_store::StoreLocation;
use larder_sync::gcroots::Retention;
use larder_sync::keep::{KeepConfig, Keeper};
use larder_sync::nix::LocalStore;
use larder_sync::receive::retention::SOURCE_PREFIX as RECEIVE_SOURCE_PREFIX;
use larder_sync::retention::{self, Closures, Kept, Policies};
use larder_sync::{Result, SyncError};

use crate::cli::{Cli, KeepArgs, RetentionArgs, RootsArgs};

/// The GC-root directory and the policies the flags give.
pub fn policies(cli: &Cli, args: &RetentionArgs) -> Result<(PathBuf, Policies)> {
    let location = StoreLocation::new(&cli.store_root);
    let dir = args
        .gc_root_dir
        .clone()
        .unwrap_or_else(|| retention::default_gc_root_dir(&location));
    let mut policies = Policies {
        default: Retention {
            keep_last: args.keep_last,
            max_age: args.max_age_days.map(retention::days),
        },
        ..Policies::default()
    };
    for spec in &args.policies {
        policies.add_spec(spec)?;
    }
    Ok((dir, policies))
}

/// One line per root: source, root name, store path, arrival, verdict.
pub fn list(cli: &Cli, args: &RootsArgs) -> Result<ExitCode> {
    let (dir, policies) = policies(cli, &args.retention)?;
    let location = StoreLocation::new(&cli.store_root);
    let mut closures = Closures::open(&location)?;
    let sources = match &args.source {
        Some(s) => vec![s.clone()],
        None => retention::sources(&dir)?,
    };
    let now = SystemTime::now();
    say!("gc-root-dir: {}", dir.display());
    if sources.is_empty() {
        let why = if dir.is_dir() {
            "no roots yet"
        } else {
            "no roots yet (the directory does not exist: nothing has arrived)"
        };
        say!("{why}");
    }
    for source in sources {
        let policy = policies.for_source(&source);
        say!("source {source} ({})", describe_policy(policy));
        // As the receiver counts its own sources: roots younger than the
        // settle time are neither ranked nor removed. Without a policy
        // nothing is removed, so nothing waits to be ranked either.
        let settle = if source.starts_with(RECEIVE_SOURCE_PREFIX) && policy != Retention::default()
        {
            Duration::from_secs(args.settle_secs)
        } else {
            Duration::ZERO
        };
        if args.prune {
            // What an interrupted move left is listed as the root it was.
            retention::recover_source(&dir, &source, false)?;
        }
        let (settled, mut settling): (Vec<_>, Vec<_>) = retention::roots_of(&dir, &source)?
            .into_iter()
            .partition(|r| r.arrived + settle <= now);
        settling.sort_by_key(|r| Reverse(r.arrived));
        let mut plan = retention::plan_roots(&mut closures, settled, policy, now)?;
        by_closure(&mut plan);
        // Not ranked yet, and the newest: listed first.
        print_settling(&settling, settle);
        for d in &plan {
            let name = d
                .root
                .link
                .file_name()
                .unwrap_or_default()
                .to_string_lossy();
            let verdict = match d.kept {
                Some(kept) => format!("kept {}", describe_kept(kept)),
                None if args.prune => "removed (outside retention)".to_owned(),
                None => "expired (outside retention; --prune removes it)".to_owned(),
            };
            let closure = if d.closure == d.root.target {
                String::new()
            } else {
                format!(" [in closure of {}]", d.closure)
            };
            say!(
                "  {name} -> {} arrived {}{closure}: {verdict}",
                d.root.target,
                utc(d.root.arrived)
            );
        }
        if args.prune {
            retention::prune_settled(&mut closures, &dir, &source, policy, settle)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The roots younger than `settle`: kept, not ranked yet.
fn print_settling(settling: &[retention::Root], settle: Duration) {
    for r in settling {
        let name = r.link.file_name().unwrap_or_default().to_string_lossy();
        say!(
            "  {name} -> {} arrived {}: kept while settling (ranked from {} on: --settle-secs)",
            r.target,
            utc(r.arrived),
            utc(r.arrived + settle)
        );
    }
}

/// Order a listing as retention ranks it: closures newest first (by their
/// latest arrival), each with its top path first, then the rest by name.
/// A 20-path push reads as one block instead of links scattered by hash.
fn by_closure(plan: &mut [retention::Decision]) {
    let mut latest: HashMap<String, SystemTime> = HashMap::new();
    for d in plan.iter() {
        let t = latest.entry(d.closure.clone()).or_insert(d.root.arrived);
        *t = (*t).max(d.root.arrived);
    }
    plan.sort_by(|a, b| {
        let key = |d: &retention::Decision| {
            (
                Reverse(latest[&d.closure]),
                d.closure.clone(),
                d.root.target != d.closure,
                d.root.link.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
}

fn describe_policy(r: Retention) -> String {
    match (r.keep_last, r.max_age) {
        (None, None) => "no policy: everything kept".into(),
        (Some(n), None) => format!("last {n} closures"),
        (None, Some(age)) => format!("last {} days", age.as_secs() / 86_400),
        (Some(n), Some(age)) => {
            format!(
                "last {n} closures and the last {} days",
                age.as_secs() / 86_400
            )
        }
    }
}

fn describe_kept(kept: Kept) -> String {
    match kept {
        Kept::NoPolicy => "(no policy)".into(),
        Kept::Newest { rank: 1, until } => match until {
            Some(u) => format!("as the newest closure (and by age until {})", utc(u)),
            None => "as the newest closure (always kept)".into(),
        },
        Kept::Newest { rank, until } => match until {
            Some(u) => format!(
                "as closure #{rank} of the newest (and by age until {})",
                utc(u)
            ),
            None => format!("as closure #{rank} of the newest, until newer ones push it out"),
        },
        Kept::Recent { until, .. } => format!("until {}", utc(until)),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Follow the store and root ssh-ng arrivals, until killed (or once).
pub fn keep(cli: &Cli, args: &KeepArgs) -> Result<ExitCode> {
    let (dir, policies) = policies(cli, &args.retention)?;
    if args.source.is_empty() || args.source.contains('/') || args.source.starts_with('.') {
        return Err(SyncError::Usage(format!(
            "--source {:?}: give a plain directory name such as `ssh`",
            args.source
        )));
    }
    let mut keeper = Keeper::open(KeepConfig {
        local: LocalStore::new(&cli.store_root),
        gc_root_dir: dir.clone(),
        retention: policies.for_source(&args.source),
        source: args.source.clone(),
        settle: Duration::from_secs(args.settle_secs),
        from_start: args.from_start,
        prune_every: Duration::from_secs(args.prune_interval_secs),
    })?;
    tracing::info!(gc_root_dir = %dir.display(), source = %args.source, "rooting arrivals");
    loop {
        match keeper.step() {
            Ok(report) if !report.rooted.is_empty() || !report.removed.is_empty() => {
                tracing::info!(
                    rooted = report.rooted.len(),
                    removed = report.removed.len(),
                    "keep pass"
                )
            }
            Ok(_) => {}
            Err(e) if args.once => return Err(e),
            Err(e) => tracing::error!("keep pass failed, retrying: {e}"),
        }
        if args.once {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(args.poll_interval_ms.max(100)));
    }
}
