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
mod names;
mod nar;
mod narinfo;
mod negotiate;
mod nix_conf;
mod refusal;
mod serve;
mod setup;
mod status;

use actix_web::{Resource, Route, guard, web};

use crate::metrics::RouteSeries;
use crate::request_metrics::RouteNamer;

pub use refusal::ALLOWED_METHODS;
use refusal::method_not_allowed;

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
    series(names::NARINFO, &[200, 404, 405, 500, 503], &[], false),
    series(names::LISTING, COMMON, &[], false),
    series(
        names::NAR,
        &[200, 206, 400, 404, 405, 416, 500],
        &["identity", "zstd"],
        true,
    ),
    series(
        names::LOG,
        &[200, 404, 405, 500],
        &["identity", "bzip2"],
        true,
    ),
    series(names::SERVE, &[200, 400, 404, 405, 500], &[], false),
    series(names::SERVE_TAIL, &[200, 400, 404, 405, 500], &[], true),
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
