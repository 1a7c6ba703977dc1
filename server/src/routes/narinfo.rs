//! `GET|HEAD /<hash32>.narinfo` (and `?json`): a path's metadata from the
//! store DB, with the URL its NAR is served at. `?json` is `nix path-info
//! --json`'s element for the path, `signatures` included. Shared caches may
//! keep either for `--narinfo-max-age-secs` (see `http_cache.rs`).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use larder_store::db::PathInfo;
use larder_store::narinfo::NarInfo;

use super::http_cache::short_lived;
use crate::config::Compression;
use crate::error::ServerError;
use crate::placement::ViewRef;
use crate::state::AppState;
use crate::{lookup, signing};

pub async fn get(
    req: &HttpRequest,
    state: &AppState,
    hash: &str,
    view: &ViewRef,
) -> Result<HttpResponse, ServerError> {
    let info = lookup::by_hash_memo(state, view, hash).await?;
    let cache_control = short_lived(state.config.narinfo_max_age_secs, view);
    // Both shapes carry the same signatures (the DB's and the signer's),
    // and fail the same way while the signer is down.
    let sigs = signing::signatures(state, view, &info).await?;
    if req.query_string().split('&').any(|q| q == "json") {
        let mut json = info.nix_json(state.location.store_dir());
        json.sigs = sigs;
        return Ok(HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, cache_control))
            .json(json));
    }
    let narinfo = NarInfo {
        store_dir: state.location.store_dir().to_owned(),
        store_path: info.path.clone(),
        url: nar_url(&info, state.config.compression),
        compression: compression_name(state.config.compression).to_owned(),
        file_hash: None,
        file_size: None,
        nar_hash: info.nar_hash,
        nar_size: info.nar_size,
        references: info.references.clone(),
        deriver: info.deriver.clone(),
        sigs,
        ca: info.ca.clone(),
    };
    Ok(HttpResponse::Ok()
        .content_type("text/x-nix-narinfo")
        .insert_header((header::CACHE_CONTROL, cache_control))
        .body(narinfo.to_string()))
}

/// `nar/<narhash52>.nar[.zst]?hash=<hash32>`: the NAR hash names the content,
/// the path hash lets the NAR route find it without a NAR-hash index.
fn nar_url(info: &PathInfo, compression: Compression) -> String {
    let ext = match compression {
        Compression::None => "nar",
        Compression::Zstd => "nar.zst",
    };
    format!(
        "nar/{}.{ext}?hash={}",
        info.nar_hash.to_nix32(),
        info.path.hash()
    )
}

fn compression_name(compression: Compression) -> &'static str {
    match compression {
        Compression::None => "none",
        Compression::Zstd => "zstd",
    }
}
