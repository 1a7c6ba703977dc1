//! `GET /nix-cache-info`: the store dir clients must share, and the view's
//! priority; shared caches may keep it as long as a narinfo.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

use super::http_cache::short_lived;
use crate::placement::ViewRef;
use crate::state::AppState;

pub async fn get(state: web::Data<AppState>, view: ViewRef) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/x-nix-cache-info")
        .insert_header((
            header::CACHE_CONTROL,
            short_lived(state.config.narinfo_max_age_secs, &view),
        ))
        .body(format!(
            "StoreDir: {}\nWantMassQuery: 1\nPriority: {}\n",
            state.location.store_dir(),
            view.priority
        ))
}
