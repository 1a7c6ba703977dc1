//! The listening socket, opened before the server starts so that every
//! kind (TCP, unix, systemd-passed; with or without TLS) is one value.

use std::net::TcpListener;
use std::os::unix::net::UnixListener;

use crate::StartupError;
use crate::config::Bind;
use crate::systemd;

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

pub fn open(bind: &Bind) -> Result<Listener, StartupError> {
    let error = |source| StartupError::Bind {
        bind: format!("{bind:?}"),
        source,
    };
    match bind {
        Bind::Tcp(addr) => TcpListener::bind(addr.as_str()).map(Listener::Tcp).map_err(error),
        Bind::Unix(path) => UnixListener::bind(path).map(Listener::Unix).map_err(error),
        Bind::Systemd => systemd::activated_socket().map_err(error)?.ok_or_else(|| {
            error(std::io::Error::other(
                "systemd passed no socket (LISTEN_FDS unset): start larder-server from its .socket unit",
            ))
        }),
    }
}
