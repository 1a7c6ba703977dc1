//! Retention over larder's GC roots on the cache host, for every source.
//!
//! Layout: `<gc-root-dir>/<source>/<root>`, one directory per source
//! (`receive-<token name>` for `larder-sync receive`, the builder name for
//! `pull`/`daemon`, `ssh` for `larder-sync keep`), each entry a symlink to a
//! store path. A symlink's mtime is when that root last arrived (a re-push
//! touches it). Removing a symlink unroots it; the store's own GC then
//! reclaims what nothing else keeps.
//!
//! **Distinct closures.** A source may root one closure with many links
//! (`receive` roots every arrived path by its basename; a daemon re-roots
//! an unchanged profile). Roots are grouped by closure using the store
//! DB's `Refs` (read-only): a root whose path lies in the closure of
//! another root's path of the same source is not a closure of its own, it
//! belongs to that root's group. The groups' *top* paths are the distinct
//! closures; a group's time is the newest arrival among its members.
//! `keep_last = N` keeps the N newest groups, `max_age` every group whose
//! time is within it, and the newest group is always kept. A root is kept
//! when any group it belongs to is kept. An older root pointing to the same
//! path as a newer root of the same source adds nothing and is removed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use larder_store::StoreLocation;
use larder_store::db::StoreDb;

use crate::error::{Result, SyncError};
use crate::gcroots::Retention;

/// One GC root: a symlink in a source directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    /// The source directory's name (token, builder, `ssh`).
    pub source: String,
    pub link: PathBuf,
    /// The store path the link points to, as clients see it (`/nix/store/…`).
    pub target: String,
    /// The link's mtime: when it last arrived.
    pub arrived: SystemTime,
}

/// Why a root is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// The source has no policy: kept until removed by hand.
    NoPolicy,
    /// Its closure is the `rank`-th newest (1 = newest, always kept) of
    /// the source and within `keep_last`; `until` is set when an age limit
    /// keeps it at least that long as well.
    Newest {
        rank: usize,
        until: Option<SystemTime>,
    },
    /// Its closure arrived within `max_age`: kept until then.
    Recent { rank: usize, until: SystemTime },
}

/// A root and what retention decides about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub root: Root,
    /// The top path of the (newest) closure group holding this root.
    pub closure: String,
    /// `None`: outside retention, to be removed.
    pub kept: Option<Kept>,
}

/// Retention per source: a default and named exceptions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policies {
    pub default: Retention,
    pub per_source: HashMap<String, Retention>,
}

impl Policies {
    pub fn for_source(&self, source: &str) -> Retention {
        self.per_source.get(source).copied().unwrap_or(self.default)
    }

    /// Parse `SOURCE=last:N,days:D` (either part optional) into an exception.
    pub fn add_spec(&mut self, spec: &str) -> Result<()> {
        let bad = || {
            SyncError::Usage(format!(
                "bad --policy {spec:?}: expected SOURCE=last:N,days:D (e.g. receive-ci=last:5,days:14)"
            ))
        };
        let (source, rules) = spec.split_once('=').ok_or_else(bad)?;
        if source.is_empty() {
            return Err(bad());
        }
        let mut retention = Retention::default();
        for rule in rules.split(',').filter(|r| !r.is_empty()) {
            let (key, value) = rule.split_once(':').ok_or_else(bad)?;
            let n: u64 = value.parse().map_err(|_| bad())?;
            match key {
                "last" => retention.keep_last = Some(usize::try_from(n).map_err(|_| bad())?),
                "days" => retention.max_age = Some(days(n)),
                _ => return Err(bad()),
            }
        }
        self.per_source.insert(source.to_owned(), retention);
        Ok(())
    }
}

/// `n` days as a duration.
pub fn days(n: u64) -> Duration {
    Duration::from_secs(n.saturating_mul(86_400))
}

/// The default GC-root directory of a store: `<root>/nix/var/nix/gcroots/larder`.
pub fn default_gc_root_dir(location: &StoreLocation) -> PathBuf {
    location.state_dir().join("gcroots/larder")
}

