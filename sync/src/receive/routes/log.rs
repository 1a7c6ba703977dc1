//! `PUT /log/<drv basename>` (`nix store copy-log --to …`): the build log,
//! stored bzip2-compressed where Nix keeps logs,
//! `<store-root>/nix/var/log/nix/drvs/<2 chars>/<rest>.bz2`, so
//! larder-server and `nix log` find it. Written to a temporary file and
//! renamed: a reader never sees half a log.

use std::io::Write;

use actix_web::http::header::CONTENT_ENCODING;
use actix_web::{HttpRequest, HttpResponse, web};
use larder_store::StorePath;

use super::body::read_bounded;
use crate::receive::error::{ReceiveError, ReceiveResult};
use crate::receive::intake::truncate;
use crate::receive::state::ReceiveState;

/// Largest log accepted, uncompressed (held in memory while compressed).
pub const MAX_LOG_BYTES: usize = 16 << 20;

pub async fn put(
    req: &HttpRequest,
    state: &web::Data<ReceiveState>,
    drv: &str,
    body: web::Payload,
) -> ReceiveResult<HttpResponse> {
    let path = StorePath::from_basename(drv)
        .ok()
        .filter(|p| p.name().ends_with(".drv"))
        .ok_or_else(|| {
            ReceiveError::NotStorePath(format!(
                "log/{} does not name a derivation (<hash>-<name>.drv)",
                truncate(drv)
            ))
        })?;
    // Only logs of derivations the store knows (valid, or the deriver of
    // a valid path): nobody fills the log dir with logs of nothing.
    let known = state
        .db
        .known_derivation(&path)
        .await
        .map_err(|e| ReceiveError::store_db(&e))?;
    if !known {
        return Err(ReceiveError::MissingReference(format!(
            "{drv} is not in the cache's store, nor the deriver of a path in it; push the outputs before the log",
            drv = truncate(drv)
        )));
    }
    if let Some(enc) = req.headers().get(CONTENT_ENCODING)
        && enc.as_bytes() != b"identity"
    {
        return Err(ReceiveError::UnsupportedCompression(
            "compressed logs are not supported; push with the default log-compression (none)"
                .into(),
        ));
    }
    let text = read_bounded(req, body, &state.limits, MAX_LOG_BYTES, true, "build log").await?;
    state.metrics.bytes_received.inc_by(text.len() as u64);
    let dir = state.location.log_dir();
    let base = path.to_string();
    let (shard, rest) = base.split_at(2);
    let dest_dir = dir.join(shard);
    let dest = dest_dir.join(format!("{rest}.bz2"));
    web::block(move || -> std::io::Result<()> {
        std::fs::create_dir_all(&dest_dir)?;
        let tmp = tempfile::Builder::new()
            .prefix(".upload-")
            .tempfile_in(&dest_dir)?;
        let mut enc = bzip2::write::BzEncoder::new(tmp, bzip2::Compression::default());
        enc.write_all(&text)?;
        let tmp = enc.finish()?;
        // Readable by larder-server, which may run as another user.
        tmp.as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        tmp.persist(&dest).map_err(|e| e.error)?;
        Ok(())
    })
    .await
    .map_err(|e| ReceiveError::Internal(format!("log worker failed: {e}")))?
    .map_err(|e| {
        tracing::error!("build log under {}: {e}", dir.display());
        ReceiveError::Internal("cannot write the build log".into())
    })?;
    Ok(HttpResponse::Ok().finish())
}
