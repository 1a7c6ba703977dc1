//! Reading request bodies: every read is bounded in size, in the pause
//! between two chunks (`--upload-idle-timeout-secs`) and in total time
//! (`--upload-timeout-secs`), and a body shorter or longer than its
//! `Content-Length` is refused (a client that half-closes early must not
//! have a truncated body accepted).

use actix_web::http::header::CONTENT_LENGTH;
use actix_web::{HttpRequest, web};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::receive::error::{ReceiveError, ReceiveResult};
use crate::receive::state::Limits;

/// The request's `Content-Length`, if it sent one (a malformed one is 400).
pub fn content_length(req: &HttpRequest) -> ReceiveResult<Option<u64>> {
    match req.headers().get(CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| ReceiveError::BadRequest("malformed Content-Length".into())),
    }
}

/// The next chunk of `body`, waiting at most `limits.idle_timeout` and
/// never past `deadline` (408 either way). `None` at the end.
pub async fn next_chunk(
    body: &mut web::Payload,
    limits: &Limits,
    deadline: Instant,
    what: &str,
) -> ReceiveResult<Option<Bytes>> {
    let idle = Instant::now()
        .checked_add(limits.idle_timeout)
        .map_or(deadline, |t| t.min(deadline));
    match tokio::time::timeout_at(idle, body.next()).await {
        Err(_) => Err(ReceiveError::Timeout),
        Ok(None) => Ok(None),
        Ok(Some(Err(e))) => Err(ReceiveError::BadRequest(format!(
            "{what} upload interrupted: {e}"
        ))),
        Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
    }
}

/// The whole-upload deadline of a request starting now.
pub fn deadline(limits: &Limits) -> Instant {
    let now = Instant::now();
    now.checked_add(limits.upload_timeout)
        .unwrap_or(now + std::time::Duration::from_secs(86400))
}

/// `received` bytes arrived for a request announcing `announced`: 400
/// unless they agree.
pub fn check_length(announced: Option<u64>, received: u64, what: &str) -> ReceiveResult<()> {
    match announced {
        Some(n) if n != received => Err(ReceiveError::BadRequest(format!(
            "{what}: Content-Length is {n} but {received} bytes arrived"
        ))),
        _ => Ok(()),
    }
}

/// Read a whole (small) body, refusing more than `limit` bytes; with
/// `keep` false the bytes are counted and dropped (an empty Vec returns).
pub async fn read_bounded(
    req: &HttpRequest,
    mut body: web::Payload,
    limits: &Limits,
    limit: usize,
    keep: bool,
    what: &str,
) -> ReceiveResult<Vec<u8>> {
    let announced = content_length(req)?;
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(ReceiveError::TooLarge(format!(
            "{what} larger than {limit} bytes"
        )));
    }
    let deadline = deadline(limits);
    let mut out = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = next_chunk(&mut body, limits, deadline, what).await? {
        total += chunk.len();
        if total > limit {
            return Err(ReceiveError::TooLarge(format!(
                "{what} larger than {limit} bytes"
            )));
        }
        if keep {
            out.extend_from_slice(&chunk);
        }
    }
    check_length(announced, total as u64, what)?;
    Ok(out)
}
