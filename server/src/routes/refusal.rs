//! The two answers of the router itself: no endpoint has the path (404),
//! or the endpoint does not answer the method (405).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

use crate::error::ServerError;

/// The methods every endpoint answers, as the `Allow` header lists them.
pub const ALLOWED_METHODS: &str = "GET, HEAD";

pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ServerError> {
    Err(ServerError::NotFound(format!(
        "no route for {}",
        req.path()
    )))
}

pub async fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((header::ALLOW, ALLOWED_METHODS))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("text/plain; charset=utf-8")
        .body("Method Not Allowed\n")
}
