//! `PUT /nar/<filehash>.nar[.xz|.zst|.bz2]`: one compressed NAR, streamed
//! to the staging area through the decompressor (see `staging`), checked
//! against the file hash its URL names. `HEAD` says whether it is staged.

use actix_web::{HttpRequest, HttpResponse, web};
use larder_store::{Sha256Hash, nixbase32};

use super::body::{check_length, content_length, deadline, next_chunk};
use crate::receive::auth::Pusher;

use crate::receive::error::{ReceiveError, ReceiveResult};
use crate::receive::intake::truncate;
use crate::receive::staging::{self, Compression, StageError};
use crate::receive::state::ReceiveState;

/// Lowest average upload rate, in bytes per second, enforced once an
/// upload has lasted `--upload-idle-timeout-secs` (408 below it).
pub const MIN_RATE: u64 = 1024;

/// Body chunks in flight between the connection and the decompressor.
const CHANNEL_CHUNKS: usize = 8;

/// 200 when a NAR is staged under this URL (Nix then skips its PUT, and
/// one more narinfo is expected for it), else 404. The receiver serves no
/// NAR bodies: larder-server does.
pub fn head(
    state: &web::Data<ReceiveState>,
    pusher: &Pusher,
    name: &str,
) -> ReceiveResult<HttpResponse> {
    if state.staging.claim(&format!("nar/{name}"), &pusher.name) {
        Ok(HttpResponse::Ok().finish())
    } else {
        Err(ReceiveError::NotFound)
    }
}

fn parse_name(name: &str) -> ReceiveResult<(Sha256Hash, Compression)> {
    let bad = || {
        ReceiveError::BadRequest(format!(
            "bad NAR URL nar/{}: not <nix32 sha256>.nar[.xz|.zst|.bz2]",
            truncate(name)
        ))
    };
    // A plain extension Nix could have chosen (`.nar.lz4`) is an
    // unsupported compression (415); anything else (`..%2f..`) a bad URL.
    let (hash, compression) = Compression::from_file_name(name).map_err(|ext| {
        let plain = !ext.is_empty()
            && ext != name
            && ext
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.')
            && !ext.contains("..");
        if plain {
            ReceiveError::UnsupportedCompression(format!(
                "NAR compression .{} is not supported; push with ?compression=xz, zstd, bzip2 or none",
                truncate(&ext)
            ))
        } else {
            bad()
        }
    })?;
    let bytes = nixbase32::decode(hash)
        .ok()
        .filter(|b| b.len() == 32 && hash.len() == 52)
        .ok_or_else(bad)?;
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&bytes);
    Ok((Sha256Hash(digest), compression))
}

