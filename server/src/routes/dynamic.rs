//! The endpoints whose path carries a parameter (`/<hash>.narinfo`,
//! `/<hash>.ls`, `/nar/<file>`, `/log/<drv>`, `/serve/<hash>[/<tail>]`),
//! matched by hand instead of by actix-router.
//!
//! actix-router matches a pattern with a parameter by running its regex,
//! one pattern after another, and again to name the route for the
//! metrics: about 9 % of a narinfo's CPU in `bench/results/narinfo-profile.md`.
//! Here a request costs a prefix or suffix test and a search for `/`.
//!
//! The match is the router's, exactly: it reads the same path (the URL
//! path after the view's prefix, percent-decoded except `%`, `/` and `+`,
//! which is what actix-router matches), each parameter is one non-empty
//! segment (`[^/]+`) except `/serve`'s tail, and a parameter reaches its
//! endpoint percent-decoded the way `web::Path<String>` decoded it (fully),
//! `/serve`'s hash as the router left it.
//!
//! In the metrics, a request answered here is counted under the route
//! that answered it ([`RouteLabel`]), also when its raw path spells that
//! route with escapes (`/%6Ear/…`, which actix-router's `match_pattern()`,
//! reading the raw path, counted as `unmatched`); one that a middleware
//! answers first is named from its raw path ([`route_of`]), as
//! `match_pattern()` named it.

use actix_web::http::Method;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};

use super::names::{LISTING, LOG, NAR, NARINFO, SERVE, SERVE_TAIL};
use super::refusal::{method_not_allowed, not_found};
use super::{listing, log, nar, narinfo, serve};
use crate::error::ServerError;
use crate::placement::ViewRef;
use crate::request_metrics::RouteLabel;
use crate::state::AppState;

/// A matched endpoint and its parameter, still percent-encoded as the
/// router sees it.
#[derive(Debug, PartialEq, Eq)]
enum Dynamic<'a> {
    NarInfo(&'a str),
    Listing(&'a str),
    Nar(&'a str),
    Log(&'a str),
    /// The hash part, and whether a tail (possibly empty) follows.
    Serve(&'a str, bool),
}

impl<'a> Dynamic<'a> {
    /// Match `path` (see the module's page); `None`: no endpoint has it.
    /// The patterns in the router's order, and one that does not match
    /// leaves the path to the next, as the router did: `/nar/x.narinfo`
    /// is a NAR file name, `/log/x.ls` a log, `/serve/h/a.narinfo` a file.
    fn parse(path: &'a str) -> Option<Dynamic<'a>> {
        let rest = path.strip_prefix('/')?;
        let segment = |s: &'a str| (!s.is_empty() && !s.contains('/')).then_some(s);
        if let Some(hash) = rest.strip_suffix(".narinfo").and_then(segment) {
            return Some(Dynamic::NarInfo(hash));
        }
        if let Some(hash) = rest.strip_suffix(".ls").and_then(segment) {
            return Some(Dynamic::Listing(hash));
        }
        if let Some(file) = rest.strip_prefix("nar/").and_then(segment) {
            return Some(Dynamic::Nar(file));
        }
        if let Some(drv) = rest.strip_prefix("log/").and_then(segment) {
            return Some(Dynamic::Log(drv));
        }
        let after = rest.strip_prefix("serve/")?;
        match after.split_once('/') {
            None => segment(after).map(|hash| Dynamic::Serve(hash, false)),
            Some((hash, _tail)) => segment(hash).map(|hash| Dynamic::Serve(hash, true)),
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Dynamic::NarInfo(_) => NARINFO,
            Dynamic::Listing(_) => LISTING,
            Dynamic::Nar(_) => NAR,
            Dynamic::Log(_) => LOG,
            Dynamic::Serve(_, false) => SERVE,
            Dynamic::Serve(_, true) => SERVE_TAIL,
        }
    }
}

/// The metrics label of `path`'s endpoint, if it names one
/// ([`RouteNamer`](crate::request_metrics::RouteNamer)).
pub fn route_of(path: &str) -> Option<&'static str> {
    Dynamic::parse(path).map(|route| route.label())
}

/// Fully percent-decoded, as `web::Path<String>` gave it; a parameter
/// that does not decode to UTF-8 names nothing here.
fn decoded(param: &str) -> Result<String, ServerError> {
    percent_encoding::percent_decode_str(param)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ServerError::NotFound(format!("{param:?} is not UTF-8")))
}

/// The app's default service: every path the fixed endpoints do not name.
/// Answers 405 to a method other than GET and HEAD on an endpoint, 404
/// for a path no endpoint has.
pub async fn dispatch(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ServerError> {
    let Some(route) = Dynamic::parse(req.match_info().as_str()) else {
        return not_found(req).await;
    };
    req.extensions_mut().insert(RouteLabel(route.label()));
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Ok(method_not_allowed().await);
    }
    let view = ViewRef::of(&req)?;
    match route {
        Dynamic::NarInfo(hash) => narinfo::get(&req, &state, &decoded(hash)?, &view).await,
        Dynamic::Listing(hash) => listing::get(&state, &decoded(hash)?, &view).await,
        Dynamic::Nar(file) => nar::get(&req, &state, &decoded(file)?, &view).await,
        Dynamic::Log(drv) => log::get(&req, &state, &decoded(drv)?, &view).await,
        Dynamic::Serve(hash, _) => serve::get(&req, &state, hash, &view).await,
    }
}

#[cfg(test)]
mod tests {
    use super::Dynamic::{self, *};

    #[test]
    fn matches_what_the_router_patterns_matched() {
        let cases: &[(&str, Option<Dynamic>)] = &[
            ("/abc.narinfo", Some(NarInfo("abc"))),
            ("/a.narinfo.narinfo", Some(NarInfo("a.narinfo"))),
            ("/abc%2Fd.narinfo", Some(NarInfo("abc%2Fd"))),
            ("/.narinfo", None),
            ("/a/b.narinfo", None),
            ("/abc.narinfo/", None),
            ("/abc.ls", Some(Listing("abc"))),
            ("/nar/x.nar", Some(Nar("x.nar"))),
            ("/nar/x.narinfo", Some(Nar("x.narinfo"))),
            ("/nar/", None),
            ("/nar/a/b", None),
            ("/nar", None),
            ("/log/x.drv", Some(Log("x.drv"))),
            ("/log/", None),
            ("/log/x.narinfo", Some(Log("x.narinfo"))),
            ("/log/x.ls", Some(Log("x.ls"))),
            ("/log/a/b.ls", None),
            ("/nar/x.ls", Some(Nar("x.ls"))),
            ("/nar/a/b.narinfo", None),
            ("/serve/h", Some(Serve("h", false))),
            ("/serve/h/", Some(Serve("h", true))),
            ("/serve/h/a/b/../c", Some(Serve("h", true))),
            ("/serve/", None),
            ("/serve//x", None),
            ("/serve/h.narinfo", Some(Serve("h.narinfo", false))),
            ("/serve/h.ls", Some(Serve("h.ls", false))),
            ("/serve/h/a.ls", Some(Serve("h", true))),
            ("/serve/h/sub/b.narinfo", Some(Serve("h", true))),
            ("/serve//x.ls", None),
            ("/", None),
            ("", None),
            ("/other", None),
            ("abc.narinfo", None),
        ];
        for (path, expected) in cases {
            assert_eq!(&Dynamic::parse(path), expected, "{path}");
        }
    }

    #[test]
    fn parameters_are_decoded_fully() {
        assert_eq!(super::decoded("a%2Fb%25").unwrap(), "a/b%");
        assert!(super::decoded("%ff").is_err());
    }
}
