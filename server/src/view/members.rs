//! Which store paths a rooted view serves, kept current while the server
//! runs.
//!
//! A [`Closure`] is computed off the request path, from the roots on disk
//! ([`super::roots`]) and the store DB's `Refs` table
//! ([`larder_store::db::StoreDb::closure_blocking`]), and swapped in whole
//! ([`Members::current`] hands out an `Arc` under a read lock held for a
//! pointer copy): a request sees the old set or the new one, never half.
//! Requests pay one `HashSet` lookup of the 20-byte hash part.
//!
//! A thread per view polls every [`POLL`]: it reads the roots again and the
//! DB's highest row id (a root whose target was not yet valid becomes
//! valid later, and a new path raises it), and recomputes only when either
//! changed. A path the store's GC deletes disappears from the DB at once,
//! so it is absent whether or not the set still names it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use larder_store::db::StoreDb;
use larder_store::{StorePath, StorePathHash};

use super::roots::RootSpec;

/// How often roots and the DB are looked at.
pub const POLL: Duration = Duration::from_secs(1);

/// The paths of a view at one moment.
#[derive(Debug, Default)]
pub struct Closure {
    /// Hash parts of every path in the closure of the roots.
    pub paths: HashSet<StorePathHash>,
    /// Hash parts of those paths' derivers: whose build logs the view may
    /// serve.
    pub derivers: HashSet<StorePathHash>,
}

/// What a closure was computed from; recomputed when it changes.
#[derive(Debug, PartialEq, Eq)]
struct Inputs {
    roots: Vec<StorePath>,
    max_row_id: i64,
}

/// A rooted view's current closure, and how to recompute it.
pub struct Members {
    view: String,
    spec: RootSpec,
    include_drvs: bool,
    current: RwLock<Arc<Closure>>,
    /// What `current` was computed from (the watcher's last look).
    last: Mutex<Inputs>,
}

/// Whether `path` is a derivation (`.drv`).
pub fn is_drv(path: &StorePath) -> bool {
    path.name().ends_with(".drv")
}

impl Members {
    /// Compute the first closure (blocking: call at startup).
    ///
    /// # Errors
    /// The DB's error, as a sentence naming the view.
    pub fn new(
        view: &str,
        spec: RootSpec,
        include_drvs: bool,
        db: &StoreDb,
    ) -> Result<Arc<Members>, String> {
        let members = Arc::new(Members {
            view: view.to_owned(),
            spec,
            include_drvs,
            current: RwLock::new(Arc::new(Closure::default())),
            last: Mutex::new(Inputs {
                roots: Vec::new(),
                max_row_id: -1,
            }),
        });
        let inputs = members.inputs(db)?;
        members.recompute(db, &inputs)?;
        *members.last.lock().unwrap_or_else(|e| e.into_inner()) = inputs;
        Ok(members)
    }

    /// The closure in use now.
    pub fn current(&self) -> Arc<Closure> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn inputs(&self, db: &StoreDb) -> Result<Inputs, String> {
        let max_row_id = db
            .max_row_id_blocking()
            .map_err(|e| format!("view {}: {e}", self.view))?;
        Ok(Inputs {
            roots: self.spec.resolve(),
            max_row_id,
        })
    }

    /// Compute the closure of `inputs` and swap it in; its size and the
    /// time it took.
    fn recompute(&self, db: &StoreDb, inputs: &Inputs) -> Result<(usize, Duration), String> {
        let start = Instant::now();
        let include_drvs = self.include_drvs;
        let follow = move |p: &StorePath| include_drvs || !is_drv(p);
        let entries = db
            .closure_blocking(&inputs.roots, &follow)
            .map_err(|e| format!("view {}: closure: {e}", self.view))?;
        let mut closure = Closure {
            paths: HashSet::with_capacity(entries.len()),
            derivers: HashSet::new(),
        };
        for (path, deriver) in entries {
            closure.paths.insert(*path.hash());
            if let Some(d) = deriver {
                closure.derivers.insert(*d.hash());
            }
        }
        let size = closure.paths.len();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(closure);
        Ok((size, start.elapsed()))
    }

    /// Poll forever on a thread of its own (see the module docs);
    /// `on_change` gets the new size and the time the recomputation took.
    pub fn watch(
        self: Arc<Self>,
        db: StoreDb,
        on_change: impl Fn(usize, Duration) + Send + 'static,
    ) -> std::io::Result<()> {
        let name = format!("larder-view-{}", self.view);
        std::thread::Builder::new().name(name).spawn(move || {
            loop {
                std::thread::sleep(POLL);
                let inputs = match self.inputs(&db) {
                    Ok(i) => i,
                    Err(e) => {
                        tracing::warn!(error = %e, "view roots not checked");
                        continue;
                    }
                };
                let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
                if inputs == *last {
                    continue;
                }
                match self.recompute(&db, &inputs) {
                    Ok((size, took)) => {
                        tracing::info!(view = %self.view, roots = inputs.roots.len(), paths = size, ms = took.as_millis() as u64, "view recomputed");
                        on_change(size, took);
                        *last = inputs;
                    }
                    Err(e) => tracing::warn!(error = %e, "view not recomputed; keeping the last set"),
                }
            }
        })?;
        Ok(())
    }
}