/// Closures of store paths, read from the store DB (read-only) with the
/// references of each path remembered for the life of this value.
pub struct Closures {
    db: StoreDb,
    refs: HashMap<String, Vec<String>>,
}

impl Closures {
    pub fn open(location: &StoreLocation) -> Result<Closures> {
        Ok(Closures::new(StoreDb::open(location)?))
    }

    pub fn new(db: StoreDb) -> Closures {
        Closures {
            db,
            refs: HashMap::new(),
        }
    }

    /// The references of `path`; none for a path that is not valid.
    fn refs(&mut self, path: &str) -> Result<&[String]> {
        if !self.refs.contains_key(path) {
            let location = self.db.location();
            let refs = match location.parse_path(path) {
                Ok(sp) => self
                    .db
                    .path_info_by_path_blocking(&sp)?
                    .map(|info| {
                        info.references
                            .iter()
                            .map(|r| location.display_path(r))
                            .collect()
                    })
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            self.refs.insert(path.to_owned(), refs);
        }
        Ok(&self.refs[path])
    }

    /// The paths reachable from any of `starts` through at least one
    /// reference (self-references aside): a start in this set lies in the
    /// closure of another start. One walk over the union of the closures.
    pub fn reached_through_references(&mut self, starts: &[&str]) -> Result<HashSet<String>> {
        let mut reached = HashSet::new();
        let mut todo: Vec<String> = starts.iter().map(|s| (*s).to_owned()).collect();
        while let Some(p) = todo.pop() {
            for r in self.refs(&p)?.to_vec() {
                if r != p && reached.insert(r.clone()) {
                    todo.push(r);
                }
            }
        }
        Ok(reached)
    }

    /// Every path reachable from `path` through references, itself included.
    pub fn closure(&mut self, path: &str) -> Result<HashSet<String>> {
        let mut seen = HashSet::from([path.to_owned()]);
        let mut todo = vec![path.to_owned()];
        while let Some(p) = todo.pop() {
            for r in self.refs(&p)?.to_vec() {
                if seen.insert(r.clone()) {
                    todo.push(r);
                }
            }
        }
        Ok(seen)
    }
}

/// The sources (subdirectories) of `gc_root_dir`, sorted; none if it does
/// not exist yet.
pub fn sources(gc_root_dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(gc_root_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(io_err(gc_root_dir, source)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_err(gc_root_dir, e))?;
        let is_dir = entry
            .file_type()
            .map_err(|e| io_err(&entry.path(), e))?
            .is_dir();
        if is_dir {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The roots (symlinks) of one source directory; none if it does not exist.
pub fn roots_of(gc_root_dir: &Path, source: &str) -> Result<Vec<Root>> {
    let dir = gc_root_dir.join(source);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&dir, e)),
    };
    let mut roots = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_err(&dir, e))?;
        if crate::gcroots::is_temporary(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let link = entry.path();
        // A root renewed or removed meanwhile (renamed over, or aside) may
        // be gone between the listing and this look.
        let Some(meta) = unless_gone(&link, std::fs::symlink_metadata(&link))? else {
            continue;
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        let Some(target) = unless_gone(&link, std::fs::read_link(&link))? else {
            continue;
        };
        roots.push(Root {
            source: source.to_owned(),
            arrived: meta.modified().map_err(|e| io_err(&link, e))?,
            target: target.to_string_lossy().into_owned(),
            link,
        });
    }
    roots.sort_by(|a, b| a.link.cmp(&b.link));
    Ok(roots)
}

/// Put back the roots of `source` that a process killed mid-move left
/// under a temporary name ([`crate::gcroots::recover_temporaries`]), so
/// that retention sees them again; every pass does it first.
pub fn recover_source(gc_root_dir: &Path, source: &str, at_startup: bool) -> Result<()> {
    let dir = gc_root_dir.join(source);
    let taken =
        crate::gcroots::recover_temporaries(&dir, at_startup).map_err(|e| io_err(&dir, e))?;
    for tmp in taken {
        tracing::info!(temporary = %tmp.display(), source, "put back a root left by an interrupted move");
    }
    Ok(())
}

/// `result` of looking at `path`, or None if `path` is gone.
fn unless_gone<T>(path: &Path, result: std::io::Result<T>) -> Result<Option<T>> {
    match result {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

/// What `retention` decides for every root of `source`, sorted by link.
pub fn plan_source(
    closures: &mut Closures,
    gc_root_dir: &Path,
    source: &str,
    retention: Retention,
    now: SystemTime,
) -> Result<Vec<Decision>> {
    plan_roots(closures, roots_of(gc_root_dir, source)?, retention, now)
}

/// What `retention` decides for `roots` (all of one source), in their order.
pub fn plan_roots(
    closures: &mut Closures,
    roots: Vec<Root>,
    retention: Retention,
    now: SystemTime,
) -> Result<Vec<Decision>> {
    let mut by_target: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, root) in roots.iter().enumerate() {
        by_target.entry(root.target.as_str()).or_default().push(i);
    }
    let targets: Vec<&str> = by_target.keys().copied().collect();
    let reached = closures.reached_through_references(&targets)?;
    let mut tops: Vec<&str> = targets
        .iter()
        .copied()
        .filter(|t| !reached.contains(*t))
        .collect();
    tops.sort_unstable();
    // (time, top, members) per group; one closure walk per top only.
    let mut groups: Vec<(SystemTime, &str, Vec<usize>)> = Vec::new();
    for top in tops {
        let members: Vec<usize> = closures
            .closure(top)?
            .iter()
            .filter_map(|p| by_target.get(p.as_str()))
            .flatten()
            .copied()
            .collect();
        let time = members
            .iter()
            .map(|&i| roots[i].arrived)
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH);
        groups.push((time, top, members));
    }
    groups.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let has_policy = retention.keep_last.is_some() || retention.max_age.is_some();
    let mut decisions: Vec<Decision> = roots
        .iter()
        .map(|root| Decision {
            root: root.clone(),
            closure: root.target.clone(),
            kept: None,
        })
        .collect();
    // Walk groups oldest first so each root ends up with its newest group.
    for (index, (time, top, members)) in groups.iter().enumerate().rev() {
        let rank = index + 1;
        let until = retention.max_age.map(|age| *time + age);
        let in_last = rank == 1 || retention.keep_last.is_some_and(|n| rank <= n);
        let recent = until.is_some_and(|u| u >= now);
        let kept = if !has_policy {
            Some(Kept::NoPolicy)
        } else if in_last {
            Some(Kept::Newest {
                rank,
                until: until.filter(|u| *u >= now),
            })
        } else if recent {
            until.map(|until| Kept::Recent { rank, until })
        } else {
            None
        };
        for &i in members {
            decisions[i].closure = (*top).to_owned();
            if kept.is_some() {
                decisions[i].kept = kept;
            }
        }
    }
    if has_policy {
        drop_redundant(&mut decisions);
    }
    Ok(decisions)
}

/// An older root of a path that a newer root of the same source also
/// points to keeps nothing the newer one does not.
fn drop_redundant(decisions: &mut [Decision]) {
    let mut newest: HashMap<&str, (SystemTime, &Path)> = HashMap::new();
    for d in decisions.iter() {
        let key = (d.root.arrived, d.root.link.as_path());
        newest
            .entry(d.root.target.as_str())
            .and_modify(|n| *n = (*n).max(key))
            .or_insert(key);
    }
    let newest: HashMap<String, PathBuf> = newest
        .into_iter()
        .map(|(t, (_, link))| (t.to_owned(), link.to_owned()))
        .collect();
    for d in decisions.iter_mut() {
        if newest[&d.root.target] != d.root.link {
            d.kept = None;
        }
    }
}

/// Remove the roots of `source` that `retention` no longer keeps; returns them.
pub fn prune_source(
    closures: &mut Closures,
    gc_root_dir: &Path,
    source: &str,
    retention: Retention,
) -> Result<Vec<PathBuf>> {
    prune_settled(closures, gc_root_dir, source, retention, Duration::ZERO)
}

/// [`prune_source`], counting only roots that arrived at least `settle`
/// ago: younger ones are neither ranked nor removed. For a source rooted
/// path by path (`receive`), a push in progress is not yet one closure:
/// its references arrive first, each looking like a closure of its own,
/// and would push older closures out of `keep_last` (or lose their own
/// roots) before the top path arrives and joins them into one.
pub fn prune_settled(
    closures: &mut Closures,
    gc_root_dir: &Path,
    source: &str,
    retention: Retention,
    settle: Duration,
) -> Result<Vec<PathBuf>> {
    recover_source(gc_root_dir, source, false)?;
    let now = SystemTime::now();
    let settled: Vec<Root> = roots_of(gc_root_dir, source)?
        .into_iter()
        .filter(|r| r.arrived + settle <= now)
        .collect();
    let plan = plan_roots(closures, settled, retention, now)?;
    remove_unkept(plan, source)
}

/// Remove the roots `plan` keeps not, unless one arrived again since it
/// was planned: ranking walks every closure in SQLite (seconds for
/// thousands of roots), and meanwhile a push or a receiver's narinfo 200
/// renews a link's mtime, with the pusher told the path is kept. Such a
/// link is left for the next pass ([`gcroots::remove_unless_renewed`]).
fn remove_unkept(plan: Vec<Decision>, source: &str) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for d in plan.into_iter().filter(|d| d.kept.is_none()) {
        let gone = crate::gcroots::remove_unless_renewed(&d.root.link, d.root.arrived)
            .map_err(|e| io_err(&d.root.link, e))?;
        if !gone {
            tracing::debug!(root = %d.root.link.display(), source, "arrived again while pruning (or gone): kept");
            continue;
        }
        tracing::info!(root = %d.root.link.display(), source, "removed GC root (retention)");
        removed.push(d.root.link);
    }
    Ok(removed)
}

