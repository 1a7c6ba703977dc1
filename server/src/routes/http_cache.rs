//! What shared HTTP caches (nginx `proxy_cache`, Varnish, a CDN) may keep,
//! and the validators that let them revalidate (RFC 9111, RFC 9110 §8.8,
//! §13.1.2 `If-None-Match`, §13.1.5 `If-Range`).
//!
//! - A NAR URL that names its NAR hash names its content: it is
//!   [`IMMUTABLE`]. nix-serve's oldest form, `/nar/<hash32>.nar`, names a
//!   store path, whose content can change if the path is collected and
//!   built again, so it gets the narinfo's lifetime.
//! - Entity tags: the identity NAR's is its NAR hash (nix32), a strong
//!   tag, usable with `If-Range`; a zstd representation's is the NAR hash
//!   with `-zstd`, weak, because the compressed bytes of one NAR may differ
//!   between two compressions (multi-threaded or not) while they decode to
//!   the same NAR.
//! - narinfo and `nix-cache-info` live `--narinfo-max-age-secs`: signatures
//!   change when the signer's keys rotate, and a path can be collected.
//!   Misses are never kept (`no-store`, see `error.rs`).
//! - In a private view (one with tokens) every lifetime is `private`:
//!   shared caches keep nothing, since they would serve it to anyone.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};

use crate::view::View;

/// Who may keep a response: any cache, or (for a private view, whose
/// requests carry a token) only the client's own. RFC 9111 §3.5 lets a
/// shared cache store an answer to an authorized request once it says
/// `public`, and hand it to anyone after; `private` forbids that.
fn scope(view: &View) -> &'static str {
    if view.tokens.is_some() {
        "private"
    } else {
        "public"
    }
}

/// `Cache-Control` of a URL that names its content.
pub fn immutable(view: &View) -> String {
    format!("{}, max-age=31536000, immutable", scope(view))
}

/// `Cache-Control` of what may change: `public, max-age=SECS` (`private`
/// in a private view), or `no-store` when `secs` is 0.
pub fn short_lived(secs: u64, view: &View) -> String {
    if secs == 0 {
        "no-store".to_owned()
    } else {
        format!("{}, max-age={secs}", scope(view))
    }
}

/// An entity tag: its opaque string (without quotes) and whether it is
/// weak (`W/"…"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityTag {
    opaque: String,
    weak: bool,
}

impl EntityTag {
    /// A strong tag: the representation's bytes are always the same.
    pub fn strong(opaque: impl Into<String>) -> EntityTag {
        EntityTag {
            opaque: opaque.into(),
            weak: false,
        }
    }

    /// A weak tag: the same content, not necessarily the same bytes.
    pub fn weak(opaque: impl Into<String>) -> EntityTag {
        EntityTag {
            opaque: opaque.into(),
            weak: true,
        }
    }

    /// The `ETag` header value.
    pub fn header_value(&self) -> String {
        let w = if self.weak { "W/" } else { "" };
        format!("{w}\"{}\"", self.opaque)
    }

    /// Whether the request's `If-None-Match` matches this tag (weak
    /// comparison, `*` matches any): the client or cache already holds the
    /// representation, so the answer is 304 Not Modified.
    pub fn none_match(&self, req: &HttpRequest) -> bool {
        req.headers()
            .get_all(header::IF_NONE_MATCH)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || parse(tag).is_some_and(|t| t.opaque == self.opaque))
    }

    /// Whether a `Range` may be honoured under the request's `If-Range`:
    /// yes without one; with one, only if it is this tag and both are
    /// strong (a date or anything else: send the whole representation).
    pub fn range_allowed(&self, req: &HttpRequest) -> bool {
        let Some(value) = req.headers().get(header::IF_RANGE) else {
            return true;
        };
        let theirs = value.to_str().ok().and_then(|v| parse(v.trim()));
        !self.weak && theirs.is_some_and(|t| !t.weak && t.opaque == self.opaque)
    }
}

impl TryFrom<&EntityTag> for HeaderValue {
    type Error = header::InvalidHeaderValue;
    fn try_from(tag: &EntityTag) -> Result<HeaderValue, Self::Error> {
        HeaderValue::from_str(&tag.header_value())
    }
}

/// 304 Not Modified for a client or shared cache that holds `tag` already.
pub fn not_modified(tag: &EntityTag, cache_control: &str, vary: bool) -> HttpResponse {
    let mut builder = HttpResponse::NotModified();
    builder
        .insert_header((header::ETAG, tag.header_value()))
        .insert_header((header::CACHE_CONTROL, cache_control.to_owned()));
    if vary {
        builder.insert_header((header::VARY, "Accept-Encoding"));
    }
    builder.finish()
}

/// Add the validator and lifetime to a successful response built elsewhere
/// (e.g. a `.nar.zst` from the cache or the compressor).
pub fn validators(response: &mut HttpResponse, tag: &EntityTag, cache_control: &str) {
    let headers = response.headers_mut();
    if let Ok(value) = header::HeaderValue::try_from(tag) {
        headers.insert(header::ETAG, value);
    }
    if let Ok(value) = header::HeaderValue::from_str(cache_control) {
        headers.insert(header::CACHE_CONTROL, value);
    }
}

/// One entity tag as written in a header (`"x"` or `W/"x"`), or `None`
/// for anything else.
fn parse(s: &str) -> Option<EntityTag> {
    let (weak, quoted) = match s.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let opaque = quoted.strip_prefix('"')?.strip_suffix('"')?;
    (!opaque.contains('"')).then(|| EntityTag {
        opaque: opaque.to_owned(),
        weak,
    })
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn if_none_match_compares_weakly_and_lists() {
        let tag = EntityTag::strong("abc");
        let req = |v: &str| {
            TestRequest::default()
                .insert_header((header::IF_NONE_MATCH, v))
                .to_http_request()
        };
        assert!(tag.none_match(&req("\"abc\"")));
        assert!(tag.none_match(&req("W/\"abc\"")));
        assert!(tag.none_match(&req("\"x\", \"abc\"")));
        assert!(tag.none_match(&req("*")));
        assert!(!tag.none_match(&req("\"abcd\"")));
        assert!(!tag.none_match(&req("abc")));
        assert!(!tag.none_match(&req("\"abc")));
        assert!(!tag.none_match(&TestRequest::default().to_http_request()));
        assert!(EntityTag::weak("abc").none_match(&req("\"abc\"")));
    }

    #[test]
    fn if_range_needs_the_same_strong_tag() {
        let req = |v: &str| {
            TestRequest::default()
                .insert_header((header::IF_RANGE, v))
                .to_http_request()
        };
        let strong = EntityTag::strong("abc");
        assert!(strong.range_allowed(&TestRequest::default().to_http_request()));
        assert!(strong.range_allowed(&req("\"abc\"")));
        assert!(!strong.range_allowed(&req("W/\"abc\"")));
        assert!(!strong.range_allowed(&req("\"other\"")));
        assert!(!strong.range_allowed(&req("Wed, 21 Oct 2015 07:28:00 GMT")));
        assert!(!EntityTag::weak("abc").range_allowed(&req("\"abc\"")));
    }

    #[test]
    fn header_values() {
        assert_eq!(EntityTag::strong("a").header_value(), "\"a\"");
        assert_eq!(EntityTag::weak("a").header_value(), "W/\"a\"");
        let open = View::everything(40);
        assert_eq!(short_lived(0, &open), "no-store");
        assert_eq!(short_lived(30, &open), "public, max-age=30");
        assert_eq!(immutable(&open), "public, max-age=31536000, immutable");
    }
}
