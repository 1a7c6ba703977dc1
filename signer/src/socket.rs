//! The listening socket: created fresh with mode 0660 and an optional
//! group, so that exactly the server's user can connect. A socket a live
//! signer answers on is never taken over (a second signer would leave the
//! first unreachable); only a stale one (connect refused) is replaced, and
//! on exit the socket is removed only while it is still ours (same inode).

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
    #[error(
        "--socket {0}: a signer is already running on it (it accepted a connection); stop it first, or choose another --socket"
    )]
    InUse(String),
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

/// The socket file we listen on: removed on drop only while the path still
/// names the socket we created (its inode), never a successor's.
pub struct BoundSocket {
    pub listener: UnixListener,
    path: PathBuf,
    inode: (u64, u64),
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.inode {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// What is at `path` now, for [`bind`] and `larder-signer check`.
pub fn check_free(path: &Path) -> Result<(), SocketError> {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket(path.display().to_string()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        // Someone accepts on it: a live signer (or another server).
        Ok(_) => Err(SocketError::InUse(path.display().to_string())),
        // Refused (nobody listens) or unreachable for another reason: stale.
        Err(_) => Ok(()),
    }
}

/// Listen on `path`, mode 0660, owned by `group` if given. A stale socket
/// left by a crash is replaced; a live one ([`SocketError::InUse`]) and
/// anything that is not a socket are refused.
pub fn bind(path: &Path, group: Option<&str>) -> Result<BoundSocket, SocketError> {
    let io = |action| {
        move |source| SocketError::Io {
            path: path.display().to_string(),
            action,
            source,
        }
    };
    check_free(path)?;
    if fs::symlink_metadata(path).is_ok() {
        fs::remove_file(path).map_err(io("replace the stale socket"))?;
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io("create its directory"))?;
    }
    let listener = UnixListener::bind(path).map_err(io("listen"))?;
    let meta = fs::symlink_metadata(path).map_err(io("stat the new socket"))?;
    let bound = BoundSocket {
        listener,
        path: path.to_owned(),
        inode: (meta.dev(), meta.ino()),
    };
    if let Some(group) = group {
        let gid = resolve_group(group)?;
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io("give it the group"))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o660)).map_err(io("set mode 0660"))?;
    Ok(bound)
}

/// Check `group` resolves (for `larder-signer check`).
pub fn check_group(group: &str) -> Result<(), SocketError> {
    resolve_group(group).map(|_| ())
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
