//! `GET /metrics`: Prometheus text format.

use actix_web::{HttpResponse, web};

use crate::error::ServerError;
use crate::state::AppState;

pub async fn get(state: web::Data<AppState>) -> Result<HttpResponse, ServerError> {
    let text = state
        .metrics
        .render()
        .map_err(|e| ServerError::Internal(format!("rendering metrics: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
