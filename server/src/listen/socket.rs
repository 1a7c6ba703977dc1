//! The listening socket, opened before the server starts so that every
//! kind (TCP, unix, systemd-passed) is one value.

use std::net::TcpListener;
use std::os::unix::net::UnixListener;

use crate::config::Bind;

/// A bound, listening socket, handed to actix-web as is.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Bind `bind`, or take the socket systemd passed (`--bind systemd`).
/// Errors: the address is taken or not allowed, a stale socket file, or
/// systemd passed no socket.
pub fn open(bind: &Bind) -> std::io::Result<Listener> {
    match bind {
        Bind::Tcp(addr) => TcpListener::bind(addr.as_str()).map(Listener::Tcp),
        Bind::Unix(path) => UnixListener::bind(path).map(Listener::Unix),
        Bind::Systemd => activated_socket()?.ok_or_else(|| {
            std::io::Error::other(
                "systemd passed no socket (LISTEN_FDS unset): start larder-server from its .socket unit",
            )
        }),
    }
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
