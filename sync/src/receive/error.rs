//! Why a request to the receiver was refused: one variant per reason, each
//! mapped to one status code and one metric label in one place. The body
//! is the one-line message (Nix prints it in `nix copy`'s error); nothing
//! in it comes from a token or a secret.

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::{HttpResponse, ResponseError};
use thiserror::Error;

/// A refused request. `Display` is the one-line reason sent to the client.
#[derive(Debug, Error)]
pub enum ReceiveError {
    #[error("authentication required: send a pusher's token (Basic from netrc, or Bearer)")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotStorePath(String),
    #[error("{0}")]
    HashMismatch(String),
    #[error("{0}")]
    SizeMismatch(String),
    #[error("{0}")]
    MissingReference(String),
    #[error("{0}")]
    NotStaged(String),
    #[error("{0}")]
    Signature(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    UnsupportedCompression(String),
    #[error("{0}")]
    NotSupported(String),
    #[error("not found")]
    NotFound,
    #[error("method not allowed here")]
    MethodNotAllowed,
    #[error("the upload took longer than --upload-timeout-secs, or stalled")]
    Timeout,
    /// Out of a shared resource (staging space): retry later (503 with
    /// `Retry-After`).
    #[error("{0}")]
    Busy(String),
    /// A failure on our side; the detail is logged, the client sees this text.
    #[error("{0}")]
    Internal(String),
}

impl ReceiveError {
    /// A failed read of the cache's store DB (logged): 503 if another
    /// connection holds it locked beyond the busy timeout (transient, Nix
    /// retries), else 500.
    pub fn store_db(e: &larder_store::db::DbError) -> ReceiveError {
        tracing::error!("store DB: {e}");
        if e.is_busy() {
            ReceiveError::Busy("the cache's store DB is locked; retry later".into())
        } else {
            ReceiveError::Internal("cannot read the cache's store DB".into())
        }
    }

    /// The `reason` label of `larder_receive_rejections_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            ReceiveError::Unauthorized => "unauthorized",
            ReceiveError::BadRequest(_) => "bad_request",
            ReceiveError::NotStorePath(_) => "not_store_path",
            ReceiveError::HashMismatch(_) => "hash_mismatch",
            ReceiveError::SizeMismatch(_) => "size_mismatch",
            ReceiveError::MissingReference(_) => "missing_reference",
            ReceiveError::NotStaged(_) => "nar_not_uploaded",
            ReceiveError::Signature(_) => "signature",
            ReceiveError::TooLarge(_) => "too_large",
            ReceiveError::UnsupportedCompression(_) => "unsupported_compression",
            ReceiveError::NotSupported(_) => "not_supported",
            ReceiveError::NotFound => "not_found",
            ReceiveError::MethodNotAllowed => "method_not_allowed",
            ReceiveError::Timeout => "timeout",
            ReceiveError::Busy(_) => "busy",
            ReceiveError::Internal(_) => "internal",
        }
    }
}

impl ResponseError for ReceiveError {
    fn status_code(&self) -> StatusCode {
        match self {
            ReceiveError::Unauthorized => StatusCode::UNAUTHORIZED,
            ReceiveError::BadRequest(_)
            | ReceiveError::NotStorePath(_)
            | ReceiveError::HashMismatch(_)
            | ReceiveError::SizeMismatch(_)
            | ReceiveError::NotStaged(_) => StatusCode::BAD_REQUEST,
            ReceiveError::MissingReference(_) => StatusCode::CONFLICT,
            ReceiveError::Signature(_) => StatusCode::FORBIDDEN,
            ReceiveError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ReceiveError::UnsupportedCompression(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ReceiveError::NotSupported(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ReceiveError::NotFound => StatusCode::NOT_FOUND,
            ReceiveError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ReceiveError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ReceiveError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ReceiveError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        resp.insert_header((CONTENT_TYPE, "text/plain; charset=utf-8"));
        if matches!(self, ReceiveError::Unauthorized) {
            resp.insert_header((WWW_AUTHENTICATE, "Basic realm=\"larder\""));
        }
        if matches!(self, ReceiveError::Busy(_)) {
            resp.insert_header((RETRY_AFTER, "60"));
        }
        if matches!(self, ReceiveError::Timeout) {
            // The rest of a stalled body is never read: do not reuse.
            resp.force_close();
        }
        resp.body(format!("{self}\n"))
    }
}

pub type ReceiveResult<T> = Result<T, ReceiveError>;
