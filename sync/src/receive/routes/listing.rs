//! `PUT /<hash>.ls` (Nix's `write-nar-listing`): accepted and discarded,
//! since larder-server computes listings from the store itself.

use actix_web::{HttpRequest, HttpResponse, web};

use super::body::read_bounded;
use crate::receive::error::ReceiveResult;
use crate::receive::intake::url_hash;
use crate::receive::state::ReceiveState;

/// Largest listing accepted (then discarded).
const MAX_LISTING_BYTES: usize = 64 << 20;

pub async fn put(
    req: &HttpRequest,
    state: &web::Data<ReceiveState>,
    hash: &str,
    body: web::Payload,
) -> ReceiveResult<HttpResponse> {
    url_hash(hash)?;
    read_bounded(
        req,
        body,
        &state.limits,
        MAX_LISTING_BYTES,
        false,
        "listing",
    )
    .await?;
    Ok(HttpResponse::Ok().finish())
}
