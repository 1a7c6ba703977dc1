//! The router: every request is authenticated first, then dispatched by
//! method and path to one handler module. Anything else is 404 (unknown
//! path) or 405 (known path, other method).
//!
//! | route | methods | handler |
//! |---|---|---|
//! | `/nix-cache-info` | GET, HEAD | [`cache_info`] |
//! | `/<hash>.narinfo` | GET, HEAD (from the store DB, only the fields that say "there"; a 200 roots the path for the pusher), PUT (import) | [`narinfo`] |
//! | `/nar/<filehash>.nar[.xz\|.zst\|.bz2]` | HEAD (404 unless staged), PUT; GET is always 404 | [`nar`] |
//! | `/<hash>.ls` | PUT (accepted and discarded: larder-server makes listings) | [`listing`] |
//! | `/log/<drv>` | PUT (into the store's log dir) | [`log`] |
//! | `/realisations/…` | any: refused, CA derivations are not supported | |

mod body;
mod cache_info;
mod listing;
mod log;
mod nar;
mod narinfo;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::body::{BodySize, BodyStream, BoxBody, MessageBody};
use actix_web::http::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderValue, TRANSFER_ENCODING};
use actix_web::http::{Method, StatusCode, Version};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use bytes::Bytes;

use super::auth::Pusher;
use super::error::{ReceiveError, ReceiveResult};
use super::state::ReceiveState;

/// Per connection: a request on it had both `Transfer-Encoding` and
/// `Content-Length`, so every later request on it is refused (actix may
/// already have parsed the bytes after it as pipelined requests).
#[derive(Debug, Clone, Default)]
pub struct Poisoned(Arc<AtomicBool>);

/// The one handler actix calls (as its default service).
pub async fn dispatch(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<ReceiveState>,
) -> HttpResponse {
    let head = req.method() == Method::HEAD && req.version() < Version::HTTP_2;
    let resp = answer(req, body, state).await;
    if head { headers_alone(resp) } else { resp }
}

/// An HTTP/1 answer to a HEAD as headers alone, whatever state actix-http's
/// codec is in: it leaves out a HEAD's body by a flag set for the last
/// request decoded, so with a request pipelined behind the HEAD a narinfo's
/// answer went out with its body. An empty unchunked stream writes nothing
/// in either state; the length the body had is kept as `Content-Length`
/// (RFC 9110 §9.3.2). larder-server does the same (`head_without_body`).
fn headers_alone(resp: HttpResponse) -> HttpResponse {
    let size = resp.body().size();
    // 1xx, 204 and 304 never carry a body: a `Content-Length: 0` there
    // would misstate the 200's length (RFC 9110 §8.6).
    let status = resp.status();
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if size == BodySize::None || bodiless {
        return resp;
    }
    let empty = futures_util::stream::empty::<Result<Bytes, std::convert::Infallible>>();
    let mut resp = resp.set_body(BoxBody::new(BodyStream::new(empty)));
    resp.head_mut().no_chunking(true);
    if let BodySize::Sized(len) = size {
        resp.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    resp
}

/// Everything but the HEAD framing of [`dispatch`].
async fn answer(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<ReceiveState>,
) -> HttpResponse {
    let method = req.method().clone();
    let path = req.path().to_owned();
    // RFC 9112 §6.3: a request with both Transfer-Encoding and
    // Content-Length may be a smuggling attempt; refuse it and close the
    // connection, never reading what follows as another request.
    // Requests already pipelined behind such a request on the same
    // connection were framed by an attacker's choice: refuse them too.
    let poisoned = req.conn_data::<Poisoned>().cloned().unwrap_or_default();
    let smuggling =
        req.headers().contains_key(TRANSFER_ENCODING) && req.headers().contains_key(CONTENT_LENGTH);
    if smuggling || poisoned.0.load(Ordering::SeqCst) {
        poisoned.0.store(true, Ordering::SeqCst);
        let e = ReceiveError::BadRequest(
            "Transfer-Encoding and Content-Length together are not allowed".into(),
        );
        state
            .metrics
            .rejections
            .with_label_values(&[e.reason()])
            .inc();
        tracing::info!(%method, path, "refused: {e}");
        let mut resp = e.error_response();
        resp.head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
        return resp;
    }
    match route(&req, body, &state).await {
        Ok(resp) => {
            tracing::debug!(%method, path, status = resp.status().as_u16(), "answered");
            resp
        }
        Err(e) => {
            state
                .metrics
                .rejections
                .with_label_values(&[e.reason()])
                .inc();
            let level_info = !matches!(e, ReceiveError::NotFound);
            if level_info {
                tracing::info!(%method, path, status = e.status_code().as_u16(), "refused: {e}");
            } else {
                tracing::debug!(%method, path, "not found");
            }
            e.error_response()
        }
    }
}

async fn route(
    req: &HttpRequest,
    body: web::Payload,
    state: &web::Data<ReceiveState>,
) -> ReceiveResult<HttpResponse> {
    let header = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    let pusher: Pusher = state
        .tokens
        .authenticate(header)
        .ok_or(ReceiveError::Unauthorized)?
        .clone();
    let path = req.path();
    let method = req.method();
    let read = method == Method::GET || method == Method::HEAD;
    tracing::debug!(pusher = pusher.name, %method, path, "request");
    if path == "/nix-cache-info" {
        return match read {
            true => Ok(cache_info::get(state)),
            false => Err(ReceiveError::MethodNotAllowed),
        };
    }
    if let Some(name) = path.strip_prefix("/nar/") {
        return match *method {
            Method::HEAD => nar::head(state, &pusher, name),
            // The receiver serves no NAR bodies (larder-server does): a GET
            // answered 200 without the NAR would be a hard client failure.
            Method::GET => Err(ReceiveError::NotFound),
            Method::PUT => nar::put(req, state, &pusher, name, body).await,
            _ => Err(ReceiveError::MethodNotAllowed),
        };
    }
    if let Some(drv) = path.strip_prefix("/log/") {
        return match *method {
            Method::PUT => log::put(req, state, drv, body).await,
            Method::HEAD | Method::GET => Err(ReceiveError::NotFound),
            _ => Err(ReceiveError::MethodNotAllowed),
        };
    }
    if path.starts_with("/realisations/") {
        return match read {
            true => Err(ReceiveError::NotFound),
            false => Err(ReceiveError::NotSupported(
                "realisations (content-addressed derivations) are not supported by this cache"
                    .into(),
            )),
        };
    }
    let file = path.strip_prefix('/').unwrap_or(path);
    if let Some(hash) = file.strip_suffix(".narinfo") {
        return match *method {
            Method::HEAD | Method::GET => narinfo::get(state, &pusher, hash).await,
            Method::PUT => narinfo::put(req, state, &pusher, hash, body).await,
            _ => Err(ReceiveError::MethodNotAllowed),
        };
    }
    if let Some(hash) = file.strip_suffix(".ls") {
        return match *method {
            Method::PUT => listing::put(req, state, hash, body).await,
            Method::HEAD | Method::GET => Err(ReceiveError::NotFound),
            _ => Err(ReceiveError::MethodNotAllowed),
        };
    }
    Err(ReceiveError::NotFound)
}
