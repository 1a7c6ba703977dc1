//! `GET /<hash32>.ls`: the NAR's listing, byte for byte what Nix writes
//! for it (`write-nar-listing`): `{"version":1,"root":…}` with the root as
//! `nix nar ls --json -R` prints it. Names and symlink targets that are not
//! UTF-8 are their raw bytes, as in Nix's own listings: one entry per NAR
//! entry, never merged by a lossy conversion.

use actix_web::HttpResponse;
use larder_store::nar::NarPlan;

use crate::error::ServerError;
use crate::lookup;
use crate::placement::ViewRef;
use crate::state::AppState;

pub async fn get(
    state: &AppState,
    hash: &str,
    view: &ViewRef,
) -> Result<HttpResponse, ServerError> {
    let info = lookup::by_hash_memo(state, view, hash).await?;
    let plan = NarPlan::walk_async(state.location.real_path(&info.path)).await?;
    let mut body = b"{\"version\":1,\"root\":".to_vec();
    body.extend_from_slice(&plan.listing_json());
    body.push(b'}');
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}
