//! `GET /nix-cache-info`: the store dir clients must share, and the view's
//! priority.

use actix_web::{HttpResponse, web};

use crate::placement::ViewRef;
use crate::state::AppState;

pub async fn get(state: web::Data<AppState>, view: ViewRef) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/x-nix-cache-info")
        .body(format!(
            "StoreDir: {}\nWantMassQuery: 1\nPriority: {}\n",
            state.location.store_dir(),
            view.priority
        ))
}
