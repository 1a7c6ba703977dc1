//! `GET /health` and `GET /version`.
//!
//! `/health` answers JSON, `{"status":"ok","store":"ok","signer":"up"}`,
//! for systemd, `scripts/run.sh` and load balancers in front of replicas:
//! - `status`: `ok`; `draining` once SIGTERM/SIGINT arrived (running
//!   downloads finish, nothing new should come); `unavailable` when the
//!   store DB cannot be read. 503 unless `ok`.
//! - `store`: `ok` or `unreadable` (a query on the DB's own threads).
//! - `signer`: `none` without `--signer-socket`, else `up` or `down` as the
//!   server last saw it (down while its circuit breaker is open; the keys
//!   checked at most every `--signer-key-check-secs`). A down signer keeps
//!   200 (the server still answers what it can: `--signer-down`), unless
//!   the request says `?signer=required`: then 503, for a load balancer
//!   that should take this server out of rotation while its signer is down.

use std::sync::atomic::Ordering;

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
    let store = match state.db.max_row_id().await {
        Ok(_) => "ok",
        Err(e) => {
            tracing::warn!(error = %e, "health: the store DB cannot be read");
            "unreadable"
        }
    };
    let status = if state.draining.load(Ordering::Relaxed) {
        "draining"
    } else if store != "ok" {
        "unavailable"
    } else {
        "ok"
    };
    let required = req
        .query_string()
        .split('&')
        .any(|kv| kv == "signer=required");
    let mut response = if status != "ok" || (required && signer == "down") {
        HttpResponse::ServiceUnavailable()
    } else {
        HttpResponse::Ok()
    };
    response
        .content_type("application/json")
        .insert_header(("Cache-Control", "no-store"))
        .body(format!(
            "{{\"status\":\"{status}\",\"store\":\"{store}\",\"signer\":\"{signer}\"}}\n"
        ))
}

pub async fn version() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(concat!("larder-server ", env!("CARGO_PKG_VERSION"), "\n"))
}
