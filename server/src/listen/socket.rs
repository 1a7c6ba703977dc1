//! The listening socket, opened before the server starts so that every
//! kind (TCP, unix, systemd-passed) is one value.
//!
//! A unix socket gets its mode and group before anyone can connect: it is
//! bound under a temporary name in the same directory, given
//! `socket-mode`/`socket-group`, then renamed into place. A socket a crash
//! left at the path is removed, but only if it is a socket and nothing
//! answers on it; a live one (another server) stops the start with its
//! path, and so does anything that is not a socket.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;

use crate::config::{Bind, SocketOptions};

/// A bound, listening socket, handed to actix-web as is.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Bind `bind` (a unix socket with `socket`'s mode and group), or take the
/// socket systemd passed (`--bind systemd`). Errors: the address is taken
/// or not allowed, a live socket or a non-socket at a unix path, an
/// unknown group, or systemd passed no socket.
pub fn open(bind: &Bind, socket: &SocketOptions) -> std::io::Result<Listener> {
    match bind {
        Bind::Tcp(addr) => TcpListener::bind(addr.as_str()).map(Listener::Tcp),
        Bind::Unix(path) => bind_unix(path, socket).map(Listener::Unix),
        Bind::Systemd => activated_socket()?.ok_or_else(|| {
            std::io::Error::other(
                "systemd passed no socket (LISTEN_FDS unset): start larder-server from its .socket unit",
            )
        }),
    }
}

fn bind_unix(path: &Path, options: &SocketOptions) -> std::io::Result<UnixListener> {
    let refuse = |what: String| std::io::Error::other(format!("{}: {what}", path.display()));
    remove_stale(path).map_err(|e| refuse(e.to_string()))?;
    let gid = options
        .group
        .as_deref()
        .map(resolve_group)
        .transpose()
        .map_err(|e| refuse(format!("socket-group: {e}")))?;
    let name = path
        .file_name()
        .ok_or_else(|| refuse("not a file path".to_owned()))?;
    let mut tmp_name = name.to_owned();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    let placed = (|| {
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&tmp, None, Some(gid))?;
        }
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(options.mode))?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(refuse(format!(
            "cannot set the socket's mode or group: {e}"
        )));
    }
    Ok(listener)
}

/// Remove a socket a crash left at `path`; refuse a live one or a file
/// ([`larder_store::unix_socket::remove_stale`]).
fn remove_stale(path: &Path) -> std::io::Result<()> {
    if larder_store::unix_socket::remove_stale(path)? {
        tracing::info!(socket = %path.display(), "removed a stale socket");
    }
    Ok(())
}

/// A group name (from `/etc/group`) or a numeric gid.
fn resolve_group(group: &str) -> std::io::Result<u32> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group")?;
    groups
        .lines()
        .filter_map(|l| {
            let mut fields = l.split(':');
            Some((fields.next()?, fields.nth(1)?))
        })
        .find(|(name, _)| *name == group)
        .and_then(|(_, gid)| gid.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no group {group:?} in /etc/group")))
}

/// systemd socket activation without linking libsystemd: the first socket
/// in `LISTEN_FDS`; `None` when systemd passed none.
fn activated_socket() -> std::io::Result<Option<Listener>> {
    let mut fds = listenfd::ListenFd::from_env();
    if let Some(tcp) = fds.take_tcp_listener(0)? {
        return Ok(Some(Listener::Tcp(tcp)));
    }
    Ok(fds.take_unix_listener(0)?.map(Listener::Unix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(mode: u32) -> SocketOptions {
        SocketOptions { mode, group: None }
    }

    #[test]
    fn mode_is_set_stale_sockets_go_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let live = bind_unix(&path, &options(0o604)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o604);
        let err = bind_unix(&path, &options(0o660)).unwrap_err().to_string();
        assert!(err.contains("another process is listening"), "{err}");
        drop(live);
        // The file stays after its listener is gone: stale, so replaced.
        assert!(path.exists());
        let _again = bind_unix(&path, &options(0o660)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = bind_unix(&file, &options(0o660)).unwrap_err().to_string();
        assert!(err.contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn groups_by_name_or_gid() {
        assert_eq!(resolve_group("0").unwrap(), 0);
        assert_eq!(resolve_group("root").unwrap(), 0);
        assert!(resolve_group("no-such-group-larder").is_err());
    }
}
