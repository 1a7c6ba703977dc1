//! The middleware that places every request in its view, before any route
//! runs: it picks the view from the `Host` header and the first URL path
//! segment ([`Views::select`]), refuses a private view's requests without
//! one of its tokens (401 with `WWW-Authenticate`, on every route of the
//! view), strips the view's prefix from the URL so the routes see
//! `/nix-cache-info`, and leaves the view in the request's extensions for
//! the handlers ([`ViewRef`]).
//!
//! Escapes it closes: the prefix is compared with the raw, still
//! percent-encoded first segment, so `/a%2f..%2fb/…` or `/a/../b/…` never
//! reach view `b` (the rest of the URL is matched by the router under the
//! selected view only); a request naming two hosts (two `Host` headers, or
//! an absolute URI whose authority differs from `Host`) is refused;
//! forwarding headers (`X-Forwarded-Host`, `Forwarded`) are not looked at;
//! a request with two `Authorization` headers carries no token. Every
//! answer of a private view is `Cache-Control: private` (or `no-store`).
//! A request that selects no view is answered as an absent path.
//!
//! `/health`, `/version` and `/metrics` are the server's, not a view's:
//! they are answered at the root without a view (monitoring and systemd
//! need no token), and are absent under a view's prefix.

use std::future::{Future, Ready, ready};
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse};
use actix_web::http::{Uri, header};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use futures_util::TryFutureExt;
use futures_util::future::Either;

use crate::error::ServerError;
use crate::state::AppState;
use crate::view::{View, Views};

/// Paths the server answers itself, outside every view.
pub const SERVER_PATHS: &[&str] = &["/health", "/version", "/metrics"];

/// A handler's view (from the request's extensions). A request that got
/// no view from the middleware is refused as absent: fail closed.
pub struct ViewRef(pub Arc<View>);

impl std::ops::Deref for ViewRef {
    type Target = View;
    fn deref(&self) -> &View {
        &self.0
    }
}

impl ViewRef {
    /// The view [`select_view`] placed `req` in; 404 when it placed it in
    /// none (a server endpoint's request).
    pub fn of(req: &HttpRequest) -> Result<ViewRef, ServerError> {
        req.extensions()
            .get::<Arc<View>>()
            .cloned()
            .map(ViewRef)
            .ok_or_else(|| ServerError::NotFound("no view".to_owned()))
    }
}

impl FromRequest for ViewRef {
    type Error = ServerError;
    type Future = Ready<Result<ViewRef, ServerError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(ViewRef::of(req))
    }
}

/// Middleware (`App::wrap_fn`): see the module docs.
pub fn select_view<S, B>(
    mut req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let decision = match req.app_data::<web::Data<AppState>>().cloned() {
        Some(state) => place(&mut req, &state.views),
        None => Err(ServerError::Internal("no state".to_owned()).error_response()),
    };
    match decision {
        Ok(()) => {
            let private = req
                .extensions()
                .get::<Arc<View>>()
                .is_some_and(|v| v.tokens.is_some());
            Either::Left(srv.call(req).map_ok(move |mut res| {
                if private {
                    keep_private(res.headers_mut());
                }
                res.map_into_left_body()
            }))
        }
        Err(response) => {
            let res = req.into_response(response).map_into_right_body();
            Either::Right(ready(Ok(res)))
        }
    }
}

fn absent(detail: &str) -> HttpResponse {
    ServerError::NotFound(detail.to_owned()).error_response()
}

/// Select the view, check its tokens, strip its prefix.
fn place(req: &mut ServiceRequest, views: &Views) -> Result<(), HttpResponse> {
    let path = req.uri().path().to_owned();
    if SERVER_PATHS.contains(&path.as_str()) {
        return Ok(());
    }
    let host = request_host(req)?;
    let Some((view, rest)) = views.select(host.as_deref(), &path) else {
        return Err(absent("no view for this host and path"));
    };
    // Before the token check, so refused requests count under the view.
    req.extensions_mut().insert(view.clone());
    if let Some(tokens) = &view.tokens {
        // Exactly one `Authorization`: with two, which one a proxy or
        // the client meant is a guess, so neither is taken.
        let mut auths = req.headers().get_all(header::AUTHORIZATION);
        let auth = match (auths.next(), auths.next()) {
            (Some(only), None) => Some(only.as_bytes()),
            _ => None,
        };
        if !tokens.admits(auth) {
            return Err(unauthorized(&view.name));
        }
    }
    if let Some(rest) = rest {
        if SERVER_PATHS.contains(&rest.as_str()) {
            return Err(absent("server endpoint under a view prefix"));
        }
        let path_and_query = match req.uri().query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest,
        };
        let uri = Uri::builder()
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| absent("unparsable path under a view prefix"))?;
        req.match_info_mut().get_mut().update(&uri);
        req.head_mut().uri = uri;
    }
    Ok(())
}

