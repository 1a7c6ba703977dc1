//! systemd readiness without linking libsystemd: `READY=1` to
//! `$NOTIFY_SOCKET` once the server listens. (Socket activation, taking the
//! socket systemd passed, is in `socket.rs`.)

use std::os::unix::net::UnixDatagram;

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
