//! `GET /<hash32>.ls`: the NAR's listing, as `nix nar ls --json -R` prints
//! it, wrapped in `{"version":1,"root":…}`.

use actix_web::{HttpResponse, web};
use larder_store::nar::NarPlan;

use crate::error::ServerError;
use crate::lookup;
use crate::state::AppState;

pub async fn get(
    state: web::Data<AppState>,
    hash: web::Path<String>,
) -> Result<HttpResponse, ServerError> {
    let info = lookup::by_hash_memo(&state, &hash).await?;
    let plan = NarPlan::walk_async(state.location.real_path(&info.path)).await?;
    let body = serde_json::json!({ "version": 1, "root": plan.listing() });
    Ok(HttpResponse::Ok().json(body))
}
