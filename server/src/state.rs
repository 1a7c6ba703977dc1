//! What every request handler shares: configuration, the store, metrics.

use std::sync::Arc;
use std::time::Instant;

use larder_store::db::{PathInfo, StoreDb};
use larder_store::signer_proto::RefusalCode;
use larder_store::{StoreLocation, StorePath, StorePathHash};

use crate::compress::ZstdSettings;
use crate::config::{Config, SignerDown};
use crate::error::ServerError;
use crate::metrics::Metrics;
use crate::nar_cache::NarCache;
use crate::path_info_memo::{Answer, PathInfoMemo};
use crate::plan_cache::PlanCache;
use crate::signer_client::{SignerClient, SignerError};

pub struct AppState {
    pub config: Config,
    pub location: StoreLocation,
    pub db: StoreDb,
    pub metrics: Arc<Metrics>,
    /// The compressed-NAR cache, when `cache-dir` is set.
    pub cache: Option<Arc<NarCache>>,
    pub memo: PathInfoMemo,
    /// NAR layouts of recently served paths.
    pub plans: PlanCache,
    /// The client of larder-signer, when `signer-socket` is set.
    pub signer: Option<Arc<SignerClient>>,
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

    /// The signatures a narinfo carries: the path's own from the DB, plus
    /// larder-signer's when one is configured. While the signer is down this
    /// is a 503 (or, if so configured, the DB's signatures alone): never a
    /// narinfo that silently lacks the signature clients expect.
    pub async fn signatures(&self, info: &PathInfo) -> Result<Vec<String>, ServerError> {
        let mut sigs = info.sigs.clone();
        let (Some(client), Some(config)) = (&self.signer, &self.config.signer) else {
            return Ok(sigs);
        };
        let fp = info.fingerprint(self.location.store_dir());
        match client.sign(fp).await {
            Ok(extra) => {
                for sig in extra {
                    if !sigs.contains(&sig) {
                        sigs.push(sig);
                    }
                }
                self.warm_references(client, info);
                Ok(sigs)
            }
            // The path went away between our lookup and the signer's (GC).
            Err(SignerError::Refused(r)) if r.code == RefusalCode::NotInStore => Err(
                ServerError::NotFound(format!("{}: {}", info.path, r.reason)),
            ),
            Err(e) if config.when_down == SignerDown::Unsigned => {
                tracing::warn!(error = %e, path = %info.path, "serving narinfo without the signer's signature");
                Ok(sigs)
            }
            Err(e) => Err(ServerError::SignerUnavailable {
                retry_after_secs: config.retry_after_secs,
                detail: e.to_string(),
            }),
        }
    }

    /// In the background, have the signer sign `info`'s references, which
    /// a client copying the closure asks for next.
    fn warm_references(&self, client: &Arc<SignerClient>, info: &PathInfo) {
        // Per request: decide before allocating anything.
        let mut refs = info
            .references
            .iter()
            .filter(|r| **r != info.path)
            .peekable();
        if refs.peek().is_none() {
            return;
        }
        let Some(permit) = client.warm_permit() else {
            return;
        };
        let refs: Vec<StorePath> = refs.cloned().collect();
        let (db, client) = (self.db.clone(), client.clone());
        actix_web::rt::spawn(async move {
            let _permit = permit;
            let lookup = tokio::task::spawn_blocking(move || {
                let store_dir = db.location().store_dir().to_owned();
                refs.iter()
                    .filter_map(|r| db.path_info_by_path_blocking(r).ok().flatten())
                    .map(|i| i.fingerprint(&store_dir))
                    .collect::<Vec<String>>()
            });
            if let Ok(fingerprints) = lookup.await {
                client.warm(fingerprints).await;
            }
        });
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
