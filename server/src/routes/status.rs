//! `GET /health` and `GET /version`.
//!
//! `/health` answers JSON, `{"status":"ok","signer":"up"}`: `signer` is
//! `none` without `--signer-socket`, else `up` or `down` as the server last
//! saw it (down while its circuit breaker is open; with the signer's keys
//! checked at most every `--signer-key-check-secs`). The status is 200 as
//! long as the server answers (liveness: systemd and `scripts/run.sh` wait
//! on it); `/health?signer=required` answers 503 while the signer is down,
//! for a load balancer that should take this server out of rotation then.

use actix_web::{HttpRequest, HttpResponse, web};

use crate::state::AppState;

pub async fn health(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let signer = match &state.signer_client {
        None => "none",
        Some(client) => {
            // Refreshes the breaker's view when the key check is due.
            let _ = client.public_keys().await;
            client.state().as_str()
        }
    };
    let required = req
        .query_string()
        .split('&')
        .any(|kv| kv == "signer=required");
    let mut response = if required && signer == "down" {
        HttpResponse::ServiceUnavailable()
    } else {
        HttpResponse::Ok()
    };
    response
        .content_type("application/json")
        .insert_header(("Cache-Control", "no-store"))
        .body(format!("{{\"status\":\"ok\",\"signer\":\"{signer}\"}}\n"))
}

pub async fn version() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(concat!("larder-server ", env!("CARGO_PKG_VERSION"), "\n"))
}
