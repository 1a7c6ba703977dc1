//! Every way a request can fail, mapped to a status in one exhaustive match.
//!
//! Clients get the status phrase only: detail (file paths, DB errors) goes to
//! the log, never into a response body. Error responses carry
//! `Cache-Control: no-store` so that proxies do not remember a miss that a
//! later `nix copy` would fill.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use larder_store::db::DbError;
use larder_store::dump::DumpError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ServerError {
    /// Absent or malformed: clients remember both as a miss.
    #[error("not found: {0}")]
    NotFound(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("range not satisfiable in a {size}-byte body")]
    RangeNotSatisfiable { size: u64 },
    #[error("store DB: {0}")]
    Db(#[from] DbError),
    #[error("NAR dump: {0}")]
    Dump(#[from] DumpError),
    /// The files on disk disagree with the DB (size or hash).
    #[error("store path {path} on disk disagrees with the DB: {what}")]
    StoreCorrupt { path: String, what: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("zstd: {0}")]
    Compression(std::io::Error),
    /// larder-signer cannot be reached (or refused a path the DB holds):
    /// transient, so clients retry and then try their next substituter.
    #[error("signer: {detail}")]
    SignerUnavailable {
        retry_after_secs: u64,
        detail: String,
    },
    #[error("internal: {0}")]
    Internal(String),
}

impl ServerError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
        let context = context.into();
        move |source| ServerError::Io { context, source }
    }
}

impl ResponseError for ServerError {
    fn status_code(&self) -> StatusCode {
        match self {
            ServerError::NotFound(_) => StatusCode::NOT_FOUND,
            ServerError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServerError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            // Locked by another connection: transient, Nix retries a 503.
            ServerError::Db(e) if e.is_busy() => StatusCode::SERVICE_UNAVAILABLE,
            ServerError::Db(_)
            | ServerError::Dump(_)
            | ServerError::StoreCorrupt { .. }
            | ServerError::Io { .. }
            | ServerError::Compression(_)
            | ServerError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ServerError::SignerUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, "request refused");
        }
        let mut response = HttpResponse::build(status);
        response
            .content_type("text/plain; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        match self {
            ServerError::RangeNotSatisfiable { size } => {
                response.insert_header((header::CONTENT_RANGE, format!("bytes */{size}")));
            }
            ServerError::SignerUnavailable {
                retry_after_secs, ..
            } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            ServerError::Db(e) if e.is_busy() => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            _ => {}
        }
        response.body(format!(
            "{}\n",
            status.canonical_reason().unwrap_or("error")
        ))
    }
}
