//! `PUT /<hash>.ls` (Nix's `write-nar-listing`): accepted and discarded,
//! since larder-server computes listings from the store itself.

use actix_web::{HttpResponse, web};

use futures_util::StreamExt;

use crate::receive::error::{ReceiveError, ReceiveResult};
use crate::receive::intake::url_hash;

/// Largest listing accepted (then discarded).
const MAX_LISTING_BYTES: usize = 64 << 20;

pub async fn put(hash: &str, mut body: web::Payload) -> ReceiveResult<HttpResponse> {
    url_hash(hash)?;
    let mut total = 0usize;
    while let Some(chunk) = body.next().await {
        let chunk = chunk
            .map_err(|e| ReceiveError::BadRequest(format!("listing upload interrupted: {e}")))?;
        total += chunk.len();
        if total > MAX_LISTING_BYTES {
            return Err(ReceiveError::TooLarge(format!(
                "listing larger than {MAX_LISTING_BYTES} bytes"
            )));
        }
    }
    Ok(HttpResponse::Ok().finish())
}
