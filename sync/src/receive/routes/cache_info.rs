//! `GET /nix-cache-info`: what Nix reads first, before any upload.

use actix_web::{HttpResponse, web};

use crate::receive::state::ReceiveState;

/// `StoreDir`, `WantMassQuery` and `Priority`, as larder-server answers.
/// Nix 2.8 PUTs its own `nix-cache-info` when this is missing, so it is
/// always answered.
pub fn get(state: &web::Data<ReceiveState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/x-nix-cache-info")
        .body(format!(
            "StoreDir: {}\nWantMassQuery: 1\nPriority: {}\n",
            state.location.store_dir(),
            state.priority
        ))
}
