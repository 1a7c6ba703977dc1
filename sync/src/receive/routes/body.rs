//! Small request bodies (narinfo, logs) read whole, with a size limit.

use actix_web::web;
use futures_util::StreamExt;

use crate::receive::error::{ReceiveError, ReceiveResult};

/// Read a whole (small) body, refusing more than `limit` bytes.
pub async fn read_bounded(
    mut body: web::Payload,
    limit: usize,
    what: &str,
) -> ReceiveResult<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk
            .map_err(|e| ReceiveError::BadRequest(format!("{what} upload interrupted: {e}")))?;
        if out.len() + chunk.len() > limit {
            return Err(ReceiveError::TooLarge(format!(
                "{what} larger than {limit} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
