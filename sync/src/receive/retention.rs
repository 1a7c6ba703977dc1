//! Retention of what the receiver roots: its own `receive-<pusher>`
//! sources under `--gc-root-dir`, pruned by the shared policy code
//! ([`crate::retention`]) once at startup and then every
//! `--prune-interval-secs`, on a blocking thread. Only roots older than
//! `--settle-secs` count (see [`crate::retention::prune_settled`]): a push
//! arrives path by path, references first.
//!
//! Why the receiver and not a root timer running `larder-sync roots
//! --prune`: its roots are its own (it creates them as its user), the
//! policy lives in the same config as the tokens it applies to, and no
//! second service with write access to every source is needed.

use std::path::Path;
use std::time::Duration;

use larder_store::db::StoreDb;

use crate::error::{Result, SyncError};
use crate::retention::{self, Closures, Policies};

/// The prefix of a pusher's source directory.
pub const SOURCE_PREFIX: &str = "receive-";

/// How the receiver keeps its roots.
#[derive(Debug, Clone, Default)]
pub struct ReceiveRetention {
    pub policies: Policies,
    /// Pruning runs this often.
    pub interval: Duration,
    /// Roots younger than this are left alone.
    pub settle: Duration,
}

impl ReceiveRetention {
    /// Whether any policy is set; without one every root is kept and
    /// pruning is skipped.
    pub fn is_active(&self) -> bool {
        let any = |r: crate::gcroots::Retention| r.keep_last.is_some() || r.max_age.is_some();
        any(self.policies.default) || self.policies.per_source.values().copied().any(any)
    }

    /// Every `--policy` names one of this receiver's pushers' sources.
    pub fn check_sources<'a>(
        &self,
        mut pushers: impl Iterator<Item = &'a str> + Clone,
    ) -> Result<()> {
        for source in self.policies.per_source.keys() {
            let known = source
                .strip_prefix(SOURCE_PREFIX)
                .is_some_and(|name| pushers.clone().any(|p| p == name));
            if !known {
                let names: Vec<&str> = pushers.by_ref().collect();
                return Err(SyncError::Usage(format!(
                    "--policy {source}=…: the receiver keeps only receive-<pusher> sources of its \
                     tokens file (pushers: {}); name one of them",
                    names.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// One pass over every `receive-*` source; returns how many roots went.
    /// Blocking (SQLite, the filesystem).
    pub fn prune(&self, db: &StoreDb, gc_root_dir: &Path) -> Result<usize> {
        let mut closures = Closures::new(db.clone());
        let mut removed = 0;
        for source in retention::sources(gc_root_dir)? {
            if !source.starts_with(SOURCE_PREFIX) {
                continue;
            }
            let policy = self.policies.for_source(&source);
            removed +=
                retention::prune_settled(&mut closures, gc_root_dir, &source, policy, self.settle)?
                    .len();
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_must_name_a_pusher_and_none_means_inactive() {
        let pushers = ["ci", "nightly"];
        let mut keep = ReceiveRetention::default();
        assert!(!keep.is_active());
        keep.policies.add_spec("receive-nightly=last:3").unwrap();
        assert!(keep.is_active());
        keep.check_sources(pushers.iter().copied()).unwrap();
        for bad in ["ci=last:1", "receive-other=days:2", "ssh=last:1"] {
            let mut k = ReceiveRetention::default();
            k.policies.add_spec(bad).unwrap();
            let err = k
                .check_sources(pushers.iter().copied())
                .unwrap_err()
                .to_string();
            assert!(err.contains("pushers: ci, nightly"), "{err}");
        }
    }
}
