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

use std::cell::Cell;
use std::future::{Future, ready};
use std::pin::Pin;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_web::{Error, HttpResponse};

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