/// Prune every source of `gc_root_dir` by its policy; returns what went.
pub fn prune_all(
    location: &StoreLocation,
    gc_root_dir: &Path,
    policies: &Policies,
) -> Result<Vec<PathBuf>> {
    let mut closures = Closures::open(location)?;
    let mut removed = Vec::new();
    for source in sources(gc_root_dir)? {
        let retention = policies.for_source(&source);
        removed.extend(prune_source(
            &mut closures,
            gc_root_dir,
            &source,
            retention,
        )?);
    }
    Ok(removed)
}

fn io_err(path: &Path, source: std::io::Error) -> SyncError {
    SyncError::GcRoot {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_specs_parse_and_bad_ones_are_named() {
        let mut p = Policies::default();
        p.add_spec("receive-ci=last:5,days:14").unwrap();
        p.add_spec("ssh=days:1").unwrap();
        assert_eq!(
            p.for_source("receive-ci"),
            Retention {
                keep_last: Some(5),
                max_age: Some(days(14))
            }
        );
        assert_eq!(p.for_source("ssh").keep_last, None);
        assert_eq!(p.for_source("other"), Retention::default());
        for bad in ["noequals", "=last:1", "x=last:z", "x=weeks:2"] {
            let err = p.add_spec(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn a_root_renewed_after_planning_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("receive-ci");
        std::fs::create_dir(&src).unwrap();
        let old = SystemTime::now() - Duration::from_secs(40 * 86400);
        let mut plan = Vec::new();
        for name in ["renewed", "stale"] {
            let link = src.join(name);
            std::os::unix::fs::symlink(format!("/nix/store/{name}"), &link).unwrap();
            // Plan with the link's mtime as it was then.
            let arrived = std::fs::symlink_metadata(&link)
                .unwrap()
                .modified()
                .unwrap();
            plan.push(Decision {
                root: Root {
                    source: "receive-ci".into(),
                    link,
                    target: format!("/nix/store/{name}"),
                    arrived: if name == "renewed" { old } else { arrived },
                },
                closure: name.into(),
                kept: None,
            });
        }
        // "renewed" was planned at an old mtime and has a fresh one now.
        let removed = remove_unkept(plan, "receive-ci").unwrap();
        assert_eq!(removed, [src.join("stale")]);
        assert!(std::fs::symlink_metadata(src.join("renewed")).is_ok());
        assert!(std::fs::symlink_metadata(src.join("stale")).is_err());
    }
}
