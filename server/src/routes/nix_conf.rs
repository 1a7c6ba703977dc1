//! `GET /nix.conf`: the lines a client adds to its nix.conf for this view
//! (plain text): `extra-substituters`, `extra-trusted-public-keys`, and for
//! a private view `netrc-file` and the netrc line, with a placeholder for
//! the token.

use actix_web::{HttpRequest, HttpResponse, web};

use super::setup::{cache_url, nix_conf, view_keys};
use crate::placement::ViewRef;
use crate::state::AppState;

pub async fn get(req: HttpRequest, state: web::Data<AppState>, view: ViewRef) -> HttpResponse {
    let url = cache_url(&req, &state, &view);
    let keys = view_keys(&state, &view).await;
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(nix_conf(&url, &keys, view.tokens.is_some()))
}
