//! Whether nginx may send a cached compressed NAR itself (`accel-redirect`,
//! contrib/nginx/larder.conf): larder answers nginx's request with an empty
//! body and `X-Accel-Redirect` naming the cache file, and nginx sends it
//! with `sendfile`.
//!
//! nginx judges the redirected request again, by its own file: it honours
//! a `Range` (also under an `If-Range` holding larder's weak tag or the
//! file's mtime, which larder refuses), answers `If-Modified-Since` and
//! `If-Unmodified-Since` by the file's mtime and `If-Match` by an ETag it
//! does not have (412). So a request carrying any of those is served here,
//! where the rules of `http_cache.rs` decide; `If-None-Match` is decided
//! here before any redirect (nginx, with `etag off`, then sends the file).

use actix_web::HttpRequest;
use actix_web::http::header::{self, HeaderMap, HeaderValue};

use crate::state::AppState;

/// The request header by which nginx says what it can do with this
/// request: `on`, it sends a file named by `X-Accel-Redirect` (its proxy
/// locations set it, replacing any value a client sent); `off`, its
/// fallback location asks again because the file it was sent to is gone
/// or unreadable.
pub const HEADER: &str = "x-larder-offload";

/// Request headers nginx would judge by its own file (module doc).
const JUDGED_BY_NGINX: [header::HeaderName; 5] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

/// What to do with a cache hit for one NAR request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offload<'a> {
    /// Send the file from here.
    No,
    /// Send the file from here; nginx's fallback asked (`off`): the file it
    /// was sent to was gone or unreadable, counted as `result="fallback"`.
    Fallback,
    /// Hand the file to nginx: its internal locations' URI prefix.
    To(&'a str),
}

impl<'a> Offload<'a> {
    /// Decide for `req`: `To` only when `accel-redirect` is set, the
    /// request carries exactly one `X-Larder-Offload`, saying `on` (any
    /// case), and it is a `GET` with no header nginx would judge
    /// differently. Anything else (no header, a repeated or odd one, a
    /// HEAD) is served here, so a client talking to larder directly never
    /// gets an empty answer unless it asked for one itself.
    pub fn decide(state: &'a AppState, req: &HttpRequest, head: bool) -> Offload<'a> {
        match state.config.accel_redirect.as_deref() {
            Some(prefix) => Self::for_request(prefix, req, head),
            None => Offload::No,
        }
    }

    fn for_request(prefix: &'a str, req: &HttpRequest, head: bool) -> Offload<'a> {
        let mut values = req.headers().get_all(HEADER);
        let (Some(says), None) = (values.next(), values.next()) else {
            return Offload::No;
        };
        let says = says.as_bytes();
        if says.eq_ignore_ascii_case(b"off") {
            return Offload::Fallback;
        }
        let judged = JUDGED_BY_NGINX
            .iter()
            .any(|h| req.headers().contains_key(h));
        if says.eq_ignore_ascii_case(b"on") && !head && !judged {
            Offload::To(prefix)
        } else {
            Offload::No
        }
    }

    /// The prefix to redirect a cache hit to, or `None` (counting a
    /// fallback when nginx's fallback asked).
    pub fn hit(self, state: &AppState) -> Option<&'a str> {
        match self {
            Offload::To(prefix) => Some(prefix),
            Offload::Fallback => {
                state.metrics.offload.with_label_values(&["fallback"]).inc();
                None
            }
            Offload::No => None,
        }
    }
}

/// Add [`HEADER`] to the answer's `Vary`, in the one `Vary` line it has
/// (`Accept-Encoding, x-larder-offload`). nginx 1.22's `proxy_cache` keys
/// on the last `Vary` line only: with two lines, a `.nar` zstd-encoded for
/// one client was served from its cache to a client without
/// `Accept-Encoding: zstd` (Nix 2.8: a hash mismatch).
pub fn vary_on_it(headers: &mut HeaderMap) {
    let value = match headers.get(header::VARY).map(|v| v.to_str()) {
        None => HeaderValue::from_static(HEADER),
        Some(Ok(vary)) => match HeaderValue::from_str(&format!("{vary}, {HEADER}")) {
            Ok(value) => value,
            Err(_) => return,
        },
        // Set by larder's routes, always ASCII.
        Some(Err(_)) => return,
    };
    headers.insert(header::VARY, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    const PREFIX: &str = "/_larder_cache/";

    fn decide(headers: &[(&str, &[u8])], head: bool) -> Offload<'static> {
        let mut req = TestRequest::default();
        for (name, value) in headers {
            req = req.append_header((*name, header::HeaderValue::from_bytes(value).unwrap()));
        }
        Offload::for_request(PREFIX, &req.to_http_request(), head)
    }

    #[test]
    fn only_one_exact_on_from_nginx_redirects() {
        for on in [&b"on"[..], b"ON", b"oN"] {
            assert_eq!(decide(&[(HEADER, on)], false), Offload::To(PREFIX));
        }
        assert_eq!(decide(&[(HEADER, b"on")], true), Offload::No, "HEAD");
        assert_eq!(decide(&[], false), Offload::No);
        for odd in [&b"on, off"[..], b"yes", b"", b"on\xff", b"1", b"onn"] {
            assert_eq!(decide(&[(HEADER, odd)], false), Offload::No, "{odd:?}");
        }
        for twice in [[&b"on"[..], b"off"], [b"off", b"on"], [b"on", b"on"]] {
            let headers = [(HEADER, twice[0]), (HEADER, twice[1])];
            assert_eq!(decide(&headers, false), Offload::No, "{twice:?}");
        }
        assert_eq!(decide(&[(HEADER, b"OFF")], false), Offload::Fallback);
    }

    #[test]
    fn one_vary_line_names_both() {
        let mut headers = HeaderMap::new();
        vary_on_it(&mut headers);
        assert_eq!(headers.get(header::VARY).unwrap(), HEADER);
        let mut headers = HeaderMap::new();
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        vary_on_it(&mut headers);
        let lines: Vec<_> = headers.get_all(header::VARY).collect();
        assert_eq!(lines, ["Accept-Encoding, x-larder-offload"]);
    }

    #[test]
    fn headers_nginx_would_judge_keep_the_request_here() {
        for name in [
            "range",
            "if-range",
            "if-match",
            "if-modified-since",
            "if-unmodified-since",
        ] {
            let headers = [(HEADER, &b"on"[..]), (name, b"x")];
            assert_eq!(decide(&headers, false), Offload::No, "{name}");
        }
        let headers = [(HEADER, &b"on"[..]), ("if-none-match", b"\"x\"")];
        assert_eq!(decide(&headers, false), Offload::To(PREFIX));
    }
}
