//! Content negotiation: which codings a request accepts.

use actix_web::HttpRequest;
use actix_web::http::header;

/// Whether the request's `Accept-Encoding` lists `coding` with a non-zero q.
pub fn accepts(req: &HttpRequest, coding: &str) -> bool {
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
}
