//! Importing one verified upload into the host store with the real Nix:
//! the staged NAR streams to nix-daemon (`wopAddToStoreNar`, see
//! [`super::daemon`]), through the system's nix-daemon for the host store
//! where there is one, or into a chroot store. Nix checks NarHash and
//! NarSize again, registers a path only once its files are complete and
//! holds a lock per path, so a crash never leaves a half-imported path and
//! two imports of one path are harmless.

use larder_store::narinfo::NarInfo;

use super::daemon::Daemons;
use super::error::{ReceiveError, ReceiveResult};
use super::staging::Staging;

/// Import the path of `info` from the NAR staged under `url`. Returns
/// `Ok(false)` when no NAR is staged there (any more). Blocking.
pub fn import(
    daemons: &Daemons,
    staging: &Staging,
    info: &NarInfo,
    url: &str,
) -> ReceiveResult<bool> {
    let Some(mut nar) = staging.open_staged(url).map_err(|e| {
        tracing::error!("staging: {e}");
        ReceiveError::Internal("cannot read the staged NAR".into())
    })?
    else {
        return Ok(false);
    };
    daemons.add_to_store_nar(info, &mut nar).map_err(|e| {
        tracing::error!("import of {} failed: {e}", info.store_path);
        ReceiveError::Internal(format!(
            "importing {} into the cache's store failed (see the receiver's log)",
            info.store_path
        ))
    })?;
    Ok(true)
}
