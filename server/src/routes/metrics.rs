//! `GET /metrics`: Prometheus text format, the server's own and larder-signer's.

use actix_web::{HttpResponse, web};

use crate::error::ServerError;
use crate::state::AppState;

pub async fn get(state: web::Data<AppState>) -> Result<HttpResponse, ServerError> {
    let mut text = state
        .metrics
        .render()
        .map_err(|e| ServerError::Internal(format!("rendering metrics: {e}")))?;
    // The signer has no HTTP stack: its metrics are scraped through us. When
    // it is down they are absent, and larder_signer_client_failures_total says so.
    if let Some(signer) = &state.signer_client {
        match signer.metrics_text().await {
            Ok(signer_text) => text.push_str(&signer_text),
            Err(e) => tracing::debug!(error = %e, "signer metrics unavailable"),
        }
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
