//! The listening socket: created fresh with mode 0660 and an optional
//! group, so that exactly the server's user can connect.

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use tokio::net::UnixListener;

/// Resolve a group name or numeric gid via /etc/group.
fn resolve_group(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let groups = fs::read_to_string("/etc/group").map_err(|e| format!("/etc/group: {e}"))?;
    groups
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(name, _)| *name == group)
        .and_then(|(_, gid)| gid.parse().ok())
        .ok_or_else(|| format!("--socket-group {group}: no such group in /etc/group"))
}

pub fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, String> {
    let shown = path.display();
    // A socket left by a previous run is replaced; anything else is not ours to remove.
    if let Ok(meta) = fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(format!(
                "--socket {shown} exists and is not a socket; remove it or choose another path"
            ));
        }
        fs::remove_file(path)
            .map_err(|e| format!("--socket {shown}: cannot replace the old socket: {e}"))?;
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .map_err(|e| format!("--socket {shown}: cannot create its directory: {e}"))?;
    }
    let listener =
        UnixListener::bind(path).map_err(|e| format!("--socket {shown}: cannot listen: {e}"))?;
    if let Some(group) = group {
        let gid = resolve_group(group)?;
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| format!("--socket {shown}: cannot give it group {group}: {e}"))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("--socket {shown}: cannot set mode 0660: {e}"))?;
    Ok(listener)
}

pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
