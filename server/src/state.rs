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
use crate::path_info_memo::{Answer, PathInfoMemo};

pub struct AppState {
    pub config: Config,
    pub location: StoreLocation,
    pub db: StoreDb,
    pub metrics: Arc<Metrics>,
    /// The compressed-NAR cache, when `cache-dir` is set.
    pub cache: Option<Arc<NarCache>>,
    pub memo: PathInfoMemo,
}

impl AppState {
    /// The valid path whose hash part is `hash`, asking the DB. A malformed
    /// hash is a miss like an absent one: clients treat both as "not in
    /// this cache".
    pub async fn lookup(&self, hash: &str) -> Result<Arc<PathInfo>, ServerError> {
        let parsed = parse_hash(hash)?;
        found(hash, self.query(&parsed).await?)
    }

    /// [`AppState::lookup`] through the short-lived memo (for narinfo and
    /// listings; see `path_info_memo.rs`).
    pub async fn lookup_memo(&self, hash: &str) -> Result<Arc<PathInfo>, ServerError> {
        let parsed = parse_hash(hash)?;
        if let Some(answer) = self.memo.get(&parsed) {
            self.metrics.memo_hits.inc();
            return found(hash, answer);
        }
        let answer = self.query(&parsed).await?;
        self.memo.put(parsed, answer.clone());
        found(hash, answer)
    }

    async fn query(&self, hash: &StorePathHash) -> Result<Answer, ServerError> {
        let start = Instant::now();
        let info = self.db.path_info(hash).await;
        self.metrics.db_query.observe(start.elapsed().as_secs_f64());
        Ok(info?.map(Arc::new))
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

fn parse_hash(hash: &str) -> Result<StorePathHash, ServerError> {
    hash.parse()
        .map_err(|e| ServerError::NotFound(format!("malformed hash part {hash:?}: {e}")))
}

fn found(hash: &str, answer: Answer) -> Result<Arc<PathInfo>, ServerError> {
    answer.ok_or_else(|| ServerError::NotFound(format!("no valid path with hash {hash}")))
}
