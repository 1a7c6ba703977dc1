//! systemd integration without linking libsystemd: socket activation
//! (`--bind systemd`, the first socket in `LISTEN_FDS`) and readiness
//! (`READY=1` to `$NOTIFY_SOCKET` once the server listens).

use std::os::unix::net::UnixDatagram;

use crate::listen::Listener;

/// Take the first socket from `LISTEN_FDS`; `None` when systemd passed none.
pub fn activated_socket() -> std::io::Result<Option<Listener>> {
    let mut fds = listenfd::ListenFd::from_env();
    if let Some(tcp) = fds.take_tcp_listener(0)? {
        return Ok(Some(Listener::Tcp(tcp)));
    }
    Ok(fds.take_unix_listener(0)?.map(Listener::Unix))
}

/// Tell systemd (`Type=notify`) that we are ready; nothing without
/// `$NOTIFY_SOCKET`. Failure is logged, never fatal: readiness is a courtesy.
pub fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(b"READY=1\n", &addr)
        } else {
            socket.send_to(b"READY=1\n", &path)
        }
    });
    if let Err(e) = sent {
        tracing::warn!(socket = ?path, error = %e, "cannot notify systemd of readiness");
    }
}
