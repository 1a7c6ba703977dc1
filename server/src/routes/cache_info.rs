//! `GET /nix-cache-info`: the store dir clients must share, and our priority.

use actix_web::{HttpResponse, web};

use crate::state::AppState;

pub async fn get(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/x-nix-cache-info")
        .body(format!(
            "StoreDir: {}\nWantMassQuery: 1\nPriority: {}\n",
            state.location.store_dir(),
            state.config.priority
        ))
}
