//! The router, in one place; each endpoint's whole behaviour is in its own
//! file beside this one.

mod cache_info;
mod landing;
mod listing;
mod log;
mod metrics;
mod nar;
mod narinfo;
mod serve;
mod status;

use actix_web::http::header;
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

/// Whether the request's `Accept-Encoding` lists `coding` with a non-zero q.
pub(crate) fn accepts(req: &HttpRequest, coding: &str) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let name_matches = parts.next().is_some_and(|n| n.eq_ignore_ascii_case(coding));
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            name_matches && !refused
        })
}

/// Text safe to put inside HTML elements and attributes.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn accept_encoding_lists() {
        let req = |v: &str| {
            TestRequest::default()
                .insert_header((header::ACCEPT_ENCODING, v))
                .to_http_request()
        };
        assert!(accepts(&req("deflate, gzip, br, zstd"), "zstd"));
        assert!(accepts(&req("ZSTD;q=0.5"), "zstd"));
        assert!(!accepts(&req("zstd;q=0"), "zstd"));
        assert!(!accepts(&req("gzip"), "zstd"));
        assert!(!accepts(&TestRequest::default().to_http_request(), "zstd"));
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
