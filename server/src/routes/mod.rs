//! The router, in one place; each endpoint's whole behaviour is in its own
//! file beside this one (`negotiate` and `html` are the two helpers
//! several endpoints share).

mod cache_info;
mod html;
mod landing;
mod listing;
mod log;
mod metrics;
mod nar;
mod narinfo;
mod negotiate;
mod serve;
mod status;

use actix_web::{HttpRequest, Route, guard, web};

use crate::error::ServerError;

/// Every endpoint answers GET and HEAD alike (actix leaves out HEAD bodies).
fn read() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", read().to(landing::get))
        .route("/nix-cache-info", read().to(cache_info::get))
        .route("/health", read().to(status::health))
        .route("/version", read().to(status::version))
        .route("/metrics", read().to(metrics::get))
        .route("/{hash}.narinfo", read().to(narinfo::get))
        .route("/{hash}.ls", read().to(listing::get))
        .route("/nar/{file}", read().to(nar::get))
        .route("/log/{drv}", read().to(log::get))
        .route("/serve/{hash}", read().to(serve::get))
        .route("/serve/{hash}/{tail:.*}", read().to(serve::get))
        .default_service(web::to(not_found));
}

async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ServerError> {
    Err(ServerError::NotFound(format!(
        "no route for {}",
        req.path()
    )))
}
