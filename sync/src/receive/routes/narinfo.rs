//! `/<hash>.narinfo`: GET/HEAD answer from the host store's DB (Nix asks
//! before uploading: 200 means "already there", and Nix then uploads
//! nothing for that path), so a 200 roots the path for the asking pusher
//! first, as an arrival; PUT is the last step of an upload: check it (see
//! `intake`), root the path, import it.

use std::time::Instant;

use actix_web::{HttpResponse, web};
use larder_store::db::PathInfo;
use larder_store::narinfo::NarInfo;

use super::body::read_bounded;
use crate::receive::auth::Pusher;
use crate::receive::ca;
use crate::receive::error::{ReceiveError, ReceiveResult};
use crate::receive::import::import;
use crate::receive::intake::{self, MAX_NARINFO_BYTES};
use crate::receive::root::root_arrival;
use crate::receive::state::ReceiveState;
use crate::receive::trust::check_signatures;

/// GET or HEAD: the path's narinfo, once the path is rooted for `pusher`.
///
/// `nix copy --to` takes a 200 as "already there" and uploads nothing for
/// the path, so the 200 must keep it as an upload would: the path may be
/// valid on the host but kept by no root (built or substituted there,
/// pushed by a pusher whose retention has dropped it, or pushed by this
/// one long ago: the renewed mtime makes it a fresh arrival for
/// retention). Every valid path is rooted, `.drv`s included, as a PUT of
/// it would be. A root that cannot be made is a 500, never a 200.
pub async fn get(
    state: &web::Data<ReceiveState>,
    pusher: &Pusher,
    hash: &str,
) -> ReceiveResult<HttpResponse> {
    let hash = intake::url_hash(hash).map_err(|_| ReceiveError::NotFound)?;
    let info = state
        .db
        .path_info(&hash)
        .await
        .map_err(|e| ReceiveError::store_db(&e))?
        .ok_or(ReceiveError::NotFound)?;
    let state2 = state.clone();
    let pusher = pusher.clone();
    let path = info.path.clone();
    let kept = web::block(move || root_valid(&state2, &pusher, &path))
        .await
        .map_err(|e| ReceiveError::Internal(format!("root worker failed: {e}")))??;
    if !kept {
        return Err(ReceiveError::NotFound);
    }
    Ok(HttpResponse::Ok()
        .content_type("text/x-nix-narinfo")
        .body(narinfo(state, info).to_string()))
}

/// Root `path` (valid a moment ago) for `pusher` and count it as already
/// there; false (and no root left that this call made) when it is no
/// longer valid. Blocking (filesystem, nix-daemon, SQLite).
///
/// The order closes the race with a GC that runs meanwhile: Nix's GC
/// reads the permanent roots once, when it starts, so a link made during
/// a GC protects nothing until the next one. Hence link, then a temporary
/// root through nix-daemon (which a running GC learns of before it
/// answers), then the validity check: a path valid after both stays
/// valid. Without the temporary root, 39 of 60 narinfo 200s answered
/// during `nix-store --gc` were for paths that GC then deleted, leaving
/// the root dangling and the pusher believing the path was kept.
fn root_valid(
    state: &ReceiveState,
    pusher: &Pusher,
    path: &larder_store::StorePath,
) -> ReceiveResult<bool> {
    let store_dir = state.location.store_dir();
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        tracing::error!(
            pusher = pusher.name,
            "{what} for {store_dir}/{path} (already in the store) under {}: {e}",
            state.gc_root_dir.display()
        );
        ReceiveError::Internal("cannot create the GC root".into())
    };
    let root = root_arrival(&state.gc_root_dir, &pusher.name, store_dir, path)
        .map_err(|e| fail("GC root", &e))?;
    if let Err(e) = state.daemons.add_temp_root(&format!("{store_dir}/{path}")) {
        root.undo();
        return Err(fail("GC root (nix-daemon's temporary root)", &e));
    }
    if intake::valid_nar_hash(&state.db, path)?.is_none() {
        root.undo();
        return Ok(false);
    }
    count_already_there(state, pusher);
    tracing::debug!(pusher = pusher.name, "rooted {path}: already in the store");
    Ok(true)
}

/// The receiver's answer to "is this path there?": the narinfo fields
/// Nix 2.8 requires (`StorePath`, `URL`, `NarHash`, a non-zero `NarSize`;
/// `nar-info.cc` refuses a narinfo without them), and nothing else.
///
/// `nix copy --to` reads a 200 back only to skip the upload; it never uses
/// the destination's references, deriver, signatures or CA. Leaving them
/// out (an empty `References:` line, which Nix reads as none) keeps a push
/// token, which may ask for any hash, from reading the closure of paths
/// only a private view of larder-server serves.
fn narinfo(state: &ReceiveState, info: PathInfo) -> NarInfo {
    NarInfo {
        store_dir: state.location.store_dir().to_owned(),
        store_path: info.path.clone(),
        url: format!("nar/{}.nar", info.nar_hash.to_nix32()),
        compression: "none".into(),
        file_hash: None,
        file_size: None,
        nar_hash: info.nar_hash,
        nar_size: info.nar_size,
        references: Vec::new(),
        deriver: None,
        sigs: Vec::new(),
        ca: None,
    }
}

