//! The signatures a narinfo carries: the path's own from the DB, plus
//! larder-signer's, asked over its socket through [`crate::signer_client`]
//! (which caches them per fingerprint). The server holds no key.
//!
//! Signatures are made ahead, so that a narinfo rarely waits for the
//! signer: [`sign_ahead`] follows the store (the newest paths at start,
//! then each path as it is registered) and signs in batches of one round
//! trip, and each narinfo asked for has its references signed next.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use larder_store::StorePath;
use larder_store::db::PathInfo;
use larder_store::signer_proto::RefusalCode;

use crate::config::SignerDown;
use crate::error::ServerError;
use crate::signer_client::{SignerClient, SignerError};
use crate::state::AppState;
use crate::view::View;

/// The signatures a narinfo carries: the path's own from the DB, plus
/// larder-signer's when one is configured. While the signer is down this
/// is what `--signer-down` says: a 404 (the default), a 503, or the DB's
/// signatures alone (see [`SignerDown`] for what Nix does with each).
/// The signer signs with the keys `view` names (every key when it names
/// none).
pub async fn signatures(
    state: &AppState,
    view: &View,
    info: &PathInfo,
) -> Result<Vec<String>, ServerError> {
    let mut sigs = info.sigs.clone();
    let (Some(client), Some(config)) = (&state.signer_client, &state.config.signer) else {
        return Ok(sigs);
    };
    let fp = info.fingerprint(state.location.store_dir());
    match client.sign(fp, view.keys.as_deref()).await {
        Ok((extra, cached)) => {
            for sig in extra {
                if !sigs.contains(&sig) {
                    sigs.push(sig);
                }
            }
            // A path whose signature was cached had its references signed
            // ahead with it (or by `sign_ahead`): spare the DB reads.
            if !cached {
                warm_references(state, client, view, info);
            }
            Ok(sigs)
        }
        // The path went away between our lookup and the signer's (GC).
        Err(SignerError::Refused(r)) if r.code == RefusalCode::NotInStore => Err(
            ServerError::NotFound(format!("{}: {}", info.path, r.reason)),
        ),
        Err(e) => match config.when_down {
            SignerDown::Unsigned => {
                tracing::warn!(error = %e, path = %info.path, "serving narinfo without the signer's signature");
                Ok(sigs)
            }
            SignerDown::Absent => {
                tracing::warn!(error = %e, path = %info.path, "signer down: narinfo answered as absent");
                Err(ServerError::NotFound(format!("{}: {e}", info.path)))
            }
            SignerDown::Unavailable => Err(ServerError::SignerUnavailable {
                retry_after_secs: config.retry_after_secs,
                detail: e.to_string(),
            }),
        },
    }
}

/// In the background, have the signer sign `info`'s references, which
/// a client copying the closure asks for next.
fn warm_references(state: &AppState, client: &Arc<SignerClient>, view: &View, info: &PathInfo) {
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
    let (db, client, keys) = (state.db.clone(), client.clone(), view.keys.clone());
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
            client.warm(fingerprints, keys.as_deref()).await;
        }
    });
}

/// Paths read from the DB per round of [`sign_ahead`].
const AHEAD_BATCH: usize = 512;

/// Follow the store and have the signer sign each path's fingerprint
/// before a client asks: first the newest paths (as many as the signature
/// cache holds), then every path registered later, polled every
/// `--signer-key-check-secs` (the check of the signer's keys comes first,
/// which also reads back the signatures kept in the cache dir; after a
/// rotation it all starts over). With views,
/// once per set of key names they ask for. Runs until the server stops;
/// a signer that is down is tried again at the next poll.
pub async fn sign_ahead(state: actix_web::web::Data<AppState>) {
    let (Some(client), Some(config)) = (state.signer_client.clone(), state.config.signer.as_ref())
    else {
        return;
    };
    let poll = Duration::from_secs(config.key_check_secs);
    let key_sets: Vec<Option<Vec<String>>> = state
        .views
        .views
        .iter()
        .map(|v| v.keys.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let start = match state.db.max_row_id().await {
        Ok(max) => max.saturating_sub(config.cache_entries.get() as i64),
        Err(e) => {
            tracing::warn!(error = %e, "signing ahead disabled: cannot read the store DB");
            return;
        }
    };
    let (mut after, mut generation) = (start, client.key_generation());
    loop {
        if client.public_keys().await.is_ok() {
            // New keys: every signature is to be made again.
            if client.key_generation() != generation {
                (after, generation) = (start, client.key_generation());
            }
            if let Err(e) = sign_ahead_from(&state, &client, &key_sets, &mut after).await {
                tracing::warn!(error = %e, "signing ahead: cannot read the store DB");
            }
        }
        tokio::time::sleep(poll).await;
    }
}

/// Sign every path registered after row `*after`, moving it to each page's
/// last row as the page is done. A corrupt row is logged and skipped (it
/// would fail the same way at every poll, and no path after it would ever
/// be signed ahead); a DB that cannot be read ends the round, to resume
/// from `*after` at the next poll.
async fn sign_ahead_from(
    state: &AppState,
    client: &Arc<SignerClient>,
    key_sets: &[Option<Vec<String>>],
    after: &mut i64,
) -> Result<(), larder_store::db::DbError> {
    let store_dir = state.location.store_dir().to_owned();
    loop {
        let page = state.db.path_infos_after(*after, AHEAD_BATCH).await?;
        let Some(&(last, _)) = page.last() else {
            return Ok(());
        };
        let fingerprints: Vec<String> = page
            .iter()
            .filter_map(|(row, info)| match info {
                Ok(info) => Some(info.fingerprint(&store_dir)),
                Err(e) => {
                    tracing::warn!(row, error = %e, "signing ahead: corrupt row skipped");
                    None
                }
            })
            .collect();
        for keys in key_sets {
            client.warm(fingerprints.clone(), keys.as_deref()).await;
        }
        *after = last;
    }
}
