//! Finding a valid store path by the hash part of a request's URL: the
//! hash is validated, then the store DB is asked in place on a connection
//! that never waits for a lock, else on a DB thread; for narinfo and
//! listings, the short-lived [`crate::path_info_memo`] first.

use std::sync::Arc;
use std::time::Instant;

use larder_store::StorePathHash;
use larder_store::db::PathInfo;

use crate::error::ServerError;
use crate::path_info_memo::Answer;
use crate::state::AppState;
use crate::view::View;

/// The valid path of `view` whose hash part is `hash`, asking the DB. A
/// malformed hash is a miss like an absent one, and so is a path outside
/// the view (asked before the DB, so that both cost the same): clients
/// treat all three as "not in this cache".
pub async fn by_hash(
    state: &AppState,
    view: &View,
    hash: &str,
) -> Result<Arc<PathInfo>, ServerError> {
    let parsed = parse_hash(hash)?;
    admitted_hash(view, &parsed)?;
    admitted(view, found(hash, query(state, &parsed).await?)?)
}

/// [`by_hash`] through the short-lived memo (for narinfo and
/// listings; see `path_info_memo.rs`).
pub async fn by_hash_memo(
    state: &AppState,
    view: &View,
    hash: &str,
) -> Result<Arc<PathInfo>, ServerError> {
    let parsed = parse_hash(hash)?;
    admitted_hash(view, &parsed)?;
    if let Some(answer) = state.path_info_memo.get(&parsed) {
        state.metrics.memo_hits.inc();
        return admitted(view, found(hash, answer)?);
    }
    let answer = query(state, &parsed).await?;
    state.path_info_memo.put(parsed, answer.clone());
    admitted(view, found(hash, answer)?)
}

fn admitted_hash(view: &View, hash: &StorePathHash) -> Result<(), ServerError> {
    if view.admits_hash(hash) {
        Ok(())
    } else {
        Err(ServerError::NotFound(format!(
            "{hash} is not in view {}",
            view.name
        )))
    }
}

fn admitted(view: &View, info: Arc<PathInfo>) -> Result<Arc<PathInfo>, ServerError> {
    if view.admits(&info.path) {
        Ok(info)
    } else {
        Err(ServerError::NotFound(format!(
            "{} is not served by view {}",
            info.path, view.name
        )))
    }
}

async fn query(state: &AppState, hash: &StorePathHash) -> Result<Answer, ServerError> {
    let start = Instant::now();
    // In place when that cannot wait on Nix (`StoreDb::path_info_now`):
    // the hop to a DB thread was most of a narinfo's time.
    let info = match state.db.path_info_now(hash) {
        Some(info) => info,
        None => state.db.path_info(hash).await,
    };
    state
        .metrics
        .db_query
        .observe(start.elapsed().as_secs_f64());
    Ok(info?.map(Arc::new))
}

fn parse_hash(hash: &str) -> Result<StorePathHash, ServerError> {
    hash.parse()
        .map_err(|e| ServerError::NotFound(format!("malformed hash part {hash:?}: {e}")))
}

fn found(hash: &str, answer: Answer) -> Result<Arc<PathInfo>, ServerError> {
    answer.ok_or_else(|| ServerError::NotFound(format!("no valid path with hash {hash}")))
}
