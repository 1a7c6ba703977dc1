//! The signatures a narinfo carries: the path's own from the DB, plus
//! larder-signer's, asked over its socket through [`crate::signer_client`]
//! (which caches them per fingerprint). The server holds no key.

use std::sync::Arc;

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
        Ok(extra) => {
            for sig in extra {
                if !sigs.contains(&sig) {
                    sigs.push(sig);
                }
            }
            warm_references(state, client, view, info);
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
