//! NAR plans remembered per store path and NAR hash. Walking a path (an
//! `lstat` per file, a `readdir` per directory) was 12% of the server's CPU
//! when serving NARs (bench/, serve). A valid store path never changes; if
//! it is deleted and built again with the same NAR hash, its layout is the
//! same. The DB is still asked on every request, so a path that is no
//! longer valid is a 404 before its plan is looked at; a file that vanished
//! anyway makes the stream fail, as it would without the cache.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use larder_store::nar::NarPlan;
use larder_store::{Sha256Hash, StorePath};
use lru::LruCache;

/// Plans with more files than this are walked every time: they would take
/// more memory than the walk costs, relatively.
const MAX_FILES_CACHED: usize = 20_000;

pub struct PlanCache {
    plans: Mutex<LruCache<(StorePath, Sha256Hash), NarPlan>>,
}

impl PlanCache {
    pub fn new(entries: NonZeroUsize) -> Self {
        PlanCache {
            plans: Mutex::new(LruCache::new(entries)),
        }
    }

    pub fn get(&self, path: &StorePath, nar_hash: &Sha256Hash) -> Option<NarPlan> {
        let key = (path.clone(), *nar_hash);
        self.lock().get(&key).cloned()
    }

    pub fn put(&self, path: &StorePath, nar_hash: &Sha256Hash, plan: &NarPlan) {
        if plan.file_count() <= MAX_FILES_CACHED {
            self.lock().put((path.clone(), *nar_hash), plan.clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<(StorePath, Sha256Hash), NarPlan>> {
        // An LRU has no invariant a panicking holder could break.
        self.plans.lock().unwrap_or_else(|e| e.into_inner())
    }
}