pub async fn put(
    req: &HttpRequest,
    state: &web::Data<ReceiveState>,
    pusher: &Pusher,
    name: &str,
    mut body: web::Payload,
) -> ReceiveResult<HttpResponse> {
    let (file_hash, compression) = parse_name(name)?;
    let announced = content_length(req)?;
    let deadline = deadline(&state.limits);
    // The pusher's own slots first: one token cannot hold every slot.
    let mine = state
        .pusher_uploads
        .get(&pusher.name)
        .ok_or_else(|| ReceiveError::Internal("unknown pusher".into()))?;
    let _mine = tokio::time::timeout_at(deadline, mine.acquire())
        .await
        .map_err(|_| ReceiveError::Timeout)?
        .map_err(|_| ReceiveError::Internal("shutting down".into()))?;
    let _permit = tokio::time::timeout_at(deadline, state.uploads.acquire())
        .await
        .map_err(|_| ReceiveError::Timeout)?
        .map_err(|_| ReceiveError::Internal("shutting down".into()))?;
    let room = state
        .limits
        .max_staging
        .saturating_sub(state.staging.staged_bytes());
    if room == 0 {
        return Err(staging_full(state));
    }
    let upload = state
        .staging
        .new_upload()
        .map_err(|e| staging_io(state, e))?;
    let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_CHUNKS);
    let limit = state.limits.max_nar_size.min(room);
    let by_staging = room < state.limits.max_nar_size;
    let task =
        tokio::task::spawn_blocking(move || staging::receive(upload, compression, limit, rx));
    let metrics = &state.metrics;
    let mut received_bytes = 0u64;
    let started = tokio::time::Instant::now();
    let streamed = async {
        while let Some(chunk) = next_chunk(&mut body, &state.limits, deadline, "NAR").await? {
            metrics.bytes_received.inc_by(chunk.len() as u64);
            received_bytes += chunk.len() as u64;
            // Slowloris: a byte now and then never trips the idle timeout;
            // after the first idle period the average must stay above
            // MIN_RATE bytes/s.
            let elapsed = started.elapsed();
            if elapsed > state.limits.idle_timeout
                && (received_bytes as f64) < MIN_RATE as f64 * elapsed.as_secs_f64()
            {
                return Err(ReceiveError::Timeout);
            }
            if tx.send(chunk).await.is_err() {
                break; // the decompressor stopped: its error says why
            }
        }
        Ok::<(), ReceiveError>(())
    }
    .await;
    drop(tx);
    let received = task
        .await
        .map_err(|e| ReceiveError::Internal(format!("upload worker failed: {e}")))?;
    streamed?;
    let (upload, digests) = received.map_err(|e| match e {
        StageError::TooLarge { .. } if by_staging => staging_full(state),
        StageError::TooLarge { limit } => ReceiveError::TooLarge(format!(
            "NAR larger than --max-nar-size-mib ({} MiB) once decompressed",
            limit >> 20
        )),
        StageError::Corrupt(detail) => ReceiveError::BadRequest(format!(
            "the {} stream cannot be decompressed: {detail}",
            compression.narinfo_name()
        )),
        // Nix 2.8 names a gzip upload (`?compression=gzip`) `.nar`, as it
        // does an uncompressed one: a `.nar` whose very first string is
        // wrong says so, since gzip is the likely cause.
        StageError::NotNar(e) if e.offset < 24 && compression.narinfo_name() == "none" => {
            ReceiveError::BadRequest(format!(
                "the upload is {e}; a .nar upload must be an uncompressed NAR (Nix names \
                 gzip-compressed NARs .nar too, and this cache takes none, xz, bzip2 or zstd: \
                 push with ?compression=zstd or none)"
            ))
        }
        StageError::NotNar(e) => ReceiveError::BadRequest(format!("the upload is {e}")),
        StageError::Io(e) => staging_io(state, e),
    })?;
    check_length(announced, received_bytes, "NAR")?;
    if digests.file_hash != file_hash {
        return Err(ReceiveError::HashMismatch(format!(
            "the uploaded bytes hash to {}, not to the URL's {file_hash}",
            digests.file_hash
        )));
    }
    state
        .staging
        .stage(&format!("nar/{name}"), &pusher.name, upload, digests)
        .map_err(|e| staging_io(state, e))?;
    state.update_staging_gauge();
    tracing::debug!(
        name,
        nar_size = digests.nar_size,
        file_size = digests.file_size,
        "staged"
    );
    Ok(HttpResponse::Ok().finish())
}

/// A staging dir that cannot be written. A full disk (or quota) is
/// transient like `--max-staging-mib` reached: 503 with `Retry-After`,
/// which Nix retries, and the partial upload is already gone (its
/// temporary file is removed on drop). Anything else is our fault: 500.
fn staging_io(state: &ReceiveState, e: std::io::Error) -> ReceiveError {
    tracing::error!("staging dir {}: {e}", state.staging.dir().display());
    let quota = e.raw_os_error() == Some(rustix::io::Errno::DQUOT.raw_os_error());
    if e.kind() == std::io::ErrorKind::StorageFull || quota {
        ReceiveError::Busy("the cache's staging disk is full; retry later".into())
    } else {
        ReceiveError::Internal("cannot write to the staging dir".into())
    }
}

fn staging_full(state: &ReceiveState) -> ReceiveError {
    tracing::warn!(
        "staging is full (--max-staging-mib {} MiB); refusing an upload",
        state.limits.max_staging >> 20
    );
    ReceiveError::Busy("the cache's staging area is full; retry later".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXTS: [(&str, Compression); 4] = [
        ("", Compression::None),
        (".xz", Compression::Xz),
        (".zst", Compression::Zstd),
        (".bz2", Compression::Bzip2),
    ];

    proptest! {
        /// Every NAR name `nix copy --to` uploads is read back exactly.
        #[test]
        fn upload_nar_names_parse(hash in any::<[u8; 32]>(), ext in 0usize..4) {
            let hash = Sha256Hash(hash);
            let (e, compression) = EXTS[ext];
            let name = format!("{}.nar{e}", hash.to_nix32());
            prop_assert_eq!(parse_name(&name).unwrap(), (hash, compression));
        }

        /// Anything else is a 400 or a 415, never a panic, and only a
        /// 52-character nix32 hash with a known extension is taken.
        #[test]
        fn other_upload_nar_names_are_4xx(
            name in "([0-9a-z]{50,54}|[0-9a-z%./\\\\-]{0,60})(\\.nar(\\.(xz|zst|bz2|lz4|br|\\.|%2f))?)?",
        ) {
            match parse_name(&name) {
                Ok((hash, compression)) => {
                    let ext = EXTS.iter().find(|(_, c)| *c == compression).unwrap().0;
                    prop_assert_eq!(name, format!("{}.nar{ext}", hash.to_nix32()));
                }
                Err(e) => prop_assert!(matches!(
                    e,
                    ReceiveError::BadRequest(_) | ReceiveError::UnsupportedCompression(_)
                )),
            }
        }
    }
}