pub async fn put(
    req: &actix_web::HttpRequest,
    state: &web::Data<ReceiveState>,
    pusher: &Pusher,
    hash: &str,
    body: web::Payload,
) -> ReceiveResult<HttpResponse> {
    let hash = intake::url_hash(hash)?;
    let body = read_bounded(req, body, &state.limits, MAX_NARINFO_BYTES, true, "narinfo").await?;
    let info = match intake::parse(&hash, &body, state.location.store_dir()) {
        Ok(info) => info,
        Err(e) => {
            release_named(state, pusher, &body);
            return Err(e);
        }
    };
    let state2 = state.clone();
    let pusher = pusher.clone();
    let outcome = web::block(move || accept(&state2, &pusher, &info))
        .await
        .map_err(|e| ReceiveError::Internal(format!("import worker failed: {e}")))?;
    state.update_staging_gauge();
    outcome?;
    Ok(HttpResponse::Ok().finish())
}

/// A narinfo refused before it parsed still names the NAR it came for:
/// drop this pusher's claim on it, as a parsed one's refusal does, so that
/// refused narinfos do not keep NARs staged (and fill `--max-staging-mib`)
/// until the sweep.
fn release_named(state: &ReceiveState, pusher: &Pusher, body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    if let Some(url) = text.lines().find_map(|l| l.strip_prefix("URL: ")) {
        state.staging.release(url.trim(), &pusher.name);
        state.update_staging_gauge();
    }
}

/// Check, root and import one narinfo; the staged NAR it names loses the
/// caller's claim whatever happens (never another pusher's). Blocking (SQLite, `nix copy`).
fn accept(state: &ReceiveState, pusher: &Pusher, info: &NarInfo) -> ReceiveResult<()> {
    let url = match intake::nar_url(info) {
        Ok(url) => url,
        Err(e) => {
            state.staging.release(&info.url, &pusher.name);
            return Err(e);
        }
    };
    let result = info
        .ca
        .as_deref()
        .map_or(Ok(()), |ca| intake::check_ca(ca, &info.nar_hash))
        .and_then(|()| check_signatures(state.sigs.keys_for(&pusher.name), info))
        .and_then(|()| accept_checked(state, pusher, info, &url));
    state.staging.release(&url, &pusher.name);
    result
}

fn accept_checked(
    state: &ReceiveState,
    pusher: &Pusher,
    info: &NarInfo,
    url: &str,
) -> ReceiveResult<()> {
    let store_dir = state.location.store_dir();
    let root = || {
        root_arrival(
            &state.gc_root_dir,
            &pusher.name,
            store_dir,
            &info.store_path,
        )
        .map_err(|e| {
            tracing::error!("GC root under {}: {e}", state.gc_root_dir.display());
            ReceiveError::Internal("cannot create the GC root".into())
        })
    };
    if already_valid(state, info)? && root_valid(state, pusher, &info.store_path)? {
        return Ok(());
    }
    let staged = state.staging.get(url, &pusher.name).ok_or_else(|| {
        ReceiveError::NotStaged(format!(
            "narinfo URL {} names no NAR uploaded by this pusher; upload it first",
            intake::truncate(url)
        ))
    })?;
    intake::matches_staged(info, &staged)?;
    ca::check(info, &staged.file)?;
    intake::references_present(&state.db, info)?;
    let arrival = root()?;
    let started = Instant::now();
    match import(&state.daemons, &state.staging, info, url) {
        Ok(true) => {
            // A narinfo GET that found the path gone meanwhile (a GC
            // between its link and its check) removes the link it made,
            // which may be the one this import counted on: the path is
            // valid now, so root it again if the link went.
            if std::fs::symlink_metadata(&arrival.link).is_err() {
                root()?;
            }
            state
                .metrics
                .import_duration
                .observe(started.elapsed().as_secs_f64());
            state
                .metrics
                .uploads
                .with_label_values(&[&pusher.name])
                .inc();
            tracing::info!(
                pusher = pusher.name,
                "imported {store_dir}/{}",
                info.store_path
            );
            Ok(())
        }
        Ok(false) => {
            arrival.undo();
            // A concurrent push of the same NAR imported it meanwhile.
            if already_valid(state, info)? && root_valid(state, pusher, &info.store_path)? {
                return Ok(());
            }
            Err(ReceiveError::NotStaged(format!(
                "narinfo URL {} names no uploaded NAR; upload it first",
                intake::truncate(url)
            )))
        }
        Err(e) => {
            arrival.undo();
            Err(e)
        }
    }
}

fn count_already_there(state: &ReceiveState, pusher: &Pusher) {
    state
        .metrics
        .already_there
        .with_label_values(&[&pusher.name])
        .inc();
}

/// The path is valid in the host store already (with this NAR hash).
fn already_valid(state: &ReceiveState, info: &NarInfo) -> ReceiveResult<bool> {
    match intake::valid_nar_hash(&state.db, &info.store_path)? {
        None => Ok(false),
        Some(h) if h == info.nar_hash => Ok(true),
        Some(h) => Err(ReceiveError::HashMismatch(format!(
            "{} is already in the cache with NarHash {h}, not {}",
            info.store_path, info.nar_hash
        ))),
    }
}
