//! The listening socket: created fresh with mode 0660 and an optional
//! group, so that exactly the server's user can connect.

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use thiserror::Error;
use tokio::net::UnixListener;

/// Why the listening socket could not be set up; every variant names the
/// flag and what to do.
#[derive(Debug, Error)]
pub enum SocketError {
    #[error("--socket {0}: exists and is not a socket; remove it or choose another path")]
    NotASocket(String),
    #[error("--socket {path}: cannot {action}: {source}")]
    Io {
        path: String,
        action: &'static str,
        source: std::io::Error,
    },
    #[error("--socket-group {group}: {reason}")]
    Group { group: String, reason: String },
}

/// Resolve a group name or numeric gid via /etc/group.
fn resolve_group(group: &str) -> Result<u32, SocketError> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let groups = fs::read_to_string("/etc/group").map_err(|e| SocketError::Group {
        group: group.to_owned(),
        reason: format!("cannot read /etc/group: {e}"),
    })?;
    groups
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(name, _)| *name == group)
        .and_then(|(_, gid)| gid.parse().ok())
        .ok_or_else(|| SocketError::Group {
            group: group.to_owned(),
            reason: "no such group in /etc/group".to_owned(),
        })
}

/// Listen on `path`, mode 0660, owned by `group` if given. A socket left by
/// a previous run is replaced; anything else at `path` is refused.
pub fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, SocketError> {
    let io = |action| {
        move |source| SocketError::Io {
            path: path.display().to_string(),
            action,
            source,
        }
    };
    if let Ok(meta) = fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(SocketError::NotASocket(path.display().to_string()));
        }
        fs::remove_file(path).map_err(io("replace the old socket"))?;
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io("create its directory"))?;
    }
    let listener = UnixListener::bind(path).map_err(io("listen"))?;
    if let Some(group) = group {
        let gid = resolve_group(group)?;
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io("give it the group"))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o660)).map_err(io("set mode 0660"))?;
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
