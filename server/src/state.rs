//! What every request handler shares: configuration, the store, metrics.

use std::sync::Arc;
use std::time::Instant;

use larder_store::db::{PathInfo, StoreDb};
use larder_store::{StoreLocation, StorePathHash};

use crate::compress::ZstdSettings;
use crate::config::Config;
use crate::error::ServerError;
use crate::metrics::Metrics;
use crate::nar_cache::NarCache;

pub struct AppState {
    pub config: Config,
    pub location: StoreLocation,
    pub db: StoreDb,
    pub metrics: Arc<Metrics>,
    /// The compressed-NAR cache, when `cache-dir` is set.
    pub cache: Option<Arc<NarCache>>,
}

impl AppState {
    /// The valid path whose hash part is `hash`. A malformed hash is a miss
    /// like an absent one: clients treat both as "not in this cache".
    pub async fn lookup(&self, hash: &str) -> Result<PathInfo, ServerError> {
        let parsed: StorePathHash = hash
            .parse()
            .map_err(|e| ServerError::NotFound(format!("malformed hash part {hash:?}: {e}")))?;
        let start = Instant::now();
        let info = self.db.path_info(&parsed).await;
        self.metrics.db_query.observe(start.elapsed().as_secs_f64());
        info?.ok_or_else(|| ServerError::NotFound(format!("no valid path with hash {hash}")))
    }

    /// The signatures a narinfo carries. Today: the path's own from the DB.
    /// This is the seam where larder-signer's signatures will be added.
    pub async fn signatures(&self, info: &PathInfo) -> Vec<String> {
        info.sigs.clone()
    }

    pub fn zstd(&self) -> ZstdSettings {
        ZstdSettings {
            level: self.config.zstd_level,
            threads: self.config.zstd_threads,
        }
    }
}
