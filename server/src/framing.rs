//! Requests whose length is ambiguous are refused, and so is everything
//! after them on the same connection (RFC 9112 §6.3: a request with both
//! `Transfer-Encoding` and `Content-Length` "ought to be handled as an
//! error", as it may be request smuggling).
//!
//! actix-web frames such a request by `Transfer-Encoding` and reads what
//! follows as the next request; a reverse proxy that framed it by
//! `Content-Length` sent those bytes as this request's body. The two then
//! disagree about which response answers which request, so one client
//! could receive another's (a token-protected view's) answer. The request
//! gets a 400 with `Connection: close`, and requests actix already parsed
//! behind it on that connection get the same 400 (the connection is
//! marked in its `on_connect` data, [`Poisoned`]). `larder-sync receive`
//! does the same.
//!
//! And every answer to a HEAD is headers alone, even with requests
//! pipelined behind it ([`head_without_body`]).

use std::cell::Cell;
use std::future::{Future, ready};
use std::pin::Pin;

use actix_web::body::{BodySize, BodyStream, EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{CACHE_CONTROL, CONTENT_LENGTH, HeaderValue, TRANSFER_ENCODING};
use actix_web::http::{ConnectionType, Method, StatusCode, Version};
use actix_web::{Error, HttpResponse};
use futures_util::stream::Empty;

/// Per connection (its `on_connect` data): a request on it had ambiguous
/// framing, so every later request on it is refused.
#[derive(Debug, Default)]
pub struct Poisoned(Cell<bool>);

type Answer<B> = Pin<Box<dyn Future<Output = Result<ServiceResponse<EitherBody<B>>, Error>>>>;

/// Middleware (`App::wrap_fn`): 400 and close for a request with both
/// `Transfer-Encoding` and `Content-Length`, and for any request after one
/// on the same connection; everything else passes through.
pub fn refuse_ambiguous<S, B>(req: ServiceRequest, srv: &S) -> Answer<B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    let headers = req.headers();
    let ambiguous = headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH);
    let poisoned = req.conn_data::<Poisoned>();
    if ambiguous || poisoned.is_some_and(|p| p.0.get()) {
        if let Some(p) = poisoned {
            p.0.set(true);
        }
        tracing::info!(
            path = req.path(),
            "refused: Transfer-Encoding and Content-Length together"
        );
        let mut resp = HttpResponse::BadRequest()
            .insert_header((CACHE_CONTROL, "no-store"))
            .content_type("text/plain; charset=utf-8")
            .body("Bad Request\n");
        resp.head_mut().set_connection_type(ConnectionType::Close);
        return Box::pin(ready(Ok(req.into_response(resp).map_into_right_body())));
    }
    let call = srv.call(req);
    Box::pin(async move { call.await.map(ServiceResponse::map_into_left_body) })
}

/// Middleware (`App::wrap_fn`, outermost): every HTTP/1 answer to a HEAD
/// goes out as headers alone, whatever state actix-http's codec is in.
///
/// actix-http 3.11 leaves out a HEAD answer's body by a flag it sets for
/// the last request it decoded, not the one it answers: with a request
/// pipelined behind the HEAD, the answer was written with its body (a
/// narinfo's) or with a `Content-Length` and no body (a NAR's, which
/// larder never reads for HEAD), and the connection lost its framing.
/// Here the body is replaced by an empty stream, unchunked, with the
/// length it had as an explicit `Content-Length`: a stream adds nothing
/// to the wire in either state of the flag, and the client still learns
/// the length (RFC 9110 §9.3.2). HTTP/2 frames each answer by itself and
/// is left alone; so are answers that never have a body (1xx, 204, 304):
/// a route's empty body there is `Sized(0)`, and a `Content-Length: 0`
/// on a 304 would tell a cache that revalidates its stored NAR that the
/// NAR is empty (RFC 9110 §8.6 allows only the 200's length).
pub fn head_without_body<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse<HeadBody<B>>, Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody,
{
    let head = req.method() == Method::HEAD && req.version() < Version::HTTP_2;
    let call = srv.call(req);
    async move {
        let res = call.await?;
        let size = res.response().body().size();
        if !head || size == BodySize::None || !may_have_body(res.status()) {
            return Ok(res.map_into_left_body());
        }
        Ok(res.map_body(|head, _| {
            head.no_chunking(true);
            if let BodySize::Sized(len) = size {
                head.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
            }
            EitherBody::right(BodyStream::new(futures_util::stream::empty()))
        }))
    }
}

/// Whether an answer with `status` may carry a body at all (RFC 9110
/// §6.4.1: never 1xx, 204 or 304).
fn may_have_body(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// [`head_without_body`]'s answers: as they were, or headers alone.
type HeadBody<B> = EitherBody<B, BodyStream<Empty<Result<bytes::Bytes, std::convert::Infallible>>>>;