/// No shared cache may keep a private view's answer (RFC 9111 §3.5: it
/// could hand it to anyone after): one without `Cache-Control` (landing
/// page, `/nix.conf`, `.ls`, `/serve`, `/log`) gets `private`, and a
/// `public` is turned into `private`, whatever route wrote it.
fn keep_private(headers: &mut header::HeaderMap) {
    let value = match headers.get(header::CACHE_CONTROL) {
        None => "private".to_owned(),
        Some(v) => match v.to_str() {
            Ok(v) if !v.to_ascii_lowercase().contains("public") => return,
            Ok(v) => v
                .split(',')
                .map(|d| {
                    if d.trim().eq_ignore_ascii_case("public") {
                        "private"
                    } else {
                        d.trim()
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
            Err(_) => "no-store".to_owned(),
        },
    };
    if let Ok(v) = header::HeaderValue::from_str(&value) {
        headers.insert(header::CACHE_CONTROL, v);
    }
}

/// 401 for a private view: what makes Nix (curl) send its netrc
/// credentials, and what a client without them sees on every route.
fn unauthorized(view: &str) -> HttpResponse {
    tracing::debug!(view, "request without a valid token refused");
    HttpResponse::Unauthorized()
        .insert_header((
            header::WWW_AUTHENTICATE,
            format!("Basic realm=\"larder {view}\""),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("text/plain; charset=utf-8")
        .body("Unauthorized\n")
}

/// The one host a request names (lower case, without port), if any; two
/// different ones are refused.
fn request_host(req: &ServiceRequest) -> Result<Option<String>, HttpResponse> {
    let refuse = || ServerError::BadRequest("ambiguous host".to_owned()).error_response();
    let mut hosts = req.headers().get_all(header::HOST);
    let from_header = match (hosts.next(), hosts.next()) {
        (None, _) => None,
        (Some(h), None) => Some(normalize(h.to_str().map_err(|_| refuse())?)),
        (Some(_), Some(_)) => return Err(refuse()),
    };
    let from_uri = req.uri().authority().map(|a| normalize(a.as_str()));
    match (from_header, from_uri) {
        (Some(h), Some(u)) if h != u => Err(refuse()),
        (h, u) => Ok(h.or(u)),
    }
}

/// `Host` without port or user info, lower case.
fn normalize(host: &str) -> String {
    let host = host.rsplit('@').next().unwrap_or(host).trim();
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.split(':').next().unwrap_or(host)
    };
    // One trailing dot is the same name written fully qualified; `a..` is
    // no name at all, and selects no host's view.
    let name = without_port.strip_suffix('.').unwrap_or(without_port);
    name.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_answers_are_never_public() {
        let kept = |before: Option<&str>| {
            let mut h = header::HeaderMap::new();
            if let Some(b) = before {
                h.insert(header::CACHE_CONTROL, b.parse().unwrap());
            }
            keep_private(&mut h);
            h.get(header::CACHE_CONTROL)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(kept(None), "private");
        assert_eq!(kept(Some("no-store")), "no-store");
        assert_eq!(kept(Some("private, max-age=30")), "private, max-age=30");
        assert_eq!(
            kept(Some("PUBLIC, max-age=31536000, immutable")),
            "private, max-age=31536000, immutable"
        );
    }

    #[test]
    fn hosts_are_compared_without_port_and_case() {
        assert_eq!(normalize("H.Example:5000"), "h.example");
        assert_eq!(normalize("[::1]:5000"), "::1");
        assert_eq!(normalize("a@b.example."), "b.example");
        assert_eq!(normalize("b.example.."), "b.example.");
    }
}
