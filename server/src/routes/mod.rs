//! The router, in one place; each endpoint's whole behaviour is in its own
//! file beside this one (`negotiate` and `html` are the two helpers
//! several endpoints share).
//!
//! Every endpoint is read-only: GET and HEAD. Any other method on a path
//! that exists gets `405 Method Not Allowed` with `Allow: GET, HEAD` (RFC
//! 9110 §15.5.6), not a 404 that would say the resource is absent.

mod cache_info;
mod dynamic;
mod html;
mod http_cache;
mod landing;
mod listing;
mod log;
mod metrics;
mod nar;
mod narinfo;
mod negotiate;
mod nix_conf;
mod serve;
mod setup;
mod status;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, Resource, Route, guard, web};

use crate::error::ServerError;
use crate::metrics::RouteSeries;
use crate::request_metrics::RouteNamer;

/// The methods every endpoint answers, as the `Allow` header lists them.
pub const ALLOWED_METHODS: &str = "GET, HEAD";

/// Every endpoint answers GET and HEAD alike (actix leaves out HEAD bodies).
fn read() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// The resource at `path`: `route` for GET and HEAD, 405 for the rest.
fn endpoint(path: &str, route: Route) -> Resource {
    web::resource(path)
        .route(route)
        .default_service(web::to(method_not_allowed))
}

/// Statuses every endpoint may answer with.
const COMMON: &[u16] = &[200, 404, 405, 500];

const fn series(
    route: &'static str,
    statuses: &'static [u16],
    encodings: &'static [&'static str],
    streams: bool,
) -> RouteSeries {
    RouteSeries {
        route,
        statuses,
        encodings,
        streams,
    }
}

/// The label values of every route's metrics, exported at 0 from startup
/// (`Metrics::preset`): the fixed paths, the patterns of the endpoints
/// with a parameter (`dynamic.rs`), and `unmatched`.
pub const SERIES: &[RouteSeries] = &[
    series("/", COMMON, &[], false),
    series("/nix-cache-info", COMMON, &[], false),
    series("/nix.conf", COMMON, &[], false),
    series("/health", COMMON, &[], false),
    series("/version", COMMON, &[], false),
    series("/metrics", COMMON, &[], false),
    series(dynamic::NARINFO, &[200, 404, 405, 500, 503], &[], false),
    series(dynamic::LISTING, COMMON, &[], false),
    series(
        dynamic::NAR,
        &[200, 206, 400, 404, 405, 416, 500],
        &["identity", "zstd"],
        true,
    ),
    series(
        dynamic::LOG,
        &[200, 404, 405, 500],
        &["identity", "bzip2"],
        true,
    ),
    series(dynamic::SERVE, &[200, 400, 404, 405, 500], &[], false),
    series(dynamic::SERVE_TAIL, &[200, 400, 404, 405, 500], &[], true),
    series("unmatched", &[404], &[], false),
];

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/", read().to(landing::get)))
        .service(endpoint("/nix-cache-info", read().to(cache_info::get)))
        .service(endpoint("/nix.conf", read().to(nix_conf::get)))
        .service(endpoint("/health", read().to(status::health)))
        .service(endpoint("/version", read().to(status::version)))
        .service(endpoint("/metrics", read().to(metrics::get)))
        // The endpoints with a parameter, matched without a regex.
        .default_service(web::to(dynamic::dispatch))
        .app_data(RouteNamer(dynamic::route_of));
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ServerError> {
    Err(ServerError::NotFound(format!(
        "no route for {}",
        req.path()
    )))
}

async fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((header::ALLOW, ALLOWED_METHODS))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("text/plain; charset=utf-8")
        .body("Method Not Allowed\n")
}
